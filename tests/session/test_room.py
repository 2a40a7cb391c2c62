"""The sans-I/O room: events in, effects out; no sockets, no loop, no clock."""

from __future__ import annotations

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.session import protocol as p
from realtime.session.room import Broadcast, Close, CloseCode, Persist, Room, RoomLimits, Send


def client_update(edit: dict[str, object], doc: pycrdt.Doc | None = None) -> tuple[pycrdt.Doc, bytes]:
    doc = doc or pycrdt.Doc()
    updates: list[bytes] = []
    sub = doc.observe(lambda e: updates.append(e.update))
    with doc.transaction():
        m = doc.get("session", type=pycrdt.Map)
        for k, v in edit.items():
            m[k] = v
    doc.unobserve(sub)
    return doc, updates[0]


def test_connect_sends_sync_step1_and_presence() -> None:
    room = Room("r", pycrdt.Doc())
    effects = room.connect(1, can_edit=True)
    assert len(effects) == 1
    assert isinstance(effects[0], Send)
    assert isinstance(p.decode_message(effects[0].frame), p.SyncStep1)
    room.receive(1, p.awareness_message(p.encode_awareness([p.AwarenessEntry(5, 1, '{"u":1}')])), now=0)
    effects = room.connect(2, can_edit=True)
    assert len(effects) == 2
    aw = p.decode_message(effects[1].frame)  # type: ignore[union-attr]
    assert isinstance(aw, p.AwarenessMessage)
    assert p.decode_awareness(aw.payload, max_entries=9, max_state_bytes=99)[0].client_id == 5


def test_update_is_persisted_then_broadcast_to_others_only() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    room.connect(2, can_edit=True)
    _, update = client_update({"bpm": 128})
    effects = room.receive(1, p.update_message(update), now=0)
    assert [type(e) for e in effects] == [Persist, Broadcast]
    assert isinstance(effects[1], Broadcast)
    assert effects[1].exclude == 1
    assert room.doc.get("session", type=pycrdt.Map)["bpm"] == 128


def test_sync_step1_is_answered_with_the_missing_state() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    _, update = client_update({"title": "Demo"})
    room.receive(1, p.update_message(update), now=0)
    room.connect(2, can_edit=False)
    (reply,) = room.receive(2, p.sync_step1_message(pycrdt.Doc().get_state()), now=0)
    assert isinstance(reply, Send)
    msg = p.decode_message(reply.frame)
    assert isinstance(msg, p.SyncStep2)
    fresh = pycrdt.Doc()
    fresh.apply_update(msg.update)
    assert fresh.get("session", type=pycrdt.Map)["title"] == "Demo"


def test_viewer_writes_are_dropped() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=False)
    _, update = client_update({"bpm": 99})
    assert room.receive(1, p.update_message(update), now=0) == []
    assert room.receive(1, p.sync_step2_message(update), now=0) == []
    assert "bpm" not in room.doc.get("session", type=pycrdt.Map)
    assert room.stats.updates_dropped_readonly == 2


def test_duplicate_update_is_not_rebroadcast() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    _, update = client_update({"bpm": 128})
    assert len(room.receive(1, p.update_message(update), now=0)) == 2
    assert room.receive(1, p.update_message(update), now=0) == []


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x02\x03abc",
        b"\x00\x02\x00",
        b"\x00\x02\x05\x01\x02\x03\x04\x05",
        b"\x80",
        b"\x01\x03\x01\x01\x01",
    ],
)
def test_malformed_frames_close_only_that_connection(frame: bytes) -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    room.connect(2, can_edit=True)
    effects = room.receive(1, frame, now=0)
    assert len(effects) == 1
    assert isinstance(effects[0], Close)
    assert effects[0].conn == 1
    assert effects[0].code == CloseCode.INVALID_PAYLOAD
    _, update = client_update({"ok": True})
    assert len(room.receive(2, p.update_message(update), now=0)) == 2


def test_unknown_message_types_are_ignored() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    assert room.receive(1, b"\x02\x00\x00", now=0) == []
    assert room.stats.unknown_messages == 1


def test_disconnect_broadcasts_presence_removal() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    room.connect(2, can_edit=True)
    room.receive(1, p.awareness_message(p.encode_awareness([p.AwarenessEntry(5, 3, '{"u":1}')])), now=0)
    (effect,) = room.disconnect(1)
    assert isinstance(effect, Broadcast)
    msg = p.decode_message(effect.frame)
    assert isinstance(msg, p.AwarenessMessage)
    assert p.decode_awareness(msg.payload, max_entries=9, max_state_bytes=99) == [
        p.AwarenessEntry(5, 4, "null")
    ]


def test_query_awareness_answers_all_states() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    room.receive(1, p.awareness_message(p.encode_awareness([p.AwarenessEntry(5, 3, '{"u":1}')])), now=0)
    room.connect(2, can_edit=True)
    (reply,) = room.receive(2, b"\x03", now=0)
    assert isinstance(reply, Send)
    assert reply.conn == 2


def test_pending_updates_are_capped() -> None:
    room = Room("r", pycrdt.Doc(), limits=RoomLimits(max_pending_bytes=200))
    room.connect(1, can_edit=True)
    doc = pycrdt.Doc()
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    m = doc.get("m", type=pycrdt.Map)
    for i in range(30):
        m[f"k{i}"] = "x" * 20
    closes = []
    for u in ups[1:]:  # the first update never arrives: everything else waits on it
        closes += [e for e in room.receive(1, p.update_message(u), now=0) if isinstance(e, Close)]
    assert closes
    assert closes[0].code == CloseCode.POLICY
    assert room.needs_rebuild


def test_pending_updates_integrate_when_dependency_arrives() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    doc = pycrdt.Doc()
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    m = doc.get("m", type=pycrdt.Map)
    m["a"] = 1
    m["b"] = 2
    assert room.receive(1, p.update_message(ups[1]), now=0) == []
    assert room.stats.pending_bytes > 0
    effects = room.receive(1, p.update_message(ups[0]), now=0)
    assert any(isinstance(e, Persist) for e in effects)
    assert room.stats.pending_bytes == 0
    assert room.doc.get("m", type=pycrdt.Map).to_py() == {"a": 1, "b": 2}


def test_local_server_edits_become_persist_and_broadcast() -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    room.doc.get("session", type=pycrdt.Map)["title"] = "Server"
    effects = room.take_local_changes()
    assert [type(e) for e in effects] == [Persist, Broadcast]
    assert isinstance(effects[1], Broadcast)
    assert effects[1].exclude is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=48), max_size=8))
def test_fuzzed_frames_leave_the_room_healthy(frames: list[bytes]) -> None:
    room = Room("r", pycrdt.Doc())
    room.connect(1, can_edit=True)
    room.connect(2, can_edit=True)
    for frame in frames:
        for effect in room.receive(1, frame, now=0):
            if isinstance(effect, Close):
                assert effect.conn == 1
                assert effect.code in (CloseCode.INVALID_PAYLOAD, CloseCode.POLICY)
    _, update = client_update({"after": "fuzz"})
    effects = room.receive(2, p.update_message(update), now=0)
    assert any(isinstance(e, Persist) for e in effects)
    assert room.doc.get("session", type=pycrdt.Map)["after"] == "fuzz"
