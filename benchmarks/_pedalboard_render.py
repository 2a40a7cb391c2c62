"""The anchor of benchmarks/render.py: the same per-track chain rendered with Spotify's pedalboard.

Runs in its own virtualenv (benchmarks/.anchor-venv, created by render.py): pedalboard is GPL and
never a dependency of the project. Needs only numpy and pedalboard.

    _pedalboard_render.py --assets A.npy --params P.json --threads K --out R.json

``A.npy`` holds the decoded assets, (tracks, 2, frames) float32; ``P.json`` the chain: per track
its asset index and linear left/right gains (fader x pan law, computed by render.py with the
project's own pan law), the EQ bands, the compressor and the master limiter. Per track:
``Pedalboard([LowShelfFilter, PeakFilter, HighShelfFilter, Compressor])`` on the stereo asset,
then the gains; the tracks are summed (in track order) and the master goes through
``Limiter``. With ``--threads K > 1`` the tracks are processed on a thread pool of K threads
(pedalboard releases the GIL while it processes). Only the processing is timed: from building
the boards to the limited master, not loading the file.

Prints one line ``RESULT {json}`` and writes the same JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard


def rss_mib(field: str = "VmRSS") -> float:
    """RSS (``VmRSS``) or peak RSS (``VmHWM``), MiB (``ru_maxrss`` would carry the parent's over exec)."""
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


def board_for(params: dict[str, Any]) -> pedalboard.Pedalboard:
    kinds = {
        "lowshelf": pedalboard.LowShelfFilter,
        "peaking": pedalboard.PeakFilter,
        "highshelf": pedalboard.HighShelfFilter,
    }
    plugins: list[Any] = []
    for band in params["eq"]:
        cls = kinds[band["type"]]
        plugins.append(cls(cutoff_frequency_hz=band["freq"], gain_db=band["gain_db"], q=band["q"]))
    c = params["compressor"]
    plugins.append(
        pedalboard.Compressor(
            threshold_db=c["threshold_db"],
            ratio=c["ratio"],
            attack_ms=c["attack_ms"],
            release_ms=c["release_ms"],
        )
    )
    return pedalboard.Pedalboard(plugins)


def describe(params: dict[str, Any]) -> str:
    board = board_for(params)
    lim = params["limiter"]
    master = pedalboard.Limiter(threshold_db=lim["ceiling_db"], release_ms=lim["release_ms"])
    return f"per track {board!r}; master {master!r}"


def render(audio: np.ndarray, params: dict[str, Any], threads: int) -> np.ndarray:
    sr = float(params["sample_rate"])
    block = int(params["block"])
    tracks = params["tracks"]
    gains = [np.array([[t["gain_l"]], [t["gain_r"]]], dtype=np.float32) for t in tracks]

    def process(i: int) -> np.ndarray:
        out = board_for(params)(audio[tracks[i]["asset_index"]], sr, buffer_size=block, reset=True)
        out *= gains[i]
        return out

    mix = np.zeros(audio.shape[1:], dtype=np.float32)
    if threads <= 1:
        for i in range(len(tracks)):
            mix += process(i)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for out in pool.map(process, range(len(tracks))):  # summed in track order
                mix += out
    lim = params["limiter"]
    limiter = pedalboard.Limiter(threshold_db=lim["ceiling_db"], release_ms=lim["release_ms"])
    result: np.ndarray = limiter(mix, sr, buffer_size=block, reset=True)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, required=True)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpus", default="", help="comma-separated CPUs to pin to (default: all allowed)")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    params = json.loads(args.params.read_text())
    audio = np.load(args.assets)  # fully in memory, as a loaded session is
    rss_loaded = rss_mib()
    # warm-up: page in the code and touch the allocator on a short excerpt
    warm = int(args.warmup_s * params["sample_rate"])
    render(np.ascontiguousarray(audio[:, :, :warm]), params, args.threads)
    peak_before = rss_mib("VmHWM")
    rss_before = rss_mib()
    peak_reset = reset_peak_rss()
    busy0 = system_busy_s()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    mix = render(audio, params, args.threads)
    elapsed = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    # CPU that other processes used meanwhile, in cores (a busy machine skews the figures)
    other_cores = max(0.0, system_busy_s() - busy0 - cpu_s) / elapsed
    peak_render = rss_mib("VmHWM")
    audio_s = audio.shape[2] / params["sample_rate"]
    peak = float(np.max(np.abs(mix)))
    rms = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64))))
    result = {
        "engine": "pedalboard",
        "pedalboard": pedalboard.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
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
        "mix_peak_dbfs": 20 * math.log10(peak) if peak > 0 else -math.inf,
        "mix_rms_dbfs": 20 * math.log10(rms) if rms > 0 else -math.inf,
        "chain": describe(params),
    }
    text = json.dumps(result)
    args.out.write_text(text + "\n")
    print("RESULT " + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
