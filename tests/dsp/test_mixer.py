from __future__ import annotations

import importlib
import math
import sys
import types

import numpy as np
import pytest

from realtime.dsp import backend, gpu
from realtime.dsp.effects import Limiter, LimiterBank
from realtime.dsp.mixer import build_gain_matrix, mix_and_limit, mix_matrix, mix_matrix_ramp
from realtime.dsp.units import db_to_gain, pan_gains


def naive_mix(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    y = np.zeros((g.shape[0], x.shape[1]), dtype=np.float64)
    for row in range(g.shape[0]):
        for col in range(g.shape[1]):
            y[row] += float(g[row, col]) * x[col].astype(np.float64)
    return y


@pytest.mark.parametrize(("listeners", "inputs"), [(1, 1), (2, 3), (16, 8), (64, 64)])
@pytest.mark.parametrize("frames", [1, 64, 120, 1000])
def test_mix_matrix_matches_a_naive_loop(
    rng: np.random.Generator, listeners: int, inputs: int, frames: int
) -> None:
    g = rng.uniform(0, 1, (2 * listeners, inputs)).astype(np.float32)
    x = rng.standard_normal((inputs, frames)).astype(np.float32)
    y = mix_matrix(g, x)
    assert y.dtype == np.float32
    assert y.shape == (2 * listeners, frames)
    np.testing.assert_allclose(y, naive_mix(g, x), rtol=1e-5, atol=1e-5 * math.sqrt(inputs))
    out = np.full_like(y, np.nan)
    assert mix_matrix(g, x, out) is out
    np.testing.assert_array_equal(out, y)


def test_mix_matrix_validation(rng: np.random.Generator) -> None:
    g = np.ones((4, 3), np.float32)
    x = np.ones((3, 10), np.float32)
    with pytest.raises(TypeError, match="float32"):
        mix_matrix(g.astype(np.float64), x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 input column"):
        mix_matrix(g, np.ones((2, 10), np.float32))
    with pytest.raises(ValueError, match="out must be shaped"):
        mix_matrix(g, x, np.empty((4, 9), np.float32))
    big = np.ones((4, 10), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        mix_matrix(np.ones((4, 4), np.float32), big, big)
    with pytest.raises(ValueError, match="two-dimensional"):
        mix_matrix(np.ones(3, np.float32), x)


def test_mix_matrix_ramp_matches_per_frame_gains(rng: np.random.Generator) -> None:
    g0 = rng.uniform(0, 1, (6, 5)).astype(np.float32)
    g1 = rng.uniform(0, 1, (6, 5)).astype(np.float32)
    x = rng.standard_normal((5, 120)).astype(np.float32)
    y = mix_matrix_ramp(g0, g1, x, np.empty((6, 120), np.float32), np.empty((6, 120), np.float32))
    expected = np.empty((6, 120))
    for n in range(120):
        gn = g0.astype(np.float64) + (g1.astype(np.float64) - g0) * (n + 1) / 120
        expected[:, n] = gn @ x[:, n].astype(np.float64)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[:, -1], g1 @ x[:, -1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("true_peak", [False, True])
def test_mix_and_limit_is_the_mix_then_each_listeners_limiter(
    rng: np.random.Generator, true_peak: bool
) -> None:
    """One tick = mix_matrix (or mix_matrix_ramp while gains change) + a Limiter per listener, exactly."""
    listeners, inputs, frames = 6, 5, 120
    gains = [
        build_gain_matrix(rng.uniform(-6.0, 12.0, (listeners, inputs)), rng.uniform(-1, 1, inputs))
        for _ in range(4)
    ]
    bank = LimiterBank(listeners, 2, 48000, true_peak=true_peak)
    singles = [Limiter(2, 48000, true_peak=true_peak) for _ in range(listeners)]
    out = np.empty((2 * listeners, frames), np.float32)
    scratch = np.empty_like(out)
    expected = np.empty_like(out)
    for tick in range(12):
        x = rng.standard_normal((inputs, frames)).astype(np.float32)
        g0 = gains[tick // 4]
        g1 = gains[tick // 4 + 1] if tick % 4 == 3 else None
        if g1 is None:
            assert mix_and_limit(g0, x, bank, out) is out
            mix_matrix(g0, x, expected)
        else:
            assert mix_and_limit(g0, x, bank, out, gains_end=g1, scratch=scratch) is out
            mix_matrix_ramp(g0, g1, x, expected)
        for i, limiter in enumerate(singles):
            rows = np.ascontiguousarray(expected[2 * i : 2 * i + 2])
            limiter.process(rows)
            expected[2 * i : 2 * i + 2] = rows
        np.testing.assert_array_equal(out, expected)
    assert float(np.abs(out).max()) > 0.5  # the limiters had work to do
    assert float(bank.gain_db.min()) < -1.0


def test_mix_and_limit_validation() -> None:
    bank = LimiterBank(2)
    x = np.ones((3, 10), np.float32)
    out = np.empty((4, 10), np.float32)
    with pytest.raises(ValueError, match="gains has 6 row"):
        mix_and_limit(np.ones((6, 3), np.float32), x, bank, np.empty((6, 10), np.float32))
    with pytest.raises(TypeError, match="preallocated"):
        mix_and_limit(np.ones((4, 3), np.float32), x, bank, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out must be shaped"):
        mix_and_limit(np.ones((4, 3), np.float32), x, bank, np.empty((4, 9), np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        mix_and_limit(np.ones((4, 3), np.float32), x, bank, out, gains_end=np.ones((4, 2), np.float32))


def test_build_gain_matrix() -> None:
    gain_db = np.array([[0.0, -6.0, -math.inf], [-3.0, 0.0, 6.0]])
    pan = np.array([-1.0, 0.0, 0.5])
    g = build_gain_matrix(gain_db, pan)
    assert g.shape == (4, 3)
    assert g.dtype == np.float32
    for listener in range(2):
        for col in range(3):
            left, right = pan_gains(float(pan[col]))
            gain = db_to_gain(float(gain_db[listener, col]))
            assert g[2 * listener, col] == pytest.approx(gain * left, abs=1e-7)
            assert g[2 * listener + 1, col] == pytest.approx(gain * right, abs=1e-7)
    assert g[0, 0] == 1.0
    assert g[1, 0] == 0.0
    muted = build_gain_matrix(gain_db, pan, mute=[False, True, False])
    assert np.all(muted[:, 1] == 0.0)
    assert np.array_equal(muted[:, [0, 2]], g[:, [0, 2]])
    own = build_gain_matrix(gain_db, pan, self_input=[1, None], self_monitor=False)
    assert np.all(own[0:2, 1] == 0.0)
    assert np.array_equal(own[2:4], g[2:4])
    keep = build_gain_matrix(gain_db, pan, self_input=[1, 2], self_monitor=[True, False])
    assert np.array_equal(keep[0:2], g[0:2])
    assert np.all(keep[2:4, 2] == 0.0)
    out = np.empty((4, 3), np.float32)
    assert build_gain_matrix(gain_db, pan, out=out) is out
    shared = build_gain_matrix(np.zeros(3))
    assert shared.shape == (2, 3)


def test_build_gain_matrix_validation() -> None:
    with pytest.raises(ValueError, match="pan"):
        build_gain_matrix(np.zeros((1, 2)), pan=[0.0, 2.0])
    with pytest.raises(ValueError, match="self_input needs 1"):
        build_gain_matrix(np.zeros((1, 2)), self_input=[0, 1], self_monitor=False)
    with pytest.raises(ValueError, match="not an input column"):
        build_gain_matrix(np.zeros((1, 2)), self_input=[5], self_monitor=False)
    with pytest.raises(ValueError, match="gain_db"):
        build_gain_matrix(np.zeros((1, 2, 3)))


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------


def test_select_backend_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    assert backend.select_backend("numba") == "numba"
    assert backend.select_backend("auto") == "numba"
    assert not backend.cupy_available()
    with pytest.raises(backend.BackendUnavailable, match="cupy is not installed"):
        backend.select_backend("cupy")
    with pytest.raises(ValueError, match="unknown DSP backend"):
        backend.select_backend("opencl")
    monkeypatch.setattr(gpu, "_cupy", None)
    with pytest.raises(backend.BackendUnavailable):
        gpu.mix_matrix(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))


def _fake_cupy(devices: int) -> types.ModuleType:
    """numpy dressed up as cupy, to exercise the cupy code paths without a GPU."""
    fake = types.ModuleType("cupy")
    for name in ("ndarray", "float32", "matmul", "arange"):
        setattr(fake, name, getattr(np, name))
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices)
    fake.cuda = types.SimpleNamespace(runtime=runtime)  # type: ignore[attr-defined]
    return fake


def test_select_backend_with_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(1))
    assert backend.select_backend("auto") == "cupy"
    assert backend.select_backend("cupy") == "cupy"
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(0))
    assert backend.select_backend("auto") == "numba"
    with pytest.raises(backend.BackendUnavailable, match="no CUDA device"):
        backend.select_backend("cupy")


def test_gpu_mix_matrix_code_paths(monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator) -> None:
    monkeypatch.setattr(gpu, "_cupy", _fake_cupy(1))
    g0 = rng.uniform(0, 1, (4, 3)).astype(np.float32)
    g1 = rng.uniform(0, 1, (4, 3)).astype(np.float32)
    x = rng.standard_normal((3, 120)).astype(np.float32)
    out = np.empty((4, 120), np.float32)
    assert gpu.mix_matrix(g0, x, out) is out
    np.testing.assert_allclose(out, mix_matrix(g0, x), rtol=1e-6)
    np.testing.assert_allclose(
        gpu.mix_matrix_ramp(g0, g1, x), mix_matrix_ramp(g0, g1, x), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(TypeError, match="float32"):
        gpu.mix_matrix(g0.astype(np.float64), x)


def test_gpu_module_imports_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    module = importlib.reload(gpu)
    assert module._cupy is None
