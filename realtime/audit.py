"""The audit log's writer: who did what, to what, when and from where.

Entries go to the store's append-only `audit_log` (see `Store.append_audit`). Actions are
dotted names (`auth.login`, `session.delete`, ...) listed in `Action`, so readers can filter
on them and a typo cannot invent a new one. The IP address is kept for `log_ip_retention_s`
and then cleared by the retention scheduler (`realtime/retention.py`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import HTTPConnection

from persistence.ports import AuditRecord, Store

log = logging.getLogger(__name__)


class Action(enum.StrEnum):
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    SIGNUP = "auth.signup"
    TOKEN_CREATED = "auth.token_created"
    TOKEN_REVOKED = "auth.token_revoked"
    MEMBER_ADDED = "member.add"
    MEMBER_ROLE_CHANGED = "member.role_change"
    MEMBER_REMOVED = "member.remove"
    SESSION_DELETED = "session.delete"
    SESSION_RESTORED = "session.restore"
    SESSION_HARD_DELETED = "session.hard_delete"
    ASSET_DELETED = "asset.delete"
    ASSET_RESTORED = "asset.restore"
    ASSET_HARD_DELETED = "asset.hard_delete"
    SOURCE_PURGED = "asset.source_purged"
    ROLE_DENIED = "access.role_denied"
    JOB_STARTED = "job.start"
    CONSENT_CHANGED = "consent.change"
    ACCOUNT_ERASED = "account.erase"
    ACCOUNT_ERASE_DENIED = "account.erase_denied"
    EXPORT_REQUESTED = "account.export"
    EXPORT_DOWNLOADED = "account.export_download"
    INVITE_CREATED = "invite.create"
    INVITE_ACCEPTED = "invite.accept"
    SHARE_ENABLED = "session.share_enable"
    SHARE_DISABLED = "session.share_disable"


def client_ip(conn: HTTPConnection) -> str | None:
    """The peer address as the server sees it (a reverse proxy's, behind one)."""
    return conn.client.host if conn.client else None


class AuditLog:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        # Entries written in the background (`record_soon`); held so they are neither garbage
        # collected mid-write nor lost at shutdown (`drain`).
        self._pending: set[asyncio.Task[AuditRecord | None]] = set()

    async def record(
        self,
        action: Action,
        *,
        actor_id: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        session_id: str | None = None,
        ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one entry. A failure propagates: an action that cannot be audited fails."""
        return await self._store.append_audit(
            action=Action(action).value,
            at=self._clock(),
            actor_id=actor_id,
            target_type=target_type,
            target_id=target_id,
            session_id=session_id,
            ip=ip,
            detail=detail,
        )

    async def record_quietly(self, action: Action, **fields: Any) -> AuditRecord | None:
        """Like `record`, for paths that must go on regardless (error handlers, background jobs)."""
        try:
            return await self.record(action, **fields)
        except Exception:
            log.exception("could not write an audit entry", extra={"action": str(action)})
            return None

    def record_soon(self, action: Action, **fields: Any) -> None:
        """`record_quietly` in the background: for socket loops, which must never wait on the store."""
        task = asyncio.get_running_loop().create_task(self.record_quietly(action, **fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait until every entry scheduled with `record_soon` is written (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def socket_refused(
        self, conn: HTTPConnection, *, channel: str, reason: str, user_id: str, session_id: str
    ) -> None:
        """A `/sync` or `/jam` socket refused a signed-in user: recorded like an HTTP 403
        (`access.role_denied`), in the background, with `detail = {channel, reason}`.

        Reasons: `not_member` (closed 4403; recorded with the requested session id whether or
        not that session exists, so the caller's own trail does not reveal which ids exist),
        `read_only` (a viewer's document update, dropped), `not_sender` (a viewer's jam audio,
        closed 1008).
        """
        sid = session_id if len(session_id) <= 64 else None  # longer is never a session id
        self.record_soon(
            Action.ROLE_DENIED,
            actor_id=user_id,
            target_type="session" if sid is not None else None,
            target_id=sid,
            session_id=sid,
            ip=client_ip(conn),
            detail={"channel": channel, "reason": reason},
        )

    def refuse_once(
        self,
        handler: Callable[[bytes], None],
        conn: HTTPConnection,
        *,
        channel: str,
        reason: str,
        user_id: str,
        session_id: str,
        when: Callable[[bytes], bool] | None = None,
    ) -> Callable[[bytes], None]:
        """`handler` (a socket's inbound-frame handler) that also records `socket_refused` for the
        first frame `when` accepts (every frame when None): one entry per connection at most.

        Only wrap the handlers of connections whose frames are refused (viewers): the writers'
        hot path stays as it was.
        """
        recorded = False

        def on_frame(data: bytes) -> None:
            nonlocal recorded
            handler(data)
            if not recorded and (when is None or when(data)):
                recorded = True
                self.socket_refused(
                    conn, channel=channel, reason=reason, user_id=user_id, session_id=session_id
                )

        return on_frame


async def audit(conn: HTTPConnection, action: Action, **fields: Any) -> AuditRecord | None:
    """Record `action` for a request, with the caller's IP; None when the app has no audit log
    (only apps assembled by hand in tests lack one)."""
    audit_log: AuditLog | None = getattr(conn.app.state.services, "audit", None)
    if audit_log is None:
        return None
    fields.setdefault("ip", client_ip(conn))
    return await audit_log.record(action, **fields)


async def audit_role_denied(conn: HTTPConnection, *, session_id: str, user_id: str) -> None:
    """Record a 403 from the central role check (`accounts.require`); never fails the response."""
    audit_log: AuditLog | None = getattr(conn.app.state.services, "audit", None)
    if audit_log is None:
        return
    method = getattr(conn, "method", "WS")
    await audit_log.record_quietly(
        Action.ROLE_DENIED,
        actor_id=user_id or None,
        target_type="session",
        target_id=session_id,
        session_id=session_id,
        ip=client_ip(conn),
        detail={"method": method, "path": conn.url.path},
    )
