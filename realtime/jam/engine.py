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
encodes each distinct mix once, frames it once, and posts the tick's frames as one record. It
then wakes the loop at most once (``call_soon_threadsafe``), which hands the frames out by
*group* (the listeners of one mix who take one codec): sinks that name a :class:`FanOut` get one
call for the whole group (the ``/jam`` WebSocket frames the bytes once and writes them to every
socket), the others one :meth:`AudioSink.send_audio` call each. A socket never blocks the tick:
the engine keeps at most ``send_queue_frames`` undelivered ticks (the oldest are dropped and
counted), a sink refuses audio when its connection is too far behind, and a listener that keeps
refusing for ``laggard_s`` is closed with 1013.

**The hot path** is a handful of operations per packet: :meth:`JamEngine.receive` clears the
common frame with a few byte compares (the full parser handles the rest) and queues the bytes
as they are; the tick reads the header fields straight from them; the jitter buffer decides its
depth from an O(1)-per-packet statistic; a mono Opus decoder writes each sender's block straight
into its row of ``X`` (libopus downmixes a stereo stream itself); delivery counts once per group.

**Threads.** The loop owns the roster, the sinks and the latency histograms; the tick thread owns
the jitter buffers, decoders, encoders and mix buffers. They meet in a few places only: inbound
frames go through per-participant deques (appended on the loop, drained by the tick), jitter-mode
changes through a command deque, the planner under a short lock (mutations on the loop,
``plan()`` on the tick), and outbound records, stats and close requests through engine deques.
The tick keeps the GIL for its whole computation (its libopus calls go through ``PyDLL``, see
:mod:`realtime.jam.opus`): CPython gives a released GIL back to a waiting thread only when the
holder blocks or after the switch interval (5 ms), so a tick that let go of it for every codec
call could lose whole blocks to the loop's thread. The loop runs while the tick sleeps.

