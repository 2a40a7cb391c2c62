"""GPU-graph checks that run in numba's CUDA simulator, in a process of their own.

``NUMBA_ENABLE_CUDASIM`` is read once, when numba is first imported, and decides for the whole
process whether ``numba.cuda`` is the simulator; so these cases never run inside the pytest
process. :mod:`tests.dsp.test_gpu_graph` runs ``python -m tests.dsp.gpu_sim_cases`` with the
variable set and reads one JSON object (case → null or the failure) from its last output line.

The GPU graph runs with ``xp=numpy``: the array code is the cupy code with numpy standing in,
and the ``numba.cuda`` kernels run in the simulator. Signals are short (the simulator runs each
GPU thread as Python).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - a misuse, not a test
    raise SystemExit("run with NUMBA_ENABLE_CUDASIM=1 (see the module docstring)")

import numpy as np
from numba import cuda
from numpy.typing import NDArray

from realtime.dsp.gpu_effects import EffectRunner
from realtime.dsp.gpu_graph import GpuGraph
from realtime.dsp.graph import Graph
from realtime.session.schema import Clip, Master, SessionDocument, SessionInfo, Track

F32 = NDArray[np.float32]
FS = 48000
TOLERANCE = 1e-6
"""Largest |GPU - CPU| allowed on signals of amplitude ≤ 1: float32 rounding, not behaviour."""

EQ_BANDS: list[dict[str, Any]] = [
    {"type": "highpass", "freq": 80.0, "q": 0.7},
    {"type": "peaking", "freq": 900.0, "gainDb": 5.0, "q": 1.2},
    {"type": "highshelf", "freq": 6000.0, "gainDb": -3.0, "slope": 1.0},
    {"type": "lowpass", "freq": 15000.0, "q": 0.7},
]
EQ: dict[str, Any] = {"type": "eq", "id": "eq", "bands": EQ_BANDS}
EQ2: dict[str, Any] = {"type": "eq", "id": "eq", "bands": EQ_BANDS[1:3]}  # fewer sections
COMP = {
    "type": "compressor",
    "id": "comp",
    "thresholdDb": -24.0,
    "ratio": 4.0,
    "attackMs": 2.0,
    "makeupDb": 3.0,
}
RMS_COMP = {"type": "compressor", "id": "rms", "thresholdDb": -20.0, "detector": "rms", "rmsMs": 5.0}
DELAY = {"type": "delay", "id": "dly", "timeMs": 11.0, "feedback": 0.5, "mix": 0.4, "maxTimeMs": 50.0}
REVERB = {"type": "reverb", "id": "rev", "roomSize": 0.7, "wet": 0.4, "dry": 0.8}
LIMIT = {"type": "limiter", "id": "lim", "ceilingDb": -6.0, "lookaheadMs": 1.0}


def _assets() -> dict[str, F32]:
    rng = np.random.default_rng(7)
    t = np.arange(6000) / FS
    tone = 0.6 * np.sin(2 * np.pi * 220.0 * t) * (1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * t))
    return {
        "mono": rng.uniform(-0.5, 0.5, (1, 6000)).astype(np.float32),
        "stereo": np.stack([tone, np.roll(tone, 17)]).astype(np.float32),
        "hot": (1.4 * np.sign(tone) * np.abs(tone) ** 0.5).reshape(1, -1).astype(np.float32),
    }


def _session(**changes: Mapping[str, Any]) -> SessionDocument:
    """Four sources and a bus, every stage of the chain; ``changes`` replace track fields."""
    tracks = [
        Track(
            "m",
            "M",
            gain_db=-2.0,
            pan=-0.4,
            clips=(
                Clip("c1", "mono", 0.0, length=0.05, gain_db=-3.0, fade_in=0.01, fade_out=0.02),
                Clip("c2", "mono", 0.04, offset=0.01, fade_in=0.005),
            ),
            effects=(EQ, COMP),
        ),
        Track(
            "s", "S", pan=0.3, clips=(Clip("c3", "stereo", 0.002, fade_out=0.03),), effects=(RMS_COMP, LIMIT)
        ),
        Track("h", "H", gain_db=3.0, clips=(Clip("c4", "hot", 0.0),), effects=(DELAY, REVERB), output="bus"),
        # with "m", a second eq and compressor at the same chain positions: the batched kernels
        Track("m2", "M2", pan=0.5, clips=(Clip("c5", "stereo", 0.01),), effects=(EQ2, RMS_COMP)),
        Track("bus", "Bus", kind="bus", gain_db=-1.0, effects=(EQ, REVERB)),
    ]
    tracks = [dataclasses.replace(t, **changes.get(t.id, {})) for t in tracks]
    return SessionDocument(SessionInfo(master=Master(gain_db=4.0, ceiling_db=-3.0)), tuple(tracks))


Docs = Mapping[int, SessionDocument | tuple[SessionDocument, ...]]


def _render(
    graph: Graph, docs: Docs, frames: int, block: int, reset_at: int | None = None
) -> tuple[F32, dict[str, F32]]:
    """Render in blocks, applying ``docs[frame]`` (one or several updates) at those block starts;
    returns the master and the stems."""
    out = np.zeros((2, frames), dtype=np.float32)
    stems: dict[str, F32] = {}
    for s in range(0, frames, block):
        updates = docs.get(s, ())
        for doc in updates if isinstance(updates, tuple) else (updates,):
            graph.update(doc)
        if s == reset_at:
            graph.reset()
        n = min(block, frames - s)
        out[:, s : s + n] = graph.render_block(s, n)
        for tid, o in graph.track_outputs.items():
            stems.setdefault(tid, np.zeros((2, frames), dtype=np.float32))[:, s : s + n] = o
    return out, stems


def _both(
    docs: Docs, frames: int = 4500, block: int = 1000, reset_at: int | None = None
) -> tuple[tuple[F32, dict[str, F32]], tuple[F32, dict[str, F32]]]:
    assets = _assets()
    with Graph(assets, block=block) as cpu:
        expected = _render(cpu, docs, frames, block, reset_at)
    with GpuGraph(assets, block=block, xp=np) as gpu:
        got = _render(gpu, docs, frames, block, reset_at)
    return expected, got


def _assert_close(expected: tuple[F32, dict[str, F32]], got: tuple[F32, dict[str, F32]]) -> None:
    (mix_e, stems_e), (mix_g, stems_g) = expected, got
    assert np.abs(mix_e).max() > 0.1, "the session must be audible"
    err = float(np.abs(mix_g.astype(np.float64) - mix_e).max())
    assert err <= TOLERANCE, f"master differs by {err:.3g} > {TOLERANCE}"
    assert set(stems_g) == set(stems_e)
    for tid, stem in stems_e.items():
        err = float(np.abs(stems_g[tid].astype(np.float64) - stem).max())
        assert err <= TOLERANCE, f"stem {tid} differs by {err:.3g} > {TOLERANCE}"


def case_simulator_is_on() -> None:
    assert cuda.jit.__module__.startswith("numba.cuda.simulator")


def case_session_matches_cpu() -> None:
    batched: list[str] = []
    originals = {name: getattr(EffectRunner, name) for name in ("_equalizers", "_compressors")}
    for name, method in originals.items():

        def spy(self: EffectRunner, *args: Any, _method: Any = method, _name: str = name) -> None:
            batched.append(_name)
            _method(self, *args)

        setattr(EffectRunner, name, spy)
    try:
        expected, got = _both({0: _session()})
    finally:
        for name, method in originals.items():
            setattr(EffectRunner, name, method)
    assert "_equalizers" in batched  # "m" and "m2" ran together
    assert "_compressors" in batched
    _assert_close(expected, got)
    # the master limiter and the track limiter were working, not idle
    assert np.abs(expected[0]).max() <= 10 ** (-3.0 / 20.0) + 1e-6
    # and the track limiter's latency is compensated on the other paths
    with GpuGraph(_assets(), xp=np) as graph:
        graph.update(_session())
        assert graph.plan.compensation_samples["m"] > 0


def case_mute_solo_match_cpu() -> None:
    doc = _session(m={"solo": True}, h={"mute": True})
    expected, got = _both({0: doc})
    _assert_close(expected, got)
    assert not got[1]["h"].any()  # muted
    assert not got[1]["s"].any()  # soloed out


def case_changes_at_block_boundaries_match_cpu() -> None:
    bands: list[dict[str, Any]] = [dict(b) for b in EQ_BANDS]
    bands[1]["gainDb"] = -6.0  # a value: ramped coefficients
    eq2 = dict(EQ, bands=bands)
    eq3 = dict(EQ, bands=[{"type": "lowshelf", "freq": 200.0, "gainDb": 4.0, "slope": 1.0}])  # a crossfade
    changed = _session(
        m={"gain_db": -8.0, "pan": 0.6, "phase_invert": True, "effects": (eq2, dict(COMP, makeupDb=-2.0))},
        s={"mute": True},
        h={"effects": (dict(DELAY, timeMs=23.0), dict(REVERB, wet=0.1))},
        bus={"effects": (eq3, REVERB)},
    )
    bypassed = _session(
        m={"effects": (dict(EQ, bypass=True), COMP)}, h={"effects": (DELAY, dict(REVERB, bypass=True))}
    )
    docs: Docs = {
        0: _session(),
        2000: changed,
        2500: bypassed,
        3000: _session(s={"solo": True}),  # un-bypassing resets an effect's history
        4000: (bypassed, _session()),  # also with no block in between
    }
    expected, got = _both(docs, frames=5000)
    _assert_close(expected, got)


def case_reset_matches_cpu() -> None:
    expected, got = _both({0: _session()}, frames=3000, reset_at=2000)
    _assert_close(expected, got)


def case_irregular_blocks_and_nested_buses_match_cpu() -> None:
    """Blocks of any length (1 frame included), a bus feeding a bus, an empty bus, a cycle."""
    doc = _session(bus={"output": "sub"})
    extra = (
        Track("sub", "Sub", kind="bus", pan=-0.2, effects=(COMP,), output=None),
        Track("empty", "Empty", kind="bus", effects=(REVERB,), output="sub"),
        Track("loop", "Loop", kind="bus", output="loop"),  # a cycle: cut, reported, to the master
    )
    doc = dataclasses.replace(doc, tracks=doc.tracks + extra)
    sizes = np.random.default_rng(5).integers(1, 700, size=40).tolist()
    sizes[:3] = [1, 1, 2]
    assets = _assets()
    results = []
    for graph in (Graph(assets, block=256), GpuGraph(assets, block=256, xp=np)):
        with graph:
            graph.update(doc)
            assert any("cycle" in p for p in graph.problems)
            out, at = [], 0
            for n in sizes:
                out.append(graph.render_block(at, n).copy())
                at += n
            results.append(np.concatenate(out, axis=1))
    assert np.abs(results[0]).max() > 0.1
    err = float(np.abs(results[1].astype(np.float64) - results[0]).max())
    assert err <= TOLERANCE, f"master differs by {err:.3g} > {TOLERANCE}"


def case_render_session_on_cupy_matches_numba() -> None:
    """The offline render path (``render_session(backend="cupy")``, as mixdowns take it) picks the
    GPU graph, here with numpy standing in for cupy; mix and latency-aligned stems match numba."""
    from realtime.dsp import backend, gpu_graph
    from realtime.dsp.render import render_session

    built: list[str] = []
    real_select, real_xp = backend.select_backend, gpu_graph._default_xp

    def fake_xp() -> Any:
        built.append("gpu")
        return np

    backend.select_backend = lambda requested="auto": "cupy" if requested == "cupy" else "numba"
    gpu_graph._default_xp = fake_xp
    try:
        options: dict[str, Any] = {"end_s": 0.09, "block": 700, "stems": True}
        gpu = render_session(_session(), _assets(), backend="cupy", **options)
        cpu = render_session(_session(), _assets(), backend="numba", **options)
    finally:
        backend.select_backend, gpu_graph._default_xp = real_select, real_xp
    assert built == ["gpu"]
    assert gpu.stems is not None
    assert cpu.stems is not None
    _assert_close((cpu.mix, cpu.stems), (gpu.mix, gpu.stems))


def case_gain_step_is_click_free() -> None:
    """A fader step at a block boundary ramps on the GPU as on the CPU: no sample step beyond a sine's."""
    freq, amp, frames, block = 437.0, 0.4, 4000, 500
    x = (amp * np.sin(2 * np.pi * freq * np.arange(frames) / FS)).astype(np.float32)
    x = np.stack([x, x])

    def doc(gain_db: float) -> SessionDocument:
        track = Track("t", "T", gain_db=gain_db, clips=(Clip("c", "x", 0.0),))
        return SessionDocument(SessionInfo(master=Master(limiter=False)), (track,))

    def run(hard: bool) -> F32:
        out = np.zeros((2, frames), dtype=np.float32)
        with GpuGraph({"x": x}, block=block, xp=np) as graph:
            graph.update(doc(0.0))
            for s in range(0, frames, block):
                if s == 2000:
                    graph.update(doc(-30.0))
                    if hard:
                        graph.reset()
                out[:, s : s + block] = graph.render_block(s, block)
        return out

    assert abs(x[0, 2000]) > 0.2
    bound = 2.0 * amp * float(np.sin(np.pi * freq / FS)) * 1.05 + 1e-4
    smooth = float(np.abs(np.diff(run(False).astype(np.float64))).max())
    assert smooth <= bound, f"step {smooth:.4g} > {bound:.4g}"
    hard = float(np.abs(np.diff(run(True).astype(np.float64))).max())
    assert hard > bound  # the check can tell a jump from a ramp


def case_device_state_follows_the_graph() -> None:
    assets = _assets()
    with GpuGraph(assets, block=500, xp=np) as graph:
        graph.update(_session())
        graph.render_block(0, 500)
        full = len(graph._state)
        assert len(graph._assets_on_device) == 3
        doc = _session()
        graph.update(dataclasses.replace(doc, tracks=doc.tracks[:1]))  # one asset left
        assert len(graph._assets_on_device) == 1
        graph.render_block(500, 500)
        assert 0 < len(graph._state) < full


CASES: dict[str, Callable[[], None]] = {
    name.removeprefix("case_"): fn for name, fn in list(globals().items()) if name.startswith("case_")
}


def main(names: list[str]) -> None:
    results: dict[str, str | None] = {}
    for name in names or list(CASES):
        try:
            CASES[name]()
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
