"""Biquad design (RBJ Audio-EQ-Cookbook) and the streaming second-order-sections filter.

Coefficients are normalized rows ``(b0, b1, b2, 1, a1, a2)`` (scipy's ``sos`` layout), float64.
Design follows Robert Bristow-Johnson's *Cookbook formulae for audio EQ biquad filter
coefficients*: ``w0 = 2π·freq/fs``, ``A = 10^(gain_db/40)``, ``alpha = sin(w0)/(2Q)`` or, for
shelves given a slope ``S``, ``alpha = sin(w0)/2 · sqrt((A + 1/A)(1/S - 1) + 2)`` (``S = 1`` is
the steepest monotonic shelf and equals ``Q = 1/√2``).

:func:`biquad_sos` runs a cascade in transposed direct form II with float64 state per channel
and section, so a signal cut into blocks of any size filters exactly as in one piece.
:func:`k_weighting_sos` gives the ITU-R BS.1770-4 K-weighting (pre-filter shelf + RLB high-pass)
at any sample rate (the analog prototypes of libebur128, which reproduce the standard's 48 kHz
table to its printed precision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import kernels
from ._validate import check_block

__all__ = [
    "FILTER_KINDS",
    "Band",
    "biquad_sos",
    "design_biquad",
    "design_sos",
    "k_weighting_sos",
    "sos_state",
]

FILTER_KINDS = ("lowpass", "highpass", "peaking", "lowshelf", "highshelf")
BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class Band:
    """One EQ band. ``q`` sets the bandwidth (all kinds); shelves may give ``slope`` instead.

    ``gain_db`` is ignored by ``lowpass``/``highpass``.
    """

    kind: str
    freq: float
    gain_db: float = 0.0
    q: float = BUTTERWORTH_Q
    slope: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FILTER_KINDS:
            raise ValueError(f"unknown filter kind {self.kind!r}; expected one of {', '.join(FILTER_KINDS)}")
        for name in ("freq", "gain_db", "q"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"band {name} must be finite")
        if self.freq <= 0.0:
            raise ValueError(f"band frequency must be > 0 Hz, got {self.freq}")
        if self.q <= 0.0:
            raise ValueError(f"band q must be > 0, got {self.q}")
        if self.slope is not None:
            if self.kind not in ("lowshelf", "highshelf"):
                raise ValueError("slope applies only to shelves")
            if not 0.0 < self.slope <= 1.0 or not math.isfinite(self.slope):
                raise ValueError(f"shelf slope must be in (0, 1], got {self.slope}")
        if not -48.0 <= self.gain_db <= 48.0:
            raise ValueError(f"band gain must be within ±48 dB, got {self.gain_db}")


def _check_rate(sample_rate: float) -> None:
    if not (math.isfinite(sample_rate) and sample_rate > 0):
        raise ValueError(f"sample rate must be positive, got {sample_rate}")


def _design(
    kind: str,
    freq: NDArray[np.float64],
    gain_db: NDArray[np.float64],
    q: NDArray[np.float64],
    use_slope: bool,
    sample_rate: float,
) -> NDArray[np.float64]:
    """Vectorized cookbook design: arrays of parameters → (len, 6) normalized rows.

    With ``use_slope`` (shelves only) the ``q`` array holds shelf slopes ``S`` instead.
    """
    w0 = 2.0 * math.pi * freq / sample_rate
    cw = np.cos(w0)
    sw = np.sin(w0)
    a = np.power(10.0, gain_db / 40.0)
    alpha = sw / 2.0 * np.sqrt((a + 1.0 / a) * (1.0 / q - 1.0) + 2.0) if use_slope else sw / (2.0 * q)
    if kind == "lowpass":
        b0 = (1.0 - cw) / 2.0
        b1 = 1.0 - cw
        b2 = b0
        a0 = 1.0 + alpha
        a1 = -2.0 * cw
        a2 = 1.0 - alpha
    elif kind == "highpass":
        b0 = (1.0 + cw) / 2.0
        b1 = -(1.0 + cw)
        b2 = b0
        a0 = 1.0 + alpha
        a1 = -2.0 * cw
        a2 = 1.0 - alpha
    elif kind == "peaking":
        b0 = 1.0 + alpha * a
        b1 = -2.0 * cw
        b2 = 1.0 - alpha * a
        a0 = 1.0 + alpha / a
        a1 = -2.0 * cw
        a2 = 1.0 - alpha / a
    elif kind == "lowshelf":
        sq = 2.0 * np.sqrt(a) * alpha
        b0 = a * ((a + 1.0) - (a - 1.0) * cw + sq)
        b1 = 2.0 * a * ((a - 1.0) - (a + 1.0) * cw)
        b2 = a * ((a + 1.0) - (a - 1.0) * cw - sq)
        a0 = (a + 1.0) + (a - 1.0) * cw + sq
        a1 = -2.0 * ((a - 1.0) + (a + 1.0) * cw)
        a2 = (a + 1.0) + (a - 1.0) * cw - sq
    elif kind == "highshelf":
        sq = 2.0 * np.sqrt(a) * alpha
        b0 = a * ((a + 1.0) + (a - 1.0) * cw + sq)
        b1 = -2.0 * a * ((a - 1.0) + (a + 1.0) * cw)
        b2 = a * ((a + 1.0) + (a - 1.0) * cw - sq)
        a0 = (a + 1.0) - (a - 1.0) * cw + sq
        a1 = 2.0 * ((a - 1.0) - (a + 1.0) * cw)
        a2 = (a + 1.0) - (a - 1.0) * cw - sq
    else:
        raise ValueError(f"unknown filter kind {kind!r}; expected one of {', '.join(FILTER_KINDS)}")
    rows = np.empty((freq.shape[0], 6), dtype=np.float64)
    rows[:, 0] = b0 / a0
    rows[:, 1] = b1 / a0
    rows[:, 2] = b2 / a0
    rows[:, 3] = 1.0
    rows[:, 4] = a1 / a0
    rows[:, 5] = a2 / a0
    return rows


def design_biquad(
    kind: str,
    freq: float,
    sample_rate: float,
    *,
    q: float | None = None,
    slope: float | None = None,
    gain_db: float = 0.0,
) -> NDArray[np.float64]:
    """One cookbook biquad as a normalized row ``(b0, b1, b2, 1, a1, a2)``.

    ``freq`` must lie strictly between 0 and Nyquist. Give ``q`` (default 1/√2) or, for shelves,
    ``slope`` — not both.
    """
    _check_rate(sample_rate)
    if q is not None and slope is not None:
        raise ValueError("give q or slope, not both")
    band = Band(kind, float(freq), float(gain_db), BUTTERWORTH_Q if q is None else float(q), slope)
    row: NDArray[np.float64] = design_sos([band], sample_rate)[0]
    return row


def design_sos(bands: Sequence[Band], sample_rate: float) -> NDArray[np.float64]:
    """A cascade of bands as (len(bands), 6) SOS rows, in order."""
    _check_rate(sample_rate)
    nyquist = sample_rate / 2.0
    sos = np.empty((len(bands), 6), dtype=np.float64)
    for i, band in enumerate(bands):
        if not band.freq < nyquist:
            raise ValueError(f"band frequency {band.freq} Hz must be below Nyquist ({nyquist} Hz)")
        sos[i] = _design(
            band.kind,
            np.array([band.freq]),
            np.array([band.gain_db]),
            np.array([band.q if band.slope is None else band.slope]),
            band.slope is not None,
            sample_rate,
        )[0]
    return sos


def design_band_trajectory(
    kind: str,
    freq: NDArray[np.float64],
    gain_db: NDArray[np.float64],
    q_or_slope: NDArray[np.float64],
    use_slope: bool,
    sample_rate: float,
) -> NDArray[np.float64]:
    """Rows for many parameter values of one band at once (used to interpolate parameter changes).

    No range checks: the caller interpolates between validated :class:`Band` values.
    """
    return _design(kind, freq, gain_db, q_or_slope, use_slope, sample_rate)


def k_weighting_sos(sample_rate: float) -> NDArray[np.float64]:
    """ITU-R BS.1770-4 K-weighting at ``sample_rate`` as two SOS rows (shelf, then RLB high-pass)."""
    _check_rate(sample_rate)
    # Stage 1: high shelf (head), analog prototype of the standard's 48 kHz table.
    f0 = 1681.974450955533
    gain = 3.999843853973347
    q = 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    # Stage 2: RLB high-pass.
    f0 = 38.13547087602444
    q = 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def sos_state(channels: int, sections: int) -> NDArray[np.float64]:
    """Zeroed filter state for :func:`biquad_sos`: (channels, sections, 2) float64."""
    if channels < 1 or sections < 0:
        raise ValueError("need at least one channel and a non-negative number of sections")
    return np.zeros((channels, sections, 2), dtype=np.float64)


def biquad_sos(
    x: NDArray[np.float32],
    sos: NDArray[np.float64],
    state: NDArray[np.float64],
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Filter a (channels, frames) float32 block through SOS rows, carrying ``state`` in place.

    ``state`` comes from :func:`sos_state` (or a previous call) and is updated, so consecutive
    blocks filter like one signal. ``out`` (same shape as ``x``; may be ``x`` itself for in-place
    filtering) is allocated when omitted. Accumulation is float64.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise TypeError("x must be a float32 array shaped (channels, frames)")
    x = np.ascontiguousarray(x)
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    if sos.ndim != 2 or sos.shape[1] != 6:
        raise ValueError(f"sos must be shaped (sections, 6), got {sos.shape}")
    if not np.allclose(sos[:, 3], 1.0):
        raise ValueError("sos rows must be normalized (a0 == 1)")
    channels, frames = x.shape
    if not isinstance(state, np.ndarray) or state.dtype != np.float64:
        raise TypeError("state must be a float64 array from sos_state()")
    if state.shape != (channels, sos.shape[0], 2) or not state.flags.c_contiguous:
        raise ValueError(
            f"state must be C-contiguous and shaped {(channels, sos.shape[0], 2)}, got {state.shape}"
        )
    if out is None:
        out = np.empty_like(x)
    else:
        check_block(out, channels, "out")
        if out.shape != x.shape:
            raise ValueError(f"out must be shaped {x.shape}, got {out.shape}")
    if frames:
        kernels.biquad_sos(x, sos.reshape(1, -1, 6), frames, state, out)
    return out
