"""The blob port over any S3 API (AWS S3, MinIO, Garage, SeaweedFS, Ceph RGW), so servers and
remote inference workers share blobs without a shared filesystem.

`--blob-url s3://bucket/prefix?endpoint=http://host:9000&region=eu-west-1` names the store;
credentials come from the standard AWS chain (environment, profile, instance role), never from
the URL. The client is boto3 (Apache-2.0), imported only when an S3 store is opened, and its
blocking calls run in worker threads. botocore's "standard" retry mode retries throttling,
5xx and connection errors of each request; a stream that breaks mid-body is resumed here from
where it stopped, pinned to the object's ETag so it never mixes two versions.

Atomicity: a single PUT and a completed multipart upload both replace the object whole, so
readers see the old blob or the new one, never a part. Puts larger than one part are streamed
as multipart uploads (a part in memory at a time) and aborted on any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .blobs import DEFAULT_CHUNK, KEY_PATTERN, BlobNotFound, BlobSource, check_key

PART_SIZE = 8 << 20  # S3's minimum part is 5 MiB (all parts but the last)
MIN_PART_SIZE = 5 << 20
MAX_PARTS = 10_000
RESUME_ATTEMPTS = 3
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING = {"NoSuchKey", "404", "NotFound"}
_URL_OPTIONS = {"endpoint", "region", "addressing"}


class BlobStoreConfigError(ValueError):
    """The blob URL is malformed, or names a bucket that cannot be reached."""


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str = ""  # "" or ends with "/"
    endpoint: str | None = None
    region: str | None = None
    addressing: str = "auto"  # auto | path | virtual

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)


def parse_blob_url(url: str) -> S3Location:
    """`s3://bucket[/prefix][?endpoint=URL&region=NAME&addressing=path|virtual]`.

    A custom endpoint defaults to path-style addressing, which every S3-compatible server
    understands; AWS itself defaults to botocore's choice.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise BlobStoreConfigError(f"blob URL {url!r}: use s3://bucket/prefix?endpoint=…&region=…")
    if "@" in parts.netloc:
        raise BlobStoreConfigError(
            "blob URL must not hold credentials: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        )
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise BlobStoreConfigError(f"blob URL {url!r}: {bucket!r} is not a valid bucket name")
    if parts.fragment:
        raise BlobStoreConfigError(f"blob URL {url!r} must not have a fragment")
    prefix = parts.path.strip("/")
    if (prefix and not re.fullmatch(r"[A-Za-z0-9._/-]+", prefix)) or "//" in prefix:
        raise BlobStoreConfigError(f"blob URL {url!r}: the prefix may hold [A-Za-z0-9._/-] only")
    try:
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError as exc:
        raise BlobStoreConfigError(f"blob URL {url!r}: malformed options ({exc})") from None
    unknown = set(options) - _URL_OPTIONS
    if unknown:
        raise BlobStoreConfigError(f"blob URL {url!r}: unknown option(s) {sorted(unknown)}")
    endpoint = options.get("endpoint") or None
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise BlobStoreConfigError(f"blob URL {url!r}: endpoint must be an http:// or https:// URL")
    addressing = options.get("addressing") or ("path" if endpoint else "auto")
    if addressing not in ("auto", "path", "virtual"):
        raise BlobStoreConfigError(f"blob URL {url!r}: addressing is path or virtual")
    return S3Location(
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        endpoint=endpoint,
        region=options.get("region") or None,
        addressing=addressing,
    )


def make_client(location: S3Location) -> Any:
    import boto3  # type: ignore[import-untyped]  # lazy: filesystem-only servers never load it
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        # botocore >= 1.36 adds CRC checksum headers by default, which several S3-compatible
        # servers refuse; the content is authenticated by encryption at rest (AES-GCM) anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": location.addressing},
        max_pool_connections=32,
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=location.endpoint, region_name=location.region, config=config
    )


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "")) or None
    return None


def _is_missing(exc: BaseException) -> bool:
    return _code(exc) in _MISSING


