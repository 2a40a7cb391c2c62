"""Counters and histograms of a live jam, cheap enough to update on the tick's hot path.

Everything is preallocated: a :class:`LogHistogram` is a fixed array of log-spaced bins (20 per
decade from 10 µs to 100 s by default), so recording a value is one ``log10`` and one integer
increment, and percentiles come from the bins (resolution ±6 %, exact maximum). The engine keeps
one :class:`ParticipantStats` per participant (both directions) and one :class:`EngineStats`
per session; :meth:`snapshot` methods turn them into the JSON served to clients, to
``GET /api/sessions/{id}/jam/stats`` and, through :mod:`realtime.api.jam`, to Prometheus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["DirectionStats", "EngineStats", "HistogramBank", "LogHistogram", "ParticipantStats"]

_BINS_PER_DECADE: Final = 20


class LogHistogram:
    """Log-spaced histogram of positive values (seconds) over ``[lo, hi)``, preallocated.

    Values below ``lo`` land in the first bin, values at or over ``hi`` in the last; the exact
    maximum, sum and count are kept alongside. Bin ``i`` covers ``[lo·r^i, lo·r^(i+1))`` with
    ``r = 10^(1/bins_per_decade)``.
    """

    __slots__ = ("_log_lo", "_scale", "bins", "count", "counts", "edges", "max", "sum")

    def __init__(self, lo: float = 1e-5, hi: float = 100.0, bins_per_decade: int = _BINS_PER_DECADE) -> None:
        if not 0 < lo < hi:
            raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
        self._log_lo = math.log10(lo)
        self._scale = float(bins_per_decade)
        self.bins = math.ceil((math.log10(hi) - self._log_lo) * bins_per_decade)
        self.counts: NDArray[np.int64] = np.zeros(self.bins, dtype=np.int64)
        self.edges: NDArray[np.float64] = lo * 10.0 ** (np.arange(self.bins + 1) / bins_per_decade)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def record(self, value: float) -> None:
        if value != value:  # NaN: nothing measured
            return
        if value > 0.0:
            i = int((math.log10(value) - self._log_lo) * self._scale)
            i = 0 if i < 0 else (self.bins - 1 if i >= self.bins else i)
        else:
            i = 0
        self.counts[i] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def record_many(self, values: NDArray[np.float64]) -> None:
        """Record an array of values in one vectorized pass (NaNs are skipped)."""
        v = values[~np.isnan(values)]
        if v.size == 0:
            return
        with np.errstate(divide="ignore"):
            idx = ((np.log10(np.maximum(v, 1e-300)) - self._log_lo) * self._scale).astype(np.int64)
        np.minimum(idx, self.bins - 1, out=idx)  # np.clip on ints builds an iinfo per call
        np.maximum(idx, 0, out=idx)
        np.add.at(self.counts, idx, 1)
        self.count += int(v.size)
        self.sum += float(v.sum())
        top = float(v.max())
        if top > self.max:
            self.max = top

    def percentile(self, q: float) -> float:
        """The ``q``-quantile (0…1): the geometric centre of the bin holding it (0 when empty)."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, max(rank, 1), side="left"))
        i = min(i, self.bins - 1)
        centre = float(math.sqrt(self.edges[i] * self.edges[i + 1]))
        return min(centre, self.max)

    def reset(self) -> None:
        self.counts[:] = 0
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def cumulative(self, bounds: NDArray[np.float64]) -> list[tuple[float, int]]:
        """Cumulative counts at the bin edges nearest to ``bounds`` (Prometheus ``le`` buckets)."""
        cum = np.concatenate(([0], np.cumsum(self.counts)))
        out: list[tuple[float, int]] = []
        for b in bounds:
            j = int(np.clip(np.searchsorted(self.edges, b, side="right") - 1, 0, self.bins))
            out.append((float(b), int(cum[j])))
        return out

    def merge(self, counts: NDArray[np.int64], count: int, total: float, top: float) -> None:
        """Add another histogram's bins (same layout) into this one."""
        self.counts += counts
        self.count += count
        self.sum += total
        if top > self.max:
            self.max = top

    def merged(self, other: LogHistogram) -> None:
        self.merge(other.counts, other.count, other.sum, other.max)

    def snapshot(self, scale: float = 1000.0) -> dict[str, float | int]:
        """``{count, p50, p99, max, mean}``; values multiplied by ``scale`` (seconds → ms by default)."""
        return _snapshot(self, scale)

    def bins_json(self) -> dict[str, Any]:
        """The raw bins: ``{"lo": s, "perDecade": n, "counts": {bin index: count}}`` (non-empty bins).

        Two of these taken a while apart give the histogram of what happened in between (a
        benchmark's measured window) by subtracting the counts; :meth:`from_bins` reads them back.
        """
        nz = np.flatnonzero(self.counts)
        return {
            "lo": 10.0**self._log_lo,
            "perDecade": int(self._scale),
            "counts": {str(int(i)): int(self.counts[i]) for i in nz},
        }

    @classmethod
    def from_bins(cls, data: dict[str, Any], hi: float = 100.0) -> LogHistogram:
        """A histogram with the bins of :meth:`bins_json` (sum and max are approximated by the bins)."""
        h = cls(float(data["lo"]), hi, int(data["perDecade"]))
        for key, value in data["counts"].items():
            h.counts[int(key)] = int(value)
        h.count = int(h.counts.sum())
        if h.count:
            centres = np.sqrt(h.edges[:-1] * h.edges[1:])
            h.sum = float((centres * h.counts).sum())
            h.max = float(h.edges[int(np.flatnonzero(h.counts)[-1]) + 1])
        return h


