"""Plugin delay compensation: how late each path through the graph is, and the delays that align them.

An effect with look-ahead (a :class:`~realtime.dsp.effects.Limiter` in a track's chain) delays
its track by ``latency`` frames. Summing that track with an undelayed one would smear them (a
phase-inverted copy would no longer cancel), so, as in every DAW, the shorter paths are delayed
to the longest at each summing point:

- a node's *output latency* is its own chain's latency, plus, for a bus, the latency at which its
  inputs arrive;
- a bus's inputs, and the master's, *arrive* at the largest output latency among them; every input
  is delayed by the difference (its ``compensation_samples``);
- the master output lags the timeline by the master's arrival latency plus its limiter's
  look-ahead: :attr:`LatencyPlan.latency_samples`.

Muted and soloed-out tracks count too, so muting a track never shifts the others.

:func:`plan_latency` is the pure computation; :class:`CompensationDelay` is the delay line one
node's output goes through. A change of delay while audio plays crossfades (linearly, over
:data:`~realtime.dsp.smoothing.DEFAULT_RAMP_MS`) from the old tap to the new one of the same
delay line, so the output stays continuous: no click, only a brief blend of the two alignments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ._validate import check_channels, check_sample_rate
from .smoothing import DEFAULT_RAMP_MS, ramp_samples

__all__ = ["CompensationDelay", "LatencyNode", "LatencyPlan", "TrackLatency", "plan_latency"]

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class LatencyNode:
    """A node for :func:`plan_latency`: its id, where it goes (a bus id, None for the master),
    whether it is a bus, and the latency of its own effect chain in frames."""

    id: str
    dest: str | None
    is_bus: bool
    chain_latency: int


@dataclass(frozen=True, slots=True)
class TrackLatency:
    """One track's latencies, in frames (plain ints, for any backend to read)."""

    chain_samples: int  # its own effects' latency
    output_latency_samples: int  # how late its post-fader output is against the timeline
    compensation_samples: int  # the delay added to its output before its destination sums it


@dataclass(frozen=True, slots=True)
class LatencyPlan:
    """The compensation a graph applies: see the module docstring.

    ``latency_samples`` is how many frames the master output lags the timeline (offline renders
    drop them, the live preview reports them); ``master_samples`` is the limiter's share.
    """

    latency_samples: int = 0
    master_samples: int = 0
    tracks: Mapping[str, TrackLatency] = field(default_factory=dict)

    @property
    def compensation_samples(self) -> dict[str, int]:
        """Track id → the delay added to its output before summing."""
        return {tid: t.compensation_samples for tid, t in self.tracks.items()}


def plan_latency(nodes: Sequence[LatencyNode], master_samples: int = 0) -> LatencyPlan:
    """The compensation for ``nodes`` given in processing order (every bus after all its inputs).

    Raises ``ValueError`` for a negative latency, an unknown destination or a bus listed before
    one of its inputs (the graph never builds such an order).
    """
    if master_samples < 0:
        raise ValueError(f"master latency must be >= 0, got {master_samples}")
    buses = {node.id for node in nodes if node.is_bus}
    arrival: dict[str | None, int] = {}  # summing point (bus id, None = master) → arrival latency
    output: dict[str, int] = {}
    for node in nodes:
        if node.chain_latency < 0:
            raise ValueError(f"{node.id}: chain latency must be >= 0, got {node.chain_latency}")
        if node.dest is not None and node.dest not in buses:
            raise ValueError(f"{node.id}: destination {node.dest!r} is not a bus")
        if node.id in output:
            raise ValueError(f"{node.id}: listed twice")
        inputs = arrival.get(node.id, 0) if node.is_bus else 0
        if node.is_bus:
            arrival[node.id] = inputs
        output[node.id] = inputs + node.chain_latency
        if node.dest is not None and node.dest in output:
            raise ValueError(f"{node.id}: bus {node.dest!r} is processed before its input")
        arrival[node.dest] = max(arrival.get(node.dest, 0), output[node.id])
    tracks = {
        node.id: TrackLatency(
            chain_samples=node.chain_latency,
            output_latency_samples=output[node.id],
            compensation_samples=arrival[node.dest] - output[node.id],
        )
        for node in nodes
    }
    master_in = arrival.get(None, 0)
    return LatencyPlan(master_in + master_samples, master_samples, tracks)


