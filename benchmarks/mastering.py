"""Mastering (``inference.mastering.master``): x real time on 3 minutes of stereo, and what comes out.

Three minutes of a synthetic band at 44.1 kHz stereo (kick, off-beat noise hats, bass, two
alternating chords, seeded), mastered to -14 LUFS / -1 dBTP in three situations:

- **quiet**: the mix at -30 LUFS (about +16 dB of gain, the limiter working);
- **hot**: the mix driven into a hard clip at 0 dBFS until it reads -8 LUFS (gain down);
- **reference**: the quiet mix matched to a brighter reference (+6 dB above 3 kHz) first.

Each case runs once to warm up (numba kernels from the cache) and then ``--repeats`` times
(default 3); the median wall time gives x real time (audio seconds / wall seconds). The output
is measured independently of the chain: integrated loudness with pyloudnorm
(``Meter(rate).integrated_loudness``, (samples, channels)) and true peak as the largest value
of the samples 4x oversampled with ``scipy.signal.resample_poly``.

No anchor runs here: the mastering tools the issue names as models (matchering, pedalboard) are
GPL. For scale, the research notes measured on this machine class, for 3 minutes of stereo:
pedalboard's HPF + 3 EQ bands + compressor 0.37 s, its true-peak ``BrickwallLimiter`` 1.04 s,
pyloudnorm 0.45 s (no iteration, no independent peak check); matchering 7.3 s, landing at
+0.29 dBTP.

Usage:
    python benchmarks/mastering.py                 # 180 s, 3 repeats
    python benchmarks/mastering.py --quick         # 20 s, 1 repeat
    python benchmarks/mastering.py --json          # also write benchmarks/results/mastering.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import scipy.signal
from _common import code_state, machine_info

from inference.mastering import master

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
SAMPLE_RATE = 44100
TARGET_LUFS = -14.0
CEILING_DB = -1.0


def band(seconds: float, sr: int, seed: int) -> Any:
    """(2, frames) float32: kick on the beat, hats off the beat, a bass line, two chords."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    x = np.zeros((2, n))
    for start in np.arange(0.0, seconds, 0.5):
        i = round(start * sr)
        t = np.arange(min(n - i, round(0.3 * sr))) / sr
        x[:, i : i + t.size] += 0.8 * np.sin(2 * np.pi * (50 + 80 * np.exp(-30 * t)) * t) * np.exp(-12 * t)
    hats = scipy.signal.butter(2, 6000, "highpass", fs=sr, output="sos")
    for start in np.arange(0.25, seconds, 0.5):
        i = round(start * sr)
        m = min(n - i, round(0.05 * sr))
        h = scipy.signal.sosfilt(hats, rng.standard_normal(m) * np.exp(-80 * np.arange(m) / sr))
        x[0, i : i + m] += 0.3 * h
        x[1, i : i + m] += 0.25 * h
    for j, start in enumerate(np.arange(0.0, seconds, 2.0)):
        i = round(start * sr)
        t = np.arange(min(n - i, 2 * sr)) / sr
        chord = (48, 55, 60, 64) if j % 2 == 0 else (45, 52, 57, 60)
        for pitch in chord:
            f = 440.0 * 2 ** ((pitch - 69) / 12)
            v = 0.15 * np.exp(-0.8 * t) * sum(0.5**k * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(6))
            x[0, i : i + t.size] += v
            x[1, i : i + t.size] += 0.9 * v
        f_bass = 440.0 * 2 ** ((chord[0] - 12 - 69) / 12)
        x[:, i : i + t.size] += 0.3 * np.sin(2 * np.pi * f_bass * t) * np.exp(-1.5 * t)
    return x.astype(np.float32)


def lufs(audio: Any, sr: int = SAMPLE_RATE) -> float:
    return float(pyloudnorm.Meter(sr).integrated_loudness(np.atleast_2d(audio).T.astype(np.float64)))


def true_peak_db(audio: Any) -> float:
    x = np.atleast_2d(audio)
    peak = max(float(np.abs(x).max()), *(float(np.abs(scipy.signal.resample_poly(c, 4, 1)).max()) for c in x))
    return 20 * math.log10(peak)


