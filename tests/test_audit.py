"""The audit log (issue 7, docs/privacy.md): what is recorded, and that nobody reads others' entries."""

from __future__ import annotations

import os
import uuid
from typing import Any

from starlette.testclient import TestClient

from realtime.audit import Action

from .appclient import PASSWORD, MakeClient, auth, signup
from .conftest import require
from .media.audio import sine, wav_bytes
from .test_assets import add_member, new_session, uploaded
from .test_jobs_api import _redis_problem
from .test_retention import backend_client, user_id

__all__ = ["backend_client"]  # the fixture, imported to run these tests on both backends too


def entries(client: TestClient, path: str, token: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(path, headers=auth(token), params=params)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["entries"]
    return found


def actions(found: list[dict[str, Any]]) -> list[str]:
    return [e["action"] for e in found]


def test_sign_in_events_are_the_account_holders_to_see(backend_client: MakeClient) -> None:
    client = backend_client()
    ana = signup(client, "ana@example.com", "Ana")
    bob = signup(client, "bob@example.com", "Bob")
    ana_id = user_id(client, ana)
    bad = client.post("/api/auth/login", json={"email": "ANA@example.com", "password": "wrong password"})
    assert bad.status_code == 401
    ghost = client.post("/api/auth/login", json={"email": "ghost@example.com", "password": "wrong password"})
    assert ghost.status_code == 401
    login = client.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
    assert login.status_code == 200
    assert client.post("/api/auth/logout", headers=auth(login.json()["token"])).status_code == 204

    mine = entries(client, "/api/me/audit", ana)
    assert actions(mine) == [
        Action.TOKEN_REVOKED,
        Action.TOKEN_CREATED,
        Action.LOGIN,
        Action.LOGIN_FAILED,
        Action.TOKEN_CREATED,
        Action.SIGNUP,
    ]
    failed = mine[3]
    assert failed["actor_id"] is None
    assert failed["target_id"] == ana_id
    assert failed["detail"] == {"reason": "invalid_credentials"}
    assert failed["ip"] == "testclient"
    assert all(e["at"].endswith("Z") for e in mine)
    # Bob sees only his own sign-up; the failure on an unknown address is nobody's, and the
    # address tried is not stored anywhere in the log.
    theirs = entries(client, "/api/me/audit", bob)
    assert actions(theirs) == [Action.TOKEN_CREATED, Action.SIGNUP]
    assert "ghost@example.com" not in str(mine) + str(theirs)
    assert client.get("/api/me/audit").status_code == 401


def test_session_events_are_for_its_owner_only(backend_client: MakeClient) -> None:
    client = backend_client()
    owner = signup(client, "owner@example.com", "Olga")
    editor = signup(client, "editor@example.com", "Ed")
    viewer = signup(client, "viewer@example.com", "Vi")
    stranger = signup(client, "stranger@example.com", "St")
    sid = new_session(client, owner)
    other = new_session(client, stranger)
    add_member(client, owner, sid, "editor@example.com", "viewer")
    add_member(client, owner, sid, "editor@example.com", "editor")  # a role change
    add_member(client, owner, sid, "viewer@example.com", "viewer")
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    assert client.delete(f"/api/assets/{asset}", headers=auth(editor)).status_code == 204
    assert client.post(f"/api/assets/{asset}/restore", headers=auth(owner)).status_code == 200
    # A viewer trying an owner's action: refused by the central role check, and recorded.
    assert client.delete(f"/api/sessions/{sid}", headers=auth(viewer)).status_code == 403
    viewer_id = user_id(client, viewer)
    assert client.delete(f"/api/sessions/{sid}/members/{viewer_id}", headers=auth(owner)).status_code == 204
    assert client.delete(f"/api/sessions/{other}", headers=auth(stranger)).status_code == 204

    log = entries(client, f"/api/sessions/{sid}/audit", owner)
    assert actions(log) == [
        Action.MEMBER_REMOVED,
        Action.ROLE_DENIED,
        Action.ASSET_RESTORED,
        Action.ASSET_DELETED,
        Action.MEMBER_ADDED,
        Action.MEMBER_ROLE_CHANGED,
        Action.MEMBER_ADDED,
    ]
    denied = log[1]
    assert denied["actor_id"] == viewer_id
    assert denied["session_id"] == sid
    assert denied["detail"] == {"method": "DELETE", "path": f"/api/sessions/{sid}"}
    assert log[3]["actor_id"] == user_id(client, editor)
    assert log[3]["target_id"] == asset
    assert log[5]["detail"] == {"role": "editor", "previous": "viewer"}
    assert all(e["session_id"] == sid for e in log)  # nothing of the other session

    # Editors may not read it (and that attempt is itself recorded); non-members get a 404.
    r = client.get(f"/api/sessions/{sid}/audit", headers=auth(editor))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden")
    assert client.get(f"/api/sessions/{sid}/audit", headers=auth(stranger)).status_code == 404
    assert actions(entries(client, f"/api/sessions/{sid}/audit", owner, limit=1)) == [Action.ROLE_DENIED]
    # The viewer's own trail has their denied attempt and their removal, nothing of the others.
    assert actions(entries(client, "/api/me/audit", viewer))[:2] == [
        Action.MEMBER_REMOVED,
        Action.ROLE_DENIED,
    ]
    assert {e["session_id"] for e in entries(client, "/api/me/audit", viewer)} <= {sid, None}
    # The deleted session's entries are its owner's; not readable by the other owner.
    assert actions(entries(client, "/api/me/audit", stranger))[0] == Action.SESSION_DELETED
    assert sid not in str(entries(client, "/api/me/audit", stranger))


def test_audit_pages_and_bad_parameters(make_client: MakeClient) -> None:
    client = make_client()
    token = signup(client)
    for _ in range(3):
        client.post("/api/auth/login", json={"email": "ana@example.com", "password": "wrong password"})
    first = client.get("/api/me/audit", headers=auth(token), params={"limit": 2}).json()
    assert len(first["entries"]) == 2
    assert first["next_before"] == first["entries"][-1]["id"]
    rest = entries(client, "/api/me/audit", token, before=first["next_before"])
    assert len(rest) == 3
    assert all(e["id"] < first["next_before"] for e in rest)
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"before": "-1"}, {"before": "1e3"}):
        r = client.get("/api/me/audit", headers=auth(token), params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error"), params


def test_job_starts_are_audited(make_client: MakeClient) -> None:
    url = os.environ.get("ESCENARIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    problem = _redis_problem(url)
    require(problem is None, problem or "")
    # No worker here: the job waits in Redis, which is all this test needs.
    client = make_client(inference_workers=0, redis_url=url, job_queue_prefix=f"audit-{uuid.uuid4().hex}")
    owner = signup(client)
    sid = new_session(client, owner)
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.5)))["asset_id"]
    r = client.post(f"/api/assets/{asset}/transcribe", headers=auth(owner))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    started = [
        e for e in entries(client, f"/api/sessions/{sid}/audit", owner) if e["action"] == Action.JOB_STARTED
    ]
    assert len(started) == 1
    assert started[0]["target_id"] == job_id
    assert started[0]["actor_id"] == user_id(client, owner)
    assert started[0]["detail"] == {"kind": "transcribe", "asset_id": asset}
    assert client.delete(f"/api/jobs/{job_id}", headers=auth(owner)).status_code == 200  # queued: cancelled


