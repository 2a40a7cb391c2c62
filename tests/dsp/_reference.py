"""The kernels as they were before they were optimized: straightforward loops, kept as references.

The optimized kernels in :mod:`realtime.dsp.kernels` must give these results bit for bit (the
biquad cascade, the limiter) or within a stated tolerance (the compressor, whose logarithm and
exponential changed). Plain Python: the tests run them on short inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def biquad_sos(x: F32, sos: F64, chunk: int, state: F64, y: F32) -> None:
    """Sample-major transposed direct form II, one channel after the other, state in memory."""
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
                y[c, n] = np.float32(v)


def compressor(
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
    """One frame at a time, with libm's log10 and exp."""
    channels, frames = x.shape
    slope = 1.0 / ratio - 1.0
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
        if s < 1e-9:
            s = 0.0
            if h < 1e-9:
                h = 0.0
        gain_db_out[n] = -s
        mk = makeup0 + (makeup1 - makeup0) * (n + 1) / ramp_len if n < ramp_len else makeup1
        g = mk if s == 0.0 else math.exp(-s * (math.log(10.0) / 20.0)) * mk
        for c in range(channels):
            x[c, n] = np.float32(float(x[c, n]) * g)
    smoothed[0] = s
    smoothed[1] = h


def limiter(
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
    """The look-ahead limiter with its monotonic deque indexed modulo its capacity."""
    channels, frames = x.shape
    n_phase, n_tap = taps.shape
    delay = delay_buf.shape[1]
    attack = box.shape[0]
    cap = dq_val.shape[0]
    h, dp, head, size, t, bp = (int(v) for v in istate)
    box_sum = float(fstate[0])
    g = float(fstate[1])
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
        while size > 0 and dq_val[(head + size - 1) % cap] >= req:
            size -= 1
        tail = (head + size) % cap
        dq_val[tail] = req
        dq_time[tail] = t
        size += 1
        while dq_time[head] <= t - hold:
            head = (head + 1) % cap
            size -= 1
        low = float(dq_val[head])
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
        g = target if target < g else target + release * (g - target)
        gain_out[n] = g
        for c in range(channels):
            out = delay_buf[c, dp]
            delay_buf[c, dp] = x[c, n]
            x[c, n] = np.float32(float(out) * g)
        dp += 1
        if dp == delay:
            dp = 0
        t += 1
    istate[:] = (h, dp, head, size, t, bp)
    fstate[0] = box_sum
    fstate[1] = g
