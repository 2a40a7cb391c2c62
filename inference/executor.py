"""Runs queued jobs on a `WorkerPool`: the consumer side of the `JobQueue`, in the server or in
`escenario worker`.

For each delivery it claims the job in the store (`claim_job`: queued → running, fenced by
`attempts`), writes the source audio to a `.npy` file, hands a `Task` to the pool and then
follows the pool's events:

- progress goes to the store at most `PROGRESS_WRITE_S` apart; the returned row carries
  `cancel_requested`, so a cancellation made anywhere reaches the worker within that time;
- a finished task's files become assets (`AssetKind.OUTPUT`) and the job moves running → done
  with their ids in `result`. That move is a compare-and-set on `attempts`: only the first
  attempt to finish writes a result; a loser deletes the assets it made. The server that owns
  the session then lays the result out as tracks (`inference.service`);
- a failure or cancellation moves the job to `failed` / `cancelled`.

The delivery is acknowledged once the job has left `running`. Audio files live under
`work_dir/<job>-<attempt>/` and are removed when the job ends. `notify(job_id)` is called after
every store change, so a server running its own executor mirrors it without waiting for a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persistence.blobs import BlobNotFound
from persistence.encrypted_blobs import BlobIntegrityError
from persistence.ports import AssetKind, AssetRecord, JobKind, JobPriority, JobRecord, JobStatus, Store
from realtime.config import Settings
from realtime.media.decode import SAMPLE_RATE, MediaError
from realtime.media.library import AssetKeys, AssetLibrary

from .pool import WorkerPool
from .queue import Delivery, JobQueue, QueueClosed, QueueError, claim_job, dead_letter_job
from .tasks import save_audio
from .worker import Cancelled, Failed, Finished, JobEvent, Progress, Started, Task

log = logging.getLogger(__name__)

PROGRESS_WRITE_S = 0.25
WATCH_INTERVAL_S = 1.0
RECLAIM_IDLE_S = 60.0
STALE_WORK_DIR_S = 24 * 3600.0
MIDI_MIME = "audio/midi"
_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma")


def consumer_name() -> str:
    """This process's name in the queue and in `JobRecord.worker`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def display_name(name: str) -> str:
    """An asset's name without its audio file extension ("take 2.wav" → "take 2")."""
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and f".{ext.lower()}" in _AUDIO_SUFFIXES else name


class JobInputError(Exception):
    """The job cannot run (its source asset is gone, say); the message says why."""


@dataclass(slots=True)
class _Running:
    job: JobRecord
    delivery: Delivery
    work: Path
    last_write: float = float("-inf")
    cancel_sent: bool = False
    submitted: bool = False


