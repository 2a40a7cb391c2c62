"""What runs inside one inference worker process (started by `inference.pool` with `spawn`).

The worker talks to its pool over two one-way `multiprocessing` pipes: commands come in
(`Task`, `Cancel`, `Stop`), events go out (`Ready`, `Started`, `Progress`, `Finished`,
`Failed`, `Cancelled`). Audio never crosses them: a task names files (`.npy` inputs in the
data dir) and the results are files the task writes into its `out_dir`.

Scheduling inside the worker:

- every separation job on one model joins that model's `BatchedSeparator`, so segments of
  all of them go through the network together (cross-job batching);
- one transcription or mastering task runs between two batches, so neither kind starves the
  other;
- commands are read between batches: a cancellation drops the job's remaining segments.

Models are loaded on first use and stay resident for the life of the process. The process
lowers its own priority and bounds its math libraries' threads *before* importing them, so the
server's realtime work keeps a core.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks import SeparationRun, TaskRunner

log = logging.getLogger("inference.worker")

PROGRESS_INTERVAL_S = 0.1
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


# -- what the pool and a worker say to each other -----------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How one worker runs: its device, its thread budget and its batching."""

    models_dir: str
    device: str = "cpu"  # "cpu" or "cuda:N"
    threads: int = 1
    max_batch: int = 1
    precision: str = "fp32"  # fp32 | bf16
    nice: int = 10
    # Linux SCHED_IDLE: the worker runs only on CPU time nobody else at normal priority wants,
    # and a waking realtime thread (the jam tick, the sync loop) preempts it at once. A nice
    # value alone does not promise that: the kernel's EEVDF scheduler lets a running niced task
    # finish its slice (about a millisecond), long enough to miss a 2.5 ms jam tick.
    sched_idle: bool = False


@dataclass(frozen=True, slots=True)
class Task:
    """One job for a worker. `inputs` and `out_dir` are paths the worker can read and write."""

    job_id: str
    kind: str  # separate | transcribe | master
    params: Mapping[str, Any]
    inputs: Mapping[str, str]
    out_dir: str
    interactive: bool = True


@dataclass(frozen=True, slots=True)
class Cancel:
    job_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Leave now; jobs in flight are abandoned (the pool's owner re-queues them)."""


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int
    device: str
    note: str = ""
    threads: int = 0  # torch's intra-op threads in the worker


@dataclass(frozen=True, slots=True)
class Started:
    job_id: str


@dataclass(frozen=True, slots=True)
class Progress:
    job_id: str
    fraction: float


@dataclass(frozen=True, slots=True)
class Finished:
    job_id: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    job_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    job_id: str


JobEvent = Started | Progress | Finished | Failed | Cancelled
Command = Task | Cancel | Stop


class _Stopping(Exception):
    """Raised inside a running task when the pool says Stop."""


# -- the process ------------------------------------------------------------------------------


def bound_threads(threads: int, nice: int, *, sched_idle: bool = False) -> None:
    """Lower this process's priority and cap the thread pools of the libraries it will load.

    Threads created later (torch's, onnxruntime's) inherit both the nice value and the
    scheduling class.
    """
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:  # not allowed here (some containers): run at normal priority
            log.warning("inference worker: could not lower its priority")
    if sched_idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            log.warning("inference worker: could not switch to the idle scheduling class")


def main(config: WorkerConfig, commands: Connection, events: Connection) -> None:
    """The worker process's entry point (the target of `multiprocessing.Process`)."""
    bound_threads(config.threads, config.nice, sched_idle=config.sched_idle)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s worker %(process)d %(message)s"
    )
    from .tasks import TaskRunner  # heavy imports (numpy, torch) after the thread caps

    runner = TaskRunner(config)
    worker = _Worker(runner, commands, events)
    try:
        events.send(
            Ready(pid=os.getpid(), device=runner.device, note=runner.device_note, threads=runner.threads)
        )
        worker.run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the pool is gone: nothing left to work for
    finally:
        runner.close()


