from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal

from realtime.dsp.effects import Equalizer
from realtime.dsp.filters import Band, design_sos

from .conftest import BLOCK_SIZES, CHANNELS, FS, max_step, run_blocks, sine

BANDS = [
    Band("lowshelf", 100.0, gain_db=3.0),
    Band("peaking", 1200.0, gain_db=-5.0, q=1.4),
    Band("lowpass", 12000.0),
]


@pytest.mark.parametrize("size", BLOCK_SIZES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_static_eq_equals_sosfilt(rng: np.random.Generator, size: int, channels: int) -> None:
    x = rng.standard_normal((channels, 4000)).astype(np.float32)
    eq = Equalizer(BANDS, channels, FS)
    y = run_blocks(eq.process, x, size)
    ref = signal.sosfilt(design_sos(BANDS, FS), x.astype(np.float64), axis=1)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert eq.latency == 0


def _switch(eq: Equalizer, x: np.ndarray, at: int, size: int = 120, **params: float) -> np.ndarray:
    return run_blocks(eq.process, x, size, lambda s: eq.set_params(**params) if s == at else None)


@pytest.mark.parametrize(
    ("band", "params", "freq"),
    [
        (Band("peaking", 1000.0, 0.0, 1.0), {"band0_gain_db": 12.0}, 1000.0),
        (Band("peaking", 1000.0, 12.0, 1.0), {"band0_gain_db": -6.0}, 1000.0),
        (Band("highshelf", 3000.0, -12.0), {"band0_gain_db": 12.0, "band0_freq": 1500.0}, 2000.0),
        (Band("lowpass", 1000.0), {"band0_freq": 2000.0}, 700.0),
        (Band("highpass", 50.0), {"band0_freq": 2000.0}, 100.0),
    ],
)
def test_parameter_changes_are_click_free(band: Band, params: dict[str, float], freq: float) -> None:
    x = sine(freq, 12000, 0.2, phase=0.3)[None].astype(np.float32)
    at = 4800
    smooth = _switch(Equalizer([band], 1, FS), x, at, **params)
    # the bound: the steadier of the two static filters' sample steps, +5 %
    before = max_step(smooth[:, 2000:at])
    after = max_step(smooth[:, -3000:])
    bound = max(before, after) * 1.05 + 1e-4
    assert max_step(smooth[:, 2000:]) <= bound
    # and the ramp ends on the static filter with the new parameters
    new = dataclasses.replace(band, **{k.removeprefix("band0_"): v for k, v in params.items()})
    static = run_blocks(Equalizer([new], 1, FS).process, x, 120)
    np.testing.assert_allclose(smooth[:, -2000:], static[:, -2000:], atol=1e-4)


def test_hard_coefficient_switch_would_click() -> None:
    x = sine(100.0, 12000, 0.2, phase=0.3)[None].astype(np.float32)
    hard = _switch(Equalizer([Band("highpass", 50.0)], 1, FS, ramp_ms=0.0), x, 4800, band0_freq=2000.0)
    smooth = _switch(Equalizer([Band("highpass", 50.0)], 1, FS), x, 4800, band0_freq=2000.0)
    assert max_step(hard[:, 2000:]) > 5 * max_step(smooth[:, 2000:])


def test_ramp_converges_to_the_new_static_filter(rng: np.random.Generator) -> None:
    x = (0.3 * rng.standard_normal((2, 24000))).astype(np.float32)
    eq = Equalizer(BANDS, 2, FS)
    y = _switch(eq, x, 1200, band1_gain_db=4.0, band1_freq=2000.0, band0_q=1.0)
    assert eq.bands[1] == Band("peaking", 2000.0, gain_db=4.0, q=1.4)
    static = Equalizer(list(eq.bands), 2, FS)
    z = run_blocks(static.process, x, 120)
    # after the ramp and the filters' memory, both outputs agree
    np.testing.assert_allclose(y[:, -4000:], z[:, -4000:], atol=1e-4)


def test_structural_change_crossfades(rng: np.random.Generator) -> None:
    x = sine(300.0, 12000, 0.3)[None].astype(np.float32)
    eq = Equalizer([Band("lowshelf", 200.0, gain_db=6.0)], 1, FS)
    new = [Band("peaking", 300.0, gain_db=-6.0, q=2.0), Band("lowpass", 5000.0)]
    y = run_blocks(eq.process, x, 120, lambda s: eq.set_bands(new) if s == 4800 else None)
    bound = max(max_step(y[:, 2000:4800]), max_step(y[:, -3000:])) * 1.05 + 1e-4
    assert max_step(y[:, 2000:]) <= bound
    assert eq.bands == tuple(new)
    static = Equalizer(new, 1, FS)
    np.testing.assert_allclose(y[:, -3000:], run_blocks(static.process, x, 120)[:, -3000:], atol=1e-4)


def test_empty_eq_is_identity_and_reset(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 500)).astype(np.float32)
    y = x.copy()
    Equalizer([], 2, FS).process(y)
    np.testing.assert_array_equal(x, y)
    eq = Equalizer(BANDS, 2, FS)
    a = x.copy()
    eq.process(a)
    eq.reset()
    b = x.copy()
    eq.process(b)
    np.testing.assert_array_equal(a, b)


def test_eq_validation() -> None:
    eq = Equalizer(BANDS, 2, FS)
    with pytest.raises(ValueError, match="unknown eq parameter"):
        eq.set_params(gain=3.0)
    with pytest.raises(ValueError, match="3 band"):
        eq.set_params(band7_gain_db=3.0)
    with pytest.raises(ValueError, match="Nyquist"):
        eq.set_params(band0_freq=30000.0)
    with pytest.raises(ValueError, match="channel"):
        eq.process(np.zeros((1, 10), np.float32))
    assert eq.bands == tuple(BANDS)  # a rejected change leaves the EQ as it was
