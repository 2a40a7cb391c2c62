"""The `Store` contract for asset rows: every backend must pass every test here unchanged."""

from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from persistence._migrate import load_migrations
from persistence.ports import AssetKind, AssetRecord, Conflict, NotFound, Store, User
from persistence.sqlite import SqliteStore

from .support import Backend

_keys = itertools.count()


async def make_user(store: Store, email: str = "ana@example.com", name: str = "Ana") -> User:
    return await store.create_user(email=email, name=name, password_hash=f"hash-of-{email}")


async def make_asset(store: Store, session_id: str, uploader_id: str | None, **changes: Any) -> AssetRecord:
    fields: dict[str, Any] = {
        "session_id": session_id,
        "uploader_id": uploader_id,
        "name": "take 1.wav",
        "kind": AssetKind.SOURCE,
        "mime": "audio/flac",
        "duration_s": 2.5,
        "sample_rate": 48000,
        "channels": 2,
        "frames": 120_000,
        "size_bytes": 400_123,
        "blob_key": None,
    }
    fields.update(changes)
    if fields["blob_key"] is None:
        fields["blob_key"] = f"asset-auto-{next(_keys)}.flac"
    return await store.create_asset(**fields)


async def test_create_get_and_list_assets(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    other = await store.create_session(owner_id=ana.id, title="Other")
    backend.clock.advance()
    first = await make_asset(store, session.id, ana.id, blob_key="asset-a.flac", name="Ñandú 1.wav")
    assert first.session_id == session.id
    assert first.uploader_id == ana.id
    assert first.name == "Ñandú 1.wav"
    assert first.kind is AssetKind.SOURCE
    assert (first.mime, first.sample_rate, first.channels) == ("audio/flac", 48000, 2)
    assert (first.frames, first.size_bytes, first.duration_s) == (120_000, 400_123, 2.5)
    assert first.created_at == backend.clock.now
    assert first.processed_at is None
    assert first.deleted_at is None
    assert len(first.id) >= 16
    assert await store.get_asset(first.id) == first

    backend.clock.advance()
    second = await make_asset(
        store, session.id, None, blob_key="asset-b.flac", kind=AssetKind.OUTPUT, channels=1, frames=0
    )
    assert second.uploader_id is None
    assert second.kind is AssetKind.OUTPUT
    await make_asset(store, other.id, ana.id, blob_key="asset-c.flac")

    assert await store.list_assets(session.id) == [first, second]
    assert await store.get_asset("missing") is None
    assert await store.list_assets("missing") == []


async def test_large_values_round_trip(store: Store) -> None:
    # Three hours of 48 kHz audio and multi-gigabyte blobs overflow 32-bit columns.
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Long")
    long = await make_asset(
        store, session.id, ana.id, frames=3 * 3600 * 48000 + 1, size_bytes=5 * 2**30, duration_s=10800.00002
    )
    assert await store.get_asset(long.id) == long


async def test_caller_chosen_ids_and_conflicts(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    chosen = await make_asset(store, session.id, ana.id, asset_id="0123456789abcdef", blob_key="asset-x.flac")
    assert chosen.id == "0123456789abcdef"
    with pytest.raises(Conflict):
        await make_asset(store, session.id, ana.id, asset_id="0123456789abcdef", blob_key="asset-y.flac")
    with pytest.raises(Conflict):
        await make_asset(store, session.id, ana.id, blob_key="asset-x.flac")
    assert [a.id for a in await store.list_assets(session.id)] == [chosen.id]


async def test_create_asset_needs_a_session_and_a_known_uploader(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    with pytest.raises(NotFound):
        await make_asset(store, "missing", ana.id)
    with pytest.raises(NotFound):
        await make_asset(store, session.id, "missing")
    with pytest.raises(ValueError, match="impossible"):
        await make_asset(store, session.id, ana.id, channels=0)
    assert await backend.execute("SELECT id FROM assets") == []


async def test_mark_processed(store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    asset = await make_asset(store, session.id, ana.id)
    assert await store.mark_asset_processed(asset.id, 1_800_000_000.5) is True
    got = await store.get_asset(asset.id)
    assert got is not None
    assert got.processed_at == 1_800_000_000.5
    assert await store.mark_asset_processed("missing", 1.0) is False


async def test_deletion_in_two_steps(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    kept = await make_asset(store, session.id, ana.id, blob_key="asset-kept.flac")
    backend.clock.advance()
    gone = await make_asset(store, session.id, ana.id, blob_key="asset-gone.flac")
    assert await store.list_deleted_assets() == []

    backend.clock.advance(3)
    assert await store.mark_asset_deleted(gone.id) is True
    assert await store.mark_asset_deleted(gone.id) is False  # already hidden
    assert await store.get_asset(gone.id) is None
    assert await store.list_assets(session.id) == [kept]
    hidden = await store.list_assets(session.id, include_deleted=True)
    assert [a.id for a in hidden] == [kept.id, gone.id]
    assert hidden[1].deleted_at == backend.clock.now
    assert [a.id for a in await store.list_deleted_assets()] == [gone.id]
    assert await store.list_deleted_assets(limit=0) == []
    assert await store.mark_asset_processed(gone.id, 5.0) is False

    assert await store.delete_asset(gone.id) is True
    assert await store.delete_asset(gone.id) is False
    assert await store.list_deleted_assets() == []
    assert await store.delete_asset(kept.id) is True  # deleting without the first step works too
    assert await store.list_assets(session.id, include_deleted=True) == []


async def test_deleting_a_session_deletes_its_asset_rows(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    other = await store.create_session(owner_id=ana.id, title="Other")
    await make_asset(store, session.id, ana.id, blob_key="asset-1.flac")
    hidden = await make_asset(store, session.id, ana.id, blob_key="asset-2.flac")
    await store.mark_asset_deleted(hidden.id)
    kept = await make_asset(store, other.id, ana.id, blob_key="asset-3.flac")
    assert await store.delete_session(session.id) is True
    assert await store.list_assets(session.id, include_deleted=True) == []
    assert await store.list_deleted_assets() == []
    assert await store.list_assets(other.id) == [kept]
    assert await backend.execute("SELECT id FROM assets") == [(kept.id,)]


async def test_assets_outlive_their_uploaders_account(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    session = await store.create_session(owner_id=ana.id, title="Demo")
    asset = await make_asset(store, session.id, bob.id)
    await backend.execute(f"DELETE FROM users WHERE id = '{bob.id}'")
    got = await store.get_asset(asset.id)
    assert got is not None
    assert got.uploader_id is None


async def test_upgrade_from_the_first_schema_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    first = load_migrations("sqlite")[0]
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(first.sql)
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        conn.execute("INSERT INTO users VALUES ('u1', 'a@b.co', 'a@b.co', 'A', 'h', 1)")
        conn.execute("INSERT INTO sessions VALUES ('s1', 'Old', 'u1', 1, 1)")
        conn.commit()
    store = SqliteStore(path)
    try:
        await store.migrate()
        session = await store.get_session("s1")
        assert session is not None
        asset = await make_asset(store, "s1", "u1")
        assert await store.list_assets("s1") == [asset]
    finally:
        await store.close()