class _Worker:
    def __init__(self, runner: TaskRunner, commands: Connection, events: Connection) -> None:
        self.runner = runner
        self.commands = commands
        self.events = events
        self.solo: list[tuple[int, int, Task]] = []  # transcribe/master, interactive first
        self.separations: dict[str, SeparationRun] = {}
        self.cancelled: set[str] = set()
        self.stopping = False
        self._seq = itertools.count()
        self._last_progress: dict[str, float] = {}

    # commands ------------------------------------------------------------------------------
    def poll(self, *, block: bool) -> None:
        """Handle every command that has arrived (waiting for one first when `block`)."""
        if block and not self.stopping:
            self.commands.poll(None)
        while not self.stopping and self.commands.poll():
            self.handle(self.commands.recv())

    def handle(self, command: Command) -> None:
        if isinstance(command, Stop):
            self.stopping = True
        elif isinstance(command, Cancel):
            self.cancel(command.job_id)
        elif command.kind == "separate":
            self.start_separation(command)
        else:
            heapq.heappush(self.solo, (0 if command.interactive else 1, next(self._seq), command))

    def cancel(self, job_id: str) -> None:
        if job_id in self.separations:
            run = self.separations.pop(job_id)
            run.cancel()
            self.send(Cancelled(job_id))
            return
        for i, (_, _, task) in enumerate(self.solo):
            if task.job_id == job_id:
                del self.solo[i]
                heapq.heapify(self.solo)
                self.send(Cancelled(job_id))
                return
        self.cancelled.add(job_id)  # the solo task running right now checks this

    # events ----------------------------------------------------------------------------------
    def send(self, event: JobEvent) -> None:
        if isinstance(event, Finished | Failed | Cancelled):
            self._last_progress.pop(event.job_id, None)
        self.events.send(event)

    def progress(self, job_id: str) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            now = time.monotonic()
            if fraction >= 1.0 or now - self._last_progress.get(job_id, -1e9) >= PROGRESS_INTERVAL_S:
                self._last_progress[job_id] = now
                self.events.send(Progress(job_id, min(1.0, max(0.0, float(fraction)))))

        return report

    # the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            self.poll(block=not self.separations and not self.solo and not self.runner.separating)
            if self.stopping:
                return
            # A cancelled job is released by the separator's next step (its mix can be large).
            if self.separations or self.runner.separating:
                self.step_separations()
                self.poll(block=False)
            if self.solo and not self.stopping:
                _, _, task = heapq.heappop(self.solo)
                self.run_solo(task)

    def start_separation(self, task: Task) -> None:
        self.send(Started(task.job_id))
        try:
            run = self.runner.start_separation(
                task,
                on_progress=self.progress(task.job_id),
                on_done=functools.partial(self._separation_done, task.job_id),
                on_failed=functools.partial(self._separation_failed, task.job_id),
            )
        except Exception as exc:
            self.send(Failed(task.job_id, _describe(exc)))
            return
        self.separations[task.job_id] = run

    def _separation_done(self, job_id: str, result: dict[str, Any]) -> None:
        if self.separations.pop(job_id, None) is not None:
            self.send(Finished(job_id, result))

    def _separation_failed(self, job_id: str, exc: BaseException) -> None:
        if self.separations.pop(job_id, None) is not None:
            self.send(Failed(job_id, _describe(exc)))

    def step_separations(self) -> None:
        try:
            self.runner.step_separations()
        except Exception as exc:
            # A failed forward pass (out of GPU memory, say) may have held segments of every
            # job on the model: fail them all, and start the separators afresh.
            message = _describe(exc)
            failing = list(self.separations)
            for job_id in failing:
                run = self.separations.pop(job_id)
                run.cancel()
                self.send(Failed(job_id, message))
            self.runner.reset_separators()

    def run_solo(self, task: Task) -> None:
        job_id = task.job_id
        if job_id in self.cancelled:
            self.cancelled.discard(job_id)
            self.send(Cancelled(job_id))
            return
        self.send(Started(job_id))

        def cancelled() -> bool:
            self.poll(block=False)
            if self.stopping:
                raise _Stopping
            return job_id in self.cancelled

        from .tasks import TaskCancelled

        try:
            result = self.runner.run_solo(task, progress=self.progress(job_id), cancelled=cancelled)
        except TaskCancelled:
            self.send(Cancelled(job_id))
        except _Stopping:
            return
        except Exception as exc:
            self.send(Failed(job_id, _describe(exc)))
        else:
            self.send(Finished(job_id, result))
        finally:
            self.cancelled.discard(job_id)


def _describe(exc: BaseException) -> str:
    """A one-line error for users; the traceback goes to the worker's log."""
    from .tasks import TaskError

    if isinstance(exc, TaskError):
        return str(exc)
    log.error("inference task failed:\n%s", "".join(traceback.format_exception(exc)))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "out of memory" in text.lower():
        return f"out of memory: {text[:300]}"
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
