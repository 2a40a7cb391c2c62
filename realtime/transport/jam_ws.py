"""`/jam/{session_id}`: the live jam over a WebSocket (binary audio frames, JSON text control).

Authentication, per-IP connect limits and close codes are those of `/sync` (its helpers are
reused): denials are sent as a close after accepting (4401 not authenticated, 4403 not a member,
1013 over a limit). Then the connection joins the session's jam engine at once, with defaults
(Opus, stereo, the account's name); a `join` control message may change codec, channels and
name at any time and is answered with a fresh `welcome`. Owners and editors send and receive;
a viewer's audio frame closes its connection with 1008.

One bad connection never hurts the others: a malformed frame or control message closes only
the connection that sent it (1007; an unknown codec 1003; a control message over 64 KiB 1009).

Outbound, each connection is an :class:`~realtime.jam.engine.AudioSink`. Under our uvicorn
protocol, frames are WebSocket-framed once per distinct mix (the same bytes go to every listener
of that mix) and written straight to the transport; its unsent backlog is bounded by
``jam_send_buffer_bytes``: beyond it the newest audio is refused (and counted), and the engine
closes a connection that stays refused for ``jam_laggard_s`` with 1013. Under other ASGI servers
a bounded queue and a writer task do the same through ASGI.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Sequence

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import errors
from ..accounts import session_access
from ..api.common import services
from ..jam.control import ControlError, Leave, error_message, parse_control
from ..jam.engine import EngineFull, InputRejected, JamEngine, tick_served
from ..jam.frames import frame_sequence
from ..session.room import CloseCode
from .limits import TokenBucket
from .queued import QueuedWriter
from .sync_ws import _token_from
from .tick_reads import reads_for
from .uvicorn_ws import DIRECT_EXTENSION, DirectChannel
from .wsframe import binary_frame

log = logging.getLogger(__name__)

_FIN_TEXT = 0x81


def text_frame(text: str) -> bytes:
    """One unfragmented, unmasked text frame (server → client)."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, n) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, n) + payload


def close_reason(code: str, message: str) -> str:
    """``"code: message"`` cut to the 123 UTF-8 bytes a close frame allows."""
    raw = f"{code}: {message}".encode()[:123]
    return raw.decode("utf-8", "ignore")


class _Framed:
    """WebSocket framing of the engine's frames, once per frame object.

    Every listener of a mix gets the same ``bytes`` object in the same delivery round, so a
    few recent frames (one per distinct mix) keyed by identity cover every listener. The cache
    holds the frame itself, so an id cannot be reused while its entry is alive.
    """

    __slots__ = ("_entries", "_last", "_last_wire", "_size")

    def __init__(self, size: int = 64) -> None:
        self._entries: collections.OrderedDict[int, tuple[bytes, bytes]] = collections.OrderedDict()
        self._size = size
        # The engine delivers listener after listener, mostly of the same mix: the last frame
        # answers most calls without the dictionary.
        self._last: bytes | None = None
        self._last_wire = b""

    def wire(self, frame: bytes) -> bytes:
        if frame is self._last:
            return self._last_wire
        key = id(frame)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is frame:
            wire = hit[1]
        else:
            wire = binary_frame(frame)
            self._entries[key] = (frame, wire)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        self._last = frame
        self._last_wire = wire
        return wire


_framed = _Framed()


class _DirectFanOut:
    """The engine's batch writer for DirectSinks (:class:`~realtime.jam.engine.FanOut`).

    All listeners of a mix get the same frames: they are WebSocket-framed once and the same
    bytes are written to every socket, in one loop over the sinks with no call per listener.
    """

    def send_audio_many(self, sinks: Sequence[DirectSink], frames: Sequence[bytes]) -> list[int] | None:
        wire = _framed.wire(frames[0]) if len(frames) == 1 else b"".join([_framed.wire(f) for f in frames])
        refused: list[int] | None = None
        seqs: list[int] | None = None  # the frames' sequence numbers, read once for all sinks
        for i, sink in enumerate(sinks):
            # DirectSink.send_audio's checks, inlined.
            proto = sink.proto
            transport = proto.transport
            if sink.closing or proto.close_sent or transport.is_closing():
                continue
            data = wire
            if sink.tick_sent >= 0:
                # The tick sends to the sockets it holds itself (tick_reads.send_now): only what
                # it did not send is left here, and what it refused counts as refused.
                if seqs is None:
                    seqs = [frame_sequence(f) for f in frames]
                todo = [f for f, seq in zip(frames, seqs, strict=True) if not tick_served(sink, seq)]
                if len(todo) < len(frames) and sink.tick_refused in seqs:
                    if refused is None:
                        refused = []
                    refused.append(i)
                    continue
                if not todo:
                    continue
                if len(todo) < len(frames):
                    data = b"".join([_framed.wire(f) for f in todo])
            if transport.get_write_buffer_size() > sink.max_buffer:
                if refused is None:
                    refused = []
                refused.append(i)
                continue
            transport.write(data)
        return refused


