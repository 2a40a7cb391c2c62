"""The inference pool: worker processes (started with `spawn`) and which job runs where.

The pool lives on the server's (or `escenario worker`'s) event loop. It keeps the jobs that
wait for a worker, interactive ones first, and hands each to a worker with a free slot:

- a separation job goes to a worker with fewer than `job_slots` separation jobs, preferring
  one that already runs that model, so concurrent jobs share its batches;
- a transcription or mastering job goes to a worker with no other such job (it runs between
  the worker's batches).

One reader thread per worker waits on the worker's event pipe and its process sentinel and
passes events to the loop. A worker that exits (a crash, the kernel's OOM killer, `kill -9`)
fails the jobs it held with "worker crashed (exit code N …)" and is replaced, after a growing
pause if it keeps dying; the process running the pool is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from . import worker as worker_module
from .worker import (
    Cancel,
    Cancelled,
    Failed,
    Finished,
    JobEvent,
    Progress,
    Ready,
    Started,
    Stop,
    Task,
    WorkerConfig,
)

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
RESTART_BACKOFF_S = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0  # a worker that lived this long resets the back-off
STOP_GRACE_S = 5.0
SOLO_KINDS = ("transcribe", "master")  # run one at a time per worker, between batches


def detect_gpus() -> list[str]:
    """CUDA devices visible to this machine, without importing torch in the server.

    `CUDA_VISIBLE_DEVICES` wins when set; otherwise the NVIDIA driver's `/proc` entries are
    counted. A worker still checks that torch can use its device and says so when it cannot.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return [f"cuda:{i}" for i in range(len(ids))]
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    return [f"cuda:{i}" for i in range(count)]


_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]{1,2})?)$")


