from __future__ import annotations

import json
import math

import numpy as np
import pyloudnorm
import pytest
from scipy import signal

from realtime.dsp import kernels
from realtime.dsp.meters import LoudnessMeter, PeakRms, TrackMeter, TruePeakMeter

from .conftest import BLOCK_SIZES, CHANNELS, FS, blocks, db, random_blocks, sine, true_peak_reference


def pinkish(rng: np.random.Generator, channels: int, frames: int) -> np.ndarray:
    """White noise through a -3 dB/octave-ish filter (Paul Kellet's economy pink filter)."""
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1.0, -2.494956002, 2.017265875, -0.522189400]
    x = signal.lfilter(b, a, rng.standard_normal((channels, frames + 4800)), axis=1)[:, 4800:]
    return x / np.sqrt(np.mean(x**2))


def feed(meter: LoudnessMeter | TruePeakMeter | PeakRms, x: np.ndarray, size: int = 4096) -> None:
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    for s in blocks(x32.shape[1], size):
        meter.feed(np.ascontiguousarray(x32[:, s]))


def reference_lufs(x: np.ndarray, fs: int) -> float:
    return float(pyloudnorm.Meter(fs).integrated_loudness(x.astype(np.float32).astype(np.float64).T))


def _signals(rng: np.random.Generator, fs: int) -> dict[str, np.ndarray]:
    n = 10 * fs
    gaps = pinkish(rng, 2, n) * 10 ** (-18 / 20)
    gaps[:, 2 * fs : 4 * fs] = 0.0  # silence: below the absolute gate
    gaps[:, 6 * fs : 8 * fs] *= 10 ** (-25 / 20)  # quiet: below the relative gate
    return {
        "pink -10 dBFS stereo": pinkish(rng, 2, n) * 10 ** (-10 / 20),
        "pink -23 dBFS mono": pinkish(rng, 1, n) * 10 ** (-23 / 20),
        "pink -40 dBFS stereo": pinkish(rng, 2, n) * 10 ** (-40 / 20),
        "997 Hz sine -20 dBFS mono": sine(997.0, n, 0.1, fs=fs)[None],
        "pink with silence and quiet gaps": gaps,
        "stereo, channels 12 dB apart": pinkish(rng, 2, n)
        * np.array([[10 ** (-14 / 20)], [10 ** (-26 / 20)]]),
        "white noise -30 dBFS": 10 ** (-30 / 20) * rng.standard_normal((2, n)),
    }


@pytest.mark.parametrize("fs", [48000, 44100])
def test_integrated_loudness_matches_pyloudnorm(rng: np.random.Generator, fs: int) -> None:
    for name, x in _signals(rng, fs).items():
        meter = LoudnessMeter(x.shape[0], fs)
        feed(meter, x)
        expected = reference_lufs(x, fs)
        assert meter.integrated == pytest.approx(expected, abs=0.1), name


def test_sine_997_hz_reads_minus_23_lufs() -> None:
    """BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS; at -20 dBFS, -23.01."""
    x = sine(997.0, 5 * FS, 0.1)[None]
    meter = LoudnessMeter(1, FS)
    feed(meter, x)
    assert meter.integrated == pytest.approx(-23.01, abs=0.01)
    assert meter.momentary == pytest.approx(-23.01, abs=0.01)
    assert meter.short_term == pytest.approx(-23.01, abs=0.01)
    stereo = LoudnessMeter(2, FS)
    feed(stereo, np.vstack([x, x]))
    assert stereo.integrated == pytest.approx(-20.0, abs=0.01)  # two channels: +3 dB


