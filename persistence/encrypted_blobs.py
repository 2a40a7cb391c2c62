"""Encryption at rest: a `BlobStore` that keeps every object AES-256-GCM encrypted in another one.

Stored format (version 1), all integers big-endian::

    header  = b"ESCB" | version (1 byte, 1) | key-id length (1 byte) | key id (ASCII)
              | nonce prefix (8 random bytes, fresh per object) | chunk size (uint32, plaintext bytes)
    body    = chunk 0 | chunk 1 | ... | chunk n-1          (n >= 1; an empty blob has one empty chunk)
    chunk i = AESGCM(key).encrypt(nonce_i, plaintext_i, aad_i)   (ciphertext + 16-byte tag)
    nonce_i = nonce prefix | i (uint32)                  -> 96 bits, unique per object and chunk
    aad_i   = b"escenario-blob/1\\0" | header | object key (ASCII) | b"\\0" | i (uint32) | final (1 byte)

Every chunk but the last holds exactly `chunk size` plaintext bytes, so the plaintext size and
the position of any byte follow from the stored size alone, and `get_range`/`stream` decrypt only
the chunks they need. The header is authenticated through the AAD (a changed key id, prefix or
chunk size fails), the object key binds a ciphertext to its name (a blob copied or swapped under
another key fails), the chunk index catches reordering, and the final flag catches truncation at
a chunk boundary. Any failure raises `BlobIntegrityError`; nothing unauthenticated is returned.

Keys live in a `Keyring`: the active key encrypts, every key in it decrypts (by the key id in
the header), so keys can rotate (`rotate_keyring` + `reencrypt_all`) while readers keep working.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import struct
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .blobs import DEFAULT_CHUNK, BlobNotFound, BlobSource, BlobStore, FileBlobStore, check_key

MAGIC = b"ESCB"
FORMAT_VERSION = 1
TAG_BYTES = 16
PREFIX_BYTES = 8
KEY_BYTES = 32
MAX_KEY_ID = 64
MAX_CHUNK = 64 << 20
MAX_HEADER = len(MAGIC) + 2 + MAX_KEY_ID + PREFIX_BYTES + 4
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AAD_LABEL = b"escenario-blob/1\x00"
MIGRATED_MARKER = "blobs-encrypted"


class BlobIntegrityError(ValueError):
    """A stored object failed authentication: tampered, truncated, reordered, swapped or wrong key."""


BlobCorrupted = BlobIntegrityError


class KeyringError(ValueError):
    """The keyring file is missing, unreadable or malformed."""


# keys -------------------------------------------------------------------------------------


@dataclass
class Keyring:
    """Data keys by id: `active` encrypts, all of them decrypt.

    A keyring loaded from a file (`path`) reloads it when asked for a key id it does not know,
    so a server keeps reading blobs that `escenario keys rotate` re-encrypted under a new key.
    """

    active: str
    keys: dict[str, bytes]
    path: Path | None = None
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for kid, key in self.keys.items():
            if not KEY_ID_PATTERN.fullmatch(kid) or len(key) != KEY_BYTES:
                raise KeyringError(f"key {kid!r}: ids are 1-64 of [A-Za-z0-9_-], keys 32 bytes")
        if self.active not in self.keys:
            raise KeyringError(f"the active key {self.active!r} is not in the keyring")

    @classmethod
    def single(cls, key: bytes, key_id: str = "k1") -> Keyring:
        return cls(active=key_id, keys={key_id: key})

    def cipher(self, key_id: str) -> AESGCM:
        if key_id not in self.keys and self.path is not None:
            with contextlib.suppress(KeyringError, OSError):
                fresh = load_keyring(self.path)
                self.keys, self.active = fresh.keys, fresh.active
        key = self.keys.get(key_id)
        if key is None:
            raise BlobIntegrityError(f"blob encrypted with unknown key {key_id!r}")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(key)
        return cipher


def new_key_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def load_keyring(path: Path) -> Keyring:
    """Read a keyring file: `{"version": 1, "active": ID, "keys": [{"id", "key" (base64), "created"}]}`."""
    try:
        raw = json.loads(Path(path).read_text("utf-8"))
        keys = {str(k["id"]): base64.b64decode(str(k["key"]), validate=True) for k in raw["keys"]}
        return Keyring(active=str(raw["active"]), keys=keys, path=Path(path))
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyringError(f"{path}: not a valid keyring ({exc})") from exc


def save_keyring(path: Path, keyring: Keyring) -> None:
    """Write the keyring atomically, readable by the owner only (mode 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {
        "version": 1,
        "active": keyring.active,
        "keys": [
            {"id": kid, "key": base64.b64encode(key).decode("ascii")} for kid, key in keyring.keys.items()
        ],
    }
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def open_keyring(path: Path, *, create: bool) -> Keyring:
    """Load the keyring at `path`; with `create`, make one with a fresh random key if it is missing."""
    try:
        return load_keyring(path)
    except FileNotFoundError:
        if not create:
            raise KeyringError(f"no keyring at {path}") from None
    kid = new_key_id()
    keyring = Keyring(active=kid, keys={kid: AESGCM.generate_key(bit_length=256)}, path=Path(path))
    save_keyring(path, keyring)
    return keyring


def rotate_keyring(path: Path) -> Keyring:
    """Add a fresh key to the keyring file and make it active; older keys stay for reading."""
    keyring = load_keyring(path)
    kid = new_key_id()
    keys = {**keyring.keys, kid: AESGCM.generate_key(bit_length=256)}
    rotated = Keyring(active=kid, keys=keys, path=Path(path))
    save_keyring(path, rotated)
    return rotated


# format -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    key_id: str
    prefix: bytes
    chunk_size: int

    def encode(self) -> bytes:
        kid = self.key_id.encode("ascii")
        return (
            MAGIC + bytes([FORMAT_VERSION, len(kid)]) + kid + self.prefix + struct.pack(">I", self.chunk_size)
        )

    @classmethod
    def decode(cls, data: bytes, key: str) -> Header:
        if len(data) < len(MAGIC) + 2 or data[:4] != MAGIC:
            raise BlobIntegrityError(f"blob {key!r} has no encryption header")
        if data[4] != FORMAT_VERSION:
            raise BlobIntegrityError(f"blob {key!r}: unknown format version {data[4]}")
        n = data[5]
        end = 6 + n + PREFIX_BYTES + 4
        if len(data) < end:
            raise BlobIntegrityError(f"blob {key!r}: truncated header")
        try:
            kid = data[6 : 6 + n].decode("ascii")
        except UnicodeDecodeError:
            kid = ""
        if not KEY_ID_PATTERN.fullmatch(kid):
            raise BlobIntegrityError(f"blob {key!r}: malformed key id in header")
        prefix = data[6 + n : 6 + n + PREFIX_BYTES]
        (chunk_size,) = struct.unpack(">I", data[end - 4 : end])
        if not 0 < chunk_size <= MAX_CHUNK:
            raise BlobIntegrityError(f"blob {key!r}: bad chunk size {chunk_size}")
        return cls(kid, prefix, chunk_size)

    @property
    def length(self) -> int:
        return 6 + len(self.key_id) + PREFIX_BYTES + 4


@dataclass(frozen=True, slots=True)
class _Layout:
    header: Header
    chunks: int
    size: int  # plaintext bytes
    stored: int  # bytes in the inner store

    def offset(self, index: int) -> int:
        return min(self.header.length + index * (self.header.chunk_size + TAG_BYTES), self.stored)


class _Sealer:
    def __init__(self, cipher: AESGCM, header: Header, key: str) -> None:
        self.cipher = cipher
        self.header = header
        self.aad_base = _AAD_LABEL + header.encode() + key.encode("ascii") + b"\x00"

    def _nonce_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        return self.header.prefix + struct.pack(">I", index), self.aad_base + struct.pack(">IB", index, final)

    def seal(self, index: int, plain: bytes, final: bool) -> bytes:
        nonce, aad = self._nonce_aad(index, final)
        return self.cipher.encrypt(nonce, plain, aad)

    def open(self, index: int, sealed: bytes, final: bool, key: str) -> bytes:
        nonce, aad = self._nonce_aad(index, final)
        try:
            return self.cipher.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise BlobIntegrityError(
                f"blob {key!r}: chunk {index} failed authentication "
                "(tampered, truncated, reordered, moved from another key, or the wrong key)"
            ) from None


def _layout(header: Header, stored: int, key: str) -> _Layout:
    body = stored - header.length
    full = header.chunk_size + TAG_BYTES
    chunks = -(-body // full) if body > 0 else 0
    if chunks == 0 or body - (chunks - 1) * full < TAG_BYTES:
        raise BlobIntegrityError(f"blob {key!r}: truncated (stored size {stored})")
    if chunks > 0xFFFFFFFF:
        raise BlobIntegrityError(f"blob {key!r}: too many chunks")
    return _Layout(header, chunks, body - chunks * TAG_BYTES, stored)


async def _rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for piece in source:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    yield bytes(buffer)  # possibly empty: the last (maybe only) chunk


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, size):
            yield chunk
    finally:
        handle.close()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


# the store --------------------------------------------------------------------------------


class EncryptedBlobStore:
    """A `BlobStore` that encrypts into `inner` (see the module docstring for the format)."""

    def __init__(self, inner: BlobStore, keyring: Keyring, *, chunk_size: int = DEFAULT_CHUNK) -> None:
        if not 0 < chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK}")
        self.inner = inner
        self.keyring = keyring
        self.chunk_size = chunk_size

    def path_for(self, key: str) -> Path:
        """The file holding the encrypted object (when the inner store is a `FileBlobStore`)."""
        if not isinstance(self.inner, FileBlobStore):
            raise TypeError("the inner store keeps no files")
        return self.inner.path_for(key)

    # writing ------------------------------------------------------------------------------
    async def put(self, key: str, data: BlobSource) -> int:
        check_key(key)
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            sealed = await asyncio.to_thread(self._seal_all, key, payload)
            await self.inner.put(key, sealed)
            return len(payload)
        source = _file_chunks(data, self.chunk_size) if isinstance(data, Path) else data
        total = 0

        def count(n: int) -> None:
            nonlocal total
            total += n

        await self.inner.put(key, self._seal_stream(key, source, count))
        return total

    def _sealer(self, key: str) -> _Sealer:
        header = Header(self.keyring.active, secrets.token_bytes(PREFIX_BYTES), self.chunk_size)
        return _Sealer(self.keyring.cipher(header.key_id), header, key)

    def _seal_all(self, key: str, payload: bytes) -> bytes:
        sealer = self._sealer(key)
        size = self.chunk_size
        count = max(1, -(-len(payload) // size))
        parts = [sealer.header.encode()]
        for i in range(count):
            parts.append(sealer.seal(i, payload[i * size : (i + 1) * size], i == count - 1))
        return b"".join(parts)

    async def _seal_stream(
        self, key: str, source: AsyncIterable[bytes], count: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        sealer = self._sealer(key)
        yield sealer.header.encode()
        index = 0
        pending: bytes | None = None
        async for chunk in _rechunk(source, self.chunk_size):
            if pending is not None:
                yield await asyncio.to_thread(sealer.seal, index, pending, False)
                index += 1
            pending = chunk
            count(len(chunk))
        assert pending is not None  # _rechunk always yields a last chunk
        yield await asyncio.to_thread(sealer.seal, index, pending, True)

    # reading ------------------------------------------------------------------------------
    async def _open(self, key: str) -> tuple[_Layout, _Sealer]:
        head = await self.inner.get_range(check_key(key), 0, MAX_HEADER)
        header = Header.decode(head, key)
        layout = _layout(header, await self.inner.size(key), key)
        return layout, _Sealer(self.keyring.cipher(header.key_id), header, key)

    async def _read_chunks(self, key: str, layout: _Layout, sealer: _Sealer, first: int, last: int) -> bytes:
        raw = await self.inner.get_range(key, layout.offset(first), layout.offset(last + 1))
        return await asyncio.to_thread(self._open_chunks, key, layout, sealer, raw, first, last)

    @staticmethod
    def _open_chunks(key: str, layout: _Layout, sealer: _Sealer, raw: bytes, first: int, last: int) -> bytes:
        full = layout.header.chunk_size + TAG_BYTES
        out = []
        for i in range(first, last + 1):
            piece = raw[(i - first) * full : (i - first + 1) * full]
            if i < layout.chunks - 1 and len(piece) != full:
                raise BlobIntegrityError(f"blob {key!r}: changed while being read")
            out.append(sealer.open(i, piece, i == layout.chunks - 1, key))
        return b"".join(out)

    async def get(self, key: str) -> bytes:
        stored = await self.inner.get(check_key(key))  # one snapshot of the object
        header = Header.decode(stored[:MAX_HEADER], key)
        layout = _layout(header, len(stored), key)
        sealer = _Sealer(self.keyring.cipher(header.key_id), header, key)
        return await asyncio.to_thread(
            self._open_chunks, key, layout, sealer, stored[header.length :], 0, layout.chunks - 1
        )

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid range {start}-{end}")
        layout, sealer = await self._open(key)
        end = min(end, layout.size)
        if start >= end:
            return b""
        size = layout.header.chunk_size
        first, last = start // size, (end - 1) // size
        plain = await self._read_chunks(key, layout, sealer, first, last)
        return plain[start - first * size : end - first * size]

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start) or chunk_size <= 0:
            raise ValueError(f"invalid range {start}-{end} or chunk size {chunk_size}")
        layout, sealer = await self._open(key)
        end = layout.size if end is None else min(end, layout.size)
        if start >= end:
            return
        size = layout.header.chunk_size
        full = size + TAG_BYTES
        first, last = start // size, (end - 1) // size
        raw = self.inner.stream(key, layout.offset(first), layout.offset(last + 1), chunk_size=full)

        def sealed_len(i: int) -> int:
            return layout.offset(i + 1) - layout.offset(i)

        buffer = bytearray()
        out = bytearray()
        index = first
        async for data in raw:
            buffer += data
            while index <= last and len(buffer) >= sealed_len(index):
                n = sealed_len(index)
                plain = await asyncio.to_thread(
                    sealer.open, index, bytes(buffer[:n]), index == layout.chunks - 1, key
                )
                del buffer[:n]
                out += plain[max(start - index * size, 0) : min(end - index * size, len(plain))]
                index += 1
                while len(out) >= chunk_size:
                    yield bytes(out[:chunk_size])
                    del out[:chunk_size]
        if index <= last:
            raise BlobIntegrityError(f"blob {key!r}: truncated while being read")
        if out:
            yield bytes(out)

    async def size(self, key: str) -> int:
        """The plaintext size; the last chunk is authenticated first, so truncation is caught."""
        layout, sealer = await self._open(key)
        await self._read_chunks(key, layout, sealer, layout.chunks - 1, layout.chunks - 1)
        return layout.size

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    # maintenance --------------------------------------------------------------------------
    async def key_id_of(self, key: str) -> str | None:
        """The key id in the stored header, or None for an object without one (legacy plaintext)."""
        head = await self.inner.get_range(check_key(key), 0, MAX_HEADER)
        if head[:4] != MAGIC:
            return None
        return Header.decode(head, key).key_id

    async def encrypt_legacy(self, key: str) -> bool:
        """Encrypt a plaintext object written before encryption at rest; False if already encrypted."""
        if await self.key_id_of(key) is not None:
            return False
        await self.put(key, self.inner.stream(key))
        return True

    async def reencrypt(self, key: str) -> bool:
        """Rewrite the object under the active key (atomically, through the inner store's put).

        False when it already uses the active key. Readers that loaded the object before keep
        their snapshot; readers after it see the new object, whose key id the keyring knows.
        """
        kid = await self.key_id_of(key)
        if kid is None:
            raise BlobIntegrityError(f"blob {key!r} has no encryption header")
        if kid == self.keyring.active:
            return False
        await self.put(key, self.stream(key))
        return True


async def list_keys(inner: BlobStore) -> list[str]:
    from .s3_blobs import S3BlobStore

    if not isinstance(inner, FileBlobStore | S3BlobStore):
        raise TypeError("listing blobs needs a FileBlobStore or an S3BlobStore")
    return await inner.keys()


async def migrate_plaintext(
    store: EncryptedBlobStore, marker: Path, progress: Callable[[str], None] | None = None
) -> int:
    """Encrypt every legacy plaintext object once; `marker` records that it is done. Returns the count."""
    if await asyncio.to_thread(marker.exists):
        return 0
    done = 0
    for key in await list_keys(store.inner):
        with contextlib.suppress(BlobNotFound):
            if await store.encrypt_legacy(key):
                done += 1
                if progress is not None:
                    progress(key)

    def mark() -> None:
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker.write_text("blobs in this data directory are encrypted at rest\n", "utf-8")

    await asyncio.to_thread(mark)
    return done


async def reencrypt_all(
    store: EncryptedBlobStore, progress: Callable[[int, int, str, bool], None] | None = None
) -> int:
    """Re-encrypt every object under the active key; returns how many were rewritten."""
    keys = await list_keys(store.inner)
    rewritten = 0
    for i, key in enumerate(keys, 1):
        try:
            changed = await store.reencrypt(key)
        except BlobNotFound:
            changed = False  # deleted meanwhile
        rewritten += changed
        if progress is not None:
            progress(i, len(keys), key, changed)
    return rewritten


def keyring_path(data_dir: Path, data_key: str) -> Path:
    """Where the keyring lives: `data_key` (ESCENARIO_DATA_KEY) or `data_dir/keys/keyring.json`."""
    return Path(data_key) if data_key else Path(data_dir) / "keys" / "keyring.json"


async def open_encrypted_blobs(data_dir: Path, data_key: str = "", blob_url: str = "") -> EncryptedBlobStore:
    """The server's blob store: files under `data_dir/blobs` (or the S3 bucket `blob_url` names),
    encrypted with the configured keyring.

    Without `data_key` the keyring is `data_dir/keys/keyring.json`, created (mode 0600) on first
    run; it never travels with the blobs, so remote workers get a copy through `data_key`.
    Plaintext files from before encryption at rest are encrypted once, on first start; an
    object store was only ever written encrypted, so it is not scanned.
    """
    from .factory import open_blob_store

    data_dir = Path(data_dir)
    keyring = await asyncio.to_thread(open_keyring, keyring_path(data_dir, data_key), create=not data_key)
    inner = await open_blob_store(blob_url, data_dir=data_dir)
    store = EncryptedBlobStore(inner, keyring)
    if isinstance(inner, FileBlobStore):
        await migrate_plaintext(store, data_dir / "keys" / MIGRATED_MARKER)
    return store
