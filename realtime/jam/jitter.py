"""Adaptive jitter buffer for one direction of one participant's audio. Pure: no clock reads.

The caller passes each packet's arrival time to :meth:`JitterBuffer.put` and calls
:meth:`JitterBuffer.get` once per tick (one block, ``block_s`` seconds). ``get`` returns the next
payload, or ``None`` when there is nothing to play and the caller must conceal (Opus PLC).

**Playout.** Packets live in a ring of ``capacity`` slots indexed by (unwrapped) sequence
number. Playout starts once ``depth`` packets are queued — the prefetch *is* the target depth,
not aiortc's fixed four frames. While playing:

- the due packet is there: play it;
- it is missing but later ones are queued: if waiting for it would keep more than ``depth``
  blocks queued, skip straight to the next packet (the gap is lost, not played as silence);
  otherwise conceal once and move on. A packet that turns up after its slot was passed is
  *late* and dropped. Either way a loss never adds latency;
- nothing is queued: an *underrun*. Conceal without moving on and prefetch ``depth`` packets
  again, which is also how a sender whose clock runs slow is absorbed;
- the queue has stayed above ``depth`` for ``trim_hold_s`` (0.2 s; that hold is the
  hysteresis, so short bursts are left alone): drop the oldest packets back to ``depth``
  (*overflows*). This absorbs a sender whose clock runs fast, and gives back the latency a
  delay spike or an outage left behind.

**Auto depth** (Jamulus ``CNetBufWithStats``). Lanes with fixed depths ``min_depth …
max_depth`` replay the same put/get stream with the rules above but without payloads. A lane
counts an *error* when a packet reaches it after it was due: late for that lane, or arriving
while that lane had run dry waiting for exactly it. Losses that never arrive are not errors —
no depth could have played them, so loss does not inflate latency. Errors are summed over a
sliding window of ``window_s`` (15 s); the smallest depth with an error rate ≤ ``error_rate``
(5e-4 per block) is the raw choice, which an IIR follows fast upwards and slowly downwards, and
the integer depth follows the filter with 0.1 block of hysteresis beyond rounding. On top, each
error of the real buffer bumps the depth one block at once (SonoBus), at most every
``bump_gap_s`` (0.5 s). "safe" adds ``safe_margin`` blocks to the auto depth, "manual" is fixed.
A new target applies live (Jamulus bug #1377): a deeper target conceals the extra blocks once,
a shallower one drops the oldest queued packets at once.

Everything is preallocated at construction; ``put`` and ``get`` allocate nothing but counters.
With 20 simulated depths a put + get costs about 15 to 30 µs of CPython on a 2-core Xeon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from .frames import seq_diff

__all__ = ["MODES", "JitterBuffer", "JitterStats"]

MODES: Final = ("auto", "safe", "manual")

_U32: Final = 1 << 32
_BASE: Final = 1 << 40  # unwrapped sequence numbers start here, so they never go negative
_TRIM_MARGIN: Final = 0  # blocks above the target tolerated indefinitely (the hold is the hysteresis)
_MAX_JUMP: Final = 1 << 15  # a larger wire-sequence jump is a restart, not a gap
_RESTART_HITS: Final = 3  # consecutive far packets that re-anchor an unflagged restart
_EMPTY: Final = -1


# Lane.tick results (a played sequence number is >= 0).
_CONCEAL: Final = -1
_IDLE: Final = -2
# Lane.arrive results.
_QUEUED: Final = 0
_LATE: Final = 1
_DUE: Final = 2  # queued, but this lane had already run dry waiting for it


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters since creation (or :meth:`JitterBuffer.reset`).

    Invariant: ``packets == played + late + duplicates + overflows + queued``.
    """

    packets: int  # packets given to put(), duplicates included, plus redundant copies used
    played: int  # get() calls that returned a payload
    lost: int  # sequence numbers passed over without a payload that never arrived late
    late: int  # packets that arrived after their slot was played or passed over (dropped)
    duplicates: int  # packets received twice (dropped)
    concealed: int  # get() calls that returned None once playout had started (caller runs PLC)
    underruns: int  # times the queue ran dry while playing (each followed by a re-prefetch)
    overflows: int  # queued packets dropped to bring the latency back to the target
    recovered: int  # gaps filled from a frame's redundant copy (counted in packets too)
    depth: int  # current target depth in blocks
    auto_depth: int  # what the auto statistic recommends now (what "auto" mode would use)
    jitter_ms: float  # RFC 3550 interarrival jitter estimate
    queued: int  # packets waiting to be played
    mode: str