# the role table: every session-scoped HTTP endpoint, tried with every role --------------------

ROLES = ("stranger", "other_owner", "viewer", "editor", "owner")
EVERYONE = frozenset({"viewer", "editor", "owner"})
WRITERS = frozenset({"editor", "owner"})
OWNER = frozenset({"owner"})

# (method, path, who may, request extras). Not here: the endless preview stream, WebRTC offers
# and job ids (covered in tests/test_jobs_api.py), and the /sync and /jam sockets.
ROLE_TABLE: list[tuple[str, str, frozenset[str], dict[str, Any]]] = [
    ("GET", "/api/sessions/{sid}", EVERYONE, {}),
    ("PATCH", "/api/sessions/{sid}", WRITERS, {"json": {"title": "Renamed"}}),
    ("DELETE", "/api/sessions/{sid}", OWNER, {}),
    (
        "POST",
        "/api/sessions/{sid}/members",
        OWNER,
        {"json": {"email": "extra@example.com", "role": "editor"}},
    ),
    ("DELETE", "/api/sessions/{sid}/members/{extra}", OWNER, {}),
    ("GET", "/api/sessions/{sid}/audit", OWNER, {}),
    ("GET", "/api/sessions/{sid}/assets", EVERYONE, {}),
    ("POST", "/api/sessions/{sid}/assets", WRITERS, {"upload": True}),
    ("GET", "/api/sessions/{sid}/jobs", EVERYONE, {}),
    ("GET", "/api/sessions/{sid}/mixdown", EVERYONE, {}),
    ("GET", "/api/sessions/{sid}/jam/stats", EVERYONE, {}),
    ("GET", "/api/assets/{aid}", EVERYONE, {}),
    ("DELETE", "/api/assets/{aid}", WRITERS, {}),
    ("POST", "/api/assets/{aid}/restore", WRITERS, {"deleted": True}),
    ("GET", "/api/assets/{aid}/peaks", EVERYONE, {}),
    ("GET", "/api/assets/{aid}/audio", EVERYONE, {}),
    ("POST", "/api/assets/{aid}/transcribe", WRITERS, {"json": {}}),
    ("POST", "/api/assets/{aid}/separate", WRITERS, {"json": {"model": "htdemucs"}}),
    ("POST", "/api/assets/{aid}/master", WRITERS, {"json": {}}),
]


