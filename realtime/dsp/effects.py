"""Effect processors behind one interface, and the factory that builds them from the document.

Every effect implements :class:`Effect`: ``process(block)`` filters a float32 (channels, frames)
block in place (the channel count is fixed at construction, blocks may have any length),
``set_params(**params)`` validates and applies new parameter values (audible ones are ramped
over ``ramp_ms``, 10 ms by default, so a change never clicks), ``reset()`` clears the signal
history (tails, filter state, envelopes) and finishes any ramp, and ``latency`` is the delay
the effect adds, in frames (only the limiter has one).

======================  =====================================================================
kind (``type`` key)     parameters (snake_case; the document's camelCase is accepted too)
======================  =====================================================================
``eq``                  bands: ``band{i}_type`` (lowpass, highpass, peaking, lowshelf,
                        highshelf), ``band{i}_freq`` Hz, ``band{i}_gain_db``, ``band{i}_q``,
                        ``band{i}_slope`` (shelves); or ``bands``: a list of such maps
``compressor``          ``threshold_db`` (-18), ``ratio`` (4), ``attack_ms`` (10),
                        ``release_ms`` (100), ``knee_db`` (6), ``makeup_db`` (0),
                        ``detector`` ("peak" | "rms"), ``rms_ms`` (10)
``delay``               ``time_ms`` (250), ``feedback`` (0.3), ``mix`` (0.25), ``max_time_ms`` (2000)
``reverb``              ``room_size`` (0.5), ``damping`` (0.5), ``wet`` (0.33), ``dry`` (1),
                        ``width`` (1)
``limiter``             ``ceiling_db`` (-1 dBTP), ``lookahead_ms`` (1.5), ``release_ms`` (50),
                        ``true_peak`` (true)
======================  =====================================================================

:class:`LimiterBank` is not an effect of the document: it runs many listeners' limiters (the
live jam's personal mixes) in one call.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from . import kernels
from ._validate import (
    check_block,
    check_channels,
    check_listeners,
    check_range,
    check_sample_rate,
    check_stacked_block,
)
from .filters import FILTER_KINDS, Band, design_band_trajectory, design_sos, sos_state
from .smoothing import DEFAULT_RAMP_MS, Ramp, ramp_samples
from .units import db_to_gain

__all__ = [
    "EFFECT_KINDS",
    "Compressor",
    "Delay",
    "Effect",
    "Equalizer",
    "Limiter",
    "LimiterBank",
    "Reverb",
    "effect_from_document",
    "make_effect",
    "static_gain_db",
]

EFFECT_KINDS = ("eq", "compressor", "delay", "reverb", "limiter")


@runtime_checkable
class Effect(Protocol):
    """An in-place block processor with smoothed, validated parameters."""

    latency: int

    def process(self, block: NDArray[np.float32]) -> None: ...

    def set_params(self, **params: float) -> None: ...

    def reset(self) -> None: ...


def _coef(time_ms: float, sample_rate: int) -> float:
    """One-pole coefficient for a time constant (1 - 1/e of a step after ``time_ms``); 0 ms → 0."""
    if time_ms <= 0.0:
        return 0.0
    return math.exp(-1000.0 / (time_ms * sample_rate))


def _unknown(kind: str, names: Sequence[str], allowed: Sequence[str]) -> None:
    bad = sorted(set(names) - set(allowed))
    if bad:
        raise ValueError(
            f"unknown {kind} parameter(s) {', '.join(bad)}; expected {', '.join(sorted(allowed))}"
        )


def _number(name: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not (allow_inf and v > 0)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# Equalizer
# --------------------------------------------------------------------------------------------

_BAND_FIELD = re.compile(r"^band(\d+)_(type|kind|freq|gain_db|q|slope)$")


class Equalizer:
    """A cascade of cookbook biquads (one section per :class:`~realtime.dsp.filters.Band`).

    A parameter change (``set_params(band0_gain_db=6)``) ramps frequency (in log), gain (in dB)
    and Q/slope (in log) over ``ramp_ms`` and redesigns the coefficients every
    :attr:`CHUNK` frames of the ramp, keeping the filter state; a structural change
    (:meth:`set_bands` with other kinds or another number of bands) crossfades from the old
    cascade to the new one over the same time (another structural change during that
    crossfade restarts it from the cascade then fading in).
    """

    CHUNK = 2

    def __init__(
        self,
        bands: Sequence[Band],
        channels: int,
        sample_rate: int,
        *,
        ramp_ms: float = DEFAULT_RAMP_MS,
    ) -> None:
        self.channels = check_channels(channels)
        self.sample_rate = check_sample_rate(sample_rate)
        self.latency = 0
        self._ramp_len = ramp_samples(ramp_ms, self.sample_rate)
        self._old: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self._xfade = Ramp([1.0], self._ramp_len)
        self._scratch = np.empty(0, dtype=np.float32)
        self._install(tuple(bands))

    @property
    def bands(self) -> tuple[Band, ...]:
        """The bands (their target values while a change is ramping)."""
        return self._bands

    def _install(self, bands: tuple[Band, ...]) -> None:
        self._sos = design_sos(bands, self.sample_rate).reshape(1, len(bands), 6)
        self._state = sos_state(self.channels, len(bands))
        self._bands = bands
        self._params = Ramp(self._vector(bands), self._ramp_len)

    @staticmethod
    def _vector(bands: Sequence[Band]) -> NDArray[np.float64]:
        values = [(math.log(b.freq), b.gain_db, math.log(b.q if b.slope is None else b.slope)) for b in bands]
        return np.array(values, dtype=np.float64).reshape(-1)

    def set_bands(self, bands: Sequence[Band]) -> None:
        """Replace the bands: ramped when only values change, crossfaded when the structure does."""
        new = tuple(bands)
        design_sos(new, self.sample_rate)  # validates against Nyquist before anything changes
        same_shape = len(new) == len(self._bands) and all(
            a.kind == b.kind and (a.slope is None) == (b.slope is None)
            for a, b in zip(new, self._bands, strict=True)
        )
        if same_shape:
            self._bands = new
            self._params.set_target(self._vector(new))
            if not self._params.ramping:
                self._sos = design_sos(new, self.sample_rate).reshape(1, len(new), 6)
            return
        if self._ramp_len > 0:
            self._old = (self._sos, self._state)
            self._xfade.jump([0.0])
            self._xfade.set_target([1.0])
        self._install(new)

    def set_params(self, **params: float) -> None:
        """``band{i}_freq``, ``band{i}_gain_db``, ``band{i}_q``, ``band{i}_slope`` (and ``band{i}_type``)."""
        changes: dict[int, dict[str, Any]] = {}
        for key, value in params.items():
            m = _BAND_FIELD.match(key)
            if m is None:
                raise ValueError(
                    f"unknown eq parameter {key!r}; expected band<i>_freq, band<i>_gain_db, band<i>_q, "
                    "band<i>_slope or band<i>_type"
                )
            index, field = int(m.group(1)), m.group(2)
            if index >= len(self._bands):
                raise ValueError(f"eq has {len(self._bands)} band(s); {key!r} names band {index}")
            if field in ("type", "kind"):
                if not isinstance(value, str) or value not in FILTER_KINDS:
                    raise ValueError(f"{key} must be one of {', '.join(FILTER_KINDS)}, got {value!r}")
                changes.setdefault(index, {})["kind"] = value
            else:
                changes.setdefault(index, {})[field] = _number(key, value)
        bands = list(self._bands)
        for index, fields in changes.items():
            bands[index] = dataclasses.replace(bands[index], **fields)
        self.set_bands(bands)

    def reset(self) -> None:
        self._state[:] = 0.0
        self._old = None
        self._xfade.jump([1.0])
        if self._params.ramping:
            self._params.jump(self._params.target)
            self._sos = design_sos(self._bands, self.sample_rate).reshape(1, len(self._bands), 6)

    def _trajectory(self, frames: int) -> NDArray[np.float64]:
        """Coefficient sets for each CHUNK of the next ``frames`` while parameters ramp."""
        chunks = -(-frames // self.CHUNK)
        ends = np.minimum(np.arange(1, chunks + 1) * self.CHUNK, frames) - 1.0
        values = self._params.values_at(frames, ends)
        sos = np.empty((chunks, len(self._bands), 6), dtype=np.float64)
        for i, band in enumerate(self._bands):
            sos[:, i, :] = design_band_trajectory(
                band.kind,
                np.exp(values[:, 3 * i]),
                values[:, 3 * i + 1],
                np.exp(values[:, 3 * i + 2]),
                band.slope is not None,
                self.sample_rate,
            )
        if self._params.ramping:
            self._sos = sos[-1:].copy()
        else:
            self._sos = design_sos(self._bands, self.sample_rate).reshape(1, len(self._bands), 6)
        return sos

    def process(self, block: NDArray[np.float32]) -> None:
        check_block(block, self.channels)
        frames = block.shape[1]
        if frames == 0:
            return
        if self._old is not None:
            if self._scratch.shape[0] < self.channels * frames:
                self._scratch = np.empty(self.channels * frames, dtype=np.float32)
            old = self._scratch[: self.channels * frames].reshape(self.channels, frames)
            old[:] = block
            old_sos, old_state = self._old
            kernels.biquad_sos(old, old_sos, frames, old_state, old)
        if self._params.ramping:
            kernels.biquad_sos(block, self._trajectory(frames), self.CHUNK, self._state, block)
        elif self._bands:
            kernels.biquad_sos(block, self._sos, frames, self._state, block)
        if self._old is not None:
            start, end, ramp_len = self._xfade.advance(frames)
            w = np.full(frames, end[0])
            if ramp_len:
                w[:ramp_len] = start[0] + (end[0] - start[0]) * np.arange(1, ramp_len + 1) / ramp_len
            block *= w.astype(np.float32)
            block += old * (1.0 - w).astype(np.float32)
            if not self._xfade.ramping:
                self._old = None


# --------------------------------------------------------------------------------------------
# Compressor
# --------------------------------------------------------------------------------------------


class Compressor:
    """Feed-forward compressor (Giannoulis-Massberg-Reiss gain computer, quadratic soft knee).

    The detector is linked across channels (the loudest channel sets one gain for all):
    ``detector="peak"`` uses the instantaneous level, ``"rms"`` a one-pole mean square with time
    constant ``rms_ms``. Static curve, with ``x`` the level in dB, ``T`` the threshold, ``R`` the
    ratio and ``W`` the knee width::

        y = x                                   for 2(x - T) < -W
        y = x + (1/R - 1)(x - T + W/2)² / (2W)  for 2|x - T| ≤ W
        y = T + (x - T)/R                       for 2(x - T) > W

    The gain reduction ``x - y`` (dB) is smoothed by the paper's *smooth decoupled* detector:
    a peak hold that decays with time constant ``release_ms``, followed by a one-pole with time
    constant ``attack_ms`` (after one time constant 63 % of a step is done; a release ends
    about ``attack_ms`` later than the hold's own decay). A crest is therefore held between
    the cycles of a waveform, and a sine's settled gain is the static curve at its peak level
    (peak detector) or at its RMS level (RMS detector). ``makeup_db`` (ramped on change) is
    added last.
    """

    PARAMS = (
        "threshold_db",
        "ratio",
        "attack_ms",
        "release_ms",
        "knee_db",
        "makeup_db",
        "detector",
        "rms_ms",
    )

    def __init__(
        self,
        channels: int,
        sample_rate: int,
        *,
        threshold_db: float = -18.0,
        ratio: float = 4.0,
        attack_ms: float = 10.0,
        release_ms: float = 100.0,
        knee_db: float = 6.0,
        makeup_db: float = 0.0,
        detector: str = "peak",
        rms_ms: float = 10.0,
        ramp_ms: float = DEFAULT_RAMP_MS,
    ) -> None:
        self.channels = check_channels(channels)
        self.sample_rate = check_sample_rate(sample_rate)
        self.latency = 0
        self._detector_state = np.zeros(self.channels, dtype=np.float64)
        self._smoothed = np.zeros(2, dtype=np.float64)
        self._gain_db = np.zeros(0, dtype=np.float64)
        self._gain = np.zeros(0, dtype=np.float64)
        self._coefs = (0.0, 0.0, 0.0)
        self._makeup = Ramp([1.0], ramp_samples(ramp_ms, self.sample_rate))
        self._last_frames = 0
        self.threshold_db = threshold_db
        self.ratio = ratio
        self.attack_ms = attack_ms
        self.release_ms = release_ms
        self.knee_db = knee_db
        self.makeup_db = makeup_db
        self.detector = detector
        self.rms_ms = rms_ms
        self.set_params(
            threshold_db=threshold_db,
            ratio=ratio,
            attack_ms=attack_ms,
            release_ms=release_ms,
            knee_db=knee_db,
            makeup_db=makeup_db,
            detector=detector,
            rms_ms=rms_ms,
        )
        self._makeup.jump([db_to_gain(self.makeup_db)])

    def set_params(self, **params: float | str) -> None:
        _unknown("compressor", list(params), self.PARAMS)
        new: dict[str, float] = {}
        for key, value in params.items():
            if key == "detector":
                if value not in ("peak", "rms"):
                    raise ValueError(f"detector must be 'peak' or 'rms', got {value!r}")
                continue
            new[key] = _number(key, value, allow_inf=key == "ratio")
        checks = {
            "threshold_db": (-100.0, 0.0),
            "ratio": (1.0, math.inf),
            "attack_ms": (0.0, 1000.0),
            "release_ms": (0.0, 10000.0),
            "knee_db": (0.0, 48.0),
            "makeup_db": (-48.0, 48.0),
            "rms_ms": (0.1, 1000.0),
        }
        for key, value in new.items():
            lo, hi = checks[key]
            check_range(key, value, lo, hi)
        for key, value in new.items():
            setattr(self, key, value)
        if "detector" in params:
            self.detector = str(params["detector"])
        if "makeup_db" in new:
            self._makeup.set_target([db_to_gain(self.makeup_db)])
        self._coefs = (
            _coef(self.attack_ms, self.sample_rate),
            _coef(self.release_ms, self.sample_rate),
            _coef(self.rms_ms, self.sample_rate),
        )

    @property
    def gain_reduction_db(self) -> float:
        """The smoothed gain (≤ 0 dB, without make-up) at the end of the last block."""
        return -float(self._smoothed[0])

    @property
    def last_gain_db(self) -> NDArray[np.float64]:
        """Per-frame smoothed gain reduction of the last block (a view, valid until the next call)."""
        return self._gain_db[: self._last_frames]

    def reset(self) -> None:
        self._detector_state[:] = 0.0
        self._smoothed[:] = 0.0
        self._makeup.jump(self._makeup.target)

    def process(self, block: NDArray[np.float32]) -> None:
        check_block(block, self.channels)
        frames = block.shape[1]
        if self._gain_db.shape[0] < frames:
            size = max(frames, 2 * self._gain_db.shape[0])
            self._gain_db = np.zeros(size, dtype=np.float64)
            self._gain = np.zeros(size, dtype=np.float64)
        start, end, ramp_len = self._makeup.advance(frames)
        attack, release, rms_coef = self._coefs
        kernels.compressor(
            block,
            self._detector_state,
            self._smoothed,
            self.threshold_db,
            self.ratio,
            self.knee_db,
            attack,
            release,
            rms_coef,
            self.detector == "rms",
            float(start[0]),
            float(end[0]),
            ramp_len,
            self._gain_db,
            self._gain,
        )
        self._last_frames = frames


def static_gain_db(level_db: float, threshold_db: float, ratio: float, knee_db: float) -> float:
    """The compressor's gain computer: gain (dB, ≤ 0) for an input level ``level_db``."""
    over = level_db - threshold_db
    slope = 1.0 / ratio - 1.0
    if 2.0 * over <= -knee_db:
        return 0.0
    if 2.0 * abs(over) < knee_db:
        return slope * (over + knee_db / 2.0) ** 2 / (2.0 * knee_db)
    return slope * over


# --------------------------------------------------------------------------------------------
# Delay
# --------------------------------------------------------------------------------------------


class Delay:
    """Feedback delay: ``y = (1 - mix)·x + mix·d``, with ``d`` the signal ``time_ms`` ago plus
    ``feedback`` times its own echo. Mix and feedback changes ramp; a time change crossfades from
    the old tap to the new one (no pitch sweep); a change arriving mid-crossfade waits for it."""

    PARAMS = ("time_ms", "feedback", "mix", "max_time_ms")

    def __init__(
        self,
        channels: int,
        sample_rate: int,
        *,
        time_ms: float = 250.0,
        feedback: float = 0.3,
        mix: float = 0.25,
        max_time_ms: float = 2000.0,
        ramp_ms: float = DEFAULT_RAMP_MS,
    ) -> None:
        self.channels = check_channels(channels)
        self.sample_rate = check_sample_rate(sample_rate)
        self.latency = 0
        self.max_time_ms = check_range("max_time_ms", _number("max_time_ms", max_time_ms), 1.0, 60000.0)
        length = round(self.max_time_ms * self.sample_rate / 1000.0) + 1
        self._buf = np.zeros((self.channels, length), dtype=np.float32)
        self._pos = np.zeros(1, dtype=np.int64)
        self.time_ms = self._check_time(time_ms)
        self.feedback = check_range("feedback", _number("feedback", feedback), 0.0, 0.99)
        self.mix = check_range("mix", _number("mix", mix), 0.0, 1.0)
        self._d_old = self._d_new = self._samples(self.time_ms)
        self._pending: int | None = None
        self._ramp = Ramp([self.mix, self.feedback, 0.0], ramp_samples(ramp_ms, self.sample_rate))

    def _check_time(self, time_ms: object) -> float:
        lo = 1000.0 / self.sample_rate
        return check_range("time_ms", _number("time_ms", time_ms), lo, self.max_time_ms)

    def _samples(self, time_ms: float) -> int:
        return max(1, min(self._buf.shape[1] - 1, round(time_ms * self.sample_rate / 1000.0)))

    def set_params(self, **params: float) -> None:
        _unknown("delay", list(params), self.PARAMS)
        if "max_time_ms" in params and _number("max_time_ms", params["max_time_ms"]) != self.max_time_ms:
            raise ValueError("max_time_ms is fixed at construction")
        time_ms = self._check_time(params["time_ms"]) if "time_ms" in params else self.time_ms
        feedback = self.feedback
        mix = self.mix
        if "feedback" in params:
            feedback = check_range("feedback", _number("feedback", params["feedback"]), 0.0, 0.99)
        if "mix" in params:
            mix = check_range("mix", _number("mix", params["mix"]), 0.0, 1.0)
        self.time_ms, self.feedback, self.mix = time_ms, feedback, mix
        target = self._samples(time_ms)
        tap = float(self._ramp.target[2])
        if tap == 0.0:  # idle: start a crossfade to the new tap right away
            if target != self._d_old:
                self._d_new = target
                tap = 1.0
        else:  # crossfading: the newest time waits for the current crossfade to end
            self._pending = target if target != self._d_new else None
        self._ramp.set_target([self.mix, self.feedback, tap])

    def reset(self) -> None:
        self._buf[:] = 0.0
        self._pos[0] = 0
        self._d_old = self._d_new = self._pending if self._pending is not None else self._d_new
        self._pending = None
        self._ramp.jump([self.mix, self.feedback, 0.0])

    def process(self, block: NDArray[np.float32]) -> None:
        check_block(block, self.channels)
        start, end, ramp_len = self._ramp.advance(block.shape[1])
        kernels.delay(block, self._buf, self._pos, self._d_old, self._d_new, start, end, ramp_len)
        if end[2] == 1.0 and not self._ramp.ramping:
            # crossfade done: the new tap becomes the only one, then start any pending change
            self._d_old = self._d_new
            self._ramp.jump([self.mix, self.feedback, 0.0])
            if self._pending is not None:
                self._d_new = self._pending
                self._pending = None
                self._ramp.set_target([self.mix, self.feedback, 1.0])


# --------------------------------------------------------------------------------------------
# Reverb
# --------------------------------------------------------------------------------------------


class Reverb:
    """Freeverb (Jezar, 2000): 8 lowpass-feedback combs and 4 allpasses per channel.

    ``room_size`` 0…1 sets the comb feedback (0.7…0.98), ``damping`` 0…1 the lowpass in the
    loop, ``wet`` 0…1 the reverb level (Freeverb's scale: 3 x wet), ``dry`` 0…1 the direct
    level (linear) and ``width`` 0…1 the stereo spread of the wet signal. ``dry=1, wet=0`` is
    the identity. Delay lengths are Freeverb's (at 44.1 kHz) scaled to the sample rate, with
    23 samples more per channel for decorrelation. All channels feed one mono input; with more
    than two channels, ``wet2`` crossfeeds the mean of the other channels' reverb.
    """

    PARAMS = ("room_size", "damping", "wet", "dry", "width")
    COMBS = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)
    ALLPASSES = (556, 441, 341, 225)
    SPREAD = 23
    INPUT_GAIN = 0.015

    def __init__(
        self,
        channels: int,
        sample_rate: int,
        *,
        room_size: float = 0.5,
        damping: float = 0.5,
        wet: float = 0.33,
        dry: float = 1.0,
        width: float = 1.0,
        ramp_ms: float = DEFAULT_RAMP_MS,
    ) -> None:
        self.channels = check_channels(channels)
        self.sample_rate = check_sample_rate(sample_rate)
        self.latency = 0
        scale = self.sample_rate / 44100.0
        spread = round(self.SPREAD * scale)
        comb_len = np.array(
            [[round(n * scale) + c * spread for n in self.COMBS] for c in range(self.channels)],
            dtype=np.int64,
        )
        ap_len = np.array(
            [[round(n * scale) + c * spread for n in self.ALLPASSES] for c in range(self.channels)],
            dtype=np.int64,
        )
        self._comb_len = comb_len
        self._ap_len = ap_len
        self._comb_buf = np.zeros((self.channels, len(self.COMBS), int(comb_len.max())), dtype=np.float64)
        self._ap_buf = np.zeros((self.channels, len(self.ALLPASSES), int(ap_len.max())), dtype=np.float64)
        self._comb_idx = np.zeros_like(comb_len)
        self._ap_idx = np.zeros_like(ap_len)
        self._comb_store = np.zeros(comb_len.shape, dtype=np.float64)
        self._wet_out = np.zeros(self.channels, dtype=np.float64)
        self.room_size = room_size
        self.damping = damping
        self.wet = wet
        self.dry = dry
        self.width = width
        self._ramp = Ramp(np.zeros(5), ramp_samples(ramp_ms, self.sample_rate))
        self.set_params(room_size=room_size, damping=damping, wet=wet, dry=dry, width=width)
        self._ramp.jump(self._ramp.target)

    def _vector(self) -> list[float]:
        wet = 3.0 * self.wet
        return [
            wet * (self.width / 2.0 + 0.5),
            wet * ((1.0 - self.width) / 2.0),
            self.dry,
            self.room_size * 0.28 + 0.7,
            self.damping * 0.4,
        ]

    def set_params(self, **params: float) -> None:
        _unknown("reverb", list(params), self.PARAMS)
        values = {k: check_range(k, _number(k, v), 0.0, 1.0) for k, v in params.items()}
        for key, value in values.items():
            setattr(self, key, value)
        self._ramp.set_target(self._vector())

    def reset(self) -> None:
        for arr in (self._comb_buf, self._ap_buf, self._comb_store, self._wet_out):
            arr[...] = 0.0
        self._comb_idx[:] = 0
        self._ap_idx[:] = 0
        self._ramp.jump(self._ramp.target)

    def process(self, block: NDArray[np.float32]) -> None:
        check_block(block, self.channels)
        start, end, ramp_len = self._ramp.advance(block.shape[1])
        kernels.freeverb(
            block,
            self._comb_buf,
            self._comb_len,
            self._comb_idx,
            self._comb_store,
            self._ap_buf,
            self._ap_len,
            self._ap_idx,
            self._wet_out,
            self.INPUT_GAIN * 2.0 / self.channels,
            start,
            end,
            ramp_len,
        )