class _Lane:
    """Playout state over the shared ring: the real buffer and every simulated depth use it."""

    __slots__ = (
        "awaited",
        "concealed",
        "count",
        "depth",
        "hold",
        "next",
        "over",
        "overflows",
        "played",
        "playing",
        "skipped",
        "stall",
        "started",
        "underruns",
    )

    def __init__(self, depth: int, hold: int) -> None:
        self.depth = depth
        self.hold = hold
        self.clear(_BASE)
        self.started = False
        self.played = self.concealed = self.underruns = self.skipped = self.overflows = 0

    def clear(self, nxt: int) -> None:
        self.next = nxt
        self.count = 0
        self.playing = False
        self.awaited = _EMPTY
        self.over = 0
        self.stall = 0

    def arrive(self, ext: int, ring_floor: int) -> int:
        if ext >= self.next:
            self.count += 1
            if ext == self.awaited:
                self.awaited = _EMPTY
                return _DUE
            return _QUEUED
        if not self.started and ext >= ring_floor:
            # Reordered start: nothing has played yet, so begin from the earlier packet.
            self.next = ext
            self.count += 1
            return _QUEUED
        return _LATE

    def advance_to(self, target: int, ring: list[int], cap: int, high: int) -> None:
        """Pass over every slot before ``target``: queued packets are overflows, gaps are lost."""
        nxt = self.next
        if target <= nxt:
            return
        present = 0
        for s in range(max(nxt, high - cap + 1), min(target, high + 1)):
            if ring[s % cap] == s:
                present += 1
        self.count -= present
        self.overflows += present
        self.skipped += target - nxt - present
        self.next = target

    def tick(self, ring: list[int], cap: int, high: int) -> int:
        """One block: the sequence number to play, or ``_CONCEAL`` / ``_IDLE`` (not started)."""
        if self.stall:
            self.stall -= 1
            self.concealed += 1
            return _CONCEAL
        if not self.playing:
            if self.count >= self.depth:
                self.playing = self.started = True
                self.over = 0
            elif self.started:
                self.concealed += 1
                return _CONCEAL
            else:
                return _IDLE
        if self.count == 0:
            self.playing = False
            self.underruns += 1
            self.concealed += 1
            self.awaited = self.next
            return _CONCEAL
        depth = self.depth
        nxt = self.next
        if high - nxt + 1 > depth + _TRIM_MARGIN:
            self.over += 1
            if self.over >= self.hold:
                self.over = 0
                self.advance_to(high - depth + 1, ring, cap, high)
                nxt = self.next
        else:
            self.over = 0
        if ring[nxt % cap] == nxt:
            self.next = nxt + 1
            self.count -= 1
            self.played += 1
            return nxt
        if high - nxt + 1 > depth:
            s = nxt + 1
            while ring[s % cap] != s:  # count > 0 guarantees a queued packet ahead
                s += 1
            self.skipped += s - nxt
            self.next = s + 1
            self.count -= 1
            self.played += 1
            return s
        self.next = nxt + 1
        self.skipped += 1
        self.concealed += 1
        return _CONCEAL


