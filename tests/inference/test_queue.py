"""The `JobQueue` contract, run against every backend, and the job lifecycle over a real store.

Redis comes from ESCENARIO_TEST_REDIS_URL (default: the local server); each test uses its own
key prefix and deletes its keys afterwards. Without a server the Redis variants are skipped,
except in CI (CI=true), where a missing server is a failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from inference.queue import (
    Delivery,
    InProcessQueue,
    JobQueue,
    QueueClosed,
    QueueUnavailable,
    claim_job,
    dead_letter_job,
    open_queue,
    recover_shared_queue,
    resubmit_queued,
)
from inference.queue_redis import RedisQueue
from persistence.ports import JobKind, JobPriority, JobStatus, Store
from persistence.sqlite import SqliteStore

from ..conftest import require

REDIS_URL = os.environ.get("ESCENARIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]
R, D = JobStatus.RUNNING, JobStatus.DONE

_redis_problem: list[str] = []  # memoised: an absent server costs one timeout per run


async def require_redis() -> None:
    if not _redis_problem:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            await client.ping()
            _redis_problem.append("")
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            _redis_problem.append(f"Redis at {REDIS_URL} is unreachable: {exc!r}")
        finally:
            await client.aclose()
    require(not _redis_problem[0], _redis_problem[0])


async def delete_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


MakeQueue = Callable[..., JobQueue]


@pytest.fixture(params=["in-process", "redis"])
async def make_queue(request: pytest.FixtureRequest) -> AsyncIterator[MakeQueue]:
    """Opens queues of one backend. Redis queues made in one test share one key prefix, so
    two of them are two clients of one queue (two servers, or a server and a worker)."""
    made: list[JobQueue] = []
    prefix = f"test-{uuid.uuid4().hex}"
    if request.param == "redis":
        await require_redis()

    def make(**options: Any) -> JobQueue:
        queue: JobQueue
        if request.param == "redis":
            queue = RedisQueue(REDIS_URL, prefix=prefix, **options)
        else:
            queue = InProcessQueue(**options)
        made.append(queue)
        return queue

    try:
        yield make
    finally:
        for queue in made:
            await queue.close()
        if request.param == "redis":
            await delete_prefix(prefix)


@pytest.fixture
async def queue(make_queue: MakeQueue) -> JobQueue:
    return make_queue()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    made = SqliteStore(tmp_path / "store.db")
    await made.migrate()
    try:
        yield made
    finally:
        await made.close()


async def make_jobs(store: Store, n: int, kind: JobKind = JobKind.SEPARATE) -> list[str]:
    user = await store.create_user(email=f"{uuid.uuid4().hex}@example.com", name="Ana", password_hash="h")
    session = await store.create_session(owner_id=user.id, title="Demo")
    return [(await store.create_job(session_id=session.id, kind=kind, params={"n": i})).id for i in range(n)]


async def drain(queue: JobQueue, consumer: str = "drain") -> list[Delivery]:
    got = []
    while (delivery := await queue.get(consumer, timeout_s=0)) is not None:
        got.append(delivery)
    return got


# -- ordering ---------------------------------------------------------------------------------


async def test_interactive_before_bulk_and_fifo_within_each(queue: JobQueue) -> None:
    await queue.put("bulk-1", "separate", priority="bulk")
    await queue.put("live-1", "separate")
    await queue.put("bulk-2", "transcribe", priority="bulk")
    await queue.put("live-2", "master", priority="interactive")
    await queue.put("live-3", "separate")
    await queue.put("bulk-3", "separate", priority="bulk")
    got = await drain(queue)
    # FIFO holds across kinds, not only within one.
    assert [d.job_id for d in got] == ["live-1", "live-2", "live-3", "bulk-1", "bulk-2", "bulk-3"]
    assert [d.kind for d in got] == ["separate", "master", "separate", "separate", "transcribe", "separate"]
    assert {d.priority for d in got[:3]} == {"interactive"}
    assert {d.priority for d in got[3:]} == {"bulk"}
    assert {d.attempt for d in got} == {1}
    assert len({d.token for d in got}) == 6


async def test_a_consumer_gets_only_the_kinds_it_serves(queue: JobQueue) -> None:
    await queue.put("sep", "separate")
    await queue.put("tr-bulk", "transcribe", priority="bulk")
    await queue.put("master", "master")
    first = await queue.get("cpu", kinds={"transcribe", "master"}, timeout_s=0)
    second = await queue.get("cpu", kinds=["transcribe", "master"], timeout_s=0)
    assert (first and first.job_id, second and second.job_id) == ("master", "tr-bulk")
    assert await queue.get("cpu", kinds="transcribe", timeout_s=0) is None
    # The separation job waited for a consumer that serves it.
    gpu = await queue.get("gpu", kinds={"separate"}, timeout_s=0)
    assert gpu is not None
    assert gpu.job_id == "sep"


async def test_get_waits_for_a_put_and_times_out(queue: JobQueue) -> None:
    assert await queue.get("w", timeout_s=0) is None
    started = time.monotonic()
    assert await queue.get("w", timeout_s=0.3) is None
    assert time.monotonic() - started >= 0.29

    async def put_later() -> None:
        await asyncio.sleep(0.2)
        await queue.put("late", "master", priority="bulk")

    putter = asyncio.create_task(put_later())
    delivery = await queue.get("w", timeout_s=10)
    await putter
    assert delivery is not None
    assert delivery.job_id == "late"


# -- acknowledgement, requeue, reclaim --------------------------------------------------------


async def test_ack_removes_for_good(queue: JobQueue) -> None:
    await queue.put("a", "separate")
    delivery = await queue.get("w", timeout_s=0)
    assert delivery is not None
    await queue.ack(delivery)
    await queue.ack(delivery)  # twice is harmless
    assert await queue.touch(delivery) is False
    assert await queue.reclaim(idle_s=0) == []
    assert await queue.get("w", timeout_s=0) is None


async def test_nack_requeues_behind_waiting_jobs_or_drops(queue: JobQueue) -> None:
    for job in ("a", "b"):
        await queue.put(job, "separate")
    first = await queue.get("w", timeout_s=0)
    assert first is not None
    await queue.nack(first, requeue=True)
    await queue.nack(first, requeue=True)  # already given back: no second copy
    again = await drain(queue)
    assert [(d.job_id, d.attempt) for d in again] == [("b", 1), ("a", 2)]
    await queue.nack(again[0], requeue=False)
    await queue.ack(again[1])
    assert await queue.reclaim(idle_s=0) == []
    assert await queue.get("w", timeout_s=0) is None


async def test_a_dead_consumers_job_is_reclaimed_by_another(queue: JobQueue) -> None:
    await queue.put("job", "transcribe")
    dead = await queue.get("consumer-a", timeout_s=0)
    assert dead is not None
    assert await queue.get("consumer-b", timeout_s=0) is None  # held, not offered twice
    assert await queue.reclaim(idle_s=5) == []  # not idle long enough
    await asyncio.sleep(0.3)
    taken = await queue.reclaim(idle_s=0.2)
    assert [(d.job_id, d.attempt, d.dead_letter) for d in taken] == [("job", 1, False)]
    again = await queue.get("consumer-b", timeout_s=0)
    assert again is not None
    assert (again.job_id, again.kind, again.attempt) == ("job", "transcribe", 2)
    # The presumed-dead consumer learns it lost the job; its late ack changes nothing.
    assert await queue.touch(dead) is False
    await queue.ack(dead)
    assert await queue.touch(again) is True
    await queue.ack(again)
    assert await queue.reclaim(idle_s=0) == []


async def test_touch_keeps_a_long_job_from_being_reclaimed(queue: JobQueue) -> None:
    await queue.put("long", "separate")
    delivery = await queue.get("w", timeout_s=0)
    assert delivery is not None
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await queue.touch(delivery) is True
        assert await queue.reclaim(idle_s=0.25) == []
    await asyncio.sleep(0.3)
    assert [d.job_id for d in await queue.reclaim(idle_s=0.25)] == ["long"]


async def test_dead_letter_after_max_deliveries(make_queue: MakeQueue, store: Store) -> None:
    queue = make_queue(max_deliveries=2)
    (job_id,) = await make_jobs(store, 1)
    await queue.put(job_id, "separate")
    first = await queue.get("w1", timeout_s=0)
    assert first is not None
    assert await claim_job(store, first, "w1", now=1.0) is not None
    taken = await queue.reclaim(idle_s=0)
    assert [d.dead_letter for d in taken] == [False]
    second = await queue.get("w2", timeout_s=0)
    assert second is not None
    assert second.attempt == 2
    assert await claim_job(store, second, "w2", now=2.0) is not None  # took it over
    (dead,) = await queue.reclaim(idle_s=0)
    assert (dead.job_id, dead.attempt, dead.dead_letter) == (job_id, 2, True)
    assert await queue.get("w3", timeout_s=0) is None  # never offered again
    failed = await dead_letter_job(store, dead, now=3.0)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.finished_at == 3.0
    assert failed.error is not None
    assert "gave up after 2 tries" in failed.error
    assert await dead_letter_job(store, dead, now=4.0) is None  # already failed
    if isinstance(queue, RedisQueue):
        (kept,) = await queue.dead_letters()
        assert (kept["job_id"], kept["attempts"]) == (job_id, "2")


# -- several consumers, at least once, idempotent results -------------------------------------


async def run_worker(
    queue: JobQueue,
    store: Store,
    consumer: str,
    applied: list[str],
    acked: Counter[str],
    *,
    stop: asyncio.Event,
    work_s: float = 0.01,
    idle_s: float = 30.0,
    die_mid_job: bool = False,
) -> None:
    """A worker loop as the pool runs it; `applied` records results that took effect.

    With `die_mid_job` it stops for good right after starting its first job, acknowledging
    nothing: what a crashed worker leaves behind.
    """
    while not stop.is_set():
        for lost in await queue.reclaim(idle_s=idle_s):
            if lost.dead_letter:
                await dead_letter_job(store, lost, now=time.time())
        delivery = await queue.get(consumer, timeout_s=0.05)
        if delivery is None:
            continue
        job = await claim_job(store, delivery, consumer, now=time.time())
        if job is not None:
            if die_mid_job:
                return
            await asyncio.sleep(work_s)
            done = await store.transition_job(
                job.id, {R}, D, expect_attempts=job.attempts, result={"by": consumer}, progress=1.0
            )
            if done is not None:
                applied.append(job.id)
        await queue.ack(delivery)
        acked[f"{delivery.job_id} {consumer}"] += 1


async def test_two_consumers_share_the_work_each_job_once(queue: JobQueue, store: Store) -> None:
    jobs = await make_jobs(store, 20)
    for i, job_id in enumerate(jobs):
        await queue.put(job_id, "separate", priority="bulk" if i % 3 else "interactive")
    applied: list[str] = []
    acked: Counter[str] = Counter()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(run_worker(queue, store, name, applied, acked, stop=stop, work_s=0.02))
        for name in ("w1", "w2")
    ]
    try:
        await wait_until(lambda: _done(applied, len(jobs)), timeout_s=30)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert sorted(applied) == sorted(jobs)  # each result applied exactly once
    per_job = Counter(key.split()[0] for key in acked.elements())
    assert per_job == Counter({job_id: 1 for job_id in jobs})  # each acknowledged exactly once
    per_worker = Counter(key.split()[1] for key in acked.elements())
    assert set(per_worker) == {"w1", "w2"}  # both worked
    for job_id in jobs:
        record = await store.get_job(job_id)
        assert record is not None
        assert (record.status, record.attempts) == (D, 1)


async def test_a_consumer_dying_mid_job_loses_nothing(queue: JobQueue, store: Store) -> None:
    jobs = await make_jobs(store, 6)
    for job_id in jobs:
        await queue.put(job_id, "separate")
    applied: list[str] = []
    acked: Counter[str] = Counter()
    stop = asyncio.Event()
    await run_worker(queue, store, "doomed", applied, acked, stop=stop, die_mid_job=True)
    (lost,) = await store.list_jobs_by_status({R})
    assert lost.worker == "doomed"
    workers = [
        asyncio.create_task(run_worker(queue, store, name, applied, acked, stop=stop, idle_s=0.3))
        for name in ("w1", "w2")
    ]
    try:
        await wait_until(lambda: _done(applied, len(jobs)), timeout_s=30)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert sorted(applied) == sorted(jobs)  # every result once, the lost job's included
    assert Counter(key.split()[0] for key in acked.elements()) == Counter({job_id: 1 for job_id in jobs})
    record = await store.get_job(lost.id)
    assert record is not None
    assert (record.status, record.attempts) == (D, 2)
    assert record.worker in {"w1", "w2"}


async def test_a_job_whose_worker_stalled_is_finished_once(queue: JobQueue, store: Store) -> None:
    (job_id,) = await make_jobs(store, 1)
    await queue.put(job_id, "separate")
    stalled = await queue.get("a", timeout_s=0)
    assert stalled is not None
    mine = await claim_job(store, stalled, "a", now=time.time())
    assert mine is not None
    assert mine.attempts == 1
    # "a" stops answering (no touch, no ack); the queue hands the job to "b".
    await asyncio.sleep(0.25)
    assert [d.job_id for d in await queue.reclaim(idle_s=0.2)] == [job_id]
    redelivered = await queue.get("b", timeout_s=0)
    assert redelivered is not None
    assert redelivered.attempt == 2
    theirs = await claim_job(store, redelivered, "b", now=time.time())
    assert theirs is not None
    assert (theirs.worker, theirs.attempts) == ("b", 2)
    # "a" was only slow: it finishes, but its result is fenced off ...
    late = await store.transition_job(job_id, {R}, D, expect_attempts=mine.attempts, result={"by": "a"})
    assert late is None
    await queue.ack(stalled)
    # ... and "b"'s result is the one written, once.
    won = await store.transition_job(job_id, {R}, D, expect_attempts=theirs.attempts, result={"by": "b"})
    assert won is not None
    assert won.result == {"by": "b"}
    assert await store.transition_job(job_id, {R}, D, result={"by": "again"}) is None
    await queue.ack(redelivered)
    assert await queue.reclaim(idle_s=0) == []
    assert await queue.get("c", timeout_s=0) is None


async def test_a_duplicate_put_runs_the_job_once(queue: JobQueue, store: Store) -> None:
    (job_id,) = await make_jobs(store, 1)
    await queue.put(job_id, "separate")
    await queue.put(job_id, "separate")
    one, two = await drain(queue)
    assert await claim_job(store, one, "w1", now=1.0) is not None
    assert await claim_job(store, two, "w2", now=1.0) is None  # running for a live worker: skip
    record = await store.get_job(job_id)
    assert record is not None
    assert (record.worker, record.attempts) == ("w1", 1)


async def test_a_redelivered_cancelled_job_is_not_run(queue: JobQueue, store: Store) -> None:
    cancelled, stopping = await make_jobs(store, 2)
    for job_id in (cancelled, stopping):
        await queue.put(job_id, "separate")
    first, second = await drain(queue)
    assert await store.request_job_cancel(cancelled) is not None  # still queued: cancelled outright
    assert await claim_job(store, first, "w", now=1.0) is None
    await queue.ack(first)  # nothing to run: dealt with
    assert await claim_job(store, second, "w", now=1.0) is not None
    await store.request_job_cancel(stopping)  # running: flagged; then its worker dies
    (lost,) = await queue.reclaim(idle_s=0)
    again = await queue.get("w2", timeout_s=0)
    assert again is not None
    assert lost.job_id == again.job_id == stopping
    assert await claim_job(store, again, "w2", now=2.0) is None
    record = await store.get_job(stopping)
    assert record is not None
    assert (record.status, record.finished_at) == (JobStatus.CANCELLED, 2.0)


async def test_restart_recovery_resubmits_every_unfinished_job(store: Store) -> None:
    jobs = await make_jobs(store, 4)
    old = InProcessQueue()
    for job_id in jobs:
        await old.put(job_id, "separate")
    running = await old.get("old-worker", timeout_s=0)
    assert running is not None
    assert await claim_job(store, running, "old-worker", now=1.0) is not None
    done = await old.get("old-worker", timeout_s=0)
    assert done is not None
    claimed = await claim_job(store, done, "old-worker", now=1.0)
    assert claimed is not None
    assert await store.transition_job(claimed.id, {R}, D) is not None
    await old.close()  # the server dies: the in-memory queue is gone

    new = InProcessQueue()
    requeued, ended = await store.recover_jobs(3)
    assert (requeued, ended) == ([running.job_id], [])
    resubmitted = await resubmit_queued(store, new)
    assert sorted(resubmitted) == sorted(set(jobs) - {done.job_id})
    delivered = {d.job_id for d in await drain(new)}
    assert delivered == set(resubmitted)  # nothing lost, the finished one not redone
    await new.close()


async def test_shared_queue_recovery_puts_back_jobs_no_stream_holds(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    """The two ways a job could stay `queued` forever on a queue that outlives servers."""
    now = [1000.0]
    store = SqliteStore(tmp_path / "clocked.db", clock=lambda: now[0])
    await store.migrate()
    try:
        slow, orphan, fresh = await make_jobs(store, 3)
        queue = make_queue()
        # 1. A live worker takes `slow` and stays silent past the idle limit (loading a model).
        await queue.put(slow, "separate")
        held = await queue.get("slow-worker", timeout_s=0)
        assert held is not None
        mine = await claim_job(store, held, "slow-worker", now=now[0])
        assert mine is not None
        # 2. A server dies between `create_job` (orphan) and `put`: no stream holds it.
        now[0] += 200.0
        # `fresh` was created a moment ago by a live server that is about to put it itself.
        fresh_row = await store.transition_job(fresh, {JobStatus.QUEUED}, JobStatus.QUEUED)
        assert fresh_row is not None
        # A server starts and settles what looks dead: `slow` goes back to queued ...
        restarted = make_queue()
        requeued, ended, put = await recover_shared_queue(
            store, restarted, max_attempts=3, idle_s=120.0, stranded_s=60.0, now=now[0]
        )
        assert (requeued, ended) == ([slow], [])
        assert sorted(put) == sorted([slow, orphan])  # not `fresh`: its server puts it
        # ... the slow worker finishes, its write is fenced off, and it acknowledges.
        assert await store.transition_job(slow, {R}, D, expect_attempts=mine.attempts) is None
        await queue.ack(held)
        # Without the puts above nothing would ever deliver `slow` or `orphan` again.
        got = await drain(restarted, "worker")
        assert sorted(d.job_id for d in got) == sorted([slow, orphan])
        for delivery in got:
            job = await claim_job(store, delivery, "worker", now=now[0])
            assert job is not None
            assert await store.transition_job(job.id, {R}, D, expect_attempts=job.attempts) is not None
            await restarted.ack(delivery)
        for job_id in (slow, orphan):
            record = await store.get_job(job_id)
            assert record is not None
            assert record.status is D
        record = await store.get_job(fresh)
        assert record is not None
        assert record.status is JobStatus.QUEUED
    finally:
        await store.close()


# -- two worker processes on Redis ------------------------------------------------------------

_WORKER = r"""
import asyncio, os, signal, sys, time
import redis.asyncio as aioredis
from inference.queue import claim_job, dead_letter_job
from inference.queue_redis import RedisQueue
from persistence.ports import JobStatus
from persistence.sqlite import SqliteStore

