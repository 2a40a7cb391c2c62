"""Streaming meters: ITU-R BS.1770-4 loudness, true peak, and sample peak / RMS.

All meters take float32 (channels, frames) blocks of any length through ``feed(block)`` (the
block is only read) and answer from properties at any time; levels of silence are ``-inf``.

- :class:`LoudnessMeter`: the K-weighting (pre-filter shelf + RLB high-pass, designed for the
  stream's sample rate, see :func:`realtime.dsp.filters.k_weighting_sos`), mean squares summed
  over 100 ms hops, then momentary (last 400 ms = 4 hops), short-term (last 3 s = 30 hops) and
  integrated loudness: gating blocks of 400 ms every 100 ms (75 % overlap), absolute gate
  -70 LUFS, relative gate -10 LU below the loudness of the blocks above the absolute gate. The
  channel weights are 1.0, or BS.1770's (1, 1, 1, 1.41, 1.41) for five channels (L, R, C, Ls, Rs).
  Before 400 ms (3 s) have been fed, momentary (short-term) loudness counts the missing time as
  silence.
- :class:`TruePeakMeter`: 4x oversampling with the BS.1770-4 Annex 2 polyphase FIR (48 taps,
  4 phases); the reading is the largest of the samples and the interpolated values, in dBTP.
- :class:`PeakRms`: per-channel sample peak and RMS since the last :meth:`PeakRms.reset`.
- :class:`TrackMeter`: all three, for a track or the master, with a :meth:`TrackMeter.snapshot`
  for the awareness channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from . import kernels
from ._validate import check_block, check_channels, check_sample_rate
from .filters import k_weighting_sos, sos_state

__all__ = ["LoudnessMeter", "PeakRms", "TrackMeter", "TruePeakMeter"]

_OFFSET = -0.691
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0


def _lufs(mean_square: float) -> float:
    return _OFFSET + 10.0 * math.log10(mean_square) if mean_square > 0.0 else -math.inf


def _db(values: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore"):
        out: NDArray[np.float64] = 20.0 * np.log10(values)
    return out


def _readable(block: NDArray[np.float32], channels: int) -> NDArray[np.float32]:
    check_block(block, channels, writable=False)
    # The kernels are compiled for writeable arrays; copy the rare read-only block.
    return block if block.flags.writeable else block.copy()


class LoudnessMeter:
    """BS.1770-4 momentary, short-term and integrated loudness of a stream (LUFS)."""

    def __init__(
        self, channels: int, sample_rate: int, channel_weights: Sequence[float] | None = None
    ) -> None:
        self.channels = check_channels(channels)
        self.sample_rate = check_sample_rate(sample_rate)
        if channel_weights is None:
            channel_weights = (1.0, 1.0, 1.0, 1.41, 1.41) if self.channels == 5 else (1.0,) * self.channels
        weights = np.array(channel_weights, dtype=np.float64)
        if weights.shape != (self.channels,) or not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError(f"channel_weights needs {self.channels} non-negative finite values")
        self._weights = weights
        self._sos = k_weighting_sos(self.sample_rate).reshape(1, 2, 6)
        self.hop = round(self.sample_rate / 10)
        self._scratch = np.empty(0, dtype=np.float32)
        self._state = sos_state(self.channels, 2)
        self._acc = np.zeros(self.channels, dtype=np.float64)
        self._filled = 0
        self._hops = np.zeros(30, dtype=np.float64)  # weighted sums of squares, ring
        self._hop_count = 0
        self._blocks = np.zeros(1024, dtype=np.float64)  # gating blocks: weighted mean squares
        self._block_count = 0
        self._integrated: float | None = None

    def reset(self) -> None:
        self._state[:] = 0.0
        self._acc[:] = 0.0
        self._filled = 0
        self._hops[:] = 0.0
        self._hop_count = 0
        self._block_count = 0
        self._integrated = None

    def feed(self, block: NDArray[np.float32]) -> None:
        block = _readable(block, self.channels)
        frames = block.shape[1]
        if frames == 0:
            return
        if self._scratch.shape[0] < self.channels * frames:
            self._scratch = np.empty(self.channels * frames, dtype=np.float32)
        z = self._scratch[: self.channels * frames].reshape(self.channels, frames)
        kernels.biquad_sos(block, self._sos, frames, self._state, z)
        i = 0
        while i < frames:
            take = min(self.hop - self._filled, frames - i)
            seg = z[:, i : i + take]
            self._acc += np.einsum("ij,ij->i", seg, seg, dtype=np.float64)
            self._filled += take
            i += take
            if self._filled == self.hop:
                self._push_hop(float(self._weights @ self._acc))
                self._acc[:] = 0.0
                self._filled = 0

    def _push_hop(self, energy: float) -> None:
        self._hops[self._hop_count % 30] = energy
        self._hop_count += 1
        if self._hop_count >= 4:
            if self._block_count == self._blocks.shape[0]:
                self._blocks = np.concatenate([self._blocks, np.zeros_like(self._blocks)])
            self._blocks[self._block_count] = self._last_hops(4) / (4 * self.hop)
            self._block_count += 1
            self._integrated = None

    def _last_hops(self, count: int) -> float:
        idx = (self._hop_count - 1 - np.arange(min(count, self._hop_count))) % 30
        return float(self._hops[idx].sum())

    @property
    def momentary(self) -> float:
        """Loudness of the last 400 ms (LUFS), updated every 100 ms."""
        return _lufs(self._last_hops(4) / (4 * self.hop))

    @property
    def short_term(self) -> float:
        """Loudness of the last 3 s (LUFS), updated every 100 ms."""
        return _lufs(self._last_hops(30) / (30 * self.hop))

    @property
    def integrated(self) -> float:
        """Gated loudness of everything fed since the start (or :meth:`reset`), in LUFS."""
        if self._integrated is None:
            self._integrated = self._gate(self._blocks[: self._block_count])
        return self._integrated

    @staticmethod
    def _gate(blocks: NDArray[np.float64]) -> float:
        absolute = 10.0 ** ((_ABSOLUTE_GATE - _OFFSET) / 10.0)
        above = blocks[blocks > absolute]
        if above.size == 0:
            return -math.inf
        relative = float(above.mean()) * 10.0 ** (_RELATIVE_GATE / 10.0)
        gated = above[above > relative]
        return _lufs(float(gated.mean())) if gated.size else -math.inf

    @property
    def blocks_lufs(self) -> NDArray[np.float64]:
        """Loudness of every gating block so far (400 ms, 100 ms apart), before gating."""
        with np.errstate(divide="ignore"):
            out: NDArray[np.float64] = _OFFSET + 10.0 * np.log10(self._blocks[: self._block_count])
        return out


class TruePeakMeter:
    """BS.1770-4 Annex 2 true peak (4x oversampled), held since the start or :meth:`reset`."""

    def __init__(self, channels: int) -> None:
        self.channels = check_channels(channels)
        self._hist = np.zeros((self.channels, kernels.TRUE_PEAK_HISTORY), dtype=np.float64)
        self._pos = np.zeros(1, dtype=np.int64)
        self._peak = np.zeros(self.channels, dtype=np.float64)

    def feed(self, block: NDArray[np.float32]) -> None:
        block = _readable(block, self.channels)
        if block.shape[1]:
            kernels.true_peak(block, self._hist, self._pos, kernels.TRUE_PEAK_TAPS, self._peak)

    def reset(self, *, history: bool = False) -> None:
        """Clear the held peak; ``history=True`` also forgets the interpolator's past samples."""
        self._peak[:] = 0.0
        if history:
            self._hist[:] = 0.0

    @property
    def true_peak(self) -> float:
        """Largest linear true peak over all channels."""
        return float(self._peak.max())

    @property
    def true_peak_db(self) -> float:
        """Largest true peak over all channels, dBTP."""
        peak = self.true_peak
        return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf

    @property
    def true_peak_db_per_channel(self) -> NDArray[np.float64]:
        return _db(self._peak)


