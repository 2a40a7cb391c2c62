"""Audio assets: upload, list, read and delete them; waveform peaks; the audio with HTTP ranges.

Members of an asset's session may read it; owners and editors upload and delete. To anyone
else an asset does not exist (404), as sessions do not.
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from typing import Any
from urllib.parse import quote

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from persistence.blobs import BlobNotFound
from persistence.ports import AssetRecord, Role
from persistence.ports import NotFound as StoreNotFound

from .. import errors
from ..accounts import Access, require, session_access
from ..audit import Action, audit
from ..media.decode import CorruptAudio, NotAudio, TooLong
from ..media.encode import MIME_TYPES
from .common import Caller, authenticate, iso, services
from .uploads import receive_upload

MAX_NAME = 200
MAX_PEAK_WIDTH = 65536
DEFAULT_PEAK_WIDTH = 1000
AUDIO_FORMATS = ("flac", "opus")
_DIGITS = re.compile(r"[0-9]{1,18}")
# Assets that hold no samples (a transcription's MIDI file): no waveform, no audio stream.
NOT_AUDIO_MIMES = frozenset({"audio/midi"})


def asset_json(a: AssetRecord) -> dict[str, Any]:
    return {
        "asset_id": a.id,
        "session_id": a.session_id,
        "name": a.name,
        "kind": a.kind.value,
        "mime": a.mime,
        "duration": a.duration_s,
        "sample_rate": a.sample_rate,
        "channels": a.channels,
        "frames": a.frames,
        "size_bytes": a.size_bytes,
        "uploader_id": a.uploader_id,
        "created_at": iso(a.created_at),
        "processed_at": None if a.processed_at is None else iso(a.processed_at),
        # Retention removed the audio of this source after processing (docs/privacy.md).
        "purged_at": None if a.purged_at is None else iso(a.purged_at),
        "purge_reason": a.purge_reason,
    }


def sanitize_name(raw: str) -> str:
    """A display name from an uploaded file name: no folders, control characters or odd spacing."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in name)
    name = " ".join(name.split()).strip(" .")
    return name[:MAX_NAME].strip() or "untitled"


async def _asset(request: Request, caller: Caller, *roles: Role) -> tuple[AssetRecord, Access]:
    """The asset in the path if the caller is a member of its session (404 otherwise)."""
    store = services(request).store
    asset_id = request.path_params["asset_id"]
    record = await store.get_asset(asset_id) if len(asset_id) <= 64 else None
    if record is None:
        raise errors.NotFound("no such asset", code="asset_not_found")
    try:
        access = await session_access(store, record.session_id, caller.user)
    except errors.NotFound:
        raise errors.NotFound("no such asset", code="asset_not_found") from None
    if roles:
        require(access, *roles)
    return record, access


class SourcePurged(errors.ApiError):
    status = 410
    code = "source_purged"


def require_audio(record: AssetRecord) -> None:
    """409 `not_audio` for an asset without samples, rather than a mislabelled body or a 500;
    410 `source_purged` for a source whose audio retention removed."""
    if record.purged_at is not None:
        raise SourcePurged(
            f"this upload's audio was deleted after processing ({record.purge_reason or 'retention'}); "
            "its stems, MIDI and masters are kept"
        )
    if record.mime in NOT_AUDIO_MIMES:
        raise errors.Conflict(
            f"this asset is {record.mime}, not audio: it has no waveform or audio stream"
            + (f"; download it from /api/assets/{record.id}/midi" if record.mime == "audio/midi" else ""),
            code="not_audio",
        )


async def upload_asset(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER, Role.EDITOR)
    upload = await receive_upload(
        request,
        file_field="file",
        tmp_path=svc.assets.temp_path(".upload"),
        max_bytes=svc.settings.max_upload_bytes,
    )
    try:
        name = sanitize_name(upload.fields.get("name") or upload.filename)
        record, ingested = await svc.assets.ingest(
            upload.path, session_id=access.session.id, uploader_id=caller.user.id, name=name
        )
    except NotAudio as exc:
        raise errors.UnsupportedMedia(f"{exc}; upload WAV, FLAC, MP3, Ogg/Opus, AAC/M4A or similar") from exc
    except CorruptAudio as exc:
        raise errors.ValidationFailed(str(exc), code="corrupt_audio") from exc
    except TooLong as exc:
        raise errors.ValidationFailed(str(exc), code="too_long") from exc
    except StoreNotFound as exc:
        raise errors.NotFound("no such session", code="session_not_found") from exc
    finally:
        await asyncio.shield(asyncio.to_thread(upload.path.unlink, missing_ok=True))
    body = asset_json(record)
    body["source_sample_rate"] = ingested.source_sample_rate
    return JSONResponse(body, status_code=201, headers={"location": f"/api/assets/{record.id}"})


