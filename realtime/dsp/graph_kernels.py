"""The sample loops of the processing graph (:mod:`.graph`), as plain functions plus numba versions.

Same conventions as :mod:`.kernels`: ``_name`` is the undecorated Python function, ``name`` the
same function compiled with ``numba.njit(nogil=True, cache=True)``; the kernels take arrays and
scalars only, write into preallocated arrays and validate nothing (the graph is the only
caller). Audio is float32 (channels, frames); arithmetic is float64, stored once as float32, so
a unity gain reproduces its input bit for bit.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

_jit = numba.njit(nogil=True, cache=True)


def _add_clip(
    out: F32,
    src: F32,
    dst0: int,
    src0: int,
    n: int,
    gain: float,
    fade_in: int,
    fade_out: int,
    pos0: int,
    clip_len: int,
) -> None:
    """Add ``n`` frames of ``src`` from frame ``src0``, times the clip's gain, into ``out`` at ``dst0``.

    ``pos0`` is the position of the first frame within the clip (``clip_len`` frames long). The
    clip gain is ``gain`` times a linear fade-in, ``min(1, i / fade_in)`` at clip frame ``i``
    (0 at the first frame), times a linear fade-out, ``min(1, (clip_len - 1 - i) / fade_out)``
    (0 at the last frame); a fade of 0 frames is no fade. ``out`` channel ``c`` reads ``src``
    channel ``min(c, src_channels - 1)``, so a mono clip feeds both channels of a stereo track.
    """
    out_channels = out.shape[0]
    src_channels = src.shape[0]
    # Frames [a, b) of this piece are outside both fades.
    a = 0
    if fade_in > 0 and pos0 < fade_in:
        a = min(n, fade_in - pos0)
    b = n
    if fade_out > 0:
        b = max(a, min(n, clip_len - fade_out - pos0))
    for c in range(out_channels):
        sc = c if c < src_channels else src_channels - 1
        for k in range(n):
            if a <= k < b:
                g = gain
            else:
                i = pos0 + k
                g = gain
                if fade_in > 0 and i < fade_in:
                    g *= i / fade_in
                r = clip_len - 1 - i
                if fade_out > 0 and r < fade_out:
                    g *= r / fade_out
            if g == 1.0:
                out[c, dst0 + k] = float(out[c, dst0 + k]) + float(src[sc, src0 + k])
            else:
                out[c, dst0 + k] = float(out[c, dst0 + k]) + float(src[sc, src0 + k]) * g


def _copy_scaled(src: F32, out: F32, n: int, scale: float) -> None:
    """``out[c, :n] = scale · src[min(c, src_channels - 1), :n]`` (``out`` may be ``src``)."""
    out_channels = out.shape[0]
    src_channels = src.shape[0]
    for c in range(out_channels):
        sc = c if c < src_channels else src_channels - 1
        for k in range(n):
            out[c, k] = float(src[sc, k]) * scale


def _accumulate(dst: F32, src: F32, n: int) -> None:
    """``dst[:, :n] += src[:, :n]``."""
    channels = dst.shape[0]
    for c in range(channels):
        for k in range(n):
            dst[c, k] = float(dst[c, k]) + float(src[c, k])


add_clip: Any = _jit(_add_clip)
copy_scaled: Any = _jit(_copy_scaled)
accumulate: Any = _jit(_accumulate)