def test_momentary_and_short_term_windows() -> None:
    x = np.zeros((1, 6 * FS))
    x[0, : 3 * FS] = sine(997.0, 3 * FS, 0.1)
    meter = LoudnessMeter(1, FS)
    feed(meter, x[:, : 3 * FS])
    assert meter.momentary == pytest.approx(-23.01, abs=0.01)
    assert meter.short_term == pytest.approx(-23.01, abs=0.01)
    feed(meter, x[:, 3 * FS : 3 * FS + FS // 5])  # 200 ms of silence: half the momentary window
    assert meter.momentary == pytest.approx(-23.01 - 3.01, abs=0.05)
    assert meter.short_term == pytest.approx(-23.01 + 10 * math.log10(28 / 30), abs=0.05)
    feed(meter, x[:, 3 * FS + FS // 5 :])
    assert meter.momentary < -120.0
    # the silence is gated out, but the blocks straddling the cut are not
    assert meter.integrated == pytest.approx(reference_lufs(x, FS), abs=0.1)
    assert -23.4 < meter.integrated < -23.01
    # 400 ms into a fresh meter the momentary window is full
    fresh = LoudnessMeter(1, FS)
    feed(fresh, x[:, : 2 * FS // 5])
    assert fresh.momentary == pytest.approx(-23.01, abs=0.05)
    assert len(fresh.blocks_lufs) == 1


def test_streaming_is_independent_of_block_sizes(rng: np.random.Generator) -> None:
    x = pinkish(rng, 2, 5 * FS) * 0.1
    readings = []
    for sizes in ([4096], [1], [120], None):
        meter = LoudnessMeter(2, FS)
        x32 = x.astype(np.float32)
        parts = random_blocks(x.shape[1], rng) if sizes is None else blocks(x.shape[1], sizes[0])
        for s in parts:
            meter.feed(np.ascontiguousarray(x32[:, s]))
        readings.append((meter.integrated, meter.momentary, meter.short_term))
    for r in readings[1:]:
        assert r == pytest.approx(readings[0], abs=1e-6)


def test_silence_and_validation() -> None:
    meter = LoudnessMeter(2, FS)
    assert meter.integrated == -math.inf
    assert meter.momentary == -math.inf
    feed(meter, np.zeros((2, FS)))
    assert meter.integrated == -math.inf
    with pytest.raises(ValueError, match="channel"):
        meter.feed(np.zeros((1, 10), np.float32))
    with pytest.raises(TypeError, match="float32"):
        meter.feed(np.zeros((2, 10)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel_weights"):
        LoudnessMeter(2, FS, channel_weights=[1.0])
    meter.reset()
    assert meter.integrated == -math.inf


def test_five_channel_weights(rng: np.random.Generator) -> None:
    x = pinkish(rng, 5, 4 * FS) * 0.05
    meter = LoudnessMeter(5, FS)
    feed(meter, x)
    assert meter.integrated == pytest.approx(reference_lufs(x, FS), abs=0.1)


# ------------------------------------------------------------------------------------------------
# True peak
# ------------------------------------------------------------------------------------------------


def test_true_peak_of_the_classic_inter_sample_sine() -> None:
    """Full-scale sine at fs/4, 45 degrees: samples at ±0.707 (-3.01 dBFS), true peak 0 dBTP."""
    x = sine(FS / 4, FS, 1.0, phase=math.pi / 4)[None]
    levels = PeakRms(1)
    feed(levels, x)
    assert levels.peak_db[0] == pytest.approx(-3.01, abs=0.01)
    meter = TruePeakMeter(1)
    feed(meter, x)
    assert meter.true_peak_db == pytest.approx(0.0, abs=0.1)  # the Annex 2 filter reads +0.08


@pytest.mark.parametrize("size", BLOCK_SIZES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_true_peak_matches_the_convolution_reference(
    rng: np.random.Generator, size: int, channels: int
) -> None:
    x = rng.standard_normal((channels, 3000)).astype(np.float32)
    meter = TruePeakMeter(channels)
    feed(meter, x, size)
    assert meter.true_peak == pytest.approx(true_peak_reference(x), rel=1e-9)
    per_channel = meter.true_peak_db_per_channel
    for c in range(channels):
        assert per_channel[c] == pytest.approx(db(true_peak_reference(x[c : c + 1])), abs=1e-9)


def test_true_peak_kernel_python_and_jit_agree(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 200)).astype(np.float32)
    peaks = []
    for fn in (kernels._true_peak, kernels.true_peak):
        hist = np.zeros((2, 16))
        pos = np.zeros(1, np.int64)
        peak = np.zeros(2)
        fn(x, hist, pos, kernels.TRUE_PEAK_TAPS, peak)
        peaks.append(peak)
    np.testing.assert_allclose(peaks[0], peaks[1], rtol=1e-12)
    assert float(peaks[0].max()) == pytest.approx(true_peak_reference(x), rel=1e-12)


def test_peak_rms() -> None:
    x = np.vstack([sine(1000.0, FS, 1.0), sine(1000.0, FS, 0.5)])
    levels = PeakRms(2)
    feed(levels, x, 333)
    np.testing.assert_allclose(levels.rms_db, [-3.0103, -9.0309], atol=1e-3)
    np.testing.assert_allclose(levels.peak_db, [0.0, -6.0206], atol=1e-3)
    levels.reset()
    assert np.all(levels.rms_db == -math.inf)
    assert np.all(levels.peak_db == -math.inf)


def test_track_meter_snapshot() -> None:
    meter = TrackMeter(2, FS)
    assert meter.snapshot()["momentary"] is None
    x = np.vstack([sine(997.0, FS, 0.1)] * 2).astype(np.float32)
    x.flags.writeable = False  # meters only read
    meter.feed(x)
    snap = meter.snapshot()
    json.dumps(snap, allow_nan=False)
    assert snap["momentary"] == pytest.approx(-20.0, abs=0.02)
    assert snap["peakDb"] == pytest.approx([-20.0, -20.0], abs=0.01)
    assert snap["truePeakDb"] == pytest.approx(-20.0, abs=0.02)
    assert np.all(meter.peak_db == -math.inf)  # the snapshot restarted the levels
    after = meter.snapshot()
    assert after["peakDb"] == [None, None]
    assert after["integrated"] == snap["integrated"]
