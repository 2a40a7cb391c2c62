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


# The role table for every session-scoped HTTP endpoint is in tests/test_role_table.py.
