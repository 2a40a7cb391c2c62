"""`/jam` sockets read and written on the jam's tick thread, not the event loop (decision 0019).

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

Writes come with the reads when the loop has nothing of its own unsent (``writes=True``): the
tick sends each mix right after encoding it (:meth:`TickReads.send_now`), and the protocol's
transport is swapped for a proxy through which the loop's own writes (control messages, pongs,
close frames) queue behind the tick's, in order; the tick flushes them at its next poll, and
what is left goes out first when the socket goes back. Closing through the proxy takes the
socket back at once. Each sink's ``tick_sent``/``tick_refused`` tell the loop's delivery of
the same frames what the tick already sent or refused. The tick's socket calls go to libc
through :mod:`realtime.transport.gil_io`, which keeps the GIL.

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..jam.frames import frame_sequence
from . import gil_io
from .uvicorn_ws import DirectChannel, masked_binary_at
from .wsframe import binary_frame

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
    __slots__ = ("broken", "carry", "channel", "out", "owned", "pid", "sink", "sock", "take", "transport")

    def __init__(self, channel: DirectChannel, sock: socket.socket, pid: str, take: Any, sink: Any) -> None:
        self.channel = channel
        self.sock = sock
        self.pid = pid
        self.take: Callable[[], bool] = take
        self.sink = sink  # has .closing: the loop is closing it, so it wants its reads back
        self.transport = channel.proto.transport  # the real one
        self.carry = b""  # the start of a frame whose rest has not arrived yet
        # Bytes for the socket not written yet, in order: the loop's own writes (control,
        # pongs, close frames) while the tick holds the socket, and what a full socket left.
        self.out = bytearray()
        self.owned = True  # the tick holds it (False once dropped; then `out` is the loop's)
        self.broken = False  # a write failed: the loop takes the socket back


class _LentTransport:
    """What the protocol writes through while the tick holds its socket: writes queue behind the
    tick's, in order, and closing takes the socket back first (its queued bytes included)."""

    __slots__ = ("_lent", "_reads", "real")

    def __init__(self, real: Any, reads: TickReads, lent: _Lent) -> None:
        self.real = real
        self._reads = reads
        self._lent = lent

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._reads._lock:
            self._lent.out += data

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def get_write_buffer_size(self) -> int:
        return int(self.real.get_write_buffer_size()) + len(self._lent.out)

    def is_closing(self) -> bool:
        return bool(self.real.is_closing())

    def close(self) -> None:
        self._reads._reclaim(self._lent, flush=True)
        self.real.close()

    def abort(self) -> None:
        self._reads._reclaim(self._lent, flush=False)
        self.real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class TickReads:
    """The sockets one engine's tick reads. ``register``/``unregister`` on the loop, ``poll`` on
    the tick (installed as ``engine.poll``)."""

    def __init__(
        self,
        engine: JamEngine,
        loop: asyncio.AbstractEventLoop,
        *,
        max_message: int | None,
        writes: bool = True,
    ) -> None:
        self._receive = engine.receive
        self._clock = engine.clock
        self._engine = weakref.ref(engine)
        self._loop = loop
        self._limit = max_message
        self._kernel_time = sys.platform.startswith("linux") and engine.clock is time.monotonic
        self._lock = threading.Lock()  # the owned set: mutated by both threads, rarely by the loop
        # libc calls that keep the GIL on Linux (gil_io), the socket module's elsewhere
        self._fast = gil_io.available()
        self._epoll: Any = gil_io.Epoll() if self._fast else select.epoll()
        self._rx = gil_io.Receiver(_READ) if self._fast else None
        self._owned: dict[int, _Lent] = {}  # by the duplicate descriptor
        self._conns: dict[DirectChannel, tuple[str, Callable[[], bool], Any]] = {}  # loop-owned
        self._ticks = 0
        self.given_back = 0  # times a socket went back to the loop (control messages, closes…)
        self.frames = 0  # audio frames the tick read itself
        self.sent = 0  # mix frames the tick wrote itself
        self._writes = writes
        engine.poll = self.poll
        if writes:
            engine.send_now = self.send_now

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
            self._give_back(lent, lent.carry)

    def close(self) -> None:
        """Let go of every socket without giving anything back (the engine is gone)."""
        self._conns.clear()
        with self._lock:
            lents = list(self._owned.values())
            for lent in lents:
                lent.channel.lender = None
                self._drop(lent)
            self._epoll.close()
        for lent in lents:
            self._restore(lent, flush=True)

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
        proto = channel.proto
        writes = self._writes and proto.transport.get_write_buffer_size() == 0
        with self._lock:
            self._owned[sock.fileno()] = lent
            if self._fast:
                self._epoll.register(sock.fileno())
            else:
                self._epoll.register(sock.fileno(), select.EPOLLIN)
            if writes:
                # The writes too (nothing of the loop's is unsent): the tick sends the mixes
                # itself, right after encoding them, and the loop's own writes queue behind.
                proto.transport = _LentTransport(lent.transport, self, lent)  # type: ignore[assignment]
                lent.sink.lent = lent

    def _drop(self, lent: _Lent) -> None:
        """Under the lock: forget ``lent`` and close the duplicate descriptor."""
        fd = lent.sock.fileno()
        self._owned.pop(fd, None)
        lent.owned = False
        if getattr(lent.sink, "lent", None) is lent:
            lent.sink.lent = None
        with contextlib.suppress(OSError, ValueError):  # already gone with a closed epoll
            self._epoll.unregister(fd)
        lent.sock.close()

    def _give_back(self, lent: _Lent, rest: bytes) -> None:
        """On the loop, once the tick let go: the writes it queued go out first, in order, then
        the reads go back to the parser."""
        self._restore(lent, flush=True)
        lent.channel.take_back(rest)

    def _reclaim(self, lent: _Lent, *, flush: bool) -> None:
        """On the loop, closing: take the socket from the tick now."""
        with self._lock:
            if lent.owned:
                self._drop(lent)
        self._restore(lent, flush=flush)
        lent.channel.lent = False

    def _restore(self, lent: _Lent, *, flush: bool) -> None:
        proto = lent.channel.proto
        if isinstance(proto.transport, _LentTransport):
            proto.transport = lent.transport
        with self._lock:
            out = bytes(lent.out)
            lent.out.clear()
        if flush and out and not lent.transport.is_closing():
            lent.transport.write(out)

    # ------------------------------------------------------------------ tick side
    def poll(self) -> None:
        """Read every ready socket and hand its audio frames to the engine (on the tick)."""
        give_back: list[tuple[_Lent, bytes]] = []
        with self._lock:
            owned = self._owned
            if not owned:
                return
            self._ticks += 1
            if self._ticks % _CHECK_EVERY == 0:
                for gone in [x for x in owned.values() if x.transport.is_closing()]:
                    self._drop(gone)  # closed on the loop: nothing to give back
            if self._writes:
                for held in owned.values():
                    if held.out:
                        self._flush(held)  # the loop's control messages, or a full socket's rest
                    if held.broken:
                        give_back.append((held, held.carry))
                for held, _ in give_back:
                    self._drop(held)
            try:
                ready = self._epoll.ready() if self._fast else [fd for fd, _ in self._epoll.poll(0)]
            except OSError:
                ready = []
            now = self._clock() if ready else 0.0
            offset = time.time() - now if self._kernel_time and ready else 0.0
            for fd in ready:
                found = owned.get(fd)
                if found is None:
                    continue
                lent = found
                try:
                    rest = self._read(lent, now, offset)
                except Exception:
                    log.exception("reading a jam socket on the tick failed; the loop takes it back")
                    rest = lent.carry
                if rest is not None:
                    self._drop(lent)
                    give_back.append((lent, rest))
        if give_back:
            self.given_back += len(give_back)
            call = self._loop.call_soon_threadsafe
            for lent, rest in give_back:
                call(self._give_back, lent, rest)

    def send_now(self, groups: Sequence[Any], frames: Sequence[bytes]) -> int:
        """The tick's mixes, straight to the sockets it holds (on the tick, right after encoding):
        ``groups[i]`` (the engine's groups of listeners) get ``frames[i]``. Marks each served
        sink's ``tick_sent`` (and ``tick_refused`` when its backlog is full) with the frame's
        sequence number, so the loop's delivery of the same frame skips it. 0: served no one;
        1: some listeners; 2: every listener."""
        served = 0
        missed = False
        with self._lock:
            if not self._owned:
                return 0
            for group, frame in zip(groups, frames, strict=True):
                seq = frame_sequence(frame)
                wire: bytes | None = None
                for p in group.members:
                    sink = p.sink
                    lent = getattr(sink, "lent", None)
                    if lent is None or not lent.owned:
                        missed = True
                        continue
                    if wire is None:
                        wire = binary_frame(frame)
                    self._write(lent, sink, wire, seq)
                    served = 1
                    self.sent += 1
        return 0 if not served else (1 if missed else 2)

    def _write(self, lent: _Lent, sink: Any, wire: bytes, seq: int) -> None:
        """Under the lock: one frame to one socket, behind anything queued for it."""
        if not lent.broken and not sink.closing:
            out = lent.out
            if len(out) + len(wire) > sink.max_buffer:
                sink.tick_refused = seq  # the loop counts it and closes a laggard
            elif out:
                out += wire
                self._flush(lent)
            else:
                try:
                    n = gil_io.send(lent.sock.fileno(), wire) if self._fast else lent.sock.send(wire)
                except BlockingIOError:
                    n = 0
                except OSError:
                    lent.broken = True
                    n = len(wire)
                if n < len(wire):
                    out += wire[n:]
        sink.tick_sent = seq

    def _flush(self, lent: _Lent) -> None:
        out = lent.out
        try:
            n = gil_io.send(lent.sock.fileno(), out) if self._fast else lent.sock.send(out)
        except BlockingIOError:
            return
        except OSError:
            lent.broken = True
            return
        del out[:n]

    def _read(self, lent: _Lent, now: float, offset: float) -> bytes | None:
        """One read: None while the tick keeps the socket, else the bytes the loop must parse."""
        stamp: float | None = None
        rx = self._rx
        try:
            if rx is not None:
                got, stamp = rx.recv(lent.sock.fileno())
                if got is None:
                    return None
                data = got
            else:
                data, anc, _flags, _addr = lent.sock.recvmsg(_READ, _ANC)
                for level, kind, cdata in anc:
                    if (
                        level == socket.SOL_SOCKET
                        and kind == _SO_TIMESTAMPNS
                        and len(cdata) >= _TIMESPEC.size
                    ):
                        sec, nsec = _TIMESPEC.unpack_from(cdata)
                        stamp = sec + nsec * 1e-9
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
        arrival = None if stamp is None else min(stamp - offset, now)
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
    return {
        "sockets": len(reads._owned),
        "frames": reads.frames,
        "sent": reads.sent,
        "givenBack": reads.given_back,
    }


def reads_for(engine: JamEngine, *, max_message: int | None, writes: bool = True) -> TickReads:
    """The engine's tick reader, made on first use (on the loop)."""
    reads = _readers.get(engine)
    if reads is None:
        reads = _readers[engine] = TickReads(
            engine, asyncio.get_running_loop(), max_message=max_message, writes=writes
        )
    return reads
