"""uvicorn's sans-I/O WebSocket protocol with one addition: direct writes of pre-framed bytes.

Through plain ASGI every message to every peer costs a trip through Starlette, uvicorn and
the websockets state machine, and gives no view of the socket's write buffer. This protocol
adds the ASGI scope extension `escenario.direct`, a `DirectChannel` that writes an already
framed message straight to the transport and reports how much is still buffered, which is
the backpressure signal for laggards. Inbound, an endpoint may install `on_binary`: complete
binary messages then go straight from the parser to it, without the ASGI queue, a task
switch and Starlette's `receive`. Everything else (handshake, text and fragmented messages,
pings, close, disconnect events) stays uvicorn's.

Direct writes are only offered when no WebSocket extension is negotiated, because
per-message compression would make frames differ per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request

DIRECT_EXTENSION = "escenario.direct"


class DirectChannel:
    """What the sync endpoint may do with the raw connection."""

    __slots__ = ("_proto", "on_binary")

    def __init__(self, proto: WebSocketsSansIOProtocol) -> None:
        self._proto = proto
        self.on_binary: Callable[[bytes], None] | None = None

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
