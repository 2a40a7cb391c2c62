"""Personal mixes for a live jam: every listener's mix of every input as one matrix product.

With N mono inputs stacked as ``X`` (N x B frames) and a gain matrix ``G`` (2L x N: rows ``2l``
and ``2l + 1`` are listener ``l``'s left and right), all L stereo mixes are ``Y = G · X`` — a
single float32 GEMM that BLAS runs far faster than per-listener loops (DESIGN.md §4: N = 128 in
~110 µs per 2.5 ms block). Gains in dB, constant-power pans, mutes and the choice of hearing
oneself are folded into ``G`` by :func:`build_gain_matrix`; :func:`mix_matrix_ramp` crossfades
from the previous tick's ``G`` to the new one inside a block, so a gain or pan change never
clicks. :func:`mix_and_limit` is a whole jam tick: the mixes, then every listener's limiter
(a :class:`~realtime.dsp.effects.LimiterBank`, one kernel call for all listeners).
:mod:`realtime.dsp.gpu` offers the mix functions on cupy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .units import db_to_gain, pan_gains

if TYPE_CHECKING:
    from .effects import LimiterBank

__all__ = ["build_gain_matrix", "mix_and_limit", "mix_matrix", "mix_matrix_ramp"]


def _check_f32_2d(name: str, arr: object) -> NDArray[np.float32]:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional, got shape {arr.shape}")
    return arr


def _check_out(out: object, shape: tuple[int, int]) -> NDArray[np.float32]:
    arr = _check_f32_2d("out", out)
    if arr.shape != shape:
        raise ValueError(f"out must be shaped {shape}, got {arr.shape}")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return arr


def mix_matrix(
    gains: NDArray[np.float32], inputs: NDArray[np.float32], out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """``Y = G · X``: gains (M x N) times inputs (N x B) into ``out`` (M x B), all float32.

    ``out`` is reused when given (no allocation per tick) and must not overlap the operands.
    """
    g = _check_f32_2d("gains", gains)
    x = _check_f32_2d("inputs", inputs)
    if g.shape[1] != x.shape[0]:
        raise ValueError(f"gains has {g.shape[1]} input column(s) but inputs has {x.shape[0]} row(s)")
    shape = (g.shape[0], x.shape[1])
    if out is None:
        result: NDArray[np.float32] = np.matmul(g, x)
        return result
    y = _check_out(out, shape)
    if np.shares_memory(y, g) or np.shares_memory(y, x):
        raise ValueError("out must not overlap gains or inputs")
    np.matmul(g, x, out=y)
    return y


def mix_matrix_ramp(
    gains_start: NDArray[np.float32],
    gains_end: NDArray[np.float32],
    inputs: NDArray[np.float32],
    out: NDArray[np.float32] | None = None,
    scratch: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Like :func:`mix_matrix` with the gains moving linearly from ``gains_start`` to ``gains_end``.

    Frame ``n`` of a B-frame block uses ``G0 + (G1 - G0)(n + 1)/B`` (so the block ends on
    ``G1``): ``Y = G0·X + ((G1 - G0)·X) ⊙ w``. Two GEMMs; ``scratch`` (M x B float32) avoids
    the temporary allocation.
    """
    g0 = _check_f32_2d("gains_start", gains_start)
    g1 = _check_f32_2d("gains_end", gains_end)
    if g0.shape != g1.shape:
        raise ValueError(f"gains_start {g0.shape} and gains_end {g1.shape} differ in shape")
    y = mix_matrix(g0, inputs, out)
    frames = y.shape[1]
    if frames == 0:
        return y
    tmp = mix_matrix(g1 - g0, inputs, scratch)
    w = np.arange(1, frames + 1, dtype=np.float32)
    w /= np.float32(frames)
    tmp *= w
    y += tmp
    return y


