"""The sample loops of the DSP package, as small undecorated functions plus their numba versions.

Each kernel takes only arrays and scalars, writes its output into preallocated arrays and
allocates nothing. ``_name`` is the plain Python function (tests run it on short inputs, which
is what ``NUMBA_DISABLE_JIT=1`` would do) and ``name`` is the same function compiled with
``numba.njit(nogil=True, cache=True, error_model="numpy")`` at import time of this module
(compilation itself is lazy, on the first call; ``cache=True`` keeps the machine code in
``__pycache__``). The numpy error model makes a float division by zero give ``inf``/``nan``
instead of raising; without it numba guards every division with a check, and LLVM cannot
vectorize a loop that contains one. Kernels that call a helper call its compiled version
(``log2``, not ``_log2``), which is the plain function again under ``NUMBA_DISABLE_JIT=1``.

Nothing here validates its arguments: the public wrappers in ``filters``, ``smoothing``,
``effects`` and ``meters`` do, and they are the only callers. Common conventions:

- audio blocks are float32, shaped (channels, frames), C-contiguous, processed in place unless
  an ``out`` array is given;
- filter state and accumulators are float64;
- a **linear parameter ramp** is given as ``(p0, p1, ramp_len)``: parameter ``i`` at frame ``n``
  of the block is ``p0[i] + (p1[i] - p0[i]) * (n + 1) / ramp_len`` for ``n < ramp_len`` and
  ``p1[i]`` afterwards (see :class:`realtime.dsp.smoothing.Ramp`, which splits a ramp that spans
  several blocks into such pieces);
- compiled, ``float(x[c, n])`` of a float32 sample stays float32 (numba's typing), so an
  expression of two such values (``v * v``) rounds to float32 where plain Python would not; the
  kernels keep this where they had it, and the Python/compiled comparisons allow for it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numba
import numpy as np
from numba.extending import intrinsic, overload
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")

# ITU-R BS.1770-4 Annex 2: the order-48, 4-phase interpolation FIR for 4x oversampling
# (phase p, tap k multiplies the sample k steps in the past).
TRUE_PEAK_TAPS: F64 = np.array(
    [
        [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000, -0.0594482421875,
         0.1373291015625, 0.9721679687500, -0.1022949218750, 0.0476074218750, -0.0266113281250,
         0.0148925781250, -0.0083007812500],
        [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250, -0.1665039062500,
         0.4650878906250, 0.7797851562500, -0.2003173828125, 0.1015625000000, -0.0582275390625,
         0.0330810546875, -0.0189208984375],
        [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000, -0.2003173828125,
         0.7797851562500, 0.4650878906250, -0.1665039062500, 0.0891113281250, -0.0517578125000,
         0.0292968750000, -0.0291748046875],
        [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750, -0.1022949218750,
         0.9721679687500, 0.1373291015625, -0.0594482421875, 0.0332031250000, -0.0196533203125,
         0.0109863281250, 0.0017089843750],
    ],
    dtype=np.float64,
)  # fmt: skip
TRUE_PEAK_HISTORY = 16
"""Length of the per-channel ring of past samples the true-peak FIR reads (a power of two ≥ 12)."""


# --------------------------------------------------------------------------------------------
# log2 and exp2 that LLVM can vectorize
# --------------------------------------------------------------------------------------------
#
# libm's log10/exp cost tens of cycles a call and keep a loop scalar. These are multiply-adds on
# the float's exponent and mantissa: |log2 error| < 2e-13 (absolute) and exp2's relative error
# < 4e-13, far below what a float32 signal or a gain in dB can show. The bit casts are an
# LLVM ``bitcast`` in compiled code (an intrinsic behind an overload) and ``struct`` in Python.


def float_bits(value: float) -> int:
    """The IEEE 754 bits of a float64, as a signed int64."""
    bits: int = struct.unpack("<q", struct.pack("<d", value))[0]
    return bits


def bits_float(bits: int) -> float:
    """The float64 whose IEEE 754 bits are ``bits`` (a signed int64)."""
    value: float = struct.unpack("<d", struct.pack("<q", bits))[0]
    return value


def _bitcast_f64_i64_typer(typingctx: Any, value: Any) -> Any:  # pragma: no cover - compiled only
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(numba.types.int64))

    return numba.types.int64(numba.types.float64), codegen


def _bitcast_i64_f64_typer(typingctx: Any, bits: Any) -> Any:  # pragma: no cover - compiled only
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(numba.types.float64))

    return numba.types.float64(numba.types.int64), codegen


_bitcast_f64_i64: Any = intrinsic(_bitcast_f64_i64_typer)
_bitcast_i64_f64: Any = intrinsic(_bitcast_i64_f64_typer)


def _float_bits_jit(value: Any) -> Any:  # pragma: no cover - compiled only
    def impl(value: Any) -> Any:  # the same signature as the typing function's, as numba requires
        return _bitcast_f64_i64(value)

    return impl


def _bits_float_jit(bits: Any) -> Any:  # pragma: no cover - compiled only
    def impl(bits: Any) -> Any:
        return _bitcast_i64_f64(bits)

    return impl


overload(float_bits, jit_options={"nogil": True})(_float_bits_jit)
overload(bits_float, jit_options={"nogil": True})(_bits_float_jit)


_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD  # float_bits(sqrt(0.5))
_LN2 = math.log(2.0)
_TWO_OVER_LN2 = 2.0 / _LN2


def _log2(value: float) -> float:
    """log2 of a positive, finite, normal float64 (other inputs give a finite, meaningless value).

    ``value = 2^k · m`` with ``m`` in [√½, √2), then ``ln m = 2 atanh t`` with
    ``t = (m - 1)/(m + 1)``, |t| ≤ 0.172, summed to t¹⁵.
    """
    b = float_bits(value)
    k = (b - _SQRT_HALF_BITS) >> 52
    m = bits_float(b - (k << 52))
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    p = 1.0 / 15.0
    p = p * t2 + 1.0 / 13.0
    p = p * t2 + 1.0 / 11.0
    p = p * t2 + 1.0 / 9.0
    p = p * t2 + 1.0 / 7.0
    p = p * t2 + 1.0 / 5.0
    p = p * t2 + 1.0 / 3.0
    p = p * t2 + 1.0
    return float(k) + _TWO_OVER_LN2 * t * p


def _exp2(value: float) -> float:
    """2^value, with ``value`` clamped to [-1022, 1023] (so the result is a normal float64).

    ``value = k + f`` with ``k`` the nearest integer and |f| ≤ ½; ``2^f = e^(f ln 2)`` by its
    Taylor series to the 10th power; ``2^k`` is built from its exponent bits.
    """
    v = min(max(value, -1022.0), 1023.0)
    k = math.floor(v + 0.5)
    y = (v - k) * _LN2
    p = 1.0 / 3628800.0
    p = p * y + 1.0 / 362880.0
    p = p * y + 1.0 / 40320.0
    p = p * y + 1.0 / 5040.0
    p = p * y + 1.0 / 720.0
    p = p * y + 1.0 / 120.0
    p = p * y + 1.0 / 24.0
    p = p * y + 1.0 / 6.0
    p = p * y + 0.5
    p = p * y + 1.0
    p = p * y + 1.0
    return p * bits_float((int(k) + 1023) << 52)


# --------------------------------------------------------------------------------------------
# Biquad cascade (transposed direct form II, float64 state and accumulation)
# --------------------------------------------------------------------------------------------


def _biquad_sos(x: F32, sos: F64, chunk: int, state: F64, y: F32) -> None:
    """Filter ``x`` through a cascade of biquads into ``y`` (``y`` may be ``x``).

    ``sos`` is (sets, sections, 6) with rows ``(b0, b1, b2, 1, a1, a2)``; coefficient set ``k``
    is used for frames ``[k*chunk, (k+1)*chunk)`` and the last set for the rest of the block
    (one set is a plain static filter; several interpolate a parameter change). ``state`` is
    (channels, sections, 2), carried across calls. Each sample runs through all sections in
    float64 before it is stored (sample-major order also lets the CPU overlap the sections'
    recurrences, which a section-major loop cannot).

    Channels go in pairs, and the first three sections' coefficients and state live in local
    variables (registers) for the whole run of frames: six independent recurrences per frame,
    none of them through memory. Sections after the third run from ``state`` as they are. The
    arithmetic per sample is the same as one section at a time, so the result is bit for bit
    that of the straightforward loop.
    """
    channels, frames = x.shape
    sets = sos.shape[0]
    for k in range(sets):
        start = k * chunk
        stop = frames if k == sets - 1 else min(frames, start + chunk)
        c = 0
        while c + 1 < channels:
            biquad_run2(x, sos, k, start, stop, state, y, c)
            c += 2
        if c < channels:
            biquad_run1(x, sos, k, start, stop, state, y, c)


def _section(sos: F64, k: int, s: int) -> tuple[float, float, float, float, float]:
    """``(b0, b1, b2, a1, a2)`` of section ``s`` of set ``k``; an identity section past the end."""
    if s >= sos.shape[1]:
        return 1.0, 0.0, 0.0, 0.0, 0.0
    return sos[k, s, 0], sos[k, s, 1], sos[k, s, 2], sos[k, s, 4], sos[k, s, 5]


def _section_state(state: F64, c: int, s: int) -> tuple[float, float]:
    if s >= state.shape[1]:
        return 0.0, 0.0
    return state[c, s, 0], state[c, s, 1]


def _store_state(state: F64, c: int, s: int, z0: float, z1: float) -> None:
    if s < state.shape[1]:
        state[c, s, 0] = z0
        state[c, s, 1] = z1


def _biquad_run1(x: F32, sos: F64, k: int, start: int, stop: int, state: F64, y: F32, c: int) -> None:
    """Frames ``[start, stop)`` of channel ``c`` through set ``k`` (see :func:`_biquad_sos`)."""
    sections = sos.shape[1]
    p0, p1, p2, p4, p5 = section(sos, k, 0)
    q0, q1, q2, q4, q5 = section(sos, k, 1)
    r0, r1, r2, r4, r5 = section(sos, k, 2)
    u0, u1 = section_state(state, c, 0)
    v0, v1 = section_state(state, c, 1)
    w0, w1 = section_state(state, c, 2)
    xc = x[c, start:stop]  # views indexed from 0: numba then skips negative-index wraparound
    yc = y[c, start:stop]
    for n in range(stop - start):
        a = float(xc[n])
        out = p0 * a + u0
        u0 = p1 * a - p4 * out + u1
        u1 = p2 * a - p5 * out
        a = out
        out = q0 * a + v0
        v0 = q1 * a - q4 * out + v1
        v1 = q2 * a - q5 * out
        a = out
        out = r0 * a + w0
        w0 = r1 * a - r4 * out + w1
        w1 = r2 * a - r5 * out
        a = out
        for s in range(3, sections):
            out = sos[k, s, 0] * a + state[c, s, 0]
            state[c, s, 0] = sos[k, s, 1] * a - sos[k, s, 4] * out + state[c, s, 1]
            state[c, s, 1] = sos[k, s, 2] * a - sos[k, s, 5] * out
            a = out
        yc[n] = a
    store_state(state, c, 0, u0, u1)
    store_state(state, c, 1, v0, v1)
    store_state(state, c, 2, w0, w1)


def _biquad_run2(x: F32, sos: F64, k: int, start: int, stop: int, state: F64, y: F32, c: int) -> None:
    """Channels ``c`` and ``c + 1`` together, as :func:`_biquad_run1` does one."""
    sections = sos.shape[1]
    d = c + 1
    p0, p1, p2, p4, p5 = section(sos, k, 0)
    q0, q1, q2, q4, q5 = section(sos, k, 1)
    r0, r1, r2, r4, r5 = section(sos, k, 2)
    u0, u1 = section_state(state, c, 0)
    v0, v1 = section_state(state, c, 1)
    w0, w1 = section_state(state, c, 2)
    e0, e1 = section_state(state, d, 0)
    f0, f1 = section_state(state, d, 1)
    g0, g1 = section_state(state, d, 2)
    xc = x[c, start:stop]
    xd = x[d, start:stop]
    yc = y[c, start:stop]
    yd = y[d, start:stop]
    for n in range(stop - start):
        a = float(xc[n])
        b = float(xd[n])
        out = p0 * a + u0
        otb = p0 * b + e0
        u0 = p1 * a - p4 * out + u1
        e0 = p1 * b - p4 * otb + e1
        u1 = p2 * a - p5 * out
        e1 = p2 * b - p5 * otb
        a = out
        b = otb
        out = q0 * a + v0
        otb = q0 * b + f0
        v0 = q1 * a - q4 * out + v1
        f0 = q1 * b - q4 * otb + f1
        v1 = q2 * a - q5 * out
        f1 = q2 * b - q5 * otb
        a = out
        b = otb
        out = r0 * a + w0
        otb = r0 * b + g0
        w0 = r1 * a - r4 * out + w1
        g0 = r1 * b - r4 * otb + g1
        w1 = r2 * a - r5 * out
        g1 = r2 * b - r5 * otb
        a = out
        b = otb
        for s in range(3, sections):
            out = sos[k, s, 0] * a + state[c, s, 0]
            state[c, s, 0] = sos[k, s, 1] * a - sos[k, s, 4] * out + state[c, s, 1]
            state[c, s, 1] = sos[k, s, 2] * a - sos[k, s, 5] * out
            a = out
            otb = sos[k, s, 0] * b + state[d, s, 0]
            state[d, s, 0] = sos[k, s, 1] * b - sos[k, s, 4] * otb + state[d, s, 1]
            state[d, s, 1] = sos[k, s, 2] * b - sos[k, s, 5] * otb
            b = otb
        yc[n] = a
        yd[n] = b
    store_state(state, c, 0, u0, u1)
    store_state(state, c, 1, v0, v1)
    store_state(state, c, 2, w0, w1)
    store_state(state, d, 0, e0, e1)
    store_state(state, d, 1, f0, f1)
    store_state(state, d, 2, g0, g1)


# --------------------------------------------------------------------------------------------
# Gains
# --------------------------------------------------------------------------------------------


def _apply_gain_ramp(block: F32, g0: F64, g1: F64, ramp_len: int) -> None:
    """Multiply channel ``c`` of ``block`` in place by a gain ramping linearly from ``g0[c]``.

    The gain at frame ``n < ramp_len`` is ``g0 + (g1 - g0)(n + 1)/ramp_len`` and ``g1`` after.
    """
    channels, frames = block.shape
    ramp = min(ramp_len, frames)
    for c in range(channels):
        a = g0[c]
        b = g1[c]
        if ramp > 0:
            step = (b - a) / ramp_len
            for n in range(ramp):
                block[c, n] = block[c, n] * (a + step * (n + 1))
        if b != 1.0:
            # a view indexed from 0: numba then drops the negative-index wraparound, and the loop
            # vectorizes
            rest = block[c, ramp:]
            for n in range(rest.shape[0]):
                rest[n] = rest[n] * b


# --------------------------------------------------------------------------------------------
# Compressor
# --------------------------------------------------------------------------------------------


def _compressor(
    x: F32,
    detector: F64,
    smoothed: F64,
    threshold_db: float,
    ratio: float,
    knee_db: float,
    attack: float,
    release: float,
    rms_coef: float,
    use_rms: bool,
    makeup0: float,
    makeup1: float,
    ramp_len: int,
    gain_db_out: F64,
    gain: F64,
) -> None:
    """Feed-forward compressor with a linked (max over channels) detector, in place.

    Level: the instantaneous ``x²`` (peak) or its one-pole mean (RMS, coefficient ``rms_coef``,
    state ``detector[c]``). Gain computer (Giannoulis, Massberg & Reiss 2012) with a quadratic
    soft knee of width ``knee_db``; its gain reduction ``r`` (dB, >= 0) goes through their
    *smooth decoupled* peak detector: ``h = max(r, release·h + (1 - release)·r)`` then
    ``s = attack·s + (1 - attack)·h`` (state ``smoothed = (s, h)``), so a crest is held and
    released slowly while the attack stays a clean one-pole. The make-up gain (linear, ramped
    ``makeup0 → makeup1``) is applied on top. ``gain_db_out[n]`` receives ``-s`` (≤ 0 dB);
    ``gain`` (at least ``frames`` long) is scratch for the linear gain.

    Three passes over the block: the level and the gain computer (no dependence between frames:
    vectorized, with :func:`log2`), the detector's recurrence (the only sequential part), then
    the gain ``10^(-s/20)`` (with :func:`exp2`) applied to every channel.
    """
    channels, frames = x.shape
    slope = 1.0 / ratio - 1.0
    # below the knee's lower edge the gain computer is 0 dB
    knee_floor = max(1e-30, 10.0 ** ((threshold_db - 0.5 * knee_db) / 10.0))
    db_per_octave = 10.0 * math.log10(2.0)  # 10·log10(v) = db_per_octave · log2(v)
    level = gain_db_out
    # pass 1: linked level, then the static curve's gain reduction r (dB)
    for n in range(frames):
        level[n] = 0.0
    for c in range(channels):
        if use_rms:
            d = detector[c]
            for n in range(frames):
                v = float(x[c, n])
                d = rms_coef * d + (1.0 - rms_coef) * v * v
                level[n] = max(level[n], d)
            detector[c] = d
        else:
            for n in range(frames):
                v = float(x[c, n])
                level[n] = max(level[n], v * v)
    for n in range(frames):
        lv = level[n]
        over = db_per_octave * log2(max(lv, 1e-300)) - threshold_db
        t = over + 0.5 * knee_db
        if 2.0 * abs(over) < knee_db:
            r = -slope * t * t / (2.0 * knee_db)
        elif over > 0.0:
            r = -slope * over
        else:
            r = 0.0
        level[n] = r if lv > knee_floor else 0.0
    # pass 2: smooth decoupled peak detector (in place: r → -s)
    s = smoothed[0]
    h = smoothed[1]
    for n in range(frames):
        r = level[n]
        h = max(r, release * h + (1.0 - release) * r)
        s = attack * s + (1.0 - attack) * h
        if s < 1e-9:  # flush the tail of a release: no denormals, and exactly unity gain
            s = 0.0
            if h < 1e-9:
                h = 0.0
        gain_db_out[n] = -s
    smoothed[0] = s
    smoothed[1] = h
    # pass 3: linear gain with make-up, applied to each channel (exp2(0) is exactly 1). Loops
    # start at 0, where numba knows an index is not negative (no wraparound check to vectorize).
    to_octaves = math.log2(10.0) / 20.0
    for n in range(frames):
        gain[n] = exp2(gain_db_out[n] * to_octaves) * makeup1
    for n in range(min(ramp_len, frames)):
        mk = makeup0 + (makeup1 - makeup0) * (n + 1) / ramp_len
        gain[n] = exp2(gain_db_out[n] * to_octaves) * mk
    for c in range(channels):
        for n in range(frames):
            x[c, n] = x[c, n] * gain[n]


# --------------------------------------------------------------------------------------------
# Delay
# --------------------------------------------------------------------------------------------


def _delay(
    x: F32,
    buf: F32,
    pos: I64,
    d_old: int,
    d_new: int,
    p0: F64,
    p1: F64,
    ramp_len: int,
) -> None:
    """Feedback delay line, in place: ``y = (1 - mix)·x + mix·d`` and ``buf ← x + feedback·d``.

    ``d`` reads the ring ``buf`` (channels, length) at two delays, blended by the tap weight:
    ``d = (1 - t)·buf[w - d_old] + t·buf[w - d_new]`` (a time change crossfades between taps).
    Ramped parameters ``p = (mix, feedback, t)``. ``pos[0]`` is the write index.
    """
    channels, frames = x.shape
    length = buf.shape[1]
    w = pos[0]
    for n in range(frames):
        if n < ramp_len:
            f = (n + 1) / ramp_len
            mix = p0[0] + (p1[0] - p0[0]) * f
            fb = p0[1] + (p1[1] - p0[1]) * f
            t = p0[2] + (p1[2] - p0[2]) * f
        else:
            mix = p1[0]
            fb = p1[1]
            t = p1[2]
        r_old = w - d_old
        if r_old < 0:
            r_old += length
        r_new = w - d_new
        if r_new < 0:
            r_new += length
        for c in range(channels):
            d = (1.0 - t) * float(buf[c, r_old]) + t * float(buf[c, r_new])
            v = float(x[c, n])
            buf[c, w] = v + fb * d
            x[c, n] = (1.0 - mix) * v + mix * d
        w += 1
        if w == length:
            w = 0
    pos[0] = w


# --------------------------------------------------------------------------------------------
# Reverb (Freeverb topology)
# --------------------------------------------------------------------------------------------


def _freeverb(
    x: F32,
    comb_buf: F64,
    comb_len: I64,
    comb_idx: I64,
    comb_store: F64,
    ap_buf: F64,
    ap_len: I64,
    ap_idx: I64,
    wet_out: F64,
    input_gain: float,
    p0: F64,
    p1: F64,
    ramp_len: int,
) -> None:
    """Schroeder/Moorer reverb as in Jezar's Freeverb, in place.

    The input is the channel sum times ``input_gain``; each channel ``c`` has its own bank of
    parallel lowpass-feedback combs (``comb_*[c, k]``) followed by series allpasses
    (``ap_*[c, k]``, feedback 0.5), with slightly different lengths per channel for
    decorrelation. Output ``y_c = dry·x_c + wet1·r_c + wet2·mean(r_others)``. Ramped
    parameters ``p = (wet1, wet2, dry, feedback, damp)``. ``wet_out`` is a (channels,) scratch.
    """
    channels, frames = x.shape
    n_comb = comb_buf.shape[1]
    n_ap = ap_buf.shape[1]
    for n in range(frames):
        if n < ramp_len:
            f = (n + 1) / ramp_len
            wet1 = p0[0] + (p1[0] - p0[0]) * f
            wet2 = p0[1] + (p1[1] - p0[1]) * f
            dry = p0[2] + (p1[2] - p0[2]) * f
            fb = p0[3] + (p1[3] - p0[3]) * f
            damp = p0[4] + (p1[4] - p0[4]) * f
        else:
            wet1 = p1[0]
            wet2 = p1[1]
            dry = p1[2]
            fb = p1[3]
            damp = p1[4]
        inp = 0.0
        for c in range(channels):
            inp += float(x[c, n])
        inp *= input_gain
        total = 0.0
        for c in range(channels):
            acc = 0.0
            for k in range(n_comb):
                i = comb_idx[c, k]
                out = comb_buf[c, k, i]
                store = out * (1.0 - damp) + comb_store[c, k] * damp
                if abs(store) < 1e-30:
                    store = 0.0
                comb_store[c, k] = store
                comb_buf[c, k, i] = inp + store * fb
                i += 1
                if i == comb_len[c, k]:
                    i = 0
                comb_idx[c, k] = i
                acc += out
            for k in range(n_ap):
                i = ap_idx[c, k]
                bufout = ap_buf[c, k, i]
                stored = acc + bufout * 0.5
                if abs(stored) < 1e-30:
                    stored = 0.0
                ap_buf[c, k, i] = stored
                acc = bufout - acc
                i += 1
                if i == ap_len[c, k]:
                    i = 0
                ap_idx[c, k] = i
            wet_out[c] = acc
            total += acc
        for c in range(channels):
            if channels > 1:
                cross = (total - wet_out[c]) / (channels - 1)
                r = wet1 * wet_out[c] + wet2 * cross
            else:
                r = (wet1 + wet2) * wet_out[c]
            x[c, n] = dry * float(x[c, n]) + r


# --------------------------------------------------------------------------------------------
# True peak (BS.1770-4 Annex 2) and the true-peak look-ahead limiter
# --------------------------------------------------------------------------------------------


def _true_peak(x: F32, hist: F64, pos: I64, taps: F64, peak: F64) -> None:
    """Raise ``peak[c]`` to the largest ``|sample|`` or 4x-interpolated value of channel ``c``.

    ``hist`` (channels, 16) rings the last input samples (write index ``pos[0]``, shared by all
    channels), so interpolation continues seamlessly across blocks.
    """
    channels, frames = x.shape
    n_phase, n_tap = taps.shape
    h = pos[0]
    for n in range(frames):
        for c in range(channels):
            v = float(x[c, n])
            hist[c, h] = v
            m = abs(v)
            for p in range(n_phase):
                acc = 0.0
                for k in range(n_tap):
                    acc += taps[p, k] * hist[c, (h - k) & 15]
                m = max(m, abs(acc))
            if m > peak[c]:
                peak[c] = m
        h = (h + 1) & 15
    pos[0] = h


def _limiter(
    x: F32,
    hist: F64,
    delay_buf: F32,
    box: F64,
    dq_val: F64,
    dq_time: I64,
    istate: I64,
    fstate: F64,
    taps: F64,
    threshold: float,
    release: float,
    hold: int,
    gain_out: F64,
) -> None:
    """True-peak look-ahead brickwall limiter, in place (output delayed by ``delay_buf.shape[1]``).

    Per frame ``n``: the linked true peak ``tp`` (max over channels of ``|x|`` and the four
    interpolated phases of the BS.1770 FIR over the last 12 samples) gives a required gain
    ``req = min(1, threshold/tp)``; a running minimum of ``req`` over the last ``hold`` frames
    (monotonic deque ``dq_*``), a moving average over ``box.shape[0]`` frames (the attack ramp) and
    a one-pole ``release`` on rising gain give the gain applied to the frame leaving the delay
    line. With ``delay = attack + 11`` and ``hold = delay + 1`` every gain applied to the 12 frames
    feeding an interpolated point is ≤ the gain that point required.

    ``istate = (hist_pos, delay_pos, dq_head, dq_size, time, box_pos)``,
    ``fstate = (box_sum, gain)``; ``gain_out[n]`` receives the applied gain.
    """
    channels, frames = x.shape
    n_phase, n_tap = taps.shape
    delay = delay_buf.shape[1]
    attack = box.shape[0]
    cap = dq_val.shape[0]
    h = istate[0]
    dp = istate[1]
    head = istate[2]
    size = istate[3]
    t = istate[4]
    bp = istate[5]
    box_sum = fstate[0]
    g = fstate[1]
    for n in range(frames):
        tp = 0.0
        for c in range(channels):
            v = float(x[c, n])
            hist[c, h] = v
            tp = max(tp, abs(v))
            for p in range(n_phase):
                acc = 0.0
                for k in range(n_tap):
                    acc += taps[p, k] * hist[c, (h - k) & 15]
                tp = max(tp, abs(acc))
        h = (h + 1) & 15
        req = 1.0 if tp <= threshold else threshold / tp
        # running minimum over the last `hold` frames. The deque holds at most `hold` entries
        # before the push (their times are distinct and > t - 1 - hold), so `head + size`
        # stays below 2·cap and one subtraction wraps an index (no `%` in the hot loop).
        while size > 0:
            last = head + size - 1
            if last >= cap:
                last -= cap
            if not dq_val[last] >= req:
                break
            size -= 1
        tail = head + size
        if tail >= cap:
            tail -= cap
        dq_val[tail] = req
        dq_time[tail] = t
        size += 1
        while dq_time[head] <= t - hold:
            head += 1
            if head == cap:
                head = 0
            size -= 1
        low = dq_val[head]
        # moving average (attack ramp); the sum is recomputed exactly once per lap
        box_sum += low - box[bp]
        box[bp] = low
        bp += 1
        if bp == attack:
            bp = 0
            box_sum = 0.0
            for i in range(attack):
                box_sum += box[i]
        target = box_sum / attack
        if target > 1.0:
            target = 1.0
        # release
        g = target if target < g else target + release * (g - target)
        gain_out[n] = g
        for c in range(channels):
            out = delay_buf[c, dp]
            delay_buf[c, dp] = x[c, n]
            x[c, n] = float(out) * g
        dp += 1
        if dp == delay:
            dp = 0
        t += 1
    istate[0] = h
    istate[1] = dp
    istate[2] = head
    istate[3] = size
    istate[4] = t
    istate[5] = bp
    fstate[0] = box_sum
    fstate[1] = g


def _bank_peak(x: F32, n: int, hist: F64, h: int, taps: F64, level: F64) -> None:
    """:func:`_limiter_bank`'s detector at frame ``n``, general case: ``level[i]`` = listener ``i``'s
    linked peak over channels of ``|x|`` and of the interpolated phases (``hist[c, h]`` receives
    the frame). The 12 taps are written out, so that each sum stays in a register and the loop
    over listeners is the innermost one (it vectorizes); the order of the sum is :func:`_limiter`'s.
    """
    listeners, channels, _ = x.shape
    n_phase = taps.shape[0]
    for i in range(listeners):
        level[i] = 0.0
    for c in range(channels):
        for i in range(listeners):
            level[i] = max(level[i], abs(float(x[i, c, n])))
        if n_phase == 0:
            continue
        for i in range(listeners):
            hist[c, h, i] = float(x[i, c, n])
        h0 = hist[c, h]
        h1 = hist[c, (h - 1) & 15]
        h2 = hist[c, (h - 2) & 15]
        h3 = hist[c, (h - 3) & 15]
        h4 = hist[c, (h - 4) & 15]
        h5 = hist[c, (h - 5) & 15]
        h6 = hist[c, (h - 6) & 15]
        h7 = hist[c, (h - 7) & 15]
        h8 = hist[c, (h - 8) & 15]
        h9 = hist[c, (h - 9) & 15]
        h10 = hist[c, (h - 10) & 15]
        h11 = hist[c, (h - 11) & 15]
        for p in range(n_phase):
            t0, t1, t2, t3 = taps[p, 0], taps[p, 1], taps[p, 2], taps[p, 3]
            t4, t5, t6, t7 = taps[p, 4], taps[p, 5], taps[p, 6], taps[p, 7]
            t8, t9, t10, t11 = taps[p, 8], taps[p, 9], taps[p, 10], taps[p, 11]
            for i in range(listeners):
                a = 0.0
                a += t0 * h0[i]
                a += t1 * h1[i]
                a += t2 * h2[i]
                a += t3 * h3[i]
                a += t4 * h4[i]
                a += t5 * h5[i]
                a += t6 * h6[i]
                a += t7 * h7[i]
                a += t8 * h8[i]
                a += t9 * h9[i]
                a += t10 * h10[i]
                a += t11 * h11[i]
                level[i] = max(level[i], abs(a))


def _limiter_bank(
    x: F32,
    hist: F64,
    delay_buf: F32,
    box: F64,
    ring: F64,
    suffix: F64,
    prefix: F64,
    box_sum: F64,
    gain: F64,
    level: F64,
    istate: I64,
    taps: F64,
    threshold: float,
    release: float,
    gain_out: F64,
) -> None:
    """:func:`_limiter` for many listeners with the same settings, in place on ``x`` (L, C, frames).

    Listener ``l``'s output is bit for bit what its own :func:`_limiter` would produce: every
    floating-point operation is the same, in the same order. What differs is the layout and the
    loop order, so that the work vectorizes *across listeners*: the state is stored listener-last
    (``hist`` (C, 16, L), ``delay_buf`` (delay, C, L), ``box`` (attack, L), per-listener vectors
    ``prefix``, ``box_sum``, ``gain`` (L,), scratch ``level`` (L,)), the loop runs over
    frames and, inside, over listeners, and the integer state (ring positions) is shared, since
    every listener advances by the same frames: ``istate = (hist_pos, delay_pos, hold_pos,
    box_pos)``. ``gain_out[n, l]`` (at least ``frames`` rows) receives the applied gain.

    The running minimum over the last ``hold`` frames is van Herk / Gil-Werman's instead of a
    monotonic deque, which is branch-free: time is cut into runs of ``hold`` frames; ``ring``
    (hold, L) collects the current run's required gains and ``prefix`` their running minimum;
    ``suffix`` (hold + 1, L) holds the suffix minima of the previous run (row ``hold`` is 1.0,
    which no required gain exceeds, as is the initial state). The window ending at position ``j`` of
    the current run is the previous run from ``j + 1`` on plus the current run up to ``j``:
    ``min(suffix[j + 1], prefix)``, the same value the deque returns.
    """
    listeners, channels, frames = x.shape
    n_phase = taps.shape[0]  # taps is (phases, 12): TRUE_PEAK_TAPS, or no phase for sample peaks
    delay = delay_buf.shape[0]
    attack = box.shape[0]
    hold = ring.shape[0]
    h = istate[0]
    dp = istate[1]
    j = istate[2]
    bp = istate[3]
    for n in range(frames):
        # linked peak: max over channels of |x| and of the interpolated phases
        if n_phase == 0 and channels == 2:
            for i in range(listeners):
                tp = max(0.0, abs(float(x[i, 0, n])))
                level[i] = max(tp, abs(float(x[i, 1, n])))
        else:
            bank_peak(x, n, hist, h, taps, level)
        h = (h + 1) & 15
        # required gain → running minimum → attack (moving average) → release
        last_of_box = bp + 1 == attack
        for i in range(listeners):
            tp = level[i]
            req = 1.0 if tp <= threshold else threshold / tp
            ring[j, i] = req
            pre = min(prefix[i], req)
            prefix[i] = pre
            low = min(suffix[j + 1, i], pre)
            total = box_sum[i] + (low - box[bp, i])
            box_sum[i] = total
            box[bp, i] = low
            if not last_of_box:
                target = total / attack
                if target > 1.0:
                    target = 1.0
                g = gain[i]
                g = target if target < g else target + release * (g - target)
                gain[i] = g
                gain_out[n, i] = g
        if last_of_box:  # the moving sum is recomputed exactly once per lap
            for i in range(listeners):
                box_sum[i] = 0.0
            for k in range(attack):
                for i in range(listeners):
                    box_sum[i] += box[k, i]
            for i in range(listeners):
                target = box_sum[i] / attack
                if target > 1.0:
                    target = 1.0
                g = gain[i]
                g = target if target < g else target + release * (g - target)
                gain[i] = g
                gain_out[n, i] = g
        bp = 0 if last_of_box else bp + 1
        j += 1
        if j == hold:  # a run is complete: its suffix minima serve the next run
            j = 0
            for i in range(listeners):
                prefix[i] = 1.0
            for k in range(hold - 1, -1, -1):
                for i in range(listeners):
                    suffix[k, i] = min(ring[k, i], suffix[k + 1, i])
        # look-ahead delay line, with the gain applied on the way out
        for c in range(channels):
            for i in range(listeners):
                out = delay_buf[dp, c, i]
                delay_buf[dp, c, i] = x[i, c, n]
                x[i, c, n] = float(out) * gain_out[n, i]
        dp += 1
        if dp == delay:
            dp = 0
    istate[0] = h
    istate[1] = dp
    istate[2] = j
    istate[3] = bp


# --------------------------------------------------------------------------------------------
# Compiled versions
# --------------------------------------------------------------------------------------------

log2: Any = _jit(_log2)
exp2: Any = _jit(_exp2)
section: Any = _jit(_section)
section_state: Any = _jit(_section_state)
store_state: Any = _jit(_store_state)
biquad_run1: Any = _jit(_biquad_run1)
biquad_run2: Any = _jit(_biquad_run2)
biquad_sos: Any = _jit(_biquad_sos)
apply_gain_ramp: Any = _jit(_apply_gain_ramp)
compressor: Any = _jit(_compressor)
delay: Any = _jit(_delay)
freeverb: Any = _jit(_freeverb)
true_peak: Any = _jit(_true_peak)
limiter: Any = _jit(_limiter)
bank_peak: Any = _jit(_bank_peak)
limiter_bank: Any = _jit(_limiter_bank)
