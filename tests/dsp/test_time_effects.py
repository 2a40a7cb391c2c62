from __future__ import annotations

import numpy as np
import pytest

from realtime.dsp import kernels
from realtime.dsp.effects import Delay, Reverb

from .conftest import BLOCK_SIZES, CHANNELS, FS, max_step, run_blocks, sine

# ------------------------------------------------------------------------------------------------
# Delay
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", BLOCK_SIZES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_delay_impulse_response(size: int, channels: int) -> None:
    x = np.zeros((channels, 3000), np.float32)
    x[:, 0] = 1.0
    delay = Delay(channels, FS, time_ms=10.0, feedback=0.5, mix=0.4)
    y = run_blocks(delay.process, x, size)
    expected = np.zeros(3000)
    expected[0] = 0.6
    for k in range(1, 7):
        expected[480 * k] = 0.4 * 0.5 ** (k - 1)
    for c in range(channels):
        np.testing.assert_allclose(y[c], expected, atol=1e-7)


def test_delay_kernel_python_and_jit_agree(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 300)).astype(np.float32)
    outs = []
    for fn in (kernels._delay, kernels.delay):
        y = x.copy()
        buf = np.zeros((2, 101), np.float32)
        pos = np.zeros(1, np.int64)
        fn(y, buf, pos, 37, 80, np.array([0.3, 0.6, 0.0]), np.array([0.5, 0.2, 1.0]), 150)
        outs.append((y, buf, pos))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # reference: a plain loop over a Python list
    y_ref = np.empty(300)
    ring = [0.0] * 101
    w = 0
    for n in range(300):
        f = min(1.0, (n + 1) / 150)
        mix, fb, t = 0.3 + 0.2 * f, 0.6 - 0.4 * f, f
        d = (1 - t) * ring[(w - 37) % 101] + t * ring[(w - 80) % 101]
        ring[w] = float(x[0, n]) + fb * d
        y_ref[n] = (1 - mix) * x[0, n] + mix * d
        w = (w + 1) % 101
    np.testing.assert_allclose(outs[0][0][0], y_ref, atol=1e-6)


def test_delay_time_change_crossfades() -> None:
    x = sine(440.0, 24000, 0.5)[None].astype(np.float32)
    delay = Delay(1, FS, time_ms=100.0, feedback=0.0, mix=1.0)
    changes = {4800: 130.0, 4920: 150.0}  # the second waits for the first crossfade

    def before(start: int) -> None:
        if start in changes:
            delay.set_params(time_ms=changes[start])

    y = run_blocks(delay.process, x, 120, before)
    steady = max_step(x)
    # a crossfade between two taps adds at most (2A / ramp) per sample to the sine's own step
    assert max_step(y[:, 4800:]) <= steady + 2 * 0.5 / 480 + 1e-6
    np.testing.assert_allclose(y[0, -5000:], x[0, -5000 - 7200 : -7200], atol=1e-6)  # 150 ms
    assert delay.time_ms == 150.0


def test_delay_reset_and_validation(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 2000)).astype(np.float32)
    delay = Delay(2, FS, time_ms=5.0)
    a = x.copy()
    delay.process(a)
    delay.reset()
    b = x.copy()
    delay.process(b)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="time_ms"):
        delay.set_params(time_ms=5000.0)
    with pytest.raises(ValueError, match="feedback"):
        delay.set_params(feedback=1.0)
    with pytest.raises(ValueError, match="max_time_ms is fixed"):
        delay.set_params(max_time_ms=10.0)
    with pytest.raises(ValueError, match="unknown delay parameter"):
        delay.set_params(time=3.0)


# ------------------------------------------------------------------------------------------------
# Reverb
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", CHANNELS)
def test_reverb_dry_only_is_identity(rng: np.random.Generator, channels: int) -> None:
    x = rng.standard_normal((channels, 5000)).astype(np.float32)
    y = run_blocks(Reverb(channels, FS, wet=0.0, dry=1.0).process, x, 120)
    np.testing.assert_array_equal(y, x)


