"""Job-row rules both backends share, kept in Python so the two cannot drift apart.

The backends differ only in placeholders and dialect; which columns a call changes, how JSON
is encoded and checked, and what recovery decides are decided here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from persistence.ports import JobKind, JobPriority, JobRecord, JobStatus

JOB_COLUMNS = (
    "id, session_id, asset_id, kind, params, priority, status, progress, error, result, created_by, "
    "created_at, started_at, finished_at, attempts, worker, cancel_requested, updated_at"
)
JOB_COLUMN_COUNT = len(JOB_COLUMNS.split(","))


def job_from_row(row: Any) -> JobRecord:
    """A `JobRecord` from a row selected with `JOB_COLUMNS` (sqlite3 row or asyncpg.Record)."""
    return JobRecord(
        id=row[0],
        session_id=row[1],
        asset_id=row[2],
        kind=JobKind(row[3]),
        params=json.loads(row[4]),
        priority=JobPriority(row[5]),
        status=JobStatus(row[6]),
        progress=float(row[7]),
        error=row[8],
        result=None if row[9] is None else json.loads(row[9]),
        created_by=row[10],
        created_at=float(row[11]),
        started_at=None if row[12] is None else float(row[12]),
        finished_at=None if row[13] is None else float(row[13]),
        attempts=int(row[14]),
        worker=row[15],
        cancel_requested=bool(row[16]),
        updated_at=float(row[17]),
    )


def job_params(record: JobRecord) -> tuple[Any, ...]:
    """`record` in `JOB_COLUMNS` order, JSON encoded, `cancel_requested` left to the backend."""
    return (
        record.id,
        record.session_id,
        record.asset_id,
        record.kind.value,
        encode_object(record.params, "params"),
        record.priority.value,
        record.status.value,
        record.progress,
        record.error,
        None if record.result is None else encode_object(record.result, "result"),
        record.created_by,
        record.created_at,
        record.started_at,
        record.finished_at,
        record.attempts,
        record.worker,
        record.cancel_requested,
        record.updated_at,
    )


def encode_object(value: Mapping[str, Any], what: str) -> str:
    """`value` as JSON text; a clear `ValueError` for anything that is not a JSON object."""
    if not isinstance(value, Mapping):
        raise ValueError(f"job {what} must be a JSON object (a mapping), not {type(value).__name__}")
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and other readers would reject them.
        return json.dumps(dict(value), allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job {what} cannot be stored as JSON: {exc}") from exc


def check_progress(progress: float) -> float:
    value = float(progress)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"job progress must be between 0 and 1, got {progress!r}")
    return value


def new_job_record(
    *,
    job_id: str,
    now: float,
    session_id: str,
    kind: JobKind,
    params: Mapping[str, Any],
    priority: JobPriority,
    asset_id: str | None,
    created_by: str | None,
) -> JobRecord:
    """A validated `queued` record for `create_job`, identical on every backend."""
    try:
        kind, priority = JobKind(kind), JobPriority(priority)
    except ValueError as exc:
        raise ValueError(f"invalid job: {exc}") from exc
    encode_object(params, "params")
    return JobRecord(
        id=job_id,
        session_id=session_id,
        asset_id=asset_id,
        kind=kind,
        params=dict(params),
        priority=priority,
        status=JobStatus.QUEUED,
        progress=0.0,
        error=None,
        result=None,
        created_by=created_by,
        created_at=now,
        started_at=None,
        finished_at=None,
        attempts=0,
        worker=None,
        cancel_requested=False,
        updated_at=now,
    )


@dataclass(frozen=True, slots=True)
class JobChanges:
    """The columns an update sets: `values` bind as parameters, `attempts_inc` adds one."""

    values: list[tuple[str, Any]]
    attempts_inc: bool


def job_changes(
    *,
    status: JobStatus | None,
    progress: float | None,
    error: str | None,
    result: Mapping[str, Any] | None,
    worker: str | None,
    started_at: float | None,
    finished_at: float | None,
    attempts_inc: bool,
) -> JobChanges:
    """What `update_job` / `transition_job` write; None leaves a column alone.

    `error` describes the latest status change, so a change of status replaces it even with
    None: a job re-queued after a failed attempt must not show the old error once it is done.
    """
    values: list[tuple[str, Any]] = []
    if status is not None:
        values.append(("status", JobStatus(status).value))
        values.append(("error", error))
    elif error is not None:
        values.append(("error", error))
    if progress is not None:
        values.append(("progress", check_progress(progress)))
    if result is not None:
        values.append(("result", encode_object(result, "result")))
    if worker is not None:
        values.append(("worker", worker))
    if started_at is not None:
        values.append(("started_at", float(started_at)))
    if finished_at is not None:
        values.append(("finished_at", float(finished_at)))
    return JobChanges(values=values, attempts_inc=bool(attempts_inc))


def status_values(statuses: Collection[JobStatus]) -> list[str]:
    """Validated status strings for an `IN` list; an unknown status is a `ValueError`."""
    if isinstance(statuses, str):
        # A bare "running" is a Collection of letters; every caller meant a one-element set.
        statuses = [JobStatus(statuses)]
    return sorted({JobStatus(s).value for s in statuses})


def check_max_attempts(max_attempts: int) -> int:
    if int(max_attempts) < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
    return int(max_attempts)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What recovery does to one interrupted (`running`) job."""

    job_id: str
    status: JobStatus  # QUEUED (requeued), CANCELLED or FAILED (ended)
    error: str | None


def recovery_for(job_id: str, *, attempts: int, cancel_requested: bool, max_attempts: int) -> Recovery:
    """The recovery policy for a job found `running` with no live worker."""
    if cancel_requested:
        # The user asked for it to stop: honour that rather than run it again.
        return Recovery(job_id, JobStatus.CANCELLED, None)
    if attempts < max_attempts:
        return Recovery(job_id, JobStatus.QUEUED, None)
    return Recovery(
        job_id,
        JobStatus.FAILED,
        f"interrupted: the server or worker running this job stopped before it finished, "
        f"and it had been started {attempts} times (the limit is {max_attempts})",
    )
