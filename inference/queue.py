"""The `JobQueue` port: how job ids travel from the servers that create jobs to the workers.

The queue carries only `(job_id, kind, priority)`; the store's job row is the truth about a
job. Delivery is at least once: a delivery that is never acknowledged (its consumer died) is
taken back by `reclaim` and handed out again, so a job can reach two workers. The store's
compare-and-set (`Store.transition_job`, fenced by `attempts`) makes the second one harmless;
`claim_job` below is that rule, and `dead_letter_job` / `resubmit_queued` the other two steps
every user of a queue needs.

Backends: `InProcessQueue` (the default: one server process and its worker pool) and
`inference.queue_redis.RedisQueue` (Redis Streams with a consumer group, so `escenario
worker --redis-url …` on GPU machines serves many servers). `open_queue` picks one.

A worker's loop, in short::

    delivery = await queue.get(consumer, timeout_s=1.0)
    job = await claim_job(store, delivery, consumer, now=time.time())
    if job is not None:
        ...  # run it; `await queue.touch(delivery)` every few seconds while it runs
        await store.transition_job(job.id, {RUNNING}, DONE, expect_attempts=job.attempts, ...)
    await queue.ack(delivery)

and, every few seconds somewhere, `for d in await queue.reclaim(idle_s=…)` with
`dead_letter_job(store, d, …)` for each `d.dead_letter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Protocol

from persistence.ports import JobKind, JobPriority, JobRecord, JobStatus, Store

# Serve order: every interactive job (started from a live session) before any bulk one.
PRIORITIES: tuple[str, ...] = (JobPriority.INTERACTIVE.value, JobPriority.BULK.value)
JOB_KINDS: tuple[str, ...] = tuple(kind.value for kind in JobKind)
DEFAULT_MAX_DELIVERIES = 3


class QueueError(Exception):
    """Base class of the errors a `JobQueue` raises on purpose."""


class QueueUnavailable(QueueError):
    """The queue's backend (Redis) cannot be reached; the message says which and why."""


class QueueClosed(QueueError):
    """The queue was closed; a `get` waiting at the time raises this too."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One hand-out of a job to a consumer.

    `attempt` counts the hand-outs of this job by the queue, 1 the first time. `token` is
    opaque; `ack`, `nack` and `touch` use it. `dead_letter` is set only on deliveries that
    `reclaim` returns: the job was handed out `max_deliveries` times and never finished, so
    the queue will not offer it again and the caller must fail it (`dead_letter_job`).
    """

    job_id: str
    kind: str
    priority: str
    token: str
    attempt: int
    dead_letter: bool = False


class JobQueue(Protocol):
    async def put(self, job_id: str, kind: str, *, priority: str = "interactive") -> None:
        """Enqueue a job; `ValueError` for an unknown kind or priority or an empty id."""

    async def get(
        self, consumer: str, *, kinds: Collection[str] | None = None, timeout_s: float | None = None
    ) -> Delivery | None:
        """The next job for `consumer` (interactive before bulk, oldest first within each),
        limited to `kinds` when given. Waits up to `timeout_s` (None: until one comes, 0:
        not at all) and returns None if none came. Raises `QueueClosed` once closed."""

    async def ack(self, delivery: Delivery) -> None:
        """The job is dealt with (done, failed or skipped): forget the delivery.

        Acknowledging a delivery that was already reclaimed does nothing.
        """

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        """Give a delivery back: with `requeue`, offered again (behind its priority's other
        jobs, as attempt + 1); without, dropped like `ack`. Does nothing if it was reclaimed."""

    async def touch(self, delivery: Delivery) -> bool:
        """Tell the queue the consumer is alive and still working on it (resets its idle time).

        False if the delivery is no longer the consumer's (acknowledged, or reclaimed
        because it was idle too long): the job may now be running elsewhere.
        """

    async def reclaim(self, *, idle_s: float) -> list[Delivery]:
        """Take back deliveries unacknowledged and untouched for `idle_s` (their consumers are
        presumed dead) and offer them again: at-least-once delivery.

        Returns the deliveries taken back, as their consumers held them; those marked
        `dead_letter` had reached `max_deliveries` and are not offered again.
        """

    async def close(self) -> None:
        """Release resources; further calls raise `QueueClosed`."""


def open_queue(
    redis_url: str,
    *,
    prefix: str = "escenario",
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
) -> JobQueue:
    """The queue `redis_url` names: empty → in-process; redis://, rediss:// or unix:// → Redis.

    No I/O happens here; an unreachable Redis raises `QueueUnavailable` on first use (call
    `RedisQueue.ping()` to fail fast at startup). `prefix` namespaces the Redis keys.
    """
    if not redis_url:
        return InProcessQueue(max_deliveries=max_deliveries)
    from inference.queue_redis import RedisQueue

    return RedisQueue(redis_url, prefix=prefix, max_deliveries=max_deliveries)


