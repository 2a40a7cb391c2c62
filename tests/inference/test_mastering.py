"""Mastering: loudness and true peak checked independently (pyloudnorm, 4x resample_poly)."""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
from numpy.typing import NDArray

from inference import mastering
from inference.mastering import MasterResult, master

SR = 44100


def mix(seconds: float, sr: int = SR, *, seed: int = 0, channels: int = 2) -> NDArray[np.float32]:
    """A small band: a kick every 0.5 s, noise hats on the off-beats, two alternating chords."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    x = np.zeros((2, n))
    for start in np.arange(0.0, seconds, 0.5):
        i = round(start * sr)
        t = np.arange(min(n - i, round(0.3 * sr))) / sr
        x[:, i : i + t.size] += 0.8 * np.sin(2 * np.pi * (50 + 80 * np.exp(-30 * t)) * t) * np.exp(-12 * t)
    hats = scipy.signal.butter(2, 6000, "highpass", fs=sr, output="sos")
    for start in np.arange(0.25, seconds, 0.5):
        i = round(start * sr)
        m = min(n - i, round(0.05 * sr))
        h = scipy.signal.sosfilt(hats, rng.standard_normal(m) * np.exp(-80 * np.arange(m) / sr))
        x[0, i : i + m] += 0.3 * h
        x[1, i : i + m] += 0.25 * h
    for j, start in enumerate(np.arange(0.0, seconds, 2.0)):
        i = round(start * sr)
        t = np.arange(min(n - i, 2 * sr)) / sr
        for pitch in (48, 55, 60, 64) if j % 2 == 0 else (45, 52, 57, 60):
            f = 440.0 * 2 ** ((pitch - 69) / 12)
            v = 0.15 * np.exp(-0.8 * t) * sum(0.5**k * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(6))
            x[0, i : i + t.size] += v
            x[1, i : i + t.size] += 0.9 * v
    out = x[:channels] if channels <= 2 else np.tile(x, (channels // 2 + 1, 1))[:channels]
    return out.astype(np.float32)


def lufs(audio: NDArray[np.float32], sr: int = SR) -> float:
    """pyloudnorm's BS.1770 integrated loudness; it takes (samples, channels)."""
    data = audio.astype(np.float64)
    return float(pyloudnorm.Meter(sr).integrated_loudness(data.T if data.ndim == 2 else data))


def true_peak(audio: NDArray[np.float32]) -> float:
    """dBTP by 4x oversampling with scipy's polyphase resampler (and the samples themselves)."""
    x = np.atleast_2d(audio).astype(np.float64)
    peak = max(float(np.abs(x).max()), float(np.abs(scipy.signal.resample_poly(x, 4, 1, axis=1)).max()))
    return 20 * math.log10(peak)


def at_loudness(audio: NDArray[np.float32], target: float) -> NDArray[np.float32]:
    return (audio * 10 ** ((target - lufs(audio)) / 20)).astype(np.float32)


def hot(audio: NDArray[np.float32], target: float) -> NDArray[np.float32]:
    """Driven into a hard clip at 0 dBFS until it measures ``target`` LUFS."""
    lo, hi = 0.0, 60.0
    for _ in range(40):
        drive = (lo + hi) / 2
        clipped = np.clip(audio * 10 ** (drive / 20), -1.0, 1.0).astype(np.float32)
        if lufs(clipped) < target:
            lo = drive
        else:
            hi = drive
    return clipped


def third_octave_shape(audio: NDArray[np.float32], sr: int = SR) -> NDArray[np.float64]:
    """Mid-channel spectrum in third-octave bands 63 Hz-12.5 kHz, in dB around its own mean."""
    mid = np.atleast_2d(audio).mean(axis=0)
    freqs, power = scipy.signal.welch(mid, fs=sr, nperseg=8192)
    centres = 1000 * 2.0 ** (np.arange(-12, 12) / 3)
    levels = np.array(
        [
            10 * np.log10(power[(freqs >= c * 2 ** (-1 / 6)) & (freqs < c * 2 ** (1 / 6))].mean())
            for c in centres
        ]
    )
    shape: NDArray[np.float64] = levels - levels.mean()
    return shape


