"""`S3BlobStore` over real S3 HTTP: moto's standalone server on a loopback port.

The `BlobStore` contract tests of `test_blobs.py` run here again against S3 (imported below,
so pytest collects them with this module's `blobs` fixture), then what only S3 has: multipart
uploads, URL parsing, encryption at rest over a bucket, and a job end to end through the API.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persistence.blobs import BlobNotFound
from persistence.encrypted_blobs import (
    MAGIC,
    BlobIntegrityError,
    EncryptedBlobStore,
    Keyring,
    open_encrypted_blobs,
    reencrypt_all,
    rotate_keyring,
)
from persistence.factory import open_blob_store
from persistence.s3_blobs import (
    MIN_PART_SIZE,
    BlobStoreConfigError,
    S3BlobStore,
    S3Location,
    parse_blob_url,
)
from realtime.media.encode import encode_audio

from ..appclient import MakeClient, auth, services, signup
from .test_blobs import (  # the shared contract, collected again with the S3 `blobs` fixture
    test_a_stream_survives_deletion_of_its_blob,
    test_keys_are_checked,
    test_put_from_a_file_and_from_chunks,
    test_put_get_size_exists_delete,
    test_ranges_and_streams,
)

__all__ = [
    "test_a_stream_survives_deletion_of_its_blob",
    "test_keys_are_checked",
    "test_put_from_a_file_and_from_chunks",
    "test_put_get_size_exists_delete",
    "test_ranges_and_streams",
]

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server for the whole run. moto is a test dependency: a failed start fails the
    tests (it is never skipped, in CI or elsewhere)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket; credentials from the standard AWS variables, as in production."""
    for name, value in _CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # no profile or config file of the machine running the tests may leak in
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"escenario-{uuid.uuid4().hex[:12]}"
    location = S3Location(bucket=bucket, endpoint=s3_endpoint, region="us-east-1", addressing="path")
    S3BlobStore(location).client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/blobs/v1?endpoint={s3_endpoint}&region=us-east-1"


@pytest.fixture
def blobs(bucket_url: str) -> S3BlobStore:
    return S3BlobStore(parse_blob_url(bucket_url), part_size=MIN_PART_SIZE)


def object_names(store: S3BlobStore) -> list[str]:
    reply = store.client.list_objects_v2(Bucket=store.bucket)
    return sorted(str(item["Key"]) for item in reply.get("Contents", []))


def pending_uploads(store: S3BlobStore) -> list[Any]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


# -- S3 specifics ------------------------------------------------------------------------------


async def test_large_puts_are_multipart_and_stream_back(blobs: S3BlobStore, tmp_path: Path) -> None:
    payload = os.urandom(8 * 1024 * 1024 + 12345)  # > 8 MiB: two parts of 5 MiB
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    assert await blobs.put("big-file", source) == len(payload)
    head = blobs.client.head_object(Bucket=blobs.bucket, Key="blobs/v1/big-file")
    assert head["ETag"].strip('"').endswith("-2")  # S3 marks a multipart object's ETag with its part count
    assert await blobs.size("big-file") == len(payload)
    assert await blobs.get("big-file") == payload
    assert (
        await blobs.get_range("big-file", MIN_PART_SIZE - 3, MIN_PART_SIZE + 5)
        == (payload[MIN_PART_SIZE - 3 : MIN_PART_SIZE + 5])
    )
    assert await blobs.get_range("big-file", len(payload) - 4, len(payload) + 100) == payload[-4:]
    parts = [c async for c in blobs.stream("big-file", 100, chunk_size=1 << 20)]
    assert all(len(p) == 1 << 20 for p in parts[:-1])
    assert b"".join(parts) == payload[100:]

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 300_001):
            yield payload[i : i + 300_001]

    assert await blobs.put("big-chunks", chunks()) == len(payload)
    assert await blobs.get("big-chunks") == payload
    assert await blobs.put("big-bytes", payload) == len(payload)
    assert await blobs.get_range("big-bytes", 7, 9) == payload[7:9]
    assert pending_uploads(blobs) == []
    assert object_names(blobs) == ["blobs/v1/big-bytes", "blobs/v1/big-chunks", "blobs/v1/big-file"]
    assert await blobs.keys() == ["big-bytes", "big-chunks", "big-file"]


