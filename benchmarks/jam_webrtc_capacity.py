"""Live-jam capacity over WebRTC: N aiortc participants through the real WHIP endpoint.

For every N (default 4, 8, 16), a fresh ``escenario serve`` process (its own data directory,
SQLite) and load generators in their own processes (``benchmarks/_jam_load_webrtc.py``, one per
``--per-gen`` clients, so no single generator event loop is what saturates). Every client joins
one session's jam with ``POST /api/sessions/{id}/jam/webrtc`` and streams 2.5 ms stereo Opus at
128 kbit/s, pre-encoded, on an absolute schedule: over RTP (``--path rtp``, the default; aiortc's
20 ms encoder is bypassed on the client too) or as jam frames on the unordered ``jam-audio``
DataChannel (``--path datachannel``). Mixes are counted as they arrive.

Measured over the window from ``warmup`` after every generator started to the end:

- server CPU (utime + stime of the server process, all threads) per participant, split into the
  tick thread and everything else (aiortc's event loop: SRTP, SCTP, RTP parse and packetize);
- the engine's figures from ``GET /api/sessions/{id}/jam/stats``, read at both ends of the window
  and subtracted: tick duration p50/p99/max as a fraction of the 2.5 ms period, deadline misses,
  server-added latency p50/p99 (a frame's arrival to the departure of the first mix holding it),
  median jitter-buffer depth;
- mixes (2.5 ms blocks) received per second per client, mean and worst, and the worst single
  second of any client;
- the generators' CPU (sum over processes) and their late/skipped send ticks.

The issue's target: 16 participants with server-added latency p99 ≤ 10 ms. The generators share
the machine's cores with the server; the verdict column says whose CPU ran out when delivery fails.

Usage:
    python benchmarks/jam_webrtc_capacity.py                       # N = 4, 8, 16, 30 s each, RTP
    python benchmarks/jam_webrtc_capacity.py --path datachannel    # jam frames on jam-audio
    python benchmarks/jam_webrtc_capacity.py --ns 4 --duration 10  # quick look
    python benchmarks/jam_webrtc_capacity.py --json --plot         # results/jam_webrtc_capacity.*
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, code_state, machine_info
from benchmarks._jam_server import Server, setup_session
from benchmarks._jam_server import http_json as _http

RESULTS_DIR = ROOT / "benchmarks" / "results"
GENERATOR = ROOT / "benchmarks" / "_jam_load_webrtc.py"
PER_USER = 4  # clients per account (the server caps WebRTC peers per user at 8 by default)
PERIOD_MS = 2.5
TARGET_P99_MS = 10.0
TARGET_N = 16


# ----------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, by thread id."""
    out: dict[str, float] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[tid] = (int(fields[11]) + int(fields[12])) / tck
    return out


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, all cores; wall seconds) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tck = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tck, time.monotonic()


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------------------
# Engine figures over a window (two stats readings subtracted)


