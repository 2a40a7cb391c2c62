from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from realtime.dsp.units import SILENCE_DB, db_to_fader, db_to_gain, fader_to_db, gain_to_db, pan_gains


@pytest.mark.parametrize(
    ("value", "gain"),
    [(0.0, 1.0), (20.0, 10.0), (-20.0, 0.1), (-6.020599913279624, 0.5), (6.020599913279624, 2.0)],
)
def test_db_to_gain_known_values(value: float, gain: float) -> None:
    assert db_to_gain(value) == pytest.approx(gain, rel=1e-12)
    assert gain_to_db(gain) == pytest.approx(value, abs=1e-12)


def test_silence_floor() -> None:
    assert db_to_gain(-math.inf) == 0.0
    assert db_to_gain(SILENCE_DB) == 0.0
    assert db_to_gain(-200.0) == 0.0
    assert db_to_gain(-143.9) > 0.0
    assert gain_to_db(0.0) == -math.inf
    assert gain_to_db(-0.5) == pytest.approx(gain_to_db(0.5))


def test_arrays_match_scalars_without_warnings() -> None:
    values = np.array([-math.inf, -150.0, -144.0, -60.0, -3.0, 0.0, 12.0])
    gains = db_to_gain(values)
    assert gains.dtype == np.float64
    assert [float(g) for g in gains] == [db_to_gain(float(v)) for v in values]
    back = gain_to_db(np.array([0.0, 0.001, 1.0, 4.0]))
    assert back[0] == -math.inf
    np.testing.assert_allclose(back[1:], [-60.0, 0.0, 12.041199826559248])


def test_nan_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        db_to_gain(math.nan)
    with pytest.raises(ValueError, match="NaN"):
        db_to_gain(np.array([0.0, math.nan]))


def test_pan_law_constant_power_and_centre() -> None:
    left, right = pan_gains(0.0)
    assert left == pytest.approx(math.sqrt(0.5))
    assert right == pytest.approx(math.sqrt(0.5))
    assert gain_to_db(left) == pytest.approx(-3.0103, abs=1e-4)
    positions = np.linspace(-1.0, 1.0, 201)
    lg, rg = pan_gains(positions)
    np.testing.assert_allclose(lg**2 + rg**2, 1.0, atol=1e-15)
    assert np.all(np.diff(lg) <= 0)
    assert np.all(np.diff(rg) >= 0)
    for p, a, b in zip(positions, lg, rg, strict=True):
        assert pan_gains(float(p)) == pytest.approx((a, b), abs=1e-15)


def test_pan_endpoints_are_exact() -> None:
    assert pan_gains(-1.0) == (1.0, 0.0)
    assert pan_gains(1.0) == (0.0, 1.0)
    lg, rg = pan_gains(np.array([-1.0, 1.0]))
    assert list(lg) == [1.0, 0.0]
    assert list(rg) == [0.0, 1.0]


@pytest.mark.parametrize("bad", [-1.01, 1.5, math.nan])
def test_pan_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match="pan"):
        pan_gains(bad)
    with pytest.raises(ValueError, match="pan"):
        pan_gains(np.array([0.0, bad]))


def test_fader_curve() -> None:
    assert fader_to_db(0.0) == -math.inf
    assert fader_to_db(0.8) == pytest.approx(0.0, abs=1e-12)
    assert fader_to_db(1.0) == pytest.approx(5.81, abs=0.01)
    for pos in (0.05, 0.3, 0.5, 0.8, 0.99):
        assert db_to_fader(fader_to_db(pos)) == pytest.approx(pos)
    assert db_to_fader(-math.inf) == 0.0
    assert db_to_fader(24.0) == 1.0
    with pytest.raises(ValueError, match="fader"):
        fader_to_db(1.2)


def test_package_import_is_light() -> None:
    code = "import sys, realtime.dsp, realtime.dsp.units; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