async def test_a_failed_multipart_put_keeps_the_old_blob_and_aborts_the_upload(blobs: S3BlobStore) -> None:
    await blobs.put("k", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (2 * MIN_PART_SIZE + 1)  # two parts are uploaded before the failure
        raise OSError("the upload broke")

    with pytest.raises(OSError, match="broke"):
        await blobs.put("k", broken())
    assert await blobs.get("k") == b"old"
    assert pending_uploads(blobs) == []
    with pytest.raises(FileNotFoundError):
        await blobs.put("k2", Path("/nonexistent/file"))
    assert object_names(blobs) == ["blobs/v1/k"]


async def test_empty_blobs_and_edge_ranges(blobs: S3BlobStore) -> None:
    assert await blobs.put("empty", b"") == 0
    assert await blobs.get("empty") == b""
    assert await blobs.size("empty") == 0
    assert await blobs.get_range("empty", 0, 10) == b""
    assert [c async for c in blobs.stream("empty")] == []
    await blobs.put("ten", b"0123456789")
    assert await blobs.get_range("ten", 3, 3) == b""
    assert await blobs.get_range("ten", 50, 60) == b""
    assert [c async for c in blobs.stream("ten", 4, 4)] == []
    assert [c async for c in blobs.stream("ten", 50)] == []
    assert await blobs.exists("gone") is False
    with pytest.raises(BlobNotFound):
        await blobs.get_range("gone", 3, 3)
    with pytest.raises(BlobNotFound):
        [c async for c in blobs.stream("gone", 2, 2)]
    with pytest.raises(ValueError, match="chunk size"):
        [c async for c in blobs.stream("ten", chunk_size=0)]


async def test_keys_skip_foreign_objects_and_other_prefixes(blobs: S3BlobStore) -> None:
    await blobs.put("a.bin", b"a")
    blobs.client.put_object(Bucket=blobs.bucket, Key="blobs/v1/Not A Key", Body=b"x")
    blobs.client.put_object(Bucket=blobs.bucket, Key="elsewhere/b.bin", Body=b"x")
    assert await blobs.keys() == ["a.bin"]
    assert await blobs.exists("b.bin") is False


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://bucket", "s3://"),
        ("s3://AKIA:secret@bucket", "credentials"),
        ("s3://b", "bucket name"),
        ("s3://Bucket_Name", "bucket name"),
        ("s3://bucket/a b", "prefix"),
        ("s3://bucket?endpoint=ftp://h", "endpoint"),
        ("s3://bucket?region=x&colour=red", "unknown option"),
        ("s3://bucket?addressing=sideways", "addressing"),
        ("s3://bucket#frag", "fragment"),
        ("s3://bucket?region", "malformed options"),
    ],
)
def test_bad_blob_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(BlobStoreConfigError, match=problem):
        parse_blob_url(url)


def test_blob_urls_parse() -> None:
    assert parse_blob_url("s3://media-eu") == S3Location("media-eu")
    assert parse_blob_url("s3://media/a/b/?endpoint=http://minio:9000&region=eu-1") == S3Location(
        "media", "a/b/", "http://minio:9000", "eu-1", "path"
    )
    assert parse_blob_url("s3://media?endpoint=https://h&addressing=virtual").addressing == "virtual"


async def test_an_unusable_bucket_fails_at_open(bucket_url: str, tmp_path: Path) -> None:
    missing = bucket_url.replace("s3://escenario-", "s3://missing-")
    with pytest.raises(BlobStoreConfigError, match="missing-"):
        await open_blob_store(missing, data_dir=tmp_path)
    assert isinstance(await open_blob_store(bucket_url, data_dir=tmp_path), S3BlobStore)


# -- encryption at rest over S3 ----------------------------------------------------------------


