"""Offline render: a 32-track, 3-minute session (EQ + compressor per track, master limiter), x real time.

The session is built the way a client would build it: a pycrdt document with 32 audio tracks,
each holding one clip that covers a 3-minute stereo asset, with the effect chain

    [{type: "eq", bands: [lowshelf 100 Hz +2 dB, peaking 1 kHz -3 dB q 1, highshelf 8 kHz +1.5 dB]},
     {type: "compressor", thresholdDb: -18, ratio: 4, attackMs: 10, releaseMs: 100, kneeDb: 6}]

a fader gain and a pan per track, and the master's true-peak limiter at -1 dBTP
(``session.master``). ``realtime.session.schema.read_document`` reads it and
``realtime.dsp.render.render_session`` renders it (``block=4096``). The assets are synthetic and
music-like, different for every track and seeded: band-passed noise under a rhythmic envelope
plus a few sustained partials, about -18 dBFS RMS (so the compressors work).

The anchor is Spotify's pedalboard (C++/JUCE) applying the same chain per track
(``benchmarks/_pedalboard_render.py``): ``Pedalboard([LowShelfFilter, PeakFilter,
HighShelfFilter, Compressor])``, the same fader and pan gains, the sum, then ``Limiter`` on the
master. pedalboard is GPL, so it runs from its own virtualenv, ``benchmarks/.anchor-venv``,
which this script creates on first use (``python -m venv`` + ``pip install pedalboard numpy``);
it is never installed into the project's environment. Differences that remain: JUCE's
compressor has no soft knee (ours: 6 dB) and JUCE's limiter is a fast compressor followed by a
clipper on sample peaks (ours: 1.5 ms look-ahead, 4x oversampled true-peak detector).

Method:

- The assets are generated once per run into a temporary ``.npy`` file, (tracks, 2, frames)
  float32; every measurement is a fresh process that loads that file completely into memory
  (as a loaded session holds its decoded assets), warms up (numba JIT from the cache; a short
  render of the first ``--warmup-s`` seconds) and then times the full render. Only the
  rendering is timed, not loading the file.
- One core: the process is pinned to one CPU (``os.sched_setaffinity``), ``workers=1``, and
  the BLAS/OpenMP/numba thread pools are limited to one thread; pedalboard processes the
  tracks one after another. All cores: every allowed CPU, ``workers=os.cpu_count()``, and
  pedalboard processes the tracks on a thread pool of as many threads.
- x real time = audio seconds / wall seconds of the render. Runs are repeated (``--repeats``,
  default 3), alternating the order of the engines, and the reported value is the median.
- Memory: the peak RSS of the rendering process (``ru_maxrss``), its RSS once the session is
  loaded (assets in memory, document read), and the size of the decoded assets.

Usage:
    python benchmarks/render.py                      # 32 tracks x 180 s, 3 repeats, 1 and all cores
    python benchmarks/render.py --quick              # smoke test: 4 tracks x 10 s, 1 repeat
    python benchmarks/render.py --json --plot        # also write benchmarks/results/render.{json,png}

Targets (issue): >= 1.0x pedalboard's throughput on one core; >= 1.8x that (pedalboard's
one-core throughput) on two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import code_state, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
ANCHOR_VENV = ROOT / "benchmarks" / ".anchor-venv"
ANCHOR_SCRIPT = ROOT / "benchmarks" / "_pedalboard_render.py"
ANCHOR_PACKAGES = ("pedalboard", "numpy")

SAMPLE_RATE = 48000
TRACKS = 32
SECONDS = 180.0
BLOCK = 4096
BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)
EQ_BANDS = (
    {"type": "lowshelf", "freq": 100.0, "gain_db": 2.0, "q": BUTTERWORTH_Q},
    {"type": "peaking", "freq": 1000.0, "gain_db": -3.0, "q": 1.0},
    {"type": "highshelf", "freq": 8000.0, "gain_db": 1.5, "q": BUTTERWORTH_Q},
)
COMPRESSOR = {"threshold_db": -18.0, "ratio": 4.0, "attack_ms": 10.0, "release_ms": 100.0, "knee_db": 6.0}
LIMITER = {"ceiling_db": -1.0, "release_ms": 50.0}  # release: our Limiter's default

OURS = "escenario"
ANCHOR = "pedalboard"
ENGINES = (OURS, ANCHOR)
ONE_CORE_TARGET = 1.0
TWO_CORE_TARGET = 1.8
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
RESULT_PREFIX = "RESULT "


# --------------------------------------------------------------------------------------------
# The session: assets, mixer settings, the document
# --------------------------------------------------------------------------------------------
def track_settings(tracks: int, seed: int) -> list[dict[str, float]]:
    """Fader gain (dB) and pan of every track, seeded."""
    import numpy as np

    rng = np.random.default_rng([seed, 1_000_003])
    return [
        {"gain_db": round(float(rng.uniform(-14.0, -8.0)), 2), "pan": round(float(rng.uniform(-0.7, 0.7)), 2)}
        for _ in range(tracks)
    ]


def synth_track(index: int, frames: int, seed: int) -> Any:
    """A music-like stereo signal, (2, frames) float32, about -18 dBFS RMS; different per index."""
    import numpy as np
    from scipy import signal

    rng = np.random.default_rng([seed, index])
    t = np.arange(frames, dtype=np.float64) / SAMPLE_RATE
    # rhythm: decaying hits on a subdivision of 120 bpm, with accents
    step = 0.5 / int(rng.choice([1, 2, 4]))
    decay = float(rng.uniform(0.04, 0.3))
    phase = np.mod(t + float(rng.uniform(0.0, step)), step)
    hit = np.floor((t + float(rng.uniform(0.0, step))) / step).astype(np.int64)
    accents = rng.uniform(0.3, 1.0, size=16)[hit % 16]
    env = accents * np.exp(-phase / decay)
    # band-passed noise, partly correlated between the channels
    lo = float(rng.uniform(60.0, 2000.0))
    hi = min(lo * float(rng.uniform(2.0, 8.0)), 0.45 * SAMPLE_RATE)
    sos = signal.butter(2, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    noise = rng.standard_normal((3, frames), dtype=np.float32)
    noise = signal.sosfilt(sos, noise, axis=-1)
    width = float(rng.uniform(0.1, 0.6))
    stereo_noise = np.stack([noise[0] + width * noise[1], noise[0] + width * noise[2]])
    stereo_noise *= env
    # a few sustained partials (a chord), slowly swelling, placed in the stereo field
    tones = np.zeros((2, frames), dtype=np.float64)
    root = int(rng.integers(36, 72))
    for interval in rng.choice([0, 3, 4, 7, 10, 12, 16, 19], size=int(rng.integers(2, 5)), replace=False):
        f = 440.0 * 2.0 ** ((root + int(interval) - 69) / 12.0)
        lfo = 0.6 + 0.4 * np.sin(2 * np.pi * float(rng.uniform(0.05, 0.5)) * t + float(rng.uniform(0, 6.3)))
        tone = np.sin(2 * np.pi * f * t + float(rng.uniform(0, 6.3))) * lfo
        p = float(rng.uniform(0.2, 0.8))
        tones[0] += math.cos(p * math.pi / 2) * tone
        tones[1] += math.sin(p * math.pi / 2) * tone
    mix = float(rng.uniform(0.3, 0.9))
    x = mix * stereo_noise / max(1e-9, float(np.std(stereo_noise))) + (1 - mix) * tones / max(
        1e-9, float(np.std(tones))
    )
    x *= 10.0 ** (float(rng.uniform(-21.0, -15.0)) / 20.0) / max(1e-9, float(np.sqrt(np.mean(x * x))))
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        x *= 0.99 / peak
    return x.astype(np.float32)


def write_assets(path: Path, tracks: int, frames: int, seed: int) -> None:
    import numpy as np

    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(tracks, 2, frames))
    for i in range(tracks):
        arr[i] = synth_track(i, frames, seed)
    arr.flush()
    del arr


def assets_match(path: Path, tracks: int, frames: int) -> bool:
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return bool(arr.shape == (tracks, 2, frames) and arr.dtype == np.float32)


def anchor_gains(gain_db: float, pan: float) -> tuple[float, float]:
    """Linear (left, right) gains of a stereo track: fader x the balance law the graph uses."""
    try:
        from realtime.dsp.graph import strip_gains
    except ImportError:
        strip_gains = None
    if strip_gains is not None:
        left, right = strip_gains(gain_db, pan, stereo=True)
        return float(left), float(right)
    # The graph's documented law for stereo tracks: each side min(1, √2 · constant-power gain).
    from realtime.dsp.units import db_to_gain, pan_gains

    cl, cr = pan_gains(pan)
    g = float(db_to_gain(gain_db))
    return g * min(1.0, math.sqrt(2.0) * cl), g * min(1.0, math.sqrt(2.0) * cr)


def chain_params(tracks: int, seed: int, block: int = BLOCK) -> dict[str, Any]:
    """Everything both engines need to know about the session, as JSON."""
    settings = track_settings(tracks, seed)
    entries = []
    for i, s in enumerate(settings):
        left, right = anchor_gains(s["gain_db"], s["pan"])
        entries.append({"asset_index": i, **s, "gain_l": left, "gain_r": right})
    return {
        "sample_rate": SAMPLE_RATE,
        "block": block,
        "tracks": entries,
        "eq": [dict(b) for b in EQ_BANDS],
        "compressor": dict(COMPRESSOR),
        "limiter": dict(LIMITER),
    }


def asset_id(index: int) -> str:
    return f"asset-{index:02d}"


def build_document(params: Mapping[str, Any], seconds: float) -> Any:
    """The session as a client would write it (pycrdt), read back through the schema reader."""
    import pycrdt

    from realtime.session.schema import read_document

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = doc.get("session", type=pycrdt.Map)
    tracks = doc.get("tracks", type=pycrdt.Map)
    order = doc.get("trackOrder", type=pycrdt.Array)
    comp = params["compressor"]
    with doc.transaction():
        session["title"] = "render benchmark"
        session["bpm"] = 120
        session["timeSignature"] = [4, 4]
        session["sampleRate"] = params["sample_rate"]
        session["master"] = pycrdt.Map(
            {"gainDb": 0.0, "limiter": True, "ceilingDb": params["limiter"]["ceiling_db"]}
        )
        for i, t in enumerate(params["tracks"]):
            tid = f"track-{i:02d}"
            bands = [
                pycrdt.Map({"type": b["type"], "freq": b["freq"], "gainDb": b["gain_db"], "q": b["q"]})
                for b in params["eq"]
            ]
            effects = [
                pycrdt.Map({"type": "eq", "bands": pycrdt.Array(bands)}),
                pycrdt.Map(
                    {
                        "type": "compressor",
                        "thresholdDb": comp["threshold_db"],
                        "ratio": comp["ratio"],
                        "attackMs": comp["attack_ms"],
                        "releaseMs": comp["release_ms"],
                        "kneeDb": comp["knee_db"],
                    }
                ),
            ]
            clip = {"assetId": asset_id(t["asset_index"]), "start": 0.0, "offset": 0.0, "length": seconds}
            tracks[tid] = pycrdt.Map(
                {
                    "name": f"Track {i + 1}",
                    "kind": "audio",
                    "gainDb": t["gain_db"],
                    "pan": t["pan"],
                    "mute": False,
                    "solo": False,
                    "clips": pycrdt.Map({f"clip-{i:02d}": pycrdt.Map(clip)}),
                    "effects": pycrdt.Array(effects),
                }
            )
            order.append(tid)
    document = read_document(doc)
    if document.problems:
        raise RuntimeError(f"the benchmark's document has problems: {document.problems}")
    return document


# --------------------------------------------------------------------------------------------
# Our side (runs in its own process: `render.py _ours ...`)
# --------------------------------------------------------------------------------------------
def rss_mib(field: str = "VmRSS") -> float:
    """RSS (``VmRSS``) or peak RSS (``VmHWM``) of this process, MiB.

    Not ``ru_maxrss``: Linux carries that across ``exec``, so a child would report its parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def system_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = [int(v) for v in fields]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0), so that it measures what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def ours_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="render.py _ours")
    parser.add_argument("--assets", type=Path, required=True)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--cpus", default="")
    parser.add_argument("--warmup-s", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    import numpy as np

    from realtime.dsp.render import render_session

    params = json.loads(args.params.read_text())
    audio = np.load(args.assets)  # fully in memory, as a loaded session holds its decoded assets
    audio_s = audio.shape[2] / params["sample_rate"]
    assets = {asset_id(i): audio[i] for i in range(audio.shape[0])}
    doc = build_document(params, audio_s)
    rss_loaded = rss_mib()  # code imported, assets decoded in memory, document read
    warm = {"end_s": args.warmup_s, "block": params["block"], "workers": args.workers}
    render_session(doc, assets, **warm)  # numba: load the cached machine code (or compile it)
    peak_before = rss_mib("VmHWM")  # loading, imports, JIT warm-up
    rss_before = rss_mib()
    peak_reset = reset_peak_rss()
    busy0 = system_busy_s()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    result = render_session(doc, assets, block=params["block"], workers=args.workers)
    elapsed = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    # CPU that other processes used meanwhile, in cores (a busy machine skews the figures)
    other_cores = max(0.0, system_busy_s() - busy0 - cpu_s) / elapsed
    peak_render = rss_mib("VmHWM")
    mix = result.mix
    peak = float(np.max(np.abs(mix)))
    rms = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64))))
    payload = {
        "engine": OURS,
        "renderer": "realtime.dsp.render.render_session",
        "workers": args.workers,
        "cpus": sorted(os.sched_getaffinity(0)),
        "elapsed_s": elapsed,
        "cpu_s": cpu_s,
        "other_load_cores": other_cores,
        "audio_s": audio_s,
        "x_realtime": audio_s / elapsed,
        "assets_mib": audio.nbytes / 2**20,
        "rss_loaded_mib": rss_loaded,
        "rss_before_render_mib": rss_before,
        "peak_rss_mib": max(peak_before, peak_render),
        "peak_rss_render_mib": peak_render if peak_reset else None,
        "mix_shape": list(mix.shape),
        "mix_peak_dbfs": 20 * math.log10(peak) if peak > 0 else -math.inf,
        "mix_rms_dbfs": 20 * math.log10(rms) if rms > 0 else -math.inf,
    }
    text = json.dumps(payload)
    args.out.write_text(text + "\n")
    print(RESULT_PREFIX + text, flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def anchor_python(venv: Path, *, create: bool) -> Path:
    """The anchor virtualenv's python, created (with pedalboard and numpy) if it is missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import pedalboard, numpy"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    if not create:
        raise RuntimeError(f"{venv} has no pedalboard; run without --no-install to create it")
    print(f"creating the anchor's virtualenv {venv} (pip install {' '.join(ANCHOR_PACKAGES)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *ANCHOR_PACKAGES],
        check=True,
    )
    subprocess.run(probe, check=True)
    return python


def worker_env(cores: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(cores)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_one(
    engine: str, cores: int, cpus: Sequence[int], files: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    out = files["dir"] / f"{engine}-{cores}.json"
    common = [
        f"--assets={files['assets']}",
        f"--params={files['params']}",
        f"--cpus={','.join(map(str, cpus))}",
        f"--warmup-s={args.warmup_s}",
        f"--out={out}",
    ]
    if engine == OURS:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_ours", f"--workers={cores}", *common]
    else:
        cmd = [str(files["anchor_python"]), str(ANCHOR_SCRIPT), f"--threads={cores}", *common]
    done = subprocess.run(cmd, env=worker_env(cores), cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{engine} on {cores} core(s) exited with {done.returncode}:\n{done.stderr[-4000:]}"
        )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            result["cores"] = cores
            return result
    raise RuntimeError(f"{engine} on {cores} core(s) printed no result:\n{done.stdout[-2000:]}")


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["engine"], r["cores"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for (engine, cores), rs in groups.items():
        elapsed = [r["elapsed_s"] for r in rs]
        median = statistics.median(elapsed)
        out[f"{engine}/{cores}"] = {
            "engine": engine,
            "cores": cores,
            "repeats": len(rs),
            "elapsed_s": median,
            "elapsed_s_min": min(elapsed),
            "elapsed_s_max": max(elapsed),
            "x_realtime": rs[0]["audio_s"] / median,
            "x_realtime_min": rs[0]["audio_s"] / max(elapsed),
            "x_realtime_max": rs[0]["audio_s"] / min(elapsed),
            "rss_loaded_mib": statistics.median(r["rss_loaded_mib"] for r in rs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "peak_rss_render_mib": max((r.get("peak_rss_render_mib") or math.nan) for r in rs),
            "rss_before_render_mib": statistics.median(r["rss_before_render_mib"] for r in rs),
            "cores_used": statistics.median(r["cpu_s"] / r["elapsed_s"] for r in rs),
            "other_load_cores": statistics.median(r["other_load_cores"] for r in rs),
            "other_load_cores_max": max(r["other_load_cores"] for r in rs),
            "assets_mib": rs[0]["assets_mib"],
            "mix_peak_dbfs": rs[0]["mix_peak_dbfs"],
            "mix_rms_dbfs": rs[0]["mix_rms_dbfs"],
        }
    return out


def ratios(summary: dict[str, dict[str, Any]], core_counts: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    pb1 = summary.get(f"{ANCHOR}/1")
    for cores in core_counts:
        ours = summary.get(f"{OURS}/{cores}")
        theirs = summary.get(f"{ANCHOR}/{cores}")
        if ours and theirs:
            out[f"ours/pedalboard@{cores}"] = ours["x_realtime"] / theirs["x_realtime"]
        if ours and pb1:
            out[f"ours@{cores}/pedalboard@1"] = ours["x_realtime"] / pb1["x_realtime"]
        ours1 = summary.get(f"{OURS}/1")
        if ours and ours1 and cores > 1:
            out[f"ours scaling {cores}/1"] = ours["x_realtime"] / ours1["x_realtime"]
        if theirs and pb1 and cores > 1:
            out[f"pedalboard scaling {cores}/1"] = theirs["x_realtime"] / pb1["x_realtime"]
    return out


def verdicts(ratio: dict[str, float]) -> list[str]:
    lines = []
    one = ratio.get("ours/pedalboard@1")
    if one is None:
        lines.append("one-core target: not evaluated (needs both engines on 1 core)")
    else:
        verdict = "TARGET MET" if one >= ONE_CORE_TARGET else "TARGET MISSED"
        lines.append(
            f"one core: escenario / pedalboard throughput = {one:.2f}x "
            f"(target ≥ {ONE_CORE_TARGET:.1f}x): {verdict}"
        )
    two = ratio.get("ours@2/pedalboard@1")
    if two is None:
        lines.append("two-core target: not evaluated (needs escenario on 2 cores and pedalboard on 1)")
    else:
        verdict = "TARGET MET" if two >= TWO_CORE_TARGET else "TARGET MISSED"
        lines.append(
            f"two cores: escenario (2 cores) / pedalboard (1 core) throughput = {two:.2f}x "
            f"(target ≥ {TWO_CORE_TARGET:.1f}x): {verdict}"
        )
    return lines


def format_table(summary: dict[str, dict[str, Any]], core_counts: Sequence[int], nproc: int) -> str:
    head = (
        f"{'engine':<11} {'cores':>7} {'x real time':>12} {'(min-max)':>11} {'render s':>9} {'CPU used':>9} "
        f"{'others':>7} {'RSS loaded':>11} {'RSS warm':>9} {'peak, render':>12}"
    )
    lines = [head, "-" * len(head)]
    for cores in core_counts:
        for engine in ENGINES:
            e = summary.get(f"{engine}/{cores}")
            if e is None:
                continue
            label = f"{cores} (all)" if cores == nproc and cores > 1 else str(cores)
            spread = f"{e['x_realtime_min']:.1f}-{e['x_realtime_max']:.1f}"
            lines.append(
                f"{engine:<11} {label:>7} {e['x_realtime']:11.1f}x {spread:>11} {e['elapsed_s']:9.2f} "
                f"{e['cores_used']:5.2f} cpu {e['other_load_cores']:3.2f} cpu "
                f"{e['rss_loaded_mib']:7.0f} MiB {e['rss_before_render_mib']:5.0f} MiB "
                f"{e['peak_rss_render_mib']:8.0f} MiB"
            )
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, Any]], core_counts: Sequence[int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    colors = {OURS: "tab:blue", ANCHOR: "tab:gray"}
    for k, engine in enumerate(ENGINES):
        xs = [i - width / 2 + k * width for i in range(len(core_counts))]
        ys = [summary.get(f"{engine}/{c}", {}).get("x_realtime", float("nan")) for c in core_counts]
        bars = ax.bar(xs, ys, width, label=engine, color=colors[engine])
        ax.bar_label(bars, fmt="%.1fx", fontsize=8)
    pb1 = summary.get(f"{ANCHOR}/1")
    top = max((e["x_realtime"] for e in summary.values()), default=1.0)
    if pb1:
        for factor, color, text in (
            (ONE_CORE_TARGET, "tab:orange", "target, 1 core: 1.0x pedalboard (1 core)"),
            (TWO_CORE_TARGET, "tab:red", "target, 2 cores: 1.8x pedalboard (1 core)"),
        ):
            y = pb1["x_realtime"] * factor
            ax.axhline(y, color=color, linestyle="--", linewidth=1)
            ax.text(len(core_counts) - 0.5, y, text, fontsize=7, va="bottom", ha="right", color=color)
            top = max(top, y)
    ax.set_ylim(0, top * 1.18)
    ax.set_xticks(range(len(core_counts)), [f"{c} core{'s' if c > 1 else ''}" for c in core_counts])
    ax.set_ylabel("x real time (higher is better)")
    ax.set_title("Throughput (median of repeats)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    mem_rows = [(e, summary[f"{e}/1"]) for e in ENGINES if f"{e}/1" in summary]
    labels = ["decoded\nassets", "RSS\nloaded", "RSS after\nwarm-up", "peak RSS\nrendering"]
    for k, (engine, e) in enumerate(mem_rows):
        xs = [i - width / 2 + k * width for i in range(len(labels))]
        ys = [e["assets_mib"], e["rss_loaded_mib"], e["rss_before_render_mib"], e["peak_rss_render_mib"]]
        bars = ax_mem.bar(xs, ys, width, label=engine, color=colors[engine])
        ax_mem.bar_label(bars, fmt="%.0f", fontsize=7)
    ax_mem.set_xticks(range(len(labels)), labels, fontsize=8)
    ax_mem.set_ylabel("MiB")
    ax_mem.set_title("Memory of the rendering process (1 core)", fontsize=10)
    ax_mem.set_ylim(0, max((r["peak_rss_render_mib"] for _, r in mem_rows), default=1.0) * 1.25)
    ax_mem.legend(fontsize=8, loc="upper left", ncols=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Offline render benchmark: 32 tracks x 3 min, EQ + compressor per track, master limiter; "
        "Escenario vs pedalboard.",
        epilog="Targets: ≥ 1.0x pedalboard's throughput on one core, ≥ 1.8x that on two cores.",
    )
    parser.add_argument("--tracks", type=int, default=TRACKS, help=f"tracks (default {TRACKS})")
    parser.add_argument(
        "--seconds", type=float, default=SECONDS, help=f"session length (default {SECONDS:g})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument(
        "--cores",
        default="1,all",
        help="comma-separated core counts (integers or 'all'; default 1,all); the 2-core target needs 2",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=BLOCK,
        help=f"render block in frames, for both engines (pedalboard's buffer_size; default {BLOCK}, "
        "render_session's default)",
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    parser.add_argument(
        "--warmup-s", type=float, default=2.0, help="seconds rendered before timing (default 2)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--assets",
        type=Path,
        default=None,
        help="keep the generated assets in this .npy file and reuse it when it matches (default: temporary)",
    )
    parser.add_argument("--anchor-venv", type=Path, default=ANCHOR_VENV, help="the pedalboard virtualenv")
    parser.add_argument("--no-install", action="store_true", help="fail instead of creating the anchor venv")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 tracks x 10 s, 1 repeat")
    parser.add_argument(
        "--json", nargs="?", type=Path, const=RESULTS_DIR / "render.json", help="write results as JSON"
    )
    parser.add_argument(
        "--plot", nargs="?", type=Path, const=RESULTS_DIR / "render.png", help="bar chart (PNG)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tracks, args.seconds, args.repeats, args.warmup_s = 4, 10.0, 1, 1.0
    nproc = len(os.sched_getaffinity(0))
    counts: set[int] = set()
    for item in args.cores.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "all":
            counts.add(nproc)
        elif item.isdigit() and 1 <= int(item) <= nproc:
            counts.add(int(item))
        else:
            parser.error(f"--cores: {item!r} is not 'all' or an integer in 1..{nproc}")
    args.core_counts = sorted(counts)
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(args.engine_list) - set(ENGINES):
        parser.error(f"--engines: choose from {', '.join(ENGINES)}")
    if args.tracks <= 0 or args.seconds <= 0 or args.repeats <= 0 or args.block <= 0 or not args.core_counts:
        parser.error("--tracks, --seconds, --repeats, --block and --cores must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_ours":
        return ours_main(argv[1:])
    args = parse_args(argv)
    info = machine_info()
    allowed = sorted(os.sched_getaffinity(0))
    frames = round(args.seconds * SAMPLE_RATE)
    assets_mib = args.tracks * 2 * frames * 4 / 2**20
    print(
        f"render: {args.tracks} tracks x {args.seconds:g} s stereo ({assets_mib:.0f} MiB decoded), "
        f"block {args.block}, cores {args.core_counts}, {args.repeats} repeat(s); {info['nproc']} CPUs, "
        f"{info['cpu_model']}, load {info['loadavg_at_start']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        files: dict[str, Path] = {"dir": Path(tmp)}
        if ANCHOR in args.engine_list:
            try:
                files["anchor_python"] = anchor_python(args.anchor_venv, create=not args.no_install)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"ERROR: the pedalboard anchor is not available: {exc}", file=sys.stderr)
                return 1
        assets = args.assets or Path(tmp) / "assets.npy"
        if args.assets is not None and assets_match(assets, args.tracks, frames):
            print(f"reusing assets {assets}", flush=True)
        else:
            started = time.monotonic()
            assets.parent.mkdir(parents=True, exist_ok=True)
            write_assets(assets, args.tracks, frames, args.seed)
            print(f"generated assets in {time.monotonic() - started:.1f} s", flush=True)
        files["assets"] = assets
        params = chain_params(args.tracks, args.seed, args.block)
        files["params"] = Path(tmp) / "params.json"
        files["params"].write_text(json.dumps(params, indent=2) + "\n")
        print(
            "chain per track: EQ "
            + ", ".join(f"{b['type']} {b['freq']:g} Hz {b['gain_db']:+g} dB q {b['q']:.3f}" for b in EQ_BANDS)
            + "; compressor "
            + ", ".join(f"{k} {v:g}" for k, v in COMPRESSOR.items())
            + " (pedalboard's has no knee); fader and pan per track; master limiter "
            + f"{LIMITER['ceiling_db']:g} dB, release {LIMITER['release_ms']:g} ms "
            "(ours: true peak, 1.5 ms look-ahead; pedalboard's: sample peak)",
            flush=True,
        )
        runs: list[dict[str, Any]] = []
        started = time.monotonic()
        for rep in range(args.repeats):
            engines = args.engine_list if rep % 2 == 0 else list(reversed(args.engine_list))
            for cores in args.core_counts:
                cpus = [allowed[-1]] if cores == 1 else allowed[:cores]
                for engine in engines:
                    try:
                        r = run_one(engine, cores, cpus, files, args)
                    except RuntimeError as exc:
                        print(f"ERROR: {exc}", file=sys.stderr)
                        return 1
                    r["repeat"] = rep + 1
                    runs.append(r)
                    print(
                        f"  [{time.monotonic() - started:5.0f}s] rep {rep + 1} {engine:<11} {cores} core(s): "
                        f"{r['elapsed_s']:6.2f} s = {r['x_realtime']:6.1f}x real time, "
                        f"{r['cpu_s'] / r['elapsed_s']:.2f} cores busy (others {r['other_load_cores']:.2f}), "
                        f"RSS loaded {r['rss_loaded_mib']:.0f} MiB, peak {r['peak_rss_render_mib']:.0f} MiB "
                        f"rendering, {r['peak_rss_mib']:.0f} MiB overall",
                        flush=True,
                    )
        chain = next((r["chain"] for r in runs if r["engine"] == ANCHOR), None)
    summary = summarise(runs)
    ratio = ratios(summary, args.core_counts)
    print()
    print(f"Medians over {args.repeats} repeat(s), {args.tracks} tracks x {args.seconds:g} s:")
    print(format_table(summary, args.core_counts, len(allowed)))
    print()
    for engine in ENGINES:
        e = summary.get(f"{engine}/{args.core_counts[0]}")
        if e is not None:
            print(f"{engine} mix: RMS {e['mix_rms_dbfs']:.1f} dBFS, peak {e['mix_peak_dbfs']:.1f} dBFS")
    for key, value in ratio.items():
        print(f"ratio {key}: {value:.2f}x")
    ours1 = summary.get(f"{OURS}/1")
    if ours1:
        print(
            f"memory, loaded {args.tracks}-track session: decoded assets {ours1['assets_mib']:.0f} MiB, "
            f"RSS once loaded {ours1['rss_loaded_mib']:.0f} MiB, after the JIT warm-up "
            f"{ours1['rss_before_render_mib']:.0f} MiB, "
            f"peak while rendering {ours1['peak_rss_render_mib']:.0f} MiB"
        )
    for line in verdicts(ratio):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": {
                "tracks": args.tracks,
                "seconds": args.seconds,
                "block": args.block,
                "sample_rate": SAMPLE_RATE,
                "repeats": args.repeats,
                "cores": args.core_counts,
                "warmup_s": args.warmup_s,
                "seed": args.seed,
                "chain": params,
                "anchor_chain": chain,
            },
            "machine": info,
            "code": code_state("realtime", key="realtime_modified"),
            "runs": runs,
            "summary": summary,
            "ratios": ratio,
            "verdicts": verdicts(ratio),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        title = (
            f"Offline render: {args.tracks} tracks x {args.seconds:g} s, EQ (3 bands) + compressor per "
            f"track, master limiter; {info['cpu_model']}, {info['nproc']} CPUs"
        )
        plot(summary, args.core_counts, title, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