**Real-time priority** is left to the deployment. On a machine shared with other busy processes
the tick (and the loop, which the tick waits for when it holds the GIL) can be preempted for
whole blocks; giving the server's threads a real-time policy (``chrt -f -p 10 <tid>`` for each
thread, or systemd's ``CPUSchedulingPolicy=fifo``) is what removes those deadline misses:
``benchmarks/jam_capacity.py --realtime`` measures it.
"""

from __future__ import annotations

import collections
import ctypes
import gc
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
    SEQUENCE,
    VERSION,
    FrameError,
    frame_sequence,
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
    packet_samples_table,
    pcm16_to_float,
)
from .scheduling import lower_switch_interval, request_realtime
from .stats import EngineStats, HistogramBank, LogHistogram

__all__ = [
    "AudioSink",
    "EngineConfig",
    "EngineFull",
    "FanOut",
    "InputRejected",
    "JamEngine",
    "JamTap",
    "Participant",
    "freeze_heap",
    "tick_served",
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
_LATENCY_BATCH: Final = 64  # delivered ticks whose latencies are recorded together
_INBOX: Final = 256  # frames a sender may have in flight to the tick before the oldest is dropped
_NAN: Final = float("nan")
_FAST_MAX: Final = HEADER_SIZE + MAX_PACKET  # the longest single-payload Opus frame
_WAKE_EVERY: Final = 8  # ticks between the loop's wake-ups when the tick sends every mix itself


def tick_served(sink: object, seq: int) -> bool:
    """Whether the tick already sent frame ``seq`` (a wrapping u32) to ``sink`` itself: its
    ``tick_sent`` is that frame's or a later one's sequence number."""
    sent: int = getattr(sink, "tick_sent", -1)
    return sent >= 0 and (sent - seq) & 0xFFFFFFFF < 0x80000000


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


class FanOut(Protocol):
    """An optional batch writer a sink may name in a ``fanout`` attribute (shared by its kind).

    Every listener of a mix gets the same frames; rather than one :meth:`AudioSink.send_audio`
    call per listener, the engine hands all of a tick's listeners whose sinks name the same
    fan-out to one :meth:`send_audio_many` call, which writes the same bytes to each (the
    ``/jam`` WebSocket frames them once). Sinks without ``fanout`` get ``send_audio``.
    """

    def send_audio_many(self, sinks: Sequence[Any], frames: Sequence[bytes]) -> list[int] | None:
        """``send_audio(frames)`` for each sink; returns the indexes of those that refused
        (too far behind), or None when none did."""
        ...


JamTap = Callable[
    [int, tuple[str, ...], NDArray[np.float32], NDArray[np.float64], NDArray[np.int64], float], None
]
"""``tap(tick, inputs, x, arrivals, seqs, now)``, called on the tick thread after decoding:
``tick`` is the index of this tick's deadline on the schedule (deadlines skipped after a stall
count, so it jumps there), ``x`` this tick's decoded input rows (N x B, in ``inputs`` pid order;
a view valid during the call only), ``arrivals`` each row's arrival time on the engine clock
(NaN: concealed or silent), ``seqs`` the place of each row's block in its sender's stream
(:attr:`JitterBuffer.played_seq`; -1: a block the buffer inserted, or no sender) and ``now`` the
tick's clock reading."""


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
    # The mixes' limiter delays them by its look-ahead: the smallest LimiterBank allows (0.5 ms,
    # 24 samples) is the jam's default, and it counts in the server-added latency figures.
    limiter_lookahead_ms: float = 0.5
    # Deadlines more than this many periods in the past are skipped, not run back to back.
    max_catch_up: int = 4
    # Move the heap into the garbage collector's permanent generation when a jam starts (see
    # freeze_heap): a full collection of a server-sized heap stops every thread for tens of ms.
    freeze_heap: bool = True
    # The tick thread's SCHED_FIFO priority (1-99; 0 leaves it at normal priority) and the
    # interpreter's GIL switch interval while a jam runs (see realtime.jam.scheduling).
    realtime_priority: int = 10
    switch_interval_s: float = 0.0005
    # The nice value the event loop's thread asks for when the first jam starts (0: leave it).
    loop_nice: int = -10
    # While any jam runs, ask that idle CPUs wake within this many µs (PM QoS, see
    # realtime.jam.scheduling); -1 leaves the OS's idle policy alone.
    cpu_latency_us: int = -1

    def __post_init__(self) -> None:
        if self.block not in (120, 240, 480):
            raise ValueError(f"block must be 120, 240 or 480 samples, got {self.block}")
        if not 1 <= self.max_participants <= 4096:
            raise ValueError(f"max_participants must be within 1…4096, got {self.max_participants}")
        if self.send_queue_frames < 1:
            raise ValueError("send_queue_frames must be at least 1")
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority must be within 0…99, got {self.realtime_priority}")
        if not -1 <= self.cpu_latency_us <= 2_000_000_000:
            raise ValueError(f"cpu_latency_us must be -1 (off) or 0…2000000000, got {self.cpu_latency_us}")
        if not -20 <= self.loop_nice <= 19:
            raise ValueError(f"loop_nice must be within -20…19, got {self.loop_nice}")
        if not 0 < self.switch_interval_s <= 0.005:
            raise ValueError(f"switch_interval_s must be within (0, 0.005], got {self.switch_interval_s}")

    @property
    def period_s(self) -> float:
        return self.block / SAMPLE_RATE