class DirectSink:
    """An AudioSink writing pre-framed bytes straight to the socket (our uvicorn protocol)."""

    fanout = _DirectFanOut()

    def __init__(self, ws: WebSocket, channel: DirectChannel, *, max_buffer_bytes: int) -> None:
        self._ws = ws
        self._channel = channel
        self.proto = channel.proto
        self.max_buffer = max_buffer_bytes
        self.closing = False
        self._close_task: asyncio.Task[None] | None = None
        # While the tick holds this socket (tick_reads), it writes the mixes itself: the
        # sequence numbers of the last frame it sent and the last it refused (-1: none).
        self.lent: object | None = None
        self.tick_sent = -1
        self.tick_refused = -1

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        if self.closing:
            return True
        proto = self.proto
        transport = proto.transport
        if proto.close_sent or transport.is_closing():
            return True  # going away: nothing to deliver and nothing to complain about
        if transport.get_write_buffer_size() > self.max_buffer:
            return False
        wire = _framed.wire
        if len(frames) == 1:
            transport.write(wire(frames[0]))
        else:
            transport.write(b"".join([wire(f) for f in frames]))
        return True

    def send_control(self, text: str) -> None:
        if not self.closing and self._channel.open:
            self._channel.write(text_frame(text))

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if code == CloseCode.TRY_AGAIN_LATER and self._channel.buffered() > self.max_buffer:
            self._channel.abort()  # a laggard: a close frame would wait behind what it does not read
            return
        if self._channel.open:
            self._close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self._ws.close(code, reason)

    async def finish(self) -> None:
        if self._close_task is not None:
            await self._close_task


class QueuedSink(QueuedWriter):
    """An AudioSink over plain ASGI sends (other servers, Starlette's test client)."""

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        return self.offer(frames, sum(len(f) for f in frames))

    def send_control(self, text: str) -> None:
        self.push_text(text)


Sink = DirectSink | QueuedSink


