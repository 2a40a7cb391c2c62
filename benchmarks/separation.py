"""Stem separation on the CPU: our inference pool vs demucs' own `Separator`, with the server live.

Both sides separate the same `--jobs` tracks of `--seconds` seconds (stereo, 48 kHz, tones and
noise, a different seed per track) with the same model: the full-size htdemucs architecture
(the released config, 41.98 M parameters) with random weights, built here, saved as a local
demucs repo (`<name>.yaml` + `<sig>-<sha8>.th`, the helpers of tests/inference/conftest.py) and
loaded through the real loaders (`inference.models.load_separation_model` in the pool's
worker, `demucs.api.Separator(model, repo=…)` for the anchor). The compute is that of trained
weights; the output is noise.

- **pool**: every track is submitted at once to a `WorkerPool` configured as `escenario serve`
  configures it on a CPU by default (one worker process in Linux's `SCHED_IDLE` class at
  `nice +10`, automatic math threads: every core, since it only gets idle CPU time; batch 1):
  `.npy` in at 48 kHz, resampled to 44.1 kHz, demucs' split/overlap-add (overlap 0.25, the
  model's 7.8 s segments) in `BatchedSeparator`, 24-bit WAV stems out at 48 kHz. The model is
  loaded by the first job (its load time counts). Peak memory: the worker's RSS, sampled every
  0.1 s, highest while each job ran.
- **demucs**: a fresh process builds `demucs.api.Separator(name, repo=models_dir, shifts=0,
  overlap=0.25, segment=None)` (the model's own segment; its load time counts) and calls
  `separate_tensor` on the tracks (at 44.1 kHz) one after another, with torch's default
  threads, at normal priority. Peak memory: that process's `ru_maxrss`.

While each side runs, a real `escenario serve` stays busy with the same realtime work (so the
two throughputs compare like for like; `--anchor-idle` runs demucs on an idle machine instead),
and its figures are taken over exactly that side's run:

- a **16-player jam** (`benchmarks/_jam_load.py`: 16 WebSocket participants sending 2.5 ms Opus
  frames); from `GET /api/sessions/{id}/jam/stats` the change in `engine.deadlineMisses` and
  `skippedTicks` between the pool's start and its end, and the tick p99;
- a **sync fan-out probe** (`benchmarks/sync_fanout.py`'s load generator: 1 writer and
  `--readers` Yjs clients in one room, updates on an absolute schedule), run in back-to-back
  rounds; p99 delivery latency per round (the worst round is reported) and overall max.

Runs alternate the order (pool first, then demucs first, ...) over `--repeats`; the table gives
medians. Throughput is seconds of audio separated per second of wall time.

Targets (issue 5): pool ≥ 0.95x demucs' throughput, sync p99 ≤ 20 ms, zero tick deadline
misses during the pool's run.

Usage:
    python benchmarks/separation.py                  # 4 x 30 s, 1 repeat (~10 min on 2 cores)
    python benchmarks/separation.py --repeats 2      # alternate the order, medians
    python benchmarks/separation.py --quick          # tiny model, 2 x 4 s, 4 players: smoke test
Writes benchmarks/results/separation.json (`--out` to change; `--quick` writes nowhere unless
`--out` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, code_state, machine_info
from benchmarks._jam_server import free_port
from benchmarks._jam_server import http_json as http

RATE = 48000
MODEL_RATE = 44100
FULL_NAME, FULL_SIG = "htdemucs_random", "0ddba11e"
TINY_NAME, TINY_SIG = "tiny_random", "7e57c0de"
RESULTS = ROOT / "benchmarks" / "results" / "separation.json"
SYNC_RESULT_PREFIX = "RESULT "


# -- the model and the tracks -----------------------------------------------------------------


def build_models_dir(folder: Path, *, tiny: bool) -> tuple[str, int]:
    """A local demucs repo holding the model; returns (name, parameter count)."""
    import torch
    from demucs.htdemucs import HTDemucs

    from tests.inference.conftest import SOURCES, build_tiny_htdemucs, save_th, write_bag

    if tiny:
        model, name, sig = build_tiny_htdemucs(0), TINY_NAME, TINY_SIG
    else:
        torch.manual_seed(0)
        # The released htdemucs config (demucs grids/mmi.py), see shared/research/inference.md §2.
        model = HTDemucs(
            SOURCES,
            dconv_mode=3,
            depth=4,
            t_layers=5,
            bottom_channels=512,
            t_dropout=0.02,
            segment=Fraction(39, 5),
        ).eval()
        name, sig = FULL_NAME, FULL_SIG
    save_th(model, folder, sig)
    write_bag(folder, name, [sig])
    return name, sum(p.numel() for p in model.parameters())


def make_track(seconds: float, seed: int) -> np.ndarray:
    """Stereo float32 at 48 kHz: a few tones and noise, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros((2, t.size), np.float32)
    for _ in range(4):
        f = rng.uniform(60, 2000)
        out[0] += 0.1 * np.sin(2 * np.pi * f * t).astype(np.float32)
        out[1] += 0.1 * np.sin(2 * np.pi * f * 1.01 * t + 0.3).astype(np.float32)
    out += (0.02 * rng.standard_normal(out.shape)).astype(np.float32)
    return out


