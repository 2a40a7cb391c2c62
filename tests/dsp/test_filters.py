from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from realtime.dsp import kernels
from realtime.dsp.filters import (
    Band,
    biquad_sos,
    design_biquad,
    design_sos,
    k_weighting_sos,
    sos_state,
)

from . import _reference
from .conftest import BLOCK_SIZES, CHANNELS, FS, blocks, random_blocks

EQ_CASCADE = [
    Band("highpass", 30.0, q=0.9),
    Band("lowshelf", 120.0, gain_db=-4.0),
    Band("peaking", 1000.0, gain_db=6.0, q=2.0),
    Band("highshelf", 8000.0, gain_db=3.0, slope=0.8),
    Band("lowpass", 16000.0),
]


def _response_db(row: np.ndarray, freqs: list[float], fs: float = FS) -> np.ndarray:
    _, h = signal.sosfreqz(row.reshape(1, 6), worN=np.asarray(freqs, dtype=float), fs=fs)
    return 20 * np.log10(np.abs(h))


def test_kernel_python_and_jit_agree(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 200)).astype(np.float32)
    sos = design_sos(EQ_CASCADE, FS).reshape(1, -1, 6)
    y_py = np.empty_like(x)
    y_jit = np.empty_like(x)
    state_py = sos_state(2, sos.shape[1])
    state_jit = sos_state(2, sos.shape[1])
    kernels._biquad_sos(x, sos, 200, state_py, y_py)
    kernels.biquad_sos(x, sos, 200, state_jit, y_jit)
    np.testing.assert_allclose(y_jit, y_py, rtol=0, atol=1e-6)
    np.testing.assert_allclose(state_jit, state_py, rtol=1e-9, atol=1e-12)
    ref = signal.sosfilt(sos[0], x.astype(np.float64), axis=1)
    np.testing.assert_allclose(y_py, ref, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
@pytest.mark.parametrize("sections", range(8))
@pytest.mark.parametrize(("sets", "chunk"), [(1, 1000), (6, 7), (40, 2)])
def test_kernel_equals_the_plain_loop_bit_for_bit(
    rng: np.random.Generator, channels: int, sections: int, sets: int, chunk: int
) -> None:
    """Channel pairs and register-held sections change the loop order, not a single rounding."""
    cascade = [*EQ_CASCADE, Band("peaking", 300.0, gain_db=-5.0, q=4.0), Band("lowshelf", 60.0, 3.0)]
    base = design_sos(cascade[:sections], FS) if sections else np.zeros((0, 6))
    sos = base[None] * (1.0 + 0.01 * rng.standard_normal((sets, sections, 6)))
    sos[:, :, 3] = 1.0
    x = rng.standard_normal((channels, 301)).astype(np.float32)
    state0 = 0.1 * rng.standard_normal((channels, sections, 2))
    state_ref, state_py, state_jit = state0.copy(), state0.copy(), state0.copy()
    expected = np.empty_like(x)
    out_py = np.empty_like(x)
    out_jit = np.empty_like(x)
    for s in (slice(0, 100), slice(100, 101), slice(101, 301)):
        part = np.ascontiguousarray(x[:, s])
        ref = np.empty_like(part)
        _reference.biquad_sos(part, sos, chunk, state_ref, ref)
        expected[:, s] = ref
        y_py = np.empty_like(part)
        kernels._biquad_sos(part, sos, chunk, state_py, y_py)
        out_py[:, s] = y_py
        in_place = part.copy()
        kernels.biquad_sos(in_place, sos, chunk, state_jit, in_place)
        out_jit[:, s] = in_place
    np.testing.assert_array_equal(out_py, expected)
    np.testing.assert_array_equal(out_jit, expected)
    np.testing.assert_array_equal(state_py, state_ref)
    np.testing.assert_array_equal(state_jit, state_ref)


@pytest.mark.parametrize("size", BLOCK_SIZES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_blockwise_equals_sosfilt(rng: np.random.Generator, size: int, channels: int) -> None:
    x = rng.standard_normal((channels, 6000)).astype(np.float32)
    sos = design_sos(EQ_CASCADE, FS)
    state = sos_state(channels, len(EQ_CASCADE))
    out = np.empty_like(x)
    for s in blocks(x.shape[1], size):
        out[:, s] = biquad_sos(np.ascontiguousarray(x[:, s]), sos, state)
    ref = signal.sosfilt(sos, x.astype(np.float64), axis=1)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_random_block_sizes_carry_state_like_zi(rng: np.random.Generator) -> None:
    x = (0.5 * rng.standard_normal((2, 20000))).astype(np.float32)
    sos = design_sos([Band("peaking", 60.0, 12.0, 8.0), Band("lowpass", 500.0, q=4.0)], FS)
    state = sos_state(2, 2)
    zi = np.zeros((sos.shape[0], 2, 2))  # scipy layout: (sections, channels, 2) with axis=1
    worst = 0.0
    for s in random_blocks(x.shape[1], rng):
        chunk = np.ascontiguousarray(x[:, s])
        ours = biquad_sos(chunk, sos, state)
        ref, zi = signal.sosfilt(sos, chunk.astype(np.float64), axis=1, zi=zi)
        worst = max(worst, float(np.abs(ours - ref).max()))
        np.testing.assert_allclose(state, np.transpose(zi, (1, 0, 2)), rtol=1e-6, atol=1e-9)
    assert worst < 1e-5


def test_in_place_and_out_argument(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 300)).astype(np.float32)
    sos = design_sos(EQ_CASCADE, FS)
    expected = biquad_sos(x, sos, sos_state(2, 5))
    y = x.copy()
    assert biquad_sos(y, sos, sos_state(2, 5), out=y) is y
    np.testing.assert_array_equal(y, expected)


def test_coefficient_sets_switch_per_chunk(rng: np.random.Generator) -> None:
    """Several coefficient sets (used while a parameter ramps) equal sosfilt per chunk with zi carried."""
    x = rng.standard_normal((1, 100)).astype(np.float32)
    sets = np.stack([design_sos([Band("peaking", f, 6.0, 1.0)], FS) for f in (200.0, 400.0, 800.0)])
    chunk = 30
    y = np.empty_like(x)
    kernels.biquad_sos(x, sets, chunk, sos_state(1, 1), y)
    zi = np.zeros((1, 2))
    ref = []
    for k, s in enumerate([slice(0, 30), slice(30, 60), slice(60, 100)]):
        part, zi = signal.sosfilt(sets[k], x[0, s].astype(np.float64), zi=zi)
        ref.append(part)
    np.testing.assert_allclose(y[0], np.concatenate(ref), atol=1e-6)


def test_lowpass_and_highpass_match_butterworth() -> None:
    for kind, btype in (("lowpass", "low"), ("highpass", "high")):
        b, a = signal.butter(2, 1000.0, btype=btype, fs=FS)
        row = design_biquad(kind, 1000.0, FS)
        np.testing.assert_allclose(row, np.concatenate([b, a]), rtol=1e-10, atol=1e-14)
        assert _response_db(row, [1000.0])[0] == pytest.approx(-3.0103, abs=1e-3)


@pytest.mark.parametrize("gain", [-12.0, -3.0, 6.0, 15.0])
def test_peaking_and_shelves_hit_their_gains(gain: float) -> None:
    peak = design_biquad("peaking", 2000.0, FS, q=1.5, gain_db=gain)
    assert _response_db(peak, [2000.0])[0] == pytest.approx(gain, abs=1e-9)
    assert _response_db(peak, [20.0, 23000.0]) == pytest.approx([0.0, 0.0], abs=0.05)
    low = design_biquad("lowshelf", 300.0, FS, gain_db=gain)
    assert _response_db(low, [1.0, 300.0, 20000.0]) == pytest.approx([gain, gain / 2, 0.0], abs=0.01)
    high = design_biquad("highshelf", 3000.0, FS, gain_db=gain)
    assert _response_db(high, [10.0, 3000.0]) == pytest.approx([0.0, gain / 2], abs=0.01)
    _, h = signal.sosfreqz(high.reshape(1, 6), worN=[FS / 2 - 1e-6], fs=FS)
    assert 20 * math.log10(abs(h[0])) == pytest.approx(gain, abs=0.01)


def test_shelf_slope_one_equals_butterworth_q() -> None:
    a = design_biquad("lowshelf", 500.0, FS, gain_db=6.0, slope=1.0)
    b = design_biquad("lowshelf", 500.0, FS, gain_db=6.0, q=1 / math.sqrt(2))
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_k_weighting_matches_the_standard_at_48k() -> None:
    sos = k_weighting_sos(48000)
    table = np.array(
        [
            [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
            [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
        ]
    )
    np.testing.assert_allclose(sos, table, atol=1e-12)
    # The same analog response at 44.1 kHz (below 10 kHz, where warping is negligible).
    freqs = [20.0, 100.0, 997.0, 3000.0, 8000.0]
    _, h48 = signal.sosfreqz(sos, worN=freqs, fs=48000)
    _, h44 = signal.sosfreqz(k_weighting_sos(44100), worN=freqs, fs=44100)
    np.testing.assert_allclose(20 * np.log10(np.abs(h44)), 20 * np.log10(np.abs(h48)), atol=0.05)


def test_design_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        Band("bandpass", 100.0)
    with pytest.raises(ValueError, match="Nyquist"):
        design_biquad("lowpass", 24000.0, FS)
    with pytest.raises(ValueError, match="frequency"):
        Band("lowpass", -1.0)
    with pytest.raises(ValueError, match="q"):
        Band("peaking", 100.0, q=0.0)
    with pytest.raises(ValueError, match="slope"):
        Band("peaking", 100.0, slope=0.5)
    with pytest.raises(ValueError, match="q or slope"):
        design_biquad("lowshelf", 100.0, FS, q=1.0, slope=1.0)


def test_filter_validation(rng: np.random.Generator) -> None:
    sos = design_sos(EQ_CASCADE, FS)
    x = rng.standard_normal((2, 10)).astype(np.float32)
    with pytest.raises(TypeError, match="float32"):
        biquad_sos(x.astype(np.float64), sos, sos_state(2, 5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state"):
        biquad_sos(x, sos, sos_state(1, 5))
    with pytest.raises(ValueError, match="sos"):
        biquad_sos(x, sos[:, :5], sos_state(2, 5))
    with pytest.raises(ValueError, match="normalized"):
        biquad_sos(x, sos * 2.0, sos_state(2, 5))
    assert biquad_sos(np.zeros((2, 0), np.float32), sos, sos_state(2, 5)).shape == (2, 0)