def _window(before: dict[str, Any], after: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
    """A histogram of what happened between two ``bins_json`` readings, as ``snapshot()`` (ms)."""
    from realtime.jam.stats import LogHistogram

    if "counts" not in after:
        return {**whole, "since_start": True}
    counts = {k: v - int(before.get("counts", {}).get(k, 0)) for k, v in after.get("counts", {}).items()}
    return LogHistogram.from_bins({**after, "counts": {k: v for k, v in counts.items() if v > 0}}).snapshot()


def engine_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    e0, e1 = before.get("engine", {}), after.get("engine", {})
    if not after.get("participants") or e1.get("ticks", 0) < e0.get("ticks", 0):
        # Everyone left before the second reading: the jam ended (its engine may even have been
        # replaced), so there is no window to subtract.
        return {
            "participants": len(after.get("participants", [])),
            "participants_before": len(before.get("participants", [])),
            "jam_ended": True,
        }
    bins0, bins1 = e0.get("bins", {}), e1.get("bins", {})
    latency = _window(before.get("latencyBins", {}), after.get("latencyBins", {}), after.get("latencyMs", {}))
    participants = after.get("participants", [])
    inbound = [p["in"] for p in participants if isinstance(p.get("in"), dict) and "depth" in p["in"]]
    depths = sorted(i["depth"] for i in inbound)
    concealed0 = {p["id"]: p["in"].get("concealed", 0) for p in before.get("participants", []) if "in" in p}
    return {
        "participants": len(participants),
        "participants_before": len(before.get("participants", [])),
        "tick_ms": _window(bins0.get("tick", {}), bins1.get("tick", {}), e1.get("tickMs", {})),
        "deadline_misses": e1.get("deadlineMisses", 0) - e0.get("deadlineMisses", 0),
        "skipped_ticks": e1.get("skippedTicks", 0) - e0.get("skippedTicks", 0),
        "ticks": e1.get("ticks", 0) - e0.get("ticks", 0),
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
    }


# ----------------------------------------------------------------------------------------------
# One N


def _spawn(
    server: Server,
    sid: str,
    tokens: list[str],
    first: int,
    count: int,
    args: argparse.Namespace,
    log: IO[str],
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        str(GENERATOR),
        "--base",
        server.base,
        "--session",
        sid,
        # "=": a token may begin with "-", which argparse would take for an option
        f"--tokens={','.join(tokens[first : first + count])}",
        "-n",
        str(count),
        "--first",
        str(first),
        "--path",
        args.path,
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    if args.loopback:
        cmd.append("--loopback")
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
    )


def wait_for_quiet(limit_s: float, threshold: float = 0.3) -> float:
    """Wait (at most ``limit_s``) until the rest of the machine uses under ``threshold`` cores over
    two seconds; returns what it used in the last sample. Others' load starves the server and the
    generators alike, so it is waited out where possible and reported where not."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = machine_busy()
        time.sleep(2.0)
        b1, t1 = machine_busy()
        busy = (b1 - b0) / (t1 - t0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(
            f"  the machine is busy ({busy:.2f} cores) before the run: waiting", file=sys.stderr, flush=True
        )


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    others_before = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
    data_dir = Path(tempfile.mkdtemp(prefix=f"jam-webrtc-bench-{n}-"))
    server = Server(
        data_dir, env={"ESCENARIO_JAM_WEBRTC_LOOPBACK_CANDIDATES": "true"} if args.loopback else None
    )
    gens: list[subprocess.Popen[str]] = []
    gen_log = open(data_dir / "generators.log", "w")  # noqa: SIM115 (closed below)
    try:
        sid, tokens = setup_session(server.base, n, per_user=PER_USER, title=f"webrtc jam {n}")
        chunks = [(i, min(args.per_gen, n - i)) for i in range(0, n, args.per_gen)]
        # Generators connect one after another so that ICE gathering and DTLS handshakes of
        # the server (one event loop) are not what times a client out.
        for first, count in chunks:
            gen = _spawn(server, sid, tokens, first, count, args, gen_log)
            gens.append(gen)
            assert gen.stdout is not None
            line = gen.stdout.readline()
            if line.strip() != "READY":
                gen_log.flush()
                tail = (data_dir / "generators.log").read_text()[-2000:]
                raise RuntimeError(f"generator {first}+{count} did not start ({line.strip()!r}): {tail}")
        for gen in gens:
            assert gen.stdin is not None
            gen.stdin.write("GO\n")
            gen.stdin.flush()
        go = time.monotonic()
        stats_url = server.base + f"/api/sessions/{sid}/jam/stats"
        time.sleep(args.warmup)
        before = _http("GET", stats_url, token=tokens[0])
        cpu0, threads0, wall0 = proc_cpu(server.proc.pid), thread_cpu(server.proc.pid), time.monotonic()
        busy0, _ = machine_busy()
        time.sleep(max(1.0, go + args.duration - 1.0 - time.monotonic()))
        cpu1, threads1, wall1 = proc_cpu(server.proc.pid), thread_cpu(server.proc.pid), time.monotonic()
        busy1, _ = machine_busy()
        after = _http("GET", stats_url, token=tokens[0])
        rss = proc_rss_mib(server.proc.pid)
        parts = []
        for gen in gens:
            out, _ = gen.communicate(timeout=120)
            if gen.returncode != 0:
                gen_log.flush()
                tail = (data_dir / "generators.log").read_text()[-2000:]
                raise RuntimeError(f"a generator exited {gen.returncode}: {tail}")
            parts.append(json.loads(out.strip().splitlines()[-1]))
        window = wall1 - wall0
        eng = engine_figures(before, after)
        threads = {
            tid: (threads1.get(tid, 0.0) - threads0.get(tid, 0.0)) / window
            for tid in set(threads0) | set(threads1)
            if threads1.get(tid, 0.0) - threads0.get(tid, 0.0) > 0
        }
        tick_tid = str(eng.get("tick_thread_id"))
        rates = [r for p in parts for r in p["rx_pps"]]
        server_cpu = (cpu1 - cpu0) / window
        gen_cpu = sum(p["gen_cpu_per_s"] for p in parts)
        machine = (busy1 - busy0) / window
        return {
            "n": n,
            "path": args.path,
            "generators": len(gens),
            "window_s": window,
            "expected_pps": parts[0]["expected_pps"],
            "server_cpu_per_s": server_cpu,
            "server_cpu_pct_per_participant": 100 * server_cpu / n,
            "server_tick_thread_pct_per_participant": 100 * threads.get(tick_tid, 0.0) / n,
            "server_other_threads_pct_per_participant": 100
            * sum(v for k, v in threads.items() if k != tick_tid)
            / n,
            "server_rss_mib": rss,
            "rx_pps_mean": sum(rates) / len(rates),
            "rx_pps_min": min(rates),
            "worst_client_second": min(p["worst_client_second"] for p in parts),
            "max_gap_ms": max(p["max_gap_ms"] for p in parts),
            "sent_pps_mean": sum(s for p in parts for s in p["sent_pps"]) / n,
            "gen_cpu_per_s": gen_cpu,
            # Cores busy on the whole machine, and what neither the server nor the generators used
            # (other processes sharing it): a server starved by them is not a server limit.
            "machine_busy_cores": machine,
            "others_cores": max(0.0, machine - server_cpu - gen_cpu),
            "cores": os.cpu_count(),
            "others_cores_before": others_before,
            "gen_cpu_per_s_max_process": max(p["gen_cpu_per_s"] for p in parts),
            "gen_late_ticks": sum(p["gen_late_ticks"] for p in parts),
            "gen_skipped_ticks": sum(p["gen_skipped_ticks"] for p in parts),
            "client_errors": [e for p in parts for e in p["errors"]][:10],
            "clients_not_connected": [c for p in parts for c in p["closed"]],
            "engine": eng,
            "server_peers": peers_summary([snap for p in parts for snap in p.get("server_side", [])]),
            "loadavg_after": Path("/proc/loadavg").read_text().strip(),
        }
    finally:
        for gen in gens:
            if gen.poll() is None:
                gen.kill()
                gen.wait()
        server.stop()
        gen_log.close()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def peers_summary(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of the server's per-peer snapshots: did RTP input pass through as Opus (nothing
    decoded), one block per outbound packet, and what was dropped on the way out."""
    ok = [s for s in snaps if "error" not in s]

    def total(key: str, sub: str | None = None) -> int | None:
        values = [(s.get(sub) if sub else s) for s in ok]
        found = [v.get(key) for v in values if isinstance(v, dict)]
        return sum(int(x) for x in found if isinstance(x, int)) if found else None

    # The snapshot's "rtpIn" is the converter's stats object in some versions and PeerStats'
    # counter in others (the latter overwrites the former): take whichever is there.
    rtp_in = [s.get("rtpIn") for s in ok]
    return {
        "peers": len(snaps),
        "unreadable": len(snaps) - len(ok),
        "audio_paths": sorted({str(s.get("audioPath")) for s in ok}),
        "frames_per_packet": sorted({int(s.get("framesPerPacket", 0)) for s in ok}),
        "rtp_in_packets": sum(
            int(x.get("packets", 0)) if isinstance(x, dict) else int(x or 0) for x in rtp_in
        ),
        "rtp_in_decoded": total("decoded", "rtpIn"),
        "dc_audio_in": total("dcAudioIn"),
        "rtp_out": total("rtpOut"),
        "rtp_out_dropped": total("rtpOutDropped"),
        "dc_audio_out": total("dcAudioOut"),
        "dc_audio_out_dropped": total("dcAudioOutDropped"),
        "not_connected_dropped": total("notConnectedDropped"),
    }


def verdict(r: dict[str, Any]) -> str:
    """ok, or what failed, and whose CPU ran out (the server's or the generators')."""
    expected = r["expected_pps"]
    flowing = r["rx_pps_min"] >= 0.97 * expected and r["worst_client_second"] >= 0.9 * expected
    sent_ok = r["sent_pps_mean"] >= 0.97 * expected
    gen_short = not sent_ok or r["gen_skipped_ticks"] > 0 or r["gen_cpu_per_s_max_process"] > 0.9
    machine_short = r["machine_busy_cores"] > 0.9 * (r["cores"] or 1)
    misses = r["engine"].get("deadline_misses") or 0
    lat99 = r["engine"].get("latency_p99_ms")
    out = "ok" if flowing and not misses else ("misses" if flowing else "starved")
    if out != "ok":
        # A full machine first: then the generators' lateness is a symptom, not the cause.
        out += ":" + ("machine" if machine_short else "gen" if gen_short else "server")
    if isinstance(lat99, int | float) and lat99 > TARGET_P99_MS:
        out += "+lat"
    return out


def _f(x: Any, fmt: str) -> str:
    return fmt.format(x) if isinstance(x, int | float) else "n/a".rjust(len(fmt.format(0.0)))


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'N':>3} {'alive':>5} {'gens':>4} {'srv cpu':>7} {'%/part':>6} {'tick%':>6} {'loop%':>6} "
        f"{'tick p50':>8} {'p99':>6} {'max':>6} {'miss':>5} {'lat p50':>7} {'p99':>6} {'depth':>5} "
        f"{'rx/s':>6} {'min':>6} {'worst s':>7} {'gen cpu':>7} {'late':>5} {'busy':>5} {'other':>5} "
        f"{'verdict':>16}"
    )
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['n']:>3} failed: {r['error'][-1500:]}")
            continue
        eng = r["engine"]
        tick = eng.get("tick_ms", {})

        def frac(ms: Any) -> Any:
            return ms / PERIOD_MS if isinstance(ms, int | float) else None

        print(
            f"{r['n']:>3} {eng.get('participants', 0):>5} {r['generators']:>4} {r['server_cpu_per_s']:7.3f} "
            f"{r['server_cpu_pct_per_participant']:6.2f} {r['server_tick_thread_pct_per_participant']:6.2f} "
            f"{r['server_other_threads_pct_per_participant']:6.2f} {_f(frac(tick.get('p50')), '{:8.3f}')} "
            f"{_f(frac(tick.get('p99')), '{:6.3f}')} {_f(frac(tick.get('max')), '{:6.3f}')} "
            f"{eng.get('deadline_misses', 'n/a')!s:>5} {_f(eng.get('latency_p50_ms'), '{:7.2f}')} "
            f"{_f(eng.get('latency_p99_ms'), '{:6.2f}')} {_f(eng.get('depth_median_blocks'), '{:5.1f}')} "
            f"{r['rx_pps_mean']:6.1f} {r['rx_pps_min']:6.1f} {r['worst_client_second']:>7} "
            f"{r['gen_cpu_per_s']:7.3f} {r['gen_late_ticks']:>5} {r['machine_busy_cores']:5.2f} "
            f"{r['others_cores']:5.2f} {r['verdict']:>16}"
        )
    print(
        "alive: participants still in the jam at the end; srv cpu: server cores busy; %/part: % of a\n"
        "core per participant (tick = the tick thread, loop = every other thread: aiortc, SRTP/SCTP);\n"
        "tick columns: fractions of the 2.5 ms period; lat: server-added latency (ms, engine stats);\n"
        "depth: median jitter-buffer target (blocks); rx/s: mixes (2.5 ms blocks) received per client\n"
        "per second, mean and min over clients (400 expected); worst s: the worst single second of\n"
        "any client; gen cpu: cores used by all generators; late: generator send ticks late by over\n"
        "one period; busy: cores busy machine-wide; other: busy cores used by neither server nor\n"
        "generators; verdict: ok, or misses/starved with whose CPU ran out (machine = over 90 % of\n"
        "all cores busy, gen, server), +lat when "
        f"lat p99 > {TARGET_P99_MS:g} ms"
    )


