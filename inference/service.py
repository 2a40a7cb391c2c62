"""The server's side of inference jobs: create them, queue them, mirror them into the session.

`JobService` is built by the composition root. It

- creates a job row (the store is the truth) and its entry in the session document's `jobs`
  map, then puts the job on the `JobQueue` (in-process by default, Redis Streams with
  `--redis-url`);
- runs a local `JobExecutor` on a `WorkerPool` when `inference_workers` > 0, started on the
  first job (so a server that never runs one never spawns a worker);
- mirrors every job it watches from the store into the document: status, progress (at most
  `DOC_PROGRESS_INTERVAL_S` apart, and at least every `DOC_HEARTBEAT_S` while running, with the
  progress extrapolated between a slow model's coarse steps), error and times. Local jobs are
  mirrored the moment the executor changes them; jobs run by `escenario worker`s elsewhere are
  polled every `POLL_INTERVAL_S`;
- lays a finished job's result out as tracks (`inference.placement`) in the same transaction
  that marks the entry `done`, so it happens once even across restarts;
- at startup, settles jobs a dead server left `running` (`Store.recover_jobs`: re-queued, or
  failed once they have used up their attempts) and queues the queued ones again (with
  Redis: the re-queued ones and queued rows older than `STRANDED_QUEUED_S`, which may be in
  no stream; `inference.queue.recover_shared_queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persistence.ports import AssetRecord, JobKind, JobPriority, JobRecord, JobStatus, Store
from realtime.config import Settings
from realtime.media.library import AssetLibrary
from realtime.session.hub import RoomManager, RoomRunner

from . import placement
from .executor import MIDI_MIME, JobExecutor, display_name
from .pool import PoolConfig, WorkerPool, check_pool_settings
from .queue import (
    DEFAULT_MAX_DELIVERIES,
    JobQueue,
    QueueError,
    open_queue,
    recover_shared_queue,
    resubmit_queued,
)

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
QUEUED_POLL_EVERY = 8  # polls: queued jobs are looked at every 2 s
DOC_PROGRESS_INTERVAL_S = 0.25
DOC_HEARTBEAT_S = 0.45
MAX_ATTEMPTS = DEFAULT_MAX_DELIVERIES
# With Redis: a running job whose row nobody touched this long has lost its worker. Executors
# write a heartbeat to every running job's row each `executor.WATCH_INTERVAL_S` (1 s) from
# their event loop, whatever the worker process is doing (loading a model, one long batch),
# so only a dead or cut-off worker stays silent this long.
RECOVER_IDLE_S = 120.0
# With Redis: a queued row untouched this long may be in no stream (its server died between
# `create_job` and `put`); startup puts it again (a duplicate is harmless).
STRANDED_QUEUED_S = 60.0
INFERENCE_KINDS = tuple(k.value for k in JobKind)


class NoWorkers(QueueError):
    """Nothing would ever run a job submitted here."""


@dataclass(slots=True)
class _Mirror:
    """What the document shows of one job, to write only what changed."""

    session_id: str
    status: str | None = None
    shown: float = 0.0  # the progress last written
    real: float = 0.0  # the last progress the store reported
    real_at: float = 0.0  # when it changed (monotonic)
    jump: float = 0.0  # the size of the last real step
    written_at: float = -math.inf


class JobService:
    def __init__(self, *, settings: Settings, store: Store, rooms: RoomManager, assets: AssetLibrary) -> None:
        check_pool_settings(
            device=settings.inference_device,
            workers=settings.inference_workers,
            threads=settings.inference_threads,
            max_batch=settings.inference_max_batch,
            precision=settings.inference_precision,
        )
        self.settings = settings
        self.store = store
        self.rooms = rooms
        self.assets = assets
        self.queue: JobQueue = open_queue(settings.redis_url, prefix=settings.job_queue_prefix)
        self.pool: WorkerPool | None = None
        self.executor: JobExecutor | None = None
        self._executor_lock = asyncio.Lock()
        self._mirrors: dict[str, _Mirror] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False
        # Called with each job a user submits, once it is stored (the app audits job starts).
        self.on_submitted: Callable[[JobRecord], Awaitable[None]] | None = None

    @property
    def models_dir(self) -> Path:
        return self.settings.resolved_models_dir

    @property
    def local_workers(self) -> bool:
        return self.settings.inference_workers > 0

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.redis_url:
            ping = getattr(self.queue, "ping", None)
            if ping is not None:
                await ping()
            requeued, ended, queued = await recover_shared_queue(
                self.store,
                self.queue,
                max_attempts=MAX_ATTEMPTS,
                idle_s=RECOVER_IDLE_S,
                stranded_s=STRANDED_QUEUED_S,
            )
        else:
            # Nothing can be running: the pool died with the previous process.
            requeued, ended = await self.store.recover_jobs(MAX_ATTEMPTS)
            queued = await resubmit_queued(self.store, self.queue)
        if requeued or ended:
            log.warning(
                "inference jobs interrupted by a restart",
                extra={"requeued": len(requeued), "ended": len(ended)},
            )
        active = await self.store.list_jobs_by_status({JobStatus.QUEUED, JobStatus.RUNNING}, limit=10_000)
        for job_id in {*ended, *(j.id for j in active)}:
            record = await self.store.get_job(job_id)
            if record is not None:
                self._watch(record)
        self._loop_task = asyncio.create_task(self._mirror_loop(), name="inference-mirror")
        if queued and self.local_workers:
            await self.ensure_executor()

    async def close(self) -> None:
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.executor is not None:
            await self.executor.close()
        if self.pool is not None:
            await self.pool.close()
        # The last changes (jobs the executor put back in the queue) reach the documents.
        with contextlib.suppress(Exception):
            await self._sync_dirty()
        with contextlib.suppress(QueueError):
            await self.queue.close()

    async def ensure_executor(self) -> JobExecutor:
        """The local executor and its worker processes, started on first use."""
        async with self._executor_lock:
            if self.executor is not None:
                return self.executor
            s = self.settings
            executor: JobExecutor | None = None

            def on_event(event: Any) -> None:
                assert executor is not None
                executor.on_pool_event(event)

            pool = WorkerPool(
                PoolConfig(
                    models_dir=str(self.models_dir),
                    device=s.inference_device,
                    cpu_workers=s.inference_workers,
                    threads=s.inference_threads,
                    max_batch=s.inference_max_batch,
                    precision=s.inference_precision,
                ),
                on_event,
            )
            executor = JobExecutor(
                store=self.store,
                assets=self.assets,
                queue=self.queue,
                pool=pool,
                work_dir=s.data_dir / "jobs",
                notify=self.poke,
            )
            await pool.start()
            await executor.start()
            self.pool, self.executor = pool, executor
            return executor

    # requests from the API -----------------------------------------------------------------------
    async def submit(
        self,
        *,
        kind: JobKind,
        source: AssetRecord,
        user_id: str,
        params: dict[str, Any],
        source_clip: placement.SourceClip | None,
        priority: JobPriority,
    ) -> JobRecord:
        if not self.local_workers and not self.settings.redis_url:
            raise NoWorkers(
                "this server runs no inference workers (inference_workers is 0) and has no "
                "--redis-url for `escenario worker`s to serve"
            )
        params = dict(params)
        params["source"] = (source_clip or placement.SourceClip(None, None, None)).to_json()
        params["source_name"] = display_name(source.name)
        record = await self.store.create_job(
            session_id=source.session_id,
            kind=kind,
            params=params,
            priority=priority,
            asset_id=source.id,
            created_by=user_id,
        )
        if self.on_submitted is not None:
            await self.on_submitted(record)
        self._watch(record)
        await self._sync(record.id)
        try:
            await self.queue.put(record.id, kind.value, priority=priority.value)
        except QueueError as exc:
            await self.store.transition_job(
                record.id,
                {JobStatus.QUEUED},
                JobStatus.FAILED,
                error=f"the job queue is unavailable: {exc}",
                finished_at=time.time(),
            )
            self.poke(record.id)
            raise
        if self.local_workers:
            await self.ensure_executor()
        return await self.store.get_job(record.id) or record

    async def cancel(self, job: JobRecord) -> JobRecord:
        """Queued: cancelled at once. Running: the worker stops after its current batch."""
        record = await self.store.request_job_cancel(job.id) or job
        if record.status is JobStatus.RUNNING and self.executor is not None:
            self.executor.cancel(job.id)
        self.poke(job.id)
        return record

    # mirroring -----------------------------------------------------------------------------------
    def _watch(self, record: JobRecord) -> None:
        if record.id not in self._mirrors:
            self._mirrors[record.id] = _Mirror(record.session_id)
        self.poke(record.id)

    def poke(self, job_id: str) -> None:
        """Mirror this job into its document soon (the executor calls this on every change)."""
        if job_id not in self._mirrors:
            self._mirrors[job_id] = _Mirror("")
        self._dirty.add(job_id)
        self._wake.set()

    async def _mirror_loop(self) -> None:
        ticks = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL_S)
            self._wake.clear()
            if not self._dirty:
                # Nothing told us: poll (jobs run by other machines, and the heartbeat);
                # running jobs every time, waiting ones now and then.
                ticks += 1
                self._dirty.update(
                    job_id
                    for job_id, mirror in self._mirrors.items()
                    if mirror.status != "queued" or ticks % QUEUED_POLL_EVERY == 0
                )
            try:
                await self._sync_dirty()
            except Exception:
                log.exception("mirroring inference jobs failed")
                await asyncio.sleep(POLL_INTERVAL_S)

    async def _sync_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for job_id in dirty:
            try:
                await self._sync(job_id)
            except Exception:
                log.exception("job %s: mirroring into the document failed", job_id)

    async def _sync(self, job_id: str) -> None:
        mirror = self._mirrors.get(job_id)
        if mirror is None:
            return
        record = await self.store.get_job(job_id)
        if record is None:  # its session was deleted
            self._mirrors.pop(job_id, None)
            return
        mirror.session_id = record.session_id
        status = record.status.value
        now = time.monotonic()
        if record.progress != mirror.real:
            mirror.jump = max(0.0, record.progress - mirror.real)
            mirror.real, mirror.real_at = record.progress, now
        fields: dict[str, Any] = {}
        if status != mirror.status:
            fields = _entry_fields(record)
        elif status == "running":
            if now - mirror.written_at < DOC_PROGRESS_INTERVAL_S:
                self._dirty.add(job_id)  # come back for it
                return
            shown = _estimate(mirror, record, now)
            if shown > mirror.shown:
                fields = {"progress": shown}
            elif now - mirror.written_at >= DOC_HEARTBEAT_S:
                # A slow model between steps: say the job is alive all the same.
                fields = {"progress": shown, "updatedAt": _ms(time.time())}
            else:
                return
        else:
            if record.status.finished:
                self._mirrors.pop(job_id, None)
            return
        runner = await self.rooms.acquire(record.session_id)
        if record.status is JobStatus.DONE:
            await self._place(runner, record, fields)
        else:
            doc = runner.room.doc
            with doc.transaction(origin="server"):
                if mirror.status is None:
                    placement.prune_jobs(doc, INFERENCE_KINDS)
                placement.write_job_entry(doc, record.id, fields)
            runner.commit_local_changes()
        mirror.status = status
        mirror.written_at = now
        if "progress" in fields:
            mirror.shown = float(fields["progress"])
        if record.status.finished:
            self._mirrors.pop(job_id, None)

    async def _place(self, runner: RoomRunner, record: JobRecord, fields: dict[str, Any]) -> None:
        """Lay the result out and mark the entry done, in one transaction (once)."""
        doc = runner.room.doc
        if placement.job_entry_status(doc, record.id) == "done":
            return  # laid out before a restart
        result = record.result or {}
        params = record.params
        planned = placement.SourceClip.from_json(params.get("source"))
        base = str(params.get("source_name") or "Audio")
        notes: list[dict[str, Any]] = []
        if record.kind is JobKind.TRANSCRIBE:
            notes = await self._notes(str(result.get("midi_asset_id", "")))
        with doc.transaction(origin="server"):
            if placement.job_entry_status(doc, record.id) == "done":
                return  # laid out by a concurrent sync while the notes loaded
            source = planned
            if record.asset_id is not None:
                source = placement.current_source(doc, record.asset_id, planned)
            name = source.track_name or base
            if record.kind is JobKind.SEPARATE:
                tracks = placement.place_stems(doc, record.id, source, name, dict(result.get("stems") or {}))
            elif record.kind is JobKind.TRANSCRIBE:
                tracks = placement.place_midi(
                    doc, record.id, source, name, str(result.get("midi_asset_id", "")), notes
                )
            else:
                tracks = placement.place_master(doc, record.id, source, name, str(result.get("asset_id", "")))
            placement.write_job_entry(doc, record.id, {**fields, "tracks": tracks})
        runner.commit_local_changes()

    async def _notes(self, asset_id: str) -> list[dict[str, Any]]:
        """The notes of a transcription's MIDI asset (the file is the one record of them)."""
        from .midi import midi_to_notes
        from .tasks import note_json

        record = await self.store.get_asset(asset_id) if asset_id else None
        if record is None or record.mime != MIDI_MIME:
            return []
        data = await self.assets.blobs.get(record.blob_key)
        return [note_json(n) for n in await asyncio.to_thread(midi_to_notes, data)]


def _ms(ts: float | None) -> float | None:
    return None if ts is None else round(ts * 1000.0, 1)


def _entry_fields(record: JobRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "kind": record.kind.value,
        "status": record.status.value,
        "progress": 1.0 if record.status is JobStatus.DONE else round(record.progress, 4),
        "error": record.error,
        "assetId": record.asset_id,
        "createdBy": record.created_by,
        "createdAt": _ms(record.created_at),
        "startedAt": _ms(record.started_at),
        "finishedAt": _ms(record.finished_at),
    }
    model = record.params.get("model")
    if isinstance(model, str):
        fields["model"] = model
    return fields


def _estimate(mirror: _Mirror, record: JobRecord, now: float) -> float:
    """The progress to show: the store's, or between a slow model's steps an extrapolation
    that stays below where the next real step would land."""
    real = record.progress
    shown = max(real, mirror.shown)
    if record.started_at is None or mirror.jump <= 0:
        return round(shown, 4)
    elapsed = max(1e-3, time.time() - record.started_at)
    rate = real / elapsed
    guess = real + rate * (now - mirror.real_at)
    ceiling = min(real + 0.9 * mirror.jump, 0.99)
    return round(max(shown, min(guess, ceiling)), 4)