class JobExecutor:
    def __init__(
        self,
        *,
        store: Store,
        assets: AssetLibrary,
        queue: JobQueue,
        pool: WorkerPool,
        work_dir: Path,
        consumer: str | None = None,
        notify: Callable[[str], None] | None = None,
        reclaim_idle_s: float = RECLAIM_IDLE_S,
    ) -> None:
        self.store = store
        self.assets = assets
        self.queue = queue
        self.pool = pool
        self.work_dir = Path(work_dir)
        self.consumer = consumer or consumer_name()
        self._notify = notify or (lambda _job_id: None)
        self.reclaim_idle_s = reclaim_idle_s
        self._running: dict[str, _Running] = {}
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def on_pool_event(self, event: JobEvent) -> None:
        """The pool's `on_event` (called on the loop): handled in order by one task."""
        self._events.put_nowait(event)

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(_remove_stale, self.work_dir, STALE_WORK_DIR_S)
        self._tasks = [
            asyncio.create_task(self._consume(), name="inference-consume"),
            asyncio.create_task(self._handle_events(), name="inference-events"),
            asyncio.create_task(self._watch(), name="inference-watch"),
        ]

    async def close(self) -> None:
        """Stop taking jobs; jobs still running go back to `queued` for the next start (or
        another worker) to run again."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for job_id, running in list(self._running.items()):
            await self.store.transition_job(
                job_id,
                {JobStatus.RUNNING},
                JobStatus.QUEUED,
                expect_attempts=running.job.attempts,
                progress=0.0,
            )
            with contextlib.suppress(QueueError):
                await self.queue.nack(running.delivery, requeue=True)
            await asyncio.to_thread(shutil.rmtree, running.work, True)
            self._notify(job_id)
        self._running.clear()

    @property
    def running(self) -> list[str]:
        return list(self._running)

    def cancel(self, job_id: str) -> bool:
        """Ask the pool to stop a job this executor runs (the store already says so)."""
        running = self._running.get(job_id)
        if running is None:
            return False
        running.cancel_sent = True
        if running.submitted:
            self.pool.cancel(job_id)
        return True  # not submitted yet: `_take` sees `cancel_sent` and ends it

    # taking jobs ---------------------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            kinds = await self.pool.wait_capacity()
            try:
                delivery = await self.queue.get(self.consumer, kinds=kinds, timeout_s=1.0)
            except QueueClosed:
                return
            except QueueError:
                log.exception("job queue unavailable; retrying")
                await asyncio.sleep(2.0)
                continue
            if delivery is None:
                continue
            try:
                await self._take(delivery)
            except Exception:
                log.exception("job %s: could not be started", delivery.job_id)
                await self._end(delivery.job_id, JobStatus.FAILED, "internal error while starting the job")

    async def _take(self, delivery: Delivery) -> None:
        job = await claim_job(self.store, delivery, self.consumer, now=time.time())
        if job is None:  # finished, cancelled or running elsewhere: nothing to do
            await self.queue.ack(delivery)
            self._notify(delivery.job_id)
            return
        work = self.work_dir / f"{job.id}-{job.attempts}"
        running = _Running(job, delivery, work)
        self._running[job.id] = running
        self._notify(job.id)
        try:
            task = await self._prepare(job, work)
        except JobInputError as exc:
            await self._end(job.id, JobStatus.FAILED, str(exc))
            return
        if self._running.get(job.id) is not running:
            return  # it ended while its input was written
        if running.cancel_sent:  # cancelled while its input was written
            await self._end(job.id, JobStatus.CANCELLED, None)
            return
        running.submitted = True
        self.pool.submit(task)

    async def _prepare(self, job: JobRecord, work: Path) -> Task:
        source = await self._source(job, job.asset_id, "source audio")
        inputs = {"audio": str(work / "input.npy")}
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(save_audio, work / "input.npy", await self._samples(source, "source audio"))
        params = dict(job.params)
        reference_id = params.get("reference_asset_id")
        if job.kind is JobKind.MASTER and isinstance(reference_id, str):
            reference = await self._source(job, reference_id, "reference audio")
            inputs["reference"] = str(work / "reference.npy")
            samples = await self._samples(reference, "reference audio")
            await asyncio.to_thread(save_audio, work / "reference.npy", samples)
        return Task(
            job_id=job.id,
            kind=job.kind.value,
            params=params,
            inputs=inputs,
            out_dir=str(work / "out"),
            interactive=job.priority is JobPriority.INTERACTIVE,
        )

    async def _source(self, job: JobRecord, asset_id: str | None, what: str) -> AssetRecord:
        record = await self.store.get_asset(asset_id) if asset_id else None
        if record is None or record.session_id != job.session_id:
            raise JobInputError(f"the {what} was deleted before the job started")
        if record.mime == MIDI_MIME:
            raise JobInputError(f"the {what} is a MIDI file, not audio")
        return record

    async def _samples(self, record: AssetRecord, what: str) -> Any:
        try:
            return await self.assets.samples(record)
        except (BlobNotFound, BlobIntegrityError, MediaError) as exc:
            raise JobInputError(f"the {what} cannot be read: {exc}") from exc

    # events from the pool --------------------------------------------------------------------
    async def _handle_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._handle(event)
            except Exception:
                log.exception("job %s: handling %s failed", event.job_id, type(event).__name__)
                with contextlib.suppress(Exception):
                    await self._end(event.job_id, JobStatus.FAILED, "internal error while saving the result")

    async def _handle(self, event: JobEvent) -> None:
        running = self._running.get(event.job_id)
        if running is None:
            return
        if isinstance(event, Started):
            return
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - running.last_write < PROGRESS_WRITE_S:
                return
            running.last_write = now
            await self._heartbeat(running, progress=min(event.fraction, 0.999))
            self._notify(running.job.id)
        elif isinstance(event, Finished):
            await self._finish(running, event.result)
        elif isinstance(event, Failed):
            await self._end(running.job.id, JobStatus.FAILED, event.error)
        elif isinstance(event, Cancelled):
            await self._end(running.job.id, JobStatus.CANCELLED, None)

    async def _heartbeat(self, running: _Running, progress: float | None = None) -> None:
        """Write progress (or just "still alive"), fenced on this attempt, and act on the row."""
        job = running.job
        record = await self.store.transition_job(
            job.id, {JobStatus.RUNNING}, JobStatus.RUNNING, expect_attempts=job.attempts, progress=progress
        )
        if record is None:
            if self._running.get(job.id) is not running:
                return  # it ended here meanwhile
            # The row moved on without us (another attempt took the job over, or it was ended
            # elsewhere): stop working on it and leave the row alone.
            log.warning("job %s: attempt %d is no longer current; stopping it", job.id, job.attempts)
            self._running.pop(job.id, None)
            self.pool.cancel(job.id)
            await self._release(running)
        elif record.cancel_requested and not running.cancel_sent:
            self.cancel(job.id)

    async def _end(self, job_id: str, status: JobStatus, error: str | None) -> None:
        running = self._running.pop(job_id, None)
        if running is None:
            return
        await self.store.transition_job(
            job_id,
            {JobStatus.RUNNING},
            status,
            expect_attempts=running.job.attempts,
            error=error[:1000] if error else None,
            finished_at=time.time(),
        )
        await self._release(running)

    async def _release(self, running: _Running) -> None:
        with contextlib.suppress(QueueError):
            await self.queue.ack(running.delivery)
        await asyncio.to_thread(shutil.rmtree, running.work, True)
        self._notify(running.job.id)

    async def _finish(self, running: _Running, result: dict[str, Any]) -> None:
        job = running.job
        source = await self.store.get_asset(job.asset_id) if job.asset_id else None
        if source is None:
            await self._end(job.id, JobStatus.FAILED, "the source audio was deleted while the job ran")
            return
        made: list[AssetRecord] = []
        try:
            outcome = await self._store_outputs(job, source, result, made)
        except BaseException as exc:
            for record in made:
                await self.assets.delete(record)
            if isinstance(exc, Exception):
                log.exception("job %s: storing its output failed", job.id)
                await self._end(job.id, JobStatus.FAILED, f"could not store the result: {exc}")
                return
            raise
        self._running.pop(job.id, None)
        finished = await self.store.transition_job(
            job.id,
            {JobStatus.RUNNING},
            JobStatus.DONE,
            expect_attempts=job.attempts,
            progress=1.0,
            result=outcome,
            finished_at=time.time(),
        )
        if finished is None:
            # Cancelled meanwhile, or another attempt took over: its result stands, not ours.
            log.info("job %s: finished, but its row had moved on; dropping this attempt's output", job.id)
            for record in made:
                await self.assets.delete(record)
        else:
            await self.store.mark_asset_processed(source.id, time.time())
        await self._release(running)

    async def _store_outputs(
        self, job: JobRecord, source: AssetRecord, result: dict[str, Any], made: list[AssetRecord]
    ) -> dict[str, Any]:
        base = display_name(source.name)
        if job.kind is JobKind.SEPARATE:
            stems: dict[str, str] = {}
            for stem, path in result["stems"].items():
                record, _ = await self.assets.ingest(
                    Path(path),
                    session_id=job.session_id,
                    uploader_id=job.created_by,
                    name=f"{base} — {stem}",
                    kind=AssetKind.OUTPUT,
                )
                made.append(record)
                stems[stem] = record.id
            return {"model": result.get("model"), "stems": stems, "frames": result.get("frames")}
        if job.kind is JobKind.TRANSCRIBE:
            record = await self._store_midi(job, Path(result["midi"]), f"{base} — MIDI", source)
            made.append(record)
            return {"midi_asset_id": record.id, "notes": int(result.get("count", 0))}
        record, _ = await self.assets.ingest(
            Path(result["audio"]),
            session_id=job.session_id,
            uploader_id=job.created_by,
            name=f"{base} — mastered",
            kind=AssetKind.OUTPUT,
        )
        made.append(record)
        return {"asset_id": record.id, "report": result.get("report", {})}

    async def _store_midi(self, job: JobRecord, path: Path, name: str, source: AssetRecord) -> AssetRecord:
        """A standard MIDI file as an asset: the blob as is, its length that of the source."""
        import secrets

        asset_id = secrets.token_hex(16)
        key = f"asset-{asset_id}.mid"
        assert key not in AssetKeys.of(asset_id).all()  # deletion removes it as the record's blob_key
        size = await self.assets.blobs.put(key, path)
        try:
            return await self.store.create_asset(
                asset_id=asset_id,
                session_id=job.session_id,
                uploader_id=job.created_by,
                name=name,
                kind=AssetKind.OUTPUT,
                mime=MIDI_MIME,
                duration_s=source.duration_s,
                sample_rate=SAMPLE_RATE,
                channels=1,
                frames=source.frames,
                size_bytes=size,
                blob_key=key,
            )
        except BaseException:
            await self.assets.blobs.delete(key)
            raise

    # housekeeping ------------------------------------------------------------------------------
    async def _watch(self) -> None:
        """Keep deliveries alive, pass cancellations on, and take back dead consumers' jobs."""
        last_reclaim = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                for job_id, running in list(self._running.items()):
                    await self.queue.touch(running.delivery)
                    if self._running.get(job_id) is running:
                        await self._heartbeat(running)
                if time.monotonic() - last_reclaim >= self.reclaim_idle_s / 4:
                    last_reclaim = time.monotonic()
                    for delivery in await self.queue.reclaim(idle_s=self.reclaim_idle_s):
                        if delivery.dead_letter:
                            await dead_letter_job(self.store, delivery, now=time.time())
                            self._notify(delivery.job_id)
            except QueueClosed:
                return
            except Exception:
                log.exception("inference housekeeping failed")