class S3BlobStore:
    """A `BlobStore` keeping each blob as the object `prefix + key` in one bucket."""

    def __init__(self, location: S3Location, client: Any = None, *, part_size: int = PART_SIZE) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.location = location
        self.part_size = part_size
        self.client = client if client is not None else make_client(location)

    @property
    def bucket(self) -> str:
        return self.location.bucket

    async def check(self) -> None:
        """Fail early, with the bucket's name, when it is missing or the credentials are refused."""
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except Exception as exc:
            raise BlobStoreConfigError(f"S3 bucket {self.bucket!r} is not usable: {exc}") from exc

    # writing ------------------------------------------------------------------------------
    async def put(self, key: str, data: BlobSource) -> int:
        name = self.location.object_key(key)
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            if len(payload) <= self.part_size:
                await self._put_object(name, payload)
                return len(payload)
            return await self._put_parts(name, _slices(payload, self.part_size))
        if isinstance(data, Path):
            size = (await asyncio.to_thread(data.stat)).st_size
            part = max(self.part_size, -(-size // MAX_PARTS))
            return await self._put_parts(name, _file_parts(data, part))
        return await self._put_parts(name, _rechunk(data, self.part_size))

    async def _put_object(self, name: str, payload: bytes) -> None:
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=name, Body=payload)

    async def _put_parts(self, name: str, parts: AsyncGenerator[bytes, None]) -> int:
        """One PUT when the data fits in a part, else a multipart upload, aborted on failure."""
        try:
            return await self._upload(name, parts)
        finally:
            await parts.aclose()  # closes the source file at once, also on failure

    async def _upload(self, name: str, parts: AsyncGenerator[bytes, None]) -> int:
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            await self._put_object(name, first)
            return len(first)
        upload = await asyncio.to_thread(self.client.create_multipart_upload, Bucket=self.bucket, Key=name)
        upload_id = upload["UploadId"]
        try:
            done: list[dict[str, Any]] = []
            total = 0

            async def send(body: bytes) -> None:
                nonlocal total
                number = len(done) + 1
                if number > MAX_PARTS:
                    raise ValueError(f"blob too large: more than {MAX_PARTS} parts of {self.part_size} bytes")
                reply = await asyncio.to_thread(
                    self.client.upload_part,
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                )
                done.append({"PartNumber": number, "ETag": reply["ETag"]})
                total += len(body)

            await send(first)
            await send(second)
            async for body in parts:
                await send(body)
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
            return total
        except BaseException:
            # Parts of an aborted upload are freed; a failed abort leaves them to a lifecycle rule.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    asyncio.to_thread(
                        self.client.abort_multipart_upload, Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
                )
            raise

    # reading ------------------------------------------------------------------------------
    async def _get(self, name: str, key: str, **extra: Any) -> dict[str, Any] | None:
        """The GetObject reply; None for a range past the end (416) of an existing object."""
        try:
            reply: dict[str, Any] = await asyncio.to_thread(
                self.client.get_object, Bucket=self.bucket, Key=name, **extra
            )
            return reply
        except Exception as exc:
            if _is_missing(exc):
                raise BlobNotFound(key) from exc
            if _code(exc) == "InvalidRange":
                return None
            raise

    async def get(self, key: str) -> bytes:
        reply = await self._get(self.location.object_key(key), key)
        assert reply is not None  # no Range, so never 416
        return await asyncio.to_thread(_read_all, reply["Body"])

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid range {start}-{end}")
        name = self.location.object_key(key)
        if start == end:  # HTTP cannot ask for zero bytes; the blob must still exist
            await self.size(key)
            return b""
        reply = await self._get(name, key, Range=f"bytes={start}-{end - 1}")
        return b"" if reply is None else await asyncio.to_thread(_read_all, reply["Body"])

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start) or chunk_size <= 0:
            raise ValueError(f"invalid range {start}-{end} or chunk size {chunk_size}")
        name = self.location.object_key(key)
        if end == start:
            await self.size(key)
            return
        # One GET is one snapshot of the object; a resumed GET must match its ETag.
        position, etag, resumes = start, None, 0
        while end is None or position < end:
            want = f"bytes={position}-" if end is None else f"bytes={position}-{end - 1}"
            extra: dict[str, Any] = {"Range": want}
            if etag is not None:
                extra["IfMatch"] = etag
            reply = await self._get(name, key, **extra)
            if reply is None:
                return
            etag = etag or reply.get("ETag")
            body = reply["Body"]
            try:
                while True:
                    try:
                        chunk = await asyncio.to_thread(body.read, chunk_size)
                    except Exception as exc:
                        if not _transient_read_error(exc) or resumes >= RESUME_ATTEMPTS:
                            raise
                        resumes += 1
                        break  # reopen at `position`
                    if not chunk:
                        return
                    position += len(chunk)
                    yield chunk
            finally:
                body.close()

    async def _head(self, key: str) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=self.location.object_key(key)
            )
            return reply
        except Exception as exc:
            if _is_missing(exc):
                raise BlobNotFound(key) from exc
            raise

    async def size(self, key: str) -> int:
        return int((await self._head(key))["ContentLength"])

    async def exists(self, key: str) -> bool:
        try:
            await self._head(key)
        except BlobNotFound:
            return False
        return True

    async def delete(self, key: str) -> bool:
        # S3's DELETE succeeds whether or not the object was there, so ask first.
        existed = await self.exists(key)
        if existed:
            await asyncio.to_thread(
                self.client.delete_object, Bucket=self.bucket, Key=self.location.object_key(key)
            )
        return existed

    async def keys(self) -> list[str]:
        """Every stored key under the prefix, sorted; objects whose names are not keys are skipped."""

        def scan() -> list[str]:
            found = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.location.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(self.location.prefix) :]
                    if KEY_PATTERN.fullmatch(name) and ".." not in name:
                        found.append(name)
            return sorted(found)

        return await asyncio.to_thread(scan)


def _read_all(body: Any) -> bytes:
    try:
        data: bytes = body.read()
        return data
    finally:
        body.close()


def _transient_read_error(exc: BaseException) -> bool:
    from botocore import exceptions as errors  # type: ignore[import-untyped]

    transient = (
        errors.ConnectionError,
        errors.IncompleteReadError,
        errors.ReadTimeoutError,
        errors.ResponseStreamingError,
        OSError,
    )
    return isinstance(exc, transient)


async def _slices(payload: bytes, size: int) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(payload), size):
        yield payload[i : i + size]


async def _file_parts(path: Path, size: int) -> AsyncGenerator[bytes, None]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            part = await asyncio.to_thread(handle.read, size)
            if not part:
                return
            yield part
    finally:
        handle.close()


async def _rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Parts of exactly `size` bytes (the last may be shorter), a part in memory at a time."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
