"""uvicorn's sans-I/O WebSocket protocol with one addition: direct writes of pre-framed bytes.

Through plain ASGI every message to every peer costs a trip through Starlette, uvicorn and
the websockets state machine, and gives no view of the socket's write buffer. This protocol
adds the ASGI scope extension `escenario.direct`, a `DirectChannel` that writes an already
framed message straight to the transport and reports how much is still buffered, which is
the backpressure signal for laggards. Inbound, an endpoint may install `on_binary`: complete
binary messages then go straight from the parser to it, without the ASGI queue, a task
switch and Starlette's `receive`. Everything else (handshake, text and fragmented messages,
pings, close, disconnect events) stays uvicorn's.

With `on_binary` installed, `data_received` also skips the websockets parser for what most
reads hold: whole, unfragmented, masked binary frames at a frame boundary (a live-jam client
sends one 62-byte frame every 2.5 ms). It unmasks them with websockets' own C `apply_mask` and
hands each to `on_binary`; at the first byte it does not recognise (any other opcode, a
partial frame, a 64-bit length, a message over the size limit) it feeds the rest to the
websockets parser, which then handles that data exactly as it would have.

Direct writes are only offered when no WebSocket extension is negotiated, because
per-message compression would make frames differ per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

try:  # websockets' C unmasking, as its own parser uses it (the pure-Python one otherwise)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

DIRECT_EXTENSION = "escenario.direct"

NOT_FAST = (0, 0)
INCOMPLETE = (-1, 0)


def masked_binary_at(data: bytes, pos: int, limit: int | None) -> tuple[int, int]:
    """The whole, unfragmented, masked binary frame (with a 7- or 16-bit length) at ``pos``:
    ``(head, end)``, its payload being ``data[head:end]`` and its mask ``data[head - 4:head]``.
    :data:`NOT_FAST` for anything else (another opcode, fragment, 64-bit length, over
    ``limit``), :data:`INCOMPLETE` when such a frame starts there but has not all arrived."""
    end = len(data)
    if end - pos < 2:  # the caller has at least one byte there
        return INCOMPLETE if data[pos] == 0x82 else NOT_FAST
    if data[pos] != 0x82 or not data[pos + 1] & 0x80:
        return NOT_FAST  # not FIN + binary with no RSV bits, or unmasked (a client must mask)
    size = data[pos + 1] & 0x7F
    head = pos + 6
    if size == 126:
        head += 2
        if end < head:
            return INCOMPLETE
        size = data[pos + 2] << 8 | data[pos + 3]
    elif size == 127:
        return NOT_FAST
    if limit is not None and size > limit:
        return NOT_FAST
    if end - head < size:
        return INCOMPLETE
    return head, head + size


class DirectChannel:
    """What the sync endpoint may do with the raw connection."""

    __slots__ = ("_proto", "lender", "lent", "on_binary")

    def __init__(self, proto: WebSocketsSansIOProtocol) -> None:
        self._proto = proto
        self.on_binary: Callable[[bytes], None] | None = None
        # Reads lent to another thread (realtime.transport.tick_reads): `lender` is asked to
        # take the socket again whenever the parser is back at a frame boundary.
        self.lender: Callable[[DirectChannel], None] | None = None
        self.lent = False

    @property
    def proto(self) -> WebSocketsSansIOProtocol:
        """The protocol itself, for a hot path that inlines `open`, `buffered` and `write`."""
        return self._proto

    @property
    def open(self) -> bool:
        proto = self._proto
        return proto.handshake_complete and not proto.close_sent and not proto.transport.is_closing()

    def write(self, wire: bytes) -> None:
        """Write one complete frame made by `wsframe.binary_frame`."""
        self._proto.transport.write(wire)

    def buffered(self) -> int:
        return int(self._proto.transport.get_write_buffer_size())

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (a laggard cannot take one)."""
        self._proto.transport.abort()

    def lend_reads(self) -> int | None:
        """Stop the loop reading this socket, so that another thread may: the socket's file
        descriptor, or None where that is not safe now (the parser is inside a message,
        uvicorn has paused reading for its own queue, the connection is not open)."""
        proto = self._proto
        conn = proto.conn
        transport = proto.transport
        if (
            self.lent
            or conn.reader.buffer
            or conn.current_size is not None
            or conn.state is not State.OPEN
            or proto.close_sent
            or getattr(proto, "read_paused", False)
            or transport.is_closing()
        ):
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        transport.pause_reading()
        self.lent = True
        return int(sock.fileno())

    def take_back(self, rest: bytes) -> None:
        """The borrower gave the socket back (on the loop): the bytes it read and did not handle
        go through the parser first, then the loop reads again, unless uvicorn paused reading
        for its queue (it resumes itself) or the parser lent the socket out again."""
        self.lent = False
        proto = self._proto
        if proto.transport.is_closing():
            return
        if rest:
            proto.data_received(rest)
        if not self.lent and not getattr(proto, "read_paused", False):
            proto.transport.resume_reading()


class EscenarioWebSocketProtocol(WebSocketsSansIOProtocol):
    _direct: DirectChannel | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and not self.conn.extensions:
            # The app task was created but has not run yet, so it sees the extension.
            self._direct = DirectChannel(self)
            scope["extensions"][DIRECT_EXTENSION] = self._direct

    def data_received(self, data: bytes) -> None:
        self._data_received(data)
        direct = self._direct
        if direct is not None and direct.lender is not None and not direct.lent:
            direct.lender(direct)

    def _data_received(self, data: bytes) -> None:
        direct = self._direct
        if direct is None or direct.on_binary is None:
            super().data_received(data)
            return
        conn = self.conn
        # Only at a frame boundary of an open connection with no fragmented message under way:
        # there the websockets parser holds no state that these frames could skip past.
        if conn.reader.buffer or conn.current_size is not None or conn.state is not State.OPEN:
            super().data_received(data)
            return
        limit = conn.max_message_size
        end = len(data)
        pos = 0
        handler: Callable[[bytes], None] | None = direct.on_binary
        while handler is not None and end - pos >= 6 and not self.close_sent:
            head, stop = masked_binary_at(data, pos, limit)
            if head <= 0:
                break
            payload = apply_mask(data[head:stop], data[head - 4 : head])
            pos = stop
            try:
                handler(payload)
            except Exception:
                self.logger.exception("direct frame handler failed; closing the connection")
                direct.on_binary = None
                self.transport.abort()
                return
            handler = direct.on_binary
        if pos < end:
            super().data_received(data[pos:] if pos else data)

    def handle_bytes(self, event: Frame) -> None:
        direct = self._direct
        handler = direct.on_binary if direct is not None else None
        if handler is None or not event.fin or self.close_sent:
            super().handle_bytes(event)
            return
        try:
            handler(bytes(event.data))
        except Exception:
            # Never let an application error escape into the protocol's data_received.
            self.logger.exception("sync frame handler failed; closing the connection")
            direct.on_binary = None  # type: ignore[union-attr]
            self.transport.abort()
