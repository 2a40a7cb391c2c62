"""The recursive sample loops of the GPU graph (:mod:`.gpu_graph`) as ``numba.cuda`` kernels.

Everything that is not a recursion over samples (clips, fades, faders, pans, sums) runs as cupy
array expressions in :mod:`.gpu_graph`; what is left here needs one sequential loop per track
or per track-channel, so each kernel is launched with one thread per independent recursion:

- ``biquad`` — one thread per channel (channels of a cascade are independent);
- ``compressor``, ``delay``, ``reverb``, ``limiter`` — one thread per track (their detectors
  are linked across channels, or the channels share a write position);
- ``biquad_batch``, ``compressor_batch`` — the same for many tracks in one launch: their
  blocks are rows of one array and their state slots of one pool (:mod:`.gpu_state`).

The delay and the reverb run the CPU kernels' own code: :mod:`.kernels`' undecorated ``_delay``
and ``_freeverb`` compiled as CUDA device functions, so the two backends cannot drift apart. The
biquad cascade, the compressor and the limiter are CUDA mirrors of their CPU kernels, the same
operations in the same order: the CPU versions call CPU-compiled helpers (which numba's CUDA
simulator cannot run) or use the builtin ``min``/``max``, which numba's CUDA target only lowers
for some argument types (comparisons stand in for them here; libdevice's ``log10``/``pow`` for
the compressor's curve).

Kernels take device arrays (cupy arrays, through ``__cuda_array_interface__``) and scalars.
Under ``NUMBA_ENABLE_CUDASIM=1`` numba runs them on the CPU with numpy arrays, which is how the
tests exercise this module without a GPU.
"""

from __future__ import annotations

import math
from typing import Any

from numba import cuda as _cuda

from . import kernels

cuda: Any = _cuda  # numba.cuda is untyped; kernels resolve the global by its value, the module

__all__ = ["biquad", "biquad_batch", "compressor", "compressor_batch", "delay", "launch", "limiter", "reverb"]

_delay_track: Any = cuda.jit(device=True)(kernels._delay)
_freeverb_track: Any = cuda.jit(device=True)(kernels._freeverb)

_DB_TO_OCTAVES = math.log2(10.0) / 20.0


def _biquad_channel(x: Any, sos: Any, chunk: int, state: Any, c: int) -> None:
    """Channel ``c`` of ``x`` through the cascade, in place (see ``kernels._biquad_sos``).

    ``sos`` is (sets, sections, 6); set ``k`` filters frames ``[k·chunk, (k+1)·chunk)`` and the
    last set the rest. As ``kernels._biquad_run1`` does, the first three sections' state stays
    in registers for a set's whole run of frames (identity sections stand in for missing ones:
    an exact no-op) and later sections run from ``state``: the same arithmetic per sample, in
    the same order. (The CPU function itself cannot be shared: it calls CPU-compiled helpers,
    which numba's CUDA simulator cannot run.)
    """
    frames = x.shape[1]
    sets = sos.shape[0]
    sections = sos.shape[1]
    u0 = state[c, 0, 0] if sections > 0 else 0.0
    u1 = state[c, 0, 1] if sections > 0 else 0.0
    v0 = state[c, 1, 0] if sections > 1 else 0.0
    v1 = state[c, 1, 1] if sections > 1 else 0.0
    w0 = state[c, 2, 0] if sections > 2 else 0.0
    w1 = state[c, 2, 1] if sections > 2 else 0.0
    for k in range(sets):
        start = k * chunk
        stop = start + chunk
        if k == sets - 1 or stop > frames:  # no min(): see the module docstring
            stop = frames
        p0, p1, p2, p4, p5 = 1.0, 0.0, 0.0, 0.0, 0.0
        q0, q1, q2, q4, q5 = 1.0, 0.0, 0.0, 0.0, 0.0
        r0, r1, r2, r4, r5 = 1.0, 0.0, 0.0, 0.0, 0.0
        if sections > 0:
            p0, p1, p2, p4, p5 = sos[k, 0, 0], sos[k, 0, 1], sos[k, 0, 2], sos[k, 0, 4], sos[k, 0, 5]
        if sections > 1:
            q0, q1, q2, q4, q5 = sos[k, 1, 0], sos[k, 1, 1], sos[k, 1, 2], sos[k, 1, 4], sos[k, 1, 5]
        if sections > 2:
            r0, r1, r2, r4, r5 = sos[k, 2, 0], sos[k, 2, 1], sos[k, 2, 2], sos[k, 2, 4], sos[k, 2, 5]
        for n in range(start, stop):
            a = float(x[c, n])
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
            x[c, n] = a
    if sections > 0:
        state[c, 0, 0] = u0
        state[c, 0, 1] = u1
    if sections > 1:
        state[c, 1, 0] = v0
        state[c, 1, 1] = v1
    if sections > 2:
        state[c, 2, 0] = w0
        state[c, 2, 1] = w1


