"""Live-jam mix tick: N personal stereo mixes of N inputs plus a limiter per listener, on one core.

Every 2.5 ms (120 frames at 48 kHz) the live-jam server computes, for N participants who each send
one mono input and each hear their own stereo mix, ``Y = G · X`` (``G`` is 2N x N, ``X`` is N x 120,
float32: :func:`realtime.dsp.mixer.mix_matrix`, or :func:`~realtime.dsp.mixer.mix_matrix_ramp` on
a tick where someone's gains changed) and then runs each listener's stereo mix through a master
limiter (-1 dB ceiling, 1.5 ms look-ahead). One *tick* is that whole step; this benchmark times it,
tick by tick, for N = 8 … 128.

Method:

- The measuring process is pinned to one CPU (``os.sched_setaffinity``) and every BLAS/OpenMP
  pool is limited to one thread through the environment, set before numpy is imported: the
  script re-executes itself (``mix_tick.py _worker``) with that environment.
- Gains change on every ``--change-every``-th tick (default 20: a 20 Hz fader drag, the rate at
  which awareness carries gestures), and those ticks use ``mix_matrix_ramp``. So the changed ticks
  are 5 % of all ticks, and p99 includes them.
- Inputs cycle through 32 pre-generated blocks; outputs and gain matrices are preallocated.
- ``--ticks`` measured ticks (default 4000, 10 s of audio) follow ``--warmup`` unmeasured ones;
  each tick is timed with ``time.perf_counter_ns``; the thread's CPU time over the measured ticks
  gives the CPU per participant. Ticks run back to back (not paced), and the garbage collector
  stays enabled, as in a server.
- Each configuration is measured ``--repeats`` times, the repeats interleaved; the tables give
  the median over repeats of each statistic (the max column gives the largest of all repeats).

Variants of the tick (all compute the same mix; they differ in the limiters and in the calls):

- ``bank/sample-peak`` (the product path for personal mixes): :func:`realtime.dsp.mixer.mix_and_limit`
  with a :class:`realtime.dsp.effects.LimiterBank` ``(N, 2, 48000)`` (sample peaks): the GEMM (two
  on a ramped tick) and one numba call that limits every listener;
- ``bank/true-peak``: the same with ``LimiterBank(..., true_peak=True)``;
- ``sample-peak``: the GEMM, then one ``Limiter(2, 48000, true_peak=False)`` per listener, called
  from a Python loop (N calls per tick);
- ``true-peak``: the same with ``Limiter(2, 48000)`` (the 4x oversampled BS.1770 detector);
- ``hand+sample-peak`` (anchor): the mix as a naive per-listener Python/numpy loop
  (``np.dot`` of the listener's two rows of ``G`` with ``X``) instead of one GEMM, then the
  same per-listener sample-peak limiters.

Before timing, each bank's output is checked bit-identical to the per-listener limiters'.

Also timed alone: the mix kernel (``mix_matrix``, ``mix_matrix_ramp`` on every tick) and the
hand loop, for the DESIGN.md figure "all N personal mixes as one float32 GEMM: N=128 in ~110 µs
per block" and the claim "hand loops are 3-10x slower".

BLAS: OpenBLAS picks a kernel for the CPU at load time; on some machines the environment sets
``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) for older OpenBLAS builds, which slows a current
numpy. The benchmark runs once with the environment as it is (what tests and CI get) and once with
both variables unset, and reports the kernel each run used (threadpoolctl if installed, otherwise
OpenBLAS's own ``*_get_corename`` through ctypes). The target verdict uses the unset run.

Usage:
    python benchmarks/mix_tick.py                   # N = 8…128, 4000 ticks, 3 repeats, both BLAS envs
    python benchmarks/mix_tick.py --quick           # smoke test
    python benchmarks/mix_tick.py --json --plot     # also write benchmarks/results/mix_tick.{json,png}

Target (issue): N = 64 within 5 % of the 2.5 ms block period (125 µs) at p99 on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import code_state, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

SAMPLE_RATE = 48000
BLOCK = 120
PERIOD_US = BLOCK / SAMPLE_RATE * 1e6  # 2500 µs
BUDGET_FRACTION = 0.05
BUDGET_US = PERIOD_US * BUDGET_FRACTION  # 125 µs
TARGET_N = 64
DESIGN_N = 128
DESIGN_GEMM_US = 110.0
HAND_CLAIM = (3.0, 10.0)
DEFAULT_NS = (8, 16, 32, 64, 96, 128)
INPUT_BLOCKS = 32
GAIN_SETS = 8

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
CORETYPE_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BLAS_ENVS = ("as-is", "unset")

MIX_VARIANTS = ("gemm", "gemm-ramp", "hand")
TICK_VARIANTS = (
    "bank/sample-peak",
    "bank/true-peak",
    "true-peak",
    "sample-peak",
    "hand+sample-peak",
)
PRODUCT_TICKS = ("bank/sample-peak", "bank/true-peak", "sample-peak", "true-peak")


# --------------------------------------------------------------------------------------------
# Worker (runs pinned, single-threaded BLAS: `mix_tick.py _worker ...`)
# --------------------------------------------------------------------------------------------
def blas_info() -> dict[str, Any]:
    """Which BLAS library and kernel numpy uses (numpy must be imported and have loaded BLAS)."""
    import numpy as np

    np.dot(np.ones((8, 8), np.float32), np.ones((8, 8), np.float32))  # make sure BLAS is loaded
    info: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        info["numpy_build"] = f"{blas.get('name')} {blas.get('version')}"
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found,unused-ignore]

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        info["source"] = "threadpoolctl"
        info["pools"] = pools
        if pools:
            info["library"] = pools[0].get("filepath")
            info["corename"] = pools[0].get("architecture")
            info["threads"] = pools[0].get("num_threads")
        return info
    except ImportError:
        pass
    info["source"] = "ctypes (threadpoolctl not installed)"
    libs: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "blas" in path.lower() and path.startswith("/"):
                libs.add(path)
    for path in sorted(libs):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            corename = getattr(lib, f"{prefix}openblas_get_corename{suffix}", None)
            if corename is None:
                continue
            corename.restype = ctypes.c_char_p
            info["library"] = path
            info["corename"] = corename().decode()
            config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
            if config is not None:
                config.restype = ctypes.c_char_p
                info["config"] = config().decode().strip()
            threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            if threads is not None:
                threads.restype = ctypes.c_int
                info["threads"] = threads()
            return info
    info["library"] = sorted(libs)[0] if libs else None
    return info


def percentiles(samples_ns: Any) -> dict[str, float]:
    import numpy as np

    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    p50, p99 = np.percentile(us, [50, 99])
    return {
        "p50_us": float(p50),
        "p99_us": float(p99),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
    }


def time_ticks(step: Callable[[int], None], ticks: int, warmup: int) -> dict[str, float]:
    """Run ``step(i)`` warmup + ticks times; wall time and thread CPU time of each measured tick.

    The thread CPU time (``CLOCK_THREAD_CPUTIME_ID``) is read around each tick, outside the wall
    clock readings; a tick whose wall time exceeds its CPU time was preempted (or page-faulted).
    """
    import numpy as np

    for i in range(warmup):
        step(i)
    gc.collect()
    samples = np.empty(ticks, dtype=np.int64)
    cpu_samples = np.empty(ticks, dtype=np.int64)
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    for i in range(ticks):
        c0 = cpu_clock()
        t0 = clock()
        step(warmup + i)
        t1 = clock()
        cpu_samples[i] = cpu_clock() - c0
        samples[i] = t1 - t0
    out = percentiles(samples)
    cpu = percentiles(cpu_samples)
    out["cpu_mean_us"] = cpu["mean_us"]
    out["cpu_p99_us"] = cpu["p99_us"]
    # ticks whose wall time exceeds their CPU time by > 50 µs: the thread was preempted or waited
    out["preempted_ticks"] = int(np.count_nonzero(samples - cpu_samples > 50_000))
    return out


class Scene:
    """One N: inputs, gain matrices, outputs and limiters, all preallocated."""

    def __init__(self, n: int, change_every: int, seed: int) -> None:
        import numpy as np

        from realtime.dsp.mixer import build_gain_matrix

        self.n = n
        self.change_every = change_every
        rng = np.random.default_rng(seed + n)
        # Inputs: a band-limited "instrument" per participant (sum of a few partials + noise), with
        # levels so that some mixes exceed the -1 dB ceiling (the limiter then works).
        t = np.arange(INPUT_BLOCKS * BLOCK) / SAMPLE_RATE
        freqs = rng.uniform(80.0, 1000.0, size=(n, 1))
        sig = np.sin(2 * np.pi * freqs * t) + 0.5 * np.sin(2 * np.pi * 2.01 * freqs * t)
        sig += 0.2 * rng.standard_normal(sig.shape)
        sig *= rng.uniform(0.1, 0.5, size=(n, 1))
        blocks = sig.astype(np.float32).reshape(n, INPUT_BLOCKS, BLOCK).transpose(1, 0, 2)
        self.inputs = np.ascontiguousarray(blocks)  # (INPUT_BLOCKS, n, BLOCK)
        level = -20.0 * np.log10(max(1.0, n**0.5)) + 6.0
        self.gains = []
        for _ in range(GAIN_SETS):
            gain_db = level + rng.uniform(-12.0, 0.0, size=(n, n))
            pan = rng.uniform(-0.8, 0.8, size=(n, n))
            self.gains.append(build_gain_matrix(gain_db, pan, self_input=list(range(n)), self_monitor=False))
        self.out = np.empty((2 * n, BLOCK), dtype=np.float32)
        self.scratch = np.empty((2 * n, BLOCK), dtype=np.float32)
        self.views = [self.out[2 * i : 2 * i + 2] for i in range(n)]
        self.ramp_w = np.arange(1, BLOCK + 1, dtype=np.float32) / np.float32(BLOCK)

    def gain_pair(self, i: int) -> tuple[Any, Any | None]:
        """(G now, G it ramps to) for tick i; the second is None on a tick without change."""
        k = i // self.change_every
        if i % self.change_every == 0 and i > 0:
            return self.gains[(k - 1) % GAIN_SETS], self.gains[k % GAIN_SETS]
        return self.gains[k % GAIN_SETS], None

    def mix(self, i: int) -> None:
        from realtime.dsp.mixer import mix_matrix, mix_matrix_ramp

        x = self.inputs[i % INPUT_BLOCKS]
        g0, g1 = self.gain_pair(i)
        if g1 is None:
            mix_matrix(g0, x, self.out)
        else:
            mix_matrix_ramp(g0, g1, x, self.out, self.scratch)

    def tick_with(self, bank: Any) -> Callable[[int], None]:
        """The product's tick: ``mix_and_limit`` (GEMM or ramp, then one call for every limiter)."""
        from realtime.dsp.mixer import mix_and_limit

        def step(i: int) -> None:
            x = self.inputs[i % INPUT_BLOCKS]
            g0, g1 = self.gain_pair(i)
            mix_and_limit(g0, x, bank, self.out, gains_end=g1, scratch=self.scratch)

        return step

    def hand_mix(self, i: int) -> None:
        """The naive per-listener loop the GEMM replaces: two rows of G times X per listener."""
        import numpy as np

        x = self.inputs[i % INPUT_BLOCKS]
        g0, g1 = self.gain_pair(i)
        for listener in range(self.n):
            rows = slice(2 * listener, 2 * listener + 2)
            np.dot(g0[rows], x, out=self.out[rows])
            if g1 is not None:
                self.out[rows] += np.dot(g1[rows] - g0[rows], x) * self.ramp_w


