"""The live-jam engine of one session: a tick thread that mixes everyone for everyone.

Transports (the ``/jam`` WebSocket, WebRTC) plug participants in through one small interface,
all called on the asyncio loop:

- :meth:`JamEngine.join` ``(user_id, name, *, can_send, sink, codec, channels) -> Participant``
- :meth:`JamEngine.receive` ``(pid, data)``: one binary audio frame (``frames.py`` format);
  raises :class:`InputRejected` (with the close code) for a frame that must end the connection
- :meth:`JamEngine.control` ``(pid, msg) -> list[str]``: a parsed control message, JSON replies
- :meth:`JamEngine.leave` ``(pid)``

and the engine talks back through the participant's :class:`AudioSink` (also on the loop).

**The tick** runs on a dedicated thread (never the loop) on an absolute ``monotonic_ns``
schedule: tick ``k`` is due at ``start + k·period``, so lateness never accumulates. Each tick
moves the frames that arrived since the last one into the senders' jitter buffers, pulls one
block per sender (Opus PLC when there is none), stacks the blocks as ``X`` (N x B), mixes all
distinct personal mixes as one GEMM with their limiters (:func:`realtime.dsp.mixer.mix_and_limit`),
encodes each distinct mix once, frames it once, and queues the same ``bytes`` for every listener
of that mix. It then wakes the loop at most once (``call_soon_threadsafe``), which hands each
listener its frames in one :meth:`AudioSink.send_audio` call. A socket never blocks the tick: the
per-listener queues are bounded (the oldest audio is dropped and counted) and a listener that
stays behind for ``laggard_s`` is closed with 1013.

**Threads.** The loop owns the roster, the sinks and the latency histograms; the tick thread owns
the jitter buffers, decoders, encoders and mix buffers. They meet in a few places only: inbound
frames go through per-participant deques (appended on the loop, drained by the tick), jitter-mode
changes through a command deque, the planner under a short lock (mutations on the loop,
``plan()`` on the tick), and outbound frames through the per-listener deques. libopus calls and
the BLAS product release the GIL, so the loop keeps running while the tick computes.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from ..dsp.effects import LimiterBank
from ..dsp.mixer import mix_and_limit
from .control import (
    ClientMessage,
    Jitter,
    Join,
    Leave,
    Mix,
    Monitor,
    ParticipantInfo,
    Ping,
    StatsRequest,
    error_message,
    participants_message,
    pong_message,
    stats_message,
    welcome_message,
)
from .frames import (
    CODEC_OPUS,
    CODEC_PCM16,
    FLAG_RESYNC,
    HEADER,
    HEADER_SIZE,
    VERSION,
    FrameError,
    parse_frame,
)
from .jitter import JitterBuffer, JitterStats
from .mixplan import InputDefaults, MixPlan, MixPlanner
from .opus import (
    MAX_PACKET,
    OpusDecoder,
    OpusEncoder,
    OpusError,
    float_to_pcm16,
    packet_samples,
    pcm16_to_float,
)
from .stats import EngineStats, HistogramBank, LogHistogram

__all__ = [
    "AudioSink",
    "EngineConfig",
    "EngineFull",
    "InputRejected",
    "JamEngine",
    "Participant",
    "warm_up",
]

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 48000
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_INVALID: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_TRY_AGAIN: Final = 1013
_CODEC_IDS: Final = {"opus": CODEC_OPUS, "pcm16": CODEC_PCM16}
_RING: Final = 256  # ticks of arrival records kept for the loop's latency accounting
_INBOX: Final = 256  # frames a sender may have in flight to the tick before the oldest is dropped
_NAN: Final = float("nan")


class AudioSink(Protocol):
    """What a transport gives the engine for one participant; every method is called on the loop."""

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        """Send these audio frames (oldest first, each a complete ``frames.py`` frame) without
        blocking. Return False when the connection is too far behind to take them (they are then
        dropped by the sink); the engine closes a sink that keeps returning False."""
        ...

    def send_control(self, text: str) -> None:
        """Send one JSON control message (stats, participants, errors) without blocking."""
        ...

    def close(self, code: int, reason: str) -> None:
        """End the connection with this WebSocket-style close code. The transport must then call
        :meth:`JamEngine.leave` (as it does for any disconnect)."""
        ...


class InputRejected(Exception):
    """A participant sent something that ends its connection (and only its connection).

    ``close_code`` is the WebSocket close code, ``reason`` a readable sentence and ``code`` the
    short machine code for the ``error`` message (a :class:`FrameError` reason such as
    ``bad_frames``, or ``not_sender``, ``bad_opus``)."""

    def __init__(self, close_code: int, reason: str, code: str = "rejected") -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.code = code


class EngineFull(Exception):
    """The session already has ``max_participants`` participants (close 1013)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block: int = 120
    bitrate: int = 128_000
    complexity: int = 5
    max_participants: int = 128
    send_queue_frames: int = 40
    laggard_s: float = 1.0
    silence_s: float = 5.0
    fade_in_s: float = 3.0
    limiter_ceiling_db: float = -1.0
    limiter_lookahead_ms: float = 1.5
    # Deadlines more than this many periods in the past are skipped, not run back to back.
    max_catch_up: int = 4

    def __post_init__(self) -> None:
        if self.block not in (120, 240, 480):
            raise ValueError(f"block must be 120, 240 or 480 samples, got {self.block}")
        if not 1 <= self.max_participants <= 4096:
            raise ValueError(f"max_participants must be within 1…4096, got {self.max_participants}")
        if self.send_queue_frames < 1:
            raise ValueError("send_queue_frames must be at least 1")

    @property
    def period_s(self) -> float:
        return self.block / SAMPLE_RATE


