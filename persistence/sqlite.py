"""The embedded `Store`: one SQLite file, for a laptop or a single-node server.

One aiosqlite connection serves every call. Its statements already run one at a time on
aiosqlite's thread, but a transaction spans several awaits, so an `asyncio.Lock` keeps one
operation's statements from interleaving with another's. The connection opens on first use
(normally `migrate()`); `close()` is final.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from persistence._common import (
    ASSET_COLUMN_COUNT,
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
from persistence._migrate import load_migrations, pending, sqlite_statements
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

# RETURNING arrived in 3.35 (2021); older system libraries fail with obscure syntax errors.
_MIN_SQLITE = (3, 35, 0)

_T = TypeVar("_T")

# Commits on the event-loop connection between two passive WAL checkpoints (~4 MiB of WAL for
# small updates); the loop connection itself never checkpoints.
_CHECKPOINT_EVERY = 1000

log = logging.getLogger(__name__)


class SqliteStore:
    def __init__(self, path: str | Path, *, clock: Clock = time.time, busy_timeout_ms: int = 5000) -> None:
        self._path: str | Path = path if str(path) == ":memory:" else Path(path)
        self._clock = clock
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._fast: sqlite3.Connection | None = None
        self._fast_commits = 0
        self._checkpoint: asyncio.Task[None] | None = None

    # connection and transactions ----------------------------------------------
    async def _connection(self) -> aiosqlite.Connection:
        """The open connection; call with the lock held."""
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._db is None:
            self._db = await self._open()
        return self._db

    async def _open(self) -> aiosqlite.Connection:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; Escenario needs 3.35 or newer")
        if isinstance(self._path, Path):
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly, never implicitly by sqlite3.
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await _run(db, f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            await self._enable_wal(db)
            # synchronous=NORMAL in WAL mode is still durable against a killed process; only a
            # power loss can drop the last commits.
            await _run(db, "PRAGMA synchronous = NORMAL")
            await _run(db, "PRAGMA foreign_keys = ON")
        except BaseException:
            await db.close()
            raise
        return db

    async def _enable_wal(self, db: aiosqlite.Connection) -> None:
        # WAL lets readers in other processes (backups, tools) run during writes. Switching a
        # new file to WAL needs an exclusive lock and SQLite does not call the busy handler
        # for it, so a second process opening the file at the same moment retries by hand.
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                await _run(db, "PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield await self._connection()

    @asynccontextmanager
    async def _transaction(
        self, mode: Literal["IMMEDIATE", "DEFERRED"] = "IMMEDIATE"
    ) -> AsyncIterator[aiosqlite.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes never both read and then
        # fail to upgrade to writing (which SQLite reports as SQLITE_BUSY without waiting).
        async with self._lock:
            db = await self._connection()
            await _run(db, f"BEGIN {mode}")
            try:
                yield db
            except BaseException:
                # Shielded so a cancelled caller still leaves the connection out of the
                # transaction; rollback() and commit() do nothing when none is open.
                await asyncio.shield(db.rollback())
                raise
            await asyncio.shield(db.commit())

    async def migrate(self) -> None:
        migrations = load_migrations("sqlite")
        async with self._transaction() as db:
            await _run(
                db,
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)",
            )
            applied = {
                int(row[0]) for row in await db.execute_fetchall("SELECT version FROM schema_migrations")
            }
            for migration in pending(migrations, applied):
                for statement in sqlite_statements(migration.sql):
                    await _run(db, statement)
                await _run(
                    db,
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (migration.version, time.time()),
                )

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        async with self._lock:
            self._closed = True
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    # accounts -----------------------------------------------------------------
    async def create_user(self, *, email: str, name: str, password_hash: str) -> User:
        user = User(id=new_id(), email=email, name=name, created_at=self._clock())
        async with self._transaction() as db:
            inserted = await _run(
                db,
                "INSERT INTO users (id, email, email_key, name, password_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (email_key) DO NOTHING",
                (user.id, email, email_key(email), name, password_hash, user.created_at),
            )
        if not inserted:
            raise Conflict(f"the e-mail address {email!r} is already registered")
        return user

    async def get_user(self, user_id: str) -> User | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _first(user_from_row(row) for row in rows)

    async def get_credentials(self, email: str) -> Credentials | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE email_key = ?", (email_key(email),)
            )
        return _first(Credentials(user=user_from_row(row), password_hash=row[4]) for row in rows)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._transaction() as db:
            changed = await _run(
                db, "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            )
        if not changed:
            raise NotFound(f"no user {user_id!r}")

    async def create_token(self, *, token_hash: str, user_id: str, expires_at: float) -> None:
        async with self._transaction() as db:
            with _foreign_key_is_not_found(f"no user {user_id!r}"):
                inserted = await _run(
                    db,
                    "INSERT INTO auth_tokens (token_hash, user_id, expires_at, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                    (token_hash, user_id, expires_at, self._clock()),
                )
        if not inserted:
            raise Conflict("a token with this hash already exists")

    async def user_for_token(self, token_hash: str, *, now: float) -> User | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {prefixed('u', USER_COLUMNS)} FROM auth_tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.token_hash = ? AND t.expires_at > ?",
                (token_hash, now),
            )
        return _first(user_from_row(row) for row in rows)

    async def revoke_token(self, token_hash: str) -> bool:
        async with self._transaction() as db:
            return bool(await _run(db, "DELETE FROM auth_tokens WHERE token_hash = ?", (token_hash,)))

    # sessions -----------------------------------------------------------------
    async def create_session(self, *, owner_id: str, title: str) -> SessionRecord:
        now = self._clock()
        record = SessionRecord(id=new_id(), title=title, owner_id=owner_id, created_at=now, updated_at=now)
        async with self._transaction() as db:
            with _foreign_key_is_not_found(f"no user {owner_id!r}"):
                await _run(
                    db,
                    f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (record.id, title, owner_id, now, now),
                )
            await _run(
                db,
                "INSERT INTO session_members (session_id, user_id, role) VALUES (?, ?, ?)",
                (record.id, owner_id, Role.OWNER.value),
            )
        return record

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ? AND deleted_at IS NULL", (session_id,)
            )
        return _first(session_from_row(row) for row in rows)

    async def list_sessions(self, user_id: str) -> list[tuple[SessionRecord, Role]]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {prefixed('s', SESSION_COLUMNS)}, m.role "
                "FROM session_members m JOIN sessions s ON s.id = m.session_id "
                "WHERE m.user_id = ? AND s.deleted_at IS NULL "
                "ORDER BY s.updated_at DESC, s.created_at DESC, s.id",
                (user_id,),
            )
        return [(session_from_row(row), Role(row[5])) for row in rows]

    async def update_session(self, session_id: str, *, title: str) -> SessionRecord | None:
        async with self._transaction() as db:
            # max(): a wall clock stepped backwards must not make a session look older.
            rows = await db.execute_fetchall(
                "UPDATE sessions SET title = ?, updated_at = max(updated_at, ?) "
                "WHERE id = ? AND deleted_at IS NULL "
                f"RETURNING {SESSION_COLUMNS}",
                (title, self._clock(), session_id),
            )
        return _first(session_from_row(row) for row in rows)

    async def delete_session(self, session_id: str) -> bool:
        async with self._transaction() as db:
            # Memberships, asset rows and log rows go by ON DELETE CASCADE; the room shares the
            # session's id.
            deleted = await _run(db, "DELETE FROM sessions WHERE id = ?", (session_id,))
            await _run(db, "DELETE FROM crdt_rooms WHERE room = ?", (session_id,))
        return bool(deleted)

    async def set_member(self, session_id: str, user_id: str, role: Role) -> None:
        async with self._transaction() as db:
            with _foreign_key_is_not_found(f"no session {session_id!r} or no user {user_id!r}"):
                await _run(
                    db,
                    "INSERT INTO session_members (session_id, user_id, role) VALUES (?, ?, ?) "
                    "ON CONFLICT (session_id, user_id) DO UPDATE SET role = excluded.role",
                    (session_id, user_id, Role(role).value),
                )

    async def remove_member(self, session_id: str, user_id: str) -> bool:
        async with self._transaction() as db:
            return bool(
                await _run(
                    db,
                    "DELETE FROM session_members WHERE session_id = ? AND user_id = ?",
                    (session_id, user_id),
                )
            )

    async def get_role(self, session_id: str, user_id: str) -> Role | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                "SELECT role FROM session_members WHERE session_id = ? AND user_id = ?", (session_id, user_id)
            )
        return _first(Role(row[0]) for row in rows)

    async def list_members(self, session_id: str) -> list[Member]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                "SELECT m.user_id, u.email, u.name, m.role "
                "FROM session_members m JOIN users u ON u.id = m.user_id WHERE m.session_id = ?",
                (session_id,),
            )
        return sort_members(Member(user_id=r[0], email=r[1], name=r[2], role=Role(r[3])) for r in rows)

    # CRDT rooms ---------------------------------------------------------------
    async def load_room(self, room: str) -> RoomRecord:
        # A read transaction, so a writer in another process cannot compact between the two reads.
        async with self._transaction("DEFERRED") as db:
            rooms = list(
                await db.execute_fetchall(
                    "SELECT snapshot, snapshot_seq, epoch FROM crdt_rooms WHERE room = ?", (room,)
                )
            )
            if not rooms:
                return RoomRecord(snapshot=None, snapshot_seq=0, epoch=0, updates=[])
            snapshot, snapshot_seq, epoch = rooms[0]
            rows = await db.execute_fetchall(
                "SELECT seq, data FROM crdt_updates WHERE room = ? AND seq > ? ORDER BY seq",
                (room, snapshot_seq),
            )
        return RoomRecord(
            snapshot=snapshot,
            snapshot_seq=int(snapshot_seq),
            epoch=int(epoch),
            updates=[(int(seq), bytes(data)) for seq, data in rows],
        )

    async def append_updates(self, room: str, updates: Sequence[bytes]) -> int:
        if not updates:
            async with self._locked() as db:
                rows = await db.execute_fetchall("SELECT last_seq FROM crdt_rooms WHERE room = ?", (room,))
            return int(_first(row[0] for row in rows) or 0)
        # The hot path of every edit: the whole transaction runs in one trip to the database
        # thread instead of one trip per statement.
        return await self._in_thread(_append_updates_sync, room, list(updates))

    def append_updates_nowait(self, room: str, updates: Sequence[bytes]) -> int | None:
        """`FastAppend`: append on the calling (event-loop) thread, or None if that would wait.

        A small WAL commit without fsync takes tens of microseconds, less than the hand-off to
        aiosqlite's thread costs. It must never block the loop, so this connection neither
        waits for locks (busy_timeout 0: another writer means None, and the caller takes the
        async path) nor checkpoints (that may fsync); checkpoints run on the store's thread.
        """
        if self._closed or not updates or str(self._path) == ":memory:":
            return None  # an in-memory database is private to its one connection
        conn = self._fast
        if conn is None:
            if self._db is None:
                return None  # not opened (migrated) yet
            conn = self._fast = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            last_seq = _append_updates_sync(conn, room, list(updates))
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise
        self._fast_commits += 1
        if self._fast_commits % _CHECKPOINT_EVERY == 0 and self._checkpoint is None:
            self._checkpoint = asyncio.get_running_loop().create_task(self._passive_checkpoint())
        return last_seq

    async def _passive_checkpoint(self) -> None:
        try:
            async with self._locked() as db:
                await _run(db, "PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed")
        finally:
            self._checkpoint = None

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(raw_connection, *args)` on aiosqlite's thread, holding the store's lock.

        aiosqlite has no public call for this; `_execute` and `_conn` are what its own
        methods use, and a test covers the path.
        """
        async with self._lock:
            db: Any = await self._connection()
            return cast(_T, await db._execute(fn, db._conn, *args))

    async def compact(self, room: str, *, upto_seq: int, state: bytes) -> None:
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT snapshot_seq, last_seq FROM crdt_rooms WHERE room = ?", (room,)
                )
            )
            snapshot_seq, last_seq = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
            if not compaction_applies(upto_seq=upto_seq, snapshot_seq=snapshot_seq, last_seq=last_seq):
                return
            await _run(
                db,
                "UPDATE crdt_rooms SET snapshot = ?, snapshot_seq = ? WHERE room = ?",
                (state, upto_seq, room),
            )
            await _run(db, "DELETE FROM crdt_updates WHERE room = ? AND seq <= ?", (room, upto_seq))

    async def reset_room(self, room: str, state: bytes) -> int:
        async with self._transaction() as db:
            # snapshot_seq jumps to last_seq rather than 0, so seqs never go back and any
            # compaction computed before the reset is recognised as stale.
            rows = await db.execute_fetchall(
                "INSERT INTO crdt_rooms (room, epoch, snapshot, snapshot_seq, last_seq) "
                "VALUES (?, 1, ?, 0, 0) ON CONFLICT (room) DO UPDATE "
                "SET epoch = epoch + 1, snapshot = excluded.snapshot, snapshot_seq = last_seq "
                "RETURNING epoch",
                (room, state),
            )
            epoch = int(next(iter(rows))[0])
            await _run(db, "DELETE FROM crdt_updates WHERE room = ?", (room,))
        return epoch

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
        async with self._transaction() as db:
            with _foreign_key_is_not_found(f"no session {session_id!r} or no user {uploader_id!r}"):
                inserted = await _run(
                    db,
                    f"INSERT INTO assets ({ASSET_COLUMNS}) VALUES ({', '.join('?' * ASSET_COLUMN_COUNT)}) "
                    "ON CONFLICT DO NOTHING",
                    _asset_params(record),
                )
        if not inserted:
            raise Conflict(f"an asset with id {record.id!r} or blob key {blob_key!r} already exists")
        return record

    async def get_asset(self, asset_id: str) -> AssetRecord | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = ? AND deleted_at IS NULL", (asset_id,)
            )
        return _first(asset_from_row(row) for row in rows)

    async def list_assets(self, session_id: str, *, include_deleted: bool = False) -> list[AssetRecord]:
        live_only = "" if include_deleted else " AND deleted_at IS NULL"
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE session_id = ?{live_only} ORDER BY created_at, id",
                (session_id,),
            )
        return [asset_from_row(row) for row in rows]

    async def mark_asset_processed(self, asset_id: str, at: float) -> bool:
        async with self._transaction() as db:
            return bool(
                await _run(
                    db,
                    "UPDATE assets SET processed_at = ? WHERE id = ? AND deleted_at IS NULL",
                    (at, asset_id),
                )
            )

    async def mark_asset_deleted(self, asset_id: str) -> bool:
        async with self._transaction() as db:
            return bool(
                await _run(
                    db,
                    "UPDATE assets SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                    (self._clock(), asset_id),
                )
            )

    async def list_deleted_assets(self, *, limit: int = 100) -> list[AssetRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE deleted_at IS NOT NULL "
                "ORDER BY deleted_at, id LIMIT ?",
                (max(0, int(limit)),),
            )
        return [asset_from_row(row) for row in rows]

    async def delete_asset(self, asset_id: str) -> bool:
        async with self._transaction() as db:
            return bool(await _run(db, "DELETE FROM assets WHERE id = ?", (asset_id,)))

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
        async with self._transaction() as db:
            with _foreign_key_is_not_found(
                f"no session {session_id!r}, no asset {asset_id!r} or no user {created_by!r}"
            ):
                await _run(
                    db,
                    f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join('?' * JOB_COLUMN_COUNT)})",
                    job_params(record),
                )
        return record

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _first(job_from_row(row) for row in rows)

    async def list_jobs(self, session_id: str, *, limit: int = 100) -> list[JobRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE session_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (session_id, max(0, int(limit))),
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
        return await self._change_job(job_id, changes, "", ())

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
        guard = f" AND status IN ({', '.join('?' * len(allowed))})"
        guard_params: list[Any] = list(allowed)
        if expect_attempts is not None:
            guard += " AND attempts = ?"
            guard_params.append(int(expect_attempts))
        return await self._change_job(job_id, changes, guard, guard_params)

    async def _change_job(
        self, job_id: str, changes: JobChanges, guard: str, guard_params: Sequence[Any]
    ) -> JobRecord | None:
        # One statement in autocommit: atomic on its own (the guard is evaluated under the
        # write lock, so concurrent compare-and-sets serialise), and one hop to the database
        # thread, which keeps frequent progress writes cheap.
        sets = [f"{column} = ?" for column, _ in changes.values]
        if changes.attempts_inc:
            sets.append("attempts = attempts + 1")
        sets.append("updated_at = max(updated_at, ?)")
        params = [value for _, value in changes.values]
        params += [self._clock(), job_id, *guard_params]
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?{guard} RETURNING {JOB_COLUMNS}", params
            )
        return _first(job_from_row(row) for row in rows)

    async def request_job_cancel(self, job_id: str) -> JobRecord | None:
        now = self._clock()
        async with self._locked() as db:
            # The CASE arms all see the row as it was, so a queued job is cancelled outright
            # and a running one only flagged, in one atomic statement.
            rows = await db.execute_fetchall(
                "UPDATE jobs SET cancel_requested = 1, "
                "error = CASE WHEN status = 'queued' THEN NULL ELSE error END, "
                "finished_at = CASE WHEN status = 'queued' THEN ? ELSE finished_at END, "
                "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
                "updated_at = max(updated_at, ?) "
                f"WHERE id = ? AND status IN ('queued', 'running') RETURNING {JOB_COLUMNS}",
                (now, now, job_id),
            )
            if not rows:
                rows = await db.execute_fetchall(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _first(job_from_row(row) for row in rows)

    async def list_jobs_by_status(
        self, statuses: Collection[JobStatus], *, limit: int = 100
    ) -> list[JobRecord]:
        wanted = status_values(statuses)
        if not wanted:
            return []
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ({', '.join('?' * len(wanted))}) "
                "ORDER BY created_at, id LIMIT ?",
                (*wanted, max(0, int(limit))),
            )
        return [job_from_row(row) for row in rows]

    async def recover_jobs(
        self, max_attempts: int, *, idle_s: float | None = None
    ) -> tuple[list[str], list[str]]:
        max_attempts = check_max_attempts(max_attempts)
        now = self._clock()
        idle = "" if idle_s is None else " AND updated_at <= ?"
        requeued: list[str] = []
        ended: list[str] = []
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                f"SELECT id, attempts, cancel_requested FROM jobs WHERE status = 'running'{idle} "
                "ORDER BY created_at, id",
                () if idle_s is None else (now - float(idle_s),),
            )
            for row in rows:
                plan = recovery_for(
                    row[0], attempts=int(row[1]), cancel_requested=bool(row[2]), max_attempts=max_attempts
                )
                if plan.status is JobStatus.QUEUED:
                    await _run(
                        db,
                        "UPDATE jobs SET status = 'queued', error = NULL, worker = NULL, progress = 0, "
                        "started_at = NULL, updated_at = max(updated_at, ?) WHERE id = ?",
                        (now, plan.job_id),
                    )
                    requeued.append(plan.job_id)
                else:
                    await _run(
                        db,
                        "UPDATE jobs SET status = ?, error = ?, finished_at = ?, "
                        "updated_at = max(updated_at, ?) WHERE id = ?",
                        (plan.status.value, plan.error, now, now, plan.job_id),
                    )
                    ended.append(plan.job_id)
        return requeued, ended

    # trust: retention, soft deletion, consent, audit ---------------------------------
    async def mark_session_deleted(self, session_id: str) -> bool:
        async with self._transaction() as db:
            return bool(
                await _run(
                    db,
                    "UPDATE sessions SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                    (self._clock(), session_id),
                )
            )

    async def restore_session(self, session_id: str, *, deleted_after: float) -> SessionRecord | None:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE sessions SET deleted_at = NULL WHERE id = ? AND deleted_at > ? "
                f"RETURNING {SESSION_COLUMNS}",
                (session_id, deleted_after),
            )
        return _first(session_from_row(row) for row in rows)

    async def list_deleted_sessions(self, *, before: float, limit: int = 100) -> list[SessionRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE deleted_at <= ? "
                "ORDER BY deleted_at, id LIMIT ?",
                (before, max(0, int(limit))),
            )
        return [session_from_row(row) for row in rows]

    async def get_deleted_asset(self, asset_id: str) -> AssetRecord | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = ? AND deleted_at IS NOT NULL", (asset_id,)
            )
        return _first(asset_from_row(row) for row in rows)

    async def restore_asset(self, asset_id: str, *, deleted_after: float) -> AssetRecord | None:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE assets SET deleted_at = NULL WHERE id = ? AND deleted_at > ? "
                f"RETURNING {ASSET_COLUMNS}",
                (asset_id, deleted_after),
            )
        return _first(asset_from_row(row) for row in rows)

    async def list_deleted_assets_before(self, before: float, *, limit: int = 100) -> list[AssetRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE deleted_at <= ? ORDER BY deleted_at, id LIMIT ?",
                (before, max(0, int(limit))),
            )
        return [asset_from_row(row) for row in rows]

    async def list_purgeable_sources(self, *, processed_before: float, limit: int = 100) -> list[AssetRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE kind = 'source' AND purged_at IS NULL "
                "AND processed_at IS NOT NULL AND processed_at <= ? AND deleted_at IS NULL "
                "ORDER BY processed_at, id LIMIT ?",
                (processed_before, max(0, int(limit))),
            )
        return [asset_from_row(row) for row in rows]

    async def mark_asset_purged(self, asset_id: str, *, at: float, reason: str) -> bool:
        async with self._transaction() as db:
            return bool(
                await _run(
                    db,
                    "UPDATE assets SET purged_at = ?, purge_reason = ? WHERE id = ? AND purged_at IS NULL",
                    (at, reason, asset_id),
                )
            )

    async def get_consent(self, user_id: str) -> Consent | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(f"SELECT {CONSENT_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _first(consent_from_row(row) for row in rows)

    async def set_consent(
        self, user_id: str, *, at: float, training: bool | None = None, marketing: bool | None = None
    ) -> Consent | None:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(f"SELECT {CONSENT_COLUMNS} FROM users WHERE id = ?", (user_id,))
            old = _first(consent_from_row(row) for row in rows)
            if old is None:
                return None
            new = consent_change(old, at=at, training=training, marketing=marketing)
            await _run(
                db,
                "UPDATE users SET training_opt_in = ?, training_opt_in_at = ?, marketing_opt_in = ?, "
                "marketing_opt_in_at = ? WHERE id = ?",
                (
                    int(new.training_opt_in),
                    new.training_opt_in_at,
                    int(new.marketing_opt_in),
                    new.marketing_opt_in_at,
                    user_id,
                ),
            )
        return new

    async def list_training_assets(self, *, after_id: str = "", limit: int = 100) -> list[AssetRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {prefixed('a', ASSET_COLUMNS)} FROM assets a "
                "JOIN users u ON u.id = a.uploader_id JOIN sessions s ON s.id = a.session_id "
                "WHERE u.training_opt_in = 1 AND a.kind = 'source' "
                "AND a.deleted_at IS NULL AND a.purged_at IS NULL "
                "AND s.deleted_at IS NULL AND a.id > ? ORDER BY a.id LIMIT ?",
                (after_id, max(0, int(limit))),
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
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "INSERT INTO audit_log "
                "(at, action, actor_id, target_type, target_id, session_id, ip, detail) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {AUDIT_COLUMNS}",
                (at, action, actor_id, target_type, target_id, session_id, ip, text),
            )
        return audit_from_row(next(iter(rows)))

    async def list_audit(
        self,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        audit_filter(session_id, user_id)
        params: list[Any]
        if session_id is not None:
            where, params = "session_id = ?", [session_id]
        else:
            where, params = "(actor_id = ? OR (target_type = 'user' AND target_id = ?))", [user_id, user_id]
        if before_id is not None:
            where += " AND id < ?"
            params.append(int(before_id))
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {where} ORDER BY id DESC LIMIT ?",
                (*params, max(0, int(limit))),
            )
        return [audit_from_row(row) for row in rows]

    async def anonymise_audit_ips(self, *, before: float) -> int:
        async with self._transaction() as db:
            return await _run(
                db, "UPDATE audit_log SET ip = NULL WHERE ip IS NOT NULL AND at <= ?", (before,)
            )

    # erasure --------------------------------------------------------------------------
    async def list_owned_sessions(self, user_id: str) -> list[SessionRecord]:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE owner_id = ? ORDER BY created_at, id",
                (user_id,),
            )
        return [session_from_row(row) for row in rows]

    async def transfer_session(self, session_id: str, *, from_user_id: str, to_user_id: str) -> bool:
        async with self._transaction() as db:
            moved = await _run(
                db,
                "UPDATE sessions SET owner_id = ? WHERE id = ? AND owner_id = ? AND ? != ? AND EXISTS "
                "(SELECT 1 FROM session_members WHERE session_id = ? AND user_id = ?)",
                (to_user_id, session_id, from_user_id, to_user_id, from_user_id, session_id, to_user_id),
            )
            if moved:
                await _run(
                    db,
                    "UPDATE session_members SET role = 'owner' WHERE session_id = ? AND user_id = ?",
                    (session_id, to_user_id),
                )
        return bool(moved)

    async def erase_user(
        self, user_id: str, *, name: str, replacement: str, session_ids: Collection[str] = ()
    ) -> bool:
        sids = list(session_ids)
        async with self._transaction() as db:
            owned = await db.execute_fetchall("SELECT 1 FROM sessions WHERE owner_id = ? LIMIT 1", (user_id,))
            if owned:
                raise Conflict(f"user {user_id!r} still owns sessions")
            if sids:
                marks = ", ".join("?" * len(sids))
                await _run(db, f"UPDATE audit_log SET detail = '{{}}' WHERE session_id IN ({marks})", sids)
            await _run(
                db,
                "UPDATE audit_log SET detail = '{}' "
                "WHERE target_id IN (SELECT id FROM assets WHERE uploader_id = ?)",
                (user_id,),
            )
            await _run(
                db,
                "UPDATE audit_log SET "
                "actor_id = CASE WHEN actor_id = ? THEN NULL ELSE actor_id END, "
                "target_id = CASE WHEN target_id = ? THEN NULL ELSE target_id END, "
                "ip = NULL, detail = '{}' WHERE actor_id = ? OR target_id = ?",
                (user_id, user_id, user_id, user_id),
            )
            if name:
                await _run(
                    db,
                    "UPDATE assets SET name = replace(name, ?, ?) WHERE uploader_id = ?",
                    (name, replacement, user_id),
                )
            # Tokens and memberships go by ON DELETE CASCADE; assets and jobs keep their rows
            # with the uploader / author cleared (ON DELETE SET NULL).
            deleted = await _run(db, "DELETE FROM users WHERE id = ?", (user_id,))
        return bool(deleted)

    # invites --------------------------------------------------------------------------
    async def create_invite(self, invite: InviteRecord) -> None:
        async with self._transaction() as db:
            with _foreign_key_is_not_found(
                f"no session {invite.session_id!r} or no user {invite.created_by!r}"
            ):
                await _run(
                    db,
                    f"INSERT INTO invites ({_INVITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        invite.id,
                        invite.session_id,
                        Role(invite.role).value,
                        invite.created_by,
                        invite.created_at,
                        invite.expires_at,
                        invite.used_at,
                        invite.used_by,
                    ),
                )

    async def get_invite(self, invite_id: str) -> InviteRecord | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_INVITE_COLUMNS} FROM invites WHERE id = ?", (invite_id,)
            )
        return _first(_invite_from_row(row) for row in rows)

    async def use_invite(self, invite_id: str, *, user_id: str, at: float) -> InviteRecord | None:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE invites SET used_at = ?, used_by = ? "
                f"WHERE id = ? AND used_at IS NULL AND expires_at > ? RETURNING {_INVITE_COLUMNS}",
                (at, user_id, invite_id, at),
            )
        return _first(_invite_from_row(row) for row in rows)

    # public preview share links -------------------------------------------------------------
    async def get_share(self, session_id: str) -> ShareRecord | None:
        async with self._locked() as db:
            rows = await db.execute_fetchall(
                f"SELECT {SHARE_COLUMNS} FROM session_shares WHERE session_id = ?", (session_id,)
            )
        return _first(share_from_row(row) for row in rows)

    async def set_share(
        self, session_id: str, *, enabled: bool, expires_at: float | None, by: str | None
    ) -> ShareRecord:
        async with self._transaction() as db:
            with _foreign_key_is_not_found(f"no session {session_id!r} or no user {by!r}"):
                rows = await db.execute_fetchall(
                    f"INSERT INTO session_shares ({SHARE_COLUMNS}) VALUES (?, ?, 1, ?, ?, ?) "
                    "ON CONFLICT (session_id) DO UPDATE SET enabled = excluded.enabled, "
                    "version = session_shares.version + 1, expires_at = excluded.expires_at, "
                    "updated_by = excluded.updated_by, updated_at = excluded.updated_at "
                    f"RETURNING {SHARE_COLUMNS}",
                    (session_id, int(enabled), expires_at, by, self._clock()),
                )
        return share_from_row(next(iter(rows)))