def assert_delivered(result: MasterResult, target: float = -14.0, ceiling: float = -1.0) -> None:
    measured = lufs(result.audio)
    assert measured == pytest.approx(target, abs=0.5)
    assert true_peak(result.audio) <= ceiling
    assert result.audio.dtype == np.float32
    assert np.isfinite(result.audio).all()
    report = result.report
    assert report["output_lufs"] == pytest.approx(measured, abs=0.2)
    assert report["output_true_peak_db"] <= ceiling
    assert report["loudness_within_tolerance"] is True


def test_quiet_mix_is_brought_up() -> None:
    quiet = at_loudness(mix(12.0), -30.0)
    result = master(quiet, SR)
    assert_delivered(result)
    assert result.audio.shape == quiet.shape
    report = result.report
    assert report["input_lufs"] == pytest.approx(-30.0, abs=0.3)
    assert report["gain_db"] > 12.0
    assert report["reference_matched"] is False
    assert report["eq"]["mode"] == "none"
    assert 0.5 < report["compressor"]["max_reduction_db"] < 6.0
    assert report["compressor"]["ratio"] == 2.0


def test_hot_mix_is_brought_down_under_the_ceiling() -> None:
    loud = hot(mix(12.0, seed=1), -6.0)
    assert lufs(loud) == pytest.approx(-6.0, abs=0.1)
    assert float(np.abs(loud).max()) == 1.0  # peaks at 0 dBFS (and over it between samples)
    assert true_peak(loud) > 0.0
    result = master(loud, SR)
    assert_delivered(result)
    assert result.report["gain_db"] < -5.0


def test_mono_file_keeps_its_shape() -> None:
    mono = at_loudness(mix(10.0, seed=2, channels=1)[0], -24.0)
    assert mono.ndim == 1
    result = master(mono, SR)
    assert result.audio.shape == mono.shape
    assert_delivered(result)
    column = master(mono[np.newaxis, :], SR)
    assert column.audio.shape == (1, mono.shape[0])
    np.testing.assert_array_equal(column.audio[0], result.audio)


def test_other_rate_and_other_targets() -> None:
    audio = at_loudness(mix(8.0, 48000, seed=3), -20.0)
    result = master(audio.astype(np.float64), 48000, target_lufs=-16.0, true_peak_db=-2.0)  # type: ignore[arg-type]
    measured = float(pyloudnorm.Meter(48000).integrated_loudness(result.audio.T.astype(np.float64)))
    assert measured == pytest.approx(-16.0, abs=0.5)
    assert true_peak(result.audio) <= -2.0


def test_unreachable_target_still_respects_the_ceiling() -> None:
    sparse = at_loudness(mix(6.0, seed=4), -30.0)
    result = master(sparse, SR, target_lufs=-2.0, true_peak_db=-1.0)
    assert true_peak(result.audio) <= -1.0
    assert result.report["loudness_within_tolerance"] is False
    assert result.report["output_lufs"] < -2.5
    assert result.report["output_lufs"] == pytest.approx(lufs(result.audio), abs=0.2)


def test_reference_pulls_the_tonal_balance_toward_it() -> None:
    dull = at_loudness(mix(12.0, seed=5), -20.0)
    bright_sos = scipy.signal.butter(2, 3000, "highpass", fs=SR, output="sos")
    bright = mix(12.0, seed=6)
    # About +6 dB above 3 kHz: within the EQ's ±6 dB reach once the curve is centred.
    bright = (bright + scipy.signal.sosfilt(bright_sos, bright, axis=1)).astype(np.float32)
    bright = at_loudness(bright, -12.0)

    plain = master(dull, SR)
    matched = master(dull, SR, reference=bright)
    assert_delivered(matched)
    assert matched.report["reference_matched"] is True
    assert matched.report["reference_lufs"] == pytest.approx(-12.0, abs=0.3)
    curve = {band["freq_hz"]: band["gain_db"] for band in matched.report["eq"]["curve"]}
    assert curve[8000.0] > 2.0
    assert curve[125.0] < 0.0
    assert all(abs(g) <= 6.0 for g in curve.values())

    target = third_octave_shape(bright)
    before = np.abs(third_octave_shape(plain.audio) - target).mean()
    after = np.abs(third_octave_shape(matched.audio) - target).mean()
    assert after < 0.6 * before, (before, after)
    # A mono reference at another rate is matched the same way.
    mono_ref = scipy.signal.resample_poly(bright.mean(axis=0), 160, 147).astype(np.float32)
    other = master(dull, SR, reference=mono_ref, reference_sample_rate=48000)
    assert np.abs(third_octave_shape(other.audio) - target).mean() < 0.6 * before