async def test_encryption_wraps_s3_unchanged(blobs: S3BlobStore) -> None:
    store = EncryptedBlobStore(blobs, Keyring.single(os.urandom(32)), chunk_size=64 * 1024)
    plain = bytes(range(256)) * 4000  # 1 MB: 16 chunks
    assert await store.put("take.flac", plain) == len(plain)
    stored = blobs.client.get_object(Bucket=blobs.bucket, Key="blobs/v1/take.flac")["Body"].read()
    assert stored.startswith(MAGIC)
    assert plain[:4096] not in stored
    assert await store.get("take.flac") == plain
    assert await store.size("take.flac") == len(plain)
    assert await store.get_range("take.flac", 70_000, 140_001) == plain[70_000:140_001]
    parts = [c async for c in store.stream("take.flac", 5, 300_000, chunk_size=100_000)]
    assert b"".join(parts) == plain[5:300_000]
    # tampering with the object in the bucket is caught
    flipped = bytearray(stored)
    flipped[len(stored) // 2] ^= 1
    blobs.client.put_object(Bucket=blobs.bucket, Key="blobs/v1/take.flac", Body=bytes(flipped))
    with pytest.raises(BlobIntegrityError):
        await store.get("take.flac")
    assert await store.delete("take.flac") is True
    with pytest.raises(BlobNotFound):
        await store.get("take.flac")


async def test_keyring_rotation_reencrypts_objects_in_the_bucket(bucket_url: str, tmp_path: Path) -> None:
    store = await open_encrypted_blobs(tmp_path / "data", "", bucket_url)
    assert isinstance(store.inner, S3BlobStore)
    await store.put("a", b"alpha")
    await store.put("b", b"beta" * 100_000)
    old = store.keyring.active
    store.keyring = rotate_keyring(tmp_path / "data" / "keys" / "keyring.json")
    assert await reencrypt_all(store) == 2
    assert {await store.key_id_of(k) for k in ("a", "b")} == {store.keyring.active} - {old}
    # a second machine with a copy of the keyring (ESCENARIO_DATA_KEY) reads them
    copy = tmp_path / "worker-keyring.json"
    copy.write_bytes((tmp_path / "data" / "keys" / "keyring.json").read_bytes())
    remote = await open_encrypted_blobs(tmp_path / "worker", str(copy), bucket_url)
    assert await remote.get("b") == b"beta" * 100_000


# -- end to end ----------------------------------------------------------------------------------


def test_a_job_runs_with_its_blobs_in_s3(make_client: MakeClient, bucket_url: str) -> None:
    """Upload, mastering by the pool and the result asset all go through the bucket; the data
    directory holds no blob."""
    client = make_client(blob_url=bucket_url, inference_workers=1, inference_device="cpu")
    owner = signup(client)
    sid = client.post("/api/sessions", json={"title": "S3"}, headers=auth(owner)).json()["id"]
    fs = 48000
    t = np.arange(2 * fs) / fs
    music = (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    r = client.post(
        f"/api/sessions/{sid}/assets",
        files={"file": ("mix.wav", encode_audio(np.stack([music, music]), "wav"), "audio/wav")},
        headers=auth(owner),
    )
    assert r.status_code == 201, r.text
    source = r.json()["asset_id"]
    r = client.post(f"/api/assets/{source}/master", json={"target_lufs": -14}, headers=auth(owner))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while (job := client.get(f"/api/jobs/{job_id}", headers=auth(owner)).json())["status"] not in (
        "done",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "done", job
    result = job["result"]["asset_id"]
    flac = client.get(f"/api/assets/{result}/audio?format=flac", headers=auth(owner))
    assert flac.status_code == 200
    assert flac.content.startswith(b"fLaC")
    blobs = services(client).blobs
    assert isinstance(blobs, EncryptedBlobStore)
    assert isinstance(blobs.inner, S3BlobStore)
    names = object_names(blobs.inner)
    assert len(names) >= 2
    assert all(n.startswith("blobs/v1/") for n in names)
    blob_dir = services(client).settings.data_dir / "blobs"
    assert not blob_dir.exists() or not any(p.is_file() for p in blob_dir.rglob("*"))


# -- command line ----------------------------------------------------------------------------------


def test_cli_flags_reach_every_command(
    bucket_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime import cli

    monkeypatch.delenv("ESCENARIO_DATA_KEY", raising=False)
    monkeypatch.delenv("ESCENARIO_BLOB_URL", raising=False)
    data = tmp_path / "data"

    async def put() -> None:
        store = await open_encrypted_blobs(data, "", bucket_url)
        await store.put("asset-x.flac", b"audio")

    asyncio.run(put())
    assert cli.main(["keys", "rotate", "--data-dir", str(data), "--blob-url", bucket_url]) == 0
    assert "[1/1] asset-x.flac: re-encrypted" in capsys.readouterr().err
    assert cli.main(["keys", "rotate", "--data-dir", str(data), "--blob-url", "s3://x"]) == 1
    assert "not a valid bucket name" in capsys.readouterr().err
    # a remote worker must be given the servers' keyring, never make its own
    argv = ["worker", "--redis-url", "redis://127.0.0.1:1/0", "--blob-url", bucket_url]
    assert cli.main([*argv, "--data-dir", str(tmp_path / "w"), "--log-format", "text"]) == 1
    assert "ESCENARIO_DATA_KEY" in capsys.readouterr().err
    assert not (tmp_path / "w" / "keys").exists()
    seen: list[str] = []
    monkeypatch.setattr(cli, "serve", lambda settings: seen.append(settings.blob_url))
    assert cli.main(["serve", "--blob-url", bucket_url]) == 0
    monkeypatch.setenv("ESCENARIO_BLOB_URL", "s3://from-env")
    assert cli.main(["serve"]) == 0
    assert seen == [bucket_url, "s3://from-env"]


# -- a broken connection mid-stream ----------------------------------------------------------------


class _BreakingBody:
    """A response body that fails like a dropped connection after `good` bytes."""

    def __init__(self, body: Any, good: int) -> None:
        self.body, self.good = body, good

    def read(self, amt: int | None = None) -> bytes:
        from botocore.exceptions import ResponseStreamingError  # type: ignore[import-untyped]

        if self.good <= 0:
            raise ResponseStreamingError(error="connection reset")
        data: bytes = self.body.read(min(amt or self.good, self.good))
        self.good -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


class _FlakyClient:
    """The real client, except that the first GET's body breaks after `good` bytes."""

    def __init__(self, client: Any, good: int, between: Any = None) -> None:
        self.client, self.good, self.between = client, good, between
        self.gets: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_object(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs)
        if len(self.gets) == 2 and self.between is not None:
            self.between()
        reply = self.client.get_object(**kwargs)
        if len(self.gets) == 1:
            reply["Body"] = _BreakingBody(reply["Body"], self.good)
        return reply


async def test_a_broken_stream_resumes_from_where_it_stopped(blobs: S3BlobStore) -> None:
    data = os.urandom(50_000)
    await blobs.put("s", data)
    flaky = _FlakyClient(blobs.client, good=12_345)
    store = S3BlobStore(blobs.location, flaky)
    assert b"".join([c async for c in store.stream("s", 100, 40_000, chunk_size=4096)]) == data[100:40_000]
    assert [g["Range"] for g in flaky.gets] == ["bytes=100-39999", "bytes=12445-39999"]
    assert flaky.gets[1]["IfMatch"] == blobs.client.head_object(Bucket=blobs.bucket, Key="blobs/v1/s")["ETag"]


async def test_a_resumed_stream_never_mixes_two_versions(blobs: S3BlobStore) -> None:
    from botocore.exceptions import ClientError

    await blobs.put("s", b"a" * 50_000)

    def replace() -> None:
        blobs.client.put_object(Bucket=blobs.bucket, Key="blobs/v1/s", Body=b"b" * 50_000)

    store = S3BlobStore(blobs.location, _FlakyClient(blobs.client, good=10_000, between=replace))
    got = bytearray()

    async def read_all() -> None:
        async for chunk in store.stream("s", chunk_size=4096):
            got.extend(chunk)

    with pytest.raises(ClientError, match=r"PreconditionFailed|412"):
        await read_all()
    assert got == b"a" * 10_000


def test_export_archives_left_in_the_bucket_are_swept(make_client: MakeClient, bucket_url: str) -> None:
    """Account exports a restart forgot are found by listing the bucket, not the data dir."""
    from realtime.export import Exports

    svc = services(make_client(blob_url=bucket_url, inference_workers=0))

    async def sweep() -> tuple[int, bool, bool]:
        await svc.blobs.put("export-left.zip", b"archive")
        await svc.blobs.put("asset-kept.flac", b"audio")
        swept = await Exports(svc).sweep_orphans()
        return swept, await svc.blobs.exists("export-left.zip"), await svc.blobs.exists("asset-kept.flac")

    assert asyncio.run(sweep()) == (1, False, True)
