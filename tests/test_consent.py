"""Consent (training, marketing) and the password rules (issue 7, docs/privacy.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from realtime.accounts import COMMON_PASSWORDS, MIN_PASSWORD, password_problem
from realtime.audit import Action

from .appclient import MakeClient, auth, signup
from .media.audio import sine, wav_bytes
from .test_assets import new_session, uploaded
from .test_retention import backend_client

__all__ = ["backend_client"]


def consent(client: TestClient, token: str) -> dict[str, object]:
    body = client.get("/api/me", headers=auth(token)).json()
    assert isinstance(body["consent"], dict)
    return body["consent"]


def test_consent_is_off_by_default_and_changes_are_audited(backend_client: MakeClient) -> None:
    client = backend_client()
    token = signup(client)
    assert consent(client, token) == {
        "training_opt_in": False,
        "training_opt_in_at": None,
        "marketing_opt_in": False,
        "marketing_opt_in_at": None,
    }
    r = client.patch("/api/me", json={"training_opt_in": True}, headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["email"] == "ana@example.com"
    assert body["consent"]["training_opt_in"] is True
    assert body["consent"]["training_opt_in_at"].endswith("Z")
    assert body["consent"]["marketing_opt_in"] is False
    assert body["consent"]["marketing_opt_in_at"] is None
    assert consent(client, token) == body["consent"]
    # The same choice again changes nothing and records nothing.
    again = client.patch("/api/me", json={"training_opt_in": True}, headers=auth(token)).json()
    assert again["consent"] == body["consent"]
    r = client.patch(
        "/api/me", json={"training_opt_in": False, "marketing_opt_in": True}, headers=auth(token)
    )
    assert r.json()["consent"]["training_opt_in"] is False

    log = client.get("/api/me/audit", headers=auth(token)).json()["entries"]
    changes = [e for e in log if e["action"] == Action.CONSENT_CHANGED]
    assert [e["detail"] for e in changes] == [
        {"training_opt_in": False, "marketing_opt_in": True},
        {"training_opt_in": True},
    ]
    assert all(e["ip"] == "testclient" for e in changes)


@pytest.mark.parametrize(
    "body",
    [{}, {"training_opt_in": "yes"}, {"training_opt_in": 1}, {"marketing_opt_in": None}, {"email": "x@y.z"}],
)
def test_bad_consent_changes_are_refused_and_change_nothing(make_client: MakeClient, body: object) -> None:
    client = make_client()
    token = signup(client)
    before = consent(client, token)
    r = client.patch("/api/me", json=body, headers=auth(token))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error")
    assert consent(client, token) == before
    assert client.patch("/api/me", json={"training_opt_in": True}).status_code == 401


def test_the_training_listing_has_only_opted_in_uploads(make_client: MakeClient) -> None:
    off = make_client()
    assert off.get("/api/training/assets").status_code == 404  # no training_token: no endpoint
    off.__exit__(None, None, None)

    client = make_client(training_token="pipeline-secret")
    yes = signup(client, "yes@example.com", "Yes")
    no = signup(client, "no@example.com", "No")
    sid = new_session(client, yes)
    client.post(
        f"/api/sessions/{sid}/members", json={"email": "no@example.com", "role": "editor"}, headers=auth(yes)
    )
    mine = uploaded(client, yes, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    uploaded(client, no, sid, wav_bytes(sine(seconds=0.2)))
    pipeline = {"authorization": "Bearer pipeline-secret"}

    assert client.get("/api/training/assets").status_code == 401
    assert client.get("/api/training/assets", headers=auth(yes)).status_code == 401  # a user token is not it
    assert client.get("/api/training/assets", headers=pipeline).json() == {"assets": [], "next_after": None}
    client.patch("/api/me", json={"training_opt_in": True}, headers=auth(yes))
    listed = client.get("/api/training/assets", headers=pipeline).json()
    assert [a["asset_id"] for a in listed["assets"]] == [mine]
    page = client.get("/api/training/assets", headers=pipeline, params={"limit": 1}).json()
    assert page["next_after"] == mine
    assert client.get("/api/training/assets", headers=pipeline, params={"after": mine}).json()["assets"] == []
    for params in ({"limit": 0}, {"limit": "many"}, {"after": "../x"}):
        r = client.get("/api/training/assets", headers=pipeline, params=params)
        assert r.status_code == 422, params
    # Withdrawn consent applies at once.
    client.patch("/api/me", json={"training_opt_in": False}, headers=auth(yes))
    assert client.get("/api/training/assets", headers=pipeline).json()["assets"] == []


# password rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short pw", f"must be {MIN_PASSWORD} to"),
        ("aaaaaaaaaaaa", "one character repeated"),
        ("New@Example.com", "your e-mail address"),
        ("new@example.com", "your e-mail address"),
        ("PassWord123", "most common passwords"),
        ("1234567890", "most common passwords"),
    ],
)
def test_weak_passwords_are_refused_with_a_clear_reason(
    make_client: MakeClient, password: str, why: str
) -> None:
    client = make_client()
    r = client.post("/api/auth/signup", json={"email": "new@example.com", "password": password, "name": "N"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error")
    assert why in r.json()["error"]["message"]
    assert r.json()["error"]["message"].startswith("password:")
    # Nothing was created: the address is still free.
    ok = client.post(
        "/api/auth/signup", json={"email": "new@example.com", "password": "a fine passphrase", "name": "N"}
    )
    assert ok.status_code == 201


def test_password_rules() -> None:
    assert password_problem("correct horse", email="a@b.co") is None
    assert password_problem("x" * 1024 + "y", email="a@b.co") is not None  # too long
    assert password_problem("ab" * 5, email="a@b.co") is None  # two characters are fine
    assert password_problem("ANA.LOCAL1", email="ana.local1@example.com") is not None  # the address's name
    assert all(len(p) >= MIN_PASSWORD and p == p.lower() for p in COMMON_PASSWORDS)
    assert all(password_problem(p.upper(), email="a@b.co") for p in COMMON_PASSWORDS)


# property tests: the account and membership API under arbitrary input ------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Objects with the fields these endpoints read, holding anything at all.
_fields = st.sampled_from(
    ["email", "password", "name", "role", "title", "training_opt_in", "marketing_opt_in"]
)
_bodies = _json | st.dictionaries(_fields, _json, max_size=4)


def _assert_clean(r: Any, what: str) -> None:
    """Never a server error; every refusal a JSON error with a code; never a password hash."""
    assert r.status_code < 500, what
    assert "$argon2" not in r.text, what
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str), what
        assert isinstance(error["message"], str), what
        assert error["message"], what


@hsettings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(
        [
            ("POST", "/api/auth/signup"),
            ("POST", "/api/auth/login"),
            ("PATCH", "/api/me"),
            ("PATCH", "/api/sessions/{sid}"),
            ("POST", "/api/sessions/{sid}/members"),
            ("POST", "/api/sessions"),
        ]
    ),
    body=_bodies,
    as_role=st.sampled_from(["owner", "viewer", "stranger", "nobody"]),
    raw=st.none() | st.binary(max_size=64),
)
def test_the_account_and_membership_api_refuses_any_input_cleanly(
    fuzz_app: tuple[TestClient, dict[str, str], str],
    endpoint: tuple[str, str],
    body: object,
    as_role: str,
    raw: bytes | None,
) -> None:
    client, tokens, sid = fuzz_app
    method, template = endpoint
    headers = {} if as_role == "nobody" else auth(tokens[as_role])
    path = template.format(sid=sid)
    if raw is None:
        r = client.request(method, path, json=body, headers=headers)
    else:
        r = client.request(method, path, content=raw, headers={**headers, "content-type": "application/json"})
    _assert_clean(r, f"{method} {path} as {as_role}: {body!r} {raw!r} -> {r.status_code} {r.text[:200]}")
    # Whatever happened, the invariants hold: the owner is still the owner, a stranger still
    # cannot see the session, and the viewer is no more than a viewer.
    members = {
        m["email"]: m["role"]
        for m in client.get(f"/api/sessions/{sid}", headers=auth(tokens["owner"])).json()["members"]
    }
    assert members["owner@example.com"] == "owner"
    assert members.get("viewer@example.com") == "viewer"
    assert client.get(f"/api/sessions/{sid}", headers=auth(tokens["stranger"])).status_code == 404


@pytest.fixture
def fuzz_app(make_client: MakeClient) -> tuple[TestClient, dict[str, str], str]:
    client = make_client()
    tokens = {
        role: signup(client, f"{role}@example.com", role.title()) for role in ("owner", "viewer", "stranger")
    }
    sid = new_session(client, tokens["owner"])
    r = client.post(
        f"/api/sessions/{sid}/members",
        json={"email": "viewer@example.com", "role": "viewer"},
        headers=auth(tokens["owner"]),
    )
    assert r.status_code == 201
    return client, tokens, sid
