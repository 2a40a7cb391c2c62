"""The storage port: every backend (SQLite, PostgreSQL) implements `Store`.

The same contract suite (`tests/persistence/test_store_contract.py`) runs against every
backend, so the server code above this port never knows which one it talks to.

Times are Unix seconds (float) everywhere; ids are opaque strings chosen by the store.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class Role(enum.StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_edit(self) -> bool:
        return self is not Role.VIEWER


class StoreError(Exception):
    """Base class of the errors a `Store` raises on purpose."""


class Conflict(StoreError):
    """A uniqueness rule was violated (for example, an e-mail address already registered)."""


class NotFound(StoreError):
    """The row an operation refers to does not exist."""


class AssetKind(enum.StrEnum):
    SOURCE = "source"  # an upload
    OUTPUT = "output"  # made by the server: stems, MIDI, renders


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Credentials:
    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session (a project): the row behind one CRDT room."""

    id: str
    title: str
    owner_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    email: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """Everything needed to rebuild a room's document.

    `snapshot` holds the state up to and including `snapshot_seq`; `updates` are the log rows
    after it, in sequence order. `epoch` changes only when a room's state is reset (restored),
    which tells clients holding the old history to reload instead of merging it back.
    """

    snapshot: bytes | None
    snapshot_seq: int
    epoch: int
    updates: list[tuple[int, bytes]]

    @property
    def last_seq(self) -> int:
        return self.updates[-1][0] if self.updates else self.snapshot_seq


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """An audio asset of a session. The audio itself is a blob (`blob_key`) in the `BlobStore`.

    `name` is the sanitised original file name; `mime`, `size_bytes`, `sample_rate`,
    `channels` and `frames` describe the stored blob, not the upload. `uploader_id` is None
    once the uploading account is gone. `deleted_at` is set between the start of a deletion
    and the removal of the row (see `Store.mark_asset_deleted`).
    """

    id: str
    session_id: str
    uploader_id: str | None
    name: str
    kind: AssetKind
    mime: str
    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    size_bytes: int
    blob_key: str
    created_at: float
    processed_at: float | None
    deleted_at: float | None
    # Set when retention removed a source's audio after processing (the row stays, saying so).
    purged_at: float | None = None
    purge_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Consent:
    """What a user agreed to; both default to False. `*_at` is when that choice last changed."""

    training_opt_in: bool
    training_opt_in_at: float | None
    marketing_opt_in: bool
    marketing_opt_in_at: float | None


