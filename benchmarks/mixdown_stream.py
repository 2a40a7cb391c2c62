"""Mixdown time to first byte and throughput: the whole-file render (before) against the stream (after).

The session is ``benchmarks/render.py``'s: 32 stereo tracks with EQ + compressor, faders and
pans, the master's true-peak limiter; here ``--seconds`` long (default 20 s, so the whole run
stays under a minute on a busy 2-core machine). ``workers=1``, as the server's default
``ESCENARIO_RENDER_WORKERS``.

- **before**: what the mixdown endpoint did until the stream: ``write_mixdown`` renders and
  encodes the whole file to disk, then the response reads it back (64 KiB at a time). The
  first byte can leave only after the whole render.
- **after**: what it does now: ``stream_mixdown`` in a worker thread (the loop's executor)
  hands its chunks through the bounded ``ByteStream`` to a coroutine on the event loop that
  takes them as fast as they come (a fast client).

Time to first byte (TTFB) is from the call to the first chunk in the consumer's hands; total is
to the last byte; throughput is audio seconds per wall second (x real time). Each mode and format
runs ``--repeats`` times (default 3), alternating the modes; the table shows medians. One warm-up
render first loads numba's cached code. HTTP itself is not measured (the same in both modes).

Usage:
    .venv/bin/python benchmarks/mixdown_stream.py                  # wav and flac, 32 x 20 s, 3 repeats
    .venv/bin/python benchmarks/mixdown_stream.py --formats wav,ogg --seconds 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine_info
from render import SAMPLE_RATE, asset_id, build_document, chain_params, synth_track

from realtime.api.byte_stream import ByteStream
from realtime.media.mixdown import write_mixdown
from realtime.media.stream import CHUNK_BYTES, stream_mixdown

RESULTS = Path(__file__).resolve().parent / "results" / "mixdown_stream.json"
QUEUE_CHUNKS = 8  # as realtime.api.render.STREAM_QUEUE_CHUNKS


def before(doc: Any, assets: Mapping[str, np.ndarray], fmt: str) -> dict[str, float]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / f"mix.{fmt}"
        write_mixdown(dest, doc, assets, fmt)
        first = None
        size = 0
        with dest.open("rb") as f:
            while piece := f.read(CHUNK_BYTES):
                first = first if first is not None else time.perf_counter() - t0
                size += len(piece)
    return {"ttfb_s": first or 0.0, "total_s": time.perf_counter() - t0, "bytes": size}


async def after_async(doc: Any, assets: Mapping[str, np.ndarray], fmt: str) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    stream = ByteStream(loop, QUEUE_CHUNKS)

    def produce() -> None:
        try:
            stream_mixdown(stream.emit, doc, assets, fmt, cancel=stream.aborted)
        except BaseException as exc:
            stream.end(exc)
        else:
            stream.end()

    t0 = time.perf_counter()
    producer = loop.run_in_executor(None, produce)
    first = await stream.first()
    ttfb = time.perf_counter() - t0
    size = len(first or b"")
    async for chunk in stream.chunks():
        size += len(chunk)
    total = time.perf_counter() - t0
    await producer
    return {"ttfb_s": ttfb, "total_s": total, "bytes": size}


def after(doc: Any, assets: Mapping[str, np.ndarray], fmt: str) -> dict[str, float]:
    return asyncio.run(after_async(doc, assets, fmt))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--formats", default="wav,flac")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help=f"write {RESULTS.relative_to(RESULTS.parents[2])}")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    frames = round(args.seconds * SAMPLE_RATE)
    params = chain_params(args.tracks, args.seed)
    assets = {asset_id(i): synth_track(i, frames, args.seed) for i in range(args.tracks)}
    doc = build_document(params, args.seconds)
    stream_mixdown(lambda _: None, doc, assets, "wav", end_s=0.5)  # numba: load the cached code
    formats = args.formats.split(",")
    runs: list[dict[str, Any]] = []
    for fmt in formats:
        for r in range(args.repeats):
            order = (
                (("before", before), ("after", after))
                if r % 2 == 0
                else (("after", after), ("before", before))
            )
            for mode, fn in order:
                result = fn(doc, assets, fmt)
                runs.append({"format": fmt, "mode": mode, **result})
                print(
                    f"  {fmt:5} {mode:6} ttfb {result['ttfb_s']:.3f} s  total {result['total_s']:.3f} s",
                    flush=True,
                )
    rows = []
    print(f"\n{args.tracks} tracks x {args.seconds:g} s, medians of {args.repeats}:")
    print("| format | mode | TTFB s | total s | x real time |")
    print("|---|---|---|---|---|")
    for fmt in formats:
        for mode in ("before", "after"):
            mine = [x for x in runs if x["format"] == fmt and x["mode"] == mode]
            ttfb = statistics.median(x["ttfb_s"] for x in mine)
            total = statistics.median(x["total_s"] for x in mine)
            rows.append(
                {
                    "format": fmt,
                    "mode": mode,
                    "ttfb_s": ttfb,
                    "total_s": total,
                    "x_realtime": args.seconds / total,
                }
            )
            print(f"| {fmt} | {mode} | {ttfb:.3f} | {total:.3f} | {args.seconds / total:.1f}x |")
    if args.json:
        RESULTS.parent.mkdir(exist_ok=True)
        payload = {"args": vars(args), "machine": machine_info(), "medians": rows, "runs": runs}
        RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
