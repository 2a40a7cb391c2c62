"""The role table for the sockets (issue 7): `/sync` and `/jam` with every role.

Roles: none (no token), a signed-in stranger, another session's owner, viewer, editor, owner.
Who connects, whose document updates land (a viewer's are dropped), who may send jam audio (a
viewer's first frame closes 1008); non-members get 4403, no token 4401. Every refusal of a
signed-in user is in the session's audit log (`access.role_denied`, `detail = {channel, reason}`),
once per connection however many frames were refused, written without holding up the socket.
In-process app, the same code path as a served one (the transport differs, the authorisation
does not).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pycrdt
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from realtime.app import create_app
from realtime.audit import Action
from realtime.config import Settings
from realtime.session import protocol as p
from realtime.transport.sync_ws import is_write_attempt

from .appclient import auth, services, signup
from .jam.test_engine import Player
from .test_assets import add_member, new_session
from .test_retention import user_id
from .test_sync_ws import drain_until_closed, handshake, update_frame

T = TypeVar("T")


@dataclass(frozen=True)
class Expect:
    connect: int | None  # None: connects; else the close code
    writes: bool = False  # document updates land
    sends_audio: bool = False  # jam audio is accepted
    # The audit entry's reason, per channel (None: nothing recorded).
    sync_audit: str | None = None
    jam_audit: str | None = None


TABLE: dict[str, Expect] = {
    "none": Expect(connect=4401),  # nobody to record
    "stranger": Expect(connect=4403, sync_audit="not_member", jam_audit="not_member"),
    "other_owner": Expect(connect=4403, sync_audit="not_member", jam_audit="not_member"),
    "viewer": Expect(
        connect=None, writes=False, sends_audio=False, sync_audit="read_only", jam_audit="not_sender"
    ),
    "editor": Expect(connect=None, writes=True, sends_audio=True),
    "owner": Expect(connect=None, writes=True, sends_audio=True),
}


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One app, one session, and a token per role (None for 'none')."""
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


