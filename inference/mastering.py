"""Mastering on the DSP engine's kernels: loudness to a target, true peak under a ceiling.

The chain, all on whole arrays (cut into large chunks only to bound scratch memory):

1. a 30 Hz high-pass (4th-order Butterworth, two cookbook sections through
   :class:`realtime.dsp.effects.Equalizer`);
2. with a ``reference``: tonal matching in the spirit of matchering — the ratio of the two
   long-term average spectra of the mid channel (Welch), averaged in third-octave bands on a
   log-frequency grid, re-centred to 0 dB, smoothed, limited to ±6 dB and realised as a
   linear-phase FIR (``scipy.signal.firwin2``, applied with ``oaconvolve``, delay removed so
   nothing shifts in time). Without a reference the tone is left alone;
3. a glue compressor (:class:`~realtime.dsp.effects.Compressor`: 2:1, RMS detector, 30 ms
   attack, 300 ms release, 6 dB knee) whose threshold sits 3 dB under the level of the loud
   passages, so it works the same on a quiet or a hot mix (about 1-2 dB of reduction);
4. a static gain to the loudness target, then the true-peak look-ahead limiter
   (:class:`~realtime.dsp.effects.Limiter`, BS.1770-4 4x interpolation) at the ceiling. The
   limiter lowers loudness where it works, so gain → limit → measure
   (:class:`~realtime.dsp.meters.LoudnessMeter`, BS.1770-4 integrated) repeats with a secant
   step until the output is within ±0.1 LU of the target (the report says whether ±0.2 LU
   was reached);
5. the true peak is measured again with an independent 4x interpolator
   (``scipy.signal.resample_poly``, whose Kaiser FIR reads up to ~0.6 dB higher than
   BS.1770's on bright transients) after the first pass (when the limiter works) and the last
   one. Where the two readings part near the ceiling, the limiter's own ceiling is lowered by
   the gap; if the last pass still goes over (six limiter passes in all, at most), a static
   trim makes sure nothing leaves above the ceiling by either reading.

:func:`master` is pure: array in, array out, with a JSON-ready report.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage
import scipy.signal
from numpy.typing import NDArray

from realtime.dsp.effects import Compressor, Equalizer, Limiter
from realtime.dsp.filters import Band
from realtime.dsp.meters import LoudnessMeter, TruePeakMeter

__all__ = ["MasterResult", "master", "measure_true_peak_db"]

Progress = Callable[[float], None]
Cancelled = Callable[[], bool]

MIN_SECONDS = 0.4  # one BS.1770 gating block: below it integrated loudness is undefined
SILENCE_LUFS = -70.0  # BS.1770's absolute gate
HIGHPASS_HZ = 30.0
# 4th-order Butterworth as two biquads: Q = 1 / (2 cos(π(2k + 1) / 8)), k = 0, 1.
HIGHPASS_QS = (0.5411961001461969, 1.3065629648763766)
EQ_LIMIT_DB = 6.0
EQ_LOW_HZ = 25.0  # the curve is 0 dB below here (the high-pass owns that range) ...
EQ_FULL_HZ = 50.0  # ... and reaches its full value from here up
GLUE_RATIO = 2.0
GLUE_ATTACK_MS = 30.0
GLUE_RELEASE_MS = 300.0
GLUE_KNEE_DB = 6.0
GLUE_RMS_MS = 50.0
GLUE_BELOW_LOUD_DB = 3.0
LIMITER_LOOKAHEAD_MS = 5.0
LIMITER_RELEASE_MS = 100.0
LOUDNESS_AIM_LU = 0.1
LOUDNESS_TOLERANCE_LU = 0.2
MAX_PASSES = 6
# The limiter holds its own BS.1770 reading at its ceiling up to float32 rounding (~1e-6 dB);
# aiming this far under keeps that reading under the true ceiling, and covers the final trim.
CEILING_MARGIN_DB = 0.002
# Where the independent interpolator comes within this of the ceiling, compare it with the
# limiter's (BS.1770) reading, on up to GAP_BLOCKS stretches of GAP_BLOCK frames per channel.
GAP_NEAR_DB = 0.5
GAP_BLOCK = 64
GAP_BLOCKS = 2000
CHUNK = 1 << 18
REPORT_FREQS = (31.5, 63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)


@dataclass(frozen=True)
class MasterResult:
    """The mastered audio (same shape as the input, float32) and what was done to it."""

    audio: NDArray[np.float32]
    report: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {rate!r}")
    if not 8000 <= int(rate) <= 384000:
        raise ValueError(f"{name} must be within [8000, 384000] Hz, got {rate}")
    return int(rate)


def _check_audio(name: str, audio: object, rate: int) -> NDArray[np.float32]:
    """(channels, frames) float32, a fresh C-contiguous copy."""
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(audio).__name__}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"{name} must be floating point (float32), got {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[np.newaxis, :]
    elif audio.ndim != 2:
        raise ValueError(f"{name} must be shaped (frames,) or (channels, frames), got shape {audio.shape}")
    channels, frames = audio.shape
    if not 1 <= channels <= 16:
        hint = " (frames, channels? transpose it)" if frames <= 16 < channels else ""
        raise ValueError(
            f"{name} must be shaped (channels, frames) with 1-16 channels, got {audio.shape}{hint}"
        )
    if frames < MIN_SECONDS * rate:
        raise ValueError(
            f"{name} is too short: {frames / rate:.3f} s; loudness needs at least {MIN_SECONDS} s"
        )
    if not np.isfinite(audio).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return np.array(audio, dtype=np.float32, order="C", copy=True)


def _check_level(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be within [{lo}, {hi}], got {value}")
    return float(value)


class _Job:
    """Progress and cancellation across the stages of one call."""

    def __init__(self, progress: Progress | None, cancelled: Cancelled | None) -> None:
        self._progress = progress
        self._cancelled = cancelled

    def check(self) -> None:
        if self._cancelled is not None and self._cancelled():
            raise concurrent.futures.CancelledError("mastering cancelled")

    def report(self, fraction: float) -> None:
        if self._progress is not None:
            self._progress(min(1.0, fraction))


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------


def _chunks(frames: int) -> range:
    return range(0, frames, CHUNK)


def _loudness(x: NDArray[np.float32], rate: int) -> float:
    meter = LoudnessMeter(x.shape[0], rate)
    for a in _chunks(x.shape[1]):
        meter.feed(np.ascontiguousarray(x[:, a : a + CHUNK]))
    return meter.integrated


def _bs1770_true_peak_db(x: NDArray[np.float32]) -> float:
    meter = TruePeakMeter(x.shape[0])
    for a in _chunks(x.shape[1]):
        meter.feed(np.ascontiguousarray(x[:, a : a + CHUNK]))
    return meter.true_peak_db


def measure_true_peak_db(audio: NDArray[np.float32]) -> float:
    """Largest sample or 4x-interpolated value (``scipy.signal.resample_poly``) in dBTP.

    An interpolator independent of the limiter's own BS.1770 filter (its Kaiser FIR reads a
    little higher on bright transients), run one channel at a time (faster than along an axis).
    """
    x = audio[np.newaxis, :] if audio.ndim == 1 else audio
    return _independent_peak(x, math.inf)[0]


def _independent_peak(x: NDArray[np.float32], near_db: float) -> tuple[float, float]:
    """:func:`measure_true_peak_db` of (channels, frames) ``x``, and by how much it reads higher
    than the BS.1770 interpolator where it comes near the ceiling (above ``near_db``).

    The gap (dB, the largest found; 0 if none) says how far under the ceiling the limiter,
    which sees the BS.1770 values, must hold them. It is measured on 64-frame stretches that
    come above ``near_db`` (the :data:`GAP_BLOCKS` highest of them), each read by the BS.1770
    meter with 32 frames of lead-in.
    """
    near = 10.0 ** (near_db / 20.0) if math.isfinite(near_db) else math.inf
    peak = float(np.abs(x).max(initial=0.0))
    gap = 0.0
    span = 4 * GAP_BLOCK
    for c, channel in enumerate(x):
        upsampled = scipy.signal.resample_poly(channel, 4, 1)
        np.abs(upsampled, out=upsampled)
        channel_peak = float(upsampled.max(initial=0.0))
        peak = max(peak, channel_peak)
        if not channel_peak > near:
            continue
        whole = upsampled.shape[0] // span * span
        block_max = upsampled[:whole].reshape(-1, span).max(axis=1)
        if whole < upsampled.shape[0]:
            block_max = np.append(block_max, upsampled[whole:].max())
        candidates = np.flatnonzero(block_max > near)
        if candidates.size > GAP_BLOCKS:
            candidates = candidates[np.argpartition(block_max[candidates], -GAP_BLOCKS)[-GAP_BLOCKS:]]
        for k in candidates:
            a = int(k) * GAP_BLOCK
            stretch = np.ascontiguousarray(x[c : c + 1, max(0, a - 32) : a + GAP_BLOCK + 12])
            meter = TruePeakMeter(1)
            meter.feed(stretch)
            gap = max(gap, 20.0 * math.log10(float(block_max[k])) - meter.true_peak_db)
    return (20.0 * math.log10(peak) if peak > 0.0 else -math.inf), gap


def _peak_db(audio: NDArray[np.float32]) -> float:
    """The higher of the two true-peak readings: the guarantee holds for both interpolators."""
    return max(measure_true_peak_db(audio), _bs1770_true_peak_db(audio))


def _db(value: float) -> float | None:
    """A level for the report: rounded, ``None`` for -inf."""
    return round(value, 3) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------


def _run(effect: Equalizer | Compressor, x: NDArray[np.float32]) -> tuple[float, float]:
    """``effect`` over ``x`` in place, chunk by chunk (its state carries across them).

    For a compressor, also its deepest and its mean gain reduction (dB); (0, 0) otherwise.
    """
    deepest = total = 0.0
    for a in _chunks(x.shape[1]):
        block = np.ascontiguousarray(x[:, a : a + CHUNK])
        effect.process(block)
        x[:, a : a + CHUNK] = block
        if isinstance(effect, Compressor):
            gains = effect.last_gain_db
            deepest = max(deepest, float(-gains.min(initial=0.0)))
            total -= float(gains.sum())
    return deepest, total / x.shape[1]


def _highpass(x: NDArray[np.float32], rate: int) -> None:
    bands = [Band("highpass", HIGHPASS_HZ, q=q) for q in HIGHPASS_QS]
    _run(Equalizer(bands, x.shape[0], rate), x)


def _mid_spectrum(x: NDArray[np.float32], rate: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Welch power spectrum of the mid channel (mean of the channels): (freqs, power)."""
    mid = x.mean(axis=0, dtype=np.float64)
    nperseg = min(1 << max(8, round(math.log2(rate / 10))), mid.shape[0])
    freqs, power = scipy.signal.welch(
        mid, fs=rate, window="hann", nperseg=nperseg, detrend=False, scaling="density"
    )
    return freqs, power