def _remove_stale(folder: Path, older_than_s: float) -> None:
    """Work folders that a crash left behind (a live job's folder is always fresh)."""
    if not folder.is_dir():
        return
    cutoff = time.time() - older_than_s
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


async def run_standalone(settings: Settings, stop: asyncio.Event) -> None:
    """`escenario worker`: serve the Redis job queue with a local pool until `stop` is set.

    Needs what the servers use: their database (`settings.database_url`) and their blob store
    and keyring: the shared data directory (`settings.data_dir`), or their S3 bucket
    (`settings.blob_url`) with a copy of their keyring (`settings.data_key`), since it reads
    the source audio and writes the results' assets itself.
    """
    from persistence.encrypted_blobs import open_encrypted_blobs
    from persistence.factory import open_store

    from .pool import PoolConfig
    from .queue import open_queue

    if not settings.redis_url:
        raise ValueError("a worker needs --redis-url: without Redis the queue lives inside `escenario serve`")
    if settings.blob_url and not settings.data_key:
        # A keyring made here would encrypt results that the servers cannot read.
        raise ValueError(
            "a worker with --blob-url needs ESCENARIO_DATA_KEY: the path of a copy of the servers' keyring"
        )
    queue = open_queue(settings.redis_url, prefix=settings.job_queue_prefix)
    ping = getattr(queue, "ping", None)
    if ping is not None:
        await ping()
    store = await open_store(settings.resolved_database_url, data_dir=settings.data_dir)
    try:
        blobs = await open_encrypted_blobs(settings.data_dir, settings.data_key, settings.blob_url)
        assets = AssetLibrary(
            store,
            blobs,
            tmp_dir=settings.data_dir / "tmp",
            cache_bytes=settings.asset_cache_bytes,
            max_duration_s=settings.max_asset_duration_s,
        )
        executor: JobExecutor | None = None

        def on_event(event: JobEvent) -> None:
            assert executor is not None
            executor.on_pool_event(event)

        pool = WorkerPool(
            PoolConfig(
                models_dir=str(settings.resolved_models_dir),
                device=settings.inference_device,
                cpu_workers=max(1, settings.inference_workers),
                threads=settings.inference_threads,
                max_batch=settings.inference_max_batch,
                precision=settings.inference_precision,
            ),
            on_event,
        )
        executor = JobExecutor(
            store=store, assets=assets, queue=queue, pool=pool, work_dir=settings.data_dir / "jobs"
        )
        await pool.start()
        await executor.start()
        log.info(
            "escenario worker ready",
            extra={
                "consumer": executor.consumer,
                "devices": pool.devices(),
                "queue": settings.job_queue_prefix,
            },
        )
        try:
            await stop.wait()
        finally:
            await executor.close()
            await pool.close()
            await assets.close()
    finally:
        with contextlib.suppress(QueueError):
            await queue.close()
        await store.close()
        log.info("escenario worker stopped")