def check_put(job_id: str, kind: str, priority: str, kinds: Collection[str]) -> None:
    """The arguments every backend's `put` validates the same way."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"a job id must be a non-empty string, got {job_id!r}")
    if kind not in kinds:
        raise ValueError(f"unknown job kind {kind!r}; this queue carries {sorted(kinds)}")
    if priority not in PRIORITIES:
        raise ValueError(f"unknown job priority {priority!r}; use one of {list(PRIORITIES)}")


def check_kinds(kinds: Collection[str] | None, known: Collection[str]) -> list[str]:
    """The kinds a `get` serves, in a stable order; `ValueError` for unknown or none."""
    if kinds is None:
        return sorted(known)
    if isinstance(kinds, str):
        kinds = [kinds]  # "separate" means that kind, not its letters
    wanted = sorted(set(kinds))
    unknown = [k for k in wanted if k not in known]
    if unknown or not wanted:
        raise ValueError(f"a consumer must serve some of {sorted(known)}, got {list(kinds)!r}")
    return wanted


def check_max_deliveries(max_deliveries: int) -> int:
    if int(max_deliveries) < 1:
        raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries!r}")
    return int(max_deliveries)


# -- in-process backend ----------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    seq: int  # global arrival order: FIFO within a priority across kinds
    job_id: str
    kind: str
    priority: str
    prior: int  # hand-outs before this entry (a requeued or reclaimed job keeps counting)


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    entry: _Entry
    last_seen: float


class InProcessQueue:
    """An asyncio queue inside one process: the embedded default.

    Its content lives in memory, so after a restart the store is the only record: the
    server calls `Store.recover_jobs` and then `resubmit_queued`. Deliveries are tracked
    until acknowledged, so `reclaim` works here as with Redis (a worker process of the pool
    that died holding a job).
    """

    def __init__(
        self,
        *,
        kinds: Collection[str] = JOB_KINDS,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kinds = frozenset(kinds)
        self.max_deliveries = check_max_deliveries(max_deliveries)
        self._clock = clock
        self._ready: dict[tuple[str, str], deque[_Entry]] = {
            (p, k): deque() for p in PRIORITIES for k in self.kinds
        }
        self._held: dict[str, _Held] = {}
        self._seq = itertools.count()
        self._tokens = itertools.count(1)
        self._changed = asyncio.Condition()
        self._closed = False

    async def put(self, job_id: str, kind: str, *, priority: str = "interactive") -> None:
        self._check_open()
        check_put(job_id, kind, priority, self.kinds)
        await self._push(_Entry(next(self._seq), job_id, kind, priority, prior=0))

    async def _push(self, entry: _Entry) -> None:
        self._ready[entry.priority, entry.kind].append(entry)
        async with self._changed:
            self._changed.notify_all()

    async def get(
        self, consumer: str, *, kinds: Collection[str] | None = None, timeout_s: float | None = None
    ) -> Delivery | None:
        wanted = check_kinds(kinds, self.kinds)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + max(0.0, timeout_s)
        async with self._changed:
            while True:
                self._check_open()
                entry = self._pop(wanted)
                if entry is not None:
                    return self._deliver(entry, consumer)
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                # On timeout: one more look, then the deadline check returns None.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def _pop(self, kinds: list[str]) -> _Entry | None:
        for priority in PRIORITIES:
            heads = [q for q in (self._ready[priority, k] for k in kinds) if q]
            if heads:
                return min(heads, key=lambda q: q[0].seq).popleft()
        return None

    def _deliver(self, entry: _Entry, consumer: str) -> Delivery:
        delivery = Delivery(
            job_id=entry.job_id,
            kind=entry.kind,
            priority=entry.priority,
            token=f"{consumer}#{next(self._tokens)}",
            attempt=entry.prior + 1,
        )
        self._held[delivery.token] = _Held(delivery, entry, self._clock())
        return delivery

    async def ack(self, delivery: Delivery) -> None:
        self._check_open()
        self._held.pop(delivery.token, None)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self._check_open()
        held = self._held.pop(delivery.token, None)
        if held is not None and requeue:
            await self._requeue(held)

    async def _requeue(self, held: _Held) -> None:
        entry = held.entry
        # A new arrival number: it goes behind what is already waiting, as with Redis.
        await self._push(replace(entry, seq=next(self._seq), prior=held.delivery.attempt))

    async def touch(self, delivery: Delivery) -> bool:
        self._check_open()
        held = self._held.get(delivery.token)
        if held is None:
            return False
        held.last_seen = self._clock()
        return True

    async def reclaim(self, *, idle_s: float) -> list[Delivery]:
        self._check_open()
        now = self._clock()
        taken: list[Delivery] = []
        for token, held in list(self._held.items()):
            if now - held.last_seen < idle_s:
                continue
            del self._held[token]
            if held.delivery.attempt >= self.max_deliveries:
                taken.append(replace(held.delivery, dead_letter=True))
            else:
                taken.append(held.delivery)
                await self._requeue(held)
        return taken

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosed("the job queue is closed")


# -- the job lifecycle over the store --------------------------------------------------------


async def claim_job(store: Store, delivery: Delivery, worker: str, *, now: float) -> JobRecord | None:
    """Start the delivered job for `worker`, or None if there is nothing to run.

    A queued job is started (attempts + 1). A job already `running` is taken over only when
    this is a redelivery (`attempt > 1`: the queue presumed the previous holder dead), fenced
    on `attempts` so that of two takers one wins; a pending cancellation then ends it
    instead. Anything else (finished, cancelled, deleted with its session, or running for
    a live worker after a duplicate `put`) is None: acknowledge the delivery and move on.
    """
    started = await store.transition_job(
        delivery.job_id,
        {JobStatus.QUEUED},
        JobStatus.RUNNING,
        worker=worker,
        started_at=now,
        progress=0.0,
        attempts_inc=True,
    )
    if started is not None or delivery.attempt <= 1:
        return started
    current = await store.get_job(delivery.job_id)
    if current is None or current.status is not JobStatus.RUNNING:
        return None
    if current.cancel_requested:
        await store.transition_job(
            current.id,
            {JobStatus.RUNNING},
            JobStatus.CANCELLED,
            expect_attempts=current.attempts,
            finished_at=now,
        )
        return None
    return await store.transition_job(
        current.id,
        {JobStatus.RUNNING},
        JobStatus.RUNNING,
        expect_attempts=current.attempts,
        worker=worker,
        started_at=now,
        progress=0.0,
        attempts_inc=True,
    )


async def dead_letter_job(store: Store, delivery: Delivery, *, now: float) -> JobRecord | None:
    """Fail the job of a dead-lettered delivery with an error that says why; None if it had
    already finished (or is gone)."""
    return await store.transition_job(
        delivery.job_id,
        {JobStatus.QUEUED, JobStatus.RUNNING},
        JobStatus.FAILED,
        finished_at=now,
        error=(
            f"gave up after {delivery.attempt} tries: each time, the worker running this job "
            "stopped responding before it finished (it may crash on this input or run out of memory)"
        ),
    )


async def resubmit_queued(store: Store, queue: JobQueue, *, limit: int = 10_000) -> list[str]:
    """Put every `queued` job of the store on `queue`, oldest first; returns their ids.

    For the in-process queue after a restart (after `Store.recover_jobs`), whose content
    died with the old process. On a Redis queue it would duplicate what the streams still
    hold; `claim_job` makes that harmless but wasteful.
    """
    jobs = await store.list_jobs_by_status({JobStatus.QUEUED}, limit=limit)
    for job in jobs:
        await queue.put(job.id, job.kind.value, priority=job.priority.value)
    return [job.id for job in jobs]


async def recover_shared_queue(
    store: Store,
    queue: JobQueue,
    *,
    max_attempts: int,
    idle_s: float,
    stranded_s: float,
    now: float | None = None,
    limit: int = 10_000,
) -> tuple[list[str], list[str], list[str]]:
    """Startup recovery for a queue that outlives servers (Redis): (requeued, ended, put).

    `Store.recover_jobs(idle_s=…)` settles `running` rows nobody touched for `idle_s`; the
    ones it moves back to `queued` may have no stream entry left (their worker was alive
    after all, its fenced final write failed and it acknowledged the delivery), so they are
    put again. So is every `queued` row not updated for `stranded_s`: a server that died
    between `create_job` and `put` left one that no stream holds. Where an entry does still
    exist the extra one is harmless: `claim_job` skips a job that is no longer queued.
    """
    requeued, ended = await store.recover_jobs(max_attempts, idle_s=idle_s)
    cutoff = (time.time() if now is None else now) - stranded_s
    again = set(requeued)
    put: list[str] = []
    for job in await store.list_jobs_by_status({JobStatus.QUEUED}, limit=limit):
        if job.id in again or job.updated_at <= cutoff:
            await queue.put(job.id, job.kind.value, priority=job.priority.value)
            put.append(job.id)
    return requeued, ended, put
