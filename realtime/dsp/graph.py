"""The processing graph: a session document compiled into nodes that mix it, block by block.

:class:`Graph` turns a :class:`~realtime.session.schema.SessionDocument` into one node per track
and renders the timeline in blocks of any length::

    graph = Graph(assets, sample_rate=48000, block=1024)
    graph.update(doc)                       # again after every edit: nodes are reused
    out = graph.render_block(t0_frame, n)   # (2, n) float32, the master output
    graph.track_outputs["drums"]            # (2, n) post-fader output of one track

Signal flow (docs/session-schema.md has the user-facing rules):

- **Clips** (``start``, ``offset``, ``length`` in seconds → frames with ``round(x · 48000)``;
  ``length`` 0 means to the end of the asset): the asset's frames ``[offset, offset + length)``
  land at timeline frames ``[start, start + length)``, times the clip gain and linear fades;
  overlapping clips add.
- **Track chain**: clips → effects (the ``effects`` list, built by
  :func:`~realtime.dsp.effects.effect_from_document`) → phase invert → fader gain and pan
  (smoothed) → the track's output: a ``bus`` track named by ``output``, else the master. A
  track is mono while all of its clips are mono; its effects then run on one channel and the
  constant-power pan law places it. A track with a stereo clip is stereo and uses the
  balance law (each side ``min(1, √2 · constant-power gain)``: unity at the centre).
- **Buses** sum their inputs (after the inputs' faders), then run their own chain; buses may
  feed buses. A routing cycle is cut (the bus that closes it goes to the master) and
  reported.
- **Mute and solo**: with any track or bus soloed, a node is audible iff it is soloed, or
  feeds a soloed bus (directly or through other buses), or is a bus that a soloed node
  feeds; mute always silences. An inaudible node's fader goes to zero, smoothly.
- **Master**: the sum → master gain → true-peak :class:`~realtime.dsp.effects.Limiter`
  (ceiling ``ceilingDb``) unless ``limiter`` is false.
- **Latency compensation** (:mod:`.latency`): effects with look-ahead delay their track; every
  input of a bus or of the master is delayed to the latest input there, so all paths stay
  sample-aligned. :attr:`Graph.plan` holds the figures (per-track ``compensation_samples``);
  the master output lags the timeline by :attr:`Graph.latency` frames (effects plus the master
  limiter), which offline renders drop (:mod:`.render`). A change of compensation crossfades
  over 10 ms. An effect entry with ``bypass: true`` is skipped and adds no latency.

Updates are incremental: :meth:`Graph.update` keeps every node whose track still exists (same
objects), retargets faders, pans, polarity and mute/solo (ramped over 10 ms from the next
block, so no click), hands changed effect parameters to ``set_params`` and rebuilds a track's chain only
when its list of effect types changes (or its channel count does). Nothing in a document can
make it raise: invalid effects are skipped, missing assets are silent, and each problem is
logged once and listed in :attr:`Graph.problems`.

With ``workers > 1`` the source tracks of each block are processed in parallel on a thread
pool (the numba kernels release the GIL); sums are always formed in one fixed order, so the
output is bit-identical to ``workers=1``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np
from numpy.typing import NDArray

from ..session.schema import Master, SessionDocument, Track
from . import graph_kernels
from ._validate import check_sample_rate
from .effects import Effect, Limiter, effect_from_document
from .latency import CompensationDelay, LatencyNode, LatencyPlan, plan_latency
from .meters import TrackMeter
from .smoothing import DEFAULT_RAMP_MS, SmoothedGain, SmoothedGainPan
from .units import db_to_gain, pan_gains

__all__ = [
    "AssetSource",
    "Graph",
    "MappingAssets",
    "as_asset_source",
    "clip_frames",
    "session_end_frame",
]

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
_SQRT2 = math.sqrt(2.0)


class AssetSource(Protocol):
    """Where the graph gets audio: float32 (channels, frames) at the graph's rate, or None."""

    def get(self, asset_id: str) -> F32 | None: ...


