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


class DirectChannel:
    """What the sync endpoint may do with the raw connection."""

    __slots__ = ("_proto", "on_binary")

    def __init__(self, proto: WebSocketsSansIOProtocol) -> None:
        self._proto = proto
        self.on_binary: Callable[[bytes], None] | None = None

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
            if data[pos] != 0x82 or not data[pos + 1] & 0x80:
                break  # not FIN + binary with no RSV bits, or unmasked (a client must mask)
            size = data[pos + 1] & 0x7F
            head = pos + 6
            if size == 126:
                head += 2
                if end < head:
                    break
                size = data[pos + 2] << 8 | data[pos + 3]
            elif size == 127:
                break
            if end - head < size or (limit is not None and size > limit):
                break
            payload = apply_mask(data[head : head + size], data[head - 4 : head])
            pos = head + size
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
