"""Live-jam capacity: server CPU per participant, tick timing and server-added latency against N.

For every N, a fresh ``escenario serve`` process (its own data directory, SQLite, CPU DSP) and a
load generator in its own process (``benchmarks/_jam_load.py``): N WebSocket participants on
loopback, each sending 2.5 ms stereo Opus frames at 128 kbit/s on an absolute schedule and
reading its personal mix. Measured over the window after the warm-up:

- server CPU (utime + stime of the server process, all threads) per second, and per participant;
- the jam engine's own figures from ``GET /api/sessions/{id}/jam/stats``: tick duration p50/p99/max
  as a fraction of the 2.5 ms period, deadline misses, server-added latency p50/p99 (arrival of a
  frame to the departure of the first mix that contains it), jitter-buffer depth;
- a click sent by participant 0 once a second and found by participant 1 in its decoded mix:
  the same latency seen from a client. It also holds two Opus algorithmic delays (the
  client's encoder and the server's, 2.5 ms each), loopback and the generator's scheduling,
  so the table shows it with the two codec delays taken off as the cross-check;
- delivery: mixed frames per second received by the mean and the worst participant, and the
  worst single second (a starved client shows up here), the server's RSS;
- where the server's CPU went: the tick thread against the event loop's thread.

The engine's counters and histograms are read at the start and at the end of the measured
window and subtracted (``latencyBins`` and ``engine.bins`` of the stats endpoint), so start-up
(connecting N sockets, the jitter buffers' first seconds) is not in the figures.

The anchor, in the same run: the Jamulus 3.9.1 server (Debian package ``jamulus``) driven by
``../shared/anchors/jamulus/measure.sh`` (its own UDP load generator with real Opus frames,
128-sample blocks, single-threaded server) at N = 16, 32, 48. Jamulus ticks at 128 samples
(375 packets/s) where we tick at 120 (400 packets/s), so the table gives both the CPU per
participant and the CPU per participant-packet; the ratio uses CPU per participant, the
issue's target (≤ 1.0 at N = 16, 32, 48), which handicaps us by 400/375.

Both servers share the machine's 2 cores with their load generators; the ``gen`` column says
how much the generator took. Where delivery fails, the table says whether the generator or
the server ran out of CPU.

Usage:
    python benchmarks/jam_capacity.py                          # N = 8…128, 60 s each, + Jamulus
    python benchmarks/jam_capacity.py --ns 8,16 --duration 15 --no-anchor   # quick look
    python benchmarks/jam_capacity.py --json --plot            # writes benchmarks/results/jam_capacity.*
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, code_state, machine_info
from benchmarks._jam_server import Server, setup_session
from benchmarks._jam_server import http_json as _http

ANCHOR_DIR = ROOT.parent / "shared" / "anchors" / "jamulus"
PER_USER = 32  # participants per account (the per-user connection cap is well above this)


def _realtime(pid: int, priority: int = 10) -> int:
    """SCHED_FIFO for every thread of ``pid`` (as a deployment would grant the server); the count set."""
    done = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(priority))
                done += 1
    return done


class _RealtimeWatch:
    """Gives every process named ``name`` real-time threads while it runs (the Jamulus anchor)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._stop = threading.Event()
        self._seen: set[int] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in self._seen:
                    continue
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{entry}/comm").read_text().strip() == self._name:
                        time.sleep(1.0)  # let it start its threads
                        if _realtime(int(entry)):
                            self._seen.add(int(entry))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return len(self._seen)