def _compressor_track(
    x: Any,
    detector: Any,
    smoothed: Any,
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
) -> None:
    """``kernels._compressor`` in one pass per frame (level, gain computer, detector, gain).

    The CPU kernel's three passes only reorder work that does not depend across frames, so
    fusing them changes no value; the curve uses ``log10``/``pow`` where the CPU uses its
    vectorizable log2/exp2 (they agree to ~1e-13, and ``pow(2, 0)`` is exactly 1 as ``exp2(0)`` is).
    """
    channels = x.shape[0]
    frames = x.shape[1]
    slope = 1.0 / ratio - 1.0
    knee_floor = 10.0 ** ((threshold_db - 0.5 * knee_db) / 10.0)
    if knee_floor < 1e-30:
        knee_floor = 1e-30
    s = smoothed[0]
    h = smoothed[1]
    for n in range(frames):
        lv = 0.0
        for c in range(channels):
            v = float(x[c, n])
            if use_rms:
                d = rms_coef * detector[c] + (1.0 - rms_coef) * v * v
                detector[c] = d
                if d > lv:
                    lv = d
            elif v * v > lv:
                lv = v * v
        over = 10.0 * math.log10(lv if lv > 1e-300 else 1e-300) - threshold_db
        t = over + 0.5 * knee_db
        if 2.0 * abs(over) < knee_db:
            r = -slope * t * t / (2.0 * knee_db)
        elif over > 0.0:
            r = -slope * over
        else:
            r = 0.0
        if not lv > knee_floor:
            r = 0.0
        h = release * h + (1.0 - release) * r
        if r > h:
            h = r
        s = attack * s + (1.0 - attack) * h
        if s < 1e-9:
            s = 0.0
            if h < 1e-9:
                h = 0.0
        mk = makeup1
        if n < ramp_len:
            mk = makeup0 + (makeup1 - makeup0) * (n + 1) / ramp_len
        g = math.pow(2.0, -s * _DB_TO_OCTAVES) * mk
        for c in range(channels):
            x[c, n] = x[c, n] * g
    smoothed[0] = s
    smoothed[1] = h


def _limiter_track(
    x: Any,
    hist: Any,
    delay_buf: Any,
    box: Any,
    dq_val: Any,
    dq_time: Any,
    istate: Any,
    fstate: Any,
    taps: Any,
    threshold: float,
    release: float,
    hold: int,
    gain_out: Any,
) -> None:
    """``kernels._limiter`` line for line, with comparisons for its ``max()`` calls."""
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
            if abs(v) > tp:
                tp = abs(v)
            for p in range(n_phase):
                acc = 0.0
                for k in range(n_tap):
                    acc += taps[p, k] * hist[c, (h - k) & 15]
                if abs(acc) > tp:
                    tp = abs(acc)
        h = (h + 1) & 15
        req = 1.0 if tp <= threshold else threshold / tp
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


_limiter_device: Any = cuda.jit(device=True)(_limiter_track)
_biquad_device: Any = cuda.jit(device=True)(_biquad_channel)
_compressor_device: Any = cuda.jit(device=True)(_compressor_track)


def _biquad_kernel(x: Any, sos: Any, chunk: int, state: Any) -> None:
    c = cuda.grid(1)
    if c < x.shape[0]:
        _biquad_device(x, sos, chunk, state, c)


def _compressor_kernel(
    x: Any,
    detector: Any,
    smoothed: Any,
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
) -> None:
    if cuda.grid(1) == 0:
        _compressor_device(
            x,
            detector,
            smoothed,
            threshold_db,
            ratio,
            knee_db,
            attack,
            release,
            rms_coef,
            use_rms,
            makeup0,
            makeup1,
            ramp_len,
        )


def _delay_kernel(
    x: Any, buf: Any, pos: Any, d_old: int, d_new: int, p0: Any, p1: Any, ramp_len: int
) -> None:
    if cuda.grid(1) == 0:
        _delay_track(x, buf, pos, d_old, d_new, p0, p1, ramp_len)


