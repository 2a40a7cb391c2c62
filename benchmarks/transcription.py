"""Audio → MIDI: our batched basic-pitch (``inference.transcribe``) vs basic-pitch's ``predict()``.

Both run basic-pitch 0.4's shipped ICASSP-2022 model (``nmp.onnx``) on onnxruntime's CPU
provider, on the same 60 s of synthetic polyphonic audio (44.1 kHz stereo: 2-4 voices of
harmonic tones with decaying envelopes, seeded), in the same process:

- **ours**: ``Transcriber(threads=N).transcribe(array, 44100)`` - fold to mono, resample to
  22 050 Hz (soxr HQ, as librosa.load), all 2-second windows through the session in batches of
  16, basic-pitch's own note decoding. Timed with ``threads=1`` (the pool's setting: a core
  stays free for the realtime path) and with ``threads=os.cpu_count()``.
- **anchor**: ``basic_pitch.inference.predict(path, model)`` with the model loaded once
  (``basic_pitch.inference.Model``, whose ONNX session uses onnxruntime's defaults: every core).
  ``predict()`` takes a path, so it also reads and decodes the WAV file; that share is timed on
  its own (``librosa.load`` of the same file) and reported beside it.

Each engine is warmed up once, then the runs alternate between the engines (``--repeats``,
default 5) and the medians are reported: seconds, x real time (audio seconds / wall seconds),
and the ratio ours/anchor in throughput, plus the CPU seconds of the process (all threads;
on a shared, busy machine the one-thread CPU time is the steadier figure). The note lists of
both are compared (they should be the same notes).

Usage:
    python benchmarks/transcription.py               # 60 s, 5 repeats
    python benchmarks/transcription.py --quick       # 10 s, 1 repeat (smoke test)
    python benchmarks/transcription.py --json        # also write benchmarks/results/transcription.json

Target (issue): ours >= 30x real time on this CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import code_state, machine_info

from inference.transcribe import Transcriber

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
SAMPLE_RATE = 44100
TARGET_X_REALTIME = 30.0


def polyphonic(seconds: float, sr: int, seed: int = 2022) -> Any:
    """(2, frames) float32: 2-4 overlapping voices of harmonic tones, notes 0.2-1.5 s long."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * sr)
    out = np.zeros((2, frames))
    for voice in range(4):
        t0 = float(rng.uniform(0.0, 0.5))
        low, high = (36, 60) if voice == 0 else (55, 84)
        while t0 < seconds - 0.2:
            duration = float(rng.uniform(0.2, 1.5))
            if voice < 2 or rng.random() < 0.5:  # two voices always play, two now and then
                pitch = int(rng.integers(low, high))
                n = min(round(duration * sr), frames - round(t0 * sr))
                t = np.arange(n) / sr
                f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
                envelope = np.minimum(1.0, t / 0.01) * np.exp(-t * float(rng.uniform(1.0, 4.0)))
                tone = sum(0.6**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(6))
                pan = float(rng.uniform(0.2, 0.8))
                start = round(t0 * sr)
                out[0, start : start + n] += 0.12 * (1 - pan) * envelope * tone
                out[1, start : start + n] += 0.12 * pan * envelope * tone
            t0 += duration + float(rng.uniform(0.0, 0.3))
    return out.astype(np.float32)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process (all its threads), and the result."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - start, time.process_time() - cpu, value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length (default 60)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine (default 5)")
    parser.add_argument("--quick", action="store_true", help="10 s, 1 repeat")
    parser.add_argument(
        "--json",
        nargs="?",
        type=Path,
        const=RESULTS_DIR / "transcription.json",
        help="write results as JSON (default path benchmarks/results/transcription.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 10.0, 1
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    import soundfile as sf

    audio = polyphonic(args.seconds, SAMPLE_RATE)
    cores = os.cpu_count() or 1
    ours = {1: Transcriber(threads=1)}
    if cores > 1:
        ours[cores] = Transcriber(threads=cores)

    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import Model, predict

    def anchor_predict(path: Path) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # predict() prints a line per call
            return predict(path, model)

    model = Model(ICASSP_2022_MODEL_PATH)
    times: dict[str, list[float]] = {f"ours_threads{t}": [] for t in ours}
    times["anchor_predict"] = []
    times["anchor_file_load"] = []
    cpu_times: dict[str, list[float]] = {name: [] for name in times}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "poly.wav"
        sf.write(path, audio.T, SAMPLE_RATE, subtype="FLOAT")
        import librosa

        def record(runs: list[tuple[str, Callable[[], Any]]]) -> None:
            for name, fn in runs:
                wall, cpu, _ = timed(fn)
                times[name].append(wall)
                cpu_times[name].append(cpu)

        # warm-up: librosa/numba caches, onnxruntime's first-run allocations
        for transcriber in ours.values():
            notes_ours = transcriber.transcribe(audio, SAMPLE_RATE)
        _, _, events = anchor_predict(path)
        for repeat in range(args.repeats):
            order = ["anchor", "ours"] if repeat % 2 else ["ours", "anchor"]
            for engine in order:
                if engine == "ours":
                    for threads, transcriber in ours.items():
                        runs = [
                            (f"ours_threads{threads}", lambda t=transcriber: t.transcribe(audio, SAMPLE_RATE))
                        ]
                        record(runs)
                else:
                    record(
                        [
                            ("anchor_predict", lambda: anchor_predict(path)),
                            ("anchor_file_load", lambda: librosa.load(path, sr=22050, mono=True)),
                        ]
                    )

    theirs = sorted((round(float(s), 4), int(p)) for s, _, p, _, _ in events)
    mine = sorted((round(n.start, 4), n.pitch) for n in notes_ours)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_times.items()}
    x_rt = {name: args.seconds / value for name, value in medians.items()}
    anchor = medians["anchor_predict"]
    anchor_no_load = anchor - medians["anchor_file_load"]
    print(
        f"{args.seconds:.0f} s of 44.1 kHz stereo, {args.repeats} runs, medians ({cores} CPUs,"
        f" load average at start {machine_info()['loadavg_at_start'].split()[0]}):"
    )
    for threads in ours:
        key = f"ours_threads{threads}"
        print(
            f"  ours, {threads} thread(s):     {medians[key]:.3f} s  {x_rt[key]:6.1f}x real time"
            f"  ({anchor / medians[key]:.2f}x predict's throughput,"
            f" {anchor_no_load / medians[key]:.2f}x without its file load);"
            f" CPU {cpu_medians[key]:.3f} s = {args.seconds / cpu_medians[key]:.1f}x real time per CPU second"
        )
    print(
        f"  basic-pitch predict():   {anchor:.3f} s  {x_rt['anchor_predict']:6.1f}x real time;"
        f" CPU {cpu_medians['anchor_predict']:.3f} s"
    )
    print(f"    of which librosa.load: {medians['anchor_file_load']:.3f} s")
    print(f"  notes: ours {len(mine)}, predict {len(theirs)}, identical: {mine == theirs}")
    ok = x_rt["ours_threads1"] >= TARGET_X_REALTIME
    print(f"  target >= {TARGET_X_REALTIME:.0f}x real time on one thread: {'met' if ok else 'MISSED'}")

    if args.json:
        payload = {
            "benchmark": "transcription",
            "audio_seconds": args.seconds,
            "sample_rate": SAMPLE_RATE,
            "repeats": args.repeats,
            "seconds_median": medians,
            "x_realtime_median": x_rt,
            "cpu_seconds_median": cpu_medians,
            "x_realtime_per_cpu_second": {name: args.seconds / v for name, v in cpu_medians.items() if v > 0},
            "ratio_vs_predict": {f"ours_threads{t}": anchor / medians[f"ours_threads{t}"] for t in ours},
            "ratio_vs_predict_without_file_load": {
                f"ours_threads{t}": anchor_no_load / medians[f"ours_threads{t}"] for t in ours
            },
            "runs": times,
            "cpu_runs": cpu_times,
            "notes": {"ours": len(mine), "predict": len(theirs), "identical": mine == theirs},
            "target_x_realtime": TARGET_X_REALTIME,
            "target_met": ok,
            "machine": machine_info(),
            "code": code_state("inference", "benchmarks/transcription.py"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