class JitterBuffer:
    """One per participant and direction; ``put`` on arrival, ``get`` once per tick."""

    # Tuning (class attributes so a subclass can change them; read at construction).
    error_rate: float = 5e-4  # Jamulus' threshold for 128-sample blocks
    window_s: float = 15.0  # sliding window of the error statistic
    bump_gap_s: float = 0.5  # SonoBus: at most one immediate bump per this many seconds
    trim_hold_s: float = 0.2  # an excess must last this long before packets are dropped
    tau_up_s: float = 0.05  # IIR time constant towards a deeper raw choice (fast)
    tau_down_s: float = 4.0  # … and towards a shallower one (slow)
    hysteresis: float = 0.1  # blocks beyond rounding before the integer depth follows the IIR

    def __init__(
        self,
        *,
        block_s: float = 0.0025,
        mode: str = "auto",
        manual_depth: int = 4,
        safe_margin: int = 2,
        min_depth: int = 1,
        max_depth: int = 20,
        capacity: int = 64,
    ) -> None:
        if not (isinstance(block_s, (int, float)) and math.isfinite(block_s) and 0 < block_s <= 1):
            raise ValueError(f"block_s must be a positive number of seconds (≤ 1), got {block_s!r}")
        if not 1 <= min_depth <= max_depth:
            raise ValueError(f"need 1 ≤ min_depth ≤ max_depth, got {min_depth}, {max_depth}")
        if capacity < 2 * max_depth + 4:
            raise ValueError(
                f"capacity {capacity} is too small for max_depth {max_depth} (≥ {2 * max_depth + 4})"
            )
        self._block_s = float(block_s)
        self._min = min_depth
        self._max = max_depth
        self._cap = capacity
        self._check_mode(mode)
        self._mode = mode
        self._manual = self._check_depth(manual_depth, "manual_depth")
        self._margin = self._check_margin(safe_margin)
        self._hold = max(1, round(self.trim_hold_s / self._block_s))
        self._bump_gap = max(1, round(self.bump_gap_s / self._block_s))
        self._bucket_len = max(1, round(1.0 / self._block_s))
        self._buckets = max(2, round(self.window_s))
        self._window = self._bucket_len * self._buckets
        self._a_up = 1.0 - math.exp(-self._block_s / self.tau_up_s)
        self._a_down = 1.0 - math.exp(-self._block_s / self.tau_down_s)
        self._ring_seq: list[int] = [_EMPTY] * capacity
        self._ring_data: list[bytes | None] = [None] * capacity
        self._real = _Lane(self._min, self._hold)
        self._sims = [_Lane(d, self._hold) for d in range(self._min, self._max + 1)]
        self._errs = [[0] * self._buckets for _ in self._sims]
        self.reset()

    # --- configuration --------------------------------------------------------------------

    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"jitter mode must be one of {', '.join(MODES)}, got {mode!r}")

    def _check_depth(self, depth: int, what: str) -> int:
        if isinstance(depth, bool) or not isinstance(depth, int) or not self._min <= depth <= self._max:
            raise ValueError(f"{what} must be an integer within {self._min}…{self._max}, got {depth!r}")
        return depth

    def _check_margin(self, margin: int) -> int:
        if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= self._max:
            raise ValueError(f"safe_margin must be an integer within 0…{self._max}, got {margin!r}")
        return margin

    def set_mode(self, mode: str, depth: int | None = None) -> None:
        """Switch mode live ("auto", "safe", "manual").

        ``depth`` is the fixed depth for "manual" (default: the last manual depth) and the
        margin over auto for "safe" (default: the last margin); it is ignored for "auto".
        The new target applies on the next :meth:`get`.
        """
        self._check_mode(mode)
        if depth is not None:
            if mode == "manual":
                self._manual = self._check_depth(depth, "manual depth")
            elif mode == "safe":
                self._margin = self._check_margin(depth)
        self._mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def depth(self) -> int:
        """Current target depth in blocks."""
        return self._real.depth

    def _target(self) -> int:
        if self._mode == "manual":
            return self._manual
        if self._mode == "safe":
            return min(self._max, self._auto + self._margin)
        return self._auto

    # --- state -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every packet and counter (mode and settings are kept)."""
        for i in range(self._cap):
            self._ring_seq[i] = _EMPTY
            self._ring_data[i] = None
        self._anchored = False
        self._last_wire = 0
        self._last_ext = _BASE
        self._ext0 = _BASE
        self._high = _BASE - 1
        self._cand = -1
        self._cand_hits = 0
        self._packets = self._late = self._duplicates = self._recovered = 0
        self._transit = 0.0
        self._has_transit = False
        self._jitter = 0.0
        self._tick = 0
        self._sim_ticks = 0
        self._bucket = 0
        self._auto = self._min
        self._filt = float(self._min)
        self._raw = self._min
        self._dirty = False
        self._last_bump = -self._bump_gap
        self._real = _Lane(self._target(), self._hold)
        self._sims = [_Lane(d, self._hold) for d in range(self._min, self._max + 1)]
        for row in self._errs:
            for b in range(self._buckets):
                row[b] = 0

    def _anchor(self, seq: int, ext: int) -> None:
        """Start a fresh stream at ``seq`` ↦ ``ext``, dropping whatever was queued."""
        real = self._real
        real.overflows += real.count  # flushed unplayed: they still count, so the books balance
        for lane in (real, *self._sims):
            lane.clear(ext)
        for i in range(self._cap):
            self._ring_data[i] = None
        self._anchored = True
        self._last_wire = seq
        self._last_ext = ext
        self._ext0 = ext
        self._high = ext - 1
        self._has_transit = False
        self._cand = -1
        self._cand_hits = 0

    # --- input -------------------------------------------------------------------------------

    def _locate(self, seq: int) -> int | None:
        d = seq_diff(seq, self._last_wire)
        if -_MAX_JUMP <= d <= _MAX_JUMP:
            return self._last_ext + d
        return None

    def _seen(self, ext: int) -> bool:
        return self._ring_seq[ext % self._cap] == ext and ext > self._high - self._cap

    def put(self, seq: int, payload: bytes, arrival_s: float, *, resync: bool = False) -> None:
        """Accept the packet with wire sequence ``seq`` (u32, wrapping) that arrived at ``arrival_s``.

        Out-of-order, duplicate, late and wrapped sequence numbers are all handled. ``resync``
        (the frame's RESYNC flag: the sender starts or resumes after pausing) re-anchors playout
        on this packet as a fresh stream, so the pause is neither a loss nor a lateness error.
        A jump of more than 2**15 sequence numbers without the flag is taken as an unflagged
        restart once three packets in a row confirm it (until then they count as late).
        ``payload`` is kept by reference: do not mutate it afterwards.
        """
        seq %= _U32
        if not self._anchored:
            self._anchor(seq, _BASE)
            ext = _BASE
        else:
            located = self._locate(seq)
            if located is not None and self._seen(located):
                self._packets += 1
                self._duplicates += 1
                return
            if resync:
                ext = self._high + self._cap + 1
                self._anchor(seq, ext)
            elif located is None:
                if self._cand >= 0 and 0 < seq_diff(seq, self._cand) <= self._cap:
                    self._cand_hits += 1
                else:
                    self._cand_hits = 1
                self._cand = seq
                if self._cand_hits < _RESTART_HITS:
                    self._packets += 1
                    self._late += 1
                    return
                ext = self._high + self._cap + 1
                self._anchor(seq, ext)
            else:
                ext = located
                self._cand = -1
                self._cand_hits = 0
        self._packets += 1
        transit = arrival_s - (ext - self._ext0) * self._block_s
        if self._has_transit:
            self._jitter += (abs(transit - self._transit) - self._jitter) / 16.0
        self._transit = transit
        self._has_transit = True
        self._insert(ext, seq, payload)

    def put_redundant(self, seq: int, payload: bytes, arrival_s: float) -> bool:
        """Offer a frame's redundant copy of packet ``seq`` (usually its sequence number - 1).

        Fills the slot only if that packet is missing and still playable, and returns whether it
        did (then it counts in ``packets`` and ``recovered``). Copies of packets already received,
        or too late to play, are ignored without counting: they are not network duplicates.
        """
        del arrival_s  # a copy's arrival says nothing about the original's transit time
        if not self._anchored:
            return False
        ext = self._locate(seq % _U32)
        if ext is None or ext < self._real.next or ext <= self._high - self._cap or self._seen(ext):
            return False
        self._packets += 1
        self._recovered += 1
        self._insert(ext, seq % _U32, payload)
        return True

    def _insert(self, ext: int, seq: int, payload: bytes) -> None:
        cap = self._cap
        ring = self._ring_seq
        high = self._high
        if ext > high:
            floor = ext - cap + 1
            if self._real.next < floor:
                self._real.advance_to(floor, ring, cap, high)
            for lane in self._sims:
                if lane.next < floor:
                    lane.advance_to(floor, ring, cap, high)
            self._high = high = ext
            self._last_ext = ext
            self._last_wire = seq
        ring_floor = high - cap + 1
        in_ring = ext >= ring_floor
        if in_ring:
            ring[ext % cap] = ext
        real = self._real.arrive(ext, ring_floor)
        if real == _LATE:
            self._late += 1
            if in_ring:
                self._ring_data[ext % cap] = None
        else:
            self._ring_data[ext % cap] = payload
            if real == _DUE:
                self._on_real_error()
        bucket = self._bucket
        errs = self._errs
        for i, lane in enumerate(self._sims):
            if lane.arrive(ext, ring_floor) != _QUEUED:
                errs[i][bucket] += 1
                self._dirty = True
        if real == _LATE:
            self._on_real_error()

    def _on_real_error(self) -> None:
        """SonoBus: a packet came after it was due, so grow one block now (rate-limited)."""
        if self._mode == "manual" or self._tick - self._last_bump < self._bump_gap:
            return
        self._last_bump = self._tick
        if self._auto < self._max:
            self._auto += 1
        self._filt = max(self._filt, float(self._auto))

    # --- output ------------------------------------------------------------------------------

    def _update_auto(self) -> None:
        if self._dirty:
            self._dirty = False
            span = min(self._window, max(self._sim_ticks, self._bucket_len))
            limit = self.error_rate * span
            raw = self._sims[-1].depth
            for i, lane in enumerate(self._sims):
                if sum(self._errs[i]) <= limit:
                    raw = lane.depth
                    break
            self._raw = raw
        raw = self._raw
        f = self._filt
        f += (raw - f) * (self._a_up if raw > f else self._a_down)
        self._filt = f
        current = self._auto
        if f - current > 0.5 + self.hysteresis:
            self._auto = min(self._max, int(f + 0.5 - self.hysteresis))
        elif current - f > 0.5 + self.hysteresis:
            self._auto = max(self._min, math.ceil(f - 0.5 + self.hysteresis))

    def _retarget(self, target: int) -> None:
        real = self._real
        old = real.depth
        real.depth = target
        if not real.playing:
            return
        if target > old:
            real.stall += target - old
        else:
            excess = min(self._high - real.next + 1 - target, old - target)
            if excess > 0:
                real.advance_to(real.next + excess, self._ring_seq, self._cap, self._high)

    def get(self) -> bytes | None:
        """The next block to play, or None: nothing to play, the caller conceals (Opus PLC).

        Call exactly once per tick. Before the first packet, and while the first prefetch
        fills, None is returned without counting as concealment.
        """
        if not self._anchored:
            return None
        self._tick += 1
        self._sim_ticks += 1
        if self._tick % self._bucket_len == 0:
            self._bucket = (self._bucket + 1) % self._buckets
            for row in self._errs:
                row[self._bucket] = 0
            self._dirty = True
        ring = self._ring_seq
        cap = self._cap
        high = self._high
        for lane in self._sims:
            lane.tick(ring, cap, high)
        self._update_auto()
        target = self._target()
        if target != self._real.depth:
            self._retarget(target)
        played = self._real.tick(ring, cap, high)
        if played < 0:
            return None
        slot = played % cap
        data = self._ring_data[slot]
        self._ring_data[slot] = None
        return data

    def stats(self) -> JitterStats:
        real = self._real
        return JitterStats(
            packets=self._packets,
            played=real.played,
            lost=max(0, real.skipped - self._late),
            late=self._late,
            duplicates=self._duplicates,
            concealed=real.concealed,
            underruns=real.underruns,
            overflows=real.overflows,
            recovered=self._recovered,
            depth=real.depth,
            auto_depth=self._auto,
            jitter_ms=self._jitter * 1000.0,
            queued=real.count,
            mode=self._mode,
        )
