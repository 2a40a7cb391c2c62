"""`/jam` sockets read on the jam's tick thread instead of the event loop (decision 0019).

The event loop and the tick share one GIL. A busy loop (at 48 players, 19 200 inbound frames
a second, each a uvloop callback) asks for the GIL while the tick mixes; after the switch
interval the tick must hand it over and wait as long again to get it back, so a tick that
needs 1 ms of CPU could take 2 ms, and a few such ticks in a row were the deadline misses.
Jamulus does the same work on one thread: it reads its sockets, mixes and sends. So here the
tick thread reads the sockets of the session's jam WebSockets itself, at the start of every
tick (one ``epoll`` for all of them, one ``recvmsg`` per ready socket), and the loop is idle
while the tick runs: it sleeps in ``epoll_wait`` without the GIL.

Only the steady state is read here: whole, masked, unfragmented binary frames (the audio).
The loop lends a connection's reads (:meth:`DirectChannel.lend_reads` pauses its transport)
whenever its parser stands at a frame boundary, and the tick gives them back
(:meth:`DirectChannel.take_back`, on the loop) with the bytes from the first frame it does not
take: a control message, a ping or close frame, a frame the engine rejects or the rate limit
refuses, end of file or a socket error. The loop's parser then handles those exactly as it
always did (close codes, audits, replies), and lends the socket again at the next boundary.
Writes stay with the loop: reading on one thread and writing on another is what a socket
allows, and none of the loop's writes wait for these reads.

The tick reads through its own duplicate of the descriptor, so a connection the loop closes
meanwhile can never make it read another connection's socket; it notices the close within
:data:`_CHECK_EVERY` ticks and lets go of the duplicate.

Arrival times come from the kernel (``SO_TIMESTAMPNS``: when the data reached the socket, not
when the tick got to it), so the server-added latency still counts from the real arrival. TCP
gives the time of the last segment a read returns: a read holding two frames stamps both with
the later one's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .uvicorn_ws import DirectChannel, masked_binary_at

try:  # websockets' C unmasking, as its own parser uses it (the pure-Python one otherwise)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

if TYPE_CHECKING:
    from ..jam.engine import JamEngine

__all__ = ["TickReads", "reads_for", "reads_stats"]

log = logging.getLogger(__name__)

# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS) on every architecture but a few we do not target;
# Python's socket module does not name it.
_SO_TIMESTAMPNS: Final = 35
_TIMESPEC: Final = struct.Struct("@qq")
_ANC: Final = socket.CMSG_SPACE(_TIMESPEC.size)
_READ: Final = 16384  # bytes per read: 2.5 ms of audio is under 100; a backlog waits a tick
_CHECK_EVERY: Final = 8  # ticks between looks for connections the loop closed meanwhile


class _Lent:
    __slots__ = ("carry", "channel", "pid", "sink", "sock", "take", "transport")

    def __init__(self, channel: DirectChannel, sock: socket.socket, pid: str, take: Any, sink: Any) -> None:
        self.channel = channel
        self.sock = sock
        self.pid = pid
        self.take: Callable[[], bool] = take
        self.sink = sink  # has .closing: the loop is closing it, so it wants its reads back
        self.transport = channel.proto.transport
        self.carry = b""  # the start of a frame whose rest has not arrived yet


class TickReads:
    """The sockets one engine's tick reads. ``register``/``unregister`` on the loop, ``poll`` on
    the tick (installed as ``engine.poll``)."""

    def __init__(
        self, engine: JamEngine, loop: asyncio.AbstractEventLoop, *, max_message: int | None
    ) -> None:
        self._receive = engine.receive
        self._clock = engine.clock
        self._engine = weakref.ref(engine)
        self._loop = loop
        self._limit = max_message
        self._kernel_time = sys.platform.startswith("linux") and engine.clock is time.monotonic
        self._lock = threading.Lock()  # the owned set: mutated by both threads, rarely by the loop
        self._epoll = select.epoll()
        self._owned: dict[int, _Lent] = {}  # by the duplicate descriptor
        self._conns: dict[DirectChannel, tuple[str, Callable[[], bool], Any]] = {}  # loop-owned
        self._ticks = 0
        self.given_back = 0  # times a socket went back to the loop (control messages, closes…)
        self.frames = 0  # audio frames the tick read itself
        engine.poll = self.poll

    # ------------------------------------------------------------------ loop side
    def register(self, channel: DirectChannel, pid: str, take: Callable[[], bool], sink: Any) -> None:
        """Read this connection on the tick whenever its parser is at a frame boundary.
        ``take`` is its frame-rate bucket; ``sink.closing`` says the loop is closing it."""
        self._conns[channel] = (pid, take, sink)
        channel.lender = self._lend
        self._lend(channel)

    def unregister(self, channel: DirectChannel) -> None:
        """The connection is over: the tick lets go of it now (what it held goes to the parser)."""
        self._conns.pop(channel, None)
        channel.lender = None
        with self._lock:
            lent = next((x for x in self._owned.values() if x.channel is channel), None)
            if lent is not None:
                self._drop(lent)
        if lent is not None:
            channel.take_back(lent.carry)

    def close(self) -> None:
        """Let go of every socket without giving anything back (the engine is gone)."""
        self._conns.clear()
        with self._lock:
            for lent in list(self._owned.values()):
                lent.channel.lender = None
                self._drop(lent)
            self._epoll.close()

    def _lend(self, channel: DirectChannel) -> None:
        conn = self._conns.get(channel)
        engine = self._engine()
        if conn is None or engine is None or engine.closed or engine.poll != self.poll:
            return
        fd = channel.lend_reads()
        if fd is None:
            return
        try:
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            if self._kernel_time:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                except OSError:
                    self._kernel_time = False
        except OSError:
            log.exception("cannot read a jam socket on the tick; the loop keeps it")
            channel.take_back(b"")
            return
        lent = _Lent(channel, sock, *conn)
        with self._lock:
            self._owned[sock.fileno()] = lent
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _drop(self, lent: _Lent) -> None:
        """Under the lock: forget ``lent`` and close the duplicate descriptor."""
        fd = lent.sock.fileno()
        self._owned.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):  # already gone with a closed epoll
            self._epoll.unregister(fd)
        lent.sock.close()

    # ------------------------------------------------------------------ tick side
    def poll(self) -> None:
        """Read every ready socket and hand its audio frames to the engine (on the tick)."""
        give_back: list[tuple[DirectChannel, bytes]] = []
        with self._lock:
            owned = self._owned
            if not owned:
                return
            self._ticks += 1
            if self._ticks % _CHECK_EVERY == 0:
                for gone in [x for x in owned.values() if x.transport.is_closing()]:
                    self._drop(gone)  # closed on the loop: nothing to give back
            try:
                ready = self._epoll.poll(0)
            except OSError:
                return
            if not ready:
                return
            now = self._clock()
            offset = time.time() - now if self._kernel_time else 0.0
            for fd, _ in ready:
                lent = owned.get(fd)
                if lent is None:
                    continue
                try:
                    rest = self._read(lent, now, offset)
                except Exception:
                    log.exception("reading a jam socket on the tick failed; the loop takes it back")
                    rest = lent.carry
                if rest is not None:
                    self._drop(lent)
                    give_back.append((lent.channel, rest))
        if give_back:
            self.given_back += len(give_back)
            call = self._loop.call_soon_threadsafe
            for channel, rest in give_back:
                call(channel.take_back, rest)

    def _read(self, lent: _Lent, now: float, offset: float) -> bytes | None:
        """One read: None while the tick keeps the socket, else the bytes the loop must parse."""
        try:
            data, anc, _flags, _addr = lent.sock.recvmsg(_READ, _ANC)
        except BlockingIOError:
            return None
        except OSError:
            return lent.carry  # reset or the like: the loop's own read will see it
        if not data:
            return lent.carry  # end of file: the loop's read sees it too, and closes
        if lent.carry:
            data = lent.carry + data
            lent.carry = b""
        if lent.sink.closing:
            return data  # the loop is closing it: it wants the close frame
        arrival: float | None = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                arrival = min(sec + nsec * 1e-9 - offset, now)
        receive = self._receive
        pid = lent.pid
        take = lent.take
        limit = self._limit
        pos = 0
        end = len(data)
        short_ok = limit is None or limit >= 125
        while pos < end:
            # The frame nearly every read holds: masked binary with a 7-bit length (under 126
            # bytes), whole; masked_binary_at() decides everything else.
            if short_ok and end - pos >= 6 and data[pos] == 0x82 and 0x80 <= data[pos + 1] < 0xFE:
                head = pos + 6
                stop = head + data[pos + 1] - 0x80
                if stop > end:
                    head = -1
            else:
                head, stop = masked_binary_at(data, pos, limit)
            if head < 0:
                lent.carry = data[pos:]  # the rest of this frame comes with a later read
                return None
            if head == 0 or not take():
                return data[pos:]
            try:
                receive(pid, apply_mask(data[head:stop], data[head - 4 : head]), arrival)
            except Exception:  # rejected (InputRejected): the loop's path closes with the right code
                return data[pos:]
            self.frames += 1
            pos = stop
        return None


_readers: weakref.WeakKeyDictionary[JamEngine, TickReads] = weakref.WeakKeyDictionary()


def reads_stats(engine: JamEngine) -> dict[str, int] | None:
    """What the engine's tick reader did (for the jam stats), None when it has none."""
    reads = _readers.get(engine)
    if reads is None:
        return None
    return {"sockets": len(reads._owned), "frames": reads.frames, "givenBack": reads.given_back}


def reads_for(engine: JamEngine, *, max_message: int | None) -> TickReads:
    """The engine's tick reader, made on first use (on the loop)."""
    reads = _readers.get(engine)
    if reads is None:
        reads = _readers[engine] = TickReads(engine, asyncio.get_running_loop(), max_message=max_message)
    return reads
