"""The sans-I/O collaboration room: one pycrdt document, its awareness and its connections.

`Room` never touches a socket, a clock or a database. Callers feed it what happened
(`connect`, `receive`, `disconnect`, `tick`) and get back a list of effects to carry out:

- `Persist(update)`: append to the update log;
- `Send(conn, frame)` / `Broadcast(frame, exclude)`: deliver bytes, the same bytes to everyone;
- `Close(conn, code, reason)`: end one connection.

The shell (`hub.RoomRunner`) must carry out `Persist` effects before any `Send` or
`Broadcast` that follows them, so no client ever sees state the log does not hold.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

import pycrdt

from . import protocol as p
from .awareness import AwarenessRegistry

log = logging.getLogger(__name__)

_EMPTY_UPDATE = b"\x00\x00"


class CloseCode(enum.IntEnum):
    """WebSocket close codes this server uses (documented in docs/sync-protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003  # a text frame
    INVALID_PAYLOAD = 1007  # a malformed y-protocols message
    POLICY = 1008  # limits: pending updates, message rate
    TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013  # slow reader, connect rate, server overloaded
    ROLE_CHANGED = 4001  # reconnect to pick up a new role (the client retries)
    NOT_AUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    RELOAD = 4410  # the room was restored: drop local state and reload


@dataclass(frozen=True, slots=True)
class Persist:
    update: bytes


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    frame: bytes
    exclude: int | None = None


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    code: int
    reason: str


Effect = Persist | Send | Broadcast | Close


@dataclass(frozen=True, slots=True)
class RoomLimits:
    max_pending_bytes: int = 4 * 1024 * 1024
    max_awareness_entries: int = 64
    max_awareness_state_bytes: int = 64 * 1024
    max_awareness_ids_per_connection: int = 8


@dataclass(slots=True)
class _Conn:
    can_edit: bool
    dropped_writes: int = 0


@dataclass(slots=True)
class RoomStats:
    updates_applied: int = 0
    updates_dropped_readonly: int = 0
    malformed: int = 0
    pending_bytes: int = 0
    unknown_messages: int = 0


class Room:
    def __init__(
        self, name: str, doc: pycrdt.Doc[Any], *, epoch: int = 0, limits: RoomLimits | None = None
    ) -> None:
        self.name = name
        self.epoch = epoch
        self.limits = limits or RoomLimits()
        self.stats = RoomStats()
        self._conns: dict[int, _Conn] = {}
        self._awareness = AwarenessRegistry(
            max_ids_per_connection=self.limits.max_awareness_ids_per_connection
        )
        self._captured: list[bytes] = []
        self._pending: list[bytes] = []
        self._doc = doc
        self._subscription = doc.observe(self._on_transaction)
        self.needs_rebuild = False

    # -- document access ------------------------------------------------------
    @property
    def doc(self) -> pycrdt.Doc[Any]:
        return self._doc

    def replace_doc(self, doc: pycrdt.Doc[Any]) -> None:
        """Swap in a document rebuilt from the store (drops updates stuck as pending)."""
        self._doc.unobserve(self._subscription)
        self._doc = doc
        self._subscription = doc.observe(self._on_transaction)
        self._pending.clear()
        self.stats.pending_bytes = 0
        self.needs_rebuild = False

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        # Observers run inside the transaction and their exceptions resurface as an
        # ExceptionGroup at commit, so this only records the bytes.
        update = event.update
        if update != _EMPTY_UPDATE:
            self._captured.append(update)

    def take_local_changes(self) -> list[Effect]:
        """Effects for edits made directly on `doc` by server code (jobs, REST handlers)."""
        return self._drain_captured(exclude=None)

    def _drain_captured(self, exclude: int | None) -> list[Effect]:
        if not self._captured:
            return []
        captured, self._captured = self._captured, []
        effects: list[Effect] = []
        for update in captured:
            effects.append(Persist(update))
            effects.append(Broadcast(p.update_message(update), exclude))
        return effects

    # -- connections ----------------------------------------------------------
    @property
    def connections(self) -> frozenset[int]:
        return frozenset(self._conns)

    def connect(self, conn: int, *, can_edit: bool) -> list[Effect]:
        self._conns[conn] = _Conn(can_edit=can_edit)
        effects: list[Effect] = [Send(conn, p.sync_step1_message(self._doc.get_state()))]
        states = self._awareness.snapshot()
        if states:
            effects.append(Send(conn, p.awareness_message(p.encode_awareness(states))))
        return effects

    def disconnect(self, conn: int) -> list[Effect]:
        if self._conns.pop(conn, None) is None:
            return []
        removed = self._awareness.drop_connection(conn)
        if not removed:
            return []
        return [Broadcast(p.awareness_message(p.encode_awareness(removed)), exclude=conn)]

    def tick(self, now: float) -> list[Effect]:
        """Periodic housekeeping: expire presence of clients that went silent."""
        removed = self._awareness.expire(now)
        if not removed:
            return []
        return [Broadcast(p.awareness_message(p.encode_awareness(removed)))]

    def set_server_presence(self, state_json: str, now: float) -> list[Effect]:
        """Publish the server's own awareness state (e.g. live meters); "null" removes it."""
        entry = self._awareness.set_server_state(state_json, now)
        return [Broadcast(p.awareness_message(p.encode_awareness([entry])))]

    def close_all(self, code: int, reason: str) -> list[Effect]:
        return [Close(conn, code, reason) for conn in list(self._conns)]

    # -- messages -------------------------------------------------------------
    def receive(self, conn: int, frame: bytes, now: float) -> list[Effect]:
        state = self._conns.get(conn)
        if state is None:
            return []
        try:
            msg = p.decode_message(frame)
            return self._handle(conn, state, msg, now)
        except p.ProtocolError as exc:
            self.stats.malformed += 1
            self._captured.clear()
            return [Close(conn, CloseCode.INVALID_PAYLOAD, f"malformed message: {exc}"[:120])]
        except Exception as exc:  # pycrdt raises ValueError/IndexError/AssertionError on bad updates
            self.stats.malformed += 1
            self._captured.clear()
            log.info("room %s: rejected update from conn %s: %s", self.name, conn, exc)
            return [Close(conn, CloseCode.INVALID_PAYLOAD, "malformed update")]

    def _handle(self, conn: int, state: _Conn, msg: p.Message, now: float) -> list[Effect]:
        if isinstance(msg, p.SyncStep1):
            # The reply reflects the document as of now; the runner sends it after the
            # updates that produced this state are persisted.
            reply = p.sync_step2_message(self._doc.get_update(msg.state_vector))
            return [Send(conn, reply)]
        if isinstance(msg, p.SyncStep2 | p.SyncUpdate):
            if not state.can_edit:
                state.dropped_writes += 1
                self.stats.updates_dropped_readonly += 1
                return []
            return self._apply_update(conn, msg.update)
        if isinstance(msg, p.AwarenessMessage):
            entries = p.decode_awareness(
                msg.payload,
                max_entries=self.limits.max_awareness_entries,
                max_state_bytes=self.limits.max_awareness_state_bytes,
            )
            accepted = self._awareness.apply(conn, entries, now)
            if not accepted:
                return []
            frame = msg.payload if len(accepted) == len(entries) else p.encode_awareness(accepted)
            return [Broadcast(p.awareness_message(frame), exclude=conn)]
        if isinstance(msg, p.QueryAwareness):
            states = self._awareness.snapshot()
            return [Send(conn, p.awareness_message(p.encode_awareness(states)))]
        self.stats.unknown_messages += 1
        log.debug("room %s: ignoring message type %s", self.name, msg.type)
        return []

    def _apply_update(self, conn: int, update: bytes) -> list[Effect]:
        if update == _EMPTY_UPDATE:
            return []
        self._doc.apply_update(update)
        self.stats.updates_applied += 1
        if self._captured:
            effects = self._drain_captured(exclude=conn)
            if self._pending:
                self._recheck_pending()
            return effects
        # Nothing integrated: either a duplicate or an update waiting for a missing
        # dependency. Pending structs stay in memory until their dependency arrives, so a
        # client could grow the room without bound; count them against a cap.
        missing = pycrdt.get_update(update, self._doc.get_state())
        if missing == _EMPTY_UPDATE:
            return []
        self._pending.append(update)
        self.stats.pending_bytes += len(update)
        if self.stats.pending_bytes > self.limits.max_pending_bytes:
            self.needs_rebuild = True
            return [Close(conn, CloseCode.POLICY, "too many updates with missing dependencies")]
        return []

    def _recheck_pending(self) -> None:
        state = self._doc.get_state()
        still = [u for u in self._pending if pycrdt.get_update(u, state) != _EMPTY_UPDATE]
        self._pending = still
        self.stats.pending_bytes = sum(len(u) for u in still)