# --------------------------------------------------------------------------------------------
# Limiter
# --------------------------------------------------------------------------------------------


class _LimiterSettings:
    """Settings, validation and derived constants shared by :class:`Limiter` and :class:`LimiterBank`."""

    PARAMS = ("ceiling_db", "lookahead_ms", "release_ms", "true_peak")

    def _configure(
        self, sample_rate: int, ceiling_db: float, lookahead_ms: float, release_ms: float, true_peak: bool
    ) -> None:
        self.sample_rate = check_sample_rate(sample_rate)
        self.true_peak = bool(true_peak)
        self._taps = kernels.TRUE_PEAK_TAPS if self.true_peak else np.zeros((0, 12), dtype=np.float64)
        self.lookahead_ms = check_range("lookahead_ms", _number("lookahead_ms", lookahead_ms), 0.5, 50.0)
        delay = max(16, round(self.lookahead_ms * self.sample_rate / 1000.0))
        self.latency = delay
        self._attack = delay - 11
        self._hold = delay + 1
        self.ceiling_db = -1.0
        self.release_ms = 50.0
        self._threshold = 0.0
        self._release = 0.0
        self.set_params(ceiling_db=ceiling_db, release_ms=release_ms)

    def set_params(self, **params: float) -> None:
        _unknown("limiter", list(params), self.PARAMS)
        if "lookahead_ms" in params and _number("lookahead_ms", params["lookahead_ms"]) != self.lookahead_ms:
            raise ValueError("lookahead_ms is fixed at construction (it sets the latency)")
        if "true_peak" in params and bool(params["true_peak"]) != self.true_peak:
            raise ValueError("true_peak is fixed at construction")
        if "ceiling_db" in params:
            self.ceiling_db = check_range(
                "ceiling_db", _number("ceiling_db", params["ceiling_db"]), -60.0, 0.0
            )
        if "release_ms" in params:
            self.release_ms = check_range(
                "release_ms", _number("release_ms", params["release_ms"]), 1.0, 5000.0
            )
        self._threshold = 10.0 ** (self.ceiling_db / 20.0)
        self._release = _coef(self.release_ms, self.sample_rate)


