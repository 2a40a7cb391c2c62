"""The document's effects on the GPU: the CPU effect objects' parameters, device-resident state.

The GPU graph (:mod:`.gpu_graph`) keeps the CPU graph's effect objects
(:mod:`.effects`): they validate and hold the parameters, run the parameter ramps and
crossfades on the host, and their state arrays (filter memories, delay lines, envelopes) keep
the values of a fresh or just-reset effect, because no CPU kernel ever runs on them.
:class:`~realtime.dsp.gpu_state.DeviceState` copies each of those arrays to the device the
first time a kernel needs it and the kernels of :mod:`.gpu_kernels` carry the state forward
there. :class:`EffectRunner` is the GPU twin of each effect's ``process``: the same host
bookkeeping in the same order, then the kernel on the device block; ``run_chains`` runs the
chains of many tracks together, batching the equalizers and compressors that share a chain
position into one launch each.

Arrays are those of an array module ``xp``: cupy in production, numpy under
``NUMBA_ENABLE_CUDASIM=1`` in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from . import gpu_kernels
from .effects import Compressor, Delay, Effect, Equalizer, Limiter, Reverb
from .gpu_state import DeviceState

__all__ = ["EffectRunner"]


class EffectRunner:
    """Runs an effect of the CPU graph on a device block, in place."""

    def __init__(self, xp: ModuleType, state: DeviceState) -> None:
        self._xp = xp
        self._state = state
        # the state that the batched kernels run for many tracks at once lives in slot pools
        self._biquads = state.pool("biquad")  # Equalizer._state: (channels, sections, 2)
        self._detectors = state.pool("detector")  # Compressor._detector_state: (channels,)
        self._envelopes = state.pool("envelope")  # Compressor._smoothed: (2,)

    def run_chains(self, work: Any, chains: Sequence[tuple[int, int, Sequence[Effect]]]) -> None:
        """Each chain's effects in order on its block, rows ``row0…row0 + channels`` of ``work``.

        ``chains`` holds ``(row0, channels, effects)``. The chains advance together, one position
        at a time; at each position the static equalizers of all chains run as one kernel launch
        (a thread per channel) and the compressors as another (a thread per track); the rest,
        and a kind that only one chain has there, run effect by effect.
        """
        depth = max((len(effects) for _, _, effects in chains), default=0)
        for k in range(depth):
            eqs: list[tuple[int, int, Equalizer]] = []
            comps: list[tuple[int, int, Compressor]] = []
            single: list[tuple[int, int, Effect]] = []
            for row0, channels, effects in chains:
                if k >= len(effects):
                    continue
                effect = effects[k]
                if isinstance(effect, Equalizer) and _static(effect):
                    eqs.append((row0, channels, effect))
                elif isinstance(effect, Compressor):
                    comps.append((row0, channels, effect))
                else:
                    single.append((row0, channels, effect))
            if len(eqs) > 1:
                self._equalizers(work, eqs)
            else:
                single.extend(eqs)
            if len(comps) > 1:
                self._compressors(work, comps)
            else:
                single.extend(comps)
            for row0, channels, effect in single:
                self.run(effect, work[row0 : row0 + channels])

    def _rows(self, members: Sequence[tuple[int, int, Any]]) -> tuple[Any, Any]:
        xp = self._xp
        row0 = xp.asarray(np.array([m[0] for m in members], dtype=np.int64))
        channels = xp.asarray(np.array([m[1] for m in members], dtype=np.int64))
        return row0, channels

    def _equalizers(self, work: Any, eqs: Sequence[tuple[int, int, Equalizer]]) -> None:
        xp = self._xp
        sections = max(len(eq.bands) for _, _, eq in eqs)
        sos = np.zeros((len(eqs), sections, 6), dtype=np.float64)
        sos[:, :, 0] = 1.0  # identity sections pad the shorter cascades: exact no-ops
        sos[:, :, 3] = 1.0
        thread_effect: list[int] = []
        thread_channel: list[int] = []
        for i, (_, channels, eq) in enumerate(eqs):
            sos[i, : len(eq.bands)] = eq._sos[0]
            thread_effect.extend([i] * channels)
            thread_channel.extend(range(channels))
        slots = np.array([self._biquads.slot(eq._state) for _, _, eq in eqs], dtype=np.int64)
        row0, channels = self._rows(eqs)
        gpu_kernels.launch(
            gpu_kernels.biquad_batch,
            len(thread_effect),
            work,
            row0,
            channels,
            xp.asarray(np.array(thread_effect, dtype=np.int64)),
            xp.asarray(np.array(thread_channel, dtype=np.int64)),
            xp.asarray(sos),
            xp.asarray(slots),
            self._biquads.array,
        )

    def _compressors(self, work: Any, comps: Sequence[tuple[int, int, Compressor]]) -> None:
        xp = self._xp
        params = np.empty((len(comps), 10), dtype=np.float64)
        for i, (_, _, comp) in enumerate(comps):
            start, end, ramp_len = comp._makeup.advance(work.shape[1])
            attack, release, rms_coef = comp._coefs
            params[i] = (
                comp.threshold_db,
                comp.ratio,
                comp.knee_db,
                attack,
                release,
                rms_coef,
                1.0 if comp.detector == "rms" else 0.0,
                start[0],
                end[0],
                ramp_len,
            )
        detector = np.array([self._detectors.slot(c._detector_state) for _, _, c in comps], dtype=np.int64)
        envelope = np.array([self._envelopes.slot(c._smoothed) for _, _, c in comps], dtype=np.int64)
        row0, channels = self._rows(comps)
        gpu_kernels.launch(
            gpu_kernels.compressor_batch,
            len(comps),
            work,
            row0,
            channels,
            xp.asarray(params),
            xp.asarray(detector),
            self._detectors.array,
            xp.asarray(envelope),
            self._envelopes.array,
        )

    def run(self, effect: Effect, block: Any) -> None:
        """``effect.process(block)`` for a device block (float32, (channels, frames), C order)."""
        if isinstance(effect, Equalizer):
            self._equalizer(effect, block)
        elif isinstance(effect, Compressor):
            self._compressor(effect, block)
        elif isinstance(effect, Delay):
            self._delay(effect, block)
        elif isinstance(effect, Reverb):
            self._reverb(effect, block)
        elif isinstance(effect, Limiter):
            self._limiter(effect, block)
        else:
            raise TypeError(f"no GPU implementation of {type(effect).__name__}")

    # Each method below mirrors the ``process`` of its effect class in :mod:`.effects`: keep them in step.

    def _biquad(self, block: Any, sos: Any, chunk: int, state: Any) -> None:
        gpu_kernels.launch(gpu_kernels.biquad, block.shape[0], block, sos, chunk, state)

    def _equalizer(self, eq: Equalizer, block: Any) -> None:
        xp = self._xp
        frames = block.shape[1]
        if frames == 0:
            return
        old = None
        if eq._old is not None:
            old = block.copy()
            old_sos, old_state = eq._old
            self._biquad(old, self._state.get(old_sos), frames, self._biquads.view(old_state))
        state = self._biquads.view(eq._state)
        if eq._params.ramping:
            self._biquad(block, xp.asarray(eq._trajectory(frames)), eq.CHUNK, state)
        elif eq._bands:
            self._biquad(block, self._state.get(eq._sos), frames, state)
        if old is not None:
            start, end, ramp_len = eq._xfade.advance(frames)
            w = np.full(frames, end[0])
            if ramp_len:
                w[:ramp_len] = start[0] + (end[0] - start[0]) * np.arange(1, ramp_len + 1) / ramp_len
            block *= xp.asarray(w.astype(np.float32))
            block += old * xp.asarray((1.0 - w).astype(np.float32))
            if not eq._xfade.ramping:
                eq._old = None

    def _compressor(self, comp: Compressor, block: Any) -> None:
        start, end, ramp_len = comp._makeup.advance(block.shape[1])
        attack, release, rms_coef = comp._coefs
        gpu_kernels.launch(
            gpu_kernels.compressor,
            1,
            block,
            self._detectors.view(comp._detector_state),
            self._envelopes.view(comp._smoothed),
            comp.threshold_db,
            comp.ratio,
            comp.knee_db,
            attack,
            release,
            rms_coef,
            comp.detector == "rms",
            float(start[0]),
            float(end[0]),
            ramp_len,
        )

    def _delay(self, delay: Delay, block: Any) -> None:
        xp = self._xp
        start, end, ramp_len = delay._ramp.advance(block.shape[1])
        gpu_kernels.launch(
            gpu_kernels.delay,
            1,
            block,
            self._state.get(delay._buf),
            self._state.get(delay._pos),
            delay._d_old,
            delay._d_new,
            xp.asarray(start),
            xp.asarray(end),
            ramp_len,
        )
        if end[2] == 1.0 and not delay._ramp.ramping:
            # the tap crossfade is done (as in Delay.process): one tap again, then any pending change
            delay._d_old = delay._d_new
            delay._ramp.jump([delay.mix, delay.feedback, 0.0])
            if delay._pending is not None:
                delay._d_new = delay._pending
                delay._pending = None
                delay._ramp.set_target([delay.mix, delay.feedback, 1.0])

    def _reverb(self, reverb: Reverb, block: Any) -> None:
        xp = self._xp
        get = self._state.get
        start, end, ramp_len = reverb._ramp.advance(block.shape[1])
        gpu_kernels.launch(
            gpu_kernels.reverb,
            1,
            block,
            get(reverb._comb_buf),
            get(reverb._comb_len),
            get(reverb._comb_idx),
            get(reverb._comb_store),
            get(reverb._ap_buf),
            get(reverb._ap_len),
            get(reverb._ap_idx),
            get(reverb._wet_out),
            reverb.INPUT_GAIN * 2.0 / reverb.channels,
            xp.asarray(start),
            xp.asarray(end),
            ramp_len,
        )

    def _limiter(self, limiter: Limiter, block: Any) -> None:
        get = self._state.get
        gpu_kernels.launch(
            gpu_kernels.limiter,
            1,
            block,
            get(limiter._hist),
            get(limiter._delay),
            get(limiter._box),
            get(limiter._dq_val),
            get(limiter._dq_time),
            get(limiter._istate),
            get(limiter._fstate),
            get(limiter._taps),
            limiter._threshold,
            limiter._release,
            limiter._hold,
            self._xp.empty(block.shape[1], dtype=np.float64),
        )


def _static(eq: Equalizer) -> bool:
    """Whether ``eq`` runs one fixed cascade this block (no parameter ramp, no crossfade)."""
    return eq._old is None and not eq._params.ramping and len(eq.bands) > 0