async def list_assets(request: Request) -> Response:
    caller = await authenticate(request)
    store = services(request).store
    access = await session_access(store, request.path_params["session_id"], caller.user)
    records = await store.list_assets(access.session.id)
    return JSONResponse({"assets": [asset_json(a) for a in records]})


async def get_asset(request: Request) -> Response:
    caller = await authenticate(request)
    record, _ = await _asset(request, caller)
    return JSONResponse(asset_json(record))


async def delete_asset(request: Request) -> Response:
    caller = await authenticate(request)
    record, _ = await _asset(request, caller, Role.OWNER, Role.EDITOR)
    svc = services(request)
    # Soft deletion with a grace period (POST /api/assets/{id}/restore undoes it; see retention.py).
    await svc.assets.delete(record)
    await audit(
        request,
        Action.ASSET_DELETED,
        actor_id=caller.user.id,
        target_type="asset",
        target_id=record.id,
        session_id=record.session_id,
        detail={"name": record.name, "grace_s": svc.assets.deletion_grace_s},
    )
    return Response(status_code=204)


async def get_peaks(request: Request) -> Response:
    caller = await authenticate(request)
    raw = request.query_params.get("width", str(DEFAULT_PEAK_WIDTH))
    width = int(raw) if _DIGITS.fullmatch(raw) else 0
    if not 1 <= width <= MAX_PEAK_WIDTH:
        raise errors.ValidationFailed(f"width: must be an integer from 1 to {MAX_PEAK_WIDTH}")
    record, _ = await _asset(request, caller)
    require_audio(record)
    mins, maxs = await services(request).assets.peaks(record, width)

    def render() -> bytes:
        body = {
            "width": width,
            "channels": record.channels,
            "frames": record.frames,
            "merged": True,  # one min/max pair per slice over all channels
            "min": np.round(mins.astype(np.float64), 5).tolist(),
            "max": np.round(maxs.astype(np.float64), 5).tolist(),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    return Response(
        await asyncio.to_thread(render),
        media_type="application/json",
        headers={"cache-control": "private, max-age=3600"},
    )


class _Unsatisfiable(Exception):
    """The Range header names no byte the file has (answered with 416)."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The byte range `[start, end]` (inclusive) a `Range` header asks for, or None to send all.

    Other units and lists of several ranges are ignored (the whole body is sent, as RFC 9110
    allows). A malformed or unsatisfiable byte range raises `_Unsatisfiable` (416).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not _DIGITS.fullmatch(first)) or (last and not _DIGITS.fullmatch(last)):
        raise _Unsatisfiable
    if not first:
        if not last or int(last) == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last and int(last) < start:
        raise _Unsatisfiable
    if start >= size:
        raise _Unsatisfiable
    end = size - 1 if not last else min(int(last), size - 1)
    return start, end


async def get_audio(request: Request) -> Response:
    caller = await authenticate(request)
    fmt = request.query_params.get("format", "flac")
    if fmt not in AUDIO_FORMATS:
        raise errors.ValidationFailed(f"format: must be one of {', '.join(AUDIO_FORMATS)}")
    record, _ = await _asset(request, caller)
    require_audio(record)
    svc = services(request)
    try:
        key = await svc.assets.audio_key(record, fmt)
        size = await svc.blobs.size(key)
    except BlobNotFound:
        raise errors.NotFound("no such asset", code="asset_not_found") from None
    etag = f'"{record.id}.{fmt}.{size}"'
    filename = f"{record.name.rsplit('.', 1)[0] if '.' in record.name else record.name}.{fmt}"
    headers = {
        "accept-ranges": "bytes",
        "etag": etag,
        "cache-control": "private, max-age=86400",
        "content-disposition": f"inline; filename*=UTF-8''{quote(filename, safe='')}",
    }
    media_type = "audio/ogg" if fmt == "opus" else MIME_TYPES[fmt]
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)

    start, end, status = 0, size - 1, 200
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == etag):
        try:
            wanted = parse_range(range_header, size)
        except _Unsatisfiable:
            return JSONResponse(
                {"error": {"code": "range_not_satisfiable", "message": f"the audio has {size} bytes"}},
                status_code=416,
                headers={**headers, "content-range": f"bytes */{size}"},
            )
        if wanted is not None:
            start, end = wanted
            status = 206
            headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        svc.blobs.stream(key, start, end + 1), status_code=status, headers=headers, media_type=media_type
    )


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


routes = [
    Route("/api/sessions/{session_id}/assets", upload_asset, methods=["POST"]),
    Route("/api/sessions/{session_id}/assets", list_assets, methods=["GET"]),
    Route("/api/assets/{asset_id}", get_asset, methods=["GET"]),
    Route("/api/assets/{asset_id}", delete_asset, methods=["DELETE"]),
    Route("/api/assets/{asset_id}/peaks", get_peaks, methods=["GET"]),
    Route("/api/assets/{asset_id}/audio", get_audio, methods=["GET"]),
]
