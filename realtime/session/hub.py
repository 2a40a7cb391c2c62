"""The I/O shell around `Room`: persistence before delivery, per-turn batching, room lifecycle.

A `RoomRunner` owns one loaded room. Whatever happens during one event-loop turn is
collected; a single flusher task then writes all new updates to the store in one transaction
and only after that hands the frames to the peers' bounded queues, in order. A server killed
at any moment has therefore persisted every update that any client was sent.

`RoomManager` loads rooms fully before their first sync, unloads idle ones after a grace
period (compacting them on the way out) and compacts busy ones every ~500 log rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pycrdt

from persistence.ports import FastAppend, Store

from .room import Broadcast, Close, CloseCode, Effect, Persist, Room, RoomLimits, Send

log = logging.getLogger(__name__)


class Peer(Protocol):
    """What a runner needs from a connection (the transport implements it)."""

    user_id: str

    def enqueue(self, frame: bytes) -> bool:
        """Queue a frame without blocking; False if the peer's queue is over its bound."""

    def flush(self) -> bool:
        """Everything enqueued in this delivery round is complete: send it (one write).

        False if the peer is now over its backlog bound (the runner then drops it)."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection soon (without blocking the caller)."""


@dataclass(frozen=True, slots=True)
class HubConfig:
    compact_after_rows: int = 500
    unload_grace_s: float = 30.0
    housekeeping_interval_s: float = 5.0
    store_retry_s: float = 0.5
    # Adaptive batching: an update reaching a quiet room goes out at once; while updates keep
    # coming, a room flushes at most once per window, so a burst costs one log transaction and
    # one socket write per reader per window instead of per update. Bounds the added latency.
    batch_window_s: float = 0.004
    limits: RoomLimits = field(default_factory=RoomLimits)


def build_doc(snapshot: bytes | None, updates: Iterable[bytes]) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if snapshot:
        doc.apply_update(snapshot)
    for update in updates:
        doc.apply_update(update)
    return doc


