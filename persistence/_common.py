"""Rules both backends share, kept in Python so the two cannot drift apart."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from persistence.ports import (
    AssetKind,
    AssetRecord,
    AuditRecord,
    Consent,
    Member,
    Role,
    SessionRecord,
    User,
)

Clock = Callable[[], float]

USER_COLUMNS = "id, email, name, created_at"
SESSION_COLUMNS = "id, title, owner_id, created_at, updated_at"
ASSET_COLUMNS = (
    "id, session_id, uploader_id, name, kind, mime, duration_s, sample_rate, channels, frames, "
    "size_bytes, blob_key, created_at, processed_at, deleted_at, purged_at, purge_reason"
)
ASSET_COLUMN_COUNT = 17
AUDIT_COLUMNS = "id, at, action, actor_id, target_type, target_id, session_id, ip, detail"
CONSENT_COLUMNS = "training_opt_in, training_opt_in_at, marketing_opt_in, marketing_opt_in_at"


def prefixed(alias: str, columns: str) -> str:
    """`columns` qualified by a table alias, for joins: prefixed("u", "id, name") == "u.id, u.name"."""
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def new_id() -> str:
    # 128 random bits: ids appear in URLs and must not be guessable or enumerable.
    return secrets.token_hex(16)


def email_key(email: str) -> str:
    """The form e-mail addresses are compared in; the address itself is stored as given."""
    return email.lower()


def user_from_row(row: Any) -> User:
    """A `User` from a row selected with `USER_COLUMNS` (sqlite3.Row or asyncpg.Record)."""
    return User(id=row[0], email=row[1], name=row[2], created_at=float(row[3]))


def session_from_row(row: Any) -> SessionRecord:
    """A `SessionRecord` from a row selected with `SESSION_COLUMNS`."""
    return SessionRecord(
        id=row[0], title=row[1], owner_id=row[2], created_at=float(row[3]), updated_at=float(row[4])
    )


def asset_from_row(row: Any) -> AssetRecord:
    """An `AssetRecord` from a row selected with `ASSET_COLUMNS`."""
    return AssetRecord(
        id=row[0],
        session_id=row[1],
        uploader_id=row[2],
        name=row[3],
        kind=AssetKind(row[4]),
        mime=row[5],
        duration_s=float(row[6]),
        sample_rate=int(row[7]),
        channels=int(row[8]),
        frames=int(row[9]),
        size_bytes=int(row[10]),
        blob_key=row[11],
        created_at=float(row[12]),
        processed_at=None if row[13] is None else float(row[13]),
        deleted_at=None if row[14] is None else float(row[14]),
        purged_at=None if row[15] is None else float(row[15]),
        purge_reason=row[16],
    )


def audit_from_row(row: Any) -> AuditRecord:
    """An `AuditRecord` from a row selected with `AUDIT_COLUMNS`."""
    detail = json.loads(row[8]) if row[8] else {}
    return AuditRecord(
        id=int(row[0]),
        at=float(row[1]),
        action=row[2],
        actor_id=row[3],
        target_type=row[4],
        target_id=row[5],
        session_id=row[6],
        ip=row[7],
        detail=detail if isinstance(detail, dict) else {},
    )


def consent_from_row(row: Any) -> Consent:
    """A `Consent` from a row selected with `CONSENT_COLUMNS`."""
    return Consent(
        training_opt_in=bool(row[0]),
        training_opt_in_at=None if row[1] is None else float(row[1]),
        marketing_opt_in=bool(row[2]),
        marketing_opt_in_at=None if row[3] is None else float(row[3]),
    )


def audit_detail(detail: Mapping[str, Any] | None) -> str:
    """The JSON text an entry's detail is stored as (a JSON object; ValueError otherwise)."""
    if detail is None:
        return "{}"
    if not isinstance(detail, Mapping):
        raise ValueError("audit detail must be a JSON object")
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))


def audit_filter(session_id: str | None, user_id: str | None) -> None:
    if (session_id is None) == (user_id is None):
        raise ValueError("list_audit needs exactly one of session_id and user_id")


def consent_change(old: Consent, *, at: float, training: bool | None, marketing: bool | None) -> Consent:
    """The consent after a change; a flag's timestamp moves only when the flag does."""
    t = old.training_opt_in if training is None else bool(training)
    m = old.marketing_opt_in if marketing is None else bool(marketing)
    return Consent(
        training_opt_in=t,
        training_opt_in_at=at if t != old.training_opt_in else old.training_opt_in_at,
        marketing_opt_in=m,
        marketing_opt_in_at=at if m != old.marketing_opt_in else old.marketing_opt_in_at,
    )


def check_asset_fields(
    *, kind: AssetKind, sample_rate: int, channels: int, frames: int, size_bytes: int
) -> None:
    """Reject impossible metadata before it reaches either database (both would store it)."""
    AssetKind(kind)
    if sample_rate <= 0 or channels <= 0 or frames < 0 or size_bytes < 0:
        raise ValueError(
            f"impossible asset metadata: sample_rate={sample_rate} channels={channels} "
            f"frames={frames} size_bytes={size_bytes}"
        )


def new_asset_record(
    *,
    now: float,
    session_id: str,
    uploader_id: str | None,
    name: str,
    kind: AssetKind,
    mime: str,
    duration_s: float,
    sample_rate: int,
    channels: int,
    frames: int,
    size_bytes: int,
    blob_key: str,
    asset_id: str | None,
) -> AssetRecord:
    """A validated record for `create_asset`, identical on every backend."""
    check_asset_fields(
        kind=kind, sample_rate=sample_rate, channels=channels, frames=frames, size_bytes=size_bytes
    )
    return AssetRecord(
        id=asset_id or new_id(),
        session_id=session_id,
        uploader_id=uploader_id,
        name=name,
        kind=AssetKind(kind),
        mime=mime,
        duration_s=float(duration_s),
        sample_rate=int(sample_rate),
        channels=int(channels),
        frames=int(frames),
        size_bytes=int(size_bytes),
        blob_key=blob_key,
        created_at=now,
        processed_at=None,
        deleted_at=None,
    )


def sort_members(members: Iterable[Member]) -> list[Member]:
    """Owner first, then by name.

    Sorted here rather than in SQL because SQLite compares text bytewise while PostgreSQL
    follows the database collation; member lists are small.
    """
    return sorted(members, key=lambda m: (m.role is not Role.OWNER, m.name.casefold(), m.name, m.user_id))


def compaction_applies(*, upto_seq: int, snapshot_seq: int, last_seq: int) -> bool:
    """Whether `compact(upto_seq=…)` should replace a snapshot taken at `snapshot_seq`.

    A snapshot claiming rows that were never appended would make later appends (which get
    seqs <= upto_seq) invisible behind it, so that is a caller bug, not a no-op. A stale
    compaction (including one computed before a reset, since reset moves snapshot_seq up to
    last_seq) is ignored.
    """
    if upto_seq > last_seq:
        raise ValueError(f"cannot compact up to seq {upto_seq}: the room's last seq is {last_seq}")
    return upto_seq > snapshot_seq