class Limiter(_LimiterSettings):
    """True-peak look-ahead brickwall limiter (the master's last stage).

    The detector oversamples 4x with the ITU-R BS.1770-4 Annex 2 interpolation FIR (the true
    peak meter's filter), linked across channels; the gain needed to keep every sample and
    interpolated value at or below ``ceiling_db`` is held for the look-ahead window, ramped in
    over it (moving average) and released with time constant ``release_ms``. The output is
    delayed by ``latency = round(lookahead_ms · fs / 1000)`` frames. Below the ceiling the
    limiter is exact: its output is the input delayed, bit for bit.

    ``true_peak=False`` (fixed at construction) limits sample peaks only: about 5x cheaper, for
    places such as per-listener live mixes where inter-sample overs do not matter (and see
    :class:`LimiterBank` for many of them at once).
    """

    def __init__(
        self,
        channels: int,
        sample_rate: int,
        *,
        ceiling_db: float = -1.0,
        lookahead_ms: float = 1.5,
        release_ms: float = 50.0,
        true_peak: bool = True,
    ) -> None:
        self.channels = check_channels(channels)
        self._configure(sample_rate, ceiling_db, lookahead_ms, release_ms, true_peak)
        self._hist = np.zeros((self.channels, kernels.TRUE_PEAK_HISTORY), dtype=np.float64)
        self._delay = np.zeros((self.channels, self.latency), dtype=np.float32)
        self._box = np.ones(self._attack, dtype=np.float64)
        self._dq_val = np.zeros(self._hold + 1, dtype=np.float64)
        self._dq_time = np.zeros(self._hold + 1, dtype=np.int64)
        self._istate = np.zeros(6, dtype=np.int64)
        self._fstate = np.array([float(self._attack), 1.0])
        self._gain = np.zeros(0, dtype=np.float64)
        self._last_frames = 0

    @property
    def gain_db(self) -> float:
        """Gain applied to the last frame (0 dB when not limiting)."""
        g = float(self._fstate[1])
        return -math.inf if g <= 0.0 else 20.0 * math.log10(g)

    @property
    def last_gain(self) -> NDArray[np.float64]:
        """Per-frame linear gain of the last block (a view, valid until the next call)."""
        return self._gain[: self._last_frames]

    def reset(self) -> None:
        self._hist[:] = 0.0
        self._delay[:] = 0.0
        self._box[:] = 1.0
        self._istate[:] = 0
        self._fstate[:] = (float(self._attack), 1.0)

    def process(self, block: NDArray[np.float32]) -> None:
        check_block(block, self.channels)
        frames = block.shape[1]
        if self._gain.shape[0] < frames:
            self._gain = np.zeros(max(frames, 2 * self._gain.shape[0]), dtype=np.float64)
        kernels.limiter(
            block,
            self._hist,
            self._delay,
            self._box,
            self._dq_val,
            self._dq_time,
            self._istate,
            self._fstate,
            self._taps,
            self._threshold,
            self._release,
            self._hold,
            self._gain,
        )
        self._last_frames = frames


