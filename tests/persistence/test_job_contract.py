"""The `Store` contract for job rows: every backend must pass every test here unchanged."""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from persistence._migrate import load_migrations
from persistence.ports import (
    AssetKind,
    AssetRecord,
    JobKind,
    JobPriority,
    JobRecord,
    JobStatus,
    NotFound,
    SessionRecord,
    Store,
    User,
)
from persistence.sqlite import SqliteStore

from .support import Backend

_keys = itertools.count()
Q, R, D, F, C = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED


async def make_user(store: Store, email: str = "ana@example.com", name: str = "Ana") -> User:
    return await store.create_user(email=email, name=name, password_hash=f"hash-of-{email}")


async def make_asset(store: Store, session_id: str, uploader_id: str | None) -> AssetRecord:
    return await store.create_asset(
        session_id=session_id,
        uploader_id=uploader_id,
        name="take.wav",
        kind=AssetKind.SOURCE,
        mime="audio/flac",
        duration_s=1.0,
        sample_rate=48000,
        channels=2,
        frames=48000,
        size_bytes=1000,
        blob_key=f"job-asset-{next(_keys)}.flac",
    )


async def setup(store: Store) -> tuple[User, SessionRecord, AssetRecord]:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    asset = await make_asset(store, session.id, ana.id)
    return ana, session, asset


async def make_job(store: Store, session_id: str, **changes: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "session_id": session_id,
        "kind": JobKind.SEPARATE,
        "params": {"model": "htdemucs"},
    }
    fields.update(changes)
    return await store.create_job(**fields)


async def running_job(store: Store, session_id: str, worker: str = "w1") -> JobRecord:
    job = await make_job(store, session_id)
    started = await store.transition_job(job.id, {Q}, R, worker=worker, started_at=5.0, attempts_inc=True)
    assert started is not None
    return started


async def test_create_get_and_list_jobs(backend: Backend, store: Store) -> None:
    ana, session, asset = await setup(store)
    other = await store.create_session(owner_id=ana.id, title="Other")
    backend.clock.advance()
    params = {"model": "htdemucs", "stems": ["vocals", "drums"], "name": "Ñandú «take» 1", "gain": -3.5}
    first = await make_job(
        store, session.id, asset_id=asset.id, created_by=ana.id, params=params, priority=JobPriority.BULK
    )
    assert first.session_id == session.id
    assert first.asset_id == asset.id
    assert first.created_by == ana.id
    assert first.kind is JobKind.SEPARATE
    assert first.priority is JobPriority.BULK
    assert first.params == params
    assert first.status is Q
    assert (first.progress, first.error, first.result, first.worker) == (0.0, None, None, None)
    assert (first.started_at, first.finished_at, first.attempts, first.cancel_requested) == (
        None,
        None,
        0,
        False,
    )
    assert first.created_at == first.updated_at == backend.clock.now
    assert len(first.id) >= 16
    assert await store.get_job(first.id) == first

    backend.clock.advance()
    second = await make_job(store, session.id, kind=JobKind.TRANSCRIBE, params={})
    assert second.priority is JobPriority.INTERACTIVE  # the default: started from a live session
    assert second.asset_id is None
    assert second.created_by is None
    await make_job(store, other.id)

    assert await store.list_jobs(session.id) == [second, first]  # newest first
    assert await store.list_jobs(session.id, limit=1) == [second]
    assert await store.list_jobs(session.id, limit=0) == []
    assert await store.get_job("missing") is None
    assert await store.list_jobs("missing") == []


async def test_bad_jobs_are_refused_and_nothing_is_stored(backend: Backend, store: Store) -> None:
    _ana, session, _asset = await setup(store)
    with pytest.raises(NotFound):
        await make_job(store, "missing")
    with pytest.raises(NotFound):
        await make_job(store, session.id, asset_id="missing")
    with pytest.raises(NotFound):
        await make_job(store, session.id, created_by="missing")
    with pytest.raises(ValueError, match="invalid job"):
        await make_job(store, session.id, kind="dance")
    with pytest.raises(ValueError, match="invalid job"):
        await make_job(store, session.id, priority="urgent")
    with pytest.raises(ValueError, match="JSON object"):
        await make_job(store, session.id, params=["not", "an", "object"])
    with pytest.raises(ValueError, match="JSON"):
        await make_job(store, session.id, params={"gain": math.nan})
    with pytest.raises(ValueError, match="JSON"):
        await make_job(store, session.id, params={"blob": b"bytes"})
    assert await backend.execute("SELECT id FROM jobs") == []