# -- process figures ----------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- the pool side --------------------------------------------------------------------------------


async def run_pool(
    models_dir: Path, name: str, inputs: list[Path], work: Path, threads: int, sched_idle: bool = True
) -> dict[str, Any]:
    from inference.pool import PoolConfig, WorkerPool
    from inference.worker import Cancelled, Failed, Finished, JobEvent, Started, Task

    loop = asyncio.get_running_loop()
    done: dict[str, dict[str, Any]] = {}
    started: dict[str, float] = {}
    finished_at: dict[str, float] = {}
    all_done = asyncio.Event()
    errors: list[str] = []

    def on_event(event: JobEvent) -> None:
        now = time.perf_counter()
        if isinstance(event, Started):
            started[event.job_id] = now
        elif isinstance(event, Finished):
            done[event.job_id] = event.result
            finished_at[event.job_id] = now
        elif isinstance(event, Failed | Cancelled):
            errors.append(f"{event.job_id}: {getattr(event, 'error', 'cancelled')}")
            finished_at[event.job_id] = now
        if len(finished_at) == len(inputs):
            all_done.set()

    pool = WorkerPool(
        PoolConfig(
            models_dir=str(models_dir),
            device="cpu",
            cpu_workers=1,
            threads=threads,
            sched_idle_cpu=sched_idle,
        ),
        on_event,
    )
    await pool.start()
    (ready,) = await pool.wait_ready()
    pid = pool.pids()[0]
    idle_rss = rss_mib(pid)
    samples: list[tuple[float, float]] = []
    sampling = True

    def sample() -> None:
        while sampling:
            samples.append((time.perf_counter(), rss_mib(pid)))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        t0 = time.perf_counter()
        for i, path in enumerate(inputs):
            pool.submit(
                Task(
                    job_id=f"job{i}",
                    kind="separate",
                    params={"model": name},
                    inputs={"audio": str(path)},
                    out_dir=str(work / f"job{i}"),
                )
            )
        await asyncio.wait_for(all_done.wait(), timeout=3600)
        wall = time.perf_counter() - t0
    finally:
        sampling = False
        await loop.run_in_executor(None, sampler.join)
        await pool.close()
    if errors:
        raise RuntimeError(f"pool jobs failed: {errors}")
    per_job = []
    for i in range(len(inputs)):
        job = f"job{i}"
        a, b = started.get(job, t0), finished_at[job]
        peak = max((r for t, r in samples if a <= t <= b), default=float("nan"))
        per_job.append({"job": job, "run_s": b - a, "done_after_s": b - t0, "peak_rss_mib": peak})
        check_stems(done[job], inputs[i])
    return {
        "wall_s": wall,
        "worker_threads": ready.threads,
        "worker_sched_idle": sched_idle,
        "worker_idle_rss_mib": idle_rss,
        "peak_rss_mib": max(r for _, r in samples),
        "jobs": per_job,
    }


def check_stems(result: dict[str, Any], source: Path) -> None:
    """Every stem exists, has the source's length and is not silent."""
    import soundfile  # type: ignore[import-untyped]

    frames = np.load(source, mmap_mode="r").shape[1]
    stems = result["stems"]
    if len(stems) != 4:
        raise RuntimeError(f"expected 4 stems, got {sorted(stems)}")
    for stem, path in stems.items():
        data, rate = soundfile.read(path, dtype="float32")
        if rate != RATE or data.shape[0] != frames or not np.abs(data).max() > 0:
            raise RuntimeError(f"stem {stem}: {data.shape} at {rate} Hz, expected {frames} frames at {RATE}")