class LimiterBank(_LimiterSettings):
    """``listeners`` look-ahead limiters with one set of settings, run by one kernel call a block.

    For the personal mixes of a live jam: every listener's mix needs its own limiter (its own
    gain and delay line), but the limiters share their settings and their timing, so their state
    is stacked and a single numba call per block processes them all (:func:`kernels.limiter_bank`,
    vectorized across listeners) instead of one Python call and one kernel call per listener.

    Listener ``l``'s output is bit for bit that of its own
    ``Limiter(channels, sample_rate, ceiling_db=…, lookahead_ms=…, release_ms=…, true_peak=…)``
    fed the same blocks. The default is ``true_peak=False`` (sample peaks, the cheap detector
    meant for personal mixes); ``true_peak=True`` runs the BS.1770 interpolator as the master's
    limiter does. ``ceiling_db`` and ``release_ms`` may change between blocks, for all listeners
    at once; ``lookahead_ms`` and ``true_peak`` are fixed.

    :meth:`process` takes the listeners' blocks stacked, (listeners, channels, frames), or as the
    rows of the personal-mix matrix, (listeners · channels, frames): rows ``l·channels + c``, as
    :func:`realtime.dsp.mixer.mix_matrix` produces them for ``channels=2``.
    """

    def __init__(
        self,
        listeners: int,
        channels: int = 2,
        sample_rate: int = 48000,
        *,
        ceiling_db: float = -1.0,
        lookahead_ms: float = 1.5,
        release_ms: float = 50.0,
        true_peak: bool = False,
    ) -> None:
        self.listeners = check_listeners(listeners)
        self.channels = check_channels(channels)
        self._configure(sample_rate, ceiling_db, lookahead_ms, release_ms, true_peak)
        n, c = self.listeners, self.channels
        self._hist = np.zeros((c, kernels.TRUE_PEAK_HISTORY, n), dtype=np.float64)
        self._delay = np.zeros((self.latency, c, n), dtype=np.float32)
        self._box = np.ones((self._attack, n), dtype=np.float64)
        self._ring = np.ones((self._hold, n), dtype=np.float64)
        self._suffix = np.ones((self._hold + 1, n), dtype=np.float64)
        self._prefix = np.ones(n, dtype=np.float64)
        self._box_sum = np.full(n, float(self._attack))
        self._gain_now = np.ones(n, dtype=np.float64)
        self._level = np.zeros(n, dtype=np.float64)
        self._istate = np.zeros(4, dtype=np.int64)
        self._gain = np.ones((0, n), dtype=np.float64)
        self._last_frames = 0

    @property
    def gain_db(self) -> NDArray[np.float64]:
        """Each listener's gain on the last frame, in dB (0 when not limiting)."""
        with np.errstate(divide="ignore"):
            out: NDArray[np.float64] = 20.0 * np.log10(self._gain_now)
        return out

    @property
    def last_gain(self) -> NDArray[np.float64]:
        """Per-frame gains of the last block, (listeners, frames); a view, valid until the next call."""
        return self._gain[: self._last_frames].T

    def reset(self, listener: int | None = None) -> None:
        """Clear every limiter (as new), or only ``listener``'s (say, for someone who just joined).

        A single listener's reset is a fresh limiter too, except that it joins the bank's shared
        positions in its rings; its output can then differ from a new :class:`Limiter`'s by the
        rounding of the moving average's sum (about 1e-16), never in what it guarantees.
        """
        if listener is None:
            cols: slice | int = slice(None)
            self._istate[:] = 0
        else:
            if isinstance(listener, bool) or not isinstance(listener, int | np.integer):
                raise TypeError(f"listener must be an integer, got {listener!r}")
            if not 0 <= listener < self.listeners:
                raise ValueError(f"listener must be within [0, {self.listeners - 1}], got {listener}")
            cols = int(listener)
        self._hist[..., cols] = 0.0
        self._delay[..., cols] = 0.0
        self._box[:, cols] = 1.0
        self._ring[:, cols] = 1.0
        self._suffix[:, cols] = 1.0
        self._prefix[cols] = 1.0
        self._box_sum[cols] = float(self._attack)
        self._gain_now[cols] = 1.0

    def process(self, block: NDArray[np.float32]) -> None:
        """Limit each listener's block: (listeners, channels, frames) or (listeners·channels, frames)."""
        stacked = check_stacked_block(block, self.listeners, self.channels)
        frames = stacked.shape[2]
        if self._gain.shape[0] < frames:
            self._gain = np.ones((max(frames, 2 * self._gain.shape[0]), self.listeners), dtype=np.float64)
        kernels.limiter_bank(
            stacked,
            self._hist,
            self._delay,
            self._box,
            self._ring,
            self._suffix,
            self._prefix,
            self._box_sum,
            self._gain_now,
            self._level,
            self._istate,
            self._taps,
            self._threshold,
            self._release,
            self._gain,
        )
        self._last_frames = frames


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_META_KEYS = frozenset({"type", "id"})