class Participant:
    """One member of the jam. Read-only outside the engine (its fields belong to the engine)."""

    __slots__ = (
        "_active",
        "_arrivals",
        "_behind_since",
        "_channels_in",
        "_close_request",
        "_codec_in",
        "_decoder",
        "_inbox",
        "_jitter",
        "_jstats",
        "_outq",
        "_pcm_scratch",
        "_playing",
        "_queue_drops",
        "_stats_due",
        "bytes_in",
        "bytes_out",
        "can_send",
        "channels",
        "codec",
        "corrupt",
        "dropped_in",
        "dropped_out",
        "joined_at",
        "last_arrival",
        "name",
        "pid",
        "rtt_ms",
        "self_monitor",
        "sent",
        "sink",
        "slot",
        "user_id",
    )

    def __init__(
        self,
        pid: str,
        user_id: str,
        name: str | None,
        can_send: bool,
        sink: AudioSink,
        slot: int,
        codec: str,
        channels: int,
        block: int,
        now: float,
    ) -> None:
        self.pid = pid
        self.user_id = user_id
        self.name = name
        self.can_send = can_send
        self.sink = sink
        self.slot = slot
        self.codec = codec  # what this participant sends (announced) and receives
        self.channels = channels
        self.self_monitor = True
        self.joined_at = now
        self.last_arrival = -math.inf
        self.rtt_ms: float | None = None
        self.sent = self.bytes_out = self.dropped_out = 0
        self.bytes_in = self.dropped_in = self.corrupt = 0
        # loop → tick
        self._inbox: collections.deque[tuple[Any, bytes, bytes | None, float]] = collections.deque()
        # tick → loop
        self._outq: collections.deque[bytes] = collections.deque()
        self._queue_drops = 0
        self._stats_due = False
        self._close_request: tuple[int, str] | None = None
        self._behind_since: float | None = None
        # tick-thread state
        self._jitter: JitterBuffer | None = JitterBuffer(block_s=block / SAMPLE_RATE) if can_send else None
        self._jstats: JitterStats | None = None
        self._decoder: OpusDecoder | None = None
        self._codec_in = -1
        self._channels_in = 0
        self._active = False
        self._playing = False
        self._arrivals: dict[int, float] = {}
        self._pcm_scratch: NDArray[np.float32] | None = None

    @property
    def active(self) -> bool:
        """True while this participant's audio is in the mix (it sent within ``silence_s``)."""
        return self._active

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(id=self.pid, name=self.name, user_id=self.user_id, can_send=self.can_send)


class _MixOut:
    """One distinct mix of the current plan: its listeners and its encoder."""

    __slots__ = ("encoder", "key", "listeners", "needs_opus", "needs_pcm", "planar")

    def __init__(self, key: str, encoder: OpusEncoder) -> None:
        self.key = key
        self.encoder = encoder
        self.listeners: list[Participant] = []
        self.needs_opus = False
        self.needs_pcm = False
        self.planar: NDArray[np.float32] = np.zeros((2, 0), np.float32)