async def main(url, prefix, db, consumer, mode, idle_s):
    queue, store = RedisQueue(url, prefix=prefix), SqliteStore(db)
    log = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await queue.ping()
        await log.rpush(f"{prefix}:log:ready", consumer)
        while not await log.exists(f"{prefix}:log:stop"):
            for lost in await queue.reclaim(idle_s=idle_s):
                if lost.dead_letter:
                    await dead_letter_job(store, lost, now=time.time())
            delivery = await queue.get(consumer, timeout_s=0.1)
            if delivery is None:
                continue
            job = await claim_job(store, delivery, consumer, now=time.time())
            if job is not None:
                if mode == "die":  # a crash mid-job: no ack, no cleanup
                    os.kill(os.getpid(), signal.SIGKILL)
                await asyncio.sleep(0.05)  # the work
                done = await store.transition_job(
                    job.id, {JobStatus.RUNNING}, JobStatus.DONE, expect_attempts=job.attempts,
                    result={"by": consumer}, progress=1.0, finished_at=time.time(),
                )
                if done is not None:
                    await log.rpush(f"{prefix}:log:applied", job.id)
            await queue.ack(delivery)
            await log.rpush(f"{prefix}:log:acked", f"{delivery.job_id} {consumer}")
    finally:
        await queue.close()
        await store.close()
        await log.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])))
