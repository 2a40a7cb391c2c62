"""Signed, single-use invite links (issue 7): create, accept once, expire, refuse tampering."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient

from persistence.ports import Role
from realtime.invites import KEY_FILE, InviteClaims, make_token, read_token

from .appclient import MakeClient, auth, services, signup
from .test_assets import add_member, new_session
from .test_retention import backend_client, portal, user_id

__all__ = ["backend_client"]


def invite(client: TestClient, token: str, sid: str, **body: Any) -> Any:
    return client.post(f"/api/sessions/{sid}/invites", json=body, headers=auth(token))


def accept(client: TestClient, token: str | None, invite_token: str) -> Any:
    return client.post(f"/api/invites/{invite_token}/accept", headers=auth(token) if token else {})


def code(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def test_an_invite_adds_one_person_once(backend_client: MakeClient) -> None:
    client = backend_client()
    owner = signup(client, "owner@example.com", "Olga")
    bob = signup(client, "bob@example.com", "Bob")
    carol = signup(client, "carol@example.com", "Carol")
    eve = signup(client, "eve@example.com", "Eve")
    sid = new_session(client, owner)
    add_member(client, owner, sid, "eve@example.com", "editor")

    # Only the owner invites; bad requests are refused clearly.
    assert code(invite(client, eve, sid, role="viewer")) == (403, "role_forbidden")
    assert code(invite(client, carol, sid, role="viewer")) == (404, "session_not_found")
    for bad in (
        {"role": "owner"},
        {"role": ["editor"]},
        {},
        {"role": "editor", "expires_in_s": 10},
        {"role": "editor", "expires_in_s": "3600"},
        {"role": "editor", "expires_in_s": True},
        {"role": "editor", "extra": 1},
    ):
        assert invite(client, owner, sid, **bad).status_code == 422, bad

    r = invite(client, owner, sid, role="editor", expires_in_s=3600)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "editor"
    assert body["url"].endswith(f"/api/invites/{body['token']}/accept")
    assert abs(body["expires_at"] - (time.time() + 3600)) < 5

    assert accept(client, None, body["token"]).status_code == 401
    r = accept(client, bob, body["token"])
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["role"]) == (sid, "editor")
    assert client.get(f"/api/sessions/{sid}", headers=auth(bob)).json()["role"] == "editor"
    assert client.patch(f"/api/sessions/{sid}", json={"title": "Bob was here"}, headers=auth(bob)).is_success

    # Single use: a second person gets 410; Carol is not a member.
    assert code(accept(client, carol, body["token"])) == (410, "invite_used")
    assert client.get(f"/api/sessions/{sid}", headers=auth(carol)).status_code == 404
    # A member cannot spend an invite (it would change nothing, or lower their role).
    viewer_invite = invite(client, owner, sid, role="viewer").json()["token"]
    assert code(accept(client, eve, viewer_invite)) == (409, "already_member")
    assert client.get(f"/api/sessions/{sid}", headers=auth(eve)).json()["role"] == "editor"
    r = accept(client, carol, viewer_invite)  # still unused, so Carol can
    assert r.json()["role"] == "viewer"

    # Audited in the session's trail.
    trail = client.get(f"/api/sessions/{sid}/audit", headers=auth(owner)).json()["entries"]
    actions = [e["action"] for e in trail]
    assert actions.count("invite.create") == 2
    assert actions.count("invite.accept") == 2
    accepted = [e for e in trail if e["action"] == "invite.accept"]
    assert {e["actor_id"] for e in accepted} == {user_id(client, bob), user_id(client, carol)}


def test_expired_and_tampered_invites_are_refused(backend_client: MakeClient) -> None:
    client = backend_client()
    owner = signup(client, "owner@example.com", "Olga")
    bob = signup(client, "bob@example.com", "Bob")
    sid = new_session(client, owner)
    body = invite(client, owner, sid, role="editor", expires_in_s=60).json()
    token = body["token"]
    payload, _, sig = token.partition(".")
    key = (services(client).settings.data_dir / "keys" / KEY_FILE).read_bytes()

    # Tampered: another payload under the same signature, a changed signature, junk.
    upgraded = make_token(b"x" * 32, InviteClaims(body["invite_id"], sid, Role.EDITOR, 2**40))
    for bad in (
        f"{payload[:-2]}AA.{sig}",
        f"{payload}.{sig[:-2]}AA",
        upgraded,
        "not-a-token",
        f"{payload}.",
        "." * 5,
    ):
        assert code(accept(client, bob, bad)) == (403, "invalid_invite"), bad
    assert client.get(f"/api/sessions/{sid}", headers=auth(bob)).status_code == 404

    # Expired: a token this server signed, with an expiry in the past.
    past = make_token(key, InviteClaims(body["invite_id"], sid, Role.EDITOR, int(time.time()) - 1))
    assert code(accept(client, bob, past)) == (410, "invite_expired")

    # The row enforces the expiry too (a token's claim is not the only guard).
    async def late() -> Any:
        store = services(client).store
        return await store.use_invite(body["invite_id"], user_id="u", at=time.time() + 61)

    assert portal(client).call(late) is None
    # An invite to a deleted session is gone with it.
    other = invite(client, owner, sid, role="viewer").json()["token"]
    assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
    assert code(accept(client, bob, other)) == (404, "session_not_found")
    # The still-valid original works nowhere now either, and nothing was spent along the way.
    assert code(accept(client, bob, token)) == (404, "session_not_found")


def test_token_round_trip() -> None:
    key = b"k" * 32
    claims = InviteClaims("i1", "s1", Role.VIEWER, 1234)
    assert read_token(key, make_token(key, claims)) == claims
