"""Diagnostic Escenario server for `sync_fanout.py --servers escenario-nolog`.

Exactly `escenario serve` (the same `realtime.cli` code path, app and uvicorn options), except
that the SQLite store's CRDT update log (`append_updates`, `compact`) is replaced by an
in-memory sequence counter. Accounts, sessions, rooms, the /sync endpoint and the fan-out are
unchanged, so the difference to `escenario` is what persisting every update costs. Not for
production: the room's updates are not kept.

Usage: python benchmarks/_escenario_variant_server.py serve --port 8002 --data-dir DIR [...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import realtime.app
from persistence.ports import Store
from persistence.sqlite import SqliteStore
from realtime import cli


class NoLogStore(SqliteStore):
    """`SqliteStore` whose CRDT update log lives nowhere (sequence numbers only)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._seqs: dict[str, int] = {}

    async def append_updates(self, room: str, updates: Sequence[bytes]) -> int:
        self._seqs[room] = self._seqs.get(room, 0) + len(updates)
        return self._seqs[room]

    async def compact(self, room: str, *, upto_seq: int, state: bytes) -> None:
        return None


async def open_nolog_store(database_url: str, *, data_dir: Path) -> Store:
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
    else:
        path = str(data_dir / "escenario.db")
    store = NoLogStore(path)
    await store.migrate()
    return store


if __name__ == "__main__":
    setattr(realtime.app, "open_store", open_nolog_store)  # noqa: B010 (patching a module global)
    sys.exit(cli.main(sys.argv[1:]))
