"""The processing graph on a CUDA GPU (``--dsp-backend cupy``): the CPU graph's plan, run on the device.

:class:`GpuGraph` is a :class:`~realtime.dsp.graph.Graph`: ``update`` compiles the document
exactly as the CPU graph does (routing, cycles, mute/solo, node and effect reuse, parameter
ramps, problems), and only ``render_block`` differs. Each block runs on the device:

- the source tracks' blocks are the rows of one device array; clips with their gain and
  linear fades, then (for all sources in one product) faders, pans and polarity, and the bus
  and master sums are cupy array expressions, with the CPU kernels' arithmetic (float64
  products, float32 storage);
- the recursive effects (EQ biquads, compressor, delay, reverb, the limiters) are
  ``numba.cuda`` kernels (:mod:`.gpu_kernels`) whose state stays on the device
  (:mod:`.gpu_state`); the sources' chains advance together, and at each chain position the
  static EQs of all tracks run as one launch (a thread per channel), so do the compressors (a
  thread per track); other effects, buses and the master run effect by effect
  (:mod:`.gpu_effects`);
- the host keeps the parameters and their ramps (the CPU graph's own objects advance them),
  so a parameter change at a block boundary ramps exactly as on the CPU: no click;
- latency compensation runs the CPU graph's own delay lines on the host (a round trip per
  compensated track and block): the same alignment by construction.

Assets are uploaded once (and dropped when no clip plays them any more); per block only a few
ramp values go up and the (2, n) master comes back. :attr:`track_outputs` copies the tracks'
outputs to the host when read (stems); :attr:`device_outputs` has them on the device.

The output equals the numba graph's within float32 rounding (``tests/dsp/test_gpu_graph.py``
states the bound); the compressor's curve uses libdevice's log/exp instead of the CPU's
polynomial ones. ``xp`` is the array module: cupy by default; the tests pass numpy and run the
kernels in numba's CUDA simulator. Meters are not computed on the GPU (``meters`` is not
accepted) and ``workers`` is accepted for the CPU graph's signature but unused: the device
does the parallel work.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..session.schema import SessionDocument
from .backend import BackendUnavailable
from .effects import Effect
from .gpu_effects import EffectRunner
from .gpu_state import DeviceState
from .graph import AssetSource, Graph, _Node, _PlacedClip
from .smoothing import Ramp

__all__ = ["GpuGraph", "to_host"]

F32 = NDArray[np.float32]

_XP_NAMES = (
    "array",
    "asarray",
    "arange",
    "concatenate",
    "empty",
    "full",
    "maximum",
    "where",
    "zeros",
    "float32",
    "float64",
)


def to_host(array: Any) -> F32:
    """A device array as a numpy array (cupy's ``.get()``; numpy arrays pass through)."""
    if isinstance(array, np.ndarray):
        return array
    out: F32 = array.get()
    return out


def _default_xp() -> ModuleType:
    from .gpu import cupy_module
    from .gpu_kernels import cuda

    xp = cupy_module()
    if not cuda.is_available():
        raise BackendUnavailable(
            "the cupy DSP backend needs numba's CUDA target and a CUDA device "
            "(pip install 'escenario[gpu]' installs numba-cuda)"
        )
    return xp


class GpuGraph(Graph):
    """A :class:`~realtime.dsp.graph.Graph` that renders on a CUDA device; see the module docstring."""

    def __init__(
        self,
        assets: Mapping[str, F32] | AssetSource | None = None,
        *,
        sample_rate: int = 48000,
        block: int = 1024,
        workers: int = 1,
        limiter_lookahead_ms: float = 1.5,
        xp: ModuleType | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if xp is None:
            xp = _default_xp()
        missing = [name for name in _XP_NAMES if not hasattr(xp, name)]
        if missing:
            raise TypeError(f"xp must be an array module such as cupy; {xp!r} lacks {', '.join(missing)}")
        self._xp = xp
        self._device_outputs: dict[str, Any] = {}
        self._host_outputs: dict[str, F32] | None = None
        self._state = DeviceState(xp)
        self._assets_on_device = DeviceState(xp)
        self._runner = EffectRunner(xp, self._state)
        super().__init__(
            assets,
            sample_rate=sample_rate,
            block=block,
            workers=1,
            meters=False,
            limiter_lookahead_ms=limiter_lookahead_ms,
        )

    # outputs --------------------------------------------------------------------------------
    @property
    def track_outputs(self) -> dict[str, F32]:
        """Track id → its post-fader (2, n) output of the last block, copied to the host."""
        if self._host_outputs is None:
            self._host_outputs = {tid: to_host(out) for tid, out in self._device_outputs.items()}
        return self._host_outputs

    @track_outputs.setter
    def track_outputs(self, value: dict[str, F32]) -> None:  # Graph.update clears them
        self._device_outputs = dict(value)
        self._host_outputs = None

    @property
    def device_outputs(self) -> dict[str, Any]:
        """Track id → its post-fader (2, n) output of the last block, on the device."""
        return self._device_outputs

    # update and reset -----------------------------------------------------------------------
    def update(self, doc: SessionDocument) -> None:
        bypassed = {
            id(effect)
            for node in self._nodes.values()
            for effect, off in zip(node.chain.effects, node.chain.bypassed, strict=True)
            if effect is not None and off
        }
        super().update(doc)
        for node in self._nodes.values():
            for effect, off in zip(node.chain.effects, node.chain.bypassed, strict=True):
                if effect is not None and not off and id(effect) in bypassed:
                    self._state.forget(effect)  # un-bypassed: the chain reset its history
        # the assets that clips play stay on the device, the others go
        self._assets_on_device.retain(clip.samples for node in self._sources for clip in node.clips)

    def reset(self) -> None:
        super().reset()
        # the effects' reset wrote their initial state into the host arrays: upload it again
        self._state.reload()

    # rendering ------------------------------------------------------------------------------
    def render_block(self, t0_frame: int, n: int) -> F32:
        """Render timeline frames ``[t0_frame, t0_frame + n)`` on the device: the master, (2, n), on the host.

        As :meth:`Graph.render_block`; the array returned is the caller's.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if isinstance(t0_frame, bool) or not isinstance(t0_frame, int | np.integer):
            raise ValueError(f"t0_frame must be an integer, got {t0_frame!r}")
        xp = self._xp
        n = int(n)
        t0 = int(t0_frame)
        if n == 0:  # nothing to launch a kernel for
            self.track_outputs = {tid: xp.zeros((2, 0), dtype=xp.float32) for tid in self._nodes}
            return np.zeros((2, 0), dtype=np.float32)
        # The sources' blocks are rows of one array, so that batched kernels reach every track.
        rows = np.cumsum([0] + [node.channels for node in self._sources]).tolist()
        work = xp.zeros((rows[-1], n), dtype=xp.float32)
        for node, row0 in zip(self._sources, rows, strict=False):
            self._add_clips(node, work[row0 : row0 + node.channels], t0, n)
        self._runner.run_chains(
            work,
            [(row0, node.channels, _active(node)) for node, row0 in zip(self._sources, rows, strict=False)],
        )
        outputs = {node.id: out for node, out in zip(self._sources, self._strips(work, rows, n), strict=True)}
        inputs = {bus.id: xp.zeros((2, n), dtype=xp.float32) for bus in self._buses}
        master = xp.zeros((2, n), dtype=xp.float32)
        # the CPU graph's summing order: the sources in document order, then each bus in turn
        for node in self._sources:
            self._sum_into(node, outputs[node.id], master, inputs)
        for bus in self._buses:
            outputs[bus.id] = self._finish(bus, inputs[bus.id], n)
            self._sum_into(bus, outputs[bus.id], master, inputs)
        master = self._gains(self._master_gain._ramp, master, n)
        if self._limiter is not None:
            self._runner.run(self._limiter, master)
        self.track_outputs = outputs
        self._state.prune()
        return to_host(master)

    def _sum_into(self, node: _Node, out: Any, master: Any, inputs: dict[str, Any]) -> None:
        target = master if node.dest is None else inputs[node.dest]
        if not node.compensation.idle:
            # The latency compensation's delay line (and its crossfades between alignments) is
            # the CPU graph's own object, run on the host: a (2, n) round trip per compensated
            # node, and by construction the same alignment as the numba backend.
            out = self._xp.asarray(node.compensation.process(to_host(out)))
        target += out

    def _finish(self, node: _Node, work: Any, n: int) -> Any:
        """Effects, then polarity, fader and pan: ``_Node.finish`` on the device."""
        for effect in _active(node):
            self._runner.run(effect, work)
        return self._strip(node, work, n)

    def _strip(self, node: _Node, work: Any, n: int) -> Any:
        """Polarity, fader and pan (a mono block becomes stereo): the node's output."""
        if node.channels == 1:
            work = self._xp.concatenate((work, work))
        return self._gains(node.strip._ramp, work, n)

    def _gains(self, ramp: Ramp, block: Any, n: int) -> Any:
        """``block`` times per-channel gains ramping as ``kernels.apply_gain_ramp`` ramps them."""
        start, end, ramp_len = ramp.advance(n)
        return self._apply_ramps(block, start, end, np.full(end.shape[0], ramp_len), n)

    def _apply_ramps(
        self, block: Any, start: NDArray[np.float64], end: NDArray[np.float64], ramp_len: Any, n: int
    ) -> Any:
        """Row ``c`` of ``block`` times ``start[c] + (end[c] - start[c])·(k + 1)/ramp_len[c]`` at
        frame ``k < ramp_len[c]``, ``end[c]`` after: ``kernels.apply_gain_ramp``'s arithmetic,
        the product in float64 stored as float32 (so a unity gain is exact)."""
        xp = self._xp
        g1 = xp.asarray(np.ascontiguousarray(end, dtype=np.float64).reshape(-1, 1))
        lengths = np.asarray(ramp_len, dtype=np.int64).reshape(-1, 1)
        if not lengths.any():
            gains = g1
        else:
            g0 = xp.asarray(np.ascontiguousarray(start, dtype=np.float64).reshape(-1, 1))
            length = xp.asarray(lengths)
            step = (g1 - g0) / xp.maximum(length, 1)
            k = xp.arange(n, dtype=xp.float64)
            gains = xp.where(k < length, g0 + step * (k + 1.0), g1)
        return (block.astype(xp.float64) * gains).astype(xp.float32)

    def _strips(self, work: Any, rows: list[int], n: int) -> list[Any]:
        """Every source's polarity, fader and pan at once (a mono row feeds both sides): the
        sources' (2, n) outputs, views of one array."""
        index: list[int] = []
        start: list[float] = []
        end: list[float] = []
        lengths: list[int] = []
        for node, row0 in zip(self._sources, rows, strict=False):
            index += [row0, row0 + node.channels - 1]
            g0, g1, ramp_len = node.strip._ramp.advance(n)
            start += [float(g) for g in g0]
            end += [float(g) for g in g1]
            lengths += [ramp_len, ramp_len]
        if not index:
            return []
        stereo = work[self._xp.asarray(np.array(index, dtype=np.int64))]
        out = self._apply_ramps(stereo, np.array(start), np.array(end), np.array(lengths), n)
        return [out[2 * i : 2 * i + 2] for i in range(len(self._sources))]

    def _add_clips(self, node: _Node, work: Any, t0: int, n: int) -> None:
        """``_Node.render_clips`` on the device (see ``graph_kernels.add_clip``)."""
        t1 = t0 + n
        for clip in node.clips:
            w = clip.where
            if w.start >= t1:
                break
            if w.end <= t0:
                continue
            a = max(t0, w.start)
            b = min(t1, w.end)
            self._add_clip(work, clip, a - t0, a - w.start, b - a)

    def _add_clip(self, work: Any, clip: _PlacedClip, dst0: int, pos0: int, m: int) -> None:
        xp = self._xp
        w = clip.where
        src = self._assets_on_device.get(clip.samples)
        rows = min(work.shape[0], src.shape[0])  # a mono clip broadcasts to both channels
        piece = src[:rows, w.offset + pos0 : w.offset + pos0 + m]
        dst = work[:, dst0 : dst0 + m]
        in_fade_in = w.fade_in > 0 and pos0 < w.fade_in
        in_fade_out = w.fade_out > 0 and w.length - 1 - (pos0 + m - 1) < w.fade_out
        if not (in_fade_in or in_fade_out):
            if clip.gain == 1.0:
                dst += piece  # float32, as the kernel adds at unity gain
            else:
                dst[...] = (dst.astype(xp.float64) + piece.astype(xp.float64) * clip.gain).astype(xp.float32)
            return
        i = pos0 + xp.arange(m, dtype=xp.float64)
        g = xp.full(m, clip.gain, dtype=xp.float64)
        if in_fade_in:
            g = xp.where(i < w.fade_in, g * (i / w.fade_in), g)
        if in_fade_out:
            r = (w.length - 1) - i
            g = xp.where(r < w.fade_out, g * (r / w.fade_out), g)
        dst[...] = (dst.astype(xp.float64) + piece.astype(xp.float64) * g).astype(xp.float32)


def _active(node: _Node) -> list[Effect]:
    """The effects a node's chain runs, in order (built and not bypassed)."""
    chain = node.chain
    return [e for e, off in zip(chain.effects, chain.bypassed, strict=True) if e is not None and not off]
