"""Offline rendering: a session's timeline through the :class:`~realtime.dsp.graph.Graph`.

:func:`render_session` returns the mix (and optionally per-track stems) as arrays;
:func:`render_to` streams the same blocks into a :class:`RenderSink` (the mixdown API and the
CLI encode them as they come, so a long render never holds stems in memory).

The range: ``start_s`` (default 0) to ``end_s``; ``end_s=None`` means the end of the last clip
(every non-bus track's clips count, muted ones included) plus ``tail_s`` (default 0, so a render
is exactly as long as its material; give a few seconds to keep reverb and delay tails). The
graph's latency (look-ahead effects, compensated between tracks, plus the master limiter:
``graph.plan.latency_samples``) is removed: the graph runs that many frames further and the
first ones of its output are dropped, so the mix is aligned with the timeline (a stereo track
at unity renders bit-identical to its asset). Effects start from silence at ``start_s`` (no
pre-roll).

Stems are each track's post-fader output (buses included), before buses and the master, each
advanced by its own ``output_latency_samples``, so they line up with the timeline too; a muted
or soloed-out track's stem is silence.

``workers > 1`` runs the source tracks of each block on that many threads; the output is
bit-identical to ``workers=1``. ``progress(fraction)`` is called with 0.0 first, then at most
about 10 times a second, and with 1.0 at the end; ``cancel.set()`` stops the render with
:class:`RenderCancelled` at the next block.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..session.schema import SessionDocument
from .backend import make_graph
from .graph import AssetSource, as_asset_source, session_end_frame

__all__ = [
    "PROGRESS_INTERVAL_S",
    "RenderCancelled",
    "RenderPlan",
    "RenderResult",
    "RenderSink",
    "frames_of_assets",
    "plan_render",
    "render_session",
    "render_to",
]

SAMPLE_RATE = 48000
PROGRESS_INTERVAL_S = 0.1

F32 = NDArray[np.float32]


class RenderCancelled(Exception):
    """The render's ``cancel`` event was set."""


@dataclass(frozen=True)
class RenderResult:
    mix: np.ndarray  # float32 (2, frames)
    stems: dict[str, np.ndarray] | None  # track id -> float32 (2, frames), post-fader, pre-master
    sample_rate: int


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """The timeline range of a render, in frames."""

    start_frame: int
    frames: int
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


class RenderSink(Protocol):
    """Receives a render as consecutive blocks from the start of the range.

    ``mix`` blocks are (2, n) float32; ``stems`` (only when stems are rendered) maps track ids to
    their next (2, n) block; the blocks of one call may differ in length (each stem is advanced
    by its own latency), a stem with nothing new is left out, and each stem's blocks are
    consecutive. The arrays are only valid during the call.
    """

    def mix(self, block: F32) -> None: ...

    def stems(self, blocks: Mapping[str, F32]) -> None: ...