def mix_and_limit(
    gains: NDArray[np.float32],
    inputs: NDArray[np.float32],
    bank: LimiterBank,
    out: NDArray[np.float32],
    *,
    gains_end: NDArray[np.float32] | None = None,
    scratch: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """One live-jam tick: every listener's mix, then every listener's limiter, in place in ``out``.

    ``out = gains · inputs`` (:func:`mix_matrix`), or, when ``gains_end`` is given, the
    crossfade from ``gains`` to ``gains_end`` over the block (:func:`mix_matrix_ramp`, with
    ``scratch`` as its temporary), then ``bank.process(out)``: rows ``l·C … l·C + C - 1`` of
    ``out`` are listener ``l``'s channels (``C = bank.channels``, 2 for the stereo mixes of
    :func:`build_gain_matrix`). Two BLAS calls at most and one kernel call, whatever the number
    of listeners. Returns ``out``, which must be preallocated (2L x B float32, C-contiguous).
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a preallocated numpy array, got {type(out).__name__}")
    rows = bank.listeners * bank.channels
    g = _check_f32_2d("gains", gains)
    if g.shape[0] != rows:
        raise ValueError(
            f"gains has {g.shape[0]} row(s) but the bank limits {bank.listeners} listener(s) x "
            f"{bank.channels} channel(s) = {rows}"
        )
    if gains_end is None:
        mix_matrix(g, inputs, out)
    else:
        mix_matrix_ramp(g, gains_end, inputs, out, scratch)
    bank.process(out)
    return out


def build_gain_matrix(
    gain_db: ArrayLike,
    pan: ArrayLike = 0.0,
    *,
    mute: ArrayLike | None = None,
    self_input: Sequence[int | None] | None = None,
    self_monitor: bool | Sequence[bool] = True,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """The 2L x N matrix of L stereo personal mixes of N mono inputs.

    - ``gain_db``: (L, N) per-listener, per-input gain in dB (≤ -144 dB or ``-inf`` is silence);
      a 1-D (N,) array gives every listener the same gains.
    - ``pan``: (L, N) or (N,) or a scalar, each in [-1, 1] (constant-power law of
      :func:`realtime.dsp.units.pan_gains`).
    - ``mute``: (L, N) or (N,) booleans; a muted input is silent for that listener (or for all).
    - ``self_input[l]``: the input column that is listener ``l``'s own signal (``None`` if none);
      with ``self_monitor`` false (for everyone, or per listener) that column is silenced in
      ``l``'s mix, so players who monitor locally do not hear themselves delayed.

    Rows ``2l`` and ``2l + 1`` are listener ``l``'s left and right.
    """
    gdb = np.asarray(gain_db, dtype=np.float64)
    if gdb.ndim == 1:
        gdb = gdb[None, :]
    if gdb.ndim != 2:
        raise ValueError(f"gain_db must be shaped (listeners, inputs) or (inputs,), got {gdb.shape}")
    listeners, inputs = gdb.shape
    pans = np.broadcast_to(np.asarray(pan, dtype=np.float64), (listeners, inputs))
    gain = db_to_gain(np.ascontiguousarray(gdb))
    left, right = pan_gains(np.ascontiguousarray(pans))
    if mute is not None:
        muted = np.broadcast_to(np.asarray(mute, dtype=bool), (listeners, inputs))
        gain = np.where(muted, 0.0, gain)
    if self_input is not None:
        if len(self_input) != listeners:
            raise ValueError(f"self_input needs {listeners} entries, got {len(self_input)}")
        monitor = (
            [bool(self_monitor)] * listeners
            if isinstance(self_monitor, bool)
            else [bool(m) for m in self_monitor]
        )
        if len(monitor) != listeners:
            raise ValueError(f"self_monitor needs {listeners} entries, got {len(monitor)}")
        for listener, column in enumerate(self_input):
            if column is None or monitor[listener]:
                continue
            if not 0 <= column < inputs:
                raise ValueError(f"self_input[{listener}] = {column} is not an input column (0…{inputs - 1})")
            gain[listener, column] = 0.0
    if out is None:
        out = np.empty((2 * listeners, inputs), dtype=np.float32)
    else:
        _check_out(out, (2 * listeners, inputs))
    out[0::2] = gain * left
    out[1::2] = gain * right
    return out
