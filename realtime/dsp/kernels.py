"""The sample loops of the DSP package, as small undecorated functions plus their numba versions.

Each kernel takes only arrays and scalars, writes its output into preallocated arrays and
allocates nothing. ``_name`` is the plain Python function (tests run it on short inputs, which
is what ``NUMBA_DISABLE_JIT=1`` would do) and ``name`` is the same function compiled with
``numba.njit(nogil=True, cache=True)`` at import time of this module (compilation itself is
lazy, on the first call; ``cache=True`` keeps the machine code in ``__pycache__``).

Nothing here validates its arguments: the public wrappers in ``filters``, ``smoothing``,
``effects`` and ``meters`` do, and they are the only callers. Common conventions:

- audio blocks are float32, shaped (channels, frames), C-contiguous, processed in place unless
  an ``out`` array is given;
- filter state and accumulators are float64;
- a **linear parameter ramp** is given as ``(p0, p1, ramp_len)``: parameter ``i`` at frame ``n``
  of the block is ``p0[i] + (p1[i] - p0[i]) * (n + 1) / ramp_len`` for ``n < ramp_len`` and
  ``p1[i]`` afterwards (see :class:`realtime.dsp.smoothing.Ramp`, which splits a ramp that spans
  several blocks into such pieces).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_jit = numba.njit(nogil=True, cache=True)

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
    """
    channels, frames = x.shape
    sets = sos.shape[0]
    sections = sos.shape[1]
    for c in range(channels):
        for k in range(sets):
            start = k * chunk
            stop = frames if k == sets - 1 else min(frames, start + chunk)
            for n in range(start, stop):
                v = float(x[c, n])
                for s in range(sections):
                    out = sos[k, s, 0] * v + state[c, s, 0]
                    state[c, s, 0] = sos[k, s, 1] * v - sos[k, s, 4] * out + state[c, s, 1]
                    state[c, s, 1] = sos[k, s, 2] * v - sos[k, s, 5] * out
                    v = out
                y[c, n] = v


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
            for n in range(ramp, frames):
                block[c, n] = block[c, n] * b


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
) -> None:
    """Feed-forward compressor with a linked (max over channels) detector, in place.

    Level: the instantaneous ``x²`` (peak) or its one-pole mean (RMS, coefficient ``rms_coef``,
    state ``detector[c]``). Gain computer (Giannoulis, Massberg & Reiss 2012) with a quadratic
    soft knee of width ``knee_db``; its gain reduction ``r`` (dB, >= 0) goes through their
    *smooth decoupled* peak detector: ``h = max(r, release·h + (1 - release)·r)`` then
    ``s = attack·s + (1 - attack)·h`` (state ``smoothed = (s, h)``), so a crest is held and
    released slowly while the attack stays a clean one-pole. The make-up gain (linear, ramped
    ``makeup0 → makeup1``) is applied on top. ``gain_db_out[n]`` receives ``-s`` (≤ 0 dB).
    """
    channels, frames = x.shape
    slope = 1.0 / ratio - 1.0
    # below the knee's lower edge the gain computer is 0 dB: skip the logarithm there
    knee_floor = max(1e-30, 10.0 ** ((threshold_db - 0.5 * knee_db) / 10.0))
    s = smoothed[0]
    h = smoothed[1]
    for n in range(frames):
        level = 0.0
        for c in range(channels):
            v = float(x[c, n])
            if use_rms:
                detector[c] = rms_coef * detector[c] + (1.0 - rms_coef) * v * v
                sq = detector[c]
            else:
                sq = v * v
            level = max(level, sq)
        r = 0.0
        if level > knee_floor:
            over = 10.0 * math.log10(level) - threshold_db
            if 2.0 * abs(over) < knee_db:
                t = over + 0.5 * knee_db
                r = -slope * t * t / (2.0 * knee_db)
            elif over > 0.0:
                r = -slope * over
        h = max(r, release * h + (1.0 - release) * r)
        s = attack * s + (1.0 - attack) * h
        if s < 1e-9:  # flush the tail of a release: no denormals, no needless exp()
            s = 0.0
            if h < 1e-9:
                h = 0.0
        gain_db_out[n] = -s
        mk = makeup0 + (makeup1 - makeup0) * (n + 1) / ramp_len if n < ramp_len else makeup1
        g = mk if s == 0.0 else math.exp(-s * (math.log(10.0) / 20.0)) * mk
        for c in range(channels):
            x[c, n] = x[c, n] * g
    smoothed[0] = s
    smoothed[1] = h


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
        # running minimum over the last `hold` frames
        while size > 0 and dq_val[(head + size - 1) % cap] >= req:
            size -= 1
        tail = (head + size) % cap
        dq_val[tail] = req
        dq_time[tail] = t
        size += 1
        while dq_time[head] <= t - hold:
            head = (head + 1) % cap
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


# --------------------------------------------------------------------------------------------
# Compiled versions
# --------------------------------------------------------------------------------------------

biquad_sos: Any = _jit(_biquad_sos)
apply_gain_ramp: Any = _jit(_apply_gain_ramp)
compressor: Any = _jit(_compressor)
delay: Any = _jit(_delay)
freeverb: Any = _jit(_freeverb)
true_peak: Any = _jit(_true_peak)
limiter: Any = _jit(_limiter)
