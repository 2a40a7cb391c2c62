"""SQLite's event-loop append path (`FastAppend`): same log, never waits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from persistence.ports import FastAppend
from persistence.sqlite import SqliteStore


async def test_fast_and_async_appends_share_one_sequence(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.migrate()
    try:
        assert isinstance(store, FastAppend)
        assert await store.append_updates("r", [b"a"]) == 1
        assert store.append_updates_nowait("r", [b"b", b"c"]) == 3
        assert await store.append_updates("r", [b"d"]) == 4
        assert store.append_updates_nowait("new-room", [b"x"]) == 1
        record = await store.load_room("r")
        assert record.updates == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
        await store.compact("r", upto_seq=4, state=b"s")
        assert store.append_updates_nowait("r", [b"e"]) == 5
    finally:
        await store.close()


async def test_fast_append_declines_instead_of_waiting_for_a_lock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.migrate()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        assert store.append_updates_nowait("r", [b"a"]) == 1
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        assert store.append_updates_nowait("r", [b"b"]) is None
        other.execute("ROLLBACK")
        assert store.append_updates_nowait("r", [b"b"]) == 2
    finally:
        other.close()
        await store.close()


async def test_in_memory_store_never_takes_the_fast_path() -> None:
    store = SqliteStore(":memory:")
    await store.migrate()
    try:
        assert store.append_updates_nowait("r", [b"a"]) is None
        assert await store.append_updates("r", [b"a"]) == 1
    finally:
        await store.close()
