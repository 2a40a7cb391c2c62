"""Cross-job segment batching on a GPU: demucs' apply_model vs BatchedSeparator, full-size htdemucs.

The model is the released htdemucs architecture (demucs grids/mmi.py: sources drums/bass/other/
vocals, dconv_mode=3, depth=4, t_layers=5, bottom_channels=512, segment=39/5 s = 343 980 samples,
41.98 M parameters) with random weights from a fixed seed: the compute is the same as with the
trained weights, and no weights are downloaded.

Workload: `--jobs` concurrent tracks of `--seconds` each (default 4 x 30 s of noise with a tone),
stereo at 44.1 kHz, whole-track normalisation as demucs.api.Separator does.

- anchor: `demucs.apply.apply_model(model, mix, shifts=0, split=True, overlap=0.25, device=cuda)`
  on each track in turn, the tracks on the CPU (demucs runs GPU segments one at a time), under
  PyTorch's default precision settings and again in strict IEEE fp32 (the reference output);
- ours: one `BatchedSeparator` holding all the jobs, `max_batch` 1/4/8/16, dtype fp32 (IEEE),
  tf32 and bf16 (autocast), outputs flushed progressively to CPU sinks.

For each configuration, after a warm-up pass: median wall time over `--repeats` runs, seconds of
audio separated per second (= x real time for the whole workload), the ratio to the default-
precision anchor, peak `torch.cuda.max_memory_allocated`, time to the first flushed block, and
the largest absolute difference to the IEEE anchor's output.

`--dry-run` runs the same code on the CPU (one thread) with the tiny test model and 2 x 0.5 s
tracks, so a test can exercise the script; its numbers mean nothing.

Usage: `python benchmarks/gpu_separation.py [--dry-run] [--out DIR]`; JSON goes to `--out`, else
`$OUT`, else benchmarks/results/. `benchmarks/gpu_separation.sh` wraps it for a lent GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from demucs.apply import apply_model  # noqa: E402
from demucs.htdemucs import HTDemucs  # noqa: E402

from inference.separation import BatchedSeparator, DType  # noqa: E402

SOURCES = ["drums", "bass", "other", "vocals"]
SR = 44100


def full_htdemucs() -> HTDemucs:
    return HTDemucs(
        SOURCES,
        dconv_mode=3,
        depth=4,
        t_layers=5,
        bottom_channels=512,
        t_dropout=0.02,
        segment=Fraction(39, 5),
    )


def tiny_htdemucs() -> HTDemucs:
    return HTDemucs(SOURCES, channels=8, depth=4, t_layers=1, t_heads=2, dconv_comp=4, segment=Fraction(1))


def tracks(jobs: int, seconds: float) -> list[torch.Tensor]:
    rng = np.random.default_rng(1)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = []
    for j in range(jobs):
        tone = 0.3 * np.sin(2 * np.pi * (110 * (j + 1)) * t)
        out.append(torch.from_numpy((tone + 0.1 * rng.standard_normal((2, n))).astype(np.float32)))
    return out


def normalise(wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    return (wav - mean) / std, mean, std


@contextlib.contextmanager
def precision(device: torch.device, mode: str) -> Iterator[None]:
    """'default' leaves PyTorch's settings; 'ieee' forbids TF32 for matmuls and convolutions."""
    if device.type != "cuda" or mode == "default":
        yield
        return
    mm: Any = torch.backends.cuda.matmul
    conv: Any = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(mm, "fp32_precision") and conv is not None:
        before = (mm.fp32_precision, conv.fp32_precision)
        mm.fp32_precision = conv.fp32_precision = mode
        try:
            yield
        finally:
            mm.fp32_precision, conv.fp32_precision = before
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def run_anchor(
    model: Any, mixes: list[torch.Tensor], device: torch.device, mode: str
) -> tuple[float, list[Any]]:
    outs = []
    sync(device)
    start = time.perf_counter()
    with precision(device, mode):
        for wav in mixes:
            normed, mean, std = normalise(wav)
            out = apply_model(model, normed[None], shifts=0, split=True, overlap=0.25, device=device)
            outs.append((out[0] * std + mean).numpy())
    sync(device)
    return time.perf_counter() - start, outs


def run_batched(
    model: Any, mixes: list[torch.Tensor], device: torch.device, max_batch: int, dtype: DType
) -> tuple[float, float, list[Any], int]:
    sep = BatchedSeparator(model, device=device, max_batch=max_batch, dtype=dtype)
    outs = [np.zeros((len(SOURCES), *wav.shape), dtype=np.float32) for wav in mixes]
    first: list[float] = []
    start = time.perf_counter()

    def sink(job_id: str, at: int, block: Any) -> None:
        if not first:
            first.append(time.perf_counter() - start)
        outs[int(job_id)][..., at : at + block.shape[-1]] = block

    for j, wav in enumerate(mixes):
        sep.add(str(j), wav, sink=sink)
    batches = 0
    while not sep.idle:
        batches += bool(sep.step())
    sync(device)
    if sep.batch_limit < max_batch:
        print(f"  out of memory at batch {max_batch}: ran at {sep.batch_limit}", flush=True)
    return time.perf_counter() - start, first[0], outs, batches