def _band_levels(
    freqs: NDArray[np.float64], power: NDArray[np.float64], centres: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Mean power (dB) in third-octave bands around ``centres``, from a linear-frequency spectrum.

    Integrates the spectrum (cumulative trapezoid) and differences it at the band edges, so
    bands narrower than a bin (the lowest ones) interpolate instead of coming out empty.
    """
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (power[1:] + power[:-1]) * np.diff(freqs))])
    lo = centres * 2.0 ** (-1 / 6)
    hi = centres * 2.0 ** (1 / 6)
    energy = np.interp(hi, freqs, cumulative) - np.interp(lo, freqs, cumulative)
    mean = np.maximum(energy / (hi - lo), 1e-30)
    out: NDArray[np.float64] = 10.0 * np.log10(mean)
    return out


def _match_curve(
    target: NDArray[np.float32], rate: int, reference: NDArray[np.float32], reference_rate: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The EQ that moves ``target``'s tonal balance toward ``reference``'s: (grid Hz, gain dB)."""
    top = min(20000.0, 0.45 * rate, 0.45 * reference_rate)
    grid = EQ_LOW_HZ * 2.0 ** (np.arange(0.0, math.log2(top / EQ_LOW_HZ), 1 / 12))
    t_freqs, t_power = _mid_spectrum(target, rate)
    r_freqs, r_power = _mid_spectrum(reference, reference_rate)
    ratio = _band_levels(r_freqs, r_power, grid) - _band_levels(t_freqs, t_power, grid)
    # Only the shape matters (loudness is normalized later): centre it on the musical range.
    musical = (grid >= 50.0) & (grid <= 16000.0)
    ratio -= ratio[musical].mean()
    ratio = np.clip(ratio, -EQ_LIMIT_DB, EQ_LIMIT_DB)
    ratio = scipy.ndimage.gaussian_filter1d(ratio, sigma=2.0, mode="nearest")  # 1/6 octave
    fade = np.clip(np.log2(grid / EQ_LOW_HZ) / math.log2(EQ_FULL_HZ / EQ_LOW_HZ), 0.0, 1.0)
    curve = np.clip(ratio * fade, -EQ_LIMIT_DB, EQ_LIMIT_DB)
    return grid, curve


def _apply_curve(
    x: NDArray[np.float32], rate: int, grid: NDArray[np.float64], curve: NDArray[np.float64]
) -> NDArray[np.float32]:
    """``x`` through a linear-phase FIR with the magnitude ``curve`` (dB at ``grid``), aligned."""
    numtaps = (1 << max(8, math.ceil(math.log2(rate / 10)))) + 1  # ~10 Hz resolution, odd (type I)
    nyquist = rate / 2.0
    freqs = np.concatenate([[0.0], grid, [nyquist]])
    gains_db = np.concatenate([[0.0], curve, [curve[-1]]])
    taps = scipy.signal.firwin2(numtaps, freqs, 10.0 ** (gains_db / 20.0), fs=rate).astype(np.float32)
    delay = (numtaps - 1) // 2
    out = scipy.signal.oaconvolve(x, taps[np.newaxis, :], mode="full", axes=1)
    return np.ascontiguousarray(out[:, delay : delay + x.shape[1]], dtype=np.float32)


def _glue(x: NDArray[np.float32], rate: int) -> dict[str, Any]:
    """The glue compressor in place; its threshold follows the mix's loud passages."""
    block = max(1, round(0.4 * rate))
    usable = x.shape[1] // block * block
    if usable:
        squares = (x[:, :usable].astype(np.float64) ** 2).reshape(x.shape[0], -1, block).mean(axis=2)
        levels = 10.0 * np.log10(np.maximum(squares.max(axis=0), 1e-12))
        loud = float(np.percentile(levels[levels > -70.0], 90)) if (levels > -70.0).any() else -70.0
    else:
        loud = -70.0
    threshold = float(np.clip(loud - GLUE_BELOW_LOUD_DB, -60.0, 0.0))
    compressor = Compressor(
        x.shape[0],
        rate,
        threshold_db=threshold,
        ratio=GLUE_RATIO,
        attack_ms=GLUE_ATTACK_MS,
        release_ms=GLUE_RELEASE_MS,
        knee_db=GLUE_KNEE_DB,
        detector="rms",
        rms_ms=GLUE_RMS_MS,
    )
    deepest, mean = _run(compressor, x)
    return {
        "threshold_db": round(threshold, 2),
        "ratio": GLUE_RATIO,
        "attack_ms": GLUE_ATTACK_MS,
        "release_ms": GLUE_RELEASE_MS,
        "knee_db": GLUE_KNEE_DB,
        "detector": "rms",
        "rms_ms": GLUE_RMS_MS,
        "makeup_db": 0.0,
        "max_reduction_db": round(deepest, 2),
        "mean_reduction_db": round(mean, 2),
    }


def _limit(
    x: NDArray[np.float32], rate: int, gain_db: float, ceiling_db: float
) -> tuple[NDArray[np.float32], float]:
    """``x`` · gain through the true-peak limiter, latency removed; and its deepest reduction (dB)."""
    limiter = Limiter(
        x.shape[0],
        rate,
        ceiling_db=ceiling_db,
        lookahead_ms=LIMITER_LOOKAHEAD_MS,
        release_ms=LIMITER_RELEASE_MS,
        true_peak=True,
    )
    latency = limiter.latency
    frames = x.shape[1]
    gain = np.float32(10.0 ** (gain_db / 20.0))
    out = np.empty((x.shape[0], frames + latency), dtype=np.float32)
    padded_end = frames + latency
    lowest = 1.0
    for a in range(0, padded_end, CHUNK):
        b = min(a + CHUNK, padded_end)
        block = np.zeros((x.shape[0], b - a), dtype=np.float32)
        if a < frames:
            np.multiply(x[:, a : min(b, frames)], gain, out=block[:, : min(b, frames) - a])
        limiter.process(block)
        out[:, a:b] = block
        lowest = min(lowest, float(limiter.last_gain.min(initial=1.0)))
    reduction = max(0.0, -20.0 * math.log10(lowest)) if lowest > 0.0 else math.inf
    return np.ascontiguousarray(out[:, latency:]), reduction


# --------------------------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------------------------


def master(
    audio: NDArray[np.floating[Any]],
    sample_rate: int,
    *,
    target_lufs: float = -14.0,
    true_peak_db: float = -1.0,
    reference: NDArray[np.floating[Any]] | None = None,
    reference_sample_rate: int | None = None,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> MasterResult:
    """Master ``audio`` ((frames,) or (channels, frames), float) to ``target_lufs`` integrated
    loudness with true peaks at or under ``true_peak_db`` dBTP.

    ``reference`` (any channel count, at ``reference_sample_rate``, default ``sample_rate``)
    turns on tonal matching. ``progress(fraction)`` is called between stages and limiter
    passes; ``cancelled()`` is polled there and, once true, the call raises
    ``concurrent.futures.CancelledError``. Input shorter than 0.4 s, silent (under -70 LUFS),
    with NaN/inf samples or of the wrong type or shape raises ``ValueError``/``TypeError``.
    The result has the input's shape and a report::

        {input_lufs, output_lufs, output_true_peak_db, gain_db, target_lufs, true_peak_ceiling_db,
         loudness_within_tolerance, eq: {highpass_hz, mode, curve: [{freq_hz, gain_db}]},
         compressor: {threshold_db, ratio, attack_ms, release_ms, knee_db, detector, rms_ms,
         makeup_db, max_reduction_db, mean_reduction_db}, limiter: {ceiling_db, lookahead_ms,
         release_ms, max_reduction_db, trim_db}, passes, reference_matched, reference_lufs}
    """
    rate = _check_rate("sample_rate", sample_rate)
    target = _check_level("target_lufs", target_lufs, -60.0, 0.0)
    ceiling = _check_level("true_peak_db", true_peak_db, -30.0, 0.0)
    x = _check_audio("audio", audio, rate)
    ref: NDArray[np.float32] | None = None
    ref_rate = rate
    if reference is not None:
        ref_rate = (
            rate
            if reference_sample_rate is None
            else _check_rate("reference_sample_rate", reference_sample_rate)
        )
        ref = _check_audio("reference", reference, ref_rate)
    elif reference_sample_rate is not None:
        raise ValueError("reference_sample_rate given without a reference")
    job = _Job(progress, cancelled)
    job.check()

    input_lufs = _loudness(x, rate)
    if not input_lufs > SILENCE_LUFS:
        raise ValueError(
            f"audio is silent (integrated loudness {input_lufs:.1f} LUFS, under {SILENCE_LUFS} LUFS)"
        )
    reference_lufs: float | None = None
    if ref is not None:
        reference_lufs = _loudness(ref, ref_rate)
        if not reference_lufs > SILENCE_LUFS:
            raise ValueError(f"reference is silent (integrated loudness under {SILENCE_LUFS} LUFS)")
    job.report(0.05)
    job.check()

    _highpass(x, rate)
    eq: dict[str, Any] = {"highpass_hz": HIGHPASS_HZ, "mode": "none", "curve": []}
    if ref is not None:
        grid, curve = _match_curve(x, rate, ref, ref_rate)
        x = _apply_curve(x, rate, grid, curve)
        eq["mode"] = "reference"
        eq["curve"] = [
            {"freq_hz": f, "gain_db": round(float(np.interp(f, grid, curve)), 2)}
            for f in REPORT_FREQS
            if f < grid[-1]
        ]
    job.report(0.15)
    job.check()

    compressor = _glue(x, rate)
    pre_lufs = _loudness(x, rate)
    job.report(0.25)

    # Gain → limit → measure, with a secant step: the limiter flattens loudness vs. gain.
    gain_db = target - pre_lufs
    limiter_ceiling = ceiling - CEILING_MARGIN_DB
    slope = 1.0
    last: tuple[float, float] | None = None  # (gain, loudness) of the previous pass, same ceiling
    passes = 0
    while True:
        job.check()
        y, reduction = _limit(x, rate, gain_db, limiter_ceiling)
        out_lufs = _loudness(y, rate)
        passes += 1
        job.report(0.25 + 0.7 * passes / MAX_PASSES)
        if last is not None and abs(gain_db - last[0]) > 1e-6:
            slope = float(np.clip((out_lufs - last[1]) / (gain_db - last[0]), 0.1, 1.0))
        error = target - out_lufs
        converged = abs(error) <= LOUDNESS_AIM_LU
        final = converged or passes >= MAX_PASSES
        # The limiter holds its own (BS.1770) reading under its ceiling by construction; the
        # independent interpolator reads higher on bright transients. Checked on the last pass,
        # and on the first when the limiter works (so the ceiling is right before the gain is).
        if final or (passes == 1 and reduction > 0.0):
            job.check()
            peak, gap = _independent_peak(y, ceiling - GAP_NEAR_DB)
            # Hold the limiter that much lower where the readings part.
            wanted = min(limiter_ceiling, ceiling - CEILING_MARGIN_DB - gap - (0.01 if gap else 0.0))
            if peak > ceiling and passes < MAX_PASSES:
                limiter_ceiling = min(wanted, limiter_ceiling - (peak - ceiling) - 0.01)
                last = None  # another ceiling: the next secant starts afresh; the slope still holds
                if not converged:
                    gain_db += error / slope
                continue
            if final:
                break
            if wanted < limiter_ceiling:  # no over yet, but the gain is about to rise
                limiter_ceiling = wanted
                last = None
        last = (gain_db, out_lufs)
        gain_db += error / slope

    peak = max(peak, _bs1770_true_peak_db(y))
    trim_db = 0.0
    if peak > ceiling:  # last resort, exact because interpolation is linear
        trim_db = ceiling - peak - CEILING_MARGIN_DB
        y *= np.float32(10.0 ** (trim_db / 20.0))
        gain_db += trim_db
        peak = _peak_db(y)
        out_lufs = _loudness(y, rate)
    job.report(0.98)

    report: dict[str, Any] = {
        "input_lufs": _db(input_lufs),
        "output_lufs": _db(out_lufs),
        "output_true_peak_db": _db(peak),
        "gain_db": round(gain_db, 3),
        "target_lufs": target,
        "true_peak_ceiling_db": ceiling,
        "loudness_within_tolerance": bool(abs(out_lufs - target) <= LOUDNESS_TOLERANCE_LU),
        "eq": eq,
        "compressor": compressor,
        "limiter": {
            "ceiling_db": round(limiter_ceiling, 3),
            "lookahead_ms": LIMITER_LOOKAHEAD_MS,
            "release_ms": LIMITER_RELEASE_MS,
            "max_reduction_db": _db(reduction),
            "trim_db": round(trim_db, 3),
        },
        "passes": passes,
        "reference_matched": ref is not None,
        "reference_lufs": None if reference_lufs is None else _db(reference_lufs),
    }
    result = y[0] if np.ndim(audio) == 1 else y
    job.report(1.0)
    return MasterResult(np.ascontiguousarray(result), report)