async def test_progress_updates_and_field_rules(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    job = await running_job(store, session.id)
    assert (job.status, job.worker, job.started_at, job.attempts) == (R, "w1", 5.0, 1)

    backend.clock.advance(2)
    updated = await store.update_job(job.id, progress=0.25)
    assert updated is not None
    assert updated.progress == 0.25
    assert updated.updated_at == backend.clock.now
    # Everything not named is left alone.
    assert (updated.status, updated.worker, updated.started_at, updated.attempts) == (R, "w1", 5.0, 1)

    # A progress write reports a pending cancellation, so it doubles as the worker's check.
    await store.request_job_cancel(job.id)
    flagged = await store.update_job(job.id, progress=0.5)
    assert flagged is not None
    assert flagged.cancel_requested
    assert flagged.status is R

    with_error = await store.update_job(job.id, error="disk slow, retrying")
    assert with_error is not None
    assert with_error.error == "disk slow, retrying"
    assert with_error.status is R
    # A status change replaces the error, clearing it unless a new one is given.
    requeued = await store.update_job(job.id, status=Q, attempts_inc=True)
    assert requeued is not None
    assert (requeued.status, requeued.error, requeued.attempts) == (Q, None, 2)
    failed = await store.update_job(job.id, status=F, error="out of memory", finished_at=9.0)
    assert failed is not None
    assert (failed.error, failed.finished_at) == ("out of memory", 9.0)
    assert await store.get_job(job.id) == failed

    for bad in (-0.01, 1.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="between 0 and 1"):
            await store.update_job(job.id, progress=bad)
    with pytest.raises(ValueError, match="paused"):
        await store.update_job(job.id, status="paused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON object"):
        await store.update_job(job.id, result=[1, 2])  # type: ignore[arg-type]
    assert await store.get_job(job.id) == failed
    assert await store.update_job("missing", progress=0.5) is None


async def test_the_clock_never_makes_updated_at_go_back(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    job = await make_job(store, session.id)
    backend.clock.advance(-100)  # an NTP step backwards
    moved = await store.update_job(job.id, progress=0.1)
    assert moved is not None
    assert moved.updated_at == job.updated_at


async def test_transition_is_a_compare_and_set(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    job = await make_job(store, session.id)
    # The guard fails: nothing changes, not even updated_at.
    backend.clock.advance()
    assert await store.transition_job(job.id, {R}, D, result={"assets": ["a"]}) is None
    assert await store.get_job(job.id) == job
    assert await store.transition_job(job.id, set(), R) is None
    assert await store.transition_job("missing", {Q}, R) is None

    started = await store.transition_job(job.id, {Q, R}, R, worker="w1", attempts_inc=True, started_at=7.0)
    assert started is not None
    assert (started.status, started.attempts, started.worker) == (R, 1, "w1")
    # A bare status string is one status, not a collection of letters.
    assert await store.transition_job(job.id, "queued", R) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="paused"):
        await store.transition_job(job.id, {"paused"}, D)  # type: ignore[arg-type]

    # The attempts fence: a worker presumed dead (it started attempt 1) loses to the one
    # that took the job over (attempt 2).
    taken = await store.transition_job(job.id, {R}, R, expect_attempts=1, worker="w2", attempts_inc=True)
    assert taken is not None
    assert (taken.worker, taken.attempts) == ("w2", 2)
    assert await store.transition_job(job.id, {R}, D, expect_attempts=1, result={"by": "w1"}) is None
    result = {"assets": ["s1", "s2"], "tracks": ["t1", "t2"]}
    done = await store.transition_job(
        job.id, {R}, D, expect_attempts=2, result=result, progress=1.0, finished_at=11.0
    )
    assert done is not None
    assert (done.status, done.result, done.progress, done.finished_at) == (D, result, 1.0, 11.0)
    # The result is written once: a duplicate delivery finishing later cannot replace it.
    assert await store.transition_job(job.id, {R}, D, result={"by": "duplicate"}) is None
    assert await store.get_job(job.id) == done


async def test_concurrent_transitions_have_exactly_one_winner(backend: Backend, store: Store) -> None:
    # Two stores on one database stand for two server processes; each job gets six
    # contenders at once, interleaved over both.
    other = backend.make()
    _, session, _ = await setup(store)
    jobs = [await running_job(store, session.id) for _ in range(8)]

    async def finish(target: Store, job_id: str, contender: int) -> JobRecord | None:
        return await target.transition_job(job_id, {R}, D, result={"by": contender}, progress=1.0)

    attempts = [
        finish(store if contender % 2 else other, job.id, contender) for job in jobs for contender in range(6)
    ]
    outcomes = await asyncio.gather(*attempts)
    for index, job in enumerate(jobs):
        mine = outcomes[index * 6 : index * 6 + 6]
        winners = [o for o in mine if o is not None]
        assert len(winners) == 1, (job.id, mine)
        assert await store.get_job(job.id) == winners[0]
        assert winners[0].status is D


async def test_a_claim_and_a_cancellation_race_to_one_consistent_outcome(
    backend: Backend, store: Store
) -> None:
    other = backend.make()
    _, session, _ = await setup(store)
    jobs = [await make_job(store, session.id) for _ in range(10)]
    claims = [other.transition_job(j.id, {Q}, R, worker="w", attempts_inc=True) for j in jobs]
    cancels = [store.request_job_cancel(j.id) for j in jobs]
    outcome = await asyncio.gather(*claims, *cancels)
    for index, job in enumerate(jobs):
        claim, cancel = outcome[index], outcome[len(jobs) + index]
        final = await store.get_job(job.id)
        assert final is not None
        assert cancel is not None
        assert final.cancel_requested
        if claim is None:  # the cancellation came first: nobody runs it
            assert final.status is C
            assert final.attempts == 0
        else:  # the worker came first: it runs, flagged to stop
            assert final.status is R
            assert final.attempts == 1


async def test_cancellation(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    queued = await make_job(store, session.id)
    running = await running_job(store, session.id)
    done = await running_job(store, session.id)
    done = await store.transition_job(done.id, {R}, D, finished_at=3.0) or done
    backend.clock.advance(5)

    cancelled = await store.request_job_cancel(queued.id)
    assert cancelled is not None
    assert (cancelled.status, cancelled.cancel_requested, cancelled.finished_at) == (
        C,
        True,
        backend.clock.now,
    )
    # The worker that later gets its delivery finds nothing to claim.
    assert await store.transition_job(queued.id, {Q}, R) is None

    flagged = await store.request_job_cancel(running.id)
    assert flagged is not None
    assert (flagged.status, flagged.cancel_requested, flagged.finished_at) == (R, True, None)
    stopped = await store.transition_job(running.id, {R}, C, finished_at=backend.clock.now)
    assert stopped is not None
    assert stopped.status is C

    assert await store.request_job_cancel(done.id) == done  # finished: unchanged
    assert await store.request_job_cancel("missing") is None


async def test_list_jobs_by_status(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    made = []
    for _ in range(4):
        backend.clock.advance()
        made.append(await make_job(store, session.id))
    running = await store.transition_job(made[1].id, {Q}, R)
    done = await store.transition_job(made[2].id, {Q}, D)
    assert running is not None
    assert done is not None
    assert [j.id for j in await store.list_jobs_by_status({Q})] == [made[0].id, made[3].id]
    assert [j.id for j in await store.list_jobs_by_status({Q, R})] == [
        m.id for m in (made[0], made[1], made[3])
    ]
    assert await store.list_jobs_by_status({R}) == [running]
    assert [j.id for j in await store.list_jobs_by_status({Q, R}, limit=2)] == [made[0].id, made[1].id]
    assert await store.list_jobs_by_status(set()) == []
    assert await store.list_jobs_by_status({F, C}) == []


async def test_recovery_requeues_or_fails_interrupted_jobs(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    queued = await make_job(store, session.id)
    fresh = await running_job(store, session.id)  # started once: retried
    await store.update_job(fresh.id, progress=0.4)
    backend.clock.advance()  # recovery reports jobs oldest first
    tired = await running_job(store, session.id)
    for _ in range(2):  # started three times in all: given up
        assert await store.transition_job(tired.id, {R}, R, attempts_inc=True) is not None
    backend.clock.advance()
    stopping = await running_job(store, session.id)
    await store.request_job_cancel(stopping.id)
    done = await running_job(store, session.id)
    done = await store.transition_job(done.id, {R}, D) or done
    backend.clock.advance(10)

    requeued, ended = await store.recover_jobs(3)
    assert requeued == [fresh.id]
    assert ended == [tired.id, stopping.id]
    again = await store.get_job(fresh.id)
    assert again is not None
    assert (again.status, again.worker, again.progress, again.started_at, again.error) == (
        Q,
        None,
        0.0,
        None,
        None,
    )
    assert again.attempts == 1  # attempts count starts, and this one has not started again yet
    gone = await store.get_job(tired.id)
    assert gone is not None
    assert gone.status is F
    assert gone.finished_at == backend.clock.now
    assert gone.error is not None
    assert "interrupted" in gone.error
    assert "3 times" in gone.error
    halted = await store.get_job(stopping.id)
    assert halted is not None
    assert halted.status is C
    assert halted.finished_at == backend.clock.now
    assert await store.get_job(queued.id) == queued  # queued jobs are the caller's to resubmit
    assert await store.get_job(done.id) == done
    assert await store.recover_jobs(3) == ([], [])  # idempotent

    with pytest.raises(ValueError, match="max_attempts"):
        await store.recover_jobs(0)


async def test_recovery_with_idle_s_leaves_live_workers_alone(backend: Backend, store: Store) -> None:
    _, session, _ = await setup(store)
    stale = await running_job(store, session.id)
    backend.clock.advance(60)
    live = await running_job(store, session.id)
    backend.clock.advance(20)
    await store.update_job(live.id, progress=0.3)  # its worker is still reporting
    backend.clock.advance(10)
    assert await store.recover_jobs(5, idle_s=30) == ([stale.id], [])
    still = await store.get_job(live.id)
    assert still is not None
    assert (still.status, still.worker, still.progress) == (R, "w1", 0.3)


async def test_deleting_a_session_deletes_its_jobs(backend: Backend, store: Store) -> None:
    ana, session, asset = await setup(store)
    other = await store.create_session(owner_id=ana.id, title="Other")
    await make_job(store, session.id, asset_id=asset.id)
    await running_job(store, session.id)
    kept = await make_job(store, other.id)
    assert await store.delete_session(session.id) is True
    assert await store.list_jobs(session.id) == []
    assert await backend.execute("SELECT id FROM jobs") == [(kept.id,)]


async def test_jobs_outlive_their_asset_and_their_author(backend: Backend, store: Store) -> None:
    _ana, session, asset = await setup(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    job = await make_job(store, session.id, asset_id=asset.id, created_by=bob.id)
    done = await store.transition_job(job.id, {Q}, D, result={"assets": ["x"]})
    assert done is not None
    assert await store.delete_asset(asset.id) is True
    await backend.execute(f"DELETE FROM users WHERE id = '{bob.id}'")
    got = await store.get_job(job.id)
    assert got is not None
    assert (got.asset_id, got.created_by, got.status, got.result) == (None, None, D, {"assets": ["x"]})


async def test_the_database_itself_refuses_impossible_rows(backend: Backend, store: Store) -> None:
    # A second line of defence for writers that bypass the store (a future migration, a tool).
    _, session, _ = await setup(store)
    job = await make_job(store, session.id)
    errors = (sqlite3.IntegrityError, asyncpg.CheckViolationError)
    for sql in (
        f"UPDATE jobs SET progress = 1.5 WHERE id = '{job.id}'",
        f"UPDATE jobs SET status = 'paused' WHERE id = '{job.id}'",
        f"UPDATE jobs SET kind = 'dance' WHERE id = '{job.id}'",
    ):
        with pytest.raises(errors, match=r"(?i)check"):
            await backend.execute(sql)
    assert await store.get_job(job.id) == job


async def test_upgrade_from_the_asset_schema_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    older = [m for m in load_migrations("sqlite") if m.version <= 2]
    with closing(sqlite3.connect(path)) as conn:
        for migration in older:
            conn.executescript(migration.sql)
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        conn.executemany("INSERT INTO schema_migrations VALUES (?, 0)", [(m.version,) for m in older])
        conn.execute("INSERT INTO users VALUES ('u1', 'a@b.co', 'a@b.co', 'A', 'h', 1)")
        conn.execute("INSERT INTO sessions VALUES ('s1', 'Old', 'u1', 1, 1)")
        conn.commit()
    store = SqliteStore(path)
    try:
        await store.migrate()
        assert await store.get_session("s1") is not None
        job = await make_job(store, "s1", created_by="u1")
        assert await store.list_jobs("s1") == [job]
    finally:
        await store.close()