def target_statement(rows: list[dict[str, Any]]) -> str:
    row = next((r for r in rows if r["n"] == TARGET_N and "error" not in r), None)
    if row is None:
        return f"target (N={TARGET_N}, latency p99 <= {TARGET_P99_MS:g} ms): not measured"
    if row["engine"].get("jam_ended"):
        return (
            f"target (N={TARGET_N}, server-added latency p99 <= {TARGET_P99_MS:g} ms): NOT MET, the jam "
            f"did not last the window (clients: {'; '.join(row['client_errors'][:2]) or 'no reason given'}; "
            f"verdict {row['verdict']})"
        )
    lat99 = row["engine"].get("latency_p99_ms")
    met = isinstance(lat99, int | float) and lat99 <= TARGET_P99_MS
    return (
        f"target (N={TARGET_N}, server-added latency p99 <= {TARGET_P99_MS:g} ms): "
        f"{'MET' if met else 'NOT MET'} (p99 {_f(lat99, '{:.2f}').strip()} ms, "
        f"median jitter depth {row['engine'].get('depth_median_blocks')} blocks, "
        f"deadline misses {row['engine'].get('deadline_misses')}, verdict {row['verdict']})"
    )


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    ns = [r["n"] for r in ok]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(ns, [r["server_cpu_pct_per_participant"] for r in ok], "o-", label="server, all threads")
    a1.plot(ns, [r["server_tick_thread_pct_per_participant"] for r in ok], "s--", label="tick thread")
    a1.plot(ns, [r["server_other_threads_pct_per_participant"] for r in ok], "^--", label="other threads")
    a1.set_xlabel("WebRTC participants")
    a1.set_ylabel("server CPU per participant (% of a core)")
    a1.set_xticks(ns)
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(ns, [r["engine"].get("latency_p99_ms") for r in ok], "o-", label="server-added latency p99")
    a2.plot(ns, [r["engine"].get("latency_p50_ms") for r in ok], "s--", label="p50")
    a2.axhline(TARGET_P99_MS, color="red", linestyle=":", label=f"target p99 at N={TARGET_N}")
    for r in ok:  # a run that lost participants is not a point on the curve: say so on it
        alive = r["engine"].get("participants", r["n"])
        if alive < r["n"]:
            for ax, y in (
                (a1, r["server_cpu_pct_per_participant"]),
                (a2, r["engine"].get("latency_p99_ms")),
            ):
                if isinstance(y, int | float):
                    ax.annotate(f"{alive}/{r['n']} left at the end", (r["n"], y), fontsize=8, color="red")
    a2.set_yscale("log")
    a2.set_xlabel("WebRTC participants")
    a2.set_ylabel("ms")
    a2.set_xticks(ns)
    a2.legend()
    a2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="4,8,16")
    ap.add_argument("--path", choices=("rtp", "datachannel"), default="rtp")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per N, from GO")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds from GO to the measured window")
    ap.add_argument("--per-gen", type=int, default=4, help="clients per load-generator process")
    ap.add_argument("--loopback", action="store_true", help="ICE over 127.0.0.1 (loopback-only hosts)")
    ap.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds to wait for an idle machine before each N"
    )
    ap.add_argument("--keep", action="store_true", help="keep each run's data dir and logs")
    ap.add_argument("--json", action="store_true", help="write results/jam_webrtc_capacity[_PATH].json")
    ap.add_argument("--plot", action="store_true", help="write results/jam_webrtc_capacity[_PATH].png")
    args = ap.parse_args()
    if args.duration <= args.warmup + 2:
        ap.error("--duration must exceed --warmup by more than 2 s")
    if not 1 <= args.per_gen <= 2 * PER_USER:
        ap.error(f"--per-gen must be within 1…{2 * PER_USER}")
    ns = [int(x) for x in args.ns.split(",") if x]
    rows: list[dict[str, Any]] = []
    for n in ns:
        print(f"WebRTC ({args.path}) N={n} …", file=sys.stderr, flush=True)
        try:
            r = run_one(n, args)
            r["verdict"] = verdict(r)
        except Exception as exc:  # one failed N must not lose the others
            traceback.print_exc()
            r = {"n": n, "path": args.path, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(r)
    print_table(rows)
    statement = target_statement(rows)
    print(statement)
    suffix = "" if args.path == "rtp" else f"_{args.path}"
    result = {
        "benchmark": "jam_webrtc_capacity",
        "machine": machine_info(),
        "code": code_state("realtime", "benchmarks"),
        "path": args.path,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "clients_per_generator": args.per_gen,
        "target": statement,
        "rows": rows,
    }
    if args.json:
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / f"jam_webrtc_capacity{suffix}.json").write_text(json.dumps(result, indent=2))
    if args.plot:
        RESULTS_DIR.mkdir(exist_ok=True)
        plot(
            rows,
            RESULTS_DIR / f"jam_webrtc_capacity{suffix}.png",
            f"jam over WebRTC ({args.path}), 2.5 ms blocks",
        )


if __name__ == "__main__":
    main()