def run_ours(n: int, duration: float, warmup: float, realtime: bool = False) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"jam-bench-{n}-"))
    server = Server(data_dir)
    try:
        sid, tokens = setup_session(server.base, n, per_user=PER_USER, title=f"jam {n}")
        gen = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "_jam_load.py"),
                "--port",
                str(server.port),
                f"--session={sid}",
                # "=" form: a token may start with "-", which argparse would take for an option.
                f"--tokens={','.join(tokens)}",
                "-n",
                str(n),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--server-pid",
                str(server.proc.pid),
                "--click",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert gen.stdout is not None
        line = gen.stdout.readline()
        if line.strip() != "STREAMING":
            gen.wait()
            tail = gen.stderr.read()[-1500:] if gen.stderr else ""
            raise RuntimeError(f"load generator failed: {line}{tail}")
        stats_url = server.base + f"/api/sessions/{sid}/jam/stats"
        print(f"  server pid {server.proc.pid}", file=sys.stderr, flush=True)
        if realtime:
            print(f"  real-time threads: {_realtime(server.proc.pid)}", file=sys.stderr, flush=True)
        time.sleep(warmup)
        before = _http("GET", stats_url, token=tokens[0])
        steal0, t0 = _steal_s(), time.monotonic()
        time.sleep(max(1.0, duration - warmup - 1.5))
        steal1, t1 = _steal_s(), time.monotonic()
        after = _http("GET", stats_url, token=tokens[0])
        out, err = gen.communicate(timeout=120)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator exited {gen.returncode}: {err[-2000:]}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        result["engine"] = _engine_figures(before, after)
        if steal0 is not None and steal1 is not None:
            result["steal_pct"] = 100 * (steal1 - steal0) / ((t1 - t0) * (os.cpu_count() or 1))
        return result
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _steal_s() -> float | None:
    """CPU seconds the hypervisor gave to other guests so far (all vCPUs): on a shared host the
    misses a guest cannot prevent, reported beside them."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _window(before: dict[str, Any], after: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
    """A histogram of what happened between two ``bins_json`` readings, as ``snapshot()`` (ms).

    ``whole``: the snapshot since the start, used when the server has no bins (an older build).
    """
    from realtime.jam.stats import LogHistogram

    if "counts" not in after:
        return {**whole, "since_start": True}

    counts = {k: v - int(before.get("counts", {}).get(k, 0)) for k, v in after.get("counts", {}).items()}
    return LogHistogram.from_bins({**after, "counts": {k: v for k, v in counts.items() if v > 0}}).snapshot()


def _engine_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The engine figures over the window between two ``GET /api/sessions/{id}/jam/stats`` readings."""
    e0, e1 = before.get("engine", {}), after.get("engine", {})
    bins0, bins1 = e0.get("bins", {}), e1.get("bins", {})
    latency = _window(before.get("latencyBins", {}), after.get("latencyBins", {}), after.get("latencyMs", {}))
    participants = after.get("participants", [])
    inbound = [p["in"] for p in participants if isinstance(p.get("in"), dict) and "depth" in p["in"]]
    depths = sorted(i["depth"] for i in inbound)
    concealed0 = {p["id"]: p["in"].get("concealed", 0) for p in before.get("participants", []) if "in" in p}
    return {
        "tick_ms": _window(bins0.get("tick", {}), bins1.get("tick", {}), e1.get("tickMs", {})),
        "lateness_ms": _window(
            bins0.get("lateness", {}), bins1.get("lateness", {}), e1.get("latenessMs", {})
        ),
        "delivery_ms": _window(
            bins0.get("delivery", {}), bins1.get("delivery", {}), e1.get("deliveryMs", {})
        ),
        "beyond_ms": _window(bins0.get("beyond", {}), bins1.get("beyond", {}), e1.get("beyondDepthMs", {})),
        "deadline_misses": e1.get("deadlineMisses", 0) - e0.get("deadlineMisses", 0),
        "skipped_ticks": e1.get("skippedTicks", 0) - e0.get("skippedTicks", 0),
        "ticks": e1.get("ticks", 0) - e0.get("ticks", 0),
        "limiter_ms": e1.get("limiterMs"),
        "tick_thread_id": e1.get("threadId"),
        "latency_ms": latency,
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"),
        "depth_median_blocks": depths[len(depths) // 2] if depths else None,
        "depth_max_blocks": depths[-1] if depths else None,
        "concealed": sum(
            (p["in"].get("concealed", 0) or 0) - concealed0.get(p["id"], 0)
            for p in participants
            if isinstance(p.get("in"), dict)
        ),
        "run_totals": {"deadline_misses": e1.get("deadlineMisses"), "ticks": e1.get("ticks")},
    }


def _verdict(r: dict[str, Any]) -> str:
    """ok, or what failed and whose CPU ran out: the server's or the load generator's."""
    expected = r["expected_pps"]
    flowing = r["rx_pps_min"] >= 0.97 * expected and r["worst_client_second"] >= 0.9 * expected
    generator_short = (
        r.get("gen_skipped_ticks", 0) > 0
        or r.get("gen_late_ticks", 0) > 0.01 * expected * r.get("window_s", 1.0)
        or r.get("gen_cpu_per_s", 0.0) > 0.9
    )
    misses = r.get("engine", {}).get("deadline_misses") or 0
    if flowing and not misses:
        return "ok"
    what = "misses" if flowing else "starved"
    return f"{what}:{'gen' if generator_short else 'server'}"


def run_jamulus(
    ns: list[int], duration: float, warmup: float, realtime: bool = False
) -> dict[int, dict[str, Any]]:
    if not shutil.which("Jamulus"):
        print(
            "Jamulus not installed (apt-get install -y jamulus libopus0); skipping the anchor",
            file=sys.stderr,
        )
        return {}
    out_dir = Path(tempfile.mkdtemp(prefix="jamulus-anchor-"))
    env = dict(
        os.environ,
        NS=" ".join(map(str, ns)),
        MODES="single",
        DUR=str(int(duration)),
        WARM=str(int(warmup)),
        OUT=str(out_dir),
    )
    watch = _RealtimeWatch("Jamulus") if realtime else None
    subprocess.run(
        ["bash", str(ANCHOR_DIR / "measure.sh")],
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if watch is not None:
        print(f"  Jamulus servers given real-time threads: {watch.stop()}", file=sys.stderr)
    results = {}
    for n in ns:
        path = out_dir / f"single-{n}.json"
        if path.exists():
            results[n] = json.loads(path.read_text())
    (out_dir / "results.txt").exists() and print((out_dir / "results.txt").read_text(), file=sys.stderr)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="8,16,32,64,96,128")
    ap.add_argument("--anchor-ns", default="16,32,48")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--no-anchor", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="run both servers' threads SCHED_FIFO (needs root): what a deployment does on a shared machine",
    )
    ap.add_argument(
        "--cpu-latency-us",
        type=int,
        default=-1,
        help="hold a PM QoS request (/dev/cpu_dma_latency, needs root) for the whole run, so both "
        "servers and the generators run with idle CPUs that wake within this many µs "
        "(the server's ESCENARIO_JAM_CPU_LATENCY_US; -1: off)",
    )
    args = ap.parse_args()
    if args.cpu_latency_us >= 0:
        # Held here, not by our server, so that Jamulus's run gets the same idle policy.
        from realtime.jam.scheduling import hold_cpu_latency

        cpu_hold = hold_cpu_latency(args.cpu_latency_us)
        if cpu_hold is None:
            sys.exit("could not hold the CPU wake-up latency (needs root on Linux)")
        print(f"holding the CPUs' wake-up latency at {args.cpu_latency_us} µs for the run", file=sys.stderr)
    ns = [int(x) for x in args.ns.split(",") if x]
    anchor_ns = [int(x) for x in args.anchor_ns.split(",") if x]
    # Our N list must cover the anchor's points so ratios compare like with like.
    ours_ns = sorted(set(ns) | (set(anchor_ns) if not args.no_anchor else set()))

    ours: dict[int, dict[str, Any]] = {}
    anchor: dict[int, dict[str, Any]] = {}
    for n in ours_ns:
        print(f"escenario N={n} …", file=sys.stderr, flush=True)
        try:
            ours[n] = run_ours(n, args.duration, args.warmup, args.realtime)
        except Exception as exc:  # one failed N must not lose the others
            ours[n] = {"n": n, "error": str(exc)}
        if not args.no_anchor and n in anchor_ns:
            # Right after ours at the same N: a shared machine's load drifts over a long run.
            print(f"Jamulus N={n} …", file=sys.stderr, flush=True)
            anchor.update(run_jamulus([n], args.duration, args.warmup, args.realtime))

    period_ms = 2.5
    head = (
        f"{'N':>4} {'cpu/s':>6} {'%/cli':>6} {'µs/pkt':>7} {'tick%':>6} {'loop%':>6} "
        f"{'tick p50':>8} {'p99':>6} {'max':>6} {'miss':>5} {'lat p50':>7} {'p99':>6} {'bound':>6} "
        f"{'beyond':>6} {'click':>6} {'depth':>5} {'rx/s':>6} {'worst':>5} {'gen':>5} {'RSS':>5} "
        f"{'steal%':>6} {'verdict':>14} | {'Jamulus %/cli':>13} {'ratio':>6}"
    )
    print(head)
    rows = []
    for n in ours_ns:
        r = ours[n]
        if "error" in r:
            print(f"{n:>4} failed: {r['error'][-1500:]}")
            rows.append(r)
            continue
        eng = r.get("engine", {})
        tick = eng.get("tick_ms", {})
        pct = r.get("server_cpu_pct_per_client", float("nan"))
        us_pkt = pct / 100 / r["expected_pps"] * 1e6
        threads = r.get("server_threads_cpu_per_s", {})
        tick_tid = str(eng.get("tick_thread_id"))
        tick_pct = 100 * threads.get(tick_tid, 0.0) / n
        loop_pct = 100 * sum(v for k, v in threads.items() if k != tick_tid) / n
        ja = anchor.get(n)
        ja_pct = ja.get("server_cpu_pct_per_client") if ja else None
        ratio = pct / ja_pct if ja_pct else None
        # Per packet: Jamulus ticks 375 times a second, we tick 400.
        ratio_pkt = (pct / r["expected_pps"]) / (ja_pct / ja["expected_pps"]) if ja_pct and ja else None
        click = r.get("click_latency_ms", {})
        codec = r.get("codec_delay_ms", 0.0)
        click_net = click.get("p50") - 2 * codec if isinstance(click.get("p50"), int | float) else None
        depth = eng.get("depth_median_blocks")
        bound = (depth + 1) * period_ms if isinstance(depth, int | float) else None
        lat99 = eng.get("latency_p99_ms")
        # The bound frame by frame: each frame's latency beyond the depth its jitter
        # buffer held it for, p99 ≤ one block. (`bound` uses the median depth at the window's
        # end, which misreads a depth that moved during the window.)
        beyond99 = eng.get("beyond_ms", {}).get("p99")
        verdict = _verdict(r)
        if isinstance(beyond99, int | float) and beyond99 > period_ms:
            verdict += "+lat"

        def f(x: Any, fmt: str = "{:6.2f}") -> str:
            return fmt.format(x) if isinstance(x, int | float) else "   n/a"

        print(
            f"{n:>4} {r.get('server_cpu_per_s', 0):6.3f} {pct:6.3f} {us_pkt:7.1f} "
            f"{tick_pct:6.3f} {loop_pct:6.3f} "
            f"{f(_frac(tick.get('p50'), period_ms), '{:8.3f}')} "
            f"{f(_frac(tick.get('p99'), period_ms), '{:6.3f}')} "
            f"{f(_frac(tick.get('max'), period_ms), '{:6.3f}')} {eng.get('deadline_misses', 'n/a')!s:>5} "
            f"{f(eng.get('latency_p50_ms'), '{:7.2f}')} {f(lat99)} {f(bound)} {f(beyond99)} {f(click_net)} "
            f"{f(depth, '{:5.1f}')} {r['rx_pps_mean']:6.1f} {r['worst_client_second']:>5} "
            f"{r['gen_cpu_per_s']:5.2f} {r.get('server_rss_mib', float('nan')):5.0f} "
            f"{f(r.get('steal_pct'))} {verdict:>14} | "
            f"{f(ja_pct, '{:13.3f}')} {f(ratio)}"
        )
        rows.append(
            {
                **r,
                "jamulus": ja,
                "ratio_cpu_per_participant": ratio,
                "ratio_cpu_per_packet": ratio_pkt,
                "latency_bound_ms": bound,
                "latency_beyond_depth_p99_ms": beyond99,
                "click_minus_codec_ms": click_net,
                "verdict": verdict,
            }
        )
    print(
        "tick%/loop%: % of a core per participant on the tick thread / everywhere else; tick columns are\n"
        "fractions of the 2.5 ms period, measured window only; lat = server-added latency (ms, limiter\n"
        "look-ahead included); bound = (median jitter depth at the end + 1 block) in ms; beyond = p99 of\n"
        "each frame's latency minus the jitter depth it was held for, the target (≤ 1 block = 2.5 ms);\n"
        "click = client-measured p50 minus the two Opus codec delays (ms); verdict: ok, or misses/starved\n"
        "with whose CPU ran out (gen = load generator), +lat when beyond > 1 block; steal% = the\n"
        "hypervisor's steal time over the window (% of all vCPUs): misses it causes no guest prevents"
    )
    result = {
        "benchmark": "jam_capacity",
        "machine": machine_info(),
        "code": code_state("realtime", "benchmarks"),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "realtime": args.realtime,
        "cpu_latency_us": args.cpu_latency_us,
        "rows": rows,
        "jamulus": {str(k): v for k, v in anchor.items()},
    }
    results_dir = ROOT / "benchmarks" / "results"
    if args.json:
        results_dir.mkdir(exist_ok=True)
        (results_dir / "jam_capacity.json").write_text(json.dumps(result, indent=2))
    if args.plot:
        _plot(rows, anchor, results_dir / "jam_capacity.png")