def _snapshot(h: LogHistogram, scale: float) -> dict[str, float | int]:
    mean = h.sum / h.count if h.count else 0.0
    return {
        "count": h.count,
        "p50": round(h.percentile(0.5) * scale, 4),
        "p99": round(h.percentile(0.99) * scale, 4),
        "max": round(h.max * scale, 4),
        "mean": round(mean * scale, 4),
    }


class HistogramBank:
    """``rows`` log histograms in one preallocated 2-D array, recorded in one vectorized call.

    The engine gives every participant a row (its slot) and records the server-added latency of
    many ticks of all participants with a single :meth:`record` call (a dozen numpy calls cost
    the same for 16 values as for 2000), instead of one Python call per participant per tick.
    :meth:`row` copies one row out as a :class:`LogHistogram`.
    """

    __slots__ = ("_log_lo", "_scale", "bins", "count", "counts", "edges", "max", "sum", "template")

    def __init__(
        self, rows: int, lo: float = 1e-5, hi: float = 100.0, bins_per_decade: int = _BINS_PER_DECADE
    ) -> None:
        self.template = LogHistogram(lo, hi, bins_per_decade)
        self._log_lo = self.template._log_lo
        self._scale = self.template._scale
        self.bins = self.template.bins
        self.edges = self.template.edges
        self.counts: NDArray[np.int64] = np.zeros((rows, self.bins), dtype=np.int64)
        self.count: NDArray[np.int64] = np.zeros(rows, dtype=np.int64)
        self.sum: NDArray[np.float64] = np.zeros(rows, dtype=np.float64)
        self.max: NDArray[np.float64] = np.zeros(rows, dtype=np.float64)

    def record(self, rows: NDArray[np.intp], values: NDArray[np.float64]) -> None:
        """Record ``values[i]`` into row ``rows[i]``; NaN values are skipped."""
        keep = ~np.isnan(values)
        if not keep.all():
            rows = rows[keep]
            values = values[keep]
        if values.size == 0:
            return
        with np.errstate(divide="ignore"):
            idx = ((np.log10(np.maximum(values, 1e-300)) - self._log_lo) * self._scale).astype(np.intp)
        np.minimum(idx, self.bins - 1, out=idx)  # np.clip on ints builds an iinfo per call
        np.maximum(idx, 0, out=idx)
        np.add.at(self.counts, (rows, idx), 1)
        np.add.at(self.count, rows, 1)
        np.add.at(self.sum, rows, values)
        np.maximum.at(self.max, rows, values)

    def reset_row(self, row: int) -> None:
        self.counts[row] = 0
        self.count[row] = 0
        self.sum[row] = 0.0
        self.max[row] = 0.0

    def row(self, row: int) -> LogHistogram:
        """A copy of one row as a standalone histogram."""
        h = LogHistogram.__new__(LogHistogram)
        t = self.template
        h._log_lo, h._scale, h.bins, h.edges = t._log_lo, t._scale, t.bins, t.edges
        h.counts = self.counts[row].copy()
        h.count = int(self.count[row])
        h.sum = float(self.sum[row])
        h.max = float(self.max[row])
        return h

    def total(self) -> LogHistogram:
        """Every row merged (for the session-wide and Prometheus figures)."""
        h = self.row(0) if self.counts.shape[0] else LogHistogram()
        h.counts = self.counts.sum(axis=0)
        h.count = int(self.count.sum())
        h.sum = float(self.sum.sum())
        h.max = float(self.max.max()) if self.max.size else 0.0
        return h