def _append_updates_sync(conn: sqlite3.Connection, room: str, updates: list[bytes]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # The room row is the allocator: bumping it by len(updates) reserves the whole range
        # inside this transaction, so the log never has gaps or duplicates.
        row = conn.execute(
            "INSERT INTO crdt_rooms (room, last_seq) VALUES (?, ?) "
            "ON CONFLICT (room) DO UPDATE SET last_seq = last_seq + excluded.last_seq RETURNING last_seq",
            (room, len(updates)),
        ).fetchone()
        last_seq = int(row[0])
        first_seq = last_seq - len(updates) + 1
        conn.executemany(
            "INSERT INTO crdt_updates (room, seq, data) VALUES (?, ?, ?)",
            [(room, first_seq + i, update) for i, update in enumerate(updates)],
        )
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return last_seq


def _asset_params(record: AssetRecord) -> tuple[Any, ...]:
    """`record` in `ASSET_COLUMNS` order."""
    return (
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


async def _run(db: aiosqlite.Connection, sql: str, parameters: Sequence[Any] = ()) -> int:
    """Execute one statement and return how many rows it changed."""
    async with db.execute(sql, parameters) as cursor:
        return cursor.rowcount


def _first(items: Iterable[_T]) -> _T | None:
    return next(iter(items), None)


@contextmanager
def _foreign_key_is_not_found(message: str) -> Iterator[None]:
    """A foreign-key violation means the referenced row does not exist."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "FOREIGN KEY" in str(exc):
            raise NotFound(message) from exc
        raise


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