def on_app_loop(client: TestClient, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run `fn` on the in-process app's event loop (the one its sockets and tasks run on)."""
    portal = client.portal
    assert portal is not None, "the client's lifespan is not entered"
    return portal.call(functools.partial(fn, *args, **kwargs))


def drain_audit(client: TestClient) -> None:
    """Wait until the audit entries written in the background have landed."""
    audit = services(client).audit
    assert audit is not None
    on_app_loop(client, audit.drain)


def socket_refusals(client: TestClient, sid: str, owner: str, channel: str) -> list[dict[str, Any]]:
    """The session's role refusals on `channel`, oldest first, once every pending write landed."""
    drain_audit(client)
    r = client.get(f"/api/sessions/{sid}/audit", headers=auth(owner), params={"limit": 500})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["entries"]
    return [
        e
        for e in reversed(found)
        if e["action"] == Action.ROLE_DENIED and e["detail"].get("channel") == channel
    ]


def assert_audited(
    client: TestClient, sid: str, tokens: dict[str, str | None], role: str, channel: str
) -> None:
    """Exactly one entry for this role's connection on `channel`, with the expected reason, or none."""
    owner = tokens["owner"] or ""
    token = tokens[role]
    expected = getattr(TABLE[role], f"{channel}_audit")
    actor = user_id(client, token) if token else None
    mine = [e for e in socket_refusals(client, sid, owner, channel) if e["actor_id"] == actor]
    if expected is None:
        assert mine == [], (role, channel, mine)
        return
    assert len(mine) == 1, (role, channel, mine)
    entry = mine[0]
    assert entry["detail"] == {"channel": channel, "reason": expected}
    assert (entry["session_id"], entry["target_type"], entry["target_id"]) == (sid, "session", sid)
    assert entry["ip"] == "testclient"


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
        for n in range(3):  # three refused updates from a viewer: still one audit entry
            ws.send_bytes(update_frame(f"by_{role}", n))
        # A query answered means the server has handled everything sent before it.
        ws.send_bytes(b"\x03")
        while not isinstance(p.decode_message(ws.receive_bytes()), p.AwarenessMessage):
            pass
    runner = services(client).rooms.get_loaded(sid)
    assert runner is not None
    session = runner.room.doc.get("session", type=pycrdt.Map).to_py()
    assert (f"by_{role}" in session) is expect.writes, session
    assert_audited(client, sid, tokens, role, "sync")


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
            assert_audited(client, sid, tokens, role, "jam")
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
    assert_audited(client, sid, tokens, role, "jam")


def test_a_role_refused_on_a_socket_is_the_same_as_over_http(cast: Any) -> None:
    client, sid, tokens = cast
    for role, expect in TABLE.items():
        token = tokens[role]
        status = client.get(f"/api/sessions/{sid}", headers=auth(token) if token else {}).status_code
        assert (status == 200) is (expect.connect is None), role


def test_probing_a_session_id_records_the_same_either_way(cast: Any) -> None:
    """A stranger's trail shows a refused socket the same for a real and a made-up session id."""
    client, sid, _ = cast
    stranger = signup(client, "prober@example.com", "Prober")  # its own trail, whatever ran before
    made_up = "no-such-session"
    for target in (sid, made_up):
        with client.websocket_connect(_url("sync", target, stranger)) as ws:
            assert _closed_with(ws) == 4403
    drain_audit(client)
    mine = client.get("/api/me/audit", headers=auth(stranger), params={"limit": 2}).json()["entries"]
    real, fake = mine[1], mine[0]
    assert fake["session_id"] == fake["target_id"] == made_up
    assert real["session_id"] == real["target_id"] == sid
    shape = {k for k in real if k not in ("id", "at", "session_id", "target_id")}
    assert {k: real[k] for k in shape} == {k: fake[k] for k in shape}


def _doc_update(change: Callable[[pycrdt.Map[Any]], None], base: pycrdt.Doc[Any] | None = None) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if base is not None:
        doc.apply_update(base.get_update())
    before = doc.get_state()
    change(doc.get("session", type=pycrdt.Map))
    return doc.get_update(before)


def test_only_frames_that_would_change_the_document_are_write_attempts() -> None:
    server: pycrdt.Doc[Any] = pycrdt.Doc()
    session = server.get("session", type=pycrdt.Map)
    session["a"] = 1
    session["b"] = 2
    del session["a"]  # the document now has a delete set
    # A read-only client that synced the document and reconnects answers the server's step 1
    # with a step 2: Yjs puts its whole delete set in it, but nothing the server lacks.
    client: pycrdt.Doc[Any] = pycrdt.Doc()
    client.apply_update(server.get_update())
    reconnect = client.get_update(server.get_state())
    assert reconnect != b"\x00\x00"  # the delete set: not empty, and still no change
    assert not is_write_attempt(p.sync_step2_message(reconnect))
    assert not is_write_attempt(p.sync_step2_message(b"\x00\x00"))
    assert not is_write_attempt(p.sync_step1_message(b"\x00"))
    assert not is_write_attempt(p.awareness_message(p.encode_awareness([])))
    assert not is_write_attempt(b"\x03")  # query awareness
    assert not is_write_attempt(b"\x00\x05")  # malformed: the room closes it, nothing to audit
    assert not is_write_attempt(p.update_message(b"\x00\x00"))
    # Edits: an update message with content, or a step 2 with structs the server lacks.
    edit = _doc_update(lambda m: m.__setitem__("c", 3), base=server)
    assert is_write_attempt(p.update_message(edit))
    assert is_write_attempt(p.sync_step2_message(edit))
    deletion = _doc_update(lambda m: m.__delitem__("b"), base=server)
    assert is_write_attempt(p.update_message(deletion))


def test_socket_refusals_are_written_without_holding_up_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit write waits on a gate; the refusals still happen at once, and land when it opens."""
    settings = Settings(data_dir=tmp_path / "data", web_dir=tmp_path / "no-web", jam_fade_in_s=0.0)
    with TestClient(create_app(settings)) as client:
        owner = signup(client, "owner@example.com", "Owner")
        viewer = signup(client, "viewer@example.com", "Viewer")
        stranger = signup(client, "stranger@example.com", "Stranger")
        sid = new_session(client, owner)
        add_member(client, owner, sid, "viewer@example.com", "viewer")
        store = services(client).store

        async def make_gate() -> asyncio.Event:
            return asyncio.Event()

        async def _set(event: asyncio.Event) -> None:
            event.set()

        gate = on_app_loop(client, make_gate)
        original = store.append_audit
        held: list[str] = []

        async def slow_append(**fields: Any) -> Any:
            if fields["action"] == Action.ROLE_DENIED:
                held.append(fields["detail"]["reason"])
                await gate.wait()
            return await original(**fields)

        monkeypatch.setattr(store, "append_audit", slow_append)
        with client.websocket_connect(_url("jam", sid, stranger)) as ws:
            assert _closed_with(ws) == 4403
        with client.websocket_connect(_url("jam", sid, viewer)) as ws:
            assert ws.receive_json()["type"] == "welcome"
            ws.send_bytes(Player(440).frame())
            assert _jam_messages_until_closed_or_pong(ws) == 1008
        with client.websocket_connect(_url("sync", sid, viewer)) as ws:
            handshake(ws)
            ws.send_bytes(update_frame("by_viewer", 1))
            ws.send_bytes(b"\x03")  # still served while its refusal waits to be written
            while not isinstance(p.decode_message(ws.receive_bytes()), p.AwarenessMessage):
                pass
        assert sorted(held) == ["not_member", "not_sender", "read_only"]
        log = client.get(f"/api/sessions/{sid}/audit", headers=auth(owner)).json()["entries"]
        assert Action.ROLE_DENIED not in {e["action"] for e in log}  # none written yet
        on_app_loop(client, _set, gate)
        reasons = sorted(e["detail"]["reason"] for e in socket_refusals(client, sid, owner, "jam"))
        assert reasons == ["not_member", "not_sender"]
        assert [e["detail"]["reason"] for e in socket_refusals(client, sid, owner, "sync")] == ["read_only"]
