"""Retention: what the privacy policy promises to forget, and when.

Three rules, each a cutoff in time:

* an uploaded source's audio is purged `source_s` after its processing completed (the row
  stays, saying when and why); outputs (stems, MIDI, masters) stay until deleted;
* a deleted session or asset is hard-deleted `deletion_grace_s` after its deletion, and can
  be restored until then;
* the IP addresses in the audit log are cleared `log_ip_s` after the entry was written.

`RetentionPolicy`, `cutoffs` and the `*_due` predicates are the pure core: what is due at
time t. `RetentionScheduler` is the shell that applies it to the store and the blobs, once
(`run_once`, which tests drive with a fake clock) or every `interval_s` in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from persistence.ports import AssetKind, AssetRecord, Store

from .audit import Action, AuditLog
from .jam.sessions import JamSessions
from .media.library import AssetLibrary
from .session.hub import RoomManager
from .session.room import CloseCode

log = logging.getLogger(__name__)

SOURCE_PURGE_REASON = "source purged after processing"
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    source_s: float = DAY_S
    deletion_grace_s: float = 7 * DAY_S
    log_ip_s: float = 90 * DAY_S

    def __post_init__(self) -> None:
        for name in ("source_s", "deletion_grace_s", "log_ip_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Everything at or before these times is due."""

    sources_processed_before: float
    deleted_before: float
    ips_logged_before: float


def cutoffs(policy: RetentionPolicy, now: float) -> Cutoffs:
    return Cutoffs(
        sources_processed_before=now - policy.source_s,
        deleted_before=now - policy.deletion_grace_s,
        ips_logged_before=now - policy.log_ip_s,
    )


def source_purge_due(asset: AssetRecord, policy: RetentionPolicy, now: float) -> bool:
    """Whether the asset's audio must be gone by `now` (only processed, unpurged sources)."""
    return (
        asset.kind is AssetKind.SOURCE
        and asset.processed_at is not None
        and asset.purged_at is None
        and asset.processed_at <= cutoffs(policy, now).sources_processed_before
    )


def deletion_due(deleted_at: float | None, policy: RetentionPolicy, now: float) -> bool:
    """Whether something deleted at `deleted_at` must be hard-deleted by `now`."""
    return deleted_at is not None and deleted_at <= cutoffs(policy, now).deleted_before


def restorable(deleted_at: float | None, policy: RetentionPolicy, now: float) -> bool:
    """Whether a deletion can still be undone at `now` (the complement of `deletion_due`)."""
    return deleted_at is not None and not deletion_due(deleted_at, policy, now)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    sources_purged: int = 0
    assets_deleted: int = 0
    sessions_deleted: int = 0
    ips_anonymised: int = 0


class RetentionScheduler:
    """Applies `RetentionPolicy` to the store and the blob store."""

    def __init__(
        self,
        store: Store,
        assets: AssetLibrary,
        policy: RetentionPolicy,
        *,
        audit: AuditLog | None = None,
        rooms: RoomManager | None = None,
        jam: JamSessions | None = None,
        clock: Callable[[], float] = time.time,
        interval_s: float = 300.0,
        batch: int = 100,
    ) -> None:
        self.store = store
        self.assets = assets
        self.policy = policy
        self.audit = audit
        self.rooms = rooms
        self.jam = jam
        self.clock = clock
        self.interval_s = interval_s
        self.batch = batch
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def run_once(self, now: float | None = None) -> RetentionReport:
        """Apply every rule as of `now` (the clock if None); one run at a time."""
        now = self.clock() if now is None else now
        cut = cutoffs(self.policy, now)
        async with self._lock:
            sources = await self._purge_sources(cut.sources_processed_before, now)
            assets = await self._delete_assets(cut.deleted_before)
            sessions = await self._delete_sessions(cut.deleted_before)
            ips = await self.store.anonymise_audit_ips(before=cut.ips_logged_before)
        report = RetentionReport(sources, assets, sessions, ips)
        if any((sources, assets, sessions, ips)):
            log.info(
                "retention run",
                extra={
                    "sources_purged": sources,
                    "assets_deleted": assets,
                    "sessions_deleted": sessions,
                    "ips_anonymised": ips,
                },
            )
        return report

    async def _purge_sources(self, processed_before: float, now: float) -> int:
        done = 0
        while batch := await self.store.list_purgeable_sources(
            processed_before=processed_before, limit=self.batch
        ):
            for asset in batch:
                if await self.assets.purge_source(asset, at=now, reason=SOURCE_PURGE_REASON):
                    done += 1
                    await self._audit(
                        Action.SOURCE_PURGED,
                        target_type="asset",
                        target_id=asset.id,
                        session_id=asset.session_id,
                        detail={"name": asset.name, "processed_at": asset.processed_at},
                    )
        return done

    async def _delete_assets(self, deleted_before: float) -> int:
        done = 0
        while batch := await self.store.list_deleted_assets_before(deleted_before, limit=self.batch):
            for asset in batch:
                await self.assets.finish_deletion(asset)
                done += 1
                await self._audit(
                    Action.ASSET_HARD_DELETED,
                    target_type="asset",
                    target_id=asset.id,
                    session_id=asset.session_id,
                    detail={"name": asset.name, "deleted_at": asset.deleted_at},
                )
        return done

    async def _delete_sessions(self, deleted_before: float) -> int:
        done = 0
        while batch := await self.store.list_deleted_sessions(before=deleted_before, limit=self.batch):
            for session in batch:
                await hard_delete_session(self.store, self.assets, session.id, rooms=self.rooms, jam=self.jam)
                done += 1
                await self._audit(
                    Action.SESSION_HARD_DELETED,
                    target_type="session",
                    target_id=session.id,
                    session_id=session.id,
                    detail={"title": session.title},
                )
        return done

    async def _audit(self, action: Action, **fields: object) -> None:
        if self.audit is not None:
            await self.audit.record_quietly(action, **fields)

    # background loop ------------------------------------------------------------------
    def start(self) -> None:
        """Run every `interval_s` in the background (not at all when it is 0 or less)."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention run failed; retrying at the next interval")
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def hard_delete_session(
    store: Store,
    assets: AssetLibrary,
    session_id: str,
    *,
    rooms: RoomManager | None = None,
    jam: JamSessions | None = None,
) -> None:
    """Delete a session for good: its jam and room, its asset blobs, then its rows."""
    # The jam goes first, throwing away a recording in progress: nothing may land in a session
    # that is being deleted.
    if jam is not None:
        jam.close_session(session_id, CloseCode.NOT_FOUND, "session deleted", discard=True)
    if rooms is not None:
        await rooms.delete(session_id)
    # Asset rows go with the session (ON DELETE CASCADE); their blobs must go first.
    await assets.purge_session(session_id)
    await store.delete_session(session_id)