class Participant:
    """One member of the jam. Read-only outside the engine (its fields belong to the engine)."""

    __slots__ = (
        "_active",
        "_bytes_base",
        "_channels_in",
        "_close_request",
        "_codec_in",
        "_decoder",
        "_fanout",
        "_group",
        "_inbox",
        "_jitter",
        "_jstats",
        "_left",
        "_pcm_scratch",
        "_playing",
        "_sent_base",
        "_stats_due",
        "bytes_in",
        "can_send",
        "channels",
        "codec",
        "corrupt",
        "dropped_in",
        "dropped_out",
        "joined_at",
        "last_arrival",
        "latency_ms",
        "name",
        "pid",
        "rtt_ms",
        "self_monitor",
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
        self.latency_ms: float | None = None  # the client's own audio latency (join.latencyMs)
        self.dropped_out = 0
        self.bytes_in = self.dropped_in = self.corrupt = 0
        # Frames and bytes delivered (loop-owned): a delivery counts once for a whole group of
        # listeners, so each participant adds its current group's count to what it had before.
        self._sent_base = self._bytes_base = 0
        self._group: _Group | None = None
        self._fanout: FanOut | None = getattr(sink, "fanout", None)
        self._left = False
        # loop → tick: whole frames (validated by receive) and their arrival times
        self._inbox: collections.deque[tuple[bytes, float]] = collections.deque()
        # tick → loop (the tick queues the participant on the engine's notices)
        self._stats_due = False
        self._close_request: tuple[int, str] | None = None
        # tick-thread state
        self._jitter: JitterBuffer | None = JitterBuffer(block_s=block / SAMPLE_RATE) if can_send else None
        self._jstats: JitterStats | None = None
        self._decoder: OpusDecoder | None = None
        self._codec_in = -1
        self._channels_in = 0
        self._active = False
        self._playing = False
        self._pcm_scratch: NDArray[np.float32] | None = None

    @property
    def active(self) -> bool:
        """True while this participant's audio is in the mix (it sent within ``silence_s``)."""
        return self._active

    @property
    def sent(self) -> int:
        """Audio frames handed to this participant's sink."""
        group = self._group
        return self._sent_base + (group.frames if group is not None else 0)

    @property
    def bytes_out(self) -> int:
        """Bytes of those frames."""
        group = self._group
        return self._bytes_base + (group.bytes if group is not None else 0)

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(id=self.pid, name=self.name, user_id=self.user_id, can_send=self.can_send)


class _Group:
    """The listeners of one distinct mix who take one codec: they all get the same frames.

    Built on the tick thread when the plan changes, used by the loop's delivery: the listeners
    by fan-out (one call each), the others one by one, and what was delivered to the group.
    """

    __slots__ = ("bytes", "fans", "frames", "members", "singles")

    def __init__(self, members: list[Participant]) -> None:
        self.members = tuple(members)
        self.frames = self.bytes = 0  # delivered to every member (loop-owned)
        fans: dict[int, tuple[FanOut, list[Any], list[Participant]]] = {}
        singles: list[Participant] = []
        for p in members:
            fan = p._fanout
            if fan is None:
                singles.append(p)
                continue
            entry = fans.get(id(fan))
            if entry is None:
                entry = fans[id(fan)] = (fan, [], [])
            entry[1].append(p.sink)
            entry[2].append(p)
        self.fans = tuple((fan, tuple(sinks), tuple(ps)) for fan, sinks, ps in fans.values())
        self.singles = tuple(singles)


class _MixOut:
    """One distinct mix of the current plan: its encoder and its listeners by codec."""

    __slots__ = ("encoder", "key", "opus", "pcm", "planar")

    def __init__(self, key: str, encoder: OpusEncoder) -> None:
        self.key = key
        self.encoder = encoder
        self.opus: _Group | None = None
        self.pcm: _Group | None = None
        self.planar: NDArray[np.float32] = np.zeros((2, 0), np.float32)


_Record = tuple[tuple[_Group, ...], list[bytes]]
"""One tick's output: the groups of the plan and the frame each gets (tick → loop)."""


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
        self._latency = HistogramBank(cap)
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
        self._input_slots = np.zeros(0, np.intp)  # each X row's participant slot (new array per plan)
        self._bank: LimiterBank | None = None
        self._limiter_s = (
            LimiterBank(1, 2, SAMPLE_RATE, lookahead_ms=cfg.limiter_lookahead_ms).latency / SAMPLE_RATE
        )
        self.stats.limiter_ms = self._limiter_s * 1000
        self._period_s = b / SAMPLE_RATE
        # receive()'s quick check of the common frame (see there)
        self._toc_ok = packet_samples_table(b)
        self._frames_hi, self._frames_lo = b >> 8, b & 0xFF
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
        self._groups: tuple[_Group, ...] = ()
        # tick → loop: each tick's frames (at most send_queue_frames of them: the oldest go),
        # the records dropped that way, and participants with stats or a close request due
        self._outbox: collections.deque[_Record] = collections.deque()
        self._dropped: collections.deque[_Record] = collections.deque()
        self._notices: collections.deque[Participant] = collections.deque()
        # loop-owned: the groups deliveries count in; listeners refusing audio since when
        self._live_groups: tuple[_Group, ...] = ()
        self._behind: dict[Participant, float] = {}
        self._resync = True
        self._ticks_per_second = max(1, round(SAMPLE_RATE / b))
        # tick → loop
        # Each tick writes its rows' arrival times straight into its ring row (NaN: nothing
        # played); the loop adds when the mix left, and records them in batches.
        self._ring_arrival = np.full((_RING, cap), _NAN)
        self._arrival_now = self._ring_arrival[0]
        # … and the jitter-buffer depth each played packet was held for (blocks), so the latency
        # the server added beyond its buffers' targets can be told apart from the targets.
        self._ring_depth = np.zeros((_RING, cap))
        self._depth_now = self._ring_depth[0]
        self._ring_slots: list[NDArray[np.intp]] = [self._input_slots] * _RING
        self._ring_left = [0.0] * _RING
        self._latency_due: list[int] = []  # delivered ticks whose latency is not recorded yet
        self._ring_n = [0] * _RING
        self._ring_tick = [-1] * _RING
        self._ring_time = [0.0] * _RING
        self._ring_sent = [0.0] * _RING  # when the tick itself sent the record's mixes (0: not)
        self._posted = -1
        self._delivered = -1
        self._wake_pending = False
        # thread
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # monotonic_ns of the schedule's start (tick 0's deadline) and of the last tick's end
        self.schedule: tuple[int, int] = (0, 0)
        self.closed = False
        # Optional hooks of the session-document bridge (realtime.jam.doc_bridge): a tap of the
        # tick's decoded inputs (set_tap), roster notifications and join-time defaults (loop).
        self._tap: JamTap | None = None
        self.on_roster: Callable[[], None] | None = None
        self.defaults_for: Callable[[str, str | None], InputDefaults | None] | None = None
        # A transport that reads its sockets on the tick thread (realtime.transport.tick_reads)
        # installs its poll here: called at the start of every tick, before the inputs drain.
        self.poll: Callable[[], None] | None = None
        # … and may write the mixes itself, right after they are encoded: send_now(groups,
        # frames) -> 0 (served no listener), 1 (some) or 2 (all). The loop's delivery of the
        # same record then skips what it served (see the sinks' tick_sent).
        self.send_now: Callable[[tuple[_Group, ...], list[bytes]], int] | None = None
        self._served = 0

    @property
    def clock(self) -> Callable[[], float]:
        """The engine's clock (``time.monotonic`` unless a test drives it by hand)."""
        return self._clock

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
        if defaults is None and self.defaults_for is not None and can_send:
            defaults = self.defaults_for(user_id, name)
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
        p._left = True  # the tick may still hold it in a group until it replans
        self._behind.pop(p, None)
        with self._plan_lock:
            self._planner.remove(pid)
        self._departed.add(p, self.latency.row(p.slot))
        self._slots[p.slot] = None
        # Reused last: a group built before this leave may still count a delivery on the slot.
        self._free.insert(0, p.slot)
        self._rebuild_roster()
        self._broadcast(participants_message([m.info() for m in self._members]))
        if not self._members and self._on_empty is not None:
            self._on_empty(self)

    def _rebuild_roster(self) -> None:
        members = tuple(self._by_pid.values())
        self._members = members
        self._senders = tuple(m for m in members if m.can_send)
        self._roster_version += 1
        if self.on_roster is not None:
            self.on_roster()

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

    def set_tap(self, tap: JamTap | None) -> None:
        """Hand every tick's decoded inputs to ``tap`` (None: stop; costs nothing when off)."""
        self._tap = tap

    def _seqs(self, n: int) -> NDArray[np.int64]:
        """Each input row's :attr:`JitterBuffer.played_seq`, read only when a tap wants it (so
        the tick's loop over senders stays as it was)."""
        seqs = np.full(n, -1, np.int64)
        for i, p in enumerate(self._inputs[:n]):
            if p is not None and p._active and p._jitter is not None:
                seqs[i] = p._jitter.played_seq
        return seqs

    def _call_tap(self, tap: JamTap, k: int, inputs: tuple[str, ...], n: int, now: float) -> None:
        try:
            # The deadline's index on the schedule: skipped deadlines count, so a consumer that
            # keeps time by it (the recorder) stays on the wall clock through a stall.
            tap(k + self.stats.skipped_ticks, inputs, self._x[:n], self._arrival_now[:n], self._seqs(n), now)
        except Exception:  # a consumer's bug must not stop the jam
            log.exception("jam tap failed; removed", extra={"room": self.session_id})
            self._tap = None

    # ------------------------------------------------------------------ loop side: input
    def receive(self, pid: str, data: bytes, arrival: float | None = None) -> None:
        """One binary audio frame from ``pid``; parsed here, played by the tick.

        Called on the loop, or on the tick thread by a transport that reads there (its poll).
        ``arrival``: when the frame reached this machine on the engine's clock (a kernel
        receive timestamp), when the caller knows better than "now".

        Raises :class:`InputRejected`: 1008 for a participant that may not send (viewer),
        1003 for an unknown codec, 1007 for any other malformed frame (including an Opus packet
        whose duration is not the session's block). Frames from unknown pids are ignored.
        """
        p = self._by_pid.get(pid)
        if p is None:
            return
        if type(data) is not bytes:
            data = bytes(data)  # queued by reference until the tick: own it
        n = len(data)
        # The frame nearly every packet is: version 1, Opus, mono or stereo, this session's
        # block, no redundant copy, one Opus payload whose TOC byte says `block` samples. Those
        # byte compares are what parse_frame() and packet_samples() would conclude, without
        # their objects and the libopus call; anything else takes the full path below.
        if (
            HEADER_SIZE < n <= _FAST_MAX
            and data[0] == VERSION
            and data[1] == CODEC_OPUS
            and data[12] == self._frames_hi
            and data[13] == self._frames_lo
            and data[14] == 0
            and data[15] == 0
            and self._toc_ok[data[HEADER_SIZE]]
            and 1 <= data[2] <= 2
            and p.can_send
        ):
            if arrival is None:
                arrival = self._clock()
            p.last_arrival = arrival
            p.bytes_in += n
            inbox = p._inbox
            if len(inbox) >= _INBOX:
                inbox.popleft()
                p.dropped_in += 1
            inbox.append((data, arrival))
            return
        self._receive_checked(p, data, arrival)

    def _receive_checked(self, p: Participant, data: bytes, arrival: float | None) -> None:
        """receive() for any frame the quick check did not clear: parse and check it all."""
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
        if header.codec == CODEC_OPUS:
            try:
                if packet_samples(bytes(payload)) != block or (
                    len(redundant) and packet_samples(bytes(redundant)) != block
                ):
                    raise InputRejected(
                        CLOSE_INVALID, f"Opus packet duration is not {block} samples", "bad_opus"
                    )
            except OpusError as exc:
                raise InputRejected(CLOSE_INVALID, f"invalid Opus packet: {exc}", "bad_opus") from exc
        if arrival is None:
            arrival = self._clock()
        p.last_arrival = arrival
        p.bytes_in += len(data)
        inbox = p._inbox
        if len(inbox) >= _INBOX:
            inbox.popleft()
            p.dropped_in += 1
        inbox.append((data, arrival))

    # ------------------------------------------------------------------ loop side: control
    def control(self, pid: str, msg: ClientMessage) -> list[str]:
        """Apply one control message from ``pid``; returns the JSON replies to send it.

        :class:`~realtime.jam.control.Leave` is the transport's business (it closes and calls
        :meth:`leave`); here it is a no-op."""
        p = self._by_pid.get(pid)
        if p is None:
            return []
        if isinstance(msg, Ping):
            if msg.rtt_ms is not None:
                self.set_rtt(pid, msg.rtt_ms)
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
            if msg.latency_ms is not None:
                p.latency_ms = msg.latency_ms
            if msg.name is not None and msg.name != p.name:
                p.name = msg.name
                self._broadcast(participants_message([m.info() for m in self._members]))
                if self.on_roster is not None:
                    self.on_roster()
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
        dropped = self._dropped
        while dropped:
            # The loop fell send_queue_frames ticks behind: those frames never left (but for
            # the listeners the tick served itself).
            groups, frames = dropped.popleft()
            for group, frame in zip(groups, frames, strict=False):
                seq = frame_sequence(frame)
                for p in group.members:
                    if not tick_served(p.sink, seq):
                        p.dropped_out += 1
        outbox = self._outbox
        pending = len(outbox)
        if pending == 1:
            groups, frames = outbox.popleft()
            self._fan_out(groups, [(frame,) for frame in frames], now)
        elif pending:
            self._deliver_backlog([outbox.popleft() for _ in range(pending)], now)
        notices = self._notices
        while notices:
            p = notices.popleft()
            if p._left:
                continue
            if p._stats_due:
                p._stats_due = False
                p.sink.send_control(self._stats_text(p))
            request = p._close_request
            if request is not None:
                p._close_request = None
                p.sink.close(*request)

    def _deliver_backlog(self, records: list[_Record], now: float) -> None:
        """Several ticks at once (the loop was late): each listener gets its frames in one call."""
        groups = records[0][0]
        if all(rec[0] is groups for rec in records):
            self._fan_out(groups, [[rec[1][i] for rec in records] for i in range(len(groups))], now)
        else:  # the plan changed in between: tick by tick, still in order for everyone
            for rec_groups, frames in records:
                self._fan_out(rec_groups, [(frame,) for frame in frames], now)

    def _fan_out(self, groups: tuple[_Group, ...], batches: list[Sequence[bytes]], now: float) -> None:
        """Hand each group its frames: one call per fan-out, ``send_audio`` for the other sinks."""
        if groups is not self._live_groups:
            self._adopt(groups)
        refused: list[tuple[Participant, int, int]] | None = None
        for group, batch in zip(groups, batches, strict=True):
            n = len(batch)
            size = len(batch[0]) if n == 1 else sum(len(f) for f in batch)
            for fan, sinks, members in group.fans:
                out = fan.send_audio_many(sinks, batch)
                if out:
                    refused = refused or []
                    refused.extend((members[i], n, size) for i in out)
            for p in group.singles:
                if not p._left and not p.sink.send_audio(batch):
                    refused = refused or []
                    refused.append((p, n, size))
            group.frames += n
            group.bytes += size
        if refused or self._behind:
            self._laggards(refused or [], now)

    def _adopt(self, groups: tuple[_Group, ...]) -> None:
        """A new plan's groups start counting: fold what the old ones counted into their members."""
        for old in self._live_groups:
            for p in old.members:
                if p._group is old:
                    p._sent_base += old.frames
                    p._bytes_base += old.bytes
                    p._group = None
        for group in groups:
            for p in group.members:
                p._group = group
        self._live_groups = groups

    def _laggards(self, refused: list[tuple[Participant, int, int]], now: float) -> None:
        """Listeners whose sink refused audio: counted as dropped, closed after ``laggard_s``."""
        behind = self._behind
        laggard_s = self.config.laggard_s
        refusing: set[Participant] = set()
        for p, n, size in refused:
            p._sent_base -= n  # its group counted the frames for everyone
            p._bytes_base -= size
            p.dropped_out += n
            if p._left or p in refusing:
                continue
            refusing.add(p)
            since = behind.setdefault(p, now)
            if now - since >= laggard_s:
                del behind[p]
                p.sink.close(CLOSE_TRY_AGAIN, "too far behind on audio; reconnect")
        for p in [q for q in behind if q not in refusing]:
            del behind[p]  # took audio again

    def _account_latency(self, now: float) -> None:
        """Note when the mixes of the ticks posted since the last delivery left."""
        upto = self._posted
        first = max(self._delivered + 1, upto - _RING + 1)
        self._delivered = upto
        due = self._latency_due
        for k in range(first, upto + 1):
            r = k % _RING
            if self._ring_tick[r] != k:
                continue  # overwritten: the loop fell more than _RING ticks behind
            left = self._ring_sent[r] or now  # the tick's own send, else this hand-over
            self.stats.delivery.record(left - self._ring_time[r])
            if self._ring_n[r]:
                self._ring_left[r] = left
                due.append(k)
        if len(due) >= _LATENCY_BATCH:
            self._record_latency()

    @property
    def latency(self) -> HistogramBank:
        """Server-added latency of every frame, by participant slot (arrival to the departure of
        the first mix holding it, plus the limiter's look-ahead, which delays what is in it)."""
        if self._latency_due:
            self._record_latency()
        return self._latency

    def _record_latency(self) -> None:
        """Record the delivered ticks' latencies: a few numpy calls for up to _LATENCY_BATCH ticks."""
        due, self._latency_due = self._latency_due, []
        limiter = self._limiter_s
        start = 0
        while start < len(due):
            # A run of ticks with the same inputs: one (ticks x inputs) block.
            r0 = due[start] % _RING
            slots, n = self._ring_slots[r0], self._ring_n[r0]
            end = start + 1
            while end < len(due):
                r = due[end] % _RING
                if self._ring_slots[r] is not slots or self._ring_n[r] != n:
                    break
                end += 1
            rows = [k % _RING for k in due[start:end] if self._ring_tick[k % _RING] == k]
            start = end
            if rows:
                left = np.array([self._ring_left[r] + limiter for r in rows])
                lat = left[:, None] - self._ring_arrival[rows, :n]
                self._latency.record(np.tile(slots[:n], len(rows)), lat.ravel())
                lat -= self._ring_depth[rows, :n] * self._period_s
                self.stats.beyond.record_many(lat.ravel())

    # ------------------------------------------------------------------ the tick
    def tick_once(self) -> None:
        """One block: drain inputs, mix, encode once per distinct mix, queue for listeners."""
        k = self._tick
        self._tick = k + 1
        poll = self.poll
        if poll is not None:
            try:
                poll()
            except Exception:  # a transport's bug must not stop the jam
                log.exception("jam poll failed; removed", extra={"room": self.session_id})
                self.poll = None
        now = self._clock()
        commands = self._commands
        while commands:
            try:
                commands.popleft()()
            except Exception:
                log.exception("jam command failed", extra={"room": self.session_id})
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
        arrivals = self._arrival_now = self._ring_arrival[k % _RING]
        depths = self._depth_now = self._ring_depth[k % _RING]
        inputs = self._inputs
        x_rows = self._x_rows
        x_addr = self._x_addr
        silence_s = self.config.silence_s
        # Every sender is an input of the plan (the planner learns of a join before the roster
        # does): one pass does each one's whole tick, while its state is in the cache.
        for i in range(n):
            p = inputs[i]
            if p is None or p._jitter is None:
                arrivals[i] = _NAN
                x_rows[i].fill(0.0)
                continue
            if p._inbox:
                self._drain(p)
            elif p._active and now - p.last_arrival > silence_s:
                self._deactivate(p)
            if not p._active:
                arrivals[i] = _NAN
                x_rows[i].fill(0.0)
                continue
            jb = p._jitter
            payload = jb.get()
            arrivals[i] = jb.played_arrival
            depths[i] = jb.played_depth
            decoder = p._decoder
            try:
                if decoder is None:
                    if payload is None:
                        x_rows[i].fill(0.0)  # PCM16 has no PLC model: a missing block is silence
                    else:
                        self._decode_pcm(p, payload, x_rows[i])
                elif payload is not None:
                    decoder.decode_mono(payload, x_rows[i], x_addr[i])
                    p._playing = True
                elif p._playing:
                    decoder.conceal_mono(x_rows[i], x_addr[i])
                else:
                    x_rows[i].fill(0.0)
            except OpusError as exc:
                x_rows[i].fill(0.0)
                p.corrupt += 1
                if p._close_request is None:
                    p._close_request = (CLOSE_INVALID, f"undecodable Opus packet: {exc}")
                    self._notices.append(p)
        tap = self._tap
        if tap is not None:
            self._call_tap(tap, k, plan.inputs, n, now)
        mixes = self._mixes
        if mixes:
            m2 = 2 * len(mixes)
            bank = self._bank
            assert bank is not None
            out = self._out[:m2]
            if plan.gains_end is None:
                # mix_and_limit() without its argument checks: the plan and the buffers are built
                # to fit, and each numpy call costs its own cold start on every tick.
                np.matmul(plan.gains, self._x[:n], out=out)
                bank.process(out)
            else:
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
        p._active = True
        seq_of = SEQUENCE.unpack_from
        while inbox:
            # receive() validated the frame: read its fields straight from the bytes.
            data, arrival = inbox.popleft()
            if data[1] != p._codec_in or data[2] != p._channels_in:
                self._switch_format(p, data[1], data[2])
            seq = seq_of(data, 4)[0]
            red = data[14] << 8 | data[15]
            if red:
                end = len(data) - red
                jb.put(seq, data[HEADER_SIZE:end], arrival, data[3] & FLAG_RESYNC)
                jb.put_redundant(seq - 1, data[end:], arrival)
            else:
                jb.put(seq, data[HEADER_SIZE:], arrival, data[3] & FLAG_RESYNC)

    def _switch_format(self, p: Participant, codec: int, channels: int) -> None:
        """A sender's first frame, or a change of codec or channels: fresh decoder and buffer."""
        if p._codec_in != -1 and p._jitter is not None:
            p._jitter.reset()
        p._codec_in = codec
        p._channels_in = channels
        p._playing = False
        if codec == CODEC_OPUS:
            # A mono decoder whatever the stream: the mix takes one row per sender and libopus
            # downmixes a stereo stream inside the decoder for less than a stereo decode costs.
            # It keeps the GIL (see realtime.jam.opus): the tick is one uninterrupted stretch.
            p._decoder = OpusDecoder(1, self.block, hold_gil=True)
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
        if p._decoder is not None:
            p._decoder.reset()

    def _decode_pcm(self, p: Participant, payload: bytes, row: NDArray[np.float32]) -> None:
        scratch = p._pcm_scratch
        assert scratch is not None
        pcm16_to_float(payload, p._channels_in, self.block, scratch)
        if p._channels_in == 1:
            row[:] = scratch[0]
        else:
            np.add(scratch[0], scratch[1], out=row)
            row *= np.float32(0.5)
        p._playing = True

    def _replan(self, plan: MixPlan) -> None:
        """The plan or the roster changed: map inputs and mixes to participants, size the bank."""
        by_pid = self._by_pid
        self._inputs = [by_pid.get(pid) for pid in plan.inputs]
        self._input_slots = np.array([p.slot if p is not None else 0 for p in self._inputs], np.intp)
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
                cfg = self.config
                enc = encoders[key] = OpusEncoder(
                    2, self.block, bitrate=cfg.bitrate, complexity=cfg.complexity, hold_gil=True
                )
            mix = _MixOut(key, enc)
            mix.planar = self._out[2 * index : 2 * index + 2]
            opus: list[Participant] = []
            pcm: list[Participant] = []
            for pid in listeners:
                listener = by_pid.get(pid)
                if listener is not None:
                    (pcm if listener.codec == "pcm16" else opus).append(listener)
            mix.opus = _Group(opus) if opus else None
            mix.pcm = _Group(pcm) if pcm else None
            mixes.append(mix)
        for key in [k for k in encoders if k not in keep]:
            encoders.pop(key).close()
        self._mixes = mixes
        self._groups = tuple(g for mix in mixes for g in (mix.opus, mix.pcm) if g is not None)

    def _emit(self, k: int, mixes: list[_MixOut]) -> None:
        """Encode and frame each distinct mix once; queue the same bytes for all its listeners."""
        flags = FLAG_RESYNC if self._resync else 0
        self._resync = False
        seq = k & 0xFFFFFFFF
        ts = (k * self.block) & 0xFFFFFFFF
        b = self.block
        buf = self._frame
        frames: list[bytes] = []
        for mix in mixes:
            if mix.opus is not None:
                HEADER.pack_into(buf, 0, VERSION, CODEC_OPUS, 2, flags, seq, ts, b, 0)
                size = mix.encoder.encode_into(mix.planar, buf, HEADER_SIZE)
                frames.append(ctypes.string_at(self._frame_addr, HEADER_SIZE + size))
            if mix.pcm is not None:
                HEADER.pack_into(self._pcm_frame, 0, VERSION, CODEC_PCM16, 2, flags, seq, ts, b, 0)
                float_to_pcm16(mix.planar, self._pcm_view)
                frames.append(bytes(self._pcm_frame))
        send = self.send_now
        if send is not None and frames:
            try:
                self._served = send(self._groups, frames)
            except Exception:  # a transport's bug must not stop the jam: the loop delivers
                log.exception("jam send_now failed; removed", extra={"room": self.session_id})
                self.send_now = None
        outbox = self._outbox
        if len(outbox) >= self.config.send_queue_frames:
            self._dropped.append(outbox.popleft())  # the loop is that far behind: oldest out
        outbox.append((self._groups, frames))

    def _post(self, k: int, n: int, now: float) -> None:
        """Publish this tick's arrivals for the loop's latency accounting; wake the loop once."""
        r = k % _RING
        self._ring_slots[r] = self._input_slots
        self._ring_n[r] = n
        self._ring_time[r] = now
        self._ring_tick[r] = k
        served = self._served
        self._served = 0
        self._ring_sent[r] = self._clock() if served else 0.0
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
                self._notices.append(p)
        wake = self._wake
        # When the tick served every listener itself, the loop's part (counting, latency
        # figures, stats, closes) can wait a few ticks: one wake-up in _WAKE_EVERY.
        if (
            wake is not None
            and not self._wake_pending
            and (served != 2 or self._notices or self._dropped or k % _WAKE_EVERY == 0)
        ):
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
        if self.config.freeze_heap:
            freeze_heap()
        lower_switch_interval(self.config.switch_interval_s)
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
        self.stats.thread_id = threading.get_native_id()
        warm_up(self.block)  # at normal priority: a first compile can take a second
        self.stats.scheduling = request_realtime(self.config.realtime_priority)
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
                    # A plain sleep: cheaper than an Event wait (no lock, no condition); stop()
                    # is seen within a period.
                    time.sleep(wait / 1e9)
                    if stop.is_set():
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
            "queued": len(self._outbox),
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
            "out": {
                "sent": p.sent,
                "bytes": p.bytes_out,
                "dropped": p.dropped_out,
                "queued": len(self._outbox),
            },
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
            # Raw bins, so that two readings can be subtracted (a benchmark's measured window).
            "latencyBins": self.latency_total().bins_json(),
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
_heap_collected = False


def freeze_heap() -> None:
    """Keep the cyclic garbage collector's full collections off the jam's back.

    CPython's collections stop every thread (they hold the GIL). A full one walks every tracked
    object: on a server-sized heap (the app, its modules, numba, aiortc) that took 57 ms in a
    measurement, 23 blocks of silence for everyone. ``gc.freeze()`` moves every object alive now
    into a permanent generation that collections skip, so later ones only walk what the jam and
    the sessions allocate from here on. The first call collects first (off the event loop when
    the app warms up at startup), so no garbage is frozen; later calls (each jam's start, on
    the loop) only freeze, which costs nothing. Objects frozen that later form unreachable
    cycles are not reclaimed (reference counting still frees everything else): a bounded cost
    for a server whose long-lived state is built once.
    """
    global _heap_collected
    if not _heap_collected:
        _heap_collected = True
        gc.collect()
    gc.freeze()


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
    freeze_heap()  # the startup heap, numba's compiled kernels included


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
