"""`/sync/{session_id}`: the y-websocket endpoint.

The endpoint authenticates, applies per-IP and per-connection limits and moves frames
between the socket and the room's runner. Outbound, each connection is a peer (see
`peers.py`) whose backlog is bounded, so a slow reader only ever delays itself; when its
backlog overflows it is dropped.

Denials are sent as close codes *after* accepting, because a refused HTTP upgrade reaches the
browser as 1006 and y-websocket would retry forever; it stops on 4400-4499.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .. import errors
from ..accounts import session_access
from ..api.common import SESSION_COOKIE, services
from ..session import protocol as p
from ..session.hub import RoomRunner
from ..session.room import CloseCode
from .limits import TokenBucket
from .peers import DirectPeer, QueuedPeer, SyncPeer
from .uvicorn_ws import DIRECT_EXTENSION

EMPTY_UPDATE = b"\x00\x00"  # a Yjs update with no structs and an empty delete set

log = logging.getLogger(__name__)


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
        if svc.audit is not None:
            svc.audit.socket_refused(
                ws, channel="sync", reason="not_member", user_id=user.id, session_id=session_id
            )
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
    direct = ws.scope.get("extensions", {}).get(DIRECT_EXTENSION)
    peer: SyncPeer
    if direct is not None:
        peer = DirectPeer(ws, direct, user.id, max_buffer_bytes=settings.send_queue_bytes)
    else:
        peer = QueuedPeer(ws, user.id, max_queue_bytes=settings.send_queue_bytes)
    on_binary = _frame_handler(
        runner, conn, peer, TokenBucket(settings.messages_per_second, settings.message_burst)
    )
    if not access.role.can_edit and svc.audit is not None:
        # The room drops a viewer's updates; the first real attempt is audited, once.
        on_binary = svc.audit.refuse_once(
            on_binary,
            ws,
            channel="sync",
            reason="read_only",
            user_id=user.id,
            session_id=access.session.id,
            when=is_write_attempt,
        )
    runner.join(conn, peer, can_edit=access.role.can_edit)
    if direct is not None:
        direct.on_binary = on_binary
    log.info(
        "sync connect", extra={"room": session_id, "conn": conn, "user": user.id, "role": access.role.value}
    )
    try:
        await _read_loop(ws, peer, on_binary, settings.max_message_bytes)
    finally:
        if direct is not None:
            direct.on_binary = None
        runner.leave(conn)
        await peer.finish()
        log.info("sync disconnect", extra={"room": session_id, "conn": conn})


def is_write_attempt(frame: bytes) -> bool:
    """Whether a y-websocket frame tries to change the document.

    An update message with any content does. The handshake's SyncStep2 does only when it
    carries structs the server lacks (its first varuint, the number of clients with structs, is
    not 0): Yjs puts its whole delete set in every SyncStep2, so a read-only client that
    reconnects with a document sends a non-empty one that changes nothing.
    """
    if frame[:1] != b"\x00":  # not a sync message (awareness, queries): cheap for viewers' cursors
        return False
    try:
        msg = p.decode_message(frame)
    except p.ProtocolError:
        return False  # the room closes the connection for it
    if isinstance(msg, p.SyncUpdate):
        return msg.update != EMPTY_UPDATE
    return isinstance(msg, p.SyncStep2) and msg.update[:1] not in (b"", b"\x00")


def _frame_handler(
    runner: RoomRunner, conn: int, peer: SyncPeer, bucket: TokenBucket
) -> Callable[[bytes], None]:
    """What every inbound binary frame goes through: rate limit, then the room.

    Under our uvicorn protocol frames arrive here straight from its parser (which enforces the
    size limit); otherwise `_read_loop` hands them over after checking the size itself.
    """

    def on_binary(data: bytes) -> None:
        if peer.closing:
            return
        if not bucket.take():
            peer.close(CloseCode.POLICY, "message rate limit exceeded")
            return
        runner.receive(conn, data)

    return on_binary


async def _read_loop(
    ws: WebSocket, peer: SyncPeer, on_binary: Callable[[bytes], None], max_bytes: int
) -> None:
    """Frames that come through ASGI: everything under other servers, text and fragments under ours."""
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
        else:
            on_binary(data)


routes = [WebSocketRoute("/sync/{session_id}", sync_endpoint)]