def test_reverb_impulse_response_decays_and_is_stereo() -> None:
    frames = 4 * FS
    x = np.zeros((2, frames), np.float32)
    x[:, 0] = 1.0
    y = run_blocks(Reverb(2, FS, room_size=0.7, damping=0.3, wet=0.5, dry=0.0).process, x, 480)
    assert np.isfinite(y).all()
    energy = (y.astype(np.float64) ** 2).reshape(2, 40, -1).sum(axis=(0, 2))  # per 100 ms
    assert energy[1] > 0
    assert np.all(energy[2:] < energy[1:-1] * 1.05)  # decays (up to the comb beat)
    assert energy[-1] < 1e-6 * energy[1:3].max()
    correlation = np.corrcoef(y[0, : FS // 2], y[1, : FS // 2])[0, 1]
    assert abs(correlation) < 0.5  # decorrelated channels


def test_reverb_largest_room_is_stable() -> None:
    x = np.zeros((2, 10 * FS), np.float32)
    x[:, :4800] = np.random.default_rng(1).standard_normal((2, 4800))
    y = run_blocks(Reverb(2, FS, room_size=1.0, damping=0.0, wet=1.0, dry=0.0).process, x, 4096)
    assert np.isfinite(y).all()
    assert np.abs(y).max() < 10.0
    assert np.abs(y[:, -FS:]).max() < np.abs(y[:, FS : 2 * FS]).max()


def test_reverb_kernel_python_and_jit_agree(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 1400)).astype(np.float32)
    outs = []
    for fn in (kernels._freeverb, kernels.freeverb):
        rev = Reverb(2, 16000, wet=0.6, dry=0.5)  # short delay lines at 16 kHz: a tail within 1400 frames
        y = x.copy()
        p = np.array(rev._vector())
        fn(
            y, rev._comb_buf, rev._comb_len, rev._comb_idx, rev._comb_store, rev._ap_buf, rev._ap_len,
            rev._ap_idx, rev._wet_out, 0.015, p * 0.5, p, 100,
        )  # fmt: skip
        outs.append(y)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(outs[0][:, 600:], 0.5 * x[:, 600:])  # the wet tail is there


@pytest.mark.parametrize("channels", CHANNELS)
def test_reverb_blocks_do_not_matter(rng: np.random.Generator, channels: int) -> None:
    x = rng.standard_normal((channels, 6000)).astype(np.float32)
    outs = [run_blocks(Reverb(channels, FS).process, x, n) for n in BLOCK_SIZES]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_reverb_wet_change_is_smooth() -> None:
    x = sine(300.0, 24000, 0.5)[None].astype(np.float32)
    rev = Reverb(1, FS, wet=0.0, dry=1.0)
    y = run_blocks(rev.process, x, 120, lambda s: rev.set_params(dry=0.2) if s == 12000 else None)
    assert max_step(y) <= max_step(x) * 1.05 + 1e-4
    with pytest.raises(ValueError, match="room_size"):
        rev.set_params(room_size=1.5)


class _Comb:
    def __init__(self, length: int) -> None:
        self.buf = [0.0] * length
        self.i = 0
        self.store = 0.0

    def process(self, inp: float, feedback: float, damp: float) -> float:
        out = self.buf[self.i]
        self.store = out * (1 - damp) + self.store * damp
        self.buf[self.i] = inp + self.store * feedback
        self.i = (self.i + 1) % len(self.buf)
        return out


class _Allpass:
    def __init__(self, length: int) -> None:
        self.buf = [0.0] * length
        self.i = 0

    def process(self, inp: float) -> float:
        bufout = self.buf[self.i]
        self.buf[self.i] = inp + bufout * 0.5
        self.i = (self.i + 1) % len(self.buf)
        return bufout - inp


def test_reverb_matches_freeverb_reference(rng: np.random.Generator) -> None:
    """Mono at 44.1 kHz against a transcription of Freeverb's comb/allpass classes."""
    x = rng.standard_normal((1, 3000)).astype(np.float32)
    room, damping, wet, dry = 0.8, 0.3, 0.5, 0.7
    y = run_blocks(Reverb(1, 44100, room_size=room, damping=damping, wet=wet, dry=dry).process, x, 256)
    combs = [_Comb(n) for n in Reverb.COMBS]
    allpasses = [_Allpass(n) for n in Reverb.ALLPASSES]
    feedback, damp = room * 0.28 + 0.7, damping * 0.4
    expected = np.empty(3000)
    for n in range(3000):
        inp = float(x[0, n]) * 0.015 * 2
        acc = sum(c.process(inp, feedback, damp) for c in combs)
        for a in allpasses:
            acc = a.process(acc)
        expected[n] = dry * float(x[0, n]) + 3 * wet * acc
    np.testing.assert_allclose(y[0], expected, rtol=1e-5, atol=1e-6)