def _reverb_kernel(
    x: Any,
    comb_buf: Any,
    comb_len: Any,
    comb_idx: Any,
    comb_store: Any,
    ap_buf: Any,
    ap_len: Any,
    ap_idx: Any,
    wet_out: Any,
    input_gain: float,
    p0: Any,
    p1: Any,
    ramp_len: int,
) -> None:
    if cuda.grid(1) == 0:
        _freeverb_track(
            x,
            comb_buf,
            comb_len,
            comb_idx,
            comb_store,
            ap_buf,
            ap_len,
            ap_idx,
            wet_out,
            input_gain,
            p0,
            p1,
            ramp_len,
        )


def _limiter_kernel(
    x: Any,
    hist: Any,
    delay_buf: Any,
    box: Any,
    dq_val: Any,
    dq_time: Any,
    istate: Any,
    fstate: Any,
    taps: Any,
    threshold: float,
    release: float,
    hold: int,
    gain_out: Any,
) -> None:
    if cuda.grid(1) == 0:
        _limiter_device(
            x, hist, delay_buf, box, dq_val, dq_time, istate, fstate, taps, threshold, release, hold, gain_out
        )


def _biquad_batch_kernel(
    work: Any,
    row0: Any,
    channels: Any,
    thread_effect: Any,
    thread_channel: Any,
    sos: Any,
    slots: Any,
    state: Any,
) -> None:
    """Static cascades of many tracks at once: thread ``t`` filters channel ``thread_channel[t]``
    of effect ``i = thread_effect[t]``, whose block is rows ``row0[i]…`` of ``work``, with
    coefficients ``sos[i]`` (identity sections pad a shorter cascade) and state
    ``state[slots[i]]``."""
    t = cuda.grid(1)
    if t < thread_effect.shape[0]:
        i = thread_effect[t]
        r = row0[i]
        _biquad_device(
            work[r : r + channels[i]], sos[i : i + 1], work.shape[1], state[slots[i]], thread_channel[t]
        )


def _compressor_batch_kernel(
    work: Any,
    row0: Any,
    channels: Any,
    params: Any,
    detector_slots: Any,
    detector: Any,
    smoothed_slots: Any,
    smoothed: Any,
) -> None:
    """Compressors of many tracks at once, one thread each: effect ``i``'s block is rows
    ``row0[i]…`` of ``work``, its state ``detector[detector_slots[i]]`` and
    ``smoothed[smoothed_slots[i]]``, its
    parameters ``params[i]`` = (threshold_db, ratio, knee_db, attack, release, rms_coef,
    use_rms, makeup0, makeup1, ramp_len) as in :func:`_compressor_kernel`."""
    i = cuda.grid(1)
    if i < row0.shape[0]:
        r = row0[i]
        p = params[i]
        _compressor_device(
            work[r : r + channels[i]],
            detector[detector_slots[i]],
            smoothed[smoothed_slots[i]],
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
            p[6] != 0.0,
            p[7],
            p[8],
            int(p[9]),
        )


biquad: Any = cuda.jit(_biquad_kernel)
compressor: Any = cuda.jit(_compressor_kernel)
biquad_batch: Any = cuda.jit(_biquad_batch_kernel)
compressor_batch: Any = cuda.jit(_compressor_batch_kernel)
delay: Any = cuda.jit(_delay_kernel)
reverb: Any = cuda.jit(_reverb_kernel)
limiter: Any = cuda.jit(_limiter_kernel)

KERNEL_FUNCTIONS = {
    "biquad": _biquad_kernel,
    "compressor": _compressor_kernel,
    "biquad_batch": _biquad_batch_kernel,
    "compressor_batch": _compressor_batch_kernel,
    "delay": _delay_kernel,
    "reverb": _reverb_kernel,
    "limiter": _limiter_kernel,
}
"""The kernels' Python functions (what ``numba.cuda.compiler.compile_cuda`` takes in the tests)."""


THREADS_PER_BLOCK = 64


def launch(kernel: Any, threads: int, *args: Any) -> None:
    """Run ``kernel`` on ``threads`` threads: one block for one track, blocks of
    :data:`THREADS_PER_BLOCK` for the batched kernels (one thread per track or channel)."""
    threads = max(1, threads)
    blocks = -(-threads // THREADS_PER_BLOCK)
    kernel[blocks, min(threads, THREADS_PER_BLOCK)](*args)