def plan_render(
    doc: SessionDocument,
    asset_frames: Callable[[str], int | None],
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    tail_s: float = 0.0,
    sample_rate: int = SAMPLE_RATE,
) -> RenderPlan:
    """The frames a render covers. Raises ``ValueError`` for a negative or reversed range."""
    for name, value in (("start", start_s), ("tail", tail_s)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
    start = round(start_s * sample_rate)
    if end_s is None:
        end = session_end_frame(doc, asset_frames, sample_rate) + round(tail_s * sample_rate)
        end = max(end, start)
    else:
        if not math.isfinite(end_s) or end_s < start_s:
            raise ValueError(f"end must be a finite number of seconds >= start ({start_s}), got {end_s}")
        end = round(end_s * sample_rate)
    return RenderPlan(start, end - start, sample_rate)


class _Progress:
    def __init__(self, callback: Callable[[float], None] | None, total: int) -> None:
        self._callback = callback
        self._total = max(1, total)
        self._last = -math.inf

    def start(self) -> None:
        if self._callback is not None:
            self._last = time.monotonic()
            self._callback(0.0)

    def update(self, done: int) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self._callback(min(1.0, done / self._total))

    def finish(self) -> None:
        if self._callback is not None:
            self._callback(1.0)


def frames_of_assets(source: AssetSource) -> Callable[[str], int | None]:
    """``asset id → its length in frames`` (None when missing), as :func:`plan_render` wants."""

    def frames(asset_id: str) -> int | None:
        samples = source.get(asset_id)
        if not isinstance(samples, np.ndarray) or samples.ndim not in (1, 2):
            return None
        return int(samples.shape[-1])

    return frames


def render_to(
    sink: RenderSink,
    doc: SessionDocument,
    assets: Mapping[str, np.ndarray] | AssetSource,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    tail_s: float = 0.0,
    block: int = 4096,
    workers: int = 1,
    stems: bool = False,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    backend: str | None = None,
) -> RenderPlan:
    """Render into ``sink`` (see the module docstring); returns the range rendered.

    ``backend`` (``numba``, ``cupy``, ``auto``; None: the server's ``--dsp-backend``) picks the
    graph: :func:`~realtime.dsp.backend.make_graph`."""
    source = as_asset_source(assets)
    plan = plan_render(doc, frames_of_assets(source), start_s=start_s, end_s=end_s, tail_s=tail_s)
    graph = make_graph(backend, source, sample_rate=plan.sample_rate, block=block, workers=workers)
    with graph:
        graph.update(doc)
        latency = graph.latency
        total = plan.frames + latency if plan.frames else 0
        meter = _Progress(progress, total)
        meter.start()
        done = 0
        while done < total:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled("render cancelled")
            n = min(block, total - done)
            out = graph.render_block(plan.start_frame + done, n)
            # The master output lags by `latency`: its frame i is timeline frame done + i - latency.
            skip = max(0, latency - done)
            if skip < n:
                sink.mix(out[:, skip:] if skip else out)
            if stems:
                # A stem's frame i is timeline frame done + i - its own output latency.
                blocks: dict[str, F32] = {}
                for tid, o in graph.track_outputs.items():
                    lag = graph.plan.tracks[tid].output_latency_samples
                    a = max(0, lag - done)
                    b = min(n, plan.frames + lag - done)
                    if a < b:
                        blocks[tid] = o[:, a:b]
                if blocks:
                    sink.stems(blocks)
            done += n
            meter.update(done)
        meter.finish()
    return plan


class _ArraySink:
    def __init__(self, frames: int, track_ids: list[str] | None) -> None:
        self.mix_out = np.zeros((2, frames), dtype=np.float32)
        self.stem_out = (
            {tid: np.zeros((2, frames), dtype=np.float32) for tid in track_ids}
            if track_ids is not None
            else None
        )
        self._mix_at = 0
        self._stems_at = dict.fromkeys(track_ids or (), 0)

    def mix(self, block: F32) -> None:
        n = block.shape[1]
        self.mix_out[:, self._mix_at : self._mix_at + n] = block
        self._mix_at += n

    def stems(self, blocks: Mapping[str, F32]) -> None:
        assert self.stem_out is not None
        for tid, b in blocks.items():
            at = self._stems_at[tid]
            self.stem_out[tid][:, at : at + b.shape[1]] = b
            self._stems_at[tid] = at + b.shape[1]


def render_session(
    doc: SessionDocument,
    assets: Mapping[str, np.ndarray] | AssetSource,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    block: int = 4096,
    workers: int = 1,
    stems: bool = False,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    tail_s: float = 0.0,
    backend: str | None = None,
) -> RenderResult:
    """Render the session's timeline (see the module docstring) into arrays."""
    source = as_asset_source(assets)
    plan = plan_render(doc, frames_of_assets(source), start_s=start_s, end_s=end_s, tail_s=tail_s)
    sink = _ArraySink(plan.frames, [t.id for t in doc.tracks] if stems else None)
    render_to(
        sink,
        doc,
        source,
        start_s=start_s,
        end_s=end_s,
        tail_s=tail_s,
        block=block,
        workers=workers,
        stems=stems,
        progress=progress,
        cancel=cancel,
        backend=backend,
    )
    return RenderResult(mix=sink.mix_out, stems=sink.stem_out, sample_rate=plan.sample_rate)
