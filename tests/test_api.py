"""HTTP API: accounts, sessions, members, errors — in-process through Starlette's TestClient."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from .appclient import MakeClient, auth, signup
from .test_retention import backend_client, user_id

__all__ = ["backend_client"]  # the fixture, imported to run the members tests on both backends


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_signup_login_me_logout(client: TestClient) -> None:
    r = client.post(
        "/api/auth/signup", json={"email": "Ana@Example.com", "password": "correct horse", "name": "Ana"}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["user"]["email"] == "Ana@Example.com"
    assert "password" not in str(body)
    assert client.get("/api/me", headers=auth(body["token"])).json()["user"]["name"] == "Ana"

    r = client.post("/api/auth/login", json={"email": "ana@example.com", "password": "correct horse"})
    assert r.status_code == 200
    token = r.json()["token"]
    cookie = r.headers.get_list("set-cookie")
    assert any("escenario_session=" in c and "HttpOnly" in c and "SameSite=lax" in c for c in cookie)

    assert client.post("/api/auth/logout", headers=auth(token)).status_code == 204
    r = client.get("/api/me", headers=auth(token))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"
    # The first token is independent and still valid.
    assert client.get("/api/me", headers=auth(body["token"])).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"email": "nope", "password": "correct horse", "name": "A"}, 422, "validation_error"),
        ({"email": "a@b.co", "password": "short", "name": "A"}, 422, "validation_error"),
        ({"email": "a@b.co", "password": "correct horse", "name": ""}, 422, "validation_error"),
        ({"email": "a@b.co", "password": "correct horse"}, 422, "validation_error"),
        ({"email": 5, "password": "correct horse", "name": "A"}, 422, "validation_error"),
    ],
)
def test_signup_validation(client: TestClient, payload: dict[str, object], status: int, code: str) -> None:
    r = client.post("/api/auth/signup", json=payload)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_malformed_bodies_get_clear_errors(client: TestClient) -> None:
    r = client.post("/api/auth/signup", content=b"{not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
    r = client.post("/api/auth/signup", content=b"[1]", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
    r = client.post("/api/auth/signup", content=b"email=a", headers={"content-type": "text/plain"})
    assert r.status_code == 400
    huge = b'{"email": "' + b"a" * 100_000 + b'"}'
    r = client.post("/api/auth/signup", content=huge, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "body_too_large")


def test_duplicate_email_is_a_conflict(client: TestClient) -> None:
    signup(client, "dup@example.com")
    r = client.post(
        "/api/auth/signup", json={"email": "DUP@example.com", "password": "correct horse", "name": "B"}
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "email_taken"


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient) -> None:
    signup(client, "real@example.com")
    wrong = client.post("/api/auth/login", json={"email": "real@example.com", "password": "wrong password"})
    ghost = client.post("/api/auth/login", json={"email": "ghost@example.com", "password": "wrong password"})
    assert wrong.status_code == ghost.status_code == 401
    assert wrong.json() == ghost.json()


def test_unauthenticated_requests_are_401(client: TestClient) -> None:
    for method, path in [("GET", "/api/me"), ("GET", "/api/sessions"), ("POST", "/api/sessions")]:
        r = client.request(method, path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "not_authenticated"


def test_session_crud_and_roles(client: TestClient) -> None:
    owner = signup(client, "owner@example.com", "Olga")
    editor = signup(client, "editor@example.com", "Eddie")
    viewer = signup(client, "viewer@example.com", "Vera")
    stranger = signup(client, "stranger@example.com", "Sam")

    r = client.post("/api/sessions", json={"title": "  Friday jam "}, headers=auth(owner))
    assert r.status_code == 201
    sid = r.json()["id"]
    assert r.json()["title"] == "Friday jam"
    assert r.json()["role"] == "owner"

    assert (
        client.post(
            f"/api/sessions/{sid}/members",
            json={"email": "editor@example.com", "role": "editor"},
            headers=auth(owner),
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"/api/sessions/{sid}/members",
            json={"email": "viewer@example.com", "role": "viewer"},
            headers=auth(owner),
        ).status_code
        == 201
    )

    listed = client.get("/api/sessions", headers=auth(viewer)).json()["sessions"]
    assert [(s["id"], s["role"]) for s in listed] == [(sid, "viewer")]
    detail = client.get(f"/api/sessions/{sid}", headers=auth(editor)).json()
    assert [m["role"] for m in detail["members"]] == ["owner", "editor", "viewer"]
    assert detail["epoch"] == 0

    # Non-members cannot even learn that the session exists.
    assert client.get(f"/api/sessions/{sid}", headers=auth(stranger)).status_code == 404
    assert client.get("/api/sessions/does-not-exist", headers=auth(owner)).status_code == 404

    # Editors rename; viewers cannot; only the owner deletes and manages members.
    assert (
        client.patch(f"/api/sessions/{sid}", json={"title": "Renamed"}, headers=auth(editor)).status_code
        == 200
    )
    r = client.patch(f"/api/sessions/{sid}", json={"title": "Nope"}, headers=auth(viewer))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden")
    r = client.post(
        f"/api/sessions/{sid}/members",
        json={"email": "stranger@example.com", "role": "editor"},
        headers=auth(editor),
    )
    assert r.status_code == 403
    assert client.delete(f"/api/sessions/{sid}", headers=auth(editor)).status_code == 403
    r = client.patch(f"/api/sessions/{sid}", json={"owner_id": "me"}, headers=auth(owner))
    assert r.status_code == 422

    assert client.get(f"/api/sessions/{sid}", headers=auth(owner)).json()["title"] == "Renamed"
    assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
    assert client.get(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 404
    assert client.get("/api/sessions", headers=auth(editor)).json()["sessions"] == []


def test_member_management_rules(client: TestClient) -> None:
    owner = signup(client, "owner@example.com", "Olga")
    member = signup(client, "member@example.com", "Mo")
    sid = client.post("/api/sessions", json={"title": "S"}, headers=auth(owner)).json()["id"]
    me_id = client.get("/api/me", headers=auth(member)).json()["user"]["id"]
    owner_id = client.get("/api/me", headers=auth(owner)).json()["user"]["id"]

    r = client.post(
        f"/api/sessions/{sid}/members",
        json={"email": "nobody@example.com", "role": "editor"},
        headers=auth(owner),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (404, "user_not_found")
    r = client.post(
        f"/api/sessions/{sid}/members",
        json={"email": "member@example.com", "role": "owner"},
        headers=auth(owner),
    )
    assert r.status_code == 422
    r = client.post(
        f"/api/sessions/{sid}/members",
        json={"email": "owner@example.com", "role": "viewer"},
        headers=auth(owner),
    )
    assert r.status_code == 409
    assert (
        client.post(
            f"/api/sessions/{sid}/members",
            json={"email": "member@example.com", "role": "viewer"},
            headers=auth(owner),
        ).status_code
        == 201
    )
    # Changing a role answers 200.
    assert (
        client.post(
            f"/api/sessions/{sid}/members",
            json={"email": "member@example.com", "role": "editor"},
            headers=auth(owner),
        ).status_code
        == 200
    )
    assert client.delete(f"/api/sessions/{sid}/members/{owner_id}", headers=auth(owner)).status_code == 409
    # A member may leave on their own.
    assert client.delete(f"/api/sessions/{sid}/members/{me_id}", headers=auth(member)).status_code == 204
    assert client.delete(f"/api/sessions/{sid}/members/{me_id}", headers=auth(owner)).status_code == 404
    assert client.get(f"/api/sessions/{sid}", headers=auth(member)).status_code == 404


def test_members_list_role_change_and_removal(backend_client: MakeClient) -> None:
    client = backend_client()
    owner = signup(client, "owner@example.com", "Olga")
    editor = signup(client, "editor@example.com", "Eddie")  # sorts before the owner by name
    viewer = signup(client, "viewer@example.com", "Vera")
    stranger = signup(client, "stranger@example.com", "Sam")
    ids = {t: user_id(client, t) for t in (owner, editor, viewer, stranger)}
    sid = client.post("/api/sessions", json={"title": "S"}, headers=auth(owner)).json()["id"]
    for email, role in (("viewer@example.com", "viewer"), ("editor@example.com", "editor")):
        r = client.post(
            f"/api/sessions/{sid}/members", json={"email": email, "role": role}, headers=auth(owner)
        )
        assert r.status_code == 201, r.text
    members = f"/api/sessions/{sid}/members"

    def listed(token: str) -> list[tuple[str, str, str, str]]:
        r = client.get(members, headers=auth(token))
        assert r.status_code == 200, r.text
        return [(m["user_id"], m["email"], m["name"], m["role"]) for m in r.json()["members"]]

    # Owner first, then by name; every member may read it, a stranger learns nothing.
    everyone = [
        (ids[owner], "owner@example.com", "Olga", "owner"),
        (ids[editor], "editor@example.com", "Eddie", "editor"),
        (ids[viewer], "viewer@example.com", "Vera", "viewer"),
    ]
    assert listed(owner) == listed(editor) == listed(viewer) == everyone
    r = client.get(members, headers=auth(stranger))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
    assert ids[owner] not in r.text

    # The editor can rename until the owner makes them a viewer; then they cannot.
    assert client.patch(f"/api/sessions/{sid}", json={"title": "T"}, headers=auth(editor)).status_code == 200
    r = client.patch(f"{members}/{ids[editor]}", json={"role": "viewer"}, headers=auth(owner))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "user_id": ids[editor],
        "email": "editor@example.com",
        "name": "Eddie",
        "role": "viewer",
    }
    r = client.patch(f"/api/sessions/{sid}", json={"title": "U"}, headers=auth(editor))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden")
    assert [m[3] for m in listed(owner)] == ["owner", "viewer", "viewer"]
    assert client.get("/api/sessions", headers=auth(editor)).json()["sessions"][0]["role"] == "viewer"
    # Recorded like a change through POST; the same role again changes and records nothing.
    # (newest first: the demoted editor's refused rename, then the change itself)
    log = client.get(f"/api/sessions/{sid}/audit", headers=auth(owner)).json()["entries"]
    assert [e["action"] for e in log[:2]] == ["access.role_denied", "member.role_change"]
    change = log[1]
    assert (change["actor_id"], change["target_id"]) == (ids[owner], ids[editor])
    assert change["detail"] == {"role": "viewer", "previous": "editor"}
    assert (
        client.patch(f"{members}/{ids[editor]}", json={"role": "viewer"}, headers=auth(owner)).status_code
        == 200
    )
    assert client.get(f"/api/sessions/{sid}/audit", headers=auth(owner)).json()["entries"] == log

    # Errors, in the neighbouring routes' terms.
    def patch(token: str, uid: str, body: object) -> tuple[int, str]:
        r = client.patch(f"{members}/{uid}", json=body, headers=auth(token))
        return r.status_code, r.json()["error"]["code"]

    assert patch(viewer, ids[editor], {"role": "editor"}) == (403, "role_forbidden")
    assert patch(stranger, ids[editor], {"role": "editor"}) == (404, "session_not_found")
    assert patch(owner, ids[owner], {"role": "viewer"}) == (409, "is_owner")
    assert patch(owner, "no-such-user", {"role": "editor"}) == (404, "member_not_found")
    assert patch(owner, ids[stranger], {"role": "editor"}) == (404, "member_not_found")
    for bad in (
        {"role": "owner"},
        {"role": "admin"},
        {"role": ["editor"]},
        {},
        {"role": "editor", "email": "x"},
    ):
        assert patch(owner, ids[editor], bad) == (422, "validation_error"), bad
    r = client.patch(f"{members}/{ids[editor]}", content=b"role=editor", headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
    assert [m[3] for m in listed(owner)] == ["owner", "viewer", "viewer"]  # none of those changed it

    # Removal: gone from the list, and the removed member can no longer read it.
    assert client.delete(f"{members}/{ids[viewer]}", headers=auth(owner)).status_code == 204
    assert [m[0] for m in listed(owner)] == [ids[owner], ids[editor]]
    assert client.get(members, headers=auth(viewer)).status_code == 404
    assert patch(owner, ids[viewer], {"role": "editor"}) == (404, "member_not_found")
    r = client.delete(f"{members}/{ids[viewer]}", headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "member_not_found")


def test_cookie_auth_requires_csrf_for_writes(client: TestClient) -> None:
    signup(client, "cookie@example.com")
    r = client.post("/api/auth/login", json={"email": "cookie@example.com", "password": "correct horse"})
    assert r.status_code == 200
    # TestClient keeps the cookies; no bearer header from here on.
    assert client.get("/api/me").status_code == 200
    r = client.post("/api/sessions", json={"title": "Via cookie"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "csrf_failed")
    csrf = client.cookies.get("escenario_csrf")
    assert csrf
    r = client.post("/api/sessions", json={"title": "Via cookie"}, headers={"x-csrf-token": csrf})
    assert r.status_code == 201


def test_unknown_routes_are_json_errors(client: TestClient) -> None:
    r = client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = client.put("/api/sessions")
    assert r.status_code == 405


def test_root_explains_when_the_web_client_is_not_built(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert "make run" in r.text


def test_security_headers_on_api_and_page(client: TestClient) -> None:
    for path in ("/healthz", "/", "/api/me"):
        r = client.get(path)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_repeated_wrong_passwords_lock_the_account_with_backoff(client: TestClient) -> None:
    signup(client, "target@example.com")
    for _ in range(5):
        r = client.post("/api/auth/login", json={"email": "target@example.com", "password": "guess guess"})
        assert r.status_code == 401
    r = client.post("/api/auth/login", json={"email": "TARGET@example.com", "password": "correct horse"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "login_locked"
    assert int(r.headers["retry-after"]) >= 1
    # Other accounts are not affected.
    signup(client, "other@example.com")
    r = client.post("/api/auth/login", json={"email": "other@example.com", "password": "correct horse"})
    assert r.status_code == 200


def test_lockout_backs_off_exponentially_and_clears_on_success() -> None:
    from realtime.lockout import LoginLockout

    now = [0.0]
    lock = LoginLockout(free_failures=2, base_s=10, max_s=35, clock=lambda: now[0])
    lock.failed("a")
    assert lock.retry_after("a") == 0
    lock.failed("a")
    assert lock.retry_after("a") == 10
    lock.failed("a")
    assert lock.retry_after("a") == 20
    lock.failed("a")
    assert lock.retry_after("a") == 35  # capped
    now[0] = 100.0
    assert lock.retry_after("a") == 0
    lock.succeeded("a")
    lock.failed("a")
    assert lock.retry_after("a") == 0