class JamEngine:
    """One session's jam. See the module docstring for the threading contract."""

    def __init__(
        self,
        session_id: str,
        config: EngineConfig | None = None,
        *,
        wake: Callable[[Callable[[], None]], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_empty: Callable[[JamEngine], None] | None = None,
    ) -> None:
        """``wake`` schedules a callable on the loop from the tick thread (the loop's
        ``call_soon_threadsafe``); None means manual delivery (tests call :meth:`deliver`).
        ``on_empty`` is called on the loop when the last participant leaves."""
        self.session_id = session_id
        self.config = cfg = config or EngineConfig()
        self.block = cfg.block
        self._wake = wake
        self._clock = clock
        self._on_empty = on_empty
        cap = cfg.max_participants
        b = cfg.block
        self.stats = EngineStats(block=b)
        self.latency = HistogramBank(cap)
        self._departed = _Totals()
        # roster (loop-owned; the tick reads the dict and tuple references, swapped atomically)
        self._by_pid: dict[str, Participant] = {}
        self._senders: tuple[Participant, ...] = ()
        self._members: tuple[Participant, ...] = ()
        self._slots: list[Participant | None] = [None] * cap
        self._free = list(range(cap - 1, -1, -1))
        self._pids = itertools.count(1)
        self._roster_version = 0
        # planner (mutated on the loop, planned on the tick, under the lock)
        self._plan_lock = threading.Lock()
        self._planner = MixPlanner(block=b, sample_rate=SAMPLE_RATE, fade_in_s=cfg.fade_in_s)
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        # tick-thread state, preallocated for the worst case
        self._tick = 0
        self._x = np.zeros((cap, b), np.float32)
        self._x_rows = [self._x[i] for i in range(cap)]
        base = self._x.ctypes.data
        self._x_addr = [base + i * b * 4 for i in range(cap)]
        self._out = np.zeros((2 * cap, b), np.float32)
        self._scratch = np.zeros((2 * cap, b), np.float32)
        self._arrival_now = np.full(cap, _NAN)
        self._bank: LimiterBank | None = None
        self._plan: MixPlan | None = None
        self._plan_roster = -1
        self._shape: tuple[object, ...] = ()
        self._inputs: list[Participant | None] = []
        self._mixes: list[_MixOut] = []
        self._encoders: dict[str, OpusEncoder] = {}
        self._frame = (ctypes.c_ubyte * (HEADER_SIZE + 2 * b * 2 * 2 + MAX_PACKET))()
        self._frame_addr = ctypes.addressof(self._frame)
        self._pcm_frame = bytearray(HEADER_SIZE + b * 2 * 2)
        self._pcm_view = memoryview(self._pcm_frame)[HEADER_SIZE:]
        self._resync = True
        self._ticks_per_second = max(1, round(SAMPLE_RATE / b))
        # tick → loop
        self._ring_arrival = np.full((_RING, cap), _NAN)
        self._ring_slot = np.zeros((_RING, cap), np.intp)
        self._ring_n = np.zeros(_RING, np.int64)
        self._ring_tick = np.full(_RING, -1, np.int64)
        self._ring_time = np.zeros(_RING)
        self._posted = -1
        self._delivered = -1
        self._wake_pending = False
        # thread
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # monotonic_ns of the schedule's start (tick 0's deadline) and of the last tick's end
        self.schedule: tuple[int, int] = (0, 0)
        self.closed = False

    # ------------------------------------------------------------------ loop side: roster
    @property
    def participants(self) -> tuple[Participant, ...]:
        return self._members

    def participant(self, pid: str) -> Participant | None:
        return self._by_pid.get(pid)

    def join(
        self,
        user_id: str,
        name: str | None,
        *,
        can_send: bool,
        sink: AudioSink,
        codec: str = "opus",
        channels: int = 2,
        defaults: InputDefaults | None = None,
    ) -> Participant:
        """Add a participant; sends it the welcome and everyone the new participants list.

        Raises :class:`EngineFull` when the session is at ``max_participants``."""
        if self.closed:
            raise EngineFull("this jam is shutting down")
        if not self._free:
            raise EngineFull(f"this jam is full ({self.config.max_participants} participants)")
        if codec not in _CODEC_IDS:
            raise ValueError(f"codec must be opus or pcm16, got {codec!r}")
        slot = self._free.pop()
        pid = f"p{next(self._pids)}"
        p = Participant(
            pid,
            user_id,
            name,
            can_send,
            sink,
            slot,
            codec,
            channels,
            self.block,
            self._clock(),
        )
        self.latency.reset_row(slot)
        with self._plan_lock:
            self._planner.add(pid, sends=can_send, listens=True, defaults=defaults or InputDefaults())
        self._slots[slot] = p
        self._by_pid[pid] = p
        self._rebuild_roster()
        sink.send_control(self._welcome(p))
        self._broadcast(participants_message([m.info() for m in self._members]))
        return p

    def leave(self, pid: str) -> None:
        """Remove a participant (idempotent). Its totals stay in the session's counters."""
        p = self._by_pid.pop(pid, None)
        if p is None:
            return
        with self._plan_lock:
            self._planner.remove(pid)
        self._departed.add(p, self.latency.row(p.slot))
        self._slots[p.slot] = None
        self._free.append(p.slot)
        self._rebuild_roster()
        self._broadcast(participants_message([m.info() for m in self._members]))
        if not self._members and self._on_empty is not None:
            self._on_empty(self)

    def _rebuild_roster(self) -> None:
        members = tuple(self._by_pid.values())
        self._members = members
        self._senders = tuple(m for m in members if m.can_send)
        self._roster_version += 1

    def _welcome(self, p: Participant) -> str:
        jb = p._jitter
        return welcome_message(
            participant_id=p.pid,
            block=self.block,
            sample_rate=SAMPLE_RATE,
            codec=p.codec,
            channels=2,
            can_send=p.can_send,
            participants=[m.info() for m in self._members],
            jitter_mode=jb.mode if jb is not None else "auto",
            jitter_depth=jb.depth if jb is not None else None,
            self_monitor=p.self_monitor,
        )

    def _broadcast(self, text: str) -> None:
        for m in self._members:
            m.sink.send_control(text)

    def set_defaults(self, pid: str, defaults: InputDefaults) -> None:
        """A sender's level in everyone's mix (the session document's live track)."""
        if pid in self._by_pid:
            with self._plan_lock:
                self._planner.set_defaults(pid, defaults)

    # ------------------------------------------------------------------ loop side: input
    def receive(self, pid: str, data: bytes) -> None:
        """One binary audio frame from ``pid``; parsed here, played by the tick.

        Raises :class:`InputRejected`: 1008 for a participant that may not send (viewer),
        1003 for an unknown codec, 1007 for any other malformed frame (including an Opus packet
        whose duration is not the session's block). Frames from unknown pids are ignored.
        """
        p = self._by_pid.get(pid)
        if p is None:
            return
        if not p.can_send:
            raise InputRejected(CLOSE_POLICY, "viewers cannot send audio", "not_sender")
        try:
            header, payload, redundant = parse_frame(data)
        except FrameError as exc:
            raise InputRejected(
                CLOSE_UNSUPPORTED if exc.reason == "unknown_codec" else CLOSE_INVALID, str(exc), exc.reason
            ) from exc
        block = self.block
        if header.frames != block:
            raise InputRejected(
                CLOSE_INVALID, f"frames must be {block} in this session, got {header.frames}", "bad_frames"
            )
        body = bytes(payload)
        extra = bytes(redundant) if len(redundant) else None
        if header.codec == CODEC_OPUS:
            try:
                if packet_samples(body) != block or (extra is not None and packet_samples(extra) != block):
                    raise InputRejected(
                        CLOSE_INVALID, f"Opus packet duration is not {block} samples", "bad_opus"
                    )
            except OpusError as exc:
                raise InputRejected(CLOSE_INVALID, f"invalid Opus packet: {exc}", "bad_opus") from exc
        arrival = self._clock()
        p.last_arrival = arrival
        p.bytes_in += len(data)
        inbox = p._inbox
        if len(inbox) >= _INBOX:
            inbox.popleft()
            p.dropped_in += 1
        inbox.append((header, body, extra, arrival))

    # ------------------------------------------------------------------ loop side: control
    def control(self, pid: str, msg: ClientMessage) -> list[str]:
        """Apply one control message from ``pid``; returns the JSON replies to send it.

        :class:`~realtime.jam.control.Leave` is the transport's business (it closes and calls
        :meth:`leave`); here it is a no-op."""
        p = self._by_pid.get(pid)
        if p is None:
            return []
        if isinstance(msg, Ping):
            return [pong_message(msg.t, time.monotonic())]
        if isinstance(msg, Mix):
            try:
                with self._plan_lock:
                    self._planner.set_overrides(
                        pid, gains=msg.gains, pans=msg.pans, mutes=msg.mutes, reset=msg.reset
                    )
            except ValueError as exc:  # the planner validates as a whole: nothing changed
                return [error_message("out_of_range", str(exc))]
            return []
        if isinstance(msg, Monitor):
            with self._plan_lock:
                self._planner.set_self_monitor(pid, msg.self_monitor)
            p.self_monitor = msg.self_monitor
            return []
        if isinstance(msg, Jitter):
            jb = p._jitter
            if jb is None:
                return [error_message("not_sender", "viewers have no jitter buffer on the server")]
            mode, depth = msg.mode, msg.depth
            self._commands.append(lambda: jb.set_mode(mode, depth))
            return []
        if isinstance(msg, StatsRequest):
            return [self._stats_text(p)]
        if isinstance(msg, Join):
            p.codec = msg.codec
            p.channels = msg.channels
            if msg.name is not None and msg.name != p.name:
                p.name = msg.name
                self._broadcast(participants_message([m.info() for m in self._members]))
            self._roster_version += 1  # the mixes' codec needs may have changed
            return [self._welcome(p)]
        if isinstance(msg, Leave):
            return []
        return [error_message("unknown_type", "unsupported control message")]

    def set_rtt(self, pid: str, rtt_ms: float) -> None:
        """Record a round trip time measured by the transport or reported by the client."""
        p = self._by_pid.get(pid)
        if p is not None and math.isfinite(rtt_ms) and rtt_ms >= 0:
            p.rtt_ms = rtt_ms

    # ------------------------------------------------------------------ loop side: delivery
    def deliver(self) -> None:
        """Hand every listener the frames queued by the tick (on the loop; scheduled by the tick)."""
        self._wake_pending = False
        now = self._clock()
        self._account_latency(now)
        laggard_s = self.config.laggard_s
        for p in self._members:
            q = p._outq
            n = len(q)
            if n:
                frames = [q.popleft() for _ in range(n)]
                ok = p.sink.send_audio(frames)
                if ok:
                    p.sent += n
                    for f in frames:
                        p.bytes_out += len(f)
                else:
                    p.dropped_out += n
                drops = p._queue_drops
                if drops:
                    p._queue_drops = 0
                    p.dropped_out += drops
                if ok and not drops:
                    p._behind_since = None
                elif p._behind_since is None:
                    p._behind_since = now
                elif now - p._behind_since >= laggard_s:
                    p._behind_since = None
                    p.sink.close(CLOSE_TRY_AGAIN, "too far behind on audio; reconnect")
            if p._stats_due:
                p._stats_due = False
                p.sink.send_control(self._stats_text(p))
            request = p._close_request
            if request is not None:
                p._close_request = None
                p.sink.close(*request)

    def _account_latency(self, now: float) -> None:
        """Server-added latency of every frame in the ticks posted since the last delivery."""
        upto = self._posted
        first = max(self._delivered + 1, upto - _RING + 1)
        self._delivered = upto
        for k in range(first, upto + 1):
            r = k % _RING
            if self._ring_tick[r] != k:
                continue  # overwritten: the loop fell more than _RING ticks behind
            self.stats.delivery.record(now - float(self._ring_time[r]))
            n = int(self._ring_n[r])
            if n:
                self.latency.record(self._ring_slot[r, :n], now - self._ring_arrival[r, :n])

    # ------------------------------------------------------------------ the tick
    def tick_once(self) -> None:
        """One block: drain inputs, mix, encode once per distinct mix, queue for listeners."""
        k = self._tick
        self._tick = k + 1
        now = self._clock()
        commands = self._commands
        while commands:
            try:
                commands.popleft()()
            except Exception:
                log.exception("jam command failed", extra={"room": self.session_id})
        silence_s = self.config.silence_s
        for sender in self._senders:
            if sender._inbox:
                self._drain(sender)
            elif sender._active and now - sender.last_arrival > silence_s:
                self._deactivate(sender)
        with self._plan_lock:
            plan = self._planner.plan()
        roster = self._roster_version
        if plan is not self._plan or roster != self._plan_roster:
            # A new plan object every block while gains move (fades, changes): re-map inputs
            # and mixes to participants only when who sends or who shares which mix changed.
            self._plan = plan
            self._plan_roster = roster
            shape = (plan.inputs, plan.listeners_of, roster)
            if shape != self._shape:
                self._replan(plan)
                self._shape = shape
        n = len(plan.inputs)
        arrivals = self._arrival_now
        inputs = self._inputs
        x_rows = self._x_rows
        x_addr = self._x_addr
        for i in range(n):
            p = inputs[i]
            row = x_rows[i]
            arrivals[i] = _NAN
            if p is None or not p._active:
                row.fill(0.0)
                continue
            jb = p._jitter
            payload = jb.get() if jb is not None else None
            try:
                if payload is None:
                    self._conceal(p, row, x_addr[i])
                else:
                    arrivals[i] = p._arrivals.pop(id(payload), _NAN)
                    self._decode(p, payload, row, x_addr[i])
            except OpusError as exc:
                row.fill(0.0)
                p.corrupt += 1
                if p._close_request is None:
                    p._close_request = (CLOSE_INVALID, f"undecodable Opus packet: {exc}")
        mixes = self._mixes
        if mixes:
            m2 = 2 * len(mixes)
            bank = self._bank
            assert bank is not None
            out = self._out[:m2]
            mix_and_limit(
                plan.gains, self._x[:n], bank, out, gains_end=plan.gains_end, scratch=self._scratch[:m2]
            )
            self._emit(k, mixes)
        self._post(k, n, now)

    def _drain(self, p: Participant) -> None:
        jb = p._jitter
        if jb is None:
            p._inbox.clear()
            return
        inbox = p._inbox
        arrivals = p._arrivals
        if len(arrivals) > 1024:
            arrivals.clear()  # entries of packets the buffer dropped (late, overflow): forget them
        while inbox:
            header, body, extra, arrival = inbox.popleft()
            if header.codec != p._codec_in or header.channels != p._channels_in:
                self._switch_format(p, header.codec, header.channels)
            if not p._active:
                p._active = True
            arrivals[id(body)] = arrival
            jb.put(header.sequence, body, arrival, resync=bool(header.flags & FLAG_RESYNC))
            if extra is not None and jb.put_redundant((header.sequence - 1) & 0xFFFFFFFF, extra, arrival):
                arrivals[id(extra)] = arrival

    def _switch_format(self, p: Participant, codec: int, channels: int) -> None:
        """A sender's first frame, or a change of codec or channels: fresh decoder and buffer."""
        if p._codec_in != -1 and p._jitter is not None:
            p._jitter.reset()
            p._arrivals.clear()
        p._codec_in = codec
        p._channels_in = channels
        p._playing = False
        if codec == CODEC_OPUS:
            p._decoder = OpusDecoder(channels, self.block)
            p._pcm_scratch = None
        else:
            p._decoder = None
            p._pcm_scratch = np.zeros((channels, self.block), np.float32)

    def _deactivate(self, p: Participant) -> None:
        """A sender silent for ``silence_s`` leaves the mix (it stays joined and keeps listening)."""
        p._active = False
        p._playing = False
        if p._jitter is not None:
            p._jitter.reset()
        p._arrivals.clear()
        if p._decoder is not None:
            p._decoder.reset()

    def _decode(self, p: Participant, payload: bytes, row: NDArray[np.float32], addr: int) -> None:
        decoder = p._decoder
        if decoder is not None:
            decoder.decode_mono(payload, row, addr)
        else:
            scratch = p._pcm_scratch
            assert scratch is not None
            pcm16_to_float(payload, p._channels_in, self.block, scratch)
            if p._channels_in == 1:
                row[:] = scratch[0]
            else:
                np.add(scratch[0], scratch[1], out=row)
                row *= np.float32(0.5)
        p._playing = True

    def _conceal(self, p: Participant, row: NDArray[np.float32], addr: int) -> None:
        decoder = p._decoder
        if decoder is not None and p._playing:
            decoder.conceal_mono(row, addr)
        else:
            row.fill(0.0)  # PCM16 has no PLC model: a missing block is silence

    def _replan(self, plan: MixPlan) -> None:
        """The plan or the roster changed: map inputs and mixes to participants, size the bank."""
        by_pid = self._by_pid
        self._inputs = [by_pid.get(pid) for pid in plan.inputs]
        m = plan.mixes
        if m and (self._bank is None or self._bank.listeners != m):
            cfg = self.config
            self._bank = LimiterBank(
                m, 2, SAMPLE_RATE, ceiling_db=cfg.limiter_ceiling_db, lookahead_ms=cfg.limiter_lookahead_ms
            )
        encoders = self._encoders
        mixes: list[_MixOut] = []
        keep: set[str] = set()
        for index, listeners in enumerate(plan.listeners_of):
            # A mix keeps its encoder (and so a continuous Opus stream) while its first
            # listener stays in it.
            key = listeners[0] if listeners else f"#{index}"
            keep.add(key)
            enc = encoders.get(key)
            if enc is None:
                enc = encoders[key] = OpusEncoder(
                    2, self.block, bitrate=self.config.bitrate, complexity=self.config.complexity
                )
            mix = _MixOut(key, enc)
            mix.planar = self._out[2 * index : 2 * index + 2]
            for pid in listeners:
                listener = by_pid.get(pid)
                if listener is None:
                    continue
                mix.listeners.append(listener)
                if listener.codec == "pcm16":
                    mix.needs_pcm = True
                else:
                    mix.needs_opus = True
            mixes.append(mix)
        for key in [k for k in encoders if k not in keep]:
            encoders.pop(key).close()
        self._mixes = mixes

    def _emit(self, k: int, mixes: list[_MixOut]) -> None:
        """Encode and frame each distinct mix once; queue the same bytes for all its listeners."""
        flags = FLAG_RESYNC if self._resync else 0
        self._resync = False
        seq = k & 0xFFFFFFFF
        ts = (k * self.block) & 0xFFFFFFFF
        b = self.block
        cap = self.config.send_queue_frames
        buf = self._frame
        for mix in mixes:
            opus_frame = pcm_frame = b""
            if mix.needs_opus:
                HEADER.pack_into(buf, 0, VERSION, CODEC_OPUS, 2, flags, seq, ts, b, 0)
                size = mix.encoder.encode_into(mix.planar, buf, HEADER_SIZE)
                opus_frame = ctypes.string_at(self._frame_addr, HEADER_SIZE + size)
            if mix.needs_pcm:
                HEADER.pack_into(self._pcm_frame, 0, VERSION, CODEC_PCM16, 2, flags, seq, ts, b, 0)
                float_to_pcm16(mix.planar, self._pcm_view)
                pcm_frame = bytes(self._pcm_frame)
            for p in mix.listeners:
                q = p._outq
                if len(q) >= cap:
                    q.popleft()
                    p._queue_drops += 1
                q.append(pcm_frame if p.codec == "pcm16" else opus_frame)

    def _post(self, k: int, n: int, now: float) -> None:
        """Publish this tick's arrivals for the loop's latency accounting; wake the loop once."""
        r = k % _RING
        if n:
            self._ring_arrival[r, :n] = self._arrival_now[:n]
            inputs = self._inputs
            slots = self._ring_slot[r]
            for i in range(n):
                p = inputs[i]
                slots[i] = p.slot if p is not None else 0
        self._ring_n[r] = n
        self._ring_time[r] = now
        self._ring_tick[r] = k
        self._posted = k
        # Stats: each participant's turn comes once a second, spread over the ticks by slot.
        tps = self._ticks_per_second
        slots_list = self._slots
        for s in range(k % tps, len(slots_list), tps):
            p = slots_list[s]
            if p is not None:
                if p._jitter is not None:
                    p._jstats = p._jitter.stats()
                p._stats_due = True
        wake = self._wake
        if wake is not None and not self._wake_pending:
            self._wake_pending = True
            wake(self.deliver)

    def refresh_stats(self) -> None:
        """Snapshot every sender's jitter-buffer counters now. The tick does this once a second
        per participant; call it directly only where no tick thread runs (manual mode, tests)."""
        if self.running:
            raise RuntimeError("refresh_stats() belongs to the tick thread while it runs")
        for p in self._members:
            if p._jitter is not None:
                p._jstats = p._jitter.stats()

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        """Start the tick thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"jam-tick-{self.session_id[:8]}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the tick thread and wait for it (blocking: call off the loop, or with care)."""
        self.closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.error("jam tick thread did not stop", extra={"room": self.session_id})
                return  # it may still be encoding: leave the encoders to the garbage collector
        for enc in self._encoders.values():
            enc.close()
        self._encoders.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        warm_up(self.block)
        period = self.block * 1_000_000_000 // SAMPLE_RATE  # exact for 120/240/480 at 48 kHz
        stop = self._stop
        stats = self.stats
        tick_hist = stats.tick
        late_hist = stats.lateness
        start = time.monotonic_ns()
        self.schedule = (start, start)
        k = 0
        early = 0
        try:
            while not stop.is_set():
                deadline = start + k * period
                now = time.monotonic_ns()
                wait = deadline - now - early
                if wait > 0:
                    if stop.wait(wait / 1e9):
                        break
                    woke = time.monotonic_ns()
                    # Learn how late this OS wakes us and ask for that much earlier next time.
                    over = woke - (deadline - early)
                    early = min(max(0, (early * 7 + over) // 8), 500_000)
                    now = woke
                behind = (now - deadline) // period
                if behind > self.config.max_catch_up:
                    # A stall (GC, swap, a stopped process): skip the missed deadlines instead of
                    # firing them back to back; the schedule stays anchored to `start`.
                    k += behind
                    stats.skipped_ticks += behind
                    self._resync = True
                    continue
                t0 = time.monotonic_ns()
                late_hist.record((t0 - deadline) / 1e9 if t0 > deadline else 0.0)
                self.tick_once()
                t1 = time.monotonic_ns()
                stats.ticks += 1
                tick_hist.record((t1 - t0) / 1e9)
                if t1 > deadline + period:
                    stats.deadline_misses += 1
                k += 1
                self.schedule = (start, t1)
        except Exception:
            log.exception("jam tick crashed", extra={"room": self.session_id})
            self._crash()

    def _crash(self) -> None:
        """The tick died: close every participant (1011) rather than leave them in silence."""

        def close_all() -> None:
            for p in self._members:
                p.sink.close(1011, "jam engine error")

        if self._wake is not None:
            self._wake(close_all)

    # ------------------------------------------------------------------ stats
    def _stats_text(self, p: Participant) -> str:
        down = {
            "sent": p.sent,
            "bytes": p.bytes_out,
            "dropped": p.dropped_out,
            "queued": len(p._outq),
        }
        h = self.stats.tick
        period = self.config.period_s
        server: dict[str, int | float] = {
            "tickP50Ms": round(h.percentile(0.5) * 1000, 4),
            "tickP99Ms": round(h.percentile(0.99) * 1000, 4),
            "periodMs": round(period * 1000, 4),
            "missedTicks": self.stats.deadline_misses,
            "latencyP50Ms": round(_row_percentile(self.latency, p.slot, 0.5) * 1000, 4),
            "latencyP99Ms": round(_row_percentile(self.latency, p.slot, 0.99) * 1000, 4),
        }
        return stats_message(up=p._jstats, down=down, server=server)

    def participant_json(self, p: Participant) -> dict[str, Any]:
        js = p._jstats
        inbound: dict[str, Any] = {
            "bytes": p.bytes_in,
            "dropped": p.dropped_in,
            "corrupt": p.corrupt,
        }
        if js is not None:
            inbound.update(
                packets=js.packets,
                played=js.played,
                lost=js.lost,
                late=js.late,
                duplicates=js.duplicates,
                concealed=js.concealed,
                underruns=js.underruns,
                overflows=js.overflows,
                recovered=js.recovered,
                depth=js.depth,
                autoDepth=js.auto_depth,
                jitterMs=round(js.jitter_ms, 3),
                queued=js.queued,
                mode=js.mode,
            )
        return {
            "id": p.pid,
            "userId": p.user_id,
            "name": p.name,
            "canSend": p.can_send,
            "active": p._active,
            "codec": p.codec,
            "selfMonitor": p.self_monitor,
            "in": inbound,
            "out": {"sent": p.sent, "bytes": p.bytes_out, "dropped": p.dropped_out, "queued": len(p._outq)},
            "rttMs": p.rtt_ms,
            "latencyMs": self.latency.row(p.slot).snapshot(),
        }

    def stats_json(self) -> dict[str, Any]:
        """Everything ``GET /api/sessions/{id}/jam/stats`` shows (call on the loop)."""
        return {
            "session": self.session_id,
            "running": self.running,
            "engine": self.stats.as_json(),
            "participants": [self.participant_json(p) for p in self._members],
            "latencyMs": self.latency_total().snapshot(),
        }

    def latency_total(self) -> LogHistogram:
        """Server-added latency over everyone, present and departed."""
        h = self.latency.total()
        h.merged(self._departed.latency)
        return h

    def totals(self) -> dict[str, int]:
        """Monotonic counters over everyone who was in this jam (for Prometheus)."""
        t = self._departed.copy()
        for p in self._members:
            t.add(p, None)
        return t.counters()


_warm: set[int] = set()
_warm_lock = threading.Lock()


def warm_up(block: int = 120) -> None:
    """Compile (or load from numba's cache) the tick's kernels and load libopus, once per process.

    The first limiter call costs up to a second; done inside the schedule it would skip hundreds
    of ticks. Engines call this before their first deadline; the app calls it at startup.
    """
    with _warm_lock:
        if block in _warm:
            return
        bank = LimiterBank(1, 2, SAMPLE_RATE)
        x = np.zeros((1, block), np.float32)
        out = np.zeros((2, block), np.float32)
        mix_and_limit(np.ones((2, 1), np.float32), x, bank, out)
        mix_and_limit(
            np.ones((2, 1), np.float32),
            x,
            bank,
            out,
            gains_end=np.zeros((2, 1), np.float32),
            scratch=np.zeros((2, block), np.float32),
        )
        enc = OpusEncoder(2, block)
        OpusDecoder(2, block).decode(enc.encode(out))
        _warm.add(block)


def _row_percentile(bank: HistogramBank, row: int, q: float) -> float:
    return bank.row(row).percentile(q)


class _Totals:
    """Counters of participants who left, so session totals never go backwards."""

    __slots__ = ("latency", "values")

    _KEYS: Final = (
        "packets_in",
        "packets_out",
        "bytes_in",
        "bytes_out",
        "lost",
        "late",
        "concealed",
        "dropped_in",
        "dropped_out",
        "corrupt",
        "joined",
    )

    def __init__(self) -> None:
        self.values = dict.fromkeys(self._KEYS, 0)
        self.latency = LogHistogram()

    def add(self, p: Participant, latency: LogHistogram | None) -> None:
        v = self.values
        js = p._jstats
        if js is not None:
            v["packets_in"] += js.packets
            v["lost"] += js.lost
            v["late"] += js.late
            v["concealed"] += js.concealed
        v["packets_out"] += p.sent
        v["bytes_in"] += p.bytes_in
        v["bytes_out"] += p.bytes_out
        v["dropped_in"] += p.dropped_in
        v["dropped_out"] += p.dropped_out
        v["corrupt"] += p.corrupt
        v["joined"] += 1
        if latency is not None:
            self.latency.merged(latency)

    def copy(self) -> _Totals:
        t = _Totals()
        t.values = dict(self.values)
        return t

    def counters(self) -> dict[str, int]:
        return dict(self.values)
