"""`GET /api/sessions/{id}/mixdown`: the session rendered offline, streamed as it renders.

Any member may render (viewers too); to anyone else the session does not exist (404). The
document is read on the event loop, the assets are loaded through the asset cache, and the
render and encoding run in a worker thread (`realtime.media.stream.stream_mixdown`), which hands
the encoded bytes to the response through a bounded queue (`ByteStream`, `STREAM_QUEUE_CHUNKS`
chunks of about 64 KiB): the response starts with the first rendered blocks, a slow client
slows the render instead of growing memory, and a client that goes away stops it. A WAV mix has
a `content-length` (its size is known from the range); the other formats and stem zips are
chunked. Errors before the first byte are JSON errors as usual; an error mid-stream cuts the
connection (the status is already sent) and is logged.

While it runs, a job `{kind: "render", status, progress}` in the document's `jobs` map shows its
progress to every collaborator (updated about four times a second); it ends `done`, `failed`
or `cancelled` (the client went away). At most `max_concurrent_renders` mixdowns render at once
(each holds a thread of the loop's default executor until its stream ends); later ones wait
with status `queued`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
from typing import Any
from urllib.parse import quote

import numpy as np
import pycrdt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from persistence.blobs import BlobNotFound
from persistence.encrypted_blobs import BlobIntegrityError

from .. import errors
from ..accounts import session_access
from ..dsp.render import RenderCancelled, plan_render
from ..media.decode import MediaError
from ..media.mixdown import MIXDOWN_FORMATS, ZIP_MIME, safe_filename
from ..media.stream import stream_mixdown, streamed_size
from ..services import Services
from ..session.hub import RoomManager, RoomRunner
from ..session.schema import SessionDocument, read_document
from .byte_stream import ByteStream, ThreadStreamResponse
from .common import authenticate, services

log = logging.getLogger(__name__)

JOB_UPDATE_INTERVAL_S = 0.25
STREAM_QUEUE_CHUNKS = 8
FINISHED_JOBS_KEPT = 10
_ACTIVE = ("queued", "running")
_NUMBER = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9})?$")


def _seconds(params: Any, name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not _NUMBER.fullmatch(raw.strip()):
        raise errors.ValidationFailed(f"{name}: must be a number of seconds >= 0")
    return float(raw)


def _flag(params: Any, name: str) -> bool:
    raw = params.get(name, "0")
    if raw not in ("0", "1"):
        raise errors.ValidationFailed(f"{name}: must be 0 or 1")
    return bool(raw == "1")


class RenderJob:
    """A render's entry in the session document's `jobs` map, kept up to date from the loop."""

    def __init__(self, rooms: RoomManager, session_id: str, *, fmt: str, stems: bool) -> None:
        self.id = f"render-{secrets.token_hex(8)}"
        self._rooms = rooms
        self._session_id = session_id
        self._loop = asyncio.get_running_loop()
        self._fmt = fmt
        self._stems = stems
        self._last_write = -math.inf
        self._finished = False
        self._reloading = False

    def _write(self, runner: RoomRunner, **fields: Any) -> None:
        doc = runner.room.doc
        jobs = doc.get("jobs", type=pycrdt.Map)
        with doc.transaction(origin="server"):
            entry = jobs.get(self.id)
            if isinstance(entry, pycrdt.Map):
                for key, value in fields.items():
                    entry[key] = value
            else:  # new, or a collaborator removed it meanwhile
                jobs[self.id] = pycrdt.Map(
                    {"kind": "render", "format": self._fmt, "stems": self._stems, "progress": 0.0, **fields}
                )
        runner.commit_local_changes()

    async def start(self, status: str = "running") -> None:
        runner = await self._rooms.acquire(self._session_id)
        self._prune(runner)
        self._write(runner, status=status, progress=0.0, startedAt=time.time() * 1000)
        self._last_write = self._loop.time()

    async def running(self) -> None:
        runner = await self._rooms.acquire(self._session_id)
        self._write(runner, status="running")
        self._last_write = self._loop.time()

    def _prune(self, runner: RoomRunner) -> None:
        """Keep the newest finished render jobs only, so the document does not grow forever."""
        doc = runner.room.doc
        jobs = doc.get("jobs", type=pycrdt.Map)
        finished: list[tuple[float, str]] = []
        for jid, raw in (jobs.to_py() or {}).items():
            if isinstance(raw, dict) and raw.get("kind") == "render" and raw.get("status") not in _ACTIVE:
                ended = raw.get("finishedAt")
                finished.append((float(ended) if isinstance(ended, int | float) else 0.0, jid))
        finished.sort()
        stale = finished[: max(0, len(finished) - (FINISHED_JOBS_KEPT - 1))]
        if stale:
            with doc.transaction(origin="server"):
                for _, jid in stale:
                    del jobs[jid]

    def progress_threadsafe(self, fraction: float) -> None:
        """The render's progress callback (called from the worker thread)."""
        self._loop.call_soon_threadsafe(self._progress, fraction)

    def _progress(self, fraction: float) -> None:
        now = self._loop.time()
        if self._finished or now - self._last_write < JOB_UPDATE_INTERVAL_S:
            return
        runner = self._rooms.get_loaded(self._session_id)
        if runner is None:
            # Unloaded while idle: load it again (the job's entry was persisted with it).
            if not self._reloading:
                self._reloading = True
                self._loop.create_task(self._reload())
            return
        self._last_write = now
        self._write(runner, progress=round(fraction, 4))

    async def _reload(self) -> None:
        try:
            await self._rooms.acquire(self._session_id)
        except Exception:
            log.exception("render job %s: reloading session %s failed", self.id, self._session_id)
        finally:
            self._reloading = False

    async def finish(self, status: str, error: str | None = None) -> None:
        self._finished = True
        fields: dict[str, Any] = {"status": status, "finishedAt": time.time() * 1000}
        if status == "done":
            fields["progress"] = 1.0
        if error is not None:
            fields["error"] = error[:300]
        runner = await self._rooms.acquire(self._session_id)
        self._write(runner, **fields)
        await runner.drain()


