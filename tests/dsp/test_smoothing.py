from __future__ import annotations

import numpy as np
import pytest

from realtime.dsp import kernels
from realtime.dsp.smoothing import (
    Ramp,
    SmoothedGain,
    SmoothedGainPan,
    SmoothedPan,
    apply_gain_ramp,
    ramp_samples,
)
from realtime.dsp.units import db_to_gain, pan_gains

from .conftest import BLOCK_SIZES, CHANNELS, FS, max_step, random_blocks, run_blocks, sine


def _reference_ramp(frames: int, g0: float, g1: float, ramp_len: int) -> np.ndarray:
    n = np.arange(frames)
    g = np.full(frames, g1, dtype=np.float64)
    if ramp_len:
        head = n < ramp_len
        g[head] = g0 + (g1 - g0) * (n[head] + 1) / ramp_len
    return g


@pytest.mark.parametrize("size", BLOCK_SIZES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("ramp_len", [0, 1, 50, 2000])
def test_gain_ramp_kernel(rng: np.random.Generator, size: int, channels: int, ramp_len: int) -> None:
    x = rng.standard_normal((channels, size)).astype(np.float32)
    g0 = rng.uniform(0.0, 2.0, channels)
    g1 = rng.uniform(0.0, 2.0, channels)
    ref = np.stack([x[c] * _reference_ramp(size, g0[c], g1[c], ramp_len) for c in range(channels)])
    y_jit = apply_gain_ramp(x.copy(), g0, g1, ramp_len)
    np.testing.assert_allclose(y_jit, ref, rtol=1e-6, atol=1e-7)
    if size <= 120:
        y_py = x.copy()
        kernels._apply_gain_ramp(y_py, g0, g1, ramp_len)
        np.testing.assert_array_equal(y_py, y_jit)


def test_gain_ramp_validation() -> None:
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="ramp_len"):
        apply_gain_ramp(x, 1.0, 1.0, -1)
    with pytest.raises(ValueError, match="finite"):
        apply_gain_ramp(x, np.nan, 1.0, 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        apply_gain_ramp(np.zeros((8, 2), np.float32).T, 1.0, 1.0, 4)


def test_ramp_is_identical_however_blocks_fall(rng: np.random.Generator) -> None:
    """A ramp spanning many blocks yields exactly the one-piece linear ramp."""
    total, length = 3000, 480
    ramp = Ramp([0.25, -1.0], length)
    ramp.set_target([1.0, 3.0])
    values = np.empty((total, 2))
    for s in random_blocks(total, rng, high=200):
        start, end, k = ramp.advance(s.stop - s.start)
        n = np.arange(s.stop - s.start)
        frac = np.where(n < k, (n + 1) / max(k, 1), 1.0)[:, None]
        values[s] = start + (end - start) * frac
    expected = np.stack(
        [_reference_ramp(total, 0.25, 1.0, length), _reference_ramp(total, -1.0, 3.0, length)], 1
    )
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert not ramp.ramping
    assert list(ramp.value) == [1.0, 3.0]


def test_ramp_retarget_midway_starts_from_current_value() -> None:
    ramp = Ramp([0.0], 100)
    ramp.set_target([1.0])
    ramp.advance(50)
    assert ramp.value[0] == pytest.approx(0.5)
    ramp.set_target([0.0])
    start, end, k = ramp.advance(100)
    assert (start[0], end[0], k) == (pytest.approx(0.5), 0.0, 100)
    ramp.jump([2.0])
    assert not ramp.ramping
    assert ramp.value[0] == 2.0


def test_ramp_samples() -> None:
    assert ramp_samples(10.0, 48000) == 480
    assert ramp_samples(0.0, 48000) == 0
    with pytest.raises(ValueError, match="ramp_ms"):
        ramp_samples(-1.0, 48000)


def _steady_step(freq: float, amplitude: float) -> float:
    """max |Δ| of a steady sine: 2A·sin(πf/fs)."""
    return 2.0 * amplitude * float(np.sin(np.pi * freq / FS))


@pytest.mark.parametrize("size", [64, 120, 1000])
@pytest.mark.parametrize(("g0", "g1"), [(-12.0, 0.0), (0.0, -30.0), (-144.0, 0.0)])
def test_gain_step_is_click_free(size: int, g0: float, g1: float) -> None:
    freq, amp = 437.0, 0.5
    x = np.stack([sine(freq, 12000, amp)] * 2).astype(np.float32)
    bound = _steady_step(freq, amp * max(db_to_gain(g0), db_to_gain(g1))) * 1.05 + 1e-4
    change_at = 2 * 1200  # a block boundary for every size above, where |sine| is far from 0
    assert abs(x[0, change_at]) > 0.3

    def run(ramp_ms: float) -> np.ndarray:
        gain = SmoothedGain(2, FS, g0, ramp_ms=ramp_ms)

        def before(start: int) -> None:
            if start <= change_at < start + size:
                gain.set_gain_db(g1)

        return run_blocks(gain.process, x, size, before)

    smooth = run(10.0)
    assert max_step(smooth) <= bound
    assert max_step(run(0.0)) > bound  # a hard switch does click
    # the target is reached 10 ms after the change and held
    settled = smooth[:, change_at + size + 480 :]
    np.testing.assert_allclose(settled, x[:, change_at + size + 480 :] * db_to_gain(g1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("p0", "p1"), [(-1.0, 1.0), (0.0, 1.0), (0.7, -0.3)])
def test_pan_step_is_click_free(p0: float, p1: float) -> None:
    freq, amp, size = 437.0, 0.5, 120
    x = np.stack([sine(freq, 9600, amp)] * 2).astype(np.float32)
    bound = _steady_step(freq, amp) * 1.05 + 1e-4
    change_at = 2400

    def run(ramp_ms: float) -> np.ndarray:
        pan = SmoothedPan(FS, p0, ramp_ms=ramp_ms)
        return run_blocks(pan.process, x, size, lambda s: pan.set_pan(p1) if s == change_at else None)

    smooth = run(10.0)
    assert max_step(smooth) <= bound
    assert max_step(run(0.0)) > bound
    left, right = pan_gains(p1)
    np.testing.assert_allclose(smooth[0, -1000:], x[0, -1000:] * left, atol=1e-6)
    np.testing.assert_allclose(smooth[1, -1000:], x[1, -1000:] * right, atol=1e-6)


def test_gain_pan_strip_reaches_targets() -> None:
    strip = SmoothedGainPan(FS, gain_db=-6.0, pan=-0.5)
    x = np.ones((2, 2000), np.float32)
    strip.set(gain_db=0.0, pan=0.5)
    assert strip.ramping
    strip.process(x)
    assert not strip.ramping
    left, right = pan_gains(0.5)
    np.testing.assert_allclose(x[:, -1], [left, right], rtol=1e-6)
    lg0, rg0 = pan_gains(-0.5)
    g0 = db_to_gain(-6.0)
    # frame 0 is one step into the ramp from the old pair
    assert x[0, 0] == pytest.approx(g0 * lg0 + (left - g0 * lg0) / 480, rel=1e-5)
    assert x[1, 0] == pytest.approx(g0 * rg0 + (right - g0 * rg0) / 480, rel=1e-5)


def test_smoothed_validation() -> None:
    with pytest.raises(ValueError, match="pan"):
        SmoothedPan(FS, pan=2.0)
    with pytest.raises(ValueError, match="channel"):
        SmoothedGain(2, FS).process(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="48"):
        SmoothedGain(1, FS).set_gain_db(60.0)
    with pytest.raises(ValueError, match="channels"):
        SmoothedGain(0, FS)