def make_limiters(n: int, true_peak: bool) -> list[Any]:
    from realtime.dsp.effects import Limiter

    return [Limiter(2, SAMPLE_RATE, ceiling_db=-1.0, true_peak=true_peak) for _ in range(n)]


def make_bank(n: int, true_peak: bool) -> Any:
    from realtime.dsp.effects import LimiterBank

    return LimiterBank(n, 2, SAMPLE_RATE, ceiling_db=-1.0, true_peak=true_peak)


def check_bank(scene: Scene, true_peak: bool) -> None:
    """The product's bank must produce exactly what the per-listener limiters produce."""
    import numpy as np

    limiters = make_limiters(scene.n, true_peak)
    bank = make_bank(scene.n, true_peak)
    step = scene.tick_with(bank)
    for i in range(3 * INPUT_BLOCKS):
        scene.mix(i)
        for lim, view in zip(limiters, scene.views, strict=True):
            lim.process(view)
        expected = scene.out.copy()
        step(i)
        if not np.array_equal(scene.out, expected):
            raise RuntimeError(f"LimiterBank differs from per-listener limiters (N={scene.n}, tick {i})")


def make_steps(scene: Scene) -> dict[str, Callable[[], Callable[[int], None]]]:
    """Factories of fresh tick functions (fresh limiter state for every measurement)."""

    def gemm() -> Callable[[int], None]:
        return scene.mix

    def gemm_ramp() -> Callable[[int], None]:
        from realtime.dsp.mixer import mix_matrix_ramp

        def step(i: int) -> None:
            k = i % GAIN_SETS
            mix_matrix_ramp(
                scene.gains[k], scene.gains[(k + 1) % GAIN_SETS], scene.inputs[i % INPUT_BLOCKS], scene.out,
                scene.scratch,
            )  # fmt: skip

        return step

    def hand() -> Callable[[int], None]:
        return scene.hand_mix

    def per_listener(true_peak: bool, mix: Callable[[int], None]) -> Callable[[], Callable[[int], None]]:
        def factory() -> Callable[[int], None]:
            limiters = make_limiters(scene.n, true_peak)
            pairs = list(zip(limiters, scene.views, strict=True))

            def step(i: int) -> None:
                mix(i)
                for lim, view in pairs:
                    lim.process(view)

            return step

        return factory

    def bank(true_peak: bool) -> Callable[[], Callable[[int], None]]:
        def factory() -> Callable[[int], None]:
            return scene.tick_with(make_bank(scene.n, true_peak))

        return factory

    return {
        "gemm": gemm,
        "gemm-ramp": gemm_ramp,
        "hand": hand,
        "true-peak": per_listener(True, scene.mix),
        "sample-peak": per_listener(False, scene.mix),
        "hand+sample-peak": per_listener(False, scene.hand_mix),
        "bank/sample-peak": bank(False),
        "bank/true-peak": bank(True),
    }


def worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mix_tick.py _worker")
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--ns", required=True)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--ticks", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--change-every", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if "numpy" in sys.modules:
        raise RuntimeError("numpy was imported before the thread limits were set")
    os.sched_setaffinity(0, {args.cpu})
    import numba
    import numpy as np

    info = blas_info()
    ns = [int(n) for n in args.ns.split(",")]
    variants = args.variants.split(",")
    scenes = {n: Scene(n, args.change_every, args.seed) for n in ns}
    for n in ns:  # compile (or load from the cache) and check the banks against Limiter
        for true_peak in (False, True):
            if f"bank/{'true' if true_peak else 'sample'}-peak" in variants:
                check_bank(scenes[n], true_peak)
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for n in ns:
            steps = make_steps(scenes[n])
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for variant in order:
                result = time_ticks(steps[variant](), args.ticks, args.warmup)
                result.update({"n": n, "variant": variant, "repeat": rep + 1})
                runs.append(result)
                print(
                    f"    rep {rep + 1} N={n:<4} {variant:<26} p50 {result['p50_us']:8.1f} µs  "
                    f"p99 {result['p99_us']:8.1f} µs  max {result['max_us']:8.1f} µs",
                    flush=True,
                )
    payload = {
        "blas": info,
        "cpu": args.cpu,
        "affinity": sorted(os.sched_getaffinity(0)),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "env": {k: os.environ.get(k) for k in (*THREAD_VARS, *CORETYPE_VARS)},
        "runs": runs,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def worker_env(blas_env: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = "1"
    if blas_env == "unset":
        for var in CORETYPE_VARS:
            env.pop(var, None)
    elif blas_env.startswith("coretype="):
        env["OPENBLAS_CORETYPE"] = blas_env.split("=", 1)[1]
    elif blas_env != "as-is":
        raise ValueError(f"unknown BLAS environment {blas_env!r}")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_worker(blas_env: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mix-tick-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_worker",
            f"--cpu={args.cpu}",
            f"--ns={','.join(map(str, args.n_list))}",
            f"--variants={','.join(args.variant_list)}",
            f"--ticks={args.ticks}",
            f"--warmup={args.warmup}",
            f"--repeats={args.repeats}",
            f"--change-every={args.change_every}",
            f"--seed={args.seed}",
            f"--out={out}",
        ]
        done = subprocess.run(cmd, env=worker_env(blas_env), cwd=ROOT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"worker for BLAS env {blas_env!r} exited with {done.returncode}")
        result: dict[str, Any] = json.loads(out.read_text())
    result["blas_env"] = blas_env
    return result


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["n"], r["variant"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for (n, variant), rs in sorted(groups.items()):
        entry: dict[str, Any] = {"n": n, "variant": variant, "repeats": len(rs)}
        for key in ("p50_us", "p99_us", "mean_us", "cpu_mean_us", "cpu_p99_us"):
            values = [r[key] for r in rs]
            entry[key] = statistics.median(values)
            entry[key + "_min"] = min(values)
            entry[key + "_max"] = max(values)
        entry["max_us"] = max(r["max_us"] for r in rs)
        entry["preempted_ticks"] = max(r["preempted_ticks"] for r in rs)
        entry["p99_pct_period"] = 100.0 * entry["p99_us"] / PERIOD_US
        entry["cpu_per_participant_us"] = entry["cpu_mean_us"] / n
        entry["cpu_per_participant_pct_core"] = 100.0 * entry["cpu_per_participant_us"] / PERIOD_US
        out[f"{variant}/{n}"] = entry
    return out


def blas_label(result: dict[str, Any]) -> str:
    blas = result["blas"]
    env = {k: v for k, v in result["env"].items() if k in CORETYPE_VARS and v is not None}
    env_text = ", ".join(f"{k}={v}" for k, v in env.items()) or "OPENBLAS_CORETYPE/L2_SIZE not set"
    return (
        f"{blas.get('corename', '?')} kernel ({env_text}; {blas.get('numpy_build', '?')}, {blas['source']})"
    )


def mix_table(summary: dict[str, dict[str, Any]], ns: Sequence[int]) -> str:
    head = (
        f"{'N':>4} {'GEMM p50':>9} {'GEMM p99':>9} {'ramp p50':>9} {'ramp p99':>9} "
        f"{'hand p50':>9} {'hand p99':>9} {'hand/GEMM':>9}"
    )
    lines = [head, "-" * len(head)]
    for n in ns:
        g, r, h = (summary.get(f"{v}/{n}") for v in MIX_VARIANTS)
        cells = []
        for e in (g, r, h):
            cells += [f"{e['p50_us']:9.1f}", f"{e['p99_us']:9.1f}"] if e else [f"{'-':>9}"] * 2
        ratio = f"{h['p50_us'] / g['p50_us']:8.1f}x" if g and h else f"{'-':>9}"
        lines.append(f"{n:>4} {' '.join(cells)} {ratio}")
    return "\n".join(lines)


def tick_table(summary: dict[str, dict[str, Any]], ns: Sequence[int], variants: Sequence[str]) -> str:
    head = (
        f"{'N':>4} {'variant':<26} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8} {'p50 %':>6} {'p99 %':>6} "
        f"{'max %':>6} {'CPU p99':>8} {'preempt':>7} {'CPU/participant':>16}"
    )
    lines = [head, "-" * len(head)]
    for n in ns:
        for v in variants:
            e = summary.get(f"{v}/{n}")
            if e is None or v in MIX_VARIANTS:
                continue
            lines.append(
                f"{n:>4} {v:<26} {e['p50_us']:8.1f} {e['p99_us']:8.1f} {e['max_us']:8.0f} "
                f"{100 * e['p50_us'] / PERIOD_US:5.1f}% {e['p99_pct_period']:5.1f}% "
                f"{100 * e['max_us'] / PERIOD_US:5.0f}% {e['cpu_p99_us']:8.1f} {e['preempted_ticks']:>7} "
                f"{e['cpu_per_participant_us']:6.2f} µs {e['cpu_per_participant_pct_core']:5.2f}%"
            )
    return "\n".join(lines)


def anchors(summary: dict[str, dict[str, Any]], ns: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"hand_over_gemm": {}, "hand_tick_over_tick": {}}
    for n in ns:
        g, h = summary.get(f"gemm/{n}"), summary.get(f"hand/{n}")
        if g and h:
            out["hand_over_gemm"][str(n)] = h["p50_us"] / g["p50_us"]
        t, ht = summary.get(f"sample-peak/{n}"), summary.get(f"hand+sample-peak/{n}")
        if t and ht:
            out["hand_tick_over_tick"][str(n)] = ht["p50_us"] / t["p50_us"]
    g = summary.get(f"gemm/{DESIGN_N}")
    if g:
        out["design_gemm_us"] = DESIGN_GEMM_US
        out["measured_gemm_us"] = g["p50_us"]
        out["design_over_measured"] = DESIGN_GEMM_US / g["p50_us"]
    return out


def verdicts(summary: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    met_any = False
    for v in PRODUCT_TICKS:
        e = summary.get(f"{v}/{TARGET_N}")
        if e is None:
            lines.append(f"target ({v}): not evaluated (needs N={TARGET_N})")
            continue
        ok = e["p99_us"] <= BUDGET_US
        met_any |= ok
        lines.append(
            f"N={TARGET_N} tick with {v} limiters: p99 {e['p99_us']:.1f} µs = {e['p99_pct_period']:.1f} % of "
            f"{PERIOD_US:.0f} µs (target ≤ {100 * BUDGET_FRACTION:.0f} % = {BUDGET_US:.0f} µs): "
            f"{'met' if ok else 'missed'}"
        )
    if any(f"{v}/{TARGET_N}" in summary for v in PRODUCT_TICKS):
        lines.append(
            f"TARGET {'MET' if met_any else 'MISSED'}: N={TARGET_N} within {100 * BUDGET_FRACTION:.0f} % "
            "of the 2.5 ms period at p99 on one core (product code, any of the variants above)"
        )
    return lines


def plot(results: Sequence[dict[str, Any]], ns: Sequence[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = results[-1]
    summary = main["summary"]
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    styles = {
        "true-peak": ("tab:red", "-", "o"),
        "sample-peak": ("tab:blue", "-", "o"),
        "hand+sample-peak": ("tab:gray", "--", "s"),
        "bank/sample-peak": ("tab:green", "-", "^"),
        "bank/true-peak": ("tab:olive", "-", "^"),
        "gemm": ("black", "-", "x"),
        "hand": ("tab:gray", ":", "x"),
    }
    labels = {
        "true-peak": "tick: GEMM + a true-peak Limiter per listener",
        "sample-peak": "tick: GEMM + a sample-peak Limiter per listener",
        "hand+sample-peak": "anchor tick: hand loop + sample-peak limiters",
        "bank/sample-peak": "tick: mix_and_limit, sample-peak LimiterBank (product path)",
        "bank/true-peak": "tick: mix_and_limit, true-peak LimiterBank",
        "gemm": "mix only: GEMM (mix_matrix)",
        "hand": "mix only: hand loop (anchor)",
    }
    for variant, (color, ls, marker) in styles.items():
        xs = [n for n in ns if f"{variant}/{n}" in summary]
        if not xs:
            continue
        ys = [summary[f"{variant}/{n}"]["p99_us"] for n in xs]
        ax.plot(xs, ys, color=color, linestyle=ls, marker=marker, label=labels[variant])
    ax.axhline(BUDGET_US, color="tab:orange", linestyle="--", linewidth=1.2)
    ax.text(ns[0], BUDGET_US * 1.06, f"target: 5 % of the block period = {BUDGET_US:.0f} µs", fontsize=8)
    ax.axhline(PERIOD_US, color="grey", linestyle="-.", linewidth=1)
    ax.text(ns[0], PERIOD_US * 1.06, f"block period {PERIOD_US:.0f} µs", fontsize=8)
    ax.scatter([DESIGN_N], [DESIGN_GEMM_US], marker="*", s=120, color="black", zorder=5)
    ax.annotate("DESIGN.md: GEMM N=128 ~110 µs per block", (DESIGN_N, DESIGN_GEMM_US), fontsize=8,
                xytext=(-150, -18), textcoords="offset points")  # fmt: skip
    ax.axvline(TARGET_N, color="tab:orange", linewidth=0.6, alpha=0.5)
    ax.set_yscale("log")
    ax.set_xticks(list(ns))
    ax.set_xlabel("N (inputs = listeners; G is 2N x N, 120-frame blocks)")
    ax.set_ylabel("p99 time per tick (µs, one core)")
    ax.set_title(
        f"Live-jam mix tick, p99 over {main['ticks']} ticks (median of {main['repeats']} repeats)\n"
        f"BLAS environment '{main['blas_env']}': OpenBLAS kernel {main['blas'].get('corename', '?')}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Live-jam mix tick benchmark: N personal mixes (one GEMM) + a limiter per listener.",
        epilog=f"Target: N={TARGET_N} within 5 %% of the 2.5 ms block period at p99 on one core.",
    )
    parser.add_argument("--ns", default=",".join(map(str, DEFAULT_NS)), help="participant counts")
    parser.add_argument("--ticks", type=int, default=4000, help="measured ticks per run (default 4000)")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured ticks first (default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument(
        "--change-every", type=int, default=20, help="gains change (ramped tick) every K ticks (default 20)"
    )
    parser.add_argument("--variants", default=",".join((*MIX_VARIANTS, *TICK_VARIANTS)))
    parser.add_argument(
        "--blas-envs",
        default=",".join(BLAS_ENVS),
        help="comma-separated: as-is (environment unchanged), unset (OPENBLAS_CORETYPE and "
        "OPENBLAS_L2_SIZE removed), coretype=NAME (forced); the last one gives the verdict",
    )
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the highest allowed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke test: N=8,64, 500 ticks, 1 repeat")
    parser.add_argument(
        "--json", nargs="?", type=Path, const=RESULTS_DIR / "mix_tick.json", help="write results as JSON"
    )
    parser.add_argument(
        "--plot", nargs="?", type=Path, const=RESULTS_DIR / "mix_tick.png", help="p99 vs N plot (PNG)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.ns, args.ticks, args.warmup, args.repeats = "8,64", 500, 100, 1
    try:
        args.n_list = [int(n) for n in args.ns.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--ns: expected comma-separated integers, got {args.ns!r}")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variant_list) - set(MIX_VARIANTS) - set(TICK_VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
    args.blas_env_list = [v.strip() for v in args.blas_envs.split(",") if v.strip()]
    for env in args.blas_env_list:
        if env not in BLAS_ENVS and not env.startswith("coretype="):
            parser.error(f"--blas-envs: unknown {env!r}")
    if args.cpu is None:
        args.cpu = max(os.sched_getaffinity(0))
    if min(args.ticks, args.repeats, args.change_every) <= 0 or args.warmup < 0 or not args.n_list:
        parser.error("--ticks, --repeats, --change-every and --ns must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_worker":
        return worker_main(argv[1:])
    args = parse_args(argv)
    info = machine_info()
    print(
        f"mix tick: N={args.n_list}, {args.ticks} ticks (+{args.warmup} warm-up) x {args.repeats} repeat(s), "
        f"{BLOCK}-frame blocks ({PERIOD_US:.0f} µs), gains change every {args.change_every} ticks; "
        f"pinned to CPU {args.cpu} of {info['nproc']} ({info['cpu_model']}), load {info['loadavg_at_start']}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for blas_env in args.blas_env_list:
        print(f"\n== BLAS environment: {blas_env}", flush=True)
        try:
            result = run_worker(blas_env, args)
        except RuntimeError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 1
        result["ticks"] = args.ticks
        result["repeats"] = args.repeats
        result["summary"] = summarise(result["runs"])
        result["anchors"] = anchors(result["summary"], args.n_list)
        results.append(result)
    for result in results:
        summary = result["summary"]
        print(f"\n=== BLAS environment '{result['blas_env']}': {blas_label(result)}")
        print(f"Mix kernel alone, µs per tick (medians of {args.repeats}):")
        print(mix_table(summary, args.n_list))
        print(f"\nWhole tick (mix + limiter per listener), gains ramped every {args.change_every} ticks:")
        print(tick_table(summary, args.n_list, args.variant_list))
        a = result["anchors"]
        if "design_over_measured" in a:
            print(
                f"\nDESIGN.md anchor, GEMM N={DESIGN_N}: {a['measured_gemm_us']:.1f} µs measured (p50) vs "
                f"~{DESIGN_GEMM_US:.0f} µs: {a['design_over_measured']:.2f}x the design figure's speed"
            )
        if a["hand_over_gemm"]:
            ratios = ", ".join(f"N={n}: {r:.1f}x" for n, r in a["hand_over_gemm"].items())
            print(
                f"hand loop / GEMM (mix alone, p50; claim {HAND_CLAIM[0]:.0f}-{HAND_CLAIM[1]:.0f}x): {ratios}"
            )
        if a["hand_tick_over_tick"]:
            ratios = ", ".join(f"N={n}: {r:.2f}x" for n, r in a["hand_tick_over_tick"].items())
            print(f"hand-loop tick / GEMM tick (sample-peak limiters, p50): {ratios}")
        for line in verdicts(summary):
            print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": {
                "ns": args.n_list,
                "ticks": args.ticks,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "change_every": args.change_every,
                "block": BLOCK,
                "sample_rate": SAMPLE_RATE,
                "period_us": PERIOD_US,
                "budget_us": BUDGET_US,
                "variants": args.variant_list,
                "blas_envs": args.blas_env_list,
            },
            "machine": info,
            "code": code_state("realtime", key="realtime_modified"),
            "results": results,
            "verdict_env": results[-1]["blas_env"],
            "verdicts": verdicts(results[-1]["summary"]),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.n_list, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