class CompensationDelay:
    """A delay line of ``channels`` channels whose delay can change while it runs, without a click.

    The first :meth:`set` takes effect at once (the graph starts from silence). A later change
    waits until the line holds enough real history for the new delay, then crossfades from the
    old tap to the new one over ``ramp_ms``: both taps read the same signal, so the output stays
    continuous. While the delay is 0 and nothing is pending the line is :attr:`idle`: callers skip
    :meth:`process` and it keeps no history, so leaving that state first records ``delay``
    frames (the track stays at its old alignment for that long, about 5 ms for a limiter).
    """

    def __init__(self, channels: int, sample_rate: int, *, ramp_ms: float = DEFAULT_RAMP_MS) -> None:
        self.channels = check_channels(channels)
        self._fade = ramp_samples(ramp_ms, check_sample_rate(sample_rate))
        self.delay = 0  # the tap in use (the new one during a crossfade)
        self._old = 0  # the tap a crossfade leaves
        self._left = 0  # frames of crossfade to go
        self._pending: int | None = None
        self._configured = False
        self._hist_len = 0
        self._valid = _ALL  # newest history frames that hold real signal (all: silence before the start)
        self._work = np.zeros((self.channels, 0), dtype=np.float32)
        self._out = np.zeros(0, dtype=np.float32)

    @property
    def idle(self) -> bool:
        return self.delay == 0 and self._left == 0 and self._pending is None

    @property
    def target(self) -> int:
        """The delay the line is at or moving to."""
        return self.delay if self._pending is None else self._pending

    def set(self, delay: int) -> None:
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be a non-negative integer, got {delay!r}")
        if not self._configured or self._fade == 0:
            self._configured = True
            self._grow(delay)
            self.delay = self._old = delay
            self._left = 0
            self._pending = None
            return
        if delay == self.target:
            return
        if self.idle:
            self._work[:] = 0.0
            self._valid = 0
        self._pending = None if delay == self.delay else delay
        self._grow(delay)

    def _grow(self, frames: int) -> None:
        if frames <= self._hist_len:
            return
        grown = np.zeros((self.channels, frames + self._work.shape[1] - self._hist_len), dtype=np.float32)
        grown[:, frames - self._hist_len : frames] = self._work[:, : self._hist_len]
        self._work = grown
        self._hist_len = frames

    def reset(self) -> None:
        """Silence the history and finish any change at once (after a seek, with the effects reset)."""
        self._work[:] = 0.0
        self._valid = _ALL
        if self._pending is not None:
            self.delay = self._pending
            self._pending = None
        self._old = self.delay
        self._left = 0

    def process(self, block: F32) -> F32:
        """``block`` (channels, n) delayed; the result is an internal buffer valid until the next call."""
        c, n = block.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {c}")
        if self._pending is not None and self._left == 0 and self._valid >= self._pending:
            self._old, self.delay, self._left = self.delay, self._pending, self._fade
            self._pending = None
        h = self._hist_len
        if self._work.shape[1] < h + n:
            work = np.zeros((c, h + n), dtype=np.float32)
            work[:, :h] = self._work[:, :h]
            self._work = work
        if self._out.size < c * n:
            self._out = np.zeros(c * n, dtype=np.float32)
        work = self._work
        work[:, h : h + n] = block
        out = self._out[: c * n].reshape(c, n)  # C-contiguous, as the kernels want
        out[...] = work[:, h - self.delay : h - self.delay + n]
        if self._left:
            k = min(self._left, n)
            done = self._fade - self._left
            # weight of the new tap: (i + 1) / fade at crossfade frame i, as the gain ramps use
            w = (np.arange(done + 1, done + k + 1, dtype=np.float32) / np.float32(self._fade))[None, :]
            old = work[:, h - self._old : h - self._old + k]
            out[:, :k] = old + w * (out[:, :k] - old)
            self._left -= k
            if self._left == 0:
                self._old = self.delay
        if h:
            work[:, :h] = work[:, n : n + h]  # the next block's history (numpy handles the overlap)
        if self._valid != _ALL:
            self._valid = min(self._valid + n, h)
        return out


_ALL = 1 << 62