def _snake(key: str) -> str:
    return _CAMEL.sub(r"_\1", key).lower()


def _eq_bands(params: Mapping[str, object]) -> list[Band]:
    bands_value = params.get("bands")
    flat = {k: v for k, v in params.items() if k != "bands"}
    specs: dict[int, dict[str, object]] = {}
    if bands_value is not None:
        if flat:
            raise ValueError("give eq bands either as 'bands' or as band<i>_... keys, not both")
        if not isinstance(bands_value, Sequence) or isinstance(bands_value, str | bytes):
            raise ValueError("eq 'bands' must be a list of maps")
        for i, spec in enumerate(bands_value):
            if not isinstance(spec, Mapping):
                raise ValueError(f"eq band {i} must be a map, got {type(spec).__name__}")
            specs[i] = {_snake(str(k)): v for k, v in spec.items()}
    else:
        for key, value in flat.items():
            m = _BAND_FIELD.match(key)
            if m is None:
                raise ValueError(
                    f"unknown eq parameter {key!r}; expected bands or band<i>_type, band<i>_freq, "
                    "band<i>_gain_db, band<i>_q, band<i>_slope"
                )
            specs.setdefault(int(m.group(1)), {})[m.group(2)] = value
        if specs and sorted(specs) != list(range(len(specs))):
            raise ValueError(f"eq bands must be numbered 0…{len(specs) - 1} without gaps")
    bands: list[Band] = []
    for i in sorted(specs):
        spec = dict(specs[i])
        kind = spec.pop("type", None) or spec.pop("kind", None)
        spec.pop("kind", None)
        if not isinstance(kind, str):
            raise ValueError(f"eq band {i} needs a type ({', '.join(FILTER_KINDS)})")
        allowed = {"freq", "gain_db", "q", "slope"}
        _unknown(f"eq band {i}", list(spec), sorted(allowed))
        if "freq" not in spec:
            raise ValueError(f"eq band {i} needs a freq")
        fields = {k: _number(f"band{i}_{k}", v) for k, v in spec.items()}
        try:
            bands.append(Band(kind, **fields))
        except ValueError as exc:
            raise ValueError(f"eq band {i}: {exc}") from None
    return bands


