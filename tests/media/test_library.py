"""`AssetLibrary` on a real SQLite store and file blobs: ingest, clean-up, derived blobs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from persistence.blobs import FileBlobStore
from persistence.ports import NotFound
from persistence.sqlite import SqliteStore
from realtime.media.decode import NotAudio, decode_audio
from realtime.media.library import AssetKeys, AssetLibrary, load_asset_samples

from .audio import sine, wav_bytes


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[AssetLibrary]:
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.migrate()
    blobs = FileBlobStore(tmp_path / "blobs")
    try:
        yield AssetLibrary(store, blobs, tmp_dir=tmp_path / "tmp", cache_bytes=10 * 2**20, max_duration_s=60)
    finally:
        await store.close()


async def session_id(library: AssetLibrary) -> tuple[str, str]:
    user = await library.store.create_user(email="a@b.co", name="A", password_hash="h")
    session = await library.store.create_session(owner_id=user.id, title="S")
    return user.id, session.id


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def upload_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path


async def test_ingest_stores_flac_and_peaks(library: AssetLibrary, tmp_path: Path) -> None:
    user, sid = await session_id(library)
    x = sine(seconds=1.0, channels=2)
    record, ingested = await library.ingest(
        upload_file(tmp_path, wav_bytes(x, sampwidth=3)), session_id=sid, uploader_id=user, name="a.wav"
    )
    keys = AssetKeys.of(record.id)
    assert record.blob_key == keys.flac
    assert await library.blobs.size(keys.flac) == record.size_bytes
    assert await library.blobs.exists(keys.peaks)
    assert ingested.peaks.frames == record.frames == 48000
    assert files(library.tmp_dir) == []
    samples = await load_asset_samples(library.blobs, record)  # no cache
    assert np.allclose(samples, x, atol=2**-23)


async def test_failures_leave_nothing(library: AssetLibrary, tmp_path: Path) -> None:
    user, sid = await session_id(library)
    with pytest.raises(NotAudio):
        await library.ingest(upload_file(tmp_path, b"text" * 100), session_id=sid, uploader_id=user, name="x")
    with pytest.raises(NotFound):  # the session vanished before the row was written
        await library.ingest(
            upload_file(tmp_path, wav_bytes(sine())), session_id="gone", uploader_id=user, name="x"
        )
    assert files(tmp_path / "blobs") == []
    assert files(library.tmp_dir) == []
    assert await library.store.list_assets(sid, include_deleted=True) == []


async def test_a_cancelled_ingest_is_undone(library: AssetLibrary, tmp_path: Path) -> None:
    user, sid = await session_id(library)
    task = asyncio.create_task(
        library.ingest(
            upload_file(tmp_path, wav_bytes(sine(seconds=20.0))), session_id=sid, uploader_id=user, name="x"
        )
    )
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):  # the decoding thread finishes in the background, then it is undone
        if not library._background:
            break
        await asyncio.sleep(0.01)
    assert not library._background
    assert files(tmp_path / "blobs") == []
    assert files(library.tmp_dir) == []
    assert await library.store.list_assets(sid, include_deleted=True) == []


async def test_missing_peaks_are_rebuilt(library: AssetLibrary, tmp_path: Path) -> None:
    user, sid = await session_id(library)
    record, _ = await library.ingest(
        upload_file(tmp_path, wav_bytes(sine(seconds=1.0))), session_id=sid, uploader_id=user, name="a"
    )
    want = await library.peaks(record, 50)
    library._peak_levels.clear()
    await library.blobs.delete(AssetKeys.of(record.id).peaks)
    got = await library.peaks(record, 50)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert await library.blobs.exists(AssetKeys.of(record.id).peaks)


async def test_opus_rendition_and_deletion(library: AssetLibrary, tmp_path: Path) -> None:
    user, sid = await session_id(library)
    record, _ = await library.ingest(
        upload_file(tmp_path, wav_bytes(sine(seconds=1.0))), session_id=sid, uploader_id=user, name="a"
    )
    assert await library.audio_key(record, "flac") == record.blob_key
    keys = await asyncio.gather(*(library.audio_key(record, "opus") for _ in range(3)))
    assert set(keys) == {AssetKeys.of(record.id).opus}
    assert decode_audio(await library.blobs.get(keys[0])).duration == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="rendition"):
        await library.audio_key(record, "mp3")
    await library.samples(record)
    assert record.id in library.samples_cache
    assert await library.delete(record) is True
    assert await library.delete(record) is False
    assert record.id not in library.samples_cache
    assert files(tmp_path / "blobs") == []
    assert files(library.tmp_dir) == []


async def test_startup_removes_stale_temp_files_only(library: AssetLibrary) -> None:
    stale = library.temp_path(".upload")
    stale.write_bytes(b"x")
    fresh = library.temp_path(".upload")
    fresh.write_bytes(b"y")
    old = 1_000_000.0
    os.utime(stale, (old, old))
    await library.startup()
    assert not stale.exists()
    assert fresh.exists()