def at_loudness(audio: Any, target: float) -> Any:
    return (audio * 10 ** ((target - lufs(audio)) / 20)).astype(np.float32)


def hot(audio: Any, target: float) -> Any:
    lo, hi = 0.0, 60.0
    for _ in range(30):
        drive = (lo + hi) / 2
        clipped = np.clip(audio * 10 ** (drive / 20), -1.0, 1.0).astype(np.float32)
        lo, hi = (drive, hi) if lufs(clipped) < target else (lo, drive)
    return clipped


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="audio length (default 180)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="20 s, 1 repeat")
    parser.add_argument(
        "--json",
        nargs="?",
        type=Path,
        const=RESULTS_DIR / "mastering.json",
        help="write results as JSON (default path benchmarks/results/mastering.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 20.0, 1
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    mix = band(args.seconds, SAMPLE_RATE, seed=1)
    reference = band(min(args.seconds, 60.0), SAMPLE_RATE, seed=2)
    bright = scipy.signal.butter(2, 3000, "highpass", fs=SAMPLE_RATE, output="sos")
    reference = (reference + scipy.signal.sosfilt(bright, reference, axis=1)).astype(np.float32)
    quiet = at_loudness(mix, -30.0)
    cases: dict[str, dict[str, Any]] = {
        "quiet": {"audio": quiet},
        "hot": {"audio": hot(mix, -8.0)},
        "reference": {"audio": quiet, "reference": at_loudness(reference, -12.0)},
    }
    results: dict[str, Any] = {}
    print(f"{args.seconds:.0f} s of 44.1 kHz stereo, target {TARGET_LUFS} LUFS / {CEILING_DB} dBTP,")
    print(f"{args.repeats} timed runs per case, medians:")
    for name, case in cases.items():
        kwargs = {"target_lufs": TARGET_LUFS, "true_peak_db": CEILING_DB, "reference": case.get("reference")}
        result = master(case["audio"], SAMPLE_RATE, **kwargs)  # warm-up
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = master(case["audio"], SAMPLE_RATE, **kwargs)
            runs.append(time.perf_counter() - start)
        seconds = statistics.median(runs)
        measured_lufs = lufs(result.audio)
        measured_tp = true_peak_db(result.audio)
        results[name] = {
            "seconds_median": seconds,
            "runs": runs,
            "x_realtime": args.seconds / seconds,
            "input_lufs_pyloudnorm": lufs(case["audio"]),
            "input_true_peak_db": true_peak_db(case["audio"]),
            "output_lufs_pyloudnorm": measured_lufs,
            "output_true_peak_db_4x": measured_tp,
            "within_0_5_lu": abs(measured_lufs - TARGET_LUFS) <= 0.5,
            "under_ceiling": measured_tp <= CEILING_DB,
            "report": result.report,
        }
        case_in = results[name]
        print(
            f"  {name:9s} {seconds:6.2f} s  {args.seconds / seconds:6.1f}x real time   "
            f"in {case_in['input_lufs_pyloudnorm']:6.2f} LUFS {case_in['input_true_peak_db']:+6.2f} dBTP"
            f" -> out {measured_lufs:6.2f} LUFS {measured_tp:+6.2f} dBTP"
            f"  ({result.report['passes']} limiter passes,"
            f" limiter ceiling {result.report['limiter']['ceiling_db']})"
        )
    ok = all(r["within_0_5_lu"] and r["under_ceiling"] for r in results.values())
    print(f"  all outputs within ±0.5 LU of the target and under the ceiling: {'yes' if ok else 'NO'}")
    if args.json:
        payload = {
            "benchmark": "mastering",
            "audio_seconds": args.seconds,
            "sample_rate": SAMPLE_RATE,
            "repeats": args.repeats,
            "target_lufs": TARGET_LUFS,
            "true_peak_ceiling_db": CEILING_DB,
            "cases": results,
            "all_delivered": ok,
            "machine": machine_info(),
            "code": code_state("inference", "benchmarks/mastering.py"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
