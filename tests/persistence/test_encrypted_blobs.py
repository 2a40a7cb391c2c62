"""Encryption at rest: `EncryptedBlobStore` round trips, tamper/truncation detection, keys, rotation."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from persistence.blobs import BlobNotFound, FileBlobStore
from persistence.encrypted_blobs import (
    MAGIC,
    BlobIntegrityError,
    EncryptedBlobStore,
    Header,
    Keyring,
    load_keyring,
    open_encrypted_blobs,
    reencrypt_all,
    rotate_keyring,
)
from realtime.cli import main as cli_main

from ..appclient import MakeClient, auth, services, signup
from ..media.audio import sine, wav_bytes

CHUNK = 64
HEADER = len(Header("k1", b"\0" * 8, CHUNK).encode())
FULL = CHUNK + 16


@pytest.fixture
def inner(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def store(inner: FileBlobStore) -> EncryptedBlobStore:
    return EncryptedBlobStore(inner, Keyring.single(os.urandom(32)), chunk_size=CHUNK)


def data(n: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def raw(inner: FileBlobStore, key: str) -> bytes:
    return inner.path_for(key).read_bytes()


def overwrite(inner: FileBlobStore, key: str, body: bytes) -> None:
    inner.path_for(key).write_bytes(body)


async def fails(store: EncryptedBlobStore, key: str, *, size_too: bool = True) -> None:
    with pytest.raises(BlobIntegrityError):
        await store.get(key)
    with pytest.raises(BlobIntegrityError):
        _ = [c async for c in store.stream(key)]
    if size_too:  # size() authenticates the header and the last chunk only
        with pytest.raises(BlobIntegrityError):
            await store.size(key)


@pytest.mark.parametrize("n", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 17])
async def test_round_trip_whole_ranges_and_streams(store: EncryptedBlobStore, n: int) -> None:
    payload = data(n)
    assert await store.put("b", payload) == n
    assert await store.get("b") == payload
    assert await store.size("b") == n
    chunks = max(1, -(-n // CHUNK))
    assert len(raw(store.inner, "b")) == HEADER + n + 16 * chunks  # type: ignore[arg-type]
    cuts = sorted({0, 1, CHUNK - 1, CHUNK, CHUNK + 1, n // 2, n - 1, n, n + 10})
    for a in cuts:
        for b in cuts:
            if 0 <= a <= b:
                assert await store.get_range("b", a, b) == payload[a:b], (a, b)
                streamed = b"".join([c async for c in store.stream("b", a, b, chunk_size=7)])
                assert streamed == payload[a:b], (a, b)
    assert b"".join([c async for c in store.stream("b")]) == payload


async def test_put_from_a_file_and_from_chunks(store: EncryptedBlobStore, tmp_path: Path) -> None:
    payload = data(10 * CHUNK + 3)
    source = tmp_path / "src.bin"
    source.write_bytes(payload)
    assert await store.put("f", source) == len(payload)
    assert await store.get("f") == payload

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 37):
            yield payload[i : i + 37]

    assert await store.put("s", pieces()) == len(payload)
    assert await store.get("s") == payload


async def test_missing_blobs_and_delete(store: EncryptedBlobStore) -> None:
    for call in (store.get("x"), store.size("x"), store.get_range("x", 0, 1)):
        with pytest.raises(BlobNotFound):
            await call
    with pytest.raises(BlobNotFound):
        _ = [c async for c in store.stream("x")]
    await store.put("x", b"abc")
    assert await store.exists("x")
    assert await store.delete("x")
    assert not await store.exists("x")


async def test_stored_file_holds_no_plaintext_and_nonces_differ(store: EncryptedBlobStore) -> None:
    pattern = b"SECRET-TAKE-" * 50
    await store.put("a", pattern)
    await store.put("b", pattern)
    first, second = raw(store.inner, "a"), raw(store.inner, "b")  # type: ignore[arg-type]
    assert first.startswith(MAGIC)
    assert b"SECRET" not in first
    assert first[HEADER:] != second[HEADER:]
    assert Header.decode(first, "a").prefix != Header.decode(second, "b").prefix
    await store.put("a", pattern)
    assert raw(store.inner, "a") != first  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "where",
    [0, 4, 5, HEADER - 1, HEADER, HEADER + 10, HEADER + FULL - 1, -1, -17],
    ids=["magic", "version", "kid-len", "chunk-size", "ct0", "ct0-mid", "tag0", "last-tag", "last-ct"],
)
async def test_any_flipped_byte_fails(store: EncryptedBlobStore, where: int) -> None:
    inner: FileBlobStore = store.inner  # type: ignore[assignment]
    await store.put("t", data(3 * CHUNK + 5))
    body = bytearray(raw(inner, "t"))
    body[where] ^= 0x01
    overwrite(inner, "t", bytes(body))
    with pytest.raises(BlobIntegrityError):
        await store.get("t")


async def test_truncation_is_detected(store: EncryptedBlobStore) -> None:
    inner: FileBlobStore = store.inner  # type: ignore[assignment]
    payload = data(3 * CHUNK)
    await store.put("t", payload)
    full = raw(inner, "t")
    overwrite(inner, "t", full[: HEADER + 2 * FULL])  # the last chunk dropped
    await fails(store, "t")
    with pytest.raises(BlobIntegrityError):
        await store.get_range("t", CHUNK, 10 * CHUNK)
    overwrite(inner, "t", full[: HEADER + 2 * FULL + 20])  # cut inside the last chunk
    await fails(store, "t")
    overwrite(inner, "t", full[:HEADER])  # no chunk at all
    await fails(store, "t")
    overwrite(inner, "t", full[:7])  # not even a header
    await fails(store, "t")


async def test_reordered_chunks_fail(store: EncryptedBlobStore) -> None:
    inner: FileBlobStore = store.inner  # type: ignore[assignment]
    await store.put("r", data(3 * CHUNK))
    full = raw(inner, "r")
    head, c0, c1, c2 = full[:HEADER], *(full[HEADER + i * FULL : HEADER + (i + 1) * FULL] for i in range(3))
    overwrite(inner, "r", head + c1 + c0 + c2)
    await fails(store, "r", size_too=False)
    with pytest.raises(BlobIntegrityError):
        await store.get_range("r", 0, 1)


async def test_swapped_objects_fail_because_the_key_is_bound(store: EncryptedBlobStore) -> None:
    inner: FileBlobStore = store.inner  # type: ignore[assignment]
    await store.put("one", b"first object")
    await store.put("two", b"second object")
    overwrite(inner, "one", raw(inner, "two"))
    await fails(store, "one")


async def test_wrong_key_fails(inner: FileBlobStore) -> None:
    writer = EncryptedBlobStore(inner, Keyring.single(os.urandom(32)), chunk_size=CHUNK)
    await writer.put("w", data(100))
    same_id_other_key = EncryptedBlobStore(inner, Keyring.single(os.urandom(32)), chunk_size=CHUNK)
    await fails(same_id_other_key, "w")
    unknown_id = EncryptedBlobStore(inner, Keyring.single(os.urandom(32), "other"), chunk_size=CHUNK)
    await fails(unknown_id, "w")


async def test_plaintext_without_header_is_refused_after_migration(store: EncryptedBlobStore) -> None:
    inner: FileBlobStore = store.inner  # type: ignore[assignment]
    await inner.put("legacy", b"fLaC plain audio")
    await fails(store, "legacy")


async def test_legacy_plaintext_is_encrypted_on_first_start(tmp_path: Path) -> None:
    inner = FileBlobStore(tmp_path / "blobs")
    await inner.put("asset-1.flac", b"fLaC" + data(3000))
    await inner.put("asset-1.peaks", data(10))
    store = await open_encrypted_blobs(tmp_path)
    assert await store.get("asset-1.flac") == b"fLaC" + data(3000)
    assert await store.get("asset-1.peaks") == data(10)
    stored = raw(inner, "asset-1.flac")
    assert stored.startswith(MAGIC)
    assert b"fLaC" not in stored
    # Done once: a plaintext file appearing later is refused, not trusted.
    await inner.put("asset-2.flac", b"fLaC planted")
    again = await open_encrypted_blobs(tmp_path)
    with pytest.raises(BlobIntegrityError):
        await again.get("asset-2.flac")


async def test_keyring_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    first = await open_encrypted_blobs(tmp_path)
    path = tmp_path / "keys" / "keyring.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await first.put("k", b"kept")
    second = await open_encrypted_blobs(tmp_path)
    assert second.keyring.active == first.keyring.active
    assert await second.get("k") == b"kept"


async def test_a_configured_keyring_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no keyring"):
        await open_encrypted_blobs(tmp_path, str(tmp_path / "missing.json"))


async def test_rotation_reencrypts_and_a_running_reader_keeps_reading(tmp_path: Path) -> None:
    server = await open_encrypted_blobs(tmp_path)  # the running server, old keyring in memory
    old = server.keyring.active
    payloads = {f"b{i}": data(i * 1000) for i in range(4)}
    for key, value in payloads.items():
        await server.put(key, value)
    path = tmp_path / "keys" / "keyring.json"
    rotator = await open_encrypted_blobs(tmp_path)
    rotator.keyring = rotate_keyring(path)
    assert await reencrypt_all(rotator) == 4
    assert await reencrypt_all(rotator) == 0  # already current
    new = rotator.keyring.active
    assert new != old
    assert set(load_keyring(path).keys) == {old, new}
    for key, value in payloads.items():
        assert await rotator.key_id_of(key) == new
        assert Header.decode(raw(rotator.inner, key), key).key_id == new  # type: ignore[arg-type]
        assert await server.get(key) == value  # reloads the keyring for the unknown id
        assert await server.size(key) == len(value)


def test_cli_keys_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def setup() -> str:
        store = await open_encrypted_blobs(tmp_path)
        await store.put("asset-x.flac", b"audio")
        return store.keyring.active

    old = asyncio.run(setup())
    assert cli_main(["keys", "rotate", "--data-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "[1/1] asset-x.flac: re-encrypted" in err

    async def check() -> tuple[str | None, bytes]:
        store = await open_encrypted_blobs(tmp_path)
        return await store.key_id_of("asset-x.flac"), await store.get("asset-x.flac")

    kid, body = asyncio.run(check())
    assert kid not in (None, old)
    assert body == b"audio"


def test_uploaded_assets_are_encrypted_on_disk(make_client: MakeClient) -> None:
    client: TestClient = make_client()
    owner = signup(client)
    r = client.post("/api/sessions", json={"title": "Secret"}, headers=auth(owner))
    sid = r.json()["id"]
    wav = wav_bytes(sine(seconds=0.3))
    r = client.post(
        f"/api/sessions/{sid}/assets",
        files={"file": ("take.wav", wav, "application/octet-stream")},
        headers=auth(owner),
    )
    assert r.status_code == 201, r.text
    asset = r.json()["asset_id"]
    blob_dir = services(client).settings.data_dir / "blobs"
    files = sorted(p for p in blob_dir.rglob("*") if p.is_file())
    assert len(files) == 2
    for path in files:
        body = path.read_bytes()
        assert body.startswith(MAGIC)
        assert b"fLaC" not in body
    flac = client.get(f"/api/assets/{asset}/audio?format=flac", headers=auth(owner))
    assert flac.status_code == 200
    assert flac.content.startswith(b"fLaC")
