from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np
import pytest
from scipy import signal

from realtime.dsp import kernels
from realtime.dsp.effects import Compressor, Limiter, LimiterBank, static_gain_db
from realtime.dsp.meters import TruePeakMeter

from . import _reference
from .conftest import BLOCK_SIZES, CHANNELS, FS, db, random_blocks, run_blocks, sine, true_peak_reference

# ------------------------------------------------------------------------------------------------
# log2 / exp2
# ------------------------------------------------------------------------------------------------


def test_log2_and_exp2_against_libm(rng: np.random.Generator) -> None:
    values = np.concatenate(
        [np.logspace(-300, 300, 2001), rng.uniform(1e-6, 4.0, 2000), [2.0**-1022, 0.5, 1.0, 2.0, 1e-30]]
    )
    for v in values:
        assert kernels.log2(v) == pytest.approx(math.log2(v), abs=2e-13)
        assert kernels._log2(v) == kernels.log2(v)
    assert kernels.log2(1.0) == 0.0
    assert kernels.log2(8.0) == 3.0
    for e in np.concatenate([-rng.uniform(0.0, 60.0, 2000), rng.uniform(-1000.0, 1000.0, 2000)]):
        assert kernels.exp2(e) == pytest.approx(2.0**e, rel=4e-13)
        assert kernels._exp2(e) == kernels.exp2(e)
    assert kernels.exp2(0.0) == 1.0  # so a compressor at rest applies exactly its make-up gain
    assert kernels.exp2(-0.0) == 1.0
    assert kernels.exp2(-3.0) == 0.125
    assert kernels.exp2(-5000.0) == 2.0**-1022  # clamped, still a normal float
    assert kernels.exp2(5000.0) == 2.0**1023


# ------------------------------------------------------------------------------------------------
# Compressor
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_rms", [False, True])
def test_compressor_kernel_python_and_jit_agree(rng: np.random.Generator, use_rms: bool) -> None:
    x = rng.standard_normal((2, 300)).astype(np.float32)
    outs = []
    for fn in (kernels._compressor, kernels.compressor):
        y = x.copy()
        det = np.zeros(2)
        sm = np.zeros(2)
        gains = np.zeros(300)
        fn(y, det, sm, -12.0, 4.0, 6.0, 0.99, 0.999, 0.995, use_rms, 1.0, 2.0, 100, gains, np.zeros(300))
        outs.append((y, det, sm, gains))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


_COMPRESSOR_REFERENCE = numba.njit(_reference.compressor)


