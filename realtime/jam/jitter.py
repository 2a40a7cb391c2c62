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

**Auto depth** (the Jamulus ``CNetBufWithStats`` decision, computed in O(1) per packet). Jamulus
simulates a buffer of every candidate depth and counts each one's errors; here every packet
is placed once on the playout clock instead. ``r = ticks so far - sequence number`` is the tick
in which the packet became playable, relative to its own number, and ``r_ref`` the earliest of
them (the fastest path through the network: the minimum over the current and the previous
second, so it follows a route change or a sender whose clock runs slow within a second or
two). A buffer of depth ``D`` plays each packet ``D - 1`` ticks after the fastest ones could
have been played, so the packet was an error for every depth ``D ≤ r - r_ref``: its *lateness*
in blocks. Each tick keeps its latest arrival's lateness (a flood of packets held up together
is one error, as a simulated buffer would see one stall, not hundreds), and a histogram of
lateness over a sliding window of ``window_s`` (15 s, one row per second) gives the error
count of every depth as a suffix sum, read in O(max_depth) only when the histogram changed.
Losses that never arrive are not errors — no depth could have played them, so loss does not
inflate latency. The smallest depth with an error rate ≤ ``error_rate`` (5e-4 per block) is
the raw choice, which an IIR follows fast upwards and slowly downwards, and the integer depth
follows the filter with 0.1 block of hysteresis beyond rounding. On top, each error of the real
buffer bumps the depth one block at once (SonoBus), at most every ``bump_gap_s`` (0.5 s).
"safe" adds ``safe_margin`` blocks to the auto depth, "manual" is fixed. A new target applies
live (Jamulus bug #1377): a deeper target conceals the extra blocks once, a shallower one drops
the oldest queued packets at once.

Everything is preallocated at construction; ``put`` and ``get`` allocate nothing but counters
and cost a few µs of CPython each, whatever ``max_depth`` is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["MODES", "JitterBuffer", "JitterStats"]

MODES: Final = ("auto", "safe", "manual")

_U32: Final = 1 << 32
_MASK: Final = _U32 - 1
_HALF: Final = 1 << 31
_BASE: Final = 1 << 40  # unwrapped sequence numbers start here, so they never go negative
_TRIM_MARGIN: Final = 0  # blocks above the target tolerated indefinitely (the hold is the hysteresis)
_MAX_JUMP: Final = 1 << 15  # a larger wire-sequence jump is a restart, not a gap
_RESTART_HITS: Final = 3  # consecutive far packets that re-anchor an unflagged restart
_EMPTY: Final = -1
_NO_REF: Final = 1 << 62  # no packet yet in the reference window
_NAN: Final = float("nan")


# Lane.tick results (a played sequence number is >= 0).
_CONCEAL: Final = -1
_IDLE: Final = -2


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
    """The playout state of the buffer over its ring (see the module notes)."""

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
        "turn",
        "underruns",
    )

    def __init__(self, depth: int, hold: int) -> None:
        self.depth = depth
        self.hold = hold
        self.clear(_BASE)
        self.started = False
        self.turn = _CONCEAL
        self.played = self.concealed = self.underruns = self.skipped = self.overflows = 0

    def clear(self, nxt: int) -> None:
        self.next = nxt
        self.count = 0
        self.playing = False
        self.awaited = _EMPTY
        self.over = 0
        self.stall = 0

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
        """One block: the sequence number to play, or ``_CONCEAL`` / ``_IDLE`` (not started).

        :attr:`turn` is then the sequence number whose place in the sender's stream this block
        takes, played or concealed; ``_CONCEAL`` for a block the buffer inserted (a stall while
        it deepens, an underrun, a refill) that stands for no sender audio at all.
        """
        self.turn = _CONCEAL
        if self.stall:
            self.stall -= 1
            self.concealed += 1
            return _CONCEAL
        if not self.playing:
            if self.count >= self.depth:
                self.playing = self.started = True
                self.over = 0
                if high - self.next + 1 > self.depth:
                    # A stall ended with a flood (or a client sent ahead before the first
                    # tick): the blocks of the stall were already concealed, so playing them
                    # now would only hold that much extra latency until the trim's hold ran
                    # out. Resume at the target instead.
                    self.advance_to(high - self.depth + 1, ring, cap, high)
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
            self.turn = nxt
            self.next = nxt + 1
            self.count -= 1
            self.played += 1
            return nxt
        if high - nxt + 1 > depth:
            s = nxt + 1
            while ring[s % cap] != s:  # count > 0 guarantees a queued packet ahead
                s += 1
            self.skipped += s - nxt
            self.turn = s
            self.next = s + 1
            self.count -= 1
            self.played += 1
            return s
        self.turn = nxt  # lost at its turn: concealed in its place
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

    played_arrival: float
    """The ``arrival_s`` of the packet the last :meth:`get` returned (NaN when it returned None)."""
    played_depth: int
    """The target depth (blocks) in force when the last :meth:`get` ran: the latency the buffer
    meant to hold for that block, which the engine subtracts to see what else the server added."""
    played_seq: int
    """The extended sequence number whose place the last :meth:`get`'s block took in the sender's
    stream (also for a packet lost at its turn and concealed); -1 for a block the buffer inserted
    (before the first packet, while it fills or deepens, after an underrun). The recorder places
    audio by it, so a depth change mid-take does not shift what follows."""

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
        self._ring_arrival: list[float] = [_NAN] * capacity
        self._real = _Lane(self._min, self._hold)
        # Lateness histogram: one row per second of the window, columns 0…max_depth (blocks,
        # the last one also holding everything later); `_win` is the sum of the rows.
        self._hist = [[0] * (max_depth + 1) for _ in range(self._buckets)]
        self._win = [0] * (max_depth + 1)
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
            self._ring_arrival[i] = _NAN
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
        self._span_ticks = 0
        self._bucket = 0
        self._auto = self._min
        self._filt = float(self._min)
        self._raw = self._min
        self._dirty = False
        self._last_bump = -self._bump_gap
        self._real = _Lane(self._target(), self._hold)
        self.played_arrival = _NAN
        self.played_seq = -1
        self.played_depth = self._real.depth
        for row in self._hist:
            row[:] = [0] * len(row)
        self._win[:] = [0] * len(self._win)
        self._clear_lateness()

    def _anchor(self, seq: int, ext: int) -> None:
        """Start a fresh stream at ``seq`` ↦ ``ext``, dropping whatever was queued."""
        real = self._real
        real.overflows += real.count  # flushed unplayed: they still count, so the books balance
        real.clear(ext)
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
        self._clear_lateness()  # a new stream has a new place on the playout clock

    def _clear_lateness(self) -> None:
        self._ref = _NO_REF
        self._pending = 0  # the latest arrival's lateness in this tick
        self._pending_min = _NO_REF  # the earliest's (none yet)
        self._late_run = 0  # consecutive ticks whose every arrival was late

    # --- input -------------------------------------------------------------------------------

    def put(self, seq: int, payload: bytes, arrival_s: float, resync: bool | int = False) -> None:
        """Accept the packet with wire sequence ``seq`` (u32, wrapping) that arrived at ``arrival_s``.

        Out-of-order, duplicate, late and wrapped sequence numbers are all handled. ``resync``
        (the frame's RESYNC flag: the sender starts or resumes after pausing) re-anchors playout
        on this packet as a fresh stream, so the pause is neither a loss nor a lateness error.
        A jump of more than 2**15 sequence numbers without the flag is taken as an unflagged
        restart once three packets in a row confirm it (until then they count as late).
        ``payload`` is kept by reference: do not mutate it afterwards.
        """
        seq &= _MASK
        if not self._anchored:
            self._anchor(seq, _BASE)
            ext = _BASE
        else:
            d = ((seq - self._last_wire + _HALF) & _MASK) - _HALF
            if -_MAX_JUMP <= d <= _MAX_JUMP:
                ext = self._last_ext + d
                if self._ring_seq[ext % self._cap] == ext and ext > self._high - self._cap:
                    self._packets += 1
                    self._duplicates += 1
                    return
                if resync:
                    ext = self._high + self._cap + 1
                    self._anchor(seq, ext)
                elif self._cand >= 0:
                    self._cand = -1
                    self._cand_hits = 0
            elif resync:
                ext = self._high + self._cap + 1
                self._anchor(seq, ext)
            else:
                cand = self._cand
                if cand >= 0 and 0 < ((seq - cand + _HALF) & _MASK) - _HALF <= self._cap:
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
        self._packets += 1
        transit = arrival_s - (ext - self._ext0) * self._block_s
        if self._has_transit:
            self._jitter += (abs(transit - self._transit) - self._jitter) / 16.0
        else:
            self._has_transit = True
        self._transit = transit
        self._insert(ext, seq, payload, arrival_s)

    def put_redundant(self, seq: int, payload: bytes, arrival_s: float) -> bool:
        """Offer a frame's redundant copy of packet ``seq`` (usually its sequence number - 1).

        Fills the slot only if that packet is missing and still playable, and returns whether it
        did (then it counts in ``packets`` and ``recovered``). Copies of packets already received,
        or too late to play, are ignored without counting: they are not network duplicates.
        """
        if not self._anchored:
            return False
        seq &= _MASK
        d = ((seq - self._last_wire + _HALF) & _MASK) - _HALF
        if not -_MAX_JUMP <= d <= _MAX_JUMP:
            return False
        ext = self._last_ext + d
        if ext < self._real.next or ext <= self._high - self._cap or self._ring_seq[ext % self._cap] == ext:
            return False
        self._packets += 1
        self._recovered += 1
        self._insert(ext, seq, payload, arrival_s)
        return True

    def _insert(self, ext: int, seq: int, payload: bytes, arrival_s: float) -> None:
        cap = self._cap
        ring = self._ring_seq
        high = self._high
        real = self._real
        if ext > high:
            floor = ext - cap + 1
            if real.next < floor:
                real.advance_to(floor, ring, cap, high)
            self._high = high = ext
            self._last_ext = ext
            self._last_wire = seq
        ring_floor = high - cap + 1
        slot = ext % cap
        in_ring = ext >= ring_floor
        if in_ring:
            ring[slot] = ext
        # _Lane.arrive, inlined (it runs for every packet)
        if ext >= real.next or (not real.started and ext >= ring_floor):
            if ext < real.next:
                real.next = ext  # reordered start: nothing has played yet, begin from this one
            real.count += 1
            self._ring_data[slot] = payload
            self._ring_arrival[slot] = arrival_s
            if ext == real.awaited:  # the buffer had run dry waiting for exactly this one
                real.awaited = _EMPTY
                self._on_real_error()
        else:
            self._late += 1
            if in_ring:
                self._ring_data[slot] = None
            self._on_real_error()
        # Lateness on the playout clock (module notes): r is the tick in which this packet
        # became playable, relative to its sequence number; the reference is the earliest r.
        r = self._tick - ext
        ref = self._ref
        if r < ref:
            self._ref = ref = r
        late_by = r - ref
        if late_by > self._pending:
            self._pending = late_by
        if late_by < self._pending_min:
            self._pending_min = late_by

    def _on_real_error(self) -> None:
        """SonoBus: a packet came after it was due, so grow one block now (rate-limited)."""
        if self._mode == "manual" or self._tick - self._last_bump < self._bump_gap:
            return
        self._last_bump = self._tick
        if self._auto < self._max:
            self._auto += 1
        self._filt = max(self._filt, float(self._auto))
        self._dirty = True  # get() runs the filter again

    # --- output ------------------------------------------------------------------------------

    def _raw_depth(self) -> int:
        """The smallest depth whose error count over the window is within the rate (O(max_depth))."""
        span = min(self._window, max(self._span_ticks, self._bucket_len))
        limit = self.error_rate * span
        win = self._win
        errors = 0
        raw = self._max
        for depth in range(self._max, self._min - 1, -1):
            errors += win[depth]  # errors of `depth`: every lateness ≥ depth
            if errors > limit:
                break
            raw = depth
        return raw

    def _update_auto(self) -> None:
        if self._dirty:
            self._dirty = False
            self._raw = self._raw_depth()
        raw = self._raw
        f = self._filt
        if f != raw:
            f += (raw - f) * (self._a_up if raw > f else self._a_down)
            if abs(raw - f) < 1e-3:
                f = float(raw)  # settled (far inside the hysteresis): stop filtering every tick
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
        fills, None is returned without counting as concealment. :attr:`played_arrival` is the
        returned packet's arrival time.
        """
        if not self._anchored:
            self.played_arrival = _NAN
            self.played_seq = -1
            return None
        pending = self._pending
        if pending:
            # This tick's latest arrival was late for every depth up to `pending`.
            if pending > self._max:
                pending = self._max
            self._hist[self._bucket][pending] += 1
            self._win[pending] += 1
            self._pending = 0
            self._dirty = True
        earliest = self._pending_min
        if earliest != _NO_REF:
            self._pending_min = _NO_REF
            if earliest == 0:
                self._late_run = 0
            else:
                # Every arrival of two ticks in a row late: the path itself got slower (a
                # route change, a sender whose clock runs slow). A simulated buffer would have
                # stalled once and re-anchored; so does the reference, instead of counting
                # every later packet as late.
                self._late_run += 1
                if self._late_run >= 2:
                    self._late_run = 0
                    self._ref += earliest
        tick = self._tick + 1
        self._tick = tick
        self._span_ticks += 1
        if tick % self._bucket_len == 0:
            self._rotate()
        if self._dirty or self._filt != self._raw:
            self._update_auto()  # the filter is still moving (or the histogram changed)
        real = self._real
        target = self._auto if self._mode == "auto" else self._target()
        if target != real.depth:
            self._retarget(target)
        played = real.tick(self._ring_seq, self._cap, self._high)
        self.played_depth = real.depth
        turn = real.turn
        self.played_seq = turn - _BASE if turn >= 0 else -1
        if played < 0:
            self.played_arrival = _NAN
            return None
        slot = played % self._cap
        data = self._ring_data[slot]
        self._ring_data[slot] = None
        self.played_arrival = self._ring_arrival[slot]
        return data

    def _rotate(self) -> None:
        """A second has passed: the oldest row of the histogram leaves the window."""
        bucket = (self._bucket + 1) % self._buckets
        self._bucket = bucket
        row = self._hist[bucket]
        if any(row):
            win = self._win
            for i, count in enumerate(row):
                win[i] -= count
            row[:] = [0] * len(row)
            self._dirty = True

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