"""


def start_worker(prefix: str, db: Path, consumer: str, *, mode: str = "work", idle_s: float = 30.0) -> Any:
    args = [sys.executable, "-c", _WORKER, REDIS_URL, prefix, str(db), consumer, mode, str(idle_s)]
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
async def redis_log() -> AsyncIterator[tuple[str, Any]]:
    await require_redis()
    prefix = f"test-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield prefix, client
    finally:
        await client.aclose()
        await delete_prefix(prefix)


async def wait_until(check: Callable[[], Any], *, timeout_s: float = 60.0) -> None:
    # Polls on purpose: the conditions live in other tasks' lists and in other processes.
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _done(applied: list[str], n: int) -> bool:
    return len(applied) >= n


async def stop_workers(prefix: str, log: Any, workers: list[Any]) -> None:
    await log.set(f"{prefix}:log:stop", 1)
    for worker in workers:
        try:
            await asyncio.to_thread(worker.wait, 30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


async def test_two_worker_processes_share_the_work(
    redis_log: tuple[str, Any], store: Store, tmp_path: Path
) -> None:
    prefix, log = redis_log
    workers = [start_worker(prefix, tmp_path / "store.db", name) for name in ("p1", "p2")]
    try:
        # Jobs go in once both are waiting, so both get a share.
        await wait_until(lambda: _length_at_least(log, f"{prefix}:log:ready", 2))
        server = RedisQueue(REDIS_URL, prefix=prefix)
        jobs = await make_jobs(store, 20)
        for job_id in jobs:
            await server.put(job_id, "separate")
        await server.close()
        await wait_until(lambda: _length_at_least(log, f"{prefix}:log:acked", len(jobs)))
    finally:
        await stop_workers(prefix, log, workers)
    assert [w.returncode for w in workers] == [0, 0]
    applied = await log.lrange(f"{prefix}:log:applied", 0, -1)
    acked = [entry.split() for entry in await log.lrange(f"{prefix}:log:acked", 0, -1)]
    assert sorted(applied) == sorted(jobs)
    assert Counter(job for job, _ in acked) == Counter({job_id: 1 for job_id in jobs})
    assert {consumer for _, consumer in acked} == {"p1", "p2"}
    for job_id in jobs:
        record = await store.get_job(job_id)
        assert record is not None
        assert (record.status, record.attempts) == (D, 1)


async def test_a_killed_worker_process_loses_no_job(
    redis_log: tuple[str, Any], store: Store, tmp_path: Path
) -> None:
    prefix, log = redis_log
    jobs = await make_jobs(store, 5)
    server = RedisQueue(REDIS_URL, prefix=prefix)
    for job_id in jobs:
        await server.put(job_id, "separate")
    await server.close()
    doomed = start_worker(prefix, tmp_path / "store.db", "doomed", mode="die")
    workers = [doomed]
    try:
        await asyncio.to_thread(doomed.wait, 60)
        assert doomed.returncode == -signal.SIGKILL
        (lost,) = await store.list_jobs_by_status({R})  # it died holding exactly this one
        assert lost.worker == "doomed"
        workers.append(start_worker(prefix, tmp_path / "store.db", "survivor", idle_s=0.5))
        await wait_until(lambda: _length_at_least(log, f"{prefix}:log:acked", len(jobs)))
    finally:
        await stop_workers(prefix, log, workers)
    assert workers[1].returncode == 0
    applied = await log.lrange(f"{prefix}:log:applied", 0, -1)
    acked = [entry.split() for entry in await log.lrange(f"{prefix}:log:acked", 0, -1)]
    assert sorted(applied) == sorted(jobs)  # each result once, the lost job's included
    assert Counter(job for job, _ in acked) == Counter({job_id: 1 for job_id in jobs})
    record = await store.get_job(lost.id)
    assert record is not None
    assert (record.status, record.attempts, record.worker, record.result) == (
        D,
        2,
        "survivor",
        {"by": "survivor"},
    )


async def _length_at_least(log: Any, key: str, n: int) -> bool:
    return int(await log.llen(key)) >= n


# -- bad input and failures -------------------------------------------------------------------


async def test_bad_arguments_are_refused(queue: JobQueue) -> None:
    with pytest.raises(ValueError, match="unknown job kind"):
        await queue.put("a", "dance")
    with pytest.raises(ValueError, match="unknown job priority"):
        await queue.put("a", "separate", priority="urgent")
    with pytest.raises(ValueError, match="non-empty"):
        await queue.put("", "separate")
    with pytest.raises(ValueError, match="must serve some of"):
        await queue.get("w", kinds={"dance"}, timeout_s=0)
    with pytest.raises(ValueError, match="must serve some of"):
        await queue.get("w", kinds=set(), timeout_s=0)
    assert await queue.get("w", timeout_s=0) is None  # nothing was enqueued
    with pytest.raises(ValueError, match="max_deliveries"):
        InProcessQueue(max_deliveries=0)


async def test_a_closed_queue_says_so(queue: JobQueue) -> None:
    waiting = asyncio.create_task(queue.get("w"))
    await asyncio.sleep(0.1)
    await queue.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(QueueClosed):
        await queue.get("w", timeout_s=0)
    with pytest.raises(QueueClosed):
        await queue.put("a", "separate")


async def test_open_queue_picks_the_backend() -> None:
    local = open_queue("")
    assert isinstance(local, InProcessQueue)
    await local.close()
    remote = open_queue("redis://127.0.0.1:1/0")
    assert isinstance(remote, RedisQueue)
    await remote.close()
    with pytest.raises(ValueError, match="redis://"):
        open_queue("http://127.0.0.1:6379")


async def test_an_unreachable_redis_is_a_clear_error() -> None:
    queue = RedisQueue("redis://:s3cret@127.0.0.1:1/0", prefix="unreachable", connect_timeout_s=1)
    try:
        with pytest.raises(
            QueueUnavailable, match=r"Redis at redis://:\*\*\*@127\.0\.0\.1:1/0 is unreachable"
        ):
            await queue.ping()
        with pytest.raises(QueueUnavailable) as caught:
            await queue.put("a", "separate")
        assert "s3cret" not in str(caught.value)
        with pytest.raises(QueueUnavailable):
            await queue.get("w", timeout_s=0)
    finally:
        await queue.close()


async def test_redis_ping_checks_the_server(redis_log: tuple[str, Any]) -> None:
    prefix, _ = redis_log
    queue = RedisQueue(REDIS_URL, prefix=prefix)
    try:
        await queue.ping()  # reachable and new enough: no error
    finally:
        await queue.close()
    with pytest.raises(QueueClosed):
        await queue.ping()


async def test_redis_recreates_streams_deleted_behind_its_back(redis_log: tuple[str, Any]) -> None:
    prefix, log = redis_log
    queue = RedisQueue(REDIS_URL, prefix=prefix)
    try:
        await queue.put("a", "separate")
        await log.delete(*[key async for key in log.scan_iter(match=f"{prefix}:*")])  # FLUSHDB, say
        assert await queue.get("w", timeout_s=0) is None
        await queue.put("b", "separate", priority=JobPriority.BULK.value)
        delivery = await queue.get("w", timeout_s=0)
        assert delivery is not None
        assert delivery.job_id == "b"
    finally:
        await queue.close()