@dataclass(frozen=True, slots=True)
class InviteRecord:
    """A single-use invite into a session (migration 0005)."""

    id: str
    session_id: str
    role: Role
    created_by: str | None
    created_at: float
    expires_at: float
    used_at: float | None
    used_by: str | None


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """A session's public preview link (migration 0006). `version` grows at every change, and
    a link names the version it was signed for, so any change revokes the links before it."""

    session_id: str
    enabled: bool
    version: int
    expires_at: float | None
    updated_by: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the append-only audit log. `ip` is None once anonymised (or never known)."""

    id: int
    at: float
    action: str
    actor_id: str | None
    target_type: str | None
    target_id: str | None
    session_id: str | None
    ip: str | None
    detail: dict[str, Any]


class JobKind(enum.StrEnum):
    SEPARATE = "separate"
    TRANSCRIBE = "transcribe"
    MASTER = "master"


class JobPriority(enum.StrEnum):
    INTERACTIVE = "interactive"  # started from a live session: served first
    BULK = "bulk"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """An inference job: the durable truth about it, whichever queue or worker carries it.

    `params` and `result` are JSON objects (`result`: the asset and track ids it produced).
    `attempts` counts the times a worker started it; together with `status` it is the fence
    that `Store.transition_job` compares, so a worker presumed dead cannot overwrite the work
    of the one that took its job over. `error` describes the latest status change (why it
    failed). `asset_id` is None once the source asset is gone, `created_by` once the account is.
    """

    id: str
    session_id: str
    asset_id: str | None
    kind: JobKind
    params: dict[str, Any]
    priority: JobPriority
    status: JobStatus
    progress: float
    error: str | None
    result: dict[str, Any] | None
    created_by: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    worker: str | None
    cancel_requested: bool
    updated_at: float


class Store(Protocol):
    """Accounts, sessions, memberships, the CRDT update log, asset metadata and jobs."""

    async def migrate(self) -> None:
        """Create or upgrade the schema; idempotent, run at every start."""

    async def close(self) -> None:
        """Release connections; pending writes are complete when it returns."""

    # accounts -----------------------------------------------------------------
    async def create_user(self, *, email: str, name: str, password_hash: str) -> User:
        """Raises `Conflict` if the e-mail (compared case-insensitively) exists."""

    async def get_user(self, user_id: str) -> User | None: ...

    async def get_credentials(self, email: str) -> Credentials | None:
        """Looks the e-mail up case-insensitively."""

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Used to upgrade a hash when the argon2 parameters change."""

    async def create_token(self, *, token_hash: str, user_id: str, expires_at: float) -> None: ...

    async def user_for_token(self, token_hash: str, *, now: float) -> User | None:
        """The token's user if the token exists and has not expired."""

    async def revoke_token(self, token_hash: str) -> bool:
        """True if a token was removed."""

    # sessions -----------------------------------------------------------------
    async def create_session(self, *, owner_id: str, title: str) -> SessionRecord:
        """Creates the session and makes `owner_id` its owner member, atomically."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_sessions(self, user_id: str) -> list[tuple[SessionRecord, Role]]:
        """Sessions the user is a member of, most recently updated first."""

    async def update_session(self, session_id: str, *, title: str) -> SessionRecord | None: ...

    async def delete_session(self, session_id: str) -> bool:
        """Deletes the session, its memberships, its asset rows and its CRDT room (snapshot and log).

        Asset blobs are not the store's: the caller removes them first.
        """

    async def set_member(self, session_id: str, user_id: str, role: Role) -> None:
        """Insert or change a membership.

        The store does not guard the owner's membership; the API layer refuses to demote or
        remove an owner.
        """

    async def remove_member(self, session_id: str, user_id: str) -> bool: ...

    async def get_role(self, session_id: str, user_id: str) -> Role | None: ...

    async def list_members(self, session_id: str) -> list[Member]:
        """Members ordered owner first, then by name."""

    # CRDT rooms ---------------------------------------------------------------
    async def load_room(self, room: str) -> RoomRecord:
        """The snapshot and log of a room; an unknown room is empty with epoch 0."""

    async def append_updates(self, room: str, updates: Sequence[bytes]) -> int:
        """Append updates in one transaction with consecutive, monotonic sequence numbers.

        Returns the sequence number of the last one. Sequence numbers never go back, not even
        across compaction or reset.
        """

    async def compact(self, room: str, *, upto_seq: int, state: bytes) -> None:
        """Atomically store `state` as the snapshot at `upto_seq` and delete log rows <= it.

        Rows appended after `upto_seq` are kept. A compaction older than the stored snapshot
        is ignored (this also discards one computed before a `reset_room`). An `upto_seq`
        beyond the last appended row raises `ValueError`: the snapshot would hide later rows.
        """

    async def reset_room(self, room: str, state: bytes) -> int:
        """Replace the room's whole history by `state` and bump its epoch; returns the new epoch."""

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
        """Insert an asset row; `created_at` is the store's clock.

        `asset_id` lets the caller name blobs after the id before the row exists (the blob is
        written first, so a listed asset always has its audio); None lets the store choose.
        Raises `NotFound` if the session or the uploader does not exist and `Conflict` if the
        id or the blob key is taken.
        """

    async def get_asset(self, asset_id: str) -> AssetRecord | None:
        """The asset, or None if it does not exist or its deletion has begun."""

    async def list_assets(self, session_id: str, *, include_deleted: bool = False) -> list[AssetRecord]:
        """The session's assets, oldest first; with `include_deleted`, also those being deleted."""

    async def mark_asset_processed(self, asset_id: str, at: float) -> bool:
        """Record when processing (inference) of the asset completed; False if there is no such asset."""

    async def mark_asset_deleted(self, asset_id: str) -> bool:
        """First step of a deletion: hide the asset (sets `deleted_at`) before its blobs go.

        True if a visible asset was hidden. A crash between the steps leaves a row that
        `list_deleted_assets` finds, so the blobs can still be removed.
        """

    async def list_deleted_assets(self, *, limit: int = 100) -> list[AssetRecord]:
        """Assets whose deletion began but whose rows remain, oldest deletion first."""

    async def delete_asset(self, asset_id: str) -> bool:
        """Remove the asset row (hidden or not); True if there was one. Blobs are the caller's."""

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
        """Insert a `queued` job; `created_at` is the store's clock.

        Raises `NotFound` if the session, the asset or the user does not exist and
        `ValueError` for an unknown kind or priority or params that are not a JSON object.
        The store does not check that the asset belongs to the session: the API does.
        """

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def list_jobs(self, session_id: str, *, limit: int = 100) -> list[JobRecord]:
        """The session's jobs, newest first."""

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
        """Set the given fields unconditionally (None leaves a field as it is); None if no such job.

        A status change also replaces `error` (clearing it unless one is given). One statement,
        cheap enough for progress several times a second; the returned record carries
        `cancel_requested`, so a progress write doubles as the cancellation check. `progress`
        outside 0..1 raises `ValueError`.
        """

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
        """Atomic compare-and-set: move the job to `to_status` only if its status is in
        `from_statuses` (and its `attempts` equals `expect_attempts`, when given).

        Returns the new record, or None if the job is missing or the guard failed. Of
        concurrent transitions from the same state exactly one wins, which is what makes
        result writes idempotent under at-least-once delivery. `error` is replaced as in
        `update_job`; the other fields as there.
        """

    async def request_job_cancel(self, job_id: str) -> JobRecord | None:
        """Ask for a job to stop: a `queued` job becomes `cancelled` at once (finished now);
        a `running` one gets `cancel_requested` for its worker to act on; a finished job is
        returned unchanged. None if there is no such job."""

    async def list_jobs_by_status(
        self, statuses: Collection[JobStatus], *, limit: int = 100
    ) -> list[JobRecord]:
        """Jobs in any of `statuses`, oldest first (restart recovery, resubmission)."""

    async def recover_jobs(
        self, max_attempts: int, *, idle_s: float | None = None
    ) -> tuple[list[str], list[str]]:
        """Settle `running` jobs whose worker is gone, atomically; returns (requeued, ended) ids.

        A job that has been started fewer than `max_attempts` times goes back to `queued`
        (worker, progress and start time reset); one with a pending cancellation becomes
        `cancelled`; the others become `failed` with an error that says why. With `idle_s`,
        only jobs not updated for that long are touched (workers on other machines may still
        be running the rest); without it every running job is, which is right only when no
        worker can be alive (the embedded server at startup). Queued jobs are left alone:
        the caller resubmits them to its queue.
        """

    # trust: retention, soft deletion, consent, audit (migration 0004) ----------------
    async def mark_session_deleted(self, session_id: str) -> bool:
        """Hide a session (sets its `deleted_at` to the store's clock) until it is restored or
        hard-deleted; `get_session`, `list_sessions` and `update_session` no longer see it.
        True if a visible session was hidden."""

    async def restore_session(self, session_id: str, *, deleted_after: float) -> SessionRecord | None:
        """Undo `mark_session_deleted` if it happened after `deleted_after`; the record, or None."""

    async def list_deleted_sessions(self, *, before: float, limit: int = 100) -> list[SessionRecord]:
        """Hidden sessions deleted at or before `before`, oldest deletion first."""

    async def get_deleted_asset(self, asset_id: str) -> AssetRecord | None:
        """The asset only if its deletion has begun (for an undo)."""

    async def restore_asset(self, asset_id: str, *, deleted_after: float) -> AssetRecord | None:
        """Undo `mark_asset_deleted` if it happened after `deleted_after`; the record, or None."""

    async def list_deleted_assets_before(self, before: float, *, limit: int = 100) -> list[AssetRecord]:
        """Like `list_deleted_assets`, only those whose deletion began at or before `before`."""

    async def list_purgeable_sources(self, *, processed_before: float, limit: int = 100) -> list[AssetRecord]:
        """Visible `source` assets processed at or before `processed_before` and not yet purged."""

    async def mark_asset_purged(self, asset_id: str, *, at: float, reason: str) -> bool:
        """Record that the asset's audio was removed; False if there is no such (unpurged) asset."""

    async def get_consent(self, user_id: str) -> Consent | None: ...

    async def set_consent(
        self, user_id: str, *, at: float, training: bool | None = None, marketing: bool | None = None
    ) -> Consent | None:
        """Change the given flags (None leaves one as it is); a flag's `*_at` moves only when it
        changes. None if there is no such user."""

    async def list_training_assets(self, *, after_id: str = "", limit: int = 100) -> list[AssetRecord]:
        """Visible, unpurged uploads (`source` assets) of live sessions whose uploader opted in to
        training, by id. Outputs are left out: a stem of someone else's upload is not the
        job author's to give, and outputs do not record whose audio they came from."""

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
    ) -> AuditRecord: ...

    async def list_audit(
        self,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Newest first: a session's entries, or a user's (as actor or as target). Exactly one of
        `session_id` and `user_id` must be given (`ValueError` otherwise): there is no way to
        read the whole log through this port, so no caller can leak it by accident."""

    async def anonymise_audit_ips(self, *, before: float) -> int:
        """Clear the IP address of entries at or before `before`; how many were cleared."""

    # erasure (migration 0005) ---------------------------------------------------------------
    async def list_owned_sessions(self, user_id: str) -> list[SessionRecord]:
        """Every session the user owns, deleted (within the grace period) or not."""

    async def transfer_session(self, session_id: str, *, from_user_id: str, to_user_id: str) -> bool:
        """Make `to_user_id` (already a member) the owner of a session `from_user_id` owns; the
        new owner's membership becomes `owner`. False if either condition does not hold."""

    async def erase_user(
        self, user_id: str, *, name: str, replacement: str, session_ids: Collection[str] = ()
    ) -> bool:
        """Remove an account in one transaction: its tokens and memberships (cascade) and its
        consent (columns of the account); its audit entries lose actor/target id, IP and detail,
        as do the entries of `session_ids` (its deleted sessions) and of the assets it uploaded;
        `name` is replaced by `replacement` in the names of assets it uploaded elsewhere (which
        stay, their uploader cleared). The user must own no session any more (`Conflict`).
        False if there is no such user."""

    async def create_invite(self, invite: InviteRecord) -> None:
        """Store a new (unused) invite; `NotFound` if its session or creator does not exist."""

    async def get_invite(self, invite_id: str) -> InviteRecord | None: ...

    async def use_invite(self, invite_id: str, *, user_id: str, at: float) -> InviteRecord | None:
        """Mark an unused invite that has not expired at `at` as used by `user_id`, atomically
        (two accepting at once: one wins); the used record, or None (then `get_invite` says why)."""

    # public preview share links (migration 0006) ------------------------------------------
    async def get_share(self, session_id: str) -> ShareRecord | None:
        """The session's share state; None if sharing was never set for it."""

    async def set_share(
        self, session_id: str, *, enabled: bool, expires_at: float | None, by: str | None
    ) -> ShareRecord:
        """Enable or disable the session's share link, bumping its version by one (the first
        set makes version 1), at the store's clock; `NotFound` if the session or user does not
        exist."""


@runtime_checkable
class FastAppend(Protocol):
    """Optional `Store` capability: append to the log without leaving the event-loop thread.

    Embedded stores (SQLite) commit a small batch faster than a hand-off to another thread;
    a network store cannot, and does not implement this.
    """

    def append_updates_nowait(self, room: str, updates: Sequence[bytes]) -> int | None:
        """Like `Store.append_updates`, or None if it cannot be done now without waiting."""