class RoomRunner:
    def __init__(
        self, room: Room, store: Store, config: HubConfig, *, last_seq: int, snapshot_seq: int
    ) -> None:
        self.room = room
        self._store = store
        self._config = config
        self._peers: dict[int, Peer] = {}
        self._batch: list[bytes] = []
        self._outbox: list[Effect] = []
        self._loop = asyncio.get_running_loop()
        self._fast = store if isinstance(store, FastAppend) else None
        self._flush_scheduled = False
        self._last_flush = -1e9
        self._closed_flush = False
        self._laggards: dict[int, Peer] = {}
        # Called on the loop after each flush that changed the document (e.g. the live preview
        # re-reads it). Keep them quick; they run on the sync hot path.
        self.change_callbacks: list[Callable[[], None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.last_seq = last_seq
        self.snapshot_seq = snapshot_seq
        self.empty_since: float | None = time.monotonic()
        self._compacting = False
        self._rebuilding = False

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def peers_of_user(self, user_id: str) -> list[int]:
        return [cid for cid, peer in self._peers.items() if peer.user_id == user_id]

    # -- inputs from connections ---------------------------------------------
    def join(self, conn: int, peer: Peer, *, can_edit: bool) -> None:
        self._peers[conn] = peer
        self.empty_since = None
        self.submit(self.room.connect(conn, can_edit=can_edit))

    def leave(self, conn: int) -> None:
        if self._peers.pop(conn, None) is None:
            return
        if not self._peers:
            self.empty_since = time.monotonic()
        self.submit(self.room.disconnect(conn))

    def receive(self, conn: int, frame: bytes) -> None:
        self.submit(self.room.receive(conn, frame, time.monotonic()))
        if self.room.needs_rebuild and not self._rebuilding:
            self._rebuilding = True
            asyncio.get_running_loop().create_task(self._rebuild())

    def set_server_presence(self, state: str) -> None:
        """Publish the server's awareness entry (JSON object text, or "null" to clear)."""
        self.submit(self.room.set_server_presence(state, time.monotonic()))

    def commit_local_changes(self) -> None:
        """Persist and broadcast edits that server code made on `room.doc`."""
        self.submit(self.room.take_local_changes())

    def submit(self, effects: list[Effect]) -> None:
        if not effects:
            return
        for effect in effects:
            if isinstance(effect, Persist):
                self._batch.append(effect.update)
            else:
                self._outbox.append(effect)
        self._idle.clear()
        if not self._flush_scheduled and self._flusher is None:
            # Everything submitted until the flush runs goes out together.
            self._flush_scheduled = True
            wait = self._last_flush + self._config.batch_window_s - self._loop.time()
            if wait > 0:
                self._loop.call_later(wait, self._flush_now)
            else:
                self._loop.call_soon(self._flush_now)

    # -- the flusher ------------------------------------------------------------
    def _flush_now(self) -> None:
        """Flush on the loop itself when the store can append without waiting (SQLite)."""
        self._flush_scheduled = False
        if self._flusher is not None or self._closed_flush:
            return
        self._last_flush = self._loop.time()
        batch = self._batch
        if batch:
            last_seq = None
            if self._fast is not None:
                try:
                    last_seq = self._fast.append_updates_nowait(self.room.name, batch)
                except Exception:
                    log.exception("room %s: fast append failed; retrying on the async path", self.room.name)
            if last_seq is None:
                # The store would wait (network database, a lock held elsewhere): continue on
                # a task, which also takes whatever arrives meanwhile, in order.
                self._flusher = self._loop.create_task(
                    self._flush_async(), name=f"room-flush-{self.room.name}"
                )
                return
            self.last_seq = last_seq
            self._batch = []
        outbox, self._outbox = self._outbox, []
        self._deliver(outbox)
        self._after_flush(changed=bool(batch))

    async def _flush_async(self) -> None:
        changed = False
        try:
            while self._batch or self._outbox:
                batch, self._batch = self._batch, []
                outbox, self._outbox = self._outbox, []
                if batch:
                    await self._persist(batch)
                    changed = True
                self._deliver(outbox)
        finally:
            self._flusher = None
        self._after_flush(changed=changed)

    def _after_flush(self, *, changed: bool) -> None:
        if not self._batch and not self._outbox:
            self._idle.set()
        if changed:
            for callback in list(self.change_callbacks):
                try:
                    callback()
                except Exception:
                    log.exception("room %s: change callback failed", self.room.name)
        if self.last_seq - self.snapshot_seq >= self._config.compact_after_rows:
            self._start_compaction()

    async def _persist(self, batch: list[bytes]) -> None:
        while True:
            try:
                self.last_seq = await self._store.append_updates(self.room.name, batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing derived from these updates has been sent; keep them and retry
                # rather than deliver state the log does not hold.
                log.exception("room %s: persisting %d updates failed; retrying", self.room.name, len(batch))
                await asyncio.sleep(self._config.store_retry_s)

    def _deliver(self, outbox: list[Effect]) -> None:
        peers = self._peers
        for effect in outbox:
            if isinstance(effect, Broadcast):
                frame = effect.frame
                exclude = effect.exclude
                for conn, peer in peers.items():
                    if conn != exclude and not peer.enqueue(frame):
                        self._laggards[conn] = peer
            elif isinstance(effect, Send):
                target = peers.get(effect.conn)
                if target is not None and not target.enqueue(effect.frame):
                    self._laggards[effect.conn] = target
            elif isinstance(effect, Close):
                target = peers.get(effect.conn)
                if target is not None:
                    target.flush()
                    target.close(effect.code, effect.reason)
        for conn, peer in peers.items():
            if not peer.flush():
                self._laggards[conn] = peer
        if self._laggards:
            laggards, self._laggards = self._laggards, {}
            for conn, peer in laggards.items():
                self._drop_laggard(conn, peer)

    def _drop_laggard(self, conn: int, peer: Peer) -> None:
        log.warning("room %s: closing slow reader %s", self.room.name, conn)
        peer.close(CloseCode.TRY_AGAIN_LATER, "slow reader: send queue full")

    async def drain(self) -> None:
        """Wait until everything submitted so far is persisted and handed to the peers."""
        await self._idle.wait()

    # -- compaction and rebuild ------------------------------------------------
    def _start_compaction(self) -> None:
        if self._compacting or self.room.stats.pending_bytes:
            return
        self._compacting = True
        asyncio.get_running_loop().create_task(self._compact())

    async def _compact(self) -> None:
        try:
            await self.compact()
        except Exception:
            log.exception("room %s: compaction failed", self.room.name)
        finally:
            self._compacting = False

    async def compact(self) -> None:
        """Write the live document as the snapshot and drop the log rows it covers.

        The live document already is the replay of snapshot + log, so its `get_update()` is
        the compacted state; it may also hold updates still in the next batch, which is
        harmless because applying an update twice is a no-op.
        """
        await self.drain()
        upto = self.last_seq
        if upto <= self.snapshot_seq:
            return
        state = self.room.doc.get_update()
        await self._store.compact(self.room.name, upto_seq=upto, state=state)
        self.snapshot_seq = upto
        log.info("room %s: compacted up to seq %d (%d bytes)", self.room.name, upto, len(state))

    async def _rebuild(self) -> None:
        try:
            await self.drain()
            record = await self._store.load_room(self.room.name)
            self.room.replace_doc(build_doc(record.snapshot, (u for _, u in record.updates)))
            log.warning("room %s: rebuilt from the store to drop pending updates", self.room.name)
        except Exception:
            log.exception("room %s: rebuild failed", self.room.name)
        finally:
            self._rebuilding = False

    async def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "room closed") -> None:
        if self._closed:
            return
        self._closed = True
        self.submit(self.room.close_all(code, reason))
        if self._flusher is None:
            self._flush_now()  # no batching window when closing
        await self.drain()
        self._closed_flush = True


class RoomManager:
    def __init__(self, store: Store, config: HubConfig | None = None) -> None:
        self._store = store
        self.config = config or HubConfig()
        self._runners: dict[str, RoomRunner] = {}
        self._loading: dict[str, asyncio.Future[RoomRunner]] = {}
        self._ids = itertools.count(1)
        self._housekeeper: asyncio.Task[None] | None = None

    def next_connection_id(self) -> int:
        return next(self._ids)

    def get_loaded(self, room: str) -> RoomRunner | None:
        return self._runners.get(room)

    @property
    def loaded_rooms(self) -> list[str]:
        return list(self._runners)

    async def start(self) -> None:
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="room-housekeeping")

    async def acquire(self, room: str) -> RoomRunner:
        """The room's runner, loading the whole room from the store first if needed."""
        runner = self._runners.get(room)
        if runner is not None:
            return runner
        pending = self._loading.get(room)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RoomRunner] = asyncio.get_running_loop().create_future()
        self._loading[room] = future
        try:
            record = await self._store.load_room(room)
            doc = build_doc(record.snapshot, (u for _, u in record.updates))
            runner = RoomRunner(
                Room(room, doc, epoch=record.epoch, limits=self.config.limits),
                self._store,
                self.config,
                last_seq=record.last_seq,
                snapshot_seq=record.snapshot_seq,
            )
            self._runners[room] = runner
            future.set_result(runner)
            log.info("room %s: loaded (%d log rows, epoch %d)", room, len(record.updates), record.epoch)
            return runner
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            del self._loading[room]

    async def unload(
        self, room: str, *, code: int = CloseCode.GOING_AWAY, reason: str = "room closed"
    ) -> None:
        runner = self._runners.pop(room, None)
        if runner is None:
            return
        await runner.close(code, reason)
        try:
            await runner.compact()
        except Exception:
            log.exception("room %s: compaction on unload failed", room)

    async def restore(self, room: str, state: bytes) -> int:
        """Replace a room's history by `state` (a backup); connected clients must reload."""
        runner = self._runners.pop(room, None)
        if runner is not None:
            await runner.close(CloseCode.RELOAD, "session restored: reload")
        return await self._store.reset_room(room, state)

    async def delete(self, room: str) -> None:
        runner = self._runners.pop(room, None)
        if runner is not None:
            await runner.close(CloseCode.NOT_FOUND, "session deleted")

    def kick_user(self, room: str, user_id: str, code: int, reason: str) -> None:
        runner = self._runners.get(room)
        if runner is None:
            return
        runner.submit([Close(cid, code, reason) for cid in runner.peers_of_user(user_id)])

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_interval_s)
            try:
                await self.sweep(time.monotonic())
            except Exception:
                log.exception("room housekeeping failed")

    async def sweep(self, now: float) -> None:
        """Expire stale presence and unload rooms that stayed empty past the grace period."""
        for name, runner in list(self._runners.items()):
            runner.submit(runner.room.tick(now))
            idle = runner.empty_since is not None and now - runner.empty_since >= self.config.unload_grace_s
            if idle:
                await self.unload(name)

    async def close(self) -> None:
        """Graceful shutdown: flush, compact and unload every room."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        for name in list(self._runners):
            await self.unload(name, code=CloseCode.GOING_AWAY, reason="server shutting down")