def max_diff(a: list[Any], b: list[Any]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, 0.5 s tracks")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--dtypes", default="fp32,tf32,bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.dry_run:
        device = torch.device("cpu")
        args.jobs, args.seconds, args.repeats, args.batches = 2, 0.5, 1, "1,4"
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = tiny_htdemucs()
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run, or on a GPU machine", file=sys.stderr)
            return 2
        torch.manual_seed(0)
        model = full_htdemucs()
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())
    mixes = tracks(args.jobs, args.seconds)
    audio_s = args.jobs * args.seconds
    batches = [int(b) for b in args.batches.split(",")]
    dtypes: list[DType] = [d for d in ("fp32", "tf32", "bf16") if d in args.dtypes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {name}, torch {torch.__version__}, model {params / 1e6:.2f} M params, "
        f"{args.jobs} jobs x {args.seconds:g} s = {audio_s:g} s of audio",
        flush=True,
    )

    results: list[dict[str, Any]] = []
    short = [m[:, : int(model.segment * SR) * 2] for m in mixes[:1]]
    run_anchor(model, short, device, "ieee")  # warm-up: kernels, allocator, cuDNN plans

    reference: list[Any] = []
    anchor_rate = 0.0
    for mode in ("ieee", "default"):
        times = []
        reset_peak(device)
        for _ in range(args.repeats):
            elapsed, outs = run_anchor(model, mixes, device, mode)
            times.append(elapsed)
            if mode == "ieee" and not reference:
                reference = outs
        wall = statistics.median(times)
        rate = audio_s / wall
        if mode == "default":
            anchor_rate = rate
        results.append(
            {
                "path": "apply_model",
                "precision": mode,
                "max_batch": 1,
                "wall_s": wall,
                "audio_s_per_s": rate,
                "peak_mib": peak_mib(device),
                "max_abs_diff": max_diff(outs, reference),
                "first_block_s": None,
            }
        )
        print(f"apply_model {mode:7s}: {wall:7.2f} s  {rate:7.1f}x real time", flush=True)

    for dtype in dtypes:
        for max_batch in batches:
            run_batched(model, short, device, max_batch, dtype)  # warm-up at this batch shape
            times, firsts = [], []
            reset_peak(device)
            for _ in range(args.repeats):
                elapsed, first, outs, n_batches = run_batched(model, mixes, device, max_batch, dtype)
                times.append(elapsed)
                firsts.append(first)
            wall = statistics.median(times)
            rate = audio_s / wall
            row = {
                "path": "batched",
                "precision": dtype,
                "max_batch": max_batch,
                "wall_s": wall,
                "audio_s_per_s": rate,
                "peak_mib": peak_mib(device),
                "max_abs_diff": max_diff(outs, reference),
                "first_block_s": statistics.median(firsts),
                "forward_passes": n_batches,
            }
            results.append(row)
            print(f"batched {dtype} x{max_batch:<2d}: {wall:7.2f} s  {rate:7.1f}x real time", flush=True)

    for row in results:
        row["vs_apply_model"] = row["audio_s_per_s"] / anchor_rate
    print()
    print(
        f"{'path':12s} {'precision':9s} {'batch':>5s} {'wall s':>8s} {'x RT':>8s} {'vs anchor':>9s} "
        f"{'peak MiB':>9s} {'1st blk s':>9s} {'max |diff|':>10s}"
    )
    for r in results:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        first = "-" if r["first_block_s"] is None else f"{r['first_block_s']:.2f}"
        print(
            f"{r['path']:12s} {r['precision']:9s} {r['max_batch']:5d} {r['wall_s']:8.2f} "
            f"{r['audio_s_per_s']:8.1f} {r['vs_apply_model']:8.2f}x {peak:>9s} {first:>9s} "
            f"{r['max_abs_diff']:10.2e}"
        )

    report: dict[str, Any] = {
        "benchmark": "gpu_separation",
        "dry_run": args.dry_run,
        "device": name,
        "torch": torch.__version__,
        "params": params,
        "jobs": args.jobs,
        "seconds_per_job": args.seconds,
        "repeats": args.repeats,
        "anchor": "apply_model, default precision, tracks one after another",
        "results": results,
    }
    with contextlib.suppress(ImportError):
        from _common import code_state, machine_info

        report["machine"] = machine_info()
        report["code"] = code_state("inference", "benchmarks/gpu_separation.py")
    out_dir = args.out or (
        Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("gpu_separation_dryrun.json" if args.dry_run else "gpu_separation.json")
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