class PeakRms:
    """Per-channel sample peak and RMS since construction or the last :meth:`reset`."""

    def __init__(self, channels: int) -> None:
        self.channels = check_channels(channels)
        self._peak = np.zeros(self.channels, dtype=np.float64)
        self._sum = np.zeros(self.channels, dtype=np.float64)
        self._frames = 0

    def feed(self, block: NDArray[np.float32]) -> None:
        check_block(block, self.channels, writable=False)
        if block.shape[1] == 0:
            return
        np.maximum(self._peak, np.abs(block).max(axis=1), out=self._peak)
        self._sum += np.einsum("ij,ij->i", block, block, dtype=np.float64)
        self._frames += block.shape[1]

    def reset(self) -> None:
        self._peak[:] = 0.0
        self._sum[:] = 0.0
        self._frames = 0

    @property
    def peak_db(self) -> NDArray[np.float64]:
        """Per-channel sample peak, dBFS."""
        return _db(self._peak)

    @property
    def rms_db(self) -> NDArray[np.float64]:
        """Per-channel RMS, dBFS (a full-scale sine reads -3.01 dB)."""
        if self._frames == 0:
            return np.full(self.channels, -math.inf)
        return _db(np.sqrt(self._sum / self._frames))


class TrackMeter:
    """Loudness, true peak and peak/RMS of one stream, fed once."""

    def __init__(self, channels: int, sample_rate: int) -> None:
        self.loudness = LoudnessMeter(channels, sample_rate)
        self.true_peak = TruePeakMeter(channels)
        self.levels = PeakRms(channels)

    def feed(self, block: NDArray[np.float32]) -> None:
        self.loudness.feed(block)
        self.true_peak.feed(block)
        self.levels.feed(block)

    @property
    def momentary(self) -> float:
        return self.loudness.momentary

    @property
    def short_term(self) -> float:
        return self.loudness.short_term

    @property
    def integrated(self) -> float:
        return self.loudness.integrated

    @property
    def true_peak_db(self) -> float:
        return self.true_peak.true_peak_db

    @property
    def peak_db(self) -> NDArray[np.float64]:
        return self.levels.peak_db

    @property
    def rms_db(self) -> NDArray[np.float64]:
        return self.levels.rms_db

    def snapshot(self, *, reset_levels: bool = True) -> dict[str, float | list[float | None] | None]:
        """Current readings, JSON-safe for a UI update: numbers rounded to 0.01, silence as ``None``.

        Peak, RMS and true peak restart after each snapshot unless ``reset_levels`` is false,
        so a <= 20 Hz publisher shows the levels since its previous update.
        """
        snap: dict[str, float | list[float | None] | None] = {
            "momentary": _json_level(self.momentary),
            "shortTerm": _json_level(self.short_term),
            "integrated": _json_level(self.integrated),
            "truePeakDb": _json_level(self.true_peak_db),
            "peakDb": [_json_level(float(v)) for v in self.peak_db],
            "rmsDb": [_json_level(float(v)) for v in self.rms_db],
        }
        if reset_levels:
            self.levels.reset()
            self.true_peak.reset()
        return snap


def _json_level(value: float) -> float | None:
    """``None`` for silence (``-inf``, or below -144 dB), else the level rounded to 0.01 dB."""
    return round(value, 2) if math.isfinite(value) and value > -144.0 else None
