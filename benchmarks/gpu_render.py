"""The session graph on a GPU (``--dsp-backend cupy``) against the numba graph: x real time and difference.

The session is ``benchmarks/render.py``'s: 32 stereo tracks of synthetic, music-like audio, each
with a 3-band EQ and a compressor, a fader gain and a pan, and the master's true-peak limiter.
The document is built from the schema's dataclasses (the GPU image has no pycrdt, which only
``read_document`` needs).

Both graphs come from ``realtime.dsp.backend.make_graph`` (``numba``, then ``cupy``) and render
the same timeline in blocks of 4096 frames after a warm-up (JIT compilation, a first upload,
then ``reset()``). For each: wall time, x real time (audio seconds per wall second); then the
largest absolute difference between the two masters. The numba graph runs with ``workers=1``
and with ``workers=os.cpu_count()``. The GPU render stops at ``--budget-s`` of wall time; its
figure is then over the frames it reached (printed), and the difference over those.

``--dry-run`` runs the same code with no GPU: numpy stands in for cupy and numba's CUDA
simulator runs the kernels (set before numba is imported), on 2 tracks x 0.2 s. Its numbers
mean nothing; it shows that the script works.

Usage (on a GPU machine the whole run takes well under two minutes)::

    python benchmarks/gpu_render.py [--tracks 32] [--seconds 30] [--budget-s 60] [--out DIR]
    python benchmarks/gpu_render.py --dry-run
    benchmarks/gpu_separation.sh render [ARGS]     # the lent-machine wrapper

JSON goes to ``--out``, else ``$OUT``, else benchmarks/results/gpu_render.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BLOCK = 4096


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tracks", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--budget-s", type=float, default=60.0, help="stop the GPU render after this long")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true", help="no GPU: numpy + numba's CUDA simulator")
    args = p.parse_args(argv)
    if args.dry_run:
        args.tracks, args.seconds, args.budget_s = 2, 0.2, 60.0
    return args


def build_session(params: dict[str, Any], seconds: float) -> Any:
    """``render.build_document``'s session, from the schema's dataclasses."""
    from realtime.session.schema import Clip, Master, SessionDocument, SessionInfo, Track

    comp = params["compressor"]
    eq = {
        "type": "eq",
        "bands": [
            {"type": b["type"], "freq": b["freq"], "gainDb": b["gain_db"], "q": b["q"]} for b in params["eq"]
        ],
    }
    compressor = {
        "type": "compressor",
        "thresholdDb": comp["threshold_db"],
        "ratio": comp["ratio"],
        "attackMs": comp["attack_ms"],
        "releaseMs": comp["release_ms"],
        "kneeDb": comp["knee_db"],
    }
    tracks = tuple(
        Track(
            f"track-{i:02d}",
            f"Track {i + 1}",
            gain_db=t["gain_db"],
            pan=t["pan"],
            clips=(Clip(f"clip-{i:02d}", f"asset-{t['asset_index']:02d}", 0.0, length=seconds),),
            effects=(eq, compressor),
        )
        for i, t in enumerate(params["tracks"])
    )
    master = Master(gain_db=0.0, limiter=True, ceiling_db=params["limiter"]["ceiling_db"])
    return SessionDocument(SessionInfo(title="gpu render benchmark", master=master), tracks)


def render(graph: Any, frames: int, budget_s: float) -> tuple[Any, float, int]:
    """Render ``frames`` timeline frames in blocks; (master, wall seconds, frames done)."""
    import numpy as np

    out = np.zeros((2, frames), dtype=np.float32)
    t0 = time.perf_counter()
    done = 0
    while done < frames:
        n = min(BLOCK, frames - done)
        out[:, done : done + n] = graph.render_block(done, n)
        done += n
        if time.perf_counter() - t0 > budget_s:
            break
    return out, time.perf_counter() - t0, done


def warm_up(graph: Any) -> float:
    t0 = time.perf_counter()
    graph.render_block(0, BLOCK)
    graph.render_block(BLOCK, 100)
    graph.reset()
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is first imported
    try:
        import pycrdt  # noqa: F401
    except ImportError:  # the schema module imports it, but only read_document uses it
        sys.modules["pycrdt"] = types.ModuleType("pycrdt")
    import numpy as np
    import render as session_bench

    from realtime.dsp.backend import make_graph
    from realtime.dsp.gpu_graph import GpuGraph

    rate = session_bench.SAMPLE_RATE
    frames = round(args.seconds * rate)
    params = session_bench.chain_params(args.tracks, args.seed, BLOCK)
    t0 = time.perf_counter()
    assets = {
        session_bench.asset_id(i): session_bench.synth_track(i, frames, args.seed) for i in range(args.tracks)
    }
    print(
        f"assets: {args.tracks} x {args.seconds:g} s synthesised in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    doc = build_session(params, args.seconds)

    def make(backend: str, workers: int = 1) -> Any:
        if backend == "cupy" and args.dry_run:
            return GpuGraph(assets, block=BLOCK, xp=np)
        return make_graph(backend, assets, sample_rate=rate, block=BLOCK, workers=workers)

    results: dict[str, Any] = {
        "tracks": args.tracks,
        "audio_s": args.seconds,
        "block": BLOCK,
        "dry_run": args.dry_run,
        "runs": {},
    }
    masters: dict[str, Any] = {}
    cpus = os.cpu_count() or 1
    for label, backend, workers in (
        ("numba-1", "numba", 1),
        (f"numba-{cpus}", "numba", cpus),
        ("cupy", "cupy", 1),
    ):
        if label == f"numba-{cpus}" and cpus == 1:
            continue
        with make(backend, workers) as graph:
            graph.update(doc)
            warm = warm_up(graph)
            budget = args.budget_s if backend == "cupy" else float("inf")
            master, wall, done = render(graph, frames, budget)
            kind = type(graph).__name__
        masters[label] = (master, done)
        run = {
            "graph": kind,
            "workers": workers,
            "warmup_s": warm,
            "wall_s": wall,
            "frames": done,
            "x_realtime": done / rate / wall if wall > 0 else float("inf"),
        }
        results["runs"][label] = run
        note = "" if done == frames else f" (stopped at {done / rate:.1f} s of {args.seconds:g} s)"
        print(
            f"{label:>10}: {kind}, warm-up {warm:.1f} s, {wall:.2f} s,"
            f" {run['x_realtime']:.1f}x real time{note}",
            flush=True,
        )
    reference, _ = masters["numba-1"]
    gpu, done = masters["cupy"]
    diff = (
        float(np.abs(gpu[:, :done].astype(np.float64) - reference[:, :done]).max()) if done else float("nan")
    )
    peak = float(np.abs(reference).max())
    results["max_abs_diff"] = diff
    results["reference_peak"] = peak
    results["speedup_vs_numba_1"] = (
        results["runs"]["cupy"]["x_realtime"] / results["runs"]["numba-1"]["x_realtime"]
    )
    print(f"max |cupy - numba| = {diff:.3g} (master peak {peak:.3f}) over {done / rate:.2f} s", flush=True)
    out_dir = args.out or (
        Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "gpu_render_dry_run.json" if args.dry_run else "gpu_render.json"
    (out_dir / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