@dataclass(slots=True)
class DirectionStats:
    """One direction of one participant's audio.

    Inbound (client → server): ``packets`` received, ``lost`` (never arrived), ``late`` (arrived
    after their slot was played), ``concealed`` (blocks made by PLC), ``dropped`` (refused:
    duplicates, overflow). Outbound (server → client): ``packets`` sent, ``dropped`` (oldest
    audio discarded because the client fell behind); ``lost``/``late``/``concealed`` there are
    what the client reports about its own receive side.
    """

    packets: int = 0
    bytes: int = 0
    lost: int = 0
    late: int = 0
    concealed: int = 0
    dropped: int = 0
    depth: float = 0.0  # jitter buffer depth, blocks
    jitter_ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "lost": self.lost,
            "late": self.late,
            "concealed": self.concealed,
            "dropped": self.dropped,
            "depth": round(self.depth, 3),
            "jitter_ms": round(self.jitter_ms, 3),
        }


@dataclass(slots=True)
class ParticipantStats:
    """Both directions of one participant, its round trip time and its server-added latency."""

    inbound: DirectionStats = field(default_factory=DirectionStats)
    outbound: DirectionStats = field(default_factory=DirectionStats)
    rtt_ms: float | None = None
    latency: LogHistogram = field(default_factory=LogHistogram)

    def as_json(self) -> dict[str, Any]:
        return {
            "in": self.inbound.as_json(),
            "out": self.outbound.as_json(),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "latency_ms": self.latency.snapshot(),
        }


@dataclass(slots=True)
class EngineStats:
    """The tick of one session: durations, deadline misses, delivery lag to the event loop."""

    block: int = 120
    limiter_ms: float = 0.0  # the mixes' limiter look-ahead (counted in the server-added latency)
    thread_id: int = 0  # the tick thread's OS thread id (for per-thread CPU figures), 0 before it runs
    scheduling: str = "normal"  # the tick thread's OS policy: "fifo:<priority>" or "normal"
    ticks: int = 0
    deadline_misses: int = 0
    skipped_ticks: int = 0
    tick: LogHistogram = field(default_factory=LogHistogram)  # compute time of one tick
    lateness: LogHistogram = field(default_factory=LogHistogram)  # tick start after its deadline
    delivery: LogHistogram = field(default_factory=LogHistogram)  # tick end to the loop's hand-over
    # Server-added latency minus the jitter-buffer depth the frame was held for: what the server
    # adds beyond its buffers' targets (the issue's bound is one block). Negative values (a frame
    # that arrived just before its tick) fall into the lowest bin.
    beyond: LogHistogram = field(default_factory=LogHistogram)

    @property
    def period_s(self) -> float:
        return self.block / 48000

    def as_json(self) -> dict[str, Any]:
        period_ms = self.period_s * 1000
        tick = self.tick.snapshot()
        return {
            "block": self.block,
            "periodMs": round(period_ms, 4),
            "ticks": self.ticks,
            "deadlineMisses": self.deadline_misses,
            "skippedTicks": self.skipped_ticks,
            "tickMs": tick,
            "tickLoadP99": round(float(tick["p99"]) / period_ms, 4) if period_ms else 0.0,
            "latenessMs": self.lateness.snapshot(),
            "deliveryMs": self.delivery.snapshot(),
            "beyondDepthMs": self.beyond.snapshot(),
            "limiterMs": round(self.limiter_ms, 4),
            "threadId": self.thread_id,
            "scheduling": self.scheduling,
            # Raw bins, so that two readings can be subtracted (a benchmark's measured window).
            "bins": {
                "tick": self.tick.bins_json(),
                "lateness": self.lateness.bins_json(),
                "delivery": self.delivery.bins_json(),
                "beyond": self.beyond.bins_json(),
            },
        }