class MappingAssets:
    """An :class:`AssetSource` over a mapping of asset id → samples."""

    def __init__(self, assets: Mapping[str, F32]) -> None:
        self._assets = assets

    def get(self, asset_id: str) -> F32 | None:
        return self._assets.get(asset_id)


def as_asset_source(assets: Mapping[str, F32] | AssetSource | None) -> AssetSource:
    if assets is None:
        return MappingAssets({})
    if isinstance(assets, Mapping):
        return MappingAssets(assets)
    return assets


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClipFrames:
    """A clip in frames: asset frames ``[offset, offset + length)`` play at ``[start, start + length)``."""

    start: int
    offset: int
    length: int
    fade_in: int
    fade_out: int

    @property
    def end(self) -> int:
        return self.start + self.length


def clip_frames(
    start: float,
    offset: float,
    length: float,
    fade_in: float,
    fade_out: float,
    asset_frames: int,
    sample_rate: int,
) -> ClipFrames | None:
    """A clip's placement in frames (``round(seconds · rate)``), or None if it plays nothing.

    ``length`` 0 plays to the end of the asset; a clip is cut where its asset ends. Fades
    longer than the clip are cut to its length.
    """
    s = round(start * sample_rate)
    off = round(offset * sample_rate)
    available = asset_frames - off
    n = round(length * sample_rate) if length > 0 else available
    n = min(n, available)
    if n <= 0:
        return None
    return ClipFrames(
        start=s,
        offset=off,
        length=n,
        fade_in=min(round(fade_in * sample_rate), n),
        fade_out=min(round(fade_out * sample_rate), n),
    )


def session_end_frame(
    doc: SessionDocument, asset_frames: Callable[[str], int | None], sample_rate: int = 48000
) -> int:
    """The frame after the last clip's end (0 for a session without clips).

    Counts every clip of every non-bus track, muted ones included; ``asset_frames(id)`` gives
    an asset's length in frames, None for a missing asset (its clips count as empty).
    """
    end = 0
    for track in doc.tracks:
        if track.kind == "bus":
            continue
        for clip in track.clips:
            frames = asset_frames(clip.asset_id)
            if frames is None:
                continue
            placed = clip_frames(
                clip.start, clip.offset, clip.length, clip.fade_in, clip.fade_out, frames, sample_rate
            )
            if placed is not None:
                end = max(end, placed.end)
    return end


@dataclass(frozen=True, slots=True)
class _PlacedClip:
    samples: F32
    where: ClipFrames
    gain: float


# --------------------------------------------------------------------------------------------
# Fader and pan
# --------------------------------------------------------------------------------------------


def strip_gains(gain_db: float, pan: float, *, stereo: bool) -> tuple[float, float]:
    """Left and right gains of a fader at ``gain_db`` and ``pan``.

    Mono sources: the constant-power law (:func:`~realtime.dsp.units.pan_gains`, -3 dB each
    side at the centre). Stereo sources: the balance law, each side ``min(1, √2 · constant-power
    gain)``, so the centre is unity on both sides and panning only turns the far side down.
    """
    left, right = pan_gains(pan)
    if stereo:
        left = 1.0 if pan <= 0.0 else min(1.0, _SQRT2 * left)
        right = 1.0 if pan >= 0.0 else min(1.0, _SQRT2 * right)
    g = db_to_gain(gain_db)
    return g * left, g * right


class _Strip(SmoothedGainPan):
    """A track's polarity, fader, pan and audibility (mute/solo) as one pair of ramped gains.

    Polarity is the sign of the gains, so flipping it ramps through zero instead of clicking.
    """

    def __init__(
        self, sample_rate: int, *, stereo: bool, gain_db: float, pan: float, audible: bool, invert: bool
    ) -> None:
        self.stereo = stereo
        self.audible = audible
        self.invert = invert
        super().__init__(sample_rate, gain_db=gain_db, pan=pan, ramp_ms=DEFAULT_RAMP_MS)

    def _pair(self) -> NDArray[np.float64]:
        if not self.audible:
            return np.zeros(2)
        pair = np.array(strip_gains(self.gain_db, self.pan, stereo=self.stereo))
        return -pair if self.invert else pair

    def configure(self, *, gain_db: float, pan: float, audible: bool, invert: bool) -> None:
        if (gain_db, pan, audible, invert) == (self.gain_db, self.pan, self.audible, self.invert):
            return
        self.audible = audible
        self.invert = invert
        self.set(gain_db=gain_db, pan=pan)