def test_every_http_endpoint_enforces_its_roles_and_audits_refusals(make_client: MakeClient) -> None:
    # No inference workers: a permitted job request gets past the role check to a 503.
    client = make_client(inference_workers=0)
    tokens = {role: signup(client, f"{role}@example.com", role) for role in ROLES}
    extra = signup(client, "extra@example.com", "Extra")
    extra_id = user_id(client, extra)
    new_session(client, tokens["other_owner"])
    audio = wav_bytes(sine(seconds=0.2))
    for method, template, allowed, extras in ROLE_TABLE:
        for role in ROLES:
            # A fresh session per try: a permitted DELETE must not change the next try.
            sid = new_session(client, tokens["owner"])
            add_member(client, tokens["owner"], sid, "viewer@example.com", "viewer")
            add_member(client, tokens["owner"], sid, "editor@example.com", "editor")
            add_member(client, tokens["owner"], sid, "extra@example.com", "viewer")
            aid = uploaded(client, tokens["owner"], sid, audio)["asset_id"]
            if extras.get("deleted"):
                assert client.delete(f"/api/assets/{aid}", headers=auth(tokens["owner"])).status_code == 204
            path = template.format(sid=sid, aid=aid, extra=extra_id)
            kwargs: dict[str, Any] = {"headers": auth(tokens[role])}
            if "json" in extras:
                kwargs["json"] = extras["json"]
            if extras.get("upload"):
                kwargs["files"] = {"file": ("t.wav", audio, "audio/wav")}
            r = client.request(method, path, **kwargs)
            what = f"{method} {template} as {role}: {r.status_code} {r.text[:200]}"
            if role in ("stranger", "other_owner"):
                assert r.status_code == 404, what  # not a member: the session does not exist
            elif role in allowed:
                assert r.status_code not in (401, 403, 404), what
            else:
                assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden"), what
                denied = entries(client, f"/api/sessions/{sid}/audit", tokens["owner"])[0]
                assert denied["action"] == Action.ROLE_DENIED, what
                assert denied["actor_id"] == user_id(client, tokens[role]), what
                assert denied["detail"] == {"method": method, "path": path}, what
