"""Inference jobs over HTTP: separate, transcribe and master an asset; follow and cancel jobs.

`POST /api/assets/{id}/separate|transcribe|master` answers 202 with the job (and a `Location`
to follow it); the work runs in the inference pool and the result lands in the session as new
assets and tracks (`inference.service`). Owners and editors start and cancel jobs; every member
may read them. To anyone else jobs and assets do not exist (404).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any
from urllib.parse import quote

import pycrdt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference.executor import MIDI_MIME
from inference.placement import NoSuchClip, SourceClip, find_source_clip
from inference.queue import QueueError
from inference.service import JobService, NoWorkers
from persistence.ports import AssetRecord, JobKind, JobPriority, JobRecord, JobStatus, Role

from .. import errors
from ..accounts import Access, require, session_access
from .common import Caller, authenticate, iso, read_json, services

DEFAULT_MODEL = "htdemucs"
# Stems the demucs family knows (htdemucs_6s adds guitar and piano); the worker checks the
# chosen model's own list.
KNOWN_STEMS = ("drums", "bass", "other", "vocals", "guitar", "piano")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_COMMON_FIELDS = {"clip_id", "track_id", "priority"}
_FIELDS = {
    JobKind.SEPARATE: {"model", "stems"},
    JobKind.TRANSCRIBE: {"onset_threshold", "frame_threshold"},
    JobKind.MASTER: {"target_lufs", "true_peak_db", "reference_asset_id"},
}


class ServiceUnavailable(errors.ApiError):
    status = 503
    code = "service_unavailable"


def _jobs(request: Request) -> JobService:
    jobs = services(request).jobs
    if jobs is None:
        raise ServiceUnavailable("inference is not configured on this server")
    return jobs


def job_json(job: JobRecord) -> dict[str, Any]:
    now = time.time()
    started, finished = job.started_at, job.finished_at
    queued_s = (started if started is not None else (finished or now)) - job.created_at
    run_s = None if started is None else (finished if finished is not None else now) - started
    params = {k: v for k, v in job.params.items() if k not in ("source", "source_name", "bpm")}
    source = job.params.get("source") or {}
    return {
        "id": job.id,
        "kind": job.kind.value,
        "status": job.status.value,
        "progress": 1.0 if job.status is JobStatus.DONE else round(job.progress, 4),
        "session_id": job.session_id,
        "asset_id": job.asset_id,
        "clip_id": source.get("clipId"),
        "track_id": source.get("trackId"),
        "params": params,
        "priority": job.priority.value,
        "created_by": job.created_by,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "error": job.error,
        "result": job.result,
        "timings": {
            "created_at": iso(job.created_at),
            "started_at": None if started is None else iso(started),
            "finished_at": None if finished is None else iso(finished),
            "queued_s": round(max(0.0, queued_s), 3),
            "run_s": None if run_s is None else round(max(0.0, run_s), 3),
        },
    }


# -- validation ----------------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    """The JSON body, or {} when there is none (every field has a default)."""
    if request.headers.get("content-length") == "0" or (
        "content-length" not in request.headers and "transfer-encoding" not in request.headers
    ):
        return {}
    return await read_json(request)


def _number(
    body: dict[str, Any], name: str, default: float, lo: float, hi: float, *, open_range: bool
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise errors.ValidationFailed(f"{name}: must be a number")
    inside = lo < value < hi if open_range else lo <= value <= hi
    if not inside:
        bounds = f"between {lo:g} and {hi:g}" + (" (exclusive)" if open_range else "")
        raise errors.ValidationFailed(f"{name}: must be {bounds}, got {value:g}")
    return float(value)


def _optional_id(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise errors.ValidationFailed(f"{name}: must be an id (letters, digits, '_' or '-')")
    return value


def _check_fields(body: dict[str, Any], kind: JobKind) -> None:
    allowed = _FIELDS[kind] | _COMMON_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise errors.ValidationFailed(
            f"unknown field(s) {', '.join(unknown)}; a {kind.value} job takes {', '.join(sorted(allowed))}"
        )


def _separation_params(body: dict[str, Any], request: Request) -> dict[str, Any]:
    # Imported here: the models module loads torch, which the server needs only when a job comes.
    from inference.models import InvalidModelName, ModelLoadError, ModelNotInstalled, ModelStore

    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise errors.ValidationFailed("model: must be a model name such as htdemucs")
    try:
        ModelStore(_jobs(request).models_dir).resolve(model)
    except InvalidModelName as exc:
        raise errors.ValidationFailed(f"model: {exc}") from exc
    except ModelNotInstalled as exc:
        raise errors.ValidationFailed(str(exc), code="model_not_installed") from exc
    except ModelLoadError as exc:
        raise errors.ValidationFailed(str(exc), code="model_unusable") from exc
    params: dict[str, Any] = {"model": model}
    stems = body.get("stems")
    if stems is not None:
        if (
            not isinstance(stems, list)
            or not stems
            or not all(isinstance(s, str) for s in stems)
            or len(set(stems)) != len(stems)
        ):
            raise errors.ValidationFailed("stems: must be a non-empty list of distinct stem names")
        unknown = [s for s in stems if s not in KNOWN_STEMS]
        if unknown:
            raise errors.ValidationFailed(
                f"stems: unknown {', '.join(map(repr, unknown))}; separation models offer "
                f"{', '.join(KNOWN_STEMS)} (most have the first four)"
            )
        params["stems"] = stems
    return params


def _transcription_params(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "onset_threshold": _number(body, "onset_threshold", 0.5, 0.0, 1.0, open_range=True),
        "frame_threshold": _number(body, "frame_threshold", 0.3, 0.0, 1.0, open_range=True),
    }


async def _mastering_params(body: dict[str, Any], request: Request, source: AssetRecord) -> dict[str, Any]:
    params: dict[str, Any] = {
        "target_lufs": _number(body, "target_lufs", -14.0, -60.0, 0.0, open_range=False),
        "true_peak_db": _number(body, "true_peak_db", -1.0, -30.0, 0.0, open_range=False),
    }
    reference_id = _optional_id(body, "reference_asset_id")
    if reference_id is not None:
        reference = await services(request).store.get_asset(reference_id)
        if reference is None:
            raise errors.ValidationFailed(
                "reference_asset_id: no such asset (it may have been deleted)", code="reference_not_found"
            )
        if reference.session_id != source.session_id:
            raise errors.ValidationFailed(
                "reference_asset_id: the reference must be an asset of the same session",
                code="reference_not_in_session",
            )
        if reference.mime == MIDI_MIME:
            raise errors.ValidationFailed("reference_asset_id: the reference must be audio, not MIDI")
        params["reference_asset_id"] = reference_id
    return params


async def _asset(request: Request, caller: Caller) -> tuple[AssetRecord, Access]:
    store = services(request).store
    asset_id = request.path_params["asset_id"]
    record = await store.get_asset(asset_id) if len(asset_id) <= 64 else None
    if record is None:
        raise errors.NotFound("no such asset", code="asset_not_found")
    try:
        access = await session_access(store, record.session_id, caller.user)
    except errors.NotFound:
        raise errors.NotFound("no such asset", code="asset_not_found") from None
    return record, access


# -- endpoints -----------------------------------------------------------------------------------


async def _start(request: Request, kind: JobKind) -> Response:
    caller = await authenticate(request)
    source, access = await _asset(request, caller)
    require(access, Role.OWNER, Role.EDITOR)
    svc = services(request)
    jobs = _jobs(request)
    body = await _body(request)
    _check_fields(body, kind)
    if source.mime == MIDI_MIME:
        raise errors.ValidationFailed("this asset is a MIDI file; jobs take audio", code="not_audio")
    if kind is JobKind.SEPARATE:
        params = _separation_params(body, request)
    elif kind is JobKind.TRANSCRIBE:
        params = _transcription_params(body)
    else:
        params = await _mastering_params(body, request, source)
    priority_raw = body.get("priority")
    if priority_raw is not None and priority_raw not in ("interactive", "bulk"):
        raise errors.ValidationFailed("priority: must be interactive or bulk")
    clip_id, track_id = _optional_id(body, "clip_id"), _optional_id(body, "track_id")

    runner = await svc.rooms.acquire(source.session_id)
    doc = runner.room.doc
    try:
        clip: SourceClip | None = find_source_clip(doc, source.id, clip_id=clip_id, track_id=track_id)
    except NoSuchClip as exc:
        raise errors.ValidationFailed(str(exc), code="clip_not_found") from exc
    if kind is JobKind.TRANSCRIBE:
        bpm = doc.get("session", type=pycrdt.Map).get("bpm")
        if isinstance(bpm, int | float) and not isinstance(bpm, bool) and 20 <= bpm <= 999:
            params["bpm"] = float(bpm)
    # A job started while collaborators are in the live session is interactive: it goes first.
    priority = (
        JobPriority(priority_raw)
        if priority_raw is not None
        else (JobPriority.INTERACTIVE if runner.peer_count > 0 else JobPriority.BULK)
    )
    try:
        job = await jobs.submit(
            kind=kind,
            source=source,
            user_id=caller.user.id,
            params=params,
            source_clip=clip,
            priority=priority,
        )
    except NoWorkers as exc:
        raise ServiceUnavailable(str(exc), code="no_inference_workers") from exc
    except QueueError as exc:
        raise ServiceUnavailable(f"the job queue is unavailable: {exc}", code="queue_unavailable") from exc
    return JSONResponse(
        {"job_id": job.id, **job_json(job)}, status_code=202, headers={"location": f"/api/jobs/{job.id}"}
    )


async def separate(request: Request) -> Response:
    return await _start(request, JobKind.SEPARATE)


async def transcribe(request: Request) -> Response:
    return await _start(request, JobKind.TRANSCRIBE)


async def master(request: Request) -> Response:
    return await _start(request, JobKind.MASTER)


async def _job(request: Request, caller: Caller) -> tuple[JobRecord, Access]:
    store = services(request).store
    job_id = request.path_params["job_id"]
    job = await store.get_job(job_id) if len(job_id) <= 64 else None
    if job is None:
        raise errors.NotFound("no such job", code="job_not_found")
    try:
        access = await session_access(store, job.session_id, caller.user)
    except errors.NotFound:
        raise errors.NotFound("no such job", code="job_not_found") from None
    return job, access


async def get_job(request: Request) -> Response:
    caller = await authenticate(request)
    job, _ = await _job(request, caller)
    return JSONResponse(job_json(job))


async def cancel_job(request: Request) -> Response:
    caller = await authenticate(request)
    job, access = await _job(request, caller)
    require(access, Role.OWNER, Role.EDITOR)
    if job.status in (JobStatus.DONE, JobStatus.FAILED):
        raise errors.Conflict(f"the job already finished ({job.status.value})", code="job_finished")
    job = await _jobs(request).cancel(job)
    if job.status in (JobStatus.DONE, JobStatus.FAILED):  # it finished in the meantime
        raise errors.Conflict(f"the job already finished ({job.status.value})", code="job_finished")
    return JSONResponse(job_json(job), status_code=200 if job.status is JobStatus.CANCELLED else 202)


async def list_jobs(request: Request) -> Response:
    caller = await authenticate(request)
    store = services(request).store
    access = await session_access(store, request.path_params["session_id"], caller.user)
    return JSONResponse({"jobs": [job_json(j) for j in await store.list_jobs(access.session.id)]})


async def get_midi(request: Request) -> Response:
    """A transcription's standard MIDI file."""
    caller = await authenticate(request)
    record, _ = await _asset(request, caller)
    if record.mime != MIDI_MIME:
        raise errors.NotFound("this asset has no MIDI file", code="not_midi")
    data = await services(request).blobs.get(record.blob_key)
    filename = f"{record.name}.mid"
    return Response(
        data,
        media_type=MIDI_MIME,
        headers={
            "content-disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
            "cache-control": "private, max-age=86400",
        },
    )


routes = [
    Route("/api/assets/{asset_id}/separate", separate, methods=["POST"]),
    Route("/api/assets/{asset_id}/transcribe", transcribe, methods=["POST"]),
    Route("/api/assets/{asset_id}/master", master, methods=["POST"]),
    Route("/api/assets/{asset_id}/midi", get_midi, methods=["GET"]),
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/api/sessions/{session_id}/jobs", list_jobs, methods=["GET"]),
]