# --------------------------------------------------------------------------------------------
# Effect chains
# --------------------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_META = frozenset({"type", "id", "bypass"})


def _snake(key: str) -> str:
    return _CAMEL.sub(r"_\1", key).lower()


def _normalized_params(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's parameters in snake_case, an eq's ``bands`` list flattened to ``band<i>_…``."""
    params: dict[str, Any] = {}
    for key, value in spec.items():
        if key in _META:
            continue
        params[_snake(str(key))] = value
    bands = params.get("bands")
    if spec.get("type") == "eq" and isinstance(bands, list):
        del params["bands"]
        for i, band in enumerate(bands):
            if not isinstance(band, Mapping):
                params[f"band{i}_invalid"] = band
                continue
            for key, value in band.items():
                name = _snake(str(key))
                params[f"band{i}_{'type' if name == 'kind' else name}"] = value
    return params


def _bypassed(spec: Mapping[str, Any]) -> bool:
    return spec.get("bypass") is True


def _structure(spec: Mapping[str, Any]) -> tuple[object, object]:
    ident = spec.get("id")
    return spec.get("type"), ident if isinstance(ident, str) else None


class _Chain:
    """A track's effects, in document order; ``None`` stands for an entry that could not be built."""

    def __init__(
        self, specs: Sequence[Mapping[str, Any]], channels: int, sample_rate: int, where: str
    ) -> None:
        self.channels = channels
        self.sample_rate = sample_rate
        self.where = where
        self.structure = tuple(_structure(s) for s in specs)
        self.params = [_normalized_params(s) for s in specs]
        self.bypassed = [_bypassed(s) for s in specs]
        self.effects: list[Effect | None] = []
        self.entry_problems: list[str | None] = []
        for i, spec in enumerate(specs):
            built = self._build(spec)
            if isinstance(built, str):
                self.effects.append(None)
                self.entry_problems.append(f"{where}.effects[{i}]: {built}; skipped")
            else:
                self.effects.append(built)
                self.entry_problems.append(None)

    def _build(self, spec: Mapping[str, Any]) -> Effect | str:
        bypass = spec.get("bypass")
        if bypass is not None and not isinstance(bypass, bool):
            return f"bypass must be true or false, got {bypass!r}"
        try:
            return effect_from_document(
                {k: v for k, v in spec.items() if k != "bypass"}, self.channels, self.sample_rate
            )
        except (ValueError, TypeError) as exc:
            return str(exc)

    @property
    def problems(self) -> list[str]:
        return [p for p in self.entry_problems if p is not None]

    @property
    def latency(self) -> int:
        """Frames the active (built, not bypassed) effects delay the signal by."""
        return sum(
            e.latency for e, off in zip(self.effects, self.bypassed, strict=True) if e is not None and not off
        )

    def matches(self, specs: Sequence[Mapping[str, Any]]) -> bool:
        return tuple(_structure(s) for s in specs) == self.structure

    def update(self, specs: Sequence[Mapping[str, Any]]) -> None:
        """New parameters for the same structure (``matches(specs)`` is true).

        Changed parameters go to the effect's ``set_params`` (ramped, no rebuild). An effect is
        built afresh when it never was (it had been invalid), when parameters were removed
        (they return to their defaults) or when ``set_params`` refuses a parameter that is
        fixed at construction (a limiter's look-ahead, an eq's number of bands). If the new
        values are invalid the effect keeps its last valid ones.
        """
        for i, spec in enumerate(specs):
            bypass = _bypassed(spec)
            if self.bypassed[i] and not bypass and self.effects[i] is not None:
                effect = self.effects[i]
                assert effect is not None
                effect.reset()  # its history is from before the bypass
            self.bypassed[i] = bypass
            params = _normalized_params(spec)
            old = self.params[i]
            if params == old:
                continue
            self.params[i] = params
            effect = self.effects[i]
            where = f"{self.where}.effects[{i}]"
            if effect is None or set(old) - set(params):
                built = self._build(spec)
                if not isinstance(built, str):
                    self.effects[i] = built
                    self.entry_problems[i] = None
                elif effect is None:
                    self.entry_problems[i] = f"{where}: {built}; skipped"
                else:
                    self.entry_problems[i] = f"{where}: {built}; keeping the previous values"
                continue
            changed = {k: v for k, v in params.items() if k not in old or old[k] != v}
            try:
                effect.set_params(**changed)
                self.entry_problems[i] = None
            except (ValueError, TypeError) as exc:
                built = self._build(spec)
                if isinstance(built, str):
                    self.entry_problems[i] = f"{where}: {exc}; keeping the previous values"
                else:
                    self.effects[i] = built
                    self.entry_problems[i] = None

    def process(self, block: F32) -> None:
        for effect, off in zip(self.effects, self.bypassed, strict=True):
            if effect is not None and not off:
                effect.process(block)


# --------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------


class _Node:
    """One track: its clips, chain and strip, and its work buffers.

    The buffers are flat, and each block uses a C-contiguous (channels, n) view of their start
    (what the effects require). ``block(n)`` is the input/work block: the clips of a source, the
    sum of a bus's inputs; ``output(n)`` the post-fader stereo output (the same memory as the
    work block for stereo nodes).
    """

    def __init__(self, track: Track, channels: int, sample_rate: int, capacity: int, audible: bool) -> None:
        self.id = track.id
        self.is_bus = track.kind == "bus"
        self.channels = channels
        self.sample_rate = sample_rate
        self.where = f"tracks.{track.id}"
        self.chain = _Chain(track.effects, channels, sample_rate, self.where)
        self.strip = _Strip(
            sample_rate,
            stereo=channels == 2,
            gain_db=track.gain_db,
            pan=track.pan,
            audible=audible,
            invert=track.phase_invert,
        )
        self.clips: tuple[_PlacedClip, ...] = ()
        self.dest: str | None = None
        self.meter: TrackMeter | None = None
        self.compensation = CompensationDelay(2, sample_rate)
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = np.zeros(self.channels * capacity, dtype=np.float32)
        self._out = self._buf if self.channels == 2 else np.zeros(2 * capacity, dtype=np.float32)

    def ensure(self, capacity: int) -> None:
        if capacity > self.capacity:
            self._alloc(capacity)

    def block(self, n: int) -> F32:
        return self._buf[: self.channels * n].reshape(self.channels, n)

    def output(self, n: int) -> F32:
        return self._out[: 2 * n].reshape(2, n)

    def compatible(self, track: Track, channels: int) -> bool:
        return (track.kind == "bus") == self.is_bus and channels == self.channels

    def configure(self, track: Track, audible: bool) -> None:
        self.strip.configure(gain_db=track.gain_db, pan=track.pan, audible=audible, invert=track.phase_invert)
        if self.chain.matches(track.effects):
            self.chain.update(track.effects)
        else:
            self.chain = _Chain(track.effects, self.channels, self.sample_rate, self.where)

    def render_clips(self, t0: int, n: int) -> None:
        buf = self.block(n)
        buf[...] = 0.0
        t1 = t0 + n
        for clip in self.clips:
            w = clip.where
            if w.start >= t1:
                break
            if w.end <= t0:
                continue
            a = max(t0, w.start)
            b = min(t1, w.end)
            pos = a - w.start
            graph_kernels.add_clip(
                buf,
                clip.samples,
                a - t0,
                w.offset + pos,
                b - a,
                clip.gain,
                w.fade_in,
                w.fade_out,
                pos,
                w.length,
            )

    def finish(self, n: int) -> None:
        """Effects, then polarity, fader and pan, on ``block(n)``; the result is ``output(n)``."""
        block = self.block(n)
        self.chain.process(block)
        out = self.output(n)
        if self.channels == 1:
            graph_kernels.copy_scaled(block, out, n, 1.0)
        self.strip.process(out)
        if self.meter is not None:
            self.meter.feed(out)

    def render_source(self, t0: int, n: int) -> None:
        self.render_clips(t0, n)
        self.finish(n)

    def routed(self, n: int) -> F32:
        """``output(n)`` delayed by the node's latency compensation (what its destination sums)."""
        out = self.output(n)
        return out if self.compensation.idle else self.compensation.process(out)

    def cost(self) -> int:
        return self.channels * (1 + len(self.chain.effects))


# --------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------


class Graph:
    """A session mixer compiled from the document; see the module docstring.

    ``assets`` supplies the audio (a mapping or an :class:`AssetSource`; a missing asset is
    silence). ``block`` is the expected largest block (larger ones grow the buffers).
    ``workers > 1`` processes source tracks in parallel threads; ``meters=True`` feeds a
    :class:`~realtime.dsp.meters.TrackMeter` per track (:attr:`meters`) and on the master
    (:attr:`master_meter`). Not thread-safe: one thread calls ``update`` and ``render_block``.
    """

    def __init__(
        self,
        assets: Mapping[str, F32] | AssetSource | None = None,
        *,
        sample_rate: int = 48000,
        block: int = 1024,
        workers: int = 1,
        meters: bool = False,
        limiter_lookahead_ms: float = 1.5,
    ) -> None:
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.sample_rate = check_sample_rate(sample_rate)
        self.assets = as_asset_source(assets)
        self.workers = workers
        self._capacity = block
        self._meters = meters
        self._lookahead_ms = limiter_lookahead_ms
        self._nodes: dict[str, _Node] = {}
        self._sources: list[_Node] = []
        self._buses: list[_Node] = []  # in processing order: a bus after every bus feeding it
        self._groups: list[list[_Node]] = []
        self._master_gain = SmoothedGain(2, self.sample_rate, 0.0)
        self._configured = False
        self._limiter: Limiter | None = Limiter(2, self.sample_rate, lookahead_ms=limiter_lookahead_ms)
        self._master = np.zeros(2 * block, dtype=np.float32)
        self.master_meter: TrackMeter | None = TrackMeter(2, self.sample_rate) if meters else None
        self._pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="dsp") if workers > 1 else None
        self._problems: tuple[str, ...] = ()
        self._logged: set[str] = set()
        self._plan = LatencyPlan(self._limiter.latency if self._limiter is not None else 0)
        self.track_outputs: dict[str, F32] = {}

    # lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # properties ---------------------------------------------------------------------------
    @property
    def latency(self) -> int:
        """Frames by which the master output lags the timeline (compensated effects plus the limiter)."""
        return self._plan.latency_samples

    @property
    def plan(self) -> LatencyPlan:
        """The latency compensation in effect since the last :meth:`update` (see :mod:`.latency`)."""
        return self._plan

    @property
    def problems(self) -> tuple[str, ...]:
        """What the last :meth:`update` could not honour (invalid effects, missing assets, …)."""
        return self._problems

    @property
    def nodes(self) -> Mapping[str, object]:
        """Track id → the node object (identity is stable across updates that keep it)."""
        return dict(self._nodes)

    @property
    def meters(self) -> dict[str, TrackMeter]:
        return {tid: node.meter for tid, node in self._nodes.items() if node.meter is not None}

    def effects(self, track_id: str) -> tuple[Effect | None, ...]:
        """The effect objects of a track's chain (None for an entry that was skipped)."""
        return tuple(self._nodes[track_id].chain.effects)

    # update -------------------------------------------------------------------------------
    def _asset(
        self, asset_id: str, where: str, problems: list[str], cache: dict[str, F32 | None]
    ) -> F32 | None:
        if asset_id in cache:
            samples = cache[asset_id]
        else:
            samples = _checked_samples(self.assets.get(asset_id))
            cache[asset_id] = samples
        if samples is None:
            problems.append(f"{where}: asset {asset_id} is missing or not audio; silent")
        return samples

    def update(self, doc: SessionDocument) -> None:
        """Bring the graph in line with ``doc``; takes effect at the next block."""
        problems: list[str] = []
        cache: dict[str, F32 | None] = {}
        tracks = list(doc.tracks)
        by_id = {t.id: t for t in tracks}
        bus_ids = [t.id for t in tracks if t.kind == "bus"]

        # routing: outputs that name a bus; cycles cut
        dest: dict[str, str | None] = {}
        for t in tracks:
            out = t.output
            if out is not None and (out not in by_id or by_id[out].kind != "bus"):
                problems.append(f"tracks.{t.id}.output: {out!r} is not a bus; routed to the master")
                out = None
            dest[t.id] = out
        resolved: set[str] = set()
        for b in bus_ids:
            path = [b]
            x = dest[b]
            while x is not None and x not in resolved:
                if x in path:
                    problems.append(
                        f"tracks.{path[-1]}.output: routing cycle through {x!r}; routed to the master"
                    )
                    dest[path[-1]] = None
                    break
                path.append(x)
                x = dest[x]
            resolved.update(path)

        def downstream(tid: str) -> list[str]:
            chain: list[str] = []
            x = dest[tid]
            while x is not None:
                chain.append(x)
                x = dest[x]
            return chain

        paths = {t.id: downstream(t.id) for t in tracks}
        any_solo = any(t.solo for t in tracks)
        fed_by_solo: set[str] = set()
        for t in tracks:
            if t.solo:
                fed_by_solo.update(paths[t.id])

        def audible(t: Track) -> bool:
            if t.mute:
                return False
            if not any_solo or t.solo or t.id in fed_by_solo:
                return True
            return any(by_id[b].solo for b in paths[t.id])

        # nodes: reuse by id
        nodes: dict[str, _Node] = {}
        for t in tracks:
            placed: list[_PlacedClip] = []
            channels = 2
            if t.kind != "bus":
                channels = 1
                for clip in t.clips:
                    where = f"tracks.{t.id}.clips.{clip.id}"
                    samples = self._asset(clip.asset_id, where, problems, cache)
                    if samples is None:
                        continue
                    frames = clip_frames(
                        clip.start,
                        clip.offset,
                        clip.length,
                        clip.fade_in,
                        clip.fade_out,
                        samples.shape[1],
                        self.sample_rate,
                    )
                    if frames is None:
                        continue
                    channels = max(channels, min(2, samples.shape[0]))
                    placed.append(_PlacedClip(samples, frames, db_to_gain(clip.gain_db)))
            if t.kind == "bus" and t.clips:
                problems.append(f"tracks.{t.id}.clips: a bus plays no clips")
            placed.sort(key=lambda c: c.where.start)
            node = self._nodes.get(t.id)
            if node is not None and node.compatible(t, channels):
                node.configure(t, audible(t))
            else:
                node = _Node(t, channels, self.sample_rate, self._capacity, audible(t))
            node.clips = tuple(placed)
            node.dest = dest[t.id]
            if self._meters and node.meter is None:
                node.meter = TrackMeter(2, self.sample_rate)
            problems.extend(node.chain.problems)
            nodes[t.id] = node
        self._nodes = nodes
        self._sources = [nodes[t.id] for t in tracks if t.kind != "bus"]
        depth = {b: len(paths[b]) for b in bus_ids}
        self._buses = [nodes[b] for b in sorted(bus_ids, key=lambda b: -depth[b])]
        self._groups = _partition(self._sources, self.workers)
        self.track_outputs = {}

        self._update_master(doc.session.master, problems)
        self._update_latency()
        self._problems = tuple(problems)
        fresh = [p for p in problems if p not in self._logged]
        for p in fresh:
            log.warning("graph: %s", p)
        self._logged = set(problems)

    def _update_master(self, master: Master, problems: list[str]) -> None:
        self._master_gain.set_gain_db(master.gain_db)
        if not self._configured:  # the first document: start at its values, no ramp
            self._master_gain.reset()
            self._configured = True
        if not master.limiter:
            self._limiter = None
        elif self._limiter is None:
            self._limiter = Limiter(
                2, self.sample_rate, ceiling_db=master.ceiling_db, lookahead_ms=self._lookahead_ms
            )
        elif master.ceiling_db != self._limiter.ceiling_db:
            self._limiter.set_params(ceiling_db=master.ceiling_db)

    def _update_latency(self) -> None:
        order = [*self._sources, *self._buses]
        plan = plan_latency(
            [LatencyNode(node.id, node.dest, node.is_bus, node.chain.latency) for node in order],
            self._limiter.latency if self._limiter is not None else 0,
        )
        for node in order:
            node.compensation.set(plan.tracks[node.id].compensation_samples)
        self._plan = plan

    # rendering ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Clear every effect's history and finish every ramp (after a seek, before a render)."""
        for node in self._nodes.values():
            for effect in node.chain.effects:
                if effect is not None:
                    effect.reset()
            node.strip.reset()
            node.compensation.reset()
        self._master_gain.reset()
        if self._limiter is not None:
            self._limiter.reset()

    def _ensure(self, n: int) -> None:
        if n > self._capacity:
            self._capacity = max(n, 2 * self._capacity)
            self._master = np.zeros(2 * self._capacity, dtype=np.float32)
        for node in self._nodes.values():
            node.ensure(self._capacity)

    def render_block(self, t0_frame: int, n: int) -> F32:
        """Render timeline frames ``[t0_frame, t0_frame + n)``: the master output, (2, n) float32.

        The array returned and :attr:`track_outputs` (track id → its post-fader (2, n) output,
        before compensation, buses and master; it lags the timeline by the track's
        ``output_latency_samples``) are internal buffers, valid until the next call. The master
        output lags the timeline by :attr:`latency` frames.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n = int(n)
        t0 = int(t0_frame)
        self._ensure(n)
        self._render_sources(t0, n)
        master = self._master[: 2 * n].reshape(2, n)
        master[...] = 0.0
        for bus in self._buses:
            bus.block(n)[...] = 0.0
        for node in self._sources:
            self._route(node, n, master)
        for bus in self._buses:
            bus.finish(n)
            self._route(bus, n, master)
        self._master_gain.process(master)
        if self._limiter is not None:
            self._limiter.process(master)
        if self.master_meter is not None:
            self.master_meter.feed(master)
        self.track_outputs = {tid: node.output(n) for tid, node in self._nodes.items()}
        return master

    def _route(self, node: _Node, n: int, master: F32) -> None:
        target = master if node.dest is None else self._nodes[node.dest].block(n)
        graph_kernels.accumulate(target, node.routed(n), n)

    def _render_sources(self, t0: int, n: int) -> None:
        if self._pool is None or len(self._groups) < 2:
            for node in self._sources:
                node.render_source(t0, n)
            return
        futures: list[Future[None]] = [
            self._pool.submit(_render_group, group, t0, n) for group in self._groups[1:]
        ]
        try:
            _render_group(self._groups[0], t0, n)
        finally:
            for f in futures:
                f.result()


def _render_group(group: Iterable[_Node], t0: int, n: int) -> None:
    for node in group:
        node.render_source(t0, n)


def _partition(nodes: Sequence[_Node], workers: int) -> list[list[_Node]]:
    """Split source nodes into ``workers`` groups of similar cost (greedy, largest first)."""
    groups: list[list[_Node]] = [[] for _ in range(max(1, min(workers, len(nodes))))]
    loads = [0] * len(groups)
    for node in sorted(nodes, key=lambda x: -x.cost()):
        i = loads.index(min(loads))
        groups[i].append(node)
        loads[i] += node.cost()
    return [g for g in groups if g]


def _checked_samples(samples: object) -> F32 | None:
    """Samples as the kernels want them: float32, (channels, frames), C-contiguous; else None."""
    if not isinstance(samples, np.ndarray) or samples.ndim not in (1, 2) or samples.size == 0:
        return None
    if samples.ndim == 1:
        samples = samples.reshape(1, -1)
    if samples.shape[0] > 64 or not np.issubdtype(samples.dtype, np.floating):
        return None
    out: F32 = np.ascontiguousarray(samples, dtype=np.float32)
    return out
