"""Rows of `session_shares` (migration 0006), shared by both SQL backends."""

from __future__ import annotations

from typing import Any

from persistence.ports import ShareRecord

SHARE_COLUMNS = "session_id, enabled, version, expires_at, updated_by, updated_at"


def share_from_row(row: Any) -> ShareRecord:
    return ShareRecord(
        session_id=row[0],
        enabled=bool(row[1]),
        version=int(row[2]),
        expires_at=None if row[3] is None else float(row[3]),
        updated_by=row[4],
        updated_at=float(row[5]),
    )
