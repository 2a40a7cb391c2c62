"""A connection's outbound side, as the room runner sees it (`session.hub.Peer`).

Two implementations with one contract (`enqueue` never blocks; a peer over its backlog
bound is dropped, never waited for):

- `DirectPeer`, under our uvicorn protocol: a broadcast is framed once (`wsframe`) and the
  same bytes are written to every transport, all frames of one delivery round in one write;
  the transport's own write buffer is the backlog. No task switch and no ASGI round trip per
  delivery.
- `QueuedPeer`, under any other ASGI server (and the test client): a bounded queue drained by
  one writer task through plain ASGI `send`, whose `await` carries the backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..session.room import CloseCode
from .queued import QueuedWriter
from .uvicorn_ws import DirectChannel
from .wsframe import binary_frame


class SyncPeer(Protocol):
    user_id: str

    @property
    def closing(self) -> bool: ...

    def enqueue(self, frame: bytes) -> bool: ...

    def flush(self) -> bool: ...

    def close(self, code: int, reason: str) -> None: ...

    async def finish(self) -> None:
        """Release the peer's resources once the connection's reader has ended."""


class DirectPeer:
    # A broadcast hands the same bytes object to every peer in turn, so a one-entry cache
    # keyed by identity frames each message exactly once. Holding the reference keeps the
    # identity check sound: the object cannot be freed and its id reused while cached.
    _framed_data: bytes | None = None
    _framed_wire: bytes = b""

    def __init__(self, ws: WebSocket, channel: DirectChannel, user_id: str, *, max_buffer_bytes: int) -> None:
        self.user_id = user_id
        self._ws = ws
        self._channel = channel
        self._max = max_buffer_bytes
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []

    @property
    def closing(self) -> bool:
        return self._closing

    def enqueue(self, frame: bytes) -> bool:
        # Per delivery, only the framing cache and an append: the socket checks run once per
        # delivery round, in flush().
        if frame is not DirectPeer._framed_data:
            DirectPeer._framed_wire = binary_frame(frame)
            DirectPeer._framed_data = frame
        self._pending.append(DirectPeer._framed_wire)
        return True

    def flush(self) -> bool:
        pending = self._pending
        if not pending:
            return True
        self._pending = []
        channel = self._channel
        if self._closing or not channel.open:
            return True  # going away: nothing more to deliver, and nothing to complain about
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        buffered = channel.buffered()
        # A drained socket always takes the round, however large (a big document's sync reply).
        if buffered and buffered + len(data) > self._max:
            return False
        channel.write(data)
        return True

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        if code == CloseCode.TRY_AGAIN_LATER and self._channel.buffered() > self._max:
            # A laggard's socket is full: a close frame would queue behind megabytes it does
            # not read. Drop the connection; the client reconnects and resyncs.
            self._channel.abort()
            return
        if self._channel.open:
            self._close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self._ws.close(code, reason)

    async def finish(self) -> None:
        if self._close_task is not None:
            await self._close_task


class QueuedPeer(QueuedWriter):
    def __init__(self, ws: WebSocket, user_id: str, *, max_queue_bytes: int) -> None:
        super().__init__(ws, max_queue_bytes=max_queue_bytes)
        self.user_id = user_id

    def enqueue(self, frame: bytes) -> bool:
        return self.offer((frame,), len(frame))

    def flush(self) -> bool:
        return True  # the writer task sends as soon as it is woken; enqueue checks the bound
