"""Awareness (presence) state of one room, tracked per connection.

pycrdt's `Awareness` announces a local state for the server itself (clients then see an
empty extra peer) and cannot tell which connection set which client id, so it cannot remove
a peer's presence when its socket drops. This registry follows y-protocols'
`applyAwarenessUpdate` rules and adds ownership: a connection controls the client ids it
introduced, and only those.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import AwarenessEntry, ProtocolError

# y-protocols clients renew every 15 s and drop peers silent for 30 s.
OUTDATED_TIMEOUT_S = 30.0

# The server's own presence (meters of the live preview). Yjs client ids are random 32-bit
# numbers, so a client claiming 0 is vanishingly unlikely; if one does, it is ignored.
SERVER_CLIENT_ID = 0
SERVER_OWNER = -1


@dataclass(slots=True)
class _State:
    clock: int
    state_json: str
    owner: int  # connection id
    last_seen: float


class AwarenessRegistry:
    def __init__(self, *, max_ids_per_connection: int = 8) -> None:
        self._states: dict[int, _State] = {}
        self._by_conn: dict[int, set[int]] = {}
        self._max_ids = max_ids_per_connection

    def __len__(self) -> int:
        return sum(1 for s in self._states.values() if s.state_json != "null")

    def ids_of(self, conn: int) -> frozenset[int]:
        return frozenset(self._by_conn.get(conn, ()))

    def apply(self, conn: int, entries: list[AwarenessEntry], now: float) -> list[AwarenessEntry]:
        """Apply a client's update; returns the entries that changed something (to forward).

        y-websocket clients re-send every awareness change they see, other clients' included,
        so entries for a client id whose live state belongs to another connection are echoes
        and are skipped. A connection takes ownership of an id by setting a live state for it
        while nobody else holds one. Raises `ProtocolError` if a connection tries to own more
        ids than allowed.
        """
        accepted: list[AwarenessEntry] = []
        owned = self._by_conn.setdefault(conn, set())
        for e in entries:
            if e.client_id == SERVER_CLIENT_ID:
                continue  # the server's own entry, echoed back by clients
            current = self._states.get(e.client_id)
            live = current is not None and current.state_json != "null"
            if live and current is not None and current.owner != conn:
                continue
            if current is not None and not (
                current.clock < e.clock or (current.clock == e.clock and e.removed and live)
            ):
                if current.clock == e.clock and current.owner == conn:
                    current.last_seen = now
                continue
            if e.removed:
                if current is None:
                    continue  # removing what we never had: nothing to forward
                self._states[e.client_id] = _State(e.clock, e.state_json, current.owner, now)
            else:
                if e.client_id not in owned and len(owned) >= self._max_ids:
                    raise ProtocolError(f"a connection may control at most {self._max_ids} awareness clients")
                if current is not None and current.owner != conn:
                    self._by_conn.get(current.owner, set()).discard(e.client_id)
                self._states[e.client_id] = _State(e.clock, e.state_json, conn, now)
                owned.add(e.client_id)
            accepted.append(e)
        return accepted

    def set_server_state(self, state_json: str, now: float) -> AwarenessEntry:
        """Set (or with "null", clear) the server's own entry; returns the entry to broadcast."""
        current = self._states.get(SERVER_CLIENT_ID)
        clock = current.clock + 1 if current is not None else 1
        self._states[SERVER_CLIENT_ID] = _State(clock, state_json, SERVER_OWNER, now)
        return AwarenessEntry(SERVER_CLIENT_ID, clock, state_json)

    def snapshot(self) -> list[AwarenessEntry]:
        """All live states, for a joining or querying client."""
        return [
            AwarenessEntry(cid, s.clock, s.state_json)
            for cid, s in self._states.items()
            if s.state_json != "null"
        ]

    def drop_connection(self, conn: int) -> list[AwarenessEntry]:
        """Remove a closed connection's clients; returns the `null` entries to broadcast."""
        removed = []
        for cid in sorted(self._by_conn.pop(conn, ())):
            state = self._states.pop(cid, None)
            if state is not None and state.state_json != "null":
                removed.append(AwarenessEntry(cid, state.clock + 1, "null"))
        return removed

    def expire(self, now: float) -> list[AwarenessEntry]:
        """Remove clients not renewed within the y-protocols timeout (tabs that vanished)."""
        removed = []
        for cid, state in list(self._states.items()):
            if state.owner == SERVER_OWNER:
                continue
            if now - state.last_seen >= OUTDATED_TIMEOUT_S:
                del self._states[cid]
                self._by_conn.get(state.owner, set()).discard(cid)
                if state.state_json != "null":
                    removed.append(AwarenessEntry(cid, state.clock + 1, "null"))
        return removed
