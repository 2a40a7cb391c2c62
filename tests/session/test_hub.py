"""The room runner and manager against a real SQLite store, with fake peers."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from persistence.sqlite import SqliteStore
from realtime.session import protocol as p
from realtime.session.hub import HubConfig, RoomManager, build_doc
from realtime.session.room import CloseCode


class FakePeer:
    def __init__(self, user_id: str = "u", capacity: int = 10_000) -> None:
        self.user_id = user_id
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.capacity = capacity
        self.flushes = 0

    def enqueue(self, frame: bytes) -> bool:
        if len(self.frames) >= self.capacity:
            return False
        self.frames.append(frame)
        return True

    def flush(self) -> bool:
        self.flushes += 1
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def updates(self) -> list[bytes]:
        out = []
        for f in self.frames:
            msg = p.decode_message(f)
            if isinstance(msg, p.SyncUpdate):
                out.append(msg.update)
        return out


def edits(n: int, start: int = 0) -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    m = doc.get("session", type=pycrdt.Map)
    for i in range(start, start + n):
        m[f"k{i}"] = i
    return ups


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "hub.db")
    await s.migrate()
    yield s
    await s.close()


async def test_updates_are_in_the_log_before_any_peer_gets_them(store: SqliteStore, tmp_path: Path) -> None:
    manager = RoomManager(store)
    runner = await manager.acquire("room")
    writer, reader = FakePeer(), FakePeer()
    rows_at_delivery: list[int] = []
    original = reader.enqueue

    def checking_enqueue(frame: bytes) -> bool:
        if isinstance(p.decode_message(frame), p.SyncUpdate):
            # Read the log from another connection, as a restarted server would.
            with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
                rows_at_delivery.append(db.execute("SELECT count(*) FROM crdt_updates").fetchone()[0])
        return original(frame)

    reader.enqueue = checking_enqueue  # type: ignore[method-assign]
    runner.join(1, writer, can_edit=True)
    runner.join(2, reader, can_edit=True)
    for u in edits(5):
        runner.receive(1, p.update_message(u))
    await runner.drain()
    assert len(reader.updates()) == 5
    assert writer.updates() == []  # no echo
    record = await store.load_room("room")
    assert len(record.updates) == 5
    # Each delivered update was already committed when it was handed to the peer.
    assert [n >= i + 1 for i, n in enumerate(rows_at_delivery)] == [True] * 5
    # One event-loop turn, one transaction: five updates submitted together share a batch.
    assert [seq for seq, _ in record.updates] == [1, 2, 3, 4, 5]
    await manager.close()


async def test_a_sync_reply_waits_for_the_state_it_reveals_to_be_persisted(store: SqliteStore) -> None:
    manager = RoomManager(store)
    runner = await manager.acquire("room")
    a, b = FakePeer(), FakePeer()
    runner.join(1, a, can_edit=True)
    runner.join(2, b, can_edit=True)
    await runner.drain()
    (u,) = edits(1)
    runner.receive(1, p.update_message(u))
    runner.receive(2, p.sync_step1_message(b"\x00"))
    # Nothing is delivered within this turn; by the time it is, the log holds the update.
    assert not any(isinstance(p.decode_message(f), p.SyncStep2) for f in b.frames)
    await runner.drain()
    assert any(isinstance(p.decode_message(f), p.SyncStep2) for f in b.frames)
    assert len((await store.load_room("room")).updates) == 1
    await manager.close()


class FlakyStore:
    """Delegates to a real store but fails the first `failures` appends."""

    def __init__(self, inner: SqliteStore, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def append_updates_nowait(self, room: str, updates: Sequence[bytes]) -> int | None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk on fire")
        return self._inner.append_updates_nowait(room, updates)

    async def append_updates(self, room: str, updates: Sequence[bytes]) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk on fire")
        return await self._inner.append_updates(room, updates)


async def test_store_failure_delays_delivery_but_loses_nothing(store: SqliteStore) -> None:
    # The first failure hits the fast path, the next two the async retry loop.
    flaky = FlakyStore(store, failures=3)
    manager = RoomManager(flaky, HubConfig(store_retry_s=0.01))  # type: ignore[arg-type]
    runner = await manager.acquire("room")
    writer, reader = FakePeer(), FakePeer()
    runner.join(1, writer, can_edit=True)
    runner.join(2, reader, can_edit=True)
    (u,) = edits(1)
    runner.receive(1, p.update_message(u))
    await asyncio.wait_for(runner.drain(), 5)
    assert flaky.failures == 0
    assert len(reader.updates()) == 1
    assert len((await store.load_room("room")).updates) == 1
    await manager.close()


async def test_compaction_after_threshold_keeps_content(store: SqliteStore) -> None:
    manager = RoomManager(store, HubConfig(compact_after_rows=50))
    runner = await manager.acquire("room")
    peer = FakePeer()
    runner.join(1, peer, can_edit=True)
    for u in edits(120):
        runner.receive(1, p.update_message(u))
        await runner.drain()
    await runner.compact()
    record = await store.load_room("room")
    assert record.snapshot is not None
    assert len(record.updates) < 50
    doc = build_doc(record.snapshot, (u for _, u in record.updates))
    assert doc.get("session", type=pycrdt.Map).to_py() == {f"k{i}": i for i in range(120)}
    await manager.close()


async def test_idle_room_unloads_after_grace_and_compacts(store: SqliteStore) -> None:
    manager = RoomManager(store, HubConfig(unload_grace_s=10))
    runner = await manager.acquire("room")
    peer = FakePeer()
    runner.join(1, peer, can_edit=True)
    for u in edits(3):
        runner.receive(1, p.update_message(u))
    runner.leave(1)
    await runner.drain()
    assert runner.empty_since is not None
    await manager.sweep(runner.empty_since + 5)
    assert manager.loaded_rooms == ["room"]
    await manager.sweep(runner.empty_since + 10)
    assert manager.loaded_rooms == []
    record = await store.load_room("room")
    assert record.updates == []
    assert record.snapshot is not None
    await manager.close()


async def test_slow_peer_is_closed_and_others_keep_receiving(store: SqliteStore) -> None:
    manager = RoomManager(store)
    runner = await manager.acquire("room")
    writer, slow, fast = FakePeer(), FakePeer(capacity=3), FakePeer()
    runner.join(1, writer, can_edit=True)
    runner.join(2, slow, can_edit=True)
    runner.join(3, fast, can_edit=True)
    for u in edits(10):
        runner.receive(1, p.update_message(u))
    await runner.drain()
    assert slow.closed is not None
    assert slow.closed[0] == CloseCode.TRY_AGAIN_LATER
    assert len(fast.updates()) == 10
    await manager.close()


async def test_restore_bumps_epoch_and_tells_clients_to_reload(store: SqliteStore) -> None:
    manager = RoomManager(store)
    runner = await manager.acquire("room")
    peer = FakePeer()
    runner.join(1, peer, can_edit=True)
    for u in edits(3):
        runner.receive(1, p.update_message(u))
    await runner.drain()
    backup = edits(1, start=100)[0]
    epoch = await manager.restore("room", backup)
    assert epoch == 1
    assert peer.closed is not None
    assert peer.closed[0] == CloseCode.RELOAD
    reloaded = await manager.acquire("room")
    assert reloaded.room.epoch == 1
    assert reloaded.room.doc.get("session", type=pycrdt.Map).to_py() == {"k100": 100}
    await manager.close()


async def test_concurrent_acquire_loads_once(store: SqliteStore) -> None:
    manager = RoomManager(store)
    runners = await asyncio.gather(*(manager.acquire("room") for _ in range(10)))
    assert len({id(r) for r in runners}) == 1
    await manager.close()


async def test_kick_user_closes_only_their_connections(store: SqliteStore) -> None:
    manager = RoomManager(store)
    runner = await manager.acquire("room")
    alice1, alice2, bob = FakePeer("alice"), FakePeer("alice"), FakePeer("bob")
    runner.join(1, alice1, can_edit=True)
    runner.join(2, alice2, can_edit=True)
    runner.join(3, bob, can_edit=True)
    manager.kick_user("room", "alice", CloseCode.FORBIDDEN, "removed")
    await runner.drain()
    assert alice1.closed == alice2.closed == (CloseCode.FORBIDDEN, "removed")
    assert bob.closed is None
    await manager.close()


async def test_room_over_its_pending_cap_is_rebuilt_from_the_log(store: SqliteStore) -> None:
    from realtime.session.room import RoomLimits

    manager = RoomManager(store, HubConfig(limits=RoomLimits(max_pending_bytes=200)))
    runner = await manager.acquire("room")
    good, bad = FakePeer(), FakePeer()
    runner.join(1, good, can_edit=True)
    runner.join(2, bad, can_edit=True)
    (kept,) = edits(1, start=500)
    runner.receive(1, p.update_message(kept))
    orphans = edits(30)[1:]  # their first dependency never arrives
    for u in orphans:
        runner.receive(2, p.update_message(u))
    await runner.drain()
    assert bad.closed is not None
    assert bad.closed[0] == CloseCode.POLICY
    for _ in range(100):
        if not runner.room.needs_rebuild:
            break
        await asyncio.sleep(0.01)
    assert runner.room.stats.pending_bytes == 0
    assert runner.room.doc.get("session", type=pycrdt.Map).to_py() == {"k500": 500}
    await manager.close()


async def test_an_update_to_a_quiet_room_goes_out_at_once(store: SqliteStore) -> None:
    manager = RoomManager(store, HubConfig(batch_window_s=10.0))
    runner = await manager.acquire("room")
    writer, reader = FakePeer(), FakePeer()
    runner.join(1, writer, can_edit=True)
    runner.join(2, reader, can_edit=True)
    await runner.drain()
    # The joins above flushed just now; a quiet room means one whole window later.
    runner._last_flush -= 10.0
    (u,) = edits(1)
    runner.receive(1, p.update_message(u))
    await asyncio.sleep(0)  # one loop iteration, nowhere near the 10 s window
    await asyncio.sleep(0)
    assert reader.updates() == [u]
    await manager.close()


async def test_a_burst_is_batched_into_one_write_per_reader_per_window(store: SqliteStore) -> None:
    manager = RoomManager(store, HubConfig(batch_window_s=0.05))
    runner = await manager.acquire("room")
    writer, reader = FakePeer(), FakePeer()
    runner.join(1, writer, can_edit=True)
    runner.join(2, reader, can_edit=True)
    await runner.drain()
    flushes_before = reader.flushes
    loop = asyncio.get_running_loop()
    started = loop.time()
    ups = edits(6)
    for u in ups:  # spread over several loop turns, all inside one window
        runner.receive(1, p.update_message(u))
        await asyncio.sleep(0.001)
    await runner.drain()
    assert reader.updates() == ups
    assert reader.flushes - flushes_before == 1
    assert loop.time() - started < 0.5
    assert len((await store.load_room("room")).updates) == 6
    await manager.close()
