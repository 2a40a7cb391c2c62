"""TPDF dither for 24-bit output.

Rounding a float signal to 24 bits leaves an error that follows the signal (distortion on very
quiet material and fades). Adding triangular (TPDF) noise of ±1 LSB before rounding makes the
error signal-independent white noise at about -141 dBFS. :class:`Tpdf24` does both steps and
returns float32 samples that are exactly representable 24-bit values, so the encoders' own
rounding (:func:`realtime.media.encode.quantize_24`) leaves them unchanged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Tpdf24"]

_SCALE = float(1 << 23)


class Tpdf24:
    """Dither and round blocks to 24 bits; a seeded generator makes the noise reproducible."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self, block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``block`` (any shape) dithered and rounded to multiples of 2^-23, clipped to 24 bits."""
        x = np.asarray(block, dtype=np.float64) * _SCALE
        # The difference of two uniform [0, 1) variables is triangular on (-1, 1) LSB.
        x += self._rng.random(x.shape)
        x -= self._rng.random(x.shape)
        np.rint(x, out=x)
        np.clip(x, -_SCALE, _SCALE - 1, out=x)
        x /= _SCALE
        return x.astype(np.float32)
