"""The `BlobStore` contract, run against `FileBlobStore`, plus its file-layout promises."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence.blobs import BlobNotFound, BlobStore, FileBlobStore


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_put_get_size_exists_delete(blobs: BlobStore) -> None:
    assert await blobs.exists("a.bin") is False
    assert await blobs.put("a.bin", b"hello world") == 11
    assert await blobs.exists("a.bin") is True
    assert await blobs.get("a.bin") == b"hello world"
    assert await blobs.size("a.bin") == 11
    assert await blobs.put("a.bin", bytearray(b"new")) == 3  # replaces
    assert await blobs.get("a.bin") == b"new"
    assert await blobs.delete("a.bin") is True
    assert await blobs.delete("a.bin") is False
    for call in (blobs.get("a.bin"), blobs.size("a.bin"), blobs.get_range("a.bin", 0, 1)):
        with pytest.raises(BlobNotFound):
            await call


async def test_put_from_a_file_and_from_chunks(blobs: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(payload)
    assert await blobs.put("from-file", source) == len(payload)
    assert await blobs.get("from-file") == payload
    assert source.read_bytes() == payload  # copied, not moved

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 1000

    assert await blobs.put("from-chunks", chunks()) == 5000
    assert await blobs.get("from-chunks") == b"".join(bytes([i]) * 1000 for i in range(5))


async def test_ranges_and_streams(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 100
    await blobs.put("r", data)
    assert await blobs.get_range("r", 0, 100) == data[:100]
    assert await blobs.get_range("r", 25_000, 99_999) == data[25_000:]
    assert await blobs.get_range("r", 99_999, 100_000) == b""
    with pytest.raises(ValueError, match="range"):
        await blobs.get_range("r", 5, 4)
    assert b"".join([c async for c in blobs.stream("r")]) == data
    parts = [c async for c in blobs.stream("r", 10, 5000, chunk_size=1000)]
    assert [len(p) for p in parts] == [1000] * 4 + [990]
    assert b"".join(parts) == data[10:5000]
    assert b"".join([c async for c in blobs.stream("r", 25_000)]) == data[25_000:]
    with pytest.raises(BlobNotFound):
        [c async for c in blobs.stream("missing")]


@pytest.mark.parametrize("key", ["", "../x", "a/b", "A", ".hidden", "a..b", "x" * 201, "a\x00", "é", "a b"])
async def test_keys_are_checked(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="blob key"):
        await blobs.put(key, b"x")
    with pytest.raises(ValueError, match="blob key"):
        await blobs.get(key)


async def test_files_are_sharded_and_no_temp_files_remain(blobs: FileBlobStore) -> None:
    await asyncio.gather(*(blobs.put(f"asset-{i}.flac", b"x" * i) for i in range(20)))
    files = all_files(blobs.root)
    assert len(files) == 20
    for path in files:
        relative = path.relative_to(blobs.root)
        assert len(relative.parts) == 3  # two shard levels and the key
        assert relative.parts[2].startswith("asset-")
    assert blobs.path_for("asset-3.flac").read_bytes() == b"xxx"


async def test_a_failed_write_leaves_the_old_blob_and_no_temp_file(blobs: FileBlobStore) -> None:
    await blobs.put("k", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise OSError("the upload broke")

    with pytest.raises(OSError, match="broke"):
        await blobs.put("k", broken())
    assert await blobs.get("k") == b"old"
    assert all_files(blobs.root) == [blobs.path_for("k")]
    with pytest.raises(FileNotFoundError):
        await blobs.put("k2", Path("/nonexistent/file"))
    assert all_files(blobs.root) == [blobs.path_for("k")]


async def test_a_stream_survives_deletion_of_its_blob(blobs: BlobStore) -> None:
    await blobs.put("s", b"a" * 5000)
    stream = blobs.stream("s", chunk_size=1000)
    first = await anext(stream)
    assert await blobs.delete("s") is True
    rest = [c async for c in stream]
    assert len(first) + sum(len(c) for c in rest) == 5000