def make_effect(kind: str, params: Mapping[str, object], channels: int, sample_rate: int) -> Effect:
    """Build an effect from a document map: ``kind`` is ``eq``, ``compressor``, ``delay``, ``reverb``
    or ``limiter``; ``params`` may carry the same ``type`` (and an ``id``), which are skipped.

    Keys may be snake_case or camelCase (``thresholdDb``). Unknown kinds or parameters and
    out-of-range values raise ``ValueError`` naming the culprit.
    """
    if kind not in EFFECT_KINDS:
        raise ValueError(f"unknown effect type {kind!r}; expected one of {', '.join(EFFECT_KINDS)}")
    declared = params.get("type")
    if declared is not None and declared != kind:
        raise ValueError(f"effect params declare type {declared!r} but {kind!r} was asked for")
    values: dict[str, Any] = {}
    for key, value in params.items():
        if key in _META_KEYS:
            continue
        name = _snake(str(key))
        if name in values:
            raise ValueError(f"{kind} parameter {name!r} given twice")
        values[name] = value
    if kind == "eq":
        return Equalizer(_eq_bands(values), channels, sample_rate)
    cls: type[Compressor] | type[Delay] | type[Reverb] | type[Limiter] = {
        "compressor": Compressor,
        "delay": Delay,
        "reverb": Reverb,
        "limiter": Limiter,
    }[kind]
    _unknown(kind, list(values), cls.PARAMS)
    for key, value in values.items():
        if key == "true_peak" and kind == "limiter" and isinstance(value, bool):
            continue
        if not (kind == "compressor" and key == "detector"):
            values[key] = _number(key, value, allow_inf=key == "ratio")
    effect: Effect = cls(channels, sample_rate, **values)
    return effect


def effect_from_document(spec: Mapping[str, object], channels: int, sample_rate: int) -> Effect:
    """``make_effect`` for a document entry ``{type: ..., ...params}``."""
    kind = spec.get("type")
    if not isinstance(kind, str):
        raise ValueError(f"effect needs a string 'type' ({', '.join(EFFECT_KINDS)})")
    return make_effect(kind, spec, channels, sample_rate)
