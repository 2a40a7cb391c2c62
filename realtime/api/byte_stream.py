"""Bytes made by a worker thread, sent by the event loop: a bounded hand-off and its response.

:class:`ByteStream` is the channel: the worker calls :meth:`ByteStream.emit` (blocking while
``maxsize`` chunks wait, so memory stays bounded however long the render) and finally
:meth:`ByteStream.end`; the loop awaits :meth:`ByteStream.first` and then iterates
:meth:`ByteStream.chunks`. :meth:`ByteStream.abort` (the client went away) makes the worker's
next or pending ``emit`` raise :class:`StreamAborted`.

:class:`ThreadStreamResponse` sends such a stream and runs an ``on_close`` coroutine when the
response ends in any way: done, failed mid-stream (the connection is then cut: the status was
already sent) or disconnected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..dsp.render import RenderCancelled

__all__ = ["ByteStream", "StreamAborted", "ThreadStreamResponse"]

_POLL_S: Final = 0.1


class StreamAborted(RenderCancelled):
    """The reading side gave up (the client disconnected); the producer should stop."""


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class ByteStream:
    """A bounded queue of byte chunks from one producer thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int = 8) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._loop = loop
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize)
        self.aborted = threading.Event()
        self.emitted = 0  # chunks handed over so far (for tests and figures)

    # producer side (worker thread) ---------------------------------------------------------
    def _put(self, item: bytes | _End) -> None:
        if self.aborted.is_set():
            raise StreamAborted("the client went away")
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            try:
                future.result(_POLL_S)
                return
            except concurrent.futures.TimeoutError:
                if self.aborted.is_set():
                    future.cancel()
                    raise StreamAborted("the client went away") from None

    def emit(self, data: bytes) -> None:
        """Queue ``data``; blocks while the queue is full; raises StreamAborted after :meth:`abort`."""
        if data:
            self._put(data)
            self.emitted += 1

    def end(self, error: BaseException | None = None) -> None:
        """The last call of the producer: the stream is complete, or failed with ``error``."""
        with contextlib.suppress(StreamAborted):  # nobody reads any more
            self._put(_End(error))

    # consumer side (event loop) ------------------------------------------------------------
    def abort(self) -> None:
        self.aborted.set()

    async def first(self) -> bytes | None:
        """The first chunk; None if the stream ended empty. Raises the producer's error."""
        item = await self._queue.get()
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            return None
        return item

    async def chunks(self) -> AsyncIterator[bytes]:
        """The remaining chunks; raises the producer's error where it happened."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item


class ThreadStreamResponse(StreamingResponse):
    """Send ``first`` then the rest of ``stream``; ``on_close`` runs once the response is over."""

    def __init__(
        self,
        stream: ByteStream,
        first: bytes | None,
        on_close: Callable[[bool], Awaitable[None]],
        *,
        media_type: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(self._body(stream, first), media_type=media_type, headers=headers)
        self._on_close = on_close
        self._sent_everything = False

    async def _body(self, stream: ByteStream, first: bytes | None) -> AsyncIterator[bytes]:
        if first is not None:
            yield first
            async for chunk in stream.chunks():
                yield chunk
        self._sent_everything = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # shielded: a disconnect may have cancelled the scope this runs in
            with anyio.CancelScope(shield=True):
                await self._on_close(self._sent_everything)