# -- the demucs side (its own process) ---------------------------------------------------------


def demucs_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="separation.py _demucs")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("inputs", nargs="+")
    a = ap.parse_args(argv)
    import soxr
    import torch
    from demucs.api import Separator

    tracks = []
    for path in a.inputs:
        audio = np.load(path)
        tracks.append(torch.from_numpy(np.ascontiguousarray(soxr.resample(audio.T, RATE, MODEL_RATE).T)))
    t0 = time.perf_counter()
    separator = Separator(a.name, repo=Path(a.models_dir), device="cpu", shifts=0, overlap=0.25, segment=None)
    loaded = time.perf_counter() - t0
    per_job = []
    for wav in tracks:
        t = time.perf_counter()
        _, stems = separator.separate_tensor(wav)
        per_job.append(time.perf_counter() - t)
        if len(stems) != 4 or any(s.shape != wav.shape for s in stems.values()):
            raise RuntimeError("demucs returned unexpected stems")
    wall = time.perf_counter() - t0
    out = {
        "wall_s": wall,
        "load_s": loaded,
        "torch_threads": torch.get_num_threads(),
        "job_s": per_job,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(SYNC_RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


def run_demucs(models_dir: Path, name: str, inputs: list[Path]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_demucs", "--models-dir", str(models_dir)]
    cmd += ["--name", name, *map(str, inputs)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(SYNC_RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"demucs run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(SYNC_RESULT_PREFIX) :])
    return result


# -- the live server and its realtime load -------------------------------------------------------


class LiveServer:
    """`escenario serve` with a jam of `players` participants and a sync room, in its own group."""

    def __init__(self, workdir: Path, players: int) -> None:
        self.workdir = workdir
        self.players = players
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            ESCENARIO_CONNECTS_PER_MINUTE_PER_IP="100000",
            ESCENARIO_MESSAGES_PER_SECOND="100000",
            ESCENARIO_MESSAGE_BURST="100000",
            ESCENARIO_MAX_CONNECTIONS_PER_USER="100000",
            # _jam_load.py's raw-socket clients do not answer WebSocket pings: without this the
            # server closes every jam connection after ping interval + timeout (40 s).
            ESCENARIO_WS_PING_INTERVAL_S="86400",
            ESCENARIO_WS_PING_TIMEOUT_S="86400",
        )
        self.log = (workdir / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "realtime.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(workdir / "data"),
                "--log-level",
                "warning",
                "--log-format",
                "text",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.jam: subprocess.Popen[str] | None = None
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                http("GET", self.base + "/healthz")
                break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy")
            time.sleep(0.2)
        out = http(
            "POST",
            self.base + "/api/auth/signup",
            {"email": "bench@example.com", "password": "correct horse battery staple", "name": "B"},
        )
        self.token = out["token"]
        self.jam_session = http("POST", self.base + "/api/sessions", {"title": "jam"}, self.token)["id"]

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "server.log").read_text(errors="replace")[-3000:]
        return ""

    def start_jam(self, warmup_s: float) -> None:
        self.jam = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "_jam_load.py"),
                "--port",
                str(self.port),
                "--session",
                self.jam_session,
                f"--tokens={self.token}",  # "=": a token may begin with "-"
                "-n",
                str(self.players),
                "--duration",
                "7200",
                "--warmup",
                "1",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.jam.stdout is not None
        line = self.jam.stdout.readline()
        if line.strip() != "STREAMING":
            self.jam.kill()
            raise RuntimeError(
                f"jam load generator failed: {line} {self.jam.stderr.read() if self.jam.stderr else ''}"
            )
        time.sleep(warmup_s)

    def jam_stats(self) -> dict[str, Any]:
        stats = http("GET", self.base + f"/api/sessions/{self.jam_session}/jam/stats", token=self.token)
        engine: dict[str, Any] = stats.get("engine", {})
        participants = stats.get("participants", [])
        engine["participants"] = len(participants)
        return engine

    def stop(self) -> None:
        if self.jam is not None and self.jam.poll() is None:
            self.jam.kill()
            self.jam.wait(10)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.log.close()


class SyncProbe(threading.Thread):
    """Back-to-back rounds of sync_fanout's load generator until stopped."""

    def __init__(self, server: LiveServer, readers: int, updates: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.pgid = server.proc.pid
        self.readers, self.updates, self.rate = readers, updates, rate
        self.rounds: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            # A fresh room per round: the generator's updates are the same bytes every round,
            # and a room that already holds them would not broadcast them again.
            room = http("POST", self.server.base + "/api/sessions", {"title": "sync"}, self.server.token)[
                "id"
            ]
            url = f"ws://127.0.0.1:{self.server.port}/sync/{room}?token={self.server.token}"
            cmd = [
                sys.executable,
                str(ROOT / "benchmarks" / "sync_fanout.py"),
                "_loadgen",
                "--url",
                url,
                "--pgid",
                str(self.pgid),
                "--readers",
                str(self.readers),
                "--updates",
                str(self.updates),
                "--warmup",
                "20",
                "--rate",
                str(self.rate),
                "--timeout",
                "60",
            ]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith(SYNC_RESULT_PREFIX)]
            if done.returncode != 0 or not lines:
                self.errors.append(done.stderr[-1500:])
                return
            self.rounds.append(json.loads(lines[-1][len(SYNC_RESULT_PREFIX) :]))

    def stop(self) -> None:
        self._halt.set()


def realtime_figures(
    before: dict[str, Any], after: dict[str, Any], rounds: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """The jam's tick figures between two stats reads, and the sync rounds that ended between."""
    return {
        "jam": {
            "players": args.players,
            "participants_seen": after.get("participants"),
            "ticks": after["ticks"] - before["ticks"],
            "deadline_misses": after["deadlineMisses"] - before["deadlineMisses"],
            "skipped_ticks": after["skippedTicks"] - before["skippedTicks"],
            "tick_ms_p99_whole_jam": after.get("tickMs", {}).get("p99"),
            "tick_ms_max_whole_jam": after.get("tickMs", {}).get("max"),
        },
        "sync": {
            "readers": args.readers,
            "rate_per_s": args.sync_rate,
            "rounds": len(rounds),
            "p99_ms_worst_round": max((r["p99_ms"] for r in rounds), default=None),
            "p99_ms_median_round": statistics.median(r["p99_ms"] for r in rounds) if rounds else None,
            "p50_ms_median_round": statistics.median(r["p50_ms"] for r in rounds) if rounds else None,
            "max_ms": max((r["max_ms"] for r in rounds), default=None),
            "delivered": sum(r["delivered"] for r in rounds),
        },
    }


@contextlib.contextmanager
def live_load(workdir: Path, args: argparse.Namespace, *, control: bool = True) -> Iterator[dict[str, Any]]:
    """A live server under jam and sync load; the dict receives the figures over the block
    (``control``: first the same load alone for ``--control-s``)."""
    figures: dict[str, Any] = {}
    server = LiveServer(workdir, args.players)
    probe: SyncProbe | None = None
    try:
        server.start_jam(args.jam_warmup)
        probe = SyncProbe(server, args.readers, args.sync_updates, args.sync_rate)
        probe.start()
        while not probe.rounds and not probe.errors and probe.is_alive():
            time.sleep(0.2)  # the first round has run: the probe is warm
        if control and args.control_s > 0:
            # The same load without the pool, first: what the machine alone gives.
            probe.rounds.clear()
            before = server.jam_stats()
            time.sleep(args.control_s)
            figures["control"] = realtime_figures(before, server.jam_stats(), list(probe.rounds), args)
        probe.rounds.clear()
        before = server.jam_stats()
        yield figures
        after = server.jam_stats()
        probe.stop()
        probe.join(300)
        if probe.errors:
            raise RuntimeError(f"sync probe failed: {probe.errors[-1]}\n{server.log_tail()}")
        figures.update(realtime_figures(before, after, probe.rounds, args))
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server died during the run:\n{server.log_tail()}")
    finally:
        if probe is not None:
            probe.stop()
        server.stop()


# -- orchestration ---------------------------------------------------------------------------------


def one_run(
    order: list[str], models_dir: Path, name: str, inputs: list[Path], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    run: dict[str, Any] = {"order": order}
    for side in order:
        print(f"  {side} ...", file=sys.stderr, flush=True)
        if side == "pool":
            out_dir = work / f"pool-{time.monotonic_ns()}"
            if args.no_live:
                run["pool"] = asyncio.run(
                    run_pool(models_dir, name, inputs, out_dir, args.threads, not args.sched_normal)
                )
            else:
                live_dir = work / f"live-{time.monotonic_ns()}"
                live_dir.mkdir()
                with live_load(live_dir, args) as live:
                    run["pool"] = asyncio.run(
                        run_pool(models_dir, name, inputs, out_dir, args.threads, not args.sched_normal)
                    )
                run["pool"].update(live)
            shutil.rmtree(out_dir, ignore_errors=True)
        elif args.no_live or args.anchor_idle:
            run["demucs"] = run_demucs(models_dir, name, inputs)
        else:
            # The same live load as the pool's, so the two throughputs compare like for like;
            # its realtime figures show what an unprioritised separation does to the server.
            live_dir = work / f"live-{time.monotonic_ns()}"
            live_dir.mkdir()
            with live_load(live_dir, args, control=False) as live:
                run["demucs"] = run_demucs(models_dir, name, inputs)
            run["demucs"].update(live)
        print(f"  {side}: {run[side]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    audio_s = args.jobs * args.seconds
    run["pool_audio_s_per_s"] = audio_s / run["pool"]["wall_s"]
    run["demucs_audio_s_per_s"] = audio_s / run["demucs"]["wall_s"]
    run["ratio"] = run["pool_audio_s_per_s"] / run["demucs_audio_s_per_s"]
    return run


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = statistics.median

    def live(key: str, field: str) -> list[Any]:
        return [r["pool"][key][field] for r in runs if key in r["pool"]]

    summary: dict[str, Any] = {
        "pool_audio_s_per_s": med(r["pool_audio_s_per_s"] for r in runs),
        "demucs_audio_s_per_s": med(r["demucs_audio_s_per_s"] for r in runs),
        "ratio": med(r["ratio"] for r in runs),
        "pool_wall_s": med(r["pool"]["wall_s"] for r in runs),
        "demucs_wall_s": med(r["demucs"]["wall_s"] for r in runs),
        "pool_peak_rss_mib_per_job": max(j["peak_rss_mib"] for r in runs for j in r["pool"]["jobs"]),
        "pool_worker_idle_rss_mib": med(r["pool"]["worker_idle_rss_mib"] for r in runs),
        "demucs_peak_rss_mib": max(r["demucs"]["peak_rss_mib"] for r in runs),
    }
    demucs_live = [r["demucs"] for r in runs if "jam" in r["demucs"]]
    if demucs_live:
        summary["demucs_jam_deadline_misses"] = sum(d["jam"]["deadline_misses"] for d in demucs_live)
        summary["demucs_jam_skipped_ticks"] = sum(d["jam"]["skipped_ticks"] for d in demucs_live)
        summary["demucs_sync_p99_ms_worst_round"] = max(
            d["sync"]["p99_ms_worst_round"] or 0.0 for d in demucs_live
        )
    if any("jam" in r["pool"] for r in runs):
        summary["jam_deadline_misses"] = sum(live("jam", "deadline_misses"))
        summary["jam_skipped_ticks"] = sum(live("jam", "skipped_ticks"))
        summary["sync_p99_ms_worst_round"] = max(live("sync", "p99_ms_worst_round"))
        summary["sync_max_ms"] = max(live("sync", "max_ms"))
    controls = [r["pool"]["control"] for r in runs if "control" in r["pool"]]
    if controls:
        summary["control_jam_deadline_misses"] = sum(c["jam"]["deadline_misses"] for c in controls)
        summary["control_jam_ticks"] = sum(c["jam"]["ticks"] for c in controls)
        summary["control_sync_p99_ms_worst_round"] = max(
            (c["sync"]["p99_ms_worst_round"] for c in controls if c["sync"]["rounds"]), default=None
        )
    return summary


def table(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"{args.jobs} x {args.seconds:g} s, model {summary['model']} "
        f"({summary['params'] / 1e6:.2f} M params), {args.repeats} repeat(s), medians",
        f"{'':24}{'audio s/s':>10}{'wall s':>9}{'peak RSS MiB':>14}",
        f"{'pool (1 worker, idle)':24}{summary['pool_audio_s_per_s']:>10.3f}{summary['pool_wall_s']:>9.1f}"
        f"{summary['pool_peak_rss_mib_per_job']:>14.0f}",
        f"{'demucs Separator':24}{summary['demucs_audio_s_per_s']:>10.3f}{summary['demucs_wall_s']:>9.1f}"
        f"{summary['demucs_peak_rss_mib']:>14.0f}",
        f"ratio pool/demucs: {summary['ratio']:.3f}  (target >= 0.95)",
    ]
    if "jam_deadline_misses" in summary:
        lines.append(
            f"during the pool run: jam ({args.players} players) deadline misses "
            f"{summary['jam_deadline_misses']}, skipped ticks {summary['jam_skipped_ticks']} (target 0); "
            f"sync fan-out p99 worst round {summary['sync_p99_ms_worst_round']:.2f} ms, "
            f"max {summary['sync_max_ms']:.2f} ms (target p99 <= 20 ms)"
        )
    if "demucs_jam_deadline_misses" in summary:
        lines.append(
            f"during the demucs run (same live load, demucs at normal priority): deadline misses "
            f"{summary['demucs_jam_deadline_misses']}, skipped ticks {summary['demucs_jam_skipped_ticks']}; "
            f"sync p99 worst round {summary['demucs_sync_p99_ms_worst_round']:.2f} ms"
        )
    if "control_jam_deadline_misses" in summary:
        p99 = summary["control_sync_p99_ms_worst_round"]
        lines.append(
            f"control (same load, no pool, {summary['control_jam_ticks']} ticks): deadline misses "
            f"{summary['control_jam_deadline_misses']}, sync p99 worst round "
            + ("n/a" if p99 is None else f"{p99:.2f} ms")
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="the pool worker's math threads (0: automatic, as the server's default)",
    )
    ap.add_argument(
        "--anchor-idle",
        action="store_true",
        help="run demucs on an idle machine instead of under the same live load as the pool",
    )
    ap.add_argument("--players", type=int, default=16)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--sync-rate", type=float, default=50.0)
    ap.add_argument("--sync-updates", type=int, default=500)
    ap.add_argument("--jam-warmup", type=float, default=5.0)
    ap.add_argument(
        "--control-s",
        type=float,
        default=30.0,
        help="seconds of the same realtime load without the pool, measured first (0: none)",
    )
    ap.add_argument(
        "--sched-normal", action="store_true", help="the worker niced only, not in the SCHED_IDLE class"
    )
    ap.add_argument("--no-live", action="store_true", help="no server, jam or sync probe during the pool run")
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 x 4 s, 4 players: a smoke test")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.jobs, args.players, args.readers = 4.0, 2, 4, 2
        args.sync_updates, args.sync_rate, args.jam_warmup, args.control_s = 60, 50.0, 1.0, 3.0
    if args.out is None and not args.quick:
        args.out = RESULTS
    return args


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_demucs":
        return demucs_main(argv[1:])
    args = parse_args(argv)
    started = time.time()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-separation-") as tmp:
        work = Path(tmp)
        models_dir = work / "models"
        name, params = build_models_dir(models_dir, tiny=args.quick)
        from inference.tasks import save_audio

        inputs = []
        for i in range(args.jobs):
            path = work / f"track{i}.npy"
            save_audio(path, make_track(args.seconds, seed=i))
            inputs.append(path)
        runs = []
        for k in range(args.repeats):
            order = ["pool", "demucs"] if k % 2 == 0 else ["demucs", "pool"]
            print(f"run {k + 1}/{args.repeats}: {' then '.join(order)}", file=sys.stderr, flush=True)
            runs.append(one_run(order, models_dir, name, inputs, work, args))
    summary = summarise(runs)
    summary.update(model=name, params=params)
    print(table(summary, args))
    if args.out is not None:
        doc = {
            "benchmark": "separation",
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": info,
            "loadavg_at_end": Path("/proc/loadavg").read_text().strip(),
            "code": code_state("inference", "benchmarks/separation.py"),
            "elapsed_s": time.time() - started,
            "summary": summary,
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
