"""Level units, the pan law and the fader curve. Pure numpy, cheap to import (no numba).

Conventions used by the whole DSP package:

- **dB ↔ gain**: ``gain = 10 ** (dB / 20)``. Anything at or below :data:`SILENCE_DB` (-144 dB, the
  floor of 24-bit audio), and ``-inf``, maps to a gain of exactly 0. ``gain_to_db(0) == -inf``.
- **Pan law**: constant power, -3 dB at the centre. With ``θ = (pan + 1) · π/4`` for
  ``pan ∈ [-1, 1]``, ``left = cos θ`` and ``right = sin θ``, so ``left² + right² = 1`` at every
  position: hard left is (1, 0), the centre is (√½, √½) ≈ (-3.01 dB, -3.01 dB), hard right is
  (0, 1). A mono source panned anywhere keeps the same acoustic power.
- **Fader curve**: a cubic law for UI faders, ``gain = (position / 0.8) ** 3`` with the position
  in [0, 1]: 0 is silence, 0.8 is unity (0 dB) and 1.0 is +5.81 dB. Most of the travel covers the
  useful -40…+6 dB range, like the faders of common DAWs.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FADER_UNITY",
    "SILENCE_DB",
    "db_to_fader",
    "db_to_gain",
    "fader_to_db",
    "gain_to_db",
    "pan_gains",
]

SILENCE_DB = -144.0
"""Levels at or below this many dB are treated as silence (gain 0)."""

FADER_UNITY = 0.8
"""Fader position of 0 dB in the cubic fader law."""


@overload
def db_to_gain(db: float) -> float: ...
@overload
def db_to_gain(db: NDArray[np.floating]) -> NDArray[np.float64]: ...
def db_to_gain(db: float | NDArray[np.floating]) -> float | NDArray[np.float64]:
    """Linear amplitude gain of ``db`` decibels; ``-inf`` or ≤ -144 dB gives exactly 0.

    NaN raises ``ValueError``: a NaN gain would silently poison every mix it touches.
    """
    if isinstance(db, np.ndarray):
        arr = np.asarray(db, dtype=np.float64)
        if np.isnan(arr).any():
            raise ValueError("gain in dB must not be NaN")
        with np.errstate(over="ignore"):
            out = np.power(10.0, arr / 20.0)
        out[arr <= SILENCE_DB] = 0.0
        return out
    value = float(db)
    if math.isnan(value):
        raise ValueError("gain in dB must not be NaN")
    if value <= SILENCE_DB:
        return 0.0
    return math.pow(10.0, value / 20.0)


@overload
def gain_to_db(gain: float) -> float: ...
@overload
def gain_to_db(gain: NDArray[np.floating]) -> NDArray[np.float64]: ...
def gain_to_db(gain: float | NDArray[np.floating]) -> float | NDArray[np.float64]:
    """Decibels of a linear gain (its magnitude); 0 gives ``-inf``."""
    if isinstance(gain, np.ndarray):
        arr = np.abs(np.asarray(gain, dtype=np.float64))
        with np.errstate(divide="ignore"):
            return np.asarray(20.0 * np.log10(arr), dtype=np.float64)
    value = abs(float(gain))
    if value == 0.0:
        return -math.inf
    return 20.0 * math.log10(value)


@overload
def pan_gains(pan: float) -> tuple[float, float]: ...
@overload
def pan_gains(pan: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def pan_gains(
    pan: float | NDArray[np.floating],
) -> tuple[float, float] | tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Constant-power (-3 dB centre) pan law: ``(cos θ, sin θ)`` with ``θ = (pan + 1)·π/4``.

    ``pan`` is -1 (hard left) … +1 (hard right); outside that range (or NaN) raises ``ValueError``.
    """
    if isinstance(pan, np.ndarray):
        arr = np.asarray(pan, dtype=np.float64)
        if not np.all((arr >= -1.0) & (arr <= 1.0)):
            raise ValueError("pan must be within [-1, 1]")
        angles = (arr + 1.0) * (math.pi / 4.0)
        left = np.cos(angles)
        right = np.sin(angles)
        # Exact endpoints: cos(π/2) is 6e-17, not 0, and a hard-panned source must not leak.
        left[arr == 1.0] = 0.0
        right[arr == -1.0] = 0.0
        return left, right
    value = float(pan)
    if not -1.0 <= value <= 1.0:
        raise ValueError(f"pan must be within [-1, 1], got {value}")
    if value == 1.0:
        return 0.0, 1.0
    if value == -1.0:
        return 1.0, 0.0
    theta = (value + 1.0) * (math.pi / 4.0)
    return math.cos(theta), math.sin(theta)


def fader_to_db(position: float) -> float:
    """dB of a fader position in [0, 1] under the cubic law (0 → ``-inf``, 0.8 → 0 dB, 1 → +5.81 dB)."""
    value = float(position)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"fader position must be within [0, 1], got {value}")
    if value == 0.0:
        return -math.inf
    return 60.0 * math.log10(value / FADER_UNITY)


def db_to_fader(db: float) -> float:
    """Inverse of :func:`fader_to_db`, clamped to [0, 1] (levels above +5.81 dB give 1)."""
    value = float(db)
    if math.isnan(value):
        raise ValueError("gain in dB must not be NaN")
    if value <= SILENCE_DB:
        return 0.0
    return min(1.0, FADER_UNITY * math.pow(10.0, value / 60.0))
