"""Click-free parameter changes: linear ramps that run across block boundaries.

A parameter that jumps at a block boundary makes a step in the waveform, heard as a click. Here
every change becomes a linear ramp from the value in effect to the new target over a fixed time
(default :data:`DEFAULT_RAMP_MS`, 10 ms), however the audio is cut into blocks: a 10 ms ramp
spans four 120-frame blocks or part of one 4096-frame block and produces the same samples.

- :class:`Ramp` is the bookkeeping (a vector of values, its targets and the frames left) and
  hands each block a ``(start, end, ramp_len)`` piece for a kernel.
- :class:`SmoothedGain`, :class:`SmoothedPan` and :class:`SmoothedGainPan` apply a gain, a
  constant-power pan (see :func:`realtime.dsp.units.pan_gains`) or both to blocks in place.
  Pan ramps interpolate the two channel gains linearly (a full left-to-right sweep dips by at
  most 3 dB mid-ramp, for a few milliseconds).
- :func:`apply_gain_ramp` is the validating wrapper of the per-channel ramp kernel.

A new target set while a ramp runs starts a fresh ramp from the current value.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import kernels
from ._validate import check_block, check_channels, check_positive, check_range, check_sample_rate
from .units import db_to_gain, pan_gains

__all__ = [
    "DEFAULT_RAMP_MS",
    "Ramp",
    "SmoothedGain",
    "SmoothedGainPan",
    "SmoothedPan",
    "apply_gain_ramp",
    "ramp_samples",
]

DEFAULT_RAMP_MS = 10.0


def ramp_samples(ramp_ms: float, sample_rate: int) -> int:
    """Frames in a ramp of ``ramp_ms`` milliseconds (0 ms → 0 frames: changes are immediate)."""
    ms = check_positive("ramp_ms", ramp_ms, allow_zero=True)
    return round(ms * sample_rate / 1000.0)


def apply_gain_ramp(
    block: NDArray[np.float32], g_start: ArrayLike, g_end: ArrayLike, ramp_len: int
) -> NDArray[np.float32]:
    """Multiply each channel of ``block`` in place by a gain ramping linearly over ``ramp_len`` frames.

    Channel ``c`` gets ``g_start[c] + (g_end[c] - g_start[c])·(n + 1)/ramp_len`` at frame
    ``n < ramp_len`` and ``g_end[c]`` after; scalars apply to every channel. Returns ``block``.
    """
    check_block(block)
    channels = block.shape[0]
    g0 = np.ascontiguousarray(np.broadcast_to(np.asarray(g_start, dtype=np.float64), (channels,)))
    g1 = np.ascontiguousarray(np.broadcast_to(np.asarray(g_end, dtype=np.float64), (channels,)))
    if not (np.isfinite(g0).all() and np.isfinite(g1).all()):
        raise ValueError("gains must be finite")
    if isinstance(ramp_len, bool) or not isinstance(ramp_len, int | np.integer) or ramp_len < 0:
        raise ValueError(f"ramp_len must be a non-negative integer, got {ramp_len!r}")
    kernels.apply_gain_ramp(block, g0, g1, int(ramp_len))
    return block


class Ramp:
    """A vector of parameter values moving linearly toward targets, one block at a time.

    ``advance(frames)`` returns ``(start, end, ramp_len)`` for the next block, in the kernels'
    convention: value ``start + (end - start)(n + 1)/ramp_len`` at frame ``n < ramp_len``, then
    ``end``. The arrays returned are internal buffers, valid until the next call.
    """

    __slots__ = ("_end", "_left", "_settled", "_start", "_step", "_target", "_value", "ramp_len")

    def __init__(self, values: ArrayLike, ramp_len: int) -> None:
        value = np.array(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(value).all():
            raise ValueError("ramp values must be finite")
        if ramp_len < 0:
            raise ValueError("ramp length must be >= 0")
        self.ramp_len = int(ramp_len)
        self._value = value
        self._target = value.copy()
        self._step = np.zeros_like(value)
        self._start = np.empty_like(value)
        self._end = np.empty_like(value)
        self._left = 0
        self._settled = False  # True while _start and _end already hold the (constant) value

    @property
    def value(self) -> NDArray[np.float64]:
        """The values in effect at the end of the last block (a copy)."""
        return self._value.copy()

    @property
    def target(self) -> NDArray[np.float64]:
        return self._target.copy()

    @property
    def ramping(self) -> bool:
        return self._left > 0

    def set_target(self, target: ArrayLike, ramp_len: int | None = None) -> None:
        """Head for ``target`` (same length) from the current value over ``ramp_len`` frames."""
        new = np.array(target, dtype=np.float64).reshape(-1)
        if new.shape != self._value.shape:
            raise ValueError(f"target must have {self._value.shape[0]} value(s), got {new.shape[0]}")
        if not np.isfinite(new).all():
            raise ValueError("ramp targets must be finite")
        length = self.ramp_len if ramp_len is None else int(ramp_len)
        self._target[:] = new
        self._settled = False
        if length <= 0 or np.array_equal(new, self._value):
            self._value[:] = new
            self._left = 0
            return
        self._step[:] = (new - self._value) / length
        self._left = length

    def jump(self, values: ArrayLike) -> None:
        """Set the values immediately (no ramp)."""
        self.set_target(values, 0)

    def advance(self, frames: int) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
        if self._left == 0:
            if not self._settled:  # at rest the buffers keep the value: no copies per block
                self._start[:] = self._value
                self._end[:] = self._value
                self._settled = True
            return self._start, self._end, 0
        self._settled = False
        self._start[:] = self._value
        k = min(self._left, frames)
        self._left -= k
        if self._left == 0:
            self._value[:] = self._target
        else:
            self._value += self._step * k
        self._end[:] = self._value
        return self._start, self._end, k

    def values_at(self, frames: int, positions: NDArray[np.float64]) -> NDArray[np.float64]:
        """Advance by ``frames`` and return the values at fractional frame ``positions`` (len, size).

        Used by effects that recompute coefficients every few frames during a ramp.
        """
        start, end, ramp_len = self.advance(frames)
        if ramp_len == 0:
            return np.broadcast_to(end, (positions.shape[0], end.shape[0])).copy()
        frac = np.clip((positions + 1.0) / ramp_len, 0.0, 1.0)[:, None]
        out: NDArray[np.float64] = start[None, :] + (end - start)[None, :] * frac
        return out


class _ChannelGains:
    """Shared machinery: per-channel linear gains ramped by :class:`Ramp`, applied in place."""

    def __init__(self, gains: NDArray[np.float64], sample_rate: int, ramp_ms: float) -> None:
        self.sample_rate = check_sample_rate(sample_rate)
        self.channels = gains.shape[0]
        self._ramp = Ramp(gains, ramp_samples(ramp_ms, self.sample_rate))
        self._unity: bool | None = None  # at rest: are all the gains 1? (None: not known yet)

    @property
    def gains(self) -> NDArray[np.float64]:
        """Per-channel linear gains in effect now."""
        return self._ramp.value

    @property
    def ramping(self) -> bool:
        return self._ramp.ramping

    def _retarget(self, gains: NDArray[np.float64]) -> None:
        self._ramp.set_target(gains)
        self._unity = None

    def process(self, block: NDArray[np.float32]) -> None:
        """Apply the (ramping) gains to ``block`` in place."""
        check_block(block, self.channels)
        start, end, ramp_len = self._ramp.advance(block.shape[1])
        if ramp_len == 0:
            if self._unity is None:
                self._unity = bool(np.all(end == 1.0))
            if self._unity:
                return
        kernels.apply_gain_ramp(block, start, end, ramp_len)

    def reset(self) -> None:
        """Finish any ramp now (jump to the targets)."""
        self._ramp.jump(self._ramp.target)
        self._unity = None


class SmoothedGain(_ChannelGains):
    """One gain for every channel, changed without clicks."""

    def __init__(
        self, channels: int, sample_rate: int, gain_db: float = 0.0, ramp_ms: float = DEFAULT_RAMP_MS
    ) -> None:
        self._gain_db = float(gain_db)
        g = db_to_gain(self._gain_db)
        super().__init__(np.full(check_channels(channels), g), sample_rate, ramp_ms)

    @property
    def gain_db(self) -> float:
        """The target gain in dB."""
        return self._gain_db

    def set_gain_db(self, gain_db: float) -> None:
        if math.isnan(gain_db) or gain_db > 48.0:
            raise ValueError(f"gain must be ≤ +48 dB, got {gain_db}")
        self._gain_db = float(gain_db)
        self._retarget(np.full(self.channels, db_to_gain(self._gain_db)))


class SmoothedPan(_ChannelGains):
    """Constant-power pan of a stereo block (left x cos θ, right x sin θ), changed without clicks."""

    def __init__(self, sample_rate: int, pan: float = 0.0, ramp_ms: float = DEFAULT_RAMP_MS) -> None:
        self._pan = check_range("pan", pan, -1.0, 1.0)
        super().__init__(np.array(pan_gains(self._pan)), sample_rate, ramp_ms)

    @property
    def pan(self) -> float:
        return self._pan

    def set_pan(self, pan: float) -> None:
        self._pan = check_range("pan", pan, -1.0, 1.0)
        self._retarget(np.array(pan_gains(self._pan)))


class SmoothedGainPan(_ChannelGains):
    """A track strip's gain and constant-power pan on a stereo block, as one pair of ramped gains."""

    def __init__(
        self,
        sample_rate: int,
        gain_db: float = 0.0,
        pan: float = 0.0,
        ramp_ms: float = DEFAULT_RAMP_MS,
    ) -> None:
        self._gain_db = float(gain_db)
        self._pan = check_range("pan", pan, -1.0, 1.0)
        super().__init__(self._pair(), sample_rate, ramp_ms)

    def _pair(self) -> NDArray[np.float64]:
        left, right = pan_gains(self._pan)
        g = db_to_gain(self._gain_db)
        return np.array([g * left, g * right])

    @property
    def gain_db(self) -> float:
        return self._gain_db

    @property
    def pan(self) -> float:
        return self._pan

    def set(self, *, gain_db: float | None = None, pan: float | None = None) -> None:
        if gain_db is not None:
            if math.isnan(gain_db) or gain_db > 48.0:
                raise ValueError(f"gain must be ≤ +48 dB, got {gain_db}")
            self._gain_db = float(gain_db)
        if pan is not None:
            self._pan = check_range("pan", pan, -1.0, 1.0)
        self._retarget(self._pair())