def test_ceiling_holds_when_the_passes_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """One limiter pass only: no second try with a lower ceiling, so the final trim must act."""
    bright_sos = scipy.signal.butter(2, 3000, "highpass", fs=SR, output="sos")
    bright = mix(6.0, seed=7)
    bright = at_loudness(
        (bright + 2 * scipy.signal.sosfilt(bright_sos, bright, axis=1)).astype(np.float32), -30
    )
    full = master(bright, SR)
    assert full.report["limiter"]["ceiling_db"] < -1.05  # the independent check did lower it
    monkeypatch.setattr(mastering, "MAX_PASSES", 1)
    result = master(bright, SR)
    assert result.report["passes"] == 1
    assert result.report["limiter"]["trim_db"] < 0.0
    assert true_peak(result.audio) <= -1.0
    assert result.report["output_true_peak_db"] <= -1.0


def test_progress_and_cancellation() -> None:
    audio = at_loudness(mix(4.0), -25.0)
    seen: list[float] = []
    master(audio, SR, progress=seen.append)
    assert len(seen) >= 5
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    with pytest.raises(concurrent.futures.CancelledError):
        master(audio, SR, cancelled=lambda: True)
    calls: list[float] = []
    with pytest.raises(concurrent.futures.CancelledError):
        master(audio, SR, progress=calls.append, cancelled=lambda: len(calls) >= 3)
    assert len(calls) == 3


def test_input_is_not_modified() -> None:
    audio = at_loudness(mix(3.0), -25.0)
    copy = audio.copy()
    master(audio, SR)
    np.testing.assert_array_equal(audio, copy)


@pytest.mark.parametrize(
    ("audio", "error", "match"),
    [
        (np.zeros((2, SR), np.float32), ValueError, "silent"),
        (np.full((2, SR), 1e-6, np.float32), ValueError, "silent"),
        (np.ones((2, round(0.39 * SR)), np.float32) * 0.1, ValueError, "too short"),
        (np.zeros((2, 0), np.float32), ValueError, "too short"),
        (np.full((2, SR), np.nan, np.float32), ValueError, "NaN"),
        (np.zeros((1, 2, SR), np.float32), ValueError, "shaped"),
        (np.zeros((SR, 2), np.float32), ValueError, "transpose"),
        (np.zeros(SR, np.int16), TypeError, "floating"),
        ([0.1] * SR, TypeError, "numpy array"),
    ],
)
def test_bad_audio_is_rejected(audio: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        master(audio, SR)  # type: ignore[arg-type]


def test_bad_settings_are_rejected() -> None:
    audio = at_loudness(mix(1.0), -20.0)
    with pytest.raises(ValueError, match="target_lufs"):
        master(audio, SR, target_lufs=float("nan"))
    with pytest.raises(ValueError, match="target_lufs"):
        master(audio, SR, target_lufs=3.0)
    with pytest.raises(ValueError, match="true_peak_db"):
        master(audio, SR, true_peak_db=0.5)
    with pytest.raises(ValueError, match="sample_rate"):
        master(audio, 1000)
    with pytest.raises(TypeError, match="sample_rate"):
        master(audio, 44100.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference is silent"):
        master(audio, SR, reference=np.zeros((2, SR), np.float32))
    with pytest.raises(ValueError, match="reference is too short"):
        master(audio, SR, reference=audio[:, :100])
    with pytest.raises(ValueError, match="reference contains NaN"):
        master(audio, SR, reference=np.full(SR, np.inf, np.float32))
    with pytest.raises(ValueError, match="without a reference"):
        master(audio, SR, reference_sample_rate=48000)
