"""The blob port: opaque byte strings (audio, caches) stored by key, outside the database.

`BlobStore` is what the server sees; `FileBlobStore` keeps each blob in one file under a
directory (by default `data_dir/blobs`). Callers never assume the stored object is the bytes
they wrote: encryption at rest (an AES-GCM store wrapping another `BlobStore`) and object
storage implement the same port, so all reads, whole or partial, go through it.

Keys are lower-case ASCII names (`[a-z0-9._-]`, at most 200 characters, starting with a letter
or a digit, no `..`), so they are safe as file names and as object-storage keys alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,199}")
DEFAULT_CHUNK = 1 << 20

BlobSource = bytes | bytearray | memoryview | Path | AsyncIterable[bytes]


class BlobNotFound(LookupError):
    """No blob is stored under the key."""


class BlobStore(Protocol):
    async def put(self, key: str, data: BlobSource) -> int:
        """Store `data` under `key`, replacing any blob there; returns the number of bytes stored.

        `data` is bytes, a file to copy (`Path`), or an async iterable of chunks. Readers see
        either the old blob or the whole new one, never a part.
        """

    async def get(self, key: str) -> bytes:
        """The whole blob; raises `BlobNotFound`."""

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes `start` to `end` (exclusive) of the blob, clipped to its size; raises `BlobNotFound`."""

    def stream(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (exclusive, None: to the end) in chunks, without loading the blob.

        Raises `BlobNotFound` at the first iteration. A blob replaced or deleted while it is
        being streamed is read to the end as it was when the stream began (on a filesystem).
        """

    async def size(self, key: str) -> int:
        """The blob's size in bytes as `get` returns it; raises `BlobNotFound`."""

    async def delete(self, key: str) -> bool:
        """Remove the blob; True if there was one."""

    async def exists(self, key: str) -> bool: ...


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key) or ".." in key:
        raise ValueError(f"invalid blob key {key!r}: use 1-200 characters of [a-z0-9._-], no '..'")
    return key


class FileBlobStore:
    """Blobs as files under `root`, sharded two levels deep by a hash of the key.

    Writes go to a temporary file in the target directory, are flushed with fsync and
    renamed over the target with `os.replace`, so a crash leaves either the old blob or the
    new one. Blocking file I/O runs in worker threads (`asyncio.to_thread`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        digest = hashlib.blake2b(check_key(key).encode("ascii"), digest_size=2).hexdigest()
        return self.root / digest[:2] / digest[2:] / key

    # writing ----------------------------------------------------------------------------
    async def put(self, key: str, data: BlobSource) -> int:
        target = self.path_for(key)
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            return await asyncio.to_thread(self._write_atomic, target, lambda f: _write_bytes(f, payload))
        if isinstance(data, Path):
            source = data
            return await asyncio.to_thread(self._write_atomic, target, lambda f: _copy_file(f, source))
        return await self._put_stream(target, data)

    async def _put_stream(self, target: Path, chunks: AsyncIterable[bytes]) -> int:
        tmp, handle = await asyncio.to_thread(self._open_temp, target)
        try:
            total = 0
            async for chunk in chunks:
                total += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(_finish, handle, tmp, target)
            return total
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, handle, tmp))
            raise

    def _write_atomic(self, target: Path, write: _Writer) -> int:
        tmp, handle = self._open_temp(target)
        try:
            size = write(handle)
            _finish(handle, tmp, target)
            return size
        except BaseException:
            _discard(handle, tmp)
            raise

    def _open_temp(self, target: Path) -> tuple[Path, BinaryIO]:
        target.parent.mkdir(parents=True, exist_ok=True)
        # A leading dot never matches a key, so a temporary file cannot shadow a blob.
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        return tmp, open(tmp, "xb")  # closed by _finish or _discard

    # reading ----------------------------------------------------------------------------
    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid range {start}-{end}")
        path = self.path_for(key)

        def read() -> bytes:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(end - start)

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start) or chunk_size <= 0:
            raise ValueError(f"invalid range {start}-{end} or chunk size {chunk_size}")
        path = self.path_for(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def size(self, key: str) -> int:
        path = self.path_for(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def keys(self) -> list[str]:
        """Every stored key, sorted (temporary files and anything that is not a blob are skipped)."""

        def scan() -> list[str]:
            if not self.root.is_dir():
                return []
            found = []
            for path in self.root.glob("*/*/*"):
                name = path.name
                valid = KEY_PATTERN.fullmatch(name) and ".." not in name
                if valid and path == self.path_for(name) and path.is_file():
                    found.append(name)
            return sorted(found)

        return await asyncio.to_thread(scan)

    async def delete(self, key: str) -> bool:
        path = self.path_for(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True


class _Writer(Protocol):
    def __call__(self, handle: BinaryIO, /) -> int: ...


def _write_bytes(handle: BinaryIO, data: bytes) -> int:
    handle.write(data)
    return len(data)


def _copy_file(handle: BinaryIO, source: Path) -> int:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, handle, DEFAULT_CHUNK)
    return handle.tell()


def _finish(handle: BinaryIO, tmp: Path, target: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _discard(handle: BinaryIO, tmp: Path) -> None:
    handle.close()
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk (POSIX; no-op elsewhere).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        # Some filesystems cannot fsync a directory; the file itself is already synced.
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