def auto_threads(device: str, sched_idle: bool, workers: int) -> int:
    """Math threads per worker when none are configured.

    A CPU worker in the SCHED_IDLE class runs only on CPU time that nothing else wants, so it
    may use every core: the jam's tick, the event loop and the other server threads always go
    first (measured in benchmarks/separation.py: the realtime figures do not move between one
    and two threads on 2 cores, and throughput grows 1.5x). A worker in the normal class leaves a
    core to the realtime path. A GPU worker's host side needs one thread.
    """
    if device != "cpu":
        return 1
    cores = os.cpu_count() or 1
    usable = cores if sched_idle else max(1, cores - 1)
    return max(1, usable // max(1, workers))


def check_pool_settings(*, device: str, workers: int, threads: int, max_batch: int, precision: str) -> None:
    """`ValueError` naming the setting that is wrong (checked before any process starts)."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"inference device must be auto, cpu or cuda:N, got {device!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"inference precision must be fp32 or bf16, got {precision!r}")
    if workers < 0:
        raise ValueError(f"inference workers must be 0 or more, got {workers}")
    if threads < 0:
        raise ValueError(f"inference threads must be 0 (automatic) or more, got {threads}")
    if max_batch < 0:
        raise ValueError(f"inference max batch must be 0 (automatic) or more, got {max_batch}")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """`device`: "auto" (one worker per GPU, else `cpu_workers` CPU workers), "cpu" or "cuda:N"."""

    models_dir: str
    device: str = "auto"
    cpu_workers: int = 1
    threads: int = 0  # 0: auto_threads()
    max_batch: int = 0  # 0: 1 on a CPU (batching does not pay there), 8 on a GPU
    precision: str = "fp32"
    # Separation jobs one worker runs at once (their segments share batches); 0: max_batch.
    job_slots: int = 0
    nice: int = 10
    # CPU workers run in Linux's SCHED_IDLE class (see `WorkerConfig.sched_idle`); GPU workers
    # keep the normal class, so that feeding the GPU is not starved by a busy server.
    sched_idle_cpu: bool = True

    def worker_configs(self) -> list[WorkerConfig]:
        if self.device == "auto":
            devices = detect_gpus() or ["cpu"] * max(1, self.cpu_workers)
        elif self.device == "cpu":
            devices = ["cpu"] * max(1, self.cpu_workers)
        else:
            devices = [self.device]
        return [
            WorkerConfig(
                models_dir=self.models_dir,
                device=device,
                threads=self.threads or auto_threads(device, self.sched_idle_cpu, len(devices)),
                max_batch=self.max_batch or (1 if device == "cpu" else 8),
                precision=self.precision,
                nice=self.nice,
                sched_idle=self.sched_idle_cpu and device == "cpu",
            )
            for device in devices
        ]


@dataclass(eq=False, slots=True)
class _Worker:
    index: int
    config: WorkerConfig
    process: BaseProcess
    commands: Connection
    started_at: float
    jobs: dict[str, Task] = field(default_factory=dict)
    ready: Ready | None = None
    exited: bool = False

    @property
    def separations(self) -> int:
        return sum(1 for t in self.jobs.values() if t.kind == "separate")

    @property
    def solos(self) -> int:
        return sum(1 for t in self.jobs.values() if t.kind != "separate")

    def runs_model(self, model: str) -> bool:
        return any(t.kind == "separate" and t.params.get("model") == model for t in self.jobs.values())

    def send(self, command: Task | Cancel | Stop) -> bool:
        try:
            self.commands.send(command)
        except (OSError, ValueError):  # the worker is gone; its reader thread reports it
            return False
        return True


class WorkerPool:
    """Worker processes and the jobs waiting for them. All methods run on the pool's loop."""

    def __init__(self, config: PoolConfig, on_event: Callable[[JobEvent], None]) -> None:
        self.config = config
        self._on_event = on_event
        self._configs = config.worker_configs()
        self._workers: list[_Worker | None] = [None] * len(self._configs)
        self._crashes = [0] * len(self._configs)
        self._pending: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._restarts: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Event()
        self._ready_changed = asyncio.Event()

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for index in range(len(self._configs)):
            await self._spawn(index)
        self._capacity.set()

    async def _spawn(self, index: int) -> None:
        config = self._configs[index]
        commands_out, commands_in = _SPAWN.Pipe(duplex=False)
        events_out, events_in = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=worker_module.main,
            args=(config, commands_out, events_in),
            name=f"escenario-inference-{index}",
            daemon=True,
        )
        # Starting a spawned interpreter blocks for a moment: keep it off the loop.
        await asyncio.to_thread(process.start)
        commands_out.close()
        events_in.close()
        handle = _Worker(index, config, process, commands_in, time.monotonic())
        self._workers[index] = handle
        threading.Thread(
            target=self._read_events, args=(handle, events_out), name=f"inference-events-{index}", daemon=True
        ).start()
        log.info("inference worker %d started (pid %s, %s)", index, process.pid, config.device)

    async def close(self) -> None:
        """Stop every worker. Jobs still queued or running are dropped without events."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        self._pending.clear()
        workers = [w for w in self._workers if w is not None]
        for w in workers:
            w.send(Stop())
        await asyncio.to_thread(_join_all, [w.process for w in workers], STOP_GRACE_S)
        for w in workers:
            with contextlib.suppress(OSError):
                w.commands.close()

    # what callers see ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._configs)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w is not None and w.process.pid is not None]

    def worker_pid(self, job_id: str) -> int | None:
        """The pid of the worker running `job_id` (None while it waits or after it ended)."""
        for w in self._workers:
            if w is not None and job_id in w.jobs:
                return w.process.pid
        return None

    async def wait_ready(self) -> list[Ready]:
        """Wait until every worker has started (its models load later, on first use)."""
        while not all(w is not None and w.ready is not None for w in self._workers):
            self._ready_changed.clear()
            await self._ready_changed.wait()
        return [w.ready for w in self._workers if w is not None and w.ready is not None]

    def devices(self) -> list[str]:
        return [c.device for c in self._configs]

    def free_kinds(self) -> set[str]:
        """The kinds of job that would start at once; empty while anything waits for a slot."""
        if self._pending:
            return set()
        kinds: set[str] = set()
        live = [w for w in self._workers if w is not None and not w.exited]
        if any(w.separations < self._slots() for w in live):
            kinds.add("separate")
        if any(w.solos < 1 for w in live):
            kinds.update(SOLO_KINDS)
        return kinds

    def has_capacity(self) -> bool:
        return bool(self.free_kinds())

    async def wait_capacity(self) -> set[str]:
        """Wait until some kind of job could start at once; returns those kinds."""
        while not (kinds := self.free_kinds()):
            self._capacity.clear()
            await self._capacity.wait()
        return kinds

    def submit(self, task: Task) -> None:
        self._pending.append((0 if task.interactive else 1, next(self._seq), task))
        self._pending.sort(key=lambda p: (p[0], p[1]))
        self._dispatch()

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (a `Cancelled` event follows at once) or ask its worker to stop it.

        False if the pool does not hold the job.
        """
        for i, (_, _, task) in enumerate(self._pending):
            if task.job_id == job_id:
                del self._pending[i]
                self._emit(Cancelled(job_id))
                return True
        for w in self._workers:
            if w is not None and job_id in w.jobs:
                w.send(Cancel(job_id))
                return True
        return False

    # dispatch -------------------------------------------------------------------------------
    def _slots(self) -> int:
        return self.config.job_slots or max(1, max(c.max_batch for c in self._configs))

    def _pick(self, task: Task) -> _Worker | None:
        live = [w for w in self._workers if w is not None and not w.exited]
        if task.kind == "separate":
            model = task.params.get("model")
            free = [w for w in live if w.separations < self._slots()]
            # Join a worker already running this model: its batches have room for our segments.
            free.sort(key=lambda w: (not w.runs_model(str(model)), len(w.jobs), w.index))
        else:
            free = [w for w in live if w.solos < 1]
            free.sort(key=lambda w: (len(w.jobs), w.index))
        return free[0] if free else None

    def _dispatch(self) -> None:
        if self._closing:
            return
        waiting: list[tuple[int, int, Task]] = []
        for entry in self._pending:
            target = self._pick(entry[2])
            if target is None:
                waiting.append(entry)
                continue
            target.jobs[entry[2].job_id] = entry[2]
            if not target.send(entry[2]):
                del target.jobs[entry[2].job_id]
                waiting.append(entry)
        self._pending = waiting
        if self.has_capacity():
            self._capacity.set()

    # events from workers (reader threads → loop) -------------------------------------------
    def _read_events(self, handle: _Worker, events: Connection) -> None:
        sentinel = handle.process.sentinel
        try:
            while True:
                ready = wait([events, sentinel])
                if events in ready:
                    try:
                        message = events.recv()
                    except (EOFError, OSError):
                        break
                    self._call(self._on_message, handle, message)
                    continue
                # The process ended: whatever it sent before dying is still in the pipe.
                with contextlib.suppress(EOFError, OSError):
                    while events.poll():
                        self._call(self._on_message, handle, events.recv())
                break
        finally:
            handle.process.join()
            with contextlib.suppress(OSError):
                events.close()
            self._call(self._on_exit, handle, handle.process.exitcode)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop already closed
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_message(self, handle: _Worker, message: object) -> None:
        if self._closing:
            return
        if isinstance(message, Ready):
            handle.ready = message
            self._ready_changed.set()
            if message.note:
                log.warning("inference worker %d: %s", handle.index, message.note)
            return
        if not isinstance(message, Started | Progress | Finished | Failed | Cancelled):
            log.warning("inference worker %d sent %r", handle.index, message)
            return
        job_id = message.job_id
        if job_id not in handle.jobs:
            return  # a job the pool already gave up on (cancelled while it waited, say)
        if isinstance(message, Finished | Failed | Cancelled):
            del handle.jobs[job_id]
            self._emit(message)
            self._dispatch()
            return
        self._emit(message)

    def _on_exit(self, handle: _Worker, exitcode: int | None) -> None:
        handle.exited = True
        if self._closing or self._workers[handle.index] is not handle:
            return
        lived = time.monotonic() - handle.started_at
        self._crashes[handle.index] = 1 if lived >= STABLE_AFTER_S else self._crashes[handle.index] + 1
        reason = crash_reason(exitcode)
        log.error("inference worker %d (pid %s) %s", handle.index, handle.process.pid, reason)
        for job_id in list(handle.jobs):
            del handle.jobs[job_id]
            self._emit(Failed(job_id, reason))
        delay = RESTART_BACKOFF_S[min(self._crashes[handle.index] - 1, len(RESTART_BACKOFF_S) - 1)]
        restart = asyncio.ensure_future(self._restart(handle.index, delay))
        self._restarts.add(restart)
        restart.add_done_callback(self._restarts.discard)

    async def _restart(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closing:
            return
        try:
            await self._spawn(index)
        except Exception:
            log.exception("inference worker %d could not be restarted", index)
            return
        self._dispatch()

    def _emit(self, event: JobEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("inference pool: handling %r failed", event)


def crash_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = "; the system may have run out of memory" if exitcode == -signal.SIGKILL else ""
        return f"worker crashed (exit code {exitcode}: {name}{hint})"
    return f"worker crashed (exit code {exitcode})"


def _join_all(processes: Sequence[BaseProcess], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join(5)