def _frac(ms: Any, period_ms: float) -> float | None:
    return ms / period_ms if isinstance(ms, int | float) else None


def _plot(rows: list[dict[str, Any]], anchor: dict[int, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot([r["n"] for r in ok], [r.get("server_cpu_pct_per_client") for r in ok], "o-", label="Escenario")
    if anchor:
        ks = sorted(anchor)
        a1.plot(ks, [anchor[k].get("server_cpu_pct_per_client") for k in ks], "s--", label="Jamulus 3.9.1")
    a1.set_xlabel("participants")
    a1.set_ylabel("server CPU per participant (% of a core)")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(
        [r["n"] for r in ok],
        [r.get("engine", {}).get("latency_p99_ms") for r in ok],
        "o-",
        label="server-added latency p99 (all participants)",
    )
    a2.plot(
        [r["n"] for r in ok],
        [r.get("latency_beyond_depth_p99_ms") for r in ok],
        "d-",
        label="beyond each frame's jitter depth (p99)",
    )
    a2.axhline(2.5, color="k", linestyle=":", label="target for 'beyond': one block")
    a2.plot(
        [r["n"] for r in ok],
        [r.get("click_minus_codec_ms") for r in ok],
        "^-",
        label="click at a client, less the two codec delays (p50)",
    )
    a2.set_xlabel("participants")
    a2.set_ylabel("ms")
    a2.legend()
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
