"""The scale-out `Store`: PostgreSQL through an asyncpg connection pool.

Construct it with `PostgresStore(dsn)` (or `PostgresStore(dsn, schema="name")` to keep every
table in one schema, created by `migrate()` if missing); no I/O happens until the first call,
which opens the pool (normally `migrate()`). `close()` waits for calls in flight and is final.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from persistence._common import (
    ASSET_COLUMNS,
    AUDIT_COLUMNS,
    CONSENT_COLUMNS,
    SESSION_COLUMNS,
    USER_COLUMNS,
    Clock,
    asset_from_row,
    audit_detail,
    audit_filter,
    audit_from_row,
    compaction_applies,
    consent_change,
    consent_from_row,
    email_key,
    new_asset_record,
    new_id,
    prefixed,
    session_from_row,
    sort_members,
    user_from_row,
)
from persistence._jobs import (
    JOB_COLUMN_COUNT,
    JOB_COLUMNS,
    JobChanges,
    check_max_attempts,
    job_changes,
    job_from_row,
    job_params,
    new_job_record,
    recovery_for,
    status_values,
)
from persistence._migrate import load_migrations, pending
from persistence._shares import SHARE_COLUMNS, share_from_row
from persistence.ports import (
    AssetKind,
    AssetRecord,
    AuditRecord,
    Conflict,
    Consent,
    Credentials,
    InviteRecord,
    JobKind,
    JobPriority,
    JobRecord,
    JobStatus,
    Member,
    NotFound,
    Role,
    RoomRecord,
    SessionRecord,
    ShareRecord,
    User,
)

# Lower-case only: the name is used both quoted (CREATE SCHEMA) and unquoted (search_path),
# and PostgreSQL folds unquoted names to lower case.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresStore:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        clock: Clock = time.time,
        min_size: int = 1,
        max_size: int = 10,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
        self._dsn = dsn
        self._schema = schema
        self._clock = clock
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._closed = False

    # pool and transactions ----------------------------------------------------
    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._pool is None:
                settings = {"search_path": self._schema} if self._schema else {}
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=self._min_size, max_size=self._max_size, server_settings=settings
                )
            return self._pool

    @asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[Any]:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction(**options):
            yield conn

    async def migrate(self) -> None:
        migrations = load_migrations("postgres")
        async with self._transaction() as conn:
            # Several servers may start at once against one database; the lock makes the
            # check-then-apply below run in one of them at a time (DDL is transactional here).
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self._schema))
            if self._schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            applied = {int(row[0]) for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in pending(migrations, applied):
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    migration.version,
                    time.time(),
                )

    async def close(self) -> None:
        async with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # accounts -----------------------------------------------------------------
    async def create_user(self, *, email: str, name: str, password_hash: str) -> User:
        user = User(id=new_id(), email=email, name=name, created_at=self._clock())
        pool = await self._get_pool()
        inserted = await pool.fetchval(
            "INSERT INTO users (id, email, email_key, name, password_hash, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email_key) DO NOTHING RETURNING id",
            user.id,
            email,
            email_key(email),
            name,
            password_hash,
            user.created_at,
        )
        if inserted is None:
            raise Conflict(f"the e-mail address {email!r} is already registered")
        return user

    async def get_user(self, user_id: str) -> User | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else user_from_row(row)

    async def get_credentials(self, email: str) -> Credentials | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE email_key = $1", email_key(email)
        )
        return None if row is None else Credentials(user=user_from_row(row), password_hash=row[4])

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        pool = await self._get_pool()
        status = await pool.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash
        )
        if not _count(status):
            raise NotFound(f"no user {user_id!r}")

    async def create_token(self, *, token_hash: str, user_id: str, expires_at: float) -> None:
        pool = await self._get_pool()
        try:
            inserted = await pool.fetchval(
                "INSERT INTO auth_tokens (token_hash, user_id, expires_at, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING RETURNING token_hash",
                token_hash,
                user_id,
                expires_at,
                self._clock(),
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"no user {user_id!r}") from exc
        if inserted is None:
            raise Conflict("a token with this hash already exists")

    async def user_for_token(self, token_hash: str, *, now: float) -> User | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {prefixed('u', USER_COLUMNS)} FROM auth_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.token_hash = $1 AND t.expires_at > $2",
            token_hash,
            now,
        )
        return None if row is None else user_from_row(row)

    async def revoke_token(self, token_hash: str) -> bool:
        pool = await self._get_pool()
        return bool(_count(await pool.execute("DELETE FROM auth_tokens WHERE token_hash = $1", token_hash)))

    # sessions -----------------------------------------------------------------
    async def create_session(self, *, owner_id: str, title: str) -> SessionRecord:
        now = self._clock()
        record = SessionRecord(id=new_id(), title=title, owner_id=owner_id, created_at=now, updated_at=now)
        async with self._transaction() as conn:
            try:
                await conn.execute(
                    f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                    record.id,
                    title,
                    owner_id,
                    now,
                    now,
                )
            except asyncpg.ForeignKeyViolationError as exc:
                raise NotFound(f"no user {owner_id!r}") from exc
            await conn.execute(
                "INSERT INTO session_members (session_id, user_id, role) VALUES ($1, $2, $3)",
                record.id,
                owner_id,
                Role.OWNER.value,
            )
        return record

    async def get_session(self, session_id: str) -> SessionRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND deleted_at IS NULL", session_id
        )
        return None if row is None else session_from_row(row)

    async def list_sessions(self, user_id: str) -> list[tuple[SessionRecord, Role]]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {prefixed('s', SESSION_COLUMNS)}, m.role "
            "FROM session_members m JOIN sessions s ON s.id = m.session_id "
            "WHERE m.user_id = $1 AND s.deleted_at IS NULL "
            "ORDER BY s.updated_at DESC, s.created_at DESC, s.id",
            user_id,
        )
        return [(session_from_row(row), Role(row[5])) for row in rows]

    async def update_session(self, session_id: str, *, title: str) -> SessionRecord | None:
        pool = await self._get_pool()
        # GREATEST: a wall clock stepped backwards must not make a session look older.
        row = await pool.fetchrow(
            "UPDATE sessions SET title = $2, updated_at = GREATEST(updated_at, $3) "
            "WHERE id = $1 AND deleted_at IS NULL "
            f"RETURNING {SESSION_COLUMNS}",
            session_id,
            title,
            self._clock(),
        )
        return None if row is None else session_from_row(row)

    async def delete_session(self, session_id: str) -> bool:
        async with self._transaction() as conn:
            # Memberships, asset rows and log rows go by ON DELETE CASCADE; the room shares the
            # session's id.
            deleted = _count(await conn.execute("DELETE FROM sessions WHERE id = $1", session_id))
            await conn.execute("DELETE FROM crdt_rooms WHERE room = $1", session_id)
        return bool(deleted)

    async def set_member(self, session_id: str, user_id: str, role: Role) -> None:
        pool = await self._get_pool()
        try:
            await pool.execute(
                "INSERT INTO session_members (session_id, user_id, role) VALUES ($1, $2, $3) "
                "ON CONFLICT (session_id, user_id) DO UPDATE SET role = EXCLUDED.role",
                session_id,
                user_id,
                Role(role).value,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"no session {session_id!r} or no user {user_id!r}") from exc

    async def remove_member(self, session_id: str, user_id: str) -> bool:
        pool = await self._get_pool()
        status = await pool.execute(
            "DELETE FROM session_members WHERE session_id = $1 AND user_id = $2", session_id, user_id
        )
        return bool(_count(status))

    async def get_role(self, session_id: str, user_id: str) -> Role | None:
        pool = await self._get_pool()
        role = await pool.fetchval(
            "SELECT role FROM session_members WHERE session_id = $1 AND user_id = $2", session_id, user_id
        )
        return None if role is None else Role(role)

    async def list_members(self, session_id: str) -> list[Member]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            "SELECT m.user_id, u.email, u.name, m.role "
            "FROM session_members m JOIN users u ON u.id = m.user_id WHERE m.session_id = $1",
            session_id,
        )
        return sort_members(Member(user_id=r[0], email=r[1], name=r[2], role=Role(r[3])) for r in rows)

    # CRDT rooms ---------------------------------------------------------------
    async def load_room(self, room: str) -> RoomRecord:
        # One snapshot for both reads, so a compaction committing in between cannot show a
        # snapshot together with log rows it already contains (or miss rows it deleted).
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            head = await conn.fetchrow(
                "SELECT snapshot, snapshot_seq, epoch FROM crdt_rooms WHERE room = $1", room
            )
            if head is None:
                return RoomRecord(snapshot=None, snapshot_seq=0, epoch=0, updates=[])
            rows = await conn.fetch(
                "SELECT seq, data FROM crdt_updates WHERE room = $1 AND seq > $2 ORDER BY seq",
                room,
                head["snapshot_seq"],
            )
        return RoomRecord(
            snapshot=head["snapshot"],
            snapshot_seq=int(head["snapshot_seq"]),
            epoch=int(head["epoch"]),
            updates=[(int(row[0]), bytes(row[1])) for row in rows],
        )

    async def append_updates(self, room: str, updates: Sequence[bytes]) -> int:
        pool = await self._get_pool()
        if not updates:
            last_seq = await pool.fetchval("SELECT last_seq FROM crdt_rooms WHERE room = $1", room)
            return 0 if last_seq is None else int(last_seq)
        # One statement, so one round trip and atomic on its own. The upsert locks the room
        # row until commit, so concurrent appends take turns reserving their ranges; the
        # rows' seqs are counted back from the new last_seq.
        last_seq = await pool.fetchval(
            """
            WITH alloc AS (
                INSERT INTO crdt_rooms AS r (room, last_seq) VALUES ($1, $2)
                ON CONFLICT (room) DO UPDATE SET last_seq = r.last_seq + EXCLUDED.last_seq
                RETURNING r.last_seq
            ), logged AS (
                INSERT INTO crdt_updates (room, seq, data)
                SELECT $1, alloc.last_seq - $2 + u.ord, u.data
                FROM alloc, unnest($3::bytea[]) WITH ORDINALITY AS u (data, ord)
            )
            SELECT last_seq FROM alloc
            """,
            room,
            len(updates),
            list(updates),
        )
        return int(last_seq)

    async def compact(self, room: str, *, upto_seq: int, state: bytes) -> None:
        async with self._transaction() as conn:
            # FOR UPDATE holds appends back, and the statements below are separate so each
            # sees every row committed before the lock was granted.
            head = await conn.fetchrow(
                "SELECT snapshot_seq, last_seq FROM crdt_rooms WHERE room = $1 FOR UPDATE", room
            )
            snapshot_seq, last_seq = (int(head[0]), int(head[1])) if head is not None else (0, 0)
            if not compaction_applies(upto_seq=upto_seq, snapshot_seq=snapshot_seq, last_seq=last_seq):
                return
            await conn.execute(
                "UPDATE crdt_rooms SET snapshot = $2, snapshot_seq = $3 WHERE room = $1",
                room,
                state,
                upto_seq,
            )
            await conn.execute("DELETE FROM crdt_updates WHERE room = $1 AND seq <= $2", room, upto_seq)

    async def reset_room(self, room: str, state: bytes) -> int:
        async with self._transaction() as conn:
            # snapshot_seq jumps to last_seq rather than 0, so seqs never go back and any
            # compaction computed before the reset is recognised as stale. The DELETE is a
            # separate statement so that it sees rows committed while the upsert waited.
            epoch = await conn.fetchval(
                "INSERT INTO crdt_rooms AS r (room, epoch, snapshot, snapshot_seq, last_seq) "
                "VALUES ($1, 1, $2, 0, 0) ON CONFLICT (room) DO UPDATE "
                "SET epoch = r.epoch + 1, snapshot = EXCLUDED.snapshot, snapshot_seq = r.last_seq "
                "RETURNING epoch",
                room,
                state,
            )
            await conn.execute("DELETE FROM crdt_updates WHERE room = $1", room)
        return int(epoch)

    # assets -------------------------------------------------------------------
    async def create_asset(
        self,
        *,
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
        asset_id: str | None = None,
    ) -> AssetRecord:
        record = new_asset_record(
            now=self._clock(),
            session_id=session_id,
            uploader_id=uploader_id,
            name=name,
            kind=kind,
            mime=mime,
            duration_s=duration_s,
            sample_rate=sample_rate,
            channels=channels,
            frames=frames,
            size_bytes=size_bytes,
            blob_key=blob_key,
            asset_id=asset_id,
        )
        pool = await self._get_pool()
        try:
            inserted = await pool.fetchval(
                f"INSERT INTO assets ({ASSET_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
                "ON CONFLICT DO NOTHING RETURNING id",
                record.id,
                record.session_id,
                record.uploader_id,
                record.name,
                record.kind.value,
                record.mime,
                record.duration_s,
                record.sample_rate,
                record.channels,
                record.frames,
                record.size_bytes,
                record.blob_key,
                record.created_at,
                record.processed_at,
                record.deleted_at,
                record.purged_at,
                record.purge_reason,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"no session {session_id!r} or no user {uploader_id!r}") from exc
        if inserted is None:
            raise Conflict(f"an asset with id {record.id!r} or blob key {blob_key!r} already exists")
        return record

    async def get_asset(self, asset_id: str) -> AssetRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1 AND deleted_at IS NULL", asset_id
        )
        return None if row is None else asset_from_row(row)

    async def list_assets(self, session_id: str, *, include_deleted: bool = False) -> list[AssetRecord]:
        pool = await self._get_pool()
        live_only = "" if include_deleted else " AND deleted_at IS NULL"
        rows = await pool.fetch(
            f"SELECT {ASSET_COLUMNS} FROM assets WHERE session_id = $1{live_only} ORDER BY created_at, id",
            session_id,
        )
        return [asset_from_row(row) for row in rows]

    async def mark_asset_processed(self, asset_id: str, at: float) -> bool:
        pool = await self._get_pool()
        status = await pool.execute(
            "UPDATE assets SET processed_at = $2 WHERE id = $1 AND deleted_at IS NULL", asset_id, at
        )
        return bool(_count(status))

    async def mark_asset_deleted(self, asset_id: str) -> bool:
        pool = await self._get_pool()
        status = await pool.execute(
            "UPDATE assets SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL", asset_id, self._clock()
        )
        return bool(_count(status))

    async def list_deleted_assets(self, *, limit: int = 100) -> list[AssetRecord]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {ASSET_COLUMNS} FROM assets WHERE deleted_at IS NOT NULL "
            "ORDER BY deleted_at, id LIMIT $1",
            max(0, int(limit)),
        )
        return [asset_from_row(row) for row in rows]

    async def delete_asset(self, asset_id: str) -> bool:
        pool = await self._get_pool()
        return bool(_count(await pool.execute("DELETE FROM assets WHERE id = $1", asset_id)))

    # jobs ---------------------------------------------------------------------
    async def create_job(
        self,
        *,
        session_id: str,
        kind: JobKind,
        params: Mapping[str, Any],
        priority: JobPriority = JobPriority.INTERACTIVE,
        asset_id: str | None = None,
        created_by: str | None = None,
    ) -> JobRecord:
        record = new_job_record(
            job_id=new_id(),
            now=self._clock(),
            session_id=session_id,
            kind=kind,
            params=params,
            priority=priority,
            asset_id=asset_id,
            created_by=created_by,
        )
        pool = await self._get_pool()
        placeholders = ", ".join(f"${i}" for i in range(1, JOB_COLUMN_COUNT + 1))
        try:
            await pool.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({placeholders})", *job_params(record)
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(
                f"no session {session_id!r}, no asset {asset_id!r} or no user {created_by!r}"
            ) from exc
        return record

    async def get_job(self, job_id: str) -> JobRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return None if row is None else job_from_row(row)

    async def list_jobs(self, session_id: str, *, limit: int = 100) -> list[JobRecord]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE session_id = $1 "
            "ORDER BY created_at DESC, id DESC LIMIT $2",
            session_id,
            max(0, int(limit)),
        )
        return [job_from_row(row) for row in rows]

    async def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: float | None = None,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
        worker: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        attempts_inc: bool = False,
    ) -> JobRecord | None:
        changes = job_changes(
            status=status,
            progress=progress,
            error=error,
            result=result,
            worker=worker,
            started_at=started_at,
            finished_at=finished_at,
            attempts_inc=attempts_inc,
        )
        return await self._change_job(job_id, changes, None, None)

    async def transition_job(
        self,
        job_id: str,
        from_statuses: Collection[JobStatus],
        to_status: JobStatus,
        *,
        expect_attempts: int | None = None,
        progress: float | None = None,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
        worker: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        attempts_inc: bool = False,
    ) -> JobRecord | None:
        changes = job_changes(
            status=to_status,
            progress=progress,
            error=error,
            result=result,
            worker=worker,
            started_at=started_at,
            finished_at=finished_at,
            attempts_inc=attempts_inc,
        )
        allowed = status_values(from_statuses)
        if not allowed:
            return None
        return await self._change_job(
            job_id, changes, allowed, None if expect_attempts is None else int(expect_attempts)
        )

    async def _change_job(
        self, job_id: str, changes: JobChanges, allowed: list[str] | None, expect_attempts: int | None
    ) -> JobRecord | None:
        # One statement: under READ COMMITTED a concurrent update of the row makes this one
        # wait and then re-check the WHERE clause against the committed row, so of several
        # compare-and-sets from the same state exactly one matches.
        params: list[Any] = [job_id, self._clock()]
        sets: list[str] = []
        for column, value in changes.values:
            params.append(value)
            sets.append(f"{column} = ${len(params)}")
        if changes.attempts_inc:
            sets.append("attempts = attempts + 1")
        sets.append("updated_at = GREATEST(updated_at, $2)")
        where = "id = $1"
        if allowed is not None:
            params.append(allowed)
            where += f" AND status = ANY(${len(params)}::text[])"
        if expect_attempts is not None:
            params.append(expect_attempts)
            where += f" AND attempts = ${len(params)}"
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"UPDATE jobs SET {', '.join(sets)} WHERE {where} RETURNING {JOB_COLUMNS}", *params
        )
        return None if row is None else job_from_row(row)

    async def request_job_cancel(self, job_id: str) -> JobRecord | None:
        pool = await self._get_pool()
        # The CASE arms all see the row as it was, so a queued job is cancelled outright and
        # a running one only flagged, in one atomic statement.
        row = await pool.fetchrow(
            "UPDATE jobs SET cancel_requested = true, "
            "error = CASE WHEN status = 'queued' THEN NULL ELSE error END, "
            "finished_at = CASE WHEN status = 'queued' THEN $2 ELSE finished_at END, "
            "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
            "updated_at = GREATEST(updated_at, $2) "
            f"WHERE id = $1 AND status IN ('queued', 'running') RETURNING {JOB_COLUMNS}",
            job_id,
            self._clock(),
        )
        if row is None:
            row = await pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return None if row is None else job_from_row(row)

    async def list_jobs_by_status(
        self, statuses: Collection[JobStatus], *, limit: int = 100
    ) -> list[JobRecord]:
        wanted = status_values(statuses)
        if not wanted:
            return []
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ANY($1::text[]) ORDER BY created_at, id LIMIT $2",
            wanted,
            max(0, int(limit)),
        )
        return [job_from_row(row) for row in rows]

    async def recover_jobs(
        self, max_attempts: int, *, idle_s: float | None = None
    ) -> tuple[list[str], list[str]]:
        max_attempts = check_max_attempts(max_attempts)
        now = self._clock()
        requeued: list[str] = []
        ended: list[str] = []
        async with self._transaction() as conn:
            # FOR UPDATE: a worker's concurrent write to one of these rows waits for the
            # decision instead of being overwritten by it (or overwriting it).
            if idle_s is None:
                rows = await conn.fetch(
                    "SELECT id, attempts, cancel_requested FROM jobs WHERE status = 'running' "
                    "ORDER BY created_at, id FOR UPDATE"
                )
            else:
                rows = await conn.fetch(
                    "SELECT id, attempts, cancel_requested FROM jobs WHERE status = 'running' "
                    "AND updated_at <= $1 ORDER BY created_at, id FOR UPDATE",
                    now - float(idle_s),
                )
            for row in rows:
                plan = recovery_for(
                    row[0], attempts=int(row[1]), cancel_requested=bool(row[2]), max_attempts=max_attempts
                )
                if plan.status is JobStatus.QUEUED:
                    await conn.execute(
                        "UPDATE jobs SET status = 'queued', error = NULL, worker = NULL, progress = 0, "
                        "started_at = NULL, updated_at = GREATEST(updated_at, $2) WHERE id = $1",
                        plan.job_id,
                        now,
                    )
                    requeued.append(plan.job_id)
                else:
                    await conn.execute(
                        "UPDATE jobs SET status = $2, error = $3, finished_at = $4, "
                        "updated_at = GREATEST(updated_at, $4) WHERE id = $1",
                        plan.job_id,
                        plan.status.value,
                        plan.error,
                        now,
                    )
                    ended.append(plan.job_id)
        return requeued, ended

    # trust: retention, soft deletion, consent, audit ---------------------------------
    async def mark_session_deleted(self, session_id: str) -> bool:
        pool = await self._get_pool()
        status = await pool.execute(
            "UPDATE sessions SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
            session_id,
            self._clock(),
        )
        return bool(_count(status))

    async def restore_session(self, session_id: str, *, deleted_after: float) -> SessionRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            "UPDATE sessions SET deleted_at = NULL WHERE id = $1 AND deleted_at > $2 "
            f"RETURNING {SESSION_COLUMNS}",
            session_id,
            deleted_after,
        )
        return None if row is None else session_from_row(row)

    async def list_deleted_sessions(self, *, before: float, limit: int = 100) -> list[SessionRecord]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE deleted_at <= $1 ORDER BY deleted_at, id LIMIT $2",
            before,
            max(0, int(limit)),
        )
        return [session_from_row(row) for row in rows]

    async def get_deleted_asset(self, asset_id: str) -> AssetRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1 AND deleted_at IS NOT NULL", asset_id
        )
        return None if row is None else asset_from_row(row)

    async def restore_asset(self, asset_id: str, *, deleted_after: float) -> AssetRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            "UPDATE assets SET deleted_at = NULL WHERE id = $1 AND deleted_at > $2 "
            f"RETURNING {ASSET_COLUMNS}",
            asset_id,
            deleted_after,
        )
        return None if row is None else asset_from_row(row)

    async def list_deleted_assets_before(self, before: float, *, limit: int = 100) -> list[AssetRecord]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {ASSET_COLUMNS} FROM assets WHERE deleted_at <= $1 ORDER BY deleted_at, id LIMIT $2",
            before,
            max(0, int(limit)),
        )
        return [asset_from_row(row) for row in rows]

    async def list_purgeable_sources(self, *, processed_before: float, limit: int = 100) -> list[AssetRecord]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {ASSET_COLUMNS} FROM assets WHERE kind = 'source' AND purged_at IS NULL "
            "AND processed_at IS NOT NULL AND processed_at <= $1 AND deleted_at IS NULL "
            "ORDER BY processed_at, id LIMIT $2",
            processed_before,
            max(0, int(limit)),
        )
        return [asset_from_row(row) for row in rows]

    async def mark_asset_purged(self, asset_id: str, *, at: float, reason: str) -> bool:
        pool = await self._get_pool()
        status = await pool.execute(
            "UPDATE assets SET purged_at = $2, purge_reason = $3 WHERE id = $1 AND purged_at IS NULL",
            asset_id,
            at,
            reason,
        )
        return bool(_count(status))

    async def get_consent(self, user_id: str) -> Consent | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(f"SELECT {CONSENT_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else consent_from_row(row)

    async def set_consent(
        self, user_id: str, *, at: float, training: bool | None = None, marketing: bool | None = None
    ) -> Consent | None:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                f"SELECT {CONSENT_COLUMNS} FROM users WHERE id = $1 FOR UPDATE", user_id
            )
            if row is None:
                return None
            new = consent_change(consent_from_row(row), at=at, training=training, marketing=marketing)
            await conn.execute(
                "UPDATE users SET training_opt_in = $2, training_opt_in_at = $3, marketing_opt_in = $4, "
                "marketing_opt_in_at = $5 WHERE id = $1",
                user_id,
                new.training_opt_in,
                new.training_opt_in_at,
                new.marketing_opt_in,
                new.marketing_opt_in_at,
            )
        return new

    async def list_training_assets(self, *, after_id: str = "", limit: int = 100) -> list[AssetRecord]:
        pool = await self._get_pool()
        # COLLATE "C": ids are compared bytewise, as SQLite does, so the cursor pages alike.
        rows = await pool.fetch(
            f"SELECT {prefixed('a', ASSET_COLUMNS)} FROM assets a "
            "JOIN users u ON u.id = a.uploader_id JOIN sessions s ON s.id = a.session_id "
            "WHERE u.training_opt_in AND a.kind = 'source' AND a.deleted_at IS NULL AND a.purged_at IS NULL "
            'AND s.deleted_at IS NULL AND a.id COLLATE "C" > $1 ORDER BY a.id COLLATE "C" LIMIT $2',
            after_id,
            max(0, int(limit)),
        )
        return [asset_from_row(row) for row in rows]

    async def append_audit(
        self,
        *,
        action: str,
        at: float,
        actor_id: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        session_id: str | None = None,
        ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        text = audit_detail(detail)
        pool = await self._get_pool()
        row = await pool.fetchrow(
            "INSERT INTO audit_log (at, action, actor_id, target_type, target_id, session_id, ip, detail) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {AUDIT_COLUMNS}",
            at,
            action,
            actor_id,
            target_type,
            target_id,
            session_id,
            ip,
            text,
        )
        return audit_from_row(row)

    async def list_audit(
        self,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        audit_filter(session_id, user_id)
        params: list[Any] = [session_id if session_id is not None else user_id]
        if session_id is not None:
            where = "session_id = $1"
        else:
            where = "(actor_id = $1 OR (target_type = 'user' AND target_id = $1))"
        if before_id is not None:
            params.append(int(before_id))
            where += f" AND id < ${len(params)}"
        params.append(max(0, int(limit)))
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {where} ORDER BY id DESC LIMIT ${len(params)}",
            *params,
        )
        return [audit_from_row(row) for row in rows]

    async def anonymise_audit_ips(self, *, before: float) -> int:
        pool = await self._get_pool()
        return _count(
            await pool.execute("UPDATE audit_log SET ip = NULL WHERE ip IS NOT NULL AND at <= $1", before)
        )

    # erasure --------------------------------------------------------------------------
    async def list_owned_sessions(self, user_id: str) -> list[SessionRecord]:
        pool = await self._get_pool()
        rows = await pool.fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE owner_id = $1 ORDER BY created_at, id", user_id
        )
        return [session_from_row(row) for row in rows]

    async def transfer_session(self, session_id: str, *, from_user_id: str, to_user_id: str) -> bool:
        async with self._transaction() as conn:
            moved = _count(
                await conn.execute(
                    "UPDATE sessions SET owner_id = $1 WHERE id = $2 AND owner_id = $3 AND $1 <> $3 "
                    "AND EXISTS (SELECT 1 FROM session_members WHERE session_id = $2 AND user_id = $1)",
                    to_user_id,
                    session_id,
                    from_user_id,
                )
            )
            if moved:
                await conn.execute(
                    "UPDATE session_members SET role = 'owner' WHERE session_id = $1 AND user_id = $2",
                    session_id,
                    to_user_id,
                )
        return bool(moved)

    async def erase_user(
        self, user_id: str, *, name: str, replacement: str, session_ids: Collection[str] = ()
    ) -> bool:
        async with self._transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM sessions WHERE owner_id = $1 LIMIT 1", user_id):
                raise Conflict(f"user {user_id!r} still owns sessions")
            if session_ids:
                await conn.execute(
                    "UPDATE audit_log SET detail = '{}' WHERE session_id = ANY($1::text[])", list(session_ids)
                )
            await conn.execute(
                "UPDATE audit_log SET detail = '{}' "
                "WHERE target_id IN (SELECT id FROM assets WHERE uploader_id = $1)",
                user_id,
            )
            await conn.execute(
                "UPDATE audit_log SET "
                "actor_id = CASE WHEN actor_id = $1 THEN NULL ELSE actor_id END, "
                "target_id = CASE WHEN target_id = $1 THEN NULL ELSE target_id END, "
                "ip = NULL, detail = '{}' WHERE actor_id = $1 OR target_id = $1",
                user_id,
            )
            if name:
                await conn.execute(
                    "UPDATE assets SET name = replace(name, $1, $2) WHERE uploader_id = $3",
                    name,
                    replacement,
                    user_id,
                )
            # Tokens and memberships go by ON DELETE CASCADE; assets and jobs keep their rows
            # with the uploader / author cleared (ON DELETE SET NULL).
            deleted = _count(await conn.execute("DELETE FROM users WHERE id = $1", user_id))
        return bool(deleted)

    # invites --------------------------------------------------------------------------
    async def create_invite(self, invite: InviteRecord) -> None:
        pool = await self._get_pool()
        try:
            await pool.execute(
                f"INSERT INTO invites ({_INVITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                invite.id,
                invite.session_id,
                Role(invite.role).value,
                invite.created_by,
                invite.created_at,
                invite.expires_at,
                invite.used_at,
                invite.used_by,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"no session {invite.session_id!r} or no user {invite.created_by!r}") from exc

    async def get_invite(self, invite_id: str) -> InviteRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(f"SELECT {_INVITE_COLUMNS} FROM invites WHERE id = $1", invite_id)
        return None if row is None else _invite_from_row(row)

    async def use_invite(self, invite_id: str, *, user_id: str, at: float) -> InviteRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            "UPDATE invites SET used_at = $1, used_by = $2 "
            f"WHERE id = $3 AND used_at IS NULL AND expires_at > $1 RETURNING {_INVITE_COLUMNS}",
            at,
            user_id,
            invite_id,
        )
        return None if row is None else _invite_from_row(row)

    # public preview share links -------------------------------------------------------------
    async def get_share(self, session_id: str) -> ShareRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {SHARE_COLUMNS} FROM session_shares WHERE session_id = $1", session_id
        )
        return None if row is None else share_from_row(row)

    async def set_share(
        self, session_id: str, *, enabled: bool, expires_at: float | None, by: str | None
    ) -> ShareRecord:
        pool = await self._get_pool()
        try:
            row = await pool.fetchrow(
                f"INSERT INTO session_shares ({SHARE_COLUMNS}) VALUES ($1, $2, 1, $3, $4, $5) "
                "ON CONFLICT (session_id) DO UPDATE SET enabled = excluded.enabled, "
                "version = session_shares.version + 1, expires_at = excluded.expires_at, "
                "updated_by = excluded.updated_by, updated_at = excluded.updated_at "
                f"RETURNING {SHARE_COLUMNS}",
                session_id,
                enabled,
                expires_at,
                by,
                self._clock(),
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"no session {session_id!r} or no user {by!r}") from exc
        return share_from_row(row)


def _count(status: str) -> int:
    """Rows affected, from a command status such as 'DELETE 3' or 'INSERT 0 1'."""
    return int(status.rsplit(" ", 1)[-1])


def _lock_key(schema: str | None) -> int:
    # A stable signed 64-bit key per schema, so stores in different schemas migrate in parallel.
    digest = hashlib.blake2b(f"escenario.migrate:{schema or ''}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_INVITE_COLUMNS = "id, session_id, role, created_by, created_at, expires_at, used_at, used_by"


def _invite_from_row(row: Any) -> InviteRecord:
    return InviteRecord(
        id=row[0],
        session_id=row[1],
        role=Role(row[2]),
        created_by=row[3],
        created_at=float(row[4]),
        expires_at=float(row[5]),
        used_at=None if row[6] is None else float(row[6]),
        used_by=row[7],
    )
