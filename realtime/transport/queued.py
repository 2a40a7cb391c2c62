"""One bounded writer task per WebSocket, for ASGI servers other than our uvicorn protocol.

`/sync`'s :class:`~realtime.transport.peers.QueuedPeer` and `/jam`'s
:class:`~realtime.transport.jam_ws.QueuedSink` both write through it: a queue drained by one
task through plain ASGI ``send``, whose ``await`` carries the backpressure. Bounded items are
refused (``offer`` returns False) once the backlog would pass the bound, never waited for;
control text is always queued. A laggard's close (1013) drops its backlog first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..session.room import CloseCode

__all__ = ["QueuedWriter"]


class QueuedWriter:
    def __init__(self, ws: WebSocket, *, max_queue_bytes: int) -> None:
        self._ws = ws
        self._queue: collections.deque[bytes | str] = collections.deque()
        self._queued_bytes = 0
        self._max = max_queue_bytes
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._writer = asyncio.get_running_loop().create_task(self._run())

    @property
    def closing(self) -> bool:
        return self._close is not None

    def offer(self, items: Iterable[bytes], size: int) -> bool:
        """Queue ``items`` (``size`` bytes in all) unless that passes the bound with a backlog
        already waiting; True once closing (the items are dropped: there is no one to send to)."""
        if self._close is not None:
            return True
        if self._queue and self._queued_bytes + size > self._max:
            return False
        self._queue.extend(items)
        self._queued_bytes += size
        self._wake.set()
        return True

    def push_text(self, text: str) -> None:
        """Queue a text frame whatever the backlog: control messages are small and few."""
        if self._close is None:
            self._queue.append(text)
            self._queued_bytes += len(text)
            self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            if code == CloseCode.TRY_AGAIN_LATER:
                self._queue.clear()  # a laggard gets no more backlog
                self._queued_bytes = 0
            self._wake.set()

    async def _run(self) -> None:
        ws = self._ws
        queue = self._queue
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    item = queue.popleft()
                    self._queued_bytes -= len(item)
                    if isinstance(item, bytes):
                        await ws.send_bytes(item)
                    else:
                        await ws.send_text(item)
                if self._close is not None:
                    code, reason = self._close
                    if ws.application_state == ws.client_state == WebSocketState.CONNECTED:
                        await ws.close(code, reason)
                    return

    async def finish(self) -> None:
        """Send what is queued and close (1001), waiting at most 2 s for a slow client."""
        if not self._writer.done():
            self.close(CloseCode.GOING_AWAY, "bye")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), 2.0)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
