"""`/sync/{session_id}`: the y-websocket endpoint.

The endpoint authenticates, applies per-IP and per-connection limits and moves frames
between the socket and the room's runner. Each connection has a bounded outbound queue
drained by its own writer task, so a slow reader only ever delays itself; when its queue
overflows it is closed.

Denials are sent as close codes *after* accepting, because a refused HTTP upgrade reaches the
browser as 1006 and y-websocket would retry forever; it stops on 4400-4499.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import errors
from ..accounts import session_access
from ..api.common import SESSION_COOKIE, services
from ..session.hub import RoomRunner
from ..session.room import CloseCode
from .limits import TokenBucket

log = logging.getLogger(__name__)


class WebSocketPeer:
    """A connection's outbound side: bounded byte queue plus one writer task."""

    def __init__(self, ws: WebSocket, user_id: str, *, max_queue_bytes: int) -> None:
        self.user_id = user_id
        self._ws = ws
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._max = max_queue_bytes
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self.closed = asyncio.Event()

    def enqueue(self, frame: bytes) -> bool:
        if self._close is not None:
            return True
        if self._queued_bytes + len(frame) > self._max and self._queue:
            return False
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._wake.set()
        return True

    @property
    def closing(self) -> bool:
        return self._close is not None

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            if code == CloseCode.TRY_AGAIN_LATER:
                self._queue.clear()  # a laggard gets no more backlog
                self._queued_bytes = 0
            self._wake.set()

    async def run(self) -> None:
        ws = self._ws
        queue = self._queue
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    frame = queue.popleft()
                    self._queued_bytes -= len(frame)
                    await ws.send_bytes(frame)
                if self._close is not None:
                    code, reason = self._close
                    if ws.application_state == ws.client_state == WebSocketState.CONNECTED:
                        await ws.close(code, reason)
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the socket went away under us; the reader side cleans up
        finally:
            self.closed.set()


async def _deny(ws: WebSocket, code: int, reason: str) -> None:
    await ws.close(code, reason)


def _token_from(ws: WebSocket) -> str | None:
    token = ws.query_params.get("token")
    if token:
        return token
    cookie = ws.cookies.get(SESSION_COOKIE)
    if cookie:
        # Browsers attach cookies to cross-site WebSocket handshakes; only our own pages
        # may ride on the cookie.
        origin = ws.headers.get("origin")
        host = ws.headers.get("host")
        if origin is not None and host is not None and origin.split("://", 1)[-1] != host:
            return None
        return cookie
    return None


async def sync_endpoint(ws: WebSocket) -> None:
    svc = services(ws)
    settings = svc.settings
    await ws.accept()
    client_ip = ws.client.host if ws.client else "unknown"
    if not svc.connect_limiter.allow(client_ip):
        await _deny(ws, CloseCode.TRY_AGAIN_LATER, "too many connections from your address; retry later")
        return
    token = _token_from(ws)
    user = await svc.accounts.user_for_token(token) if token else None
    if user is None:
        await _deny(ws, CloseCode.NOT_AUTHENTICATED, "not authenticated")
        return
    session_id = ws.path_params["session_id"]
    try:
        access = await session_access(svc.store, session_id, user)
    except errors.NotFound:
        await _deny(ws, CloseCode.FORBIDDEN, "not a member of this session")
        return
    rooms = svc.rooms
    runner = await rooms.acquire(access.session.id)
    if len(runner.peers_of_user(user.id)) >= settings.max_connections_per_user:
        await _deny(ws, CloseCode.TRY_AGAIN_LATER, "too many open connections for this user")
        return
    wanted_epoch = ws.query_params.get("epoch")
    if wanted_epoch is not None and wanted_epoch != str(runner.room.epoch):
        await _deny(ws, CloseCode.RELOAD, "session restored: reload")
        return

    conn = rooms.next_connection_id()
    peer = WebSocketPeer(ws, user.id, max_queue_bytes=settings.send_queue_bytes)
    writer = asyncio.create_task(peer.run(), name=f"sync-writer-{conn}")
    bucket = TokenBucket(settings.messages_per_second, settings.message_burst)
    runner.join(conn, peer, can_edit=access.role.can_edit)
    log.info(
        "sync connect", extra={"room": session_id, "conn": conn, "user": user.id, "role": access.role.value}
    )
    try:
        await _read_loop(ws, runner, conn, peer, bucket, settings.max_message_bytes)
    finally:
        runner.leave(conn)
        if not writer.done():
            peer.close(CloseCode.GOING_AWAY, "bye")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        log.info("sync disconnect", extra={"room": session_id, "conn": conn})


async def _read_loop(
    ws: WebSocket, runner: RoomRunner, conn: int, peer: WebSocketPeer, bucket: TokenBucket, max_bytes: int
) -> None:
    receive = ws.receive
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if peer.closing:
            continue  # closing: wait for the peer's close frame, ignore what it still sends
        data = message.get("bytes")
        if data is None:
            peer.close(CloseCode.UNSUPPORTED_DATA, "text frames are not part of the y-websocket protocol")
        elif len(data) > max_bytes:
            peer.close(CloseCode.TOO_BIG, f"message over {max_bytes} bytes")
        elif not bucket.take():
            peer.close(CloseCode.POLICY, "message rate limit exceeded")
        else:
            runner.receive(conn, data)


routes = [WebSocketRoute("/sync/{session_id}", sync_endpoint)]