async def jam_endpoint(ws: WebSocket) -> None:
    svc = services(ws)
    settings = svc.settings
    await ws.accept()
    client_ip = ws.client.host if ws.client else "unknown"
    if not svc.connect_limiter.allow(client_ip):
        await ws.close(CloseCode.TRY_AGAIN_LATER, "too many connections from your address; retry later")
        return
    token = _token_from(ws)
    user = await svc.accounts.user_for_token(token) if token else None
    if user is None:
        await ws.close(CloseCode.NOT_AUTHENTICATED, "not authenticated")
        return
    try:
        access = await session_access(svc.store, ws.path_params["session_id"], user)
    except errors.NotFound:
        if svc.audit is not None:  # audited in the background (realtime/audit.py)
            sid = ws.path_params["session_id"]
            svc.audit.socket_refused(ws, channel="jam", reason="not_member", user_id=user.id, session_id=sid)
        await ws.close(CloseCode.FORBIDDEN, "not a member of this session")
        return
    session_id = access.session.id
    existing = svc.jam.get(session_id)
    if (
        existing is not None
        and sum(1 for p in existing.participants if p.user_id == user.id) >= settings.max_connections_per_user
    ):
        await ws.close(CloseCode.TRY_AGAIN_LATER, "too many open connections for this user")
        return

    direct = ws.scope.get("extensions", {}).get(DIRECT_EXTENSION)
    sink: Sink
    if direct is not None:
        sink = DirectSink(ws, direct, max_buffer_bytes=settings.jam_send_buffer_bytes)
        _bound_send_buffer(direct, settings.jam_send_buffer_bytes)
    else:
        sink = QueuedSink(ws, max_queue_bytes=settings.jam_send_buffer_bytes)
    try:
        engine = svc.jam.acquire(session_id)
        participant = engine.join(user.id, user.name, can_send=access.role.can_edit, sink=sink)
    except (EngineFull, RuntimeError) as exc:
        sink.close(CloseCode.TRY_AGAIN_LATER, str(exc))
        await sink.finish()
        return
    pid = participant.pid
    bucket = TokenBucket(settings.jam_frames_per_second, settings.jam_frames_per_second)
    on_binary = _frame_handler(engine, pid, sink, bucket)
    if not access.role.can_edit and svc.audit is not None:
        # A viewer's audio frame closes it (1008); only viewers' handlers are wrapped, to audit that once.
        on_binary = svc.audit.refuse_once(
            on_binary, ws, channel="jam", reason="not_sender", user_id=user.id, session_id=session_id
        )
    reads = None
    if direct is not None:
        direct.on_binary = on_binary
        if settings.jam_tick_reads and access.role.can_edit:
            # Senders' sockets are read on the tick thread (decision 0019); a viewer's only
            # ever carry control messages, which the loop reads.
            reads = reads_for(
                engine, max_message=direct.proto.conn.max_message_size, writes=settings.jam_tick_writes
            )
            reads.register(direct, pid, bucket.take, sink)
    log.info(
        "jam connect",
        extra={"room": session_id, "participant": pid, "user": user.id, "role": access.role.value},
    )
    try:
        await _read_loop(ws, engine, pid, sink, on_binary, settings.max_message_bytes)
    finally:
        if reads is not None and direct is not None:
            reads.unregister(direct)
        if direct is not None:
            direct.on_binary = None
        engine.leave(pid)
        await sink.finish()
        log.info("jam disconnect", extra={"room": session_id, "participant": pid})


def _bound_send_buffer(channel: DirectChannel, size: int) -> None:
    """Live audio must not queue for seconds in the kernel: TCP autotuning lets a send buffer
    grow to megabytes (20 s of PCM16), all of it latency for a client that fell behind. Bounded
    by the sink's own backlog, such a client is refused, and dropped, within a second or two."""
    sock = channel.proto.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _frame_handler(engine: JamEngine, pid: str, sink: Sink, bucket: TokenBucket) -> Callable[[bytes], None]:
    """Every inbound audio frame: rate limit, then the engine; a rejected frame closes this socket."""
    receive = engine.receive
    take = bucket.take

    def on_binary(data: bytes) -> None:
        if sink.closing:
            return
        if not take():
            sink.close(CloseCode.POLICY, "audio frame rate limit exceeded")
            return
        try:
            receive(pid, data)
        except InputRejected as exc:
            sink.send_control(error_message(exc.code, exc.reason))
            sink.close(exc.close_code, close_reason(exc.code, exc.reason))

    return on_binary


async def _read_loop(
    ws: WebSocket, engine: JamEngine, pid: str, sink: Sink, on_binary: Callable[[bytes], None], max_bytes: int
) -> None:
    """Text (control) frames, and binary ones that did not take the direct path."""
    receive = ws.receive
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if sink.closing:
            continue  # closing: wait for the client's close frame, ignore what it still sends
        data = message.get("bytes")
        if data is not None:
            if len(data) > max_bytes:
                sink.close(CloseCode.TOO_BIG, f"message over {max_bytes} bytes")
            else:
                on_binary(data)
            continue
        text = message.get("text")
        if text is None:
            continue
        try:
            msg = parse_control(text)
        except ControlError as exc:
            sink.send_control(error_message(exc.code, exc.message))
            sink.close(exc.close_code, close_reason(exc.code, exc.message))
            continue
        if isinstance(msg, Leave):
            sink.close(CloseCode.NORMAL, "bye")
            continue
        for reply in engine.control(pid, msg):
            sink.send_control(reply)


routes = [WebSocketRoute("/jam/{session_id}", jam_endpoint)]
