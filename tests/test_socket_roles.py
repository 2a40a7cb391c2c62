"""The role table for the sockets (issue 7): `/sync` and `/jam` with every role.

Roles: none (no token), a signed-in stranger, another session's owner, viewer, editor, owner.
Who connects, whose document updates land (a viewer's are dropped), who may send jam audio (a
viewer's first frame closes 1008); non-members get 4403, no token 4401. In-process app, the
same code path as a served one (the transport differs, the authorisation does not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pycrdt
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from realtime.session import protocol as p

from .appclient import auth, services, signup
from .jam.test_engine import Player
from .test_assets import add_member, new_session
from .test_sync_ws import drain_until_closed, handshake, update_frame


@dataclass(frozen=True)
class Expect:
    connect: int | None  # None: connects; else the close code
    writes: bool = False  # document updates land
    sends_audio: bool = False  # jam audio is accepted


TABLE: dict[str, Expect] = {
    "none": Expect(connect=4401),
    "stranger": Expect(connect=4403),
    "other_owner": Expect(connect=4403),
    "viewer": Expect(connect=None, writes=False, sends_audio=False),
    "editor": Expect(connect=None, writes=True, sends_audio=True),
    "owner": Expect(connect=None, writes=True, sends_audio=True),
}


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One app, one session, and a token per role (None for 'none')."""
    from realtime.app import create_app
    from realtime.config import Settings

    root = tmp_path_factory.mktemp("roles")
    settings = Settings(data_dir=root / "data", web_dir=root / "no-web", jam_fade_in_s=0.0)
    with TestClient(create_app(settings)) as client:
        owner = signup(client, "owner@example.com", "Owner")
        sid = new_session(client, owner)
        tokens: dict[str, str | None] = {"none": None, "owner": owner}
        for role in ("viewer", "editor"):
            tokens[role] = signup(client, f"{role}@example.com", role.title())
            add_member(client, owner, sid, f"{role}@example.com", role)
        tokens["stranger"] = signup(client, "stranger@example.com", "Stranger")
        tokens["other_owner"] = signup(client, "other@example.com", "Other")
        new_session(client, tokens["other_owner"] or "")
        yield client, sid, tokens


def _url(kind: str, sid: str, token: str | None) -> str:
    return f"/{kind}/{sid}" + (f"?token={token}" if token else "")


def _closed_with(ws: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as info:
        drain_until_closed(ws)
    return info.value.code


@pytest.mark.parametrize("role", list(TABLE))
def test_sync_by_role(cast: Any, role: str) -> None:
    client, sid, tokens = cast
    expect = TABLE[role]
    with client.websocket_connect(_url("sync", sid, tokens[role])) as ws:
        if expect.connect is not None:
            assert _closed_with(ws) == expect.connect
            return
        handshake(ws)
        ws.send_bytes(update_frame(f"by_{role}", 1))
        # A query answered means the server has handled everything sent before it.
        ws.send_bytes(b"\x03")
        while not isinstance(p.decode_message(ws.receive_bytes()), p.AwarenessMessage):
            pass
    runner = services(client).rooms.get_loaded(sid)
    assert runner is not None
    session = runner.room.doc.get("session", type=pycrdt.Map).to_py()
    assert (f"by_{role}" in session) is expect.writes, session


def _jam_messages_until_closed_or_pong(ws: Any) -> int | None:
    """The close code, or None when the pong arrived first (the connection is alive)."""
    while True:
        msg = ws.receive()
        if msg["type"] == "websocket.close":
            return int(msg["code"])
        if msg.get("text") is not None and json.loads(msg["text"])["type"] == "pong":
            return None


@pytest.mark.parametrize("role", list(TABLE))
def test_jam_by_role(cast: Any, role: str) -> None:
    client, sid, tokens = cast
    expect = TABLE[role]
    with client.websocket_connect(_url("jam", sid, tokens[role])) as ws:
        if expect.connect is not None:
            msg = ws.receive()
            while msg["type"] != "websocket.close":
                msg = ws.receive()
            assert msg["code"] == expect.connect
            return
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome"
        assert welcome["canSend"] is expect.sends_audio
        player = Player(440)
        for _ in range(3):
            ws.send_bytes(player.frame())
        ws.send_json({"type": "ping", "t": 1})
        code = _jam_messages_until_closed_or_pong(ws)
        assert code == (None if expect.sends_audio else 1008)


def test_a_role_refused_on_a_socket_is_the_same_as_over_http(cast: Any) -> None:
    client, sid, tokens = cast
    for role, expect in TABLE.items():
        token = tokens[role]
        status = client.get(f"/api/sessions/{sid}", headers=auth(token) if token else {}).status_code
        assert (status == 200) is (expect.connect is None), role