async def _load_assets(svc: Services, session_id: str, doc: SessionDocument) -> dict[str, np.ndarray]:
    """The samples of every asset the document uses that belongs to this session."""
    wanted = {clip.asset_id for track in doc.tracks for clip in track.clips}
    assets: dict[str, np.ndarray] = {}
    for asset_id in sorted(wanted):
        record = await svc.store.get_asset(asset_id) if len(asset_id) <= 64 else None
        # An id from another session is treated as missing: a document cannot reach other
        # sessions' audio.
        if record is None or record.session_id != session_id or record.deleted_at is not None:
            continue
        if record.mime == "audio/midi" or record.purged_at is not None:
            # MIDI clips are silent in the server's mix (no instrument yet); a purged source
            # has no audio left. Neither is an error worth a warning per render.
            continue
        try:
            assets[asset_id] = await svc.assets.samples(record)
        except (BlobNotFound, BlobIntegrityError, MediaError) as exc:
            # Rendered as silence (the graph reports the missing asset), like a deleted one.
            log.warning("mixdown of session %s: asset %s unreadable: %s", session_id, asset_id, exc)
    return assets


def _render_slots(request: Request, limit: int) -> asyncio.Semaphore:
    """The app's limit on concurrent renders (created on first use, on the app's loop)."""
    slots: asyncio.Semaphore | None = getattr(request.app.state, "render_slots", None)
    if slots is None:
        slots = asyncio.Semaphore(max(1, limit))
        request.app.state.render_slots = slots
    return slots


def _disposition(title: str, extension: str) -> str:
    filename = safe_filename(title, "mixdown") + extension
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def mixdown(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    params = request.query_params
    fmt = params.get("format", "wav")
    if fmt not in MIXDOWN_FORMATS:
        raise errors.ValidationFailed(f"format: must be one of {', '.join(MIXDOWN_FORMATS)}")
    spec = MIXDOWN_FORMATS[fmt]
    if not spec.available:
        raise errors.ValidationFailed(
            f"format: this server's FFmpeg cannot encode {fmt}", code="unsupported_format"
        )
    start = _seconds(params, "start") or 0.0
    end = _seconds(params, "end")
    dither = _flag(params, "dither")
    stems = _flag(params, "stems")

    session_id = access.session.id
    runner = await svc.rooms.acquire(session_id)
    doc = read_document(runner.room.doc)
    assets = await _load_assets(svc, session_id, doc)
    try:
        plan = plan_render(
            doc, lambda a: assets[a].shape[-1] if a in assets else None, start_s=start, end_s=end
        )
    except ValueError as exc:
        raise errors.ValidationFailed(str(exc), code="invalid_range") from exc
    limit = svc.settings.max_render_s
    if plan.duration_s > limit:
        raise errors.ValidationFailed(
            f"the range is {plan.duration_s:.1f} s long; mixdowns are limited to {limit:g} s",
            code="range_too_long",
        )
    if plan.frames == 0:
        raise errors.ValidationFailed(
            "nothing to render: the range is empty (no clips after start; pass end= to render silence)",
            code="empty_range",
        )

    extension = ".zip" if stems else spec.extension
    job = RenderJob(svc.rooms, session_id, fmt=fmt, stems=stems)
    slots = _render_slots(request, svc.settings.max_concurrent_renders)
    queued = slots.locked()
    await job.start("queued" if queued else "running")
    try:
        await slots.acquire()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(job.finish("cancelled"))
        raise
    loop = asyncio.get_running_loop()
    stream = ByteStream(loop, STREAM_QUEUE_CHUNKS)

    def produce() -> BaseException | None:
        try:
            stream_mixdown(
                stream.emit,
                doc,
                assets,
                fmt,
                start_s=start,
                end_s=end,
                dither=dither,
                stems=stems,
                workers=svc.settings.render_workers,
                progress=job.progress_threadsafe,
                cancel=stream.aborted,
            )
        except BaseException as exc:  # handed to the loop, which reports it
            stream.end(exc)
            return exc
        stream.end()
        return None

    producer = loop.run_in_executor(None, produce)

    async def finish(sent_everything: bool) -> None:
        """Stop the render if it still runs, wait for it, file the job, free the slot."""
        stream.abort()
        try:
            error = await producer
            if error is None and sent_everything:
                await job.finish("done")
            elif error is None or isinstance(error, RenderCancelled):
                await job.finish("cancelled")
            else:
                log.error("mixdown of session %s failed", session_id, exc_info=error)
                await job.finish("failed", f"{type(error).__name__}: {error}")
        finally:
            slots.release()

    try:
        if queued:
            await job.running()
        first = await stream.first()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(finish(False))
        raise
    except Exception:
        await finish(False)  # files the error; raising it gives the JSON error response
        raise

    headers = {
        "content-disposition": _disposition(access.session.title, extension),
        "cache-control": "no-store",
    }
    size = streamed_size(fmt, plan.frames, stems=stems)
    if size is not None:
        headers["content-length"] = str(size)
    return ThreadStreamResponse(
        stream, first, finish, media_type=ZIP_MIME if stems else spec.mime, headers=headers
    )


routes = [
    Route("/api/sessions/{session_id}/mixdown", mixdown, methods=["GET"]),
]