@pytest.mark.parametrize("use_rms", [False, True])
@pytest.mark.parametrize(
    ("threshold", "ratio", "knee"), [(-18.0, 4.0, 6.0), (-30.0, 10.0, 0.0), (-6.0, math.inf, 12.0)]
)
@pytest.mark.parametrize("compiled", [True, False])
def test_compressor_kernel_matches_the_libm_reference(
    rng: np.random.Generator, use_rms: bool, threshold: float, ratio: float, knee: float, compiled: bool
) -> None:
    """log2/exp2 in place of libm's log10/exp: the gain moves by < 1e-9 dB, the output by <= 1 ulp.

    Compiled against compiled and Python against Python: numba's ``float()`` of a float32 stays
    float32, so the compiled kernels square the samples in float32, Python in float64.
    """
    frames = 3000 if compiled else 400
    env = np.repeat(rng.uniform(0.01, 2.0, 30), 100)[:frames]
    x = (env * rng.standard_normal((2, frames))).astype(np.float32)
    ref, new = x.copy(), x.copy()
    det_ref, det_new = np.zeros(2), np.zeros(2)
    sm_ref, sm_new = np.zeros(2), np.zeros(2)
    reference = _COMPRESSOR_REFERENCE if compiled else _reference.compressor
    kernel = kernels.compressor if compiled else kernels._compressor
    cut = frames // 3
    for s in (slice(0, cut), slice(cut, cut + 1), slice(cut + 1, frames)):
        n = s.stop - s.start
        ramp = 200 if s.start == 0 else 0
        args = (threshold, ratio, knee, 0.99, 0.9995, 0.995, use_rms, 1.0, 1.5, ramp)
        a = np.ascontiguousarray(ref[:, s])
        gain_ref = np.zeros(n)
        reference(a, det_ref, sm_ref, *args, gain_ref)
        ref[:, s] = a
        b = np.ascontiguousarray(new[:, s])
        gain_new = np.zeros(n)
        kernel(b, det_new, sm_new, *args, gain_new, np.zeros(n))
        new[:, s] = b
        np.testing.assert_allclose(gain_new, gain_ref, rtol=0, atol=1e-9)
        assert float(np.max(gain_ref)) <= 0.0
    np.testing.assert_allclose(new, ref, rtol=2.0**-23, atol=0)
    np.testing.assert_allclose(sm_new, sm_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(det_new, det_ref, rtol=1e-12, atol=0)
    assert float(np.min(sm_ref[0])) > 0.0  # the compressor was working


def test_compressor_gain_computer_reference() -> None:
    # hard knee: below threshold 0 dB, above: (1/R - 1)(x - T)
    assert static_gain_db(-30.0, -20.0, 4.0, 0.0) == 0.0
    assert static_gain_db(-8.0, -20.0, 4.0, 0.0) == pytest.approx(-9.0)
    # soft knee: continuous at both knee edges, and half the hard-knee slope in the middle
    for x in (-23.0, -17.0):
        inside = static_gain_db(x + 1e-9 * (1 if x < -20 else -1), -20.0, 4.0, 6.0)
        outside = static_gain_db(x, -20.0, 4.0, 0.0) if x > -20 else 0.0
        assert inside == pytest.approx(outside, abs=1e-6)
    assert static_gain_db(-20.0, -20.0, 4.0, 6.0) == pytest.approx(-0.75 * 3**2 / 12)


@pytest.mark.parametrize("level_db", [-40.0, -24.0, -21.0, -19.0, -17.0, -12.0, -6.0, 0.0])
def test_compressor_static_curve_rms_on_sines(level_db: float) -> None:
    """RMS detector on constant-level sines: the settled gain is the analytic gain computer's."""
    amplitude = 10 ** (level_db / 20) * math.sqrt(2)  # RMS level = level_db
    x = sine(1000.0, FS, amplitude)[None].astype(np.float32)
    comp = Compressor(
        1, FS, threshold_db=-20.0, ratio=4.0, knee_db=6.0, detector="rms", attack_ms=5.0, release_ms=50.0
    )
    y = run_blocks(comp.process, x, 480)
    tail = slice(-9600, None)
    measured = 10 * np.log10(np.mean(y[0, tail].astype(float) ** 2) / np.mean(x[0, tail].astype(float) ** 2))
    assert measured == pytest.approx(static_gain_db(level_db, -20.0, 4.0, 6.0), abs=0.05)


@pytest.mark.parametrize("level_db", [-30.0, -21.0, -18.0, -12.0, -6.0, 0.0])
def test_compressor_static_curve_peak_on_sines(level_db: float) -> None:
    """Peak detector on constant-level sines: the settled gain is the static curve at the peak level."""
    amplitude = 10 ** (level_db / 20)
    x = sine(1000.0, FS, amplitude)[None].astype(np.float32)
    comp = Compressor(1, FS, threshold_db=-20.0, ratio=4.0, knee_db=6.0, attack_ms=1.0, release_ms=200.0)
    y = run_blocks(comp.process, x, 480)
    tail = slice(-9600, None)
    measured = 10 * np.log10(np.mean(y[0, tail].astype(float) ** 2) / np.mean(x[0, tail].astype(float) ** 2))
    assert measured == pytest.approx(static_gain_db(level_db, -20.0, 4.0, 6.0), abs=0.1)


@pytest.mark.parametrize(("ratio", "knee"), [(2.0, 0.0), (4.0, 6.0), (math.inf, 12.0)])
@pytest.mark.parametrize("level_db", [-30.0, -18.0, -12.0, -3.0])
def test_compressor_static_curve_peak_on_constant_level(ratio: float, knee: float, level_db: float) -> None:
    """Peak detector on a square wave (constant |x|): exact, with make-up gain on top."""
    x = (10 ** (level_db / 20) * np.sign(sine(500.0, 9600, phase=0.1)))[None].astype(np.float32)
    comp = Compressor(1, FS, threshold_db=-15.0, ratio=ratio, knee_db=knee, makeup_db=3.0)
    y = run_blocks(comp.process, x, 120)
    gain = db(float(np.abs(y[0, -100:]).max())) - level_db
    assert gain == pytest.approx(static_gain_db(level_db, -15.0, ratio, knee) + 3.0, abs=0.01)


def test_compressor_attack_and_release_time_constants() -> None:
    attack_ms, release_ms = 5.0, 80.0
    onset, offset = 4800, 4800 + 24000
    level = np.full(48000, 0.01)
    level[onset:offset] = 1.0
    x = (level * np.sign(sine(1000.0, 48000, phase=0.1)))[None].astype(np.float32)
    comp = Compressor(
        1, FS, threshold_db=-20.0, ratio=4.0, knee_db=0.0, attack_ms=attack_ms, release_ms=release_ms
    )
    gains = _collect(comp.process, lambda: comp.last_gain_db, x)
    final = static_gain_db(0.0, -20.0, 4.0, 0.0)  # -15 dB
    assert gains[onset - 1] == 0.0
    a = round(attack_ms * FS / 1000)
    assert gains[onset - 1 + a] / final == pytest.approx(1 - math.exp(-1), abs=0.005)
    assert gains[offset - 1] == pytest.approx(final, abs=1e-3)
    # release: the held reduction decays with tau_R, seen through the attack one-pole (tau_A):
    # r(t)/r0 = (tau_R e^(-t/tau_R) - tau_A e^(-t/tau_A)) / (tau_R - tau_A)
    r = round(release_ms * FS / 1000)
    expected = (release_ms * math.exp(-1) - attack_ms * math.exp(-release_ms / attack_ms)) / (
        release_ms - attack_ms
    )
    assert gains[offset - 1 + r] / final == pytest.approx(expected, abs=0.003)
    assert gains[-1] == pytest.approx(final * math.exp(-5), abs=0.01)  # 400 ms = 5 tau later


def _collect(
    process: Callable[[np.ndarray], None], last: Callable[[], np.ndarray], x: np.ndarray, size: int = 120
) -> np.ndarray:
    """Run ``x`` through ``process`` block by block, concatenating the per-frame ``last()`` arrays."""
    out = []
    for start in range(0, x.shape[1], size):
        process(x[:, start : start + size].copy())
        out.append(np.array(last()))
    return np.concatenate(out)


def test_compressor_makeup_change_ramps() -> None:
    comp = Compressor(2, FS, threshold_db=0.0, knee_db=0.0, makeup_db=0.0)
    comp.set_params(makeup_db=6.0)
    y = np.ones((2, 1000), np.float32)
    comp.process(y)
    assert y[0, 0] == pytest.approx(1.0 + (10 ** (6 / 20) - 1) / 480, rel=1e-5)
    assert y[0, 479] == pytest.approx(10 ** (6 / 20), rel=1e-6)


@pytest.mark.parametrize("channels", CHANNELS)
def test_compressor_blocks_do_not_matter(rng: np.random.Generator, channels: int) -> None:
    x = (0.5 * rng.standard_normal((channels, 5000))).astype(np.float32)
    outs = [run_blocks(Compressor(channels, FS, detector="rms").process, x, n) for n in BLOCK_SIZES]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_compressor_validation() -> None:
    comp = Compressor(2, FS)
    with pytest.raises(ValueError, match="ratio"):
        comp.set_params(ratio=0.5)
    with pytest.raises(ValueError, match="detector"):
        comp.set_params(detector="loud")
    with pytest.raises(ValueError, match="unknown compressor parameter"):
        comp.set_params(threshold=-3.0)
    with pytest.raises(ValueError, match="threshold_db"):
        comp.set_params(threshold_db=math.nan)


# ------------------------------------------------------------------------------------------------
# Limiter
# ------------------------------------------------------------------------------------------------


def _hard_signals(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = FS
    t = np.arange(n) / FS
    square = np.sign(sine(100.0, n, phase=0.01)) * ((t % 0.25) < 0.125)
    return {
        "full-scale square bursts": np.stack([square, -square]),
        "fs/4 sine, 45 degrees (inter-sample peaks)": np.stack([sine(FS / 4, n, phase=math.pi / 4)] * 2),
        "sines near fs/8 and fs/4": np.stack([1.4 * sine(5999.0, n, phase=0.3), 1.2 * sine(11997.0, n)]),
        "gaussian noise x4": 4 * rng.standard_normal((2, n)),
        "uniform noise x4": 4 * rng.uniform(-1, 1, (2, n)),
        "997 Hz sine +6 dB": np.stack([2 * sine(997.0, n)] * 2),
        "mono 19 kHz sine +6 dB": 2 * sine(19000.0, n)[None],
    }


@pytest.mark.parametrize("ceiling_db", [-1.0, -0.1, -6.0])
@pytest.mark.parametrize("size", [64, 120, 1000])
def test_limiter_true_peak_never_exceeds_ceiling(
    rng: np.random.Generator, ceiling_db: float, size: int
) -> None:
    for name, x64 in _hard_signals(rng).items():
        x = x64.astype(np.float32)
        lim = Limiter(x.shape[0], FS, ceiling_db=ceiling_db)
        y = run_blocks(lim.process, x, size)
        assert db(true_peak_reference(y)) <= ceiling_db + 0.1, name
        # in fact to a thousandth of a dB, and the meter agrees with the reference
        meter = TruePeakMeter(y.shape[0])
        meter.feed(y)
        assert meter.true_peak_db == pytest.approx(db(true_peak_reference(y)), abs=1e-6)
        assert meter.true_peak_db <= ceiling_db + 0.001, name


def test_limiter_ideal_interpolation_on_sines() -> None:
    """On sines, a near-ideal 4x interpolator (scipy's resample_poly) also reads at most +0.1 dB."""
    for x in (
        np.stack([sine(FS / 4, FS, phase=math.pi / 4)] * 2),
        np.stack([1.4 * sine(5999.0, FS, phase=0.3), 1.2 * sine(11997.0, FS)]),
        np.stack([2 * sine(997.0, FS)] * 2),
    ):
        y = run_blocks(Limiter(2, FS).process, x.astype(np.float32), 120)
        up = signal.resample_poly(y.astype(np.float64), 4, 1, axis=1)
        assert db(float(np.abs(up[:, 400:-400]).max())) <= -1.0 + 0.1


def test_limiter_is_transparent_below_the_ceiling(rng: np.random.Generator) -> None:
    x = signal.sosfilt(signal.butter(4, 8000, fs=FS, output="sos"), rng.standard_normal((2, FS)), axis=1)
    x = (x * 10 ** (-4 / 20) / true_peak_reference(x)).astype(np.float32)  # true peak -4 dBTP
    lim = Limiter(2, FS)
    assert lim.latency == 72
    y = run_blocks(lim.process, x, 120)
    np.testing.assert_array_equal(y[:, : lim.latency], 0.0)
    np.testing.assert_array_equal(y[:, lim.latency :], x[:, : -lim.latency])  # bit for bit
    assert lim.gain_db == 0.0


def test_limiter_release() -> None:
    x = np.concatenate([np.full(24000, 2.0), np.full(48000, 0.1)])[None].astype(np.float32)
    lim = Limiter(1, FS, ceiling_db=-1.0, release_ms=50.0)
    gains = _collect(lim.process, lambda: lim.last_gain, x)
    # steady DC: the interpolator's largest phase gain (1.0016) times 2.0 is brought to the ceiling
    dc_true_peak = 2.0 * float(kernels.TRUE_PEAK_TAPS.sum(axis=1).max())
    assert gains[23000] == pytest.approx(10 ** (-1 / 20) / dc_true_peak, rel=1e-4)
    # after the hold (look-ahead + 1) and the attack box, the gain releases with tau = 50 ms
    # (the step down rings in the interpolator, so the last dip is just after frame 24000)
    window = gains[24000:24400]
    low = float(window.min())
    start = 24000 + int(np.nonzero(window == low)[0][-1])
    tau = round(0.05 * FS)
    assert (1 - gains[start + tau]) / (1 - low) == pytest.approx(math.exp(-1), abs=0.02)
    assert gains[-1] == pytest.approx(1.0, abs=1e-6)


def test_limiter_kernel_python_and_jit_agree(rng: np.random.Generator) -> None:
    x = (3 * rng.standard_normal((2, 200))).astype(np.float32)
    ys = []
    for kernel in (kernels._limiter, kernels.limiter):
        lim = Limiter(2, FS, lookahead_ms=0.5)
        y = x.copy()
        kernel(
            y, lim._hist, lim._delay, lim._box, lim._dq_val, lim._dq_time, lim._istate, lim._fstate,
            kernels.TRUE_PEAK_TAPS, 0.5, 0.99, lim._hold, np.zeros(200),
        )  # fmt: skip
        ys.append(y)
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-6, atol=1e-7)
    assert true_peak_reference(ys[0][:, 24:]) <= 0.5 * 1.0001


@pytest.mark.parametrize("channels", CHANNELS)
def test_limiter_blocks_do_not_matter(rng: np.random.Generator, channels: int) -> None:
    x = (2 * rng.standard_normal((channels, 6000))).astype(np.float32)
    outs = [run_blocks(Limiter(channels, FS).process, x, n) for n in BLOCK_SIZES]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_sample_peak_limiter(rng: np.random.Generator) -> None:
    x = (3 * rng.standard_normal((2, 20000))).astype(np.float32)
    lim = Limiter(2, FS, ceiling_db=-3.0, true_peak=False)
    y = run_blocks(lim.process, x, 120)
    assert db(float(np.abs(y).max())) <= -3.0 + 1e-6
    quiet = (0.1 * rng.standard_normal((2, 5000))).astype(np.float32)
    z = run_blocks(Limiter(2, FS, true_peak=False).process, quiet, 120)
    np.testing.assert_array_equal(z[:, 72:], quiet[:, :-72])
    with pytest.raises(ValueError, match="true_peak is fixed"):
        lim.set_params(true_peak=1.0)


def test_limiter_validation() -> None:
    lim = Limiter(2, FS)
    with pytest.raises(ValueError, match="lookahead_ms is fixed"):
        lim.set_params(lookahead_ms=3.0)
    with pytest.raises(ValueError, match="ceiling_db"):
        lim.set_params(ceiling_db=3.0)
    lim.set_params(ceiling_db=-2.0, release_ms=100.0)
    assert (lim.ceiling_db, lim.release_ms) == (-2.0, 100.0)
    assert Limiter(1, 44100, lookahead_ms=5.0).latency == round(0.005 * 44100)


@pytest.mark.parametrize("true_peak", [False, True])
@pytest.mark.parametrize("lookahead_ms", [0.5, 1.5, 5.0])
def test_limiter_kernel_equals_the_modulo_deque_reference(
    rng: np.random.Generator, true_peak: bool, lookahead_ms: float
) -> None:
    """The deque's ring indices wrap by comparison, not `%`: nothing else changes, bit for bit."""
    ours = Limiter(2, FS, lookahead_ms=lookahead_ms, true_peak=true_peak)
    ref = Limiter(2, FS, lookahead_ms=lookahead_ms, true_peak=true_peak)
    env = np.repeat(rng.uniform(0.05, 4.0, 60), 100)
    x = (env * rng.standard_normal((2, 6000))).astype(np.float32)
    for s in random_blocks(x.shape[1], rng, high=400):
        a = np.ascontiguousarray(x[:, s])
        b = a.copy()
        gain = np.zeros(a.shape[1])
        _reference.limiter(
            a, ref._hist, ref._delay, ref._box, ref._dq_val, ref._dq_time, ref._istate, ref._fstate,
            ref._taps, ref._threshold, ref._release, ref._hold, gain,
        )  # fmt: skip
        ours.process(b)
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(ours.last_gain, gain)
    np.testing.assert_array_equal(ours._istate, ref._istate)


# ------------------------------------------------------------------------------------------------
# LimiterBank
# ------------------------------------------------------------------------------------------------


def _jam_blocks(rng: np.random.Generator, listeners: int, channels: int, frames: int) -> np.ndarray:
    """Per-listener signals from silent to +12 dB over full scale, changing level every 100 frames."""
    levels = rng.choice([0.0, 0.05, 0.5, 1.0, 2.0, 4.0], size=(listeners, 1, -(-frames // 100)))
    env = np.repeat(levels, 100, axis=2)[:, :, :frames]
    return (env * rng.standard_normal((listeners, channels, frames))).astype(np.float32)


@pytest.mark.parametrize("true_peak", [False, True])
@pytest.mark.parametrize(("listeners", "channels"), [(1, 2), (5, 2), (16, 2), (3, 1), (4, 3)])
def test_limiter_bank_is_bit_identical_to_one_limiter_per_listener(
    rng: np.random.Generator, true_peak: bool, listeners: int, channels: int
) -> None:
    x = _jam_blocks(rng, listeners, channels, 4000)
    bank = LimiterBank(listeners, channels, FS, ceiling_db=-1.0, true_peak=true_peak)
    singles = [Limiter(channels, FS, ceiling_db=-1.0, true_peak=true_peak) for _ in range(listeners)]
    assert bank.latency == singles[0].latency
    for s in random_blocks(x.shape[2], rng, high=300):
        block = np.ascontiguousarray(x[:, :, s])
        expected = block.copy()
        for limiter, rows in zip(singles, expected, strict=True):
            limiter.process(rows)
        bank.process(block)
        np.testing.assert_array_equal(block, expected)
        for i, limiter in enumerate(singles):
            np.testing.assert_array_equal(bank.last_gain[i], limiter.last_gain)
        np.testing.assert_array_equal(bank._gain_now, [limiter._fstate[1] for limiter in singles])
        np.testing.assert_allclose(bank.gain_db, [limiter.gain_db for limiter in singles], rtol=1e-12)


@pytest.mark.parametrize("size", BLOCK_SIZES)
def test_limiter_bank_takes_mix_rows_and_blocks_do_not_matter(rng: np.random.Generator, size: int) -> None:
    """(listeners·channels, frames) rows, as the personal-mix GEMM writes them, in any block size."""
    x = _jam_blocks(rng, 6, 2, 3000).reshape(12, 3000)
    whole = x.copy()
    LimiterBank(6).process(whole)
    bank = LimiterBank(6)
    out = np.empty_like(x)
    for s in range(0, x.shape[1], size):
        rows = np.ascontiguousarray(x[:, s : s + size])
        bank.process(rows)
        out[:, s : s + size] = rows
    np.testing.assert_array_equal(out, whole)
    singles = [Limiter(2, FS, true_peak=False) for _ in range(6)]
    expected = np.concatenate(
        [run_blocks(lim.process, x[2 * i : 2 * i + 2], 120) for i, lim in enumerate(singles)]
    )
    np.testing.assert_array_equal(out, expected)
    assert db(float(np.abs(out).max())) <= -1.0 + 1e-6


def test_limiter_bank_parameter_changes_and_reset(rng: np.random.Generator) -> None:
    x = _jam_blocks(rng, 4, 2, 2400)
    bank = LimiterBank(4, 2, FS, ceiling_db=-3.0, release_ms=20.0, lookahead_ms=2.0)
    singles = [
        Limiter(2, FS, ceiling_db=-3.0, release_ms=20.0, lookahead_ms=2.0, true_peak=False) for _ in range(4)
    ]
    for k, start in enumerate(range(0, 2400, 120)):
        if k == 7:
            bank.set_params(ceiling_db=-6.0, release_ms=200.0)
            for limiter in singles:
                limiter.set_params(ceiling_db=-6.0, release_ms=200.0)
        if k == 13:
            bank.reset()
            for limiter in singles:
                limiter.reset()
        block = np.ascontiguousarray(x[:, :, start : start + 120])
        expected = block.copy()
        for limiter, rows in zip(singles, expected, strict=True):
            limiter.process(rows)
        bank.process(block)
        np.testing.assert_array_equal(block, expected)
    assert (bank.ceiling_db, bank.release_ms, bank.lookahead_ms) == (-6.0, 200.0, 2.0)


def test_limiter_bank_resets_one_listener(rng: np.random.Generator) -> None:
    """A reset listener starts afresh (silent delay line, unity gain); the others carry on."""
    x = _jam_blocks(rng, 3, 2, 1200)
    x[1] *= 8.0
    bank = LimiterBank(3)
    others = [Limiter(2, FS, true_peak=False) for _ in range(3)]
    for start in range(0, 600, 120):
        block = np.ascontiguousarray(x[:, :, start : start + 120])
        bank.process(block)
        for limiter, rows in zip(others, x[:, :, start : start + 120].copy(), strict=True):
            limiter.process(rows)
    assert bank.gain_db[1] < -6.0
    bank.reset(1)
    assert bank.gain_db[1] == 0.0
    fresh = Limiter(2, FS, true_peak=False)
    for start in range(600, 1200, 120):
        block = np.ascontiguousarray(x[:, :, start : start + 120])
        expected = block.copy()
        for i in (0, 2):
            others[i].process(expected[i])
        fresh.process(expected[1])
        bank.process(block)
        np.testing.assert_array_equal(block[[0, 2]], expected[[0, 2]])
        np.testing.assert_allclose(block[1], expected[1], rtol=1e-6, atol=1e-9)
        assert float(np.abs(block[1]).max()) <= 10 ** (-1 / 20) * (1 + 1e-6)


def test_limiter_bank_is_transparent_below_the_ceiling(rng: np.random.Generator) -> None:
    x = (0.1 * rng.standard_normal((8, 2, 1000))).astype(np.float32)
    bank = LimiterBank(8)
    y = x.copy()
    bank.process(y)
    d = bank.latency
    np.testing.assert_array_equal(y[:, :, :d], 0.0)
    np.testing.assert_array_equal(y[:, :, d:], x[:, :, :-d])
    np.testing.assert_array_equal(bank.gain_db, 0.0)


@pytest.mark.parametrize("true_peak", [False, True])
def test_limiter_bank_kernel_python_and_jit_agree(rng: np.random.Generator, true_peak: bool) -> None:
    x = _jam_blocks(rng, 3, 2, 200)
    outs = []
    for kernel in (kernels._limiter_bank, kernels.limiter_bank):
        bank = LimiterBank(3, 2, FS, lookahead_ms=0.5, true_peak=true_peak)
        y = x.copy()
        gain = np.zeros((200, 3))
        kernel(
            y, bank._hist, bank._delay, bank._box, bank._ring, bank._suffix, bank._prefix, bank._box_sum,
            bank._gain_now, bank._level, bank._istate, bank._taps, 0.5, 0.99, gain,
        )  # fmt: skip
        outs.append((y, gain, bank._istate.copy(), bank._box_sum.copy()))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_limiter_bank_validation() -> None:
    bank = LimiterBank(4, 2, FS)
    assert (bank.listeners, bank.channels, bank.true_peak, bank.latency) == (4, 2, False, 72)
    with pytest.raises(TypeError, match="float32"):
        bank.process(np.zeros((8, 10)))
    with pytest.raises(TypeError, match="numpy array"):
        bank.process([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="8 rows"):
        bank.process(np.zeros((6, 10), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 2, frames\)"):
        bank.process(np.zeros((4, 3, 10), np.float32))
    with pytest.raises(ValueError, match="shaped"):
        bank.process(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        bank.process(np.zeros((8, 20), np.float32)[:, ::2])
    frozen = np.zeros((8, 10), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        bank.process(frozen)
    with pytest.raises(ValueError, match="listeners"):
        LimiterBank(0)
    with pytest.raises(ValueError, match="listeners"):
        LimiterBank(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lookahead_ms is fixed"):
        bank.set_params(lookahead_ms=3.0)
    with pytest.raises(ValueError, match="true_peak is fixed"):
        bank.set_params(true_peak=1.0)
    with pytest.raises(ValueError, match="ceiling_db"):
        bank.set_params(ceiling_db=1.0)
    with pytest.raises(ValueError, match="listener must be within"):
        bank.reset(4)
    with pytest.raises(TypeError, match="listener must be an integer"):
        bank.reset(1.0)  # type: ignore[arg-type]
    empty = np.zeros((8, 0), np.float32)
    bank.process(empty)
    assert bank.last_gain.shape == (4, 0)
