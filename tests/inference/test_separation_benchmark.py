"""benchmarks/separation.py --quick: the CPU benchmark's whole path with the tiny model.

The pool separates two short tracks (its stems are checked: four per track, the source's
length, not silent) while a real `escenario serve` runs a jam and a sync fan-out probe, and
demucs' own `Separator` separates the same tracks under the same live load. Timings are
reported, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_separation_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "separation.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "separation.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout
    assert "ratio pool/demucs" in done.stdout
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["model"] == "tiny_random"
    assert 300_000 < summary["params"] < 450_000
    for key in ("pool_audio_s_per_s", "demucs_audio_s_per_s", "ratio"):
        assert summary[key] > 0
    (run,) = report["runs"]
    assert run["order"] == ["pool", "demucs"]
    pool = run["pool"]
    # the server's default: automatic threads, every core for a SCHED_IDLE CPU worker
    assert pool["worker_threads"] == (os.cpu_count() or 1)
    assert [j["job"] for j in pool["jobs"]] == ["job0", "job1"]
    assert all(j["peak_rss_mib"] > pool["worker_idle_rss_mib"] * 0.5 for j in pool["jobs"])
    assert run["demucs"]["torch_threads"] >= 1
    assert len(run["demucs"]["job_s"]) == 2
    # the realtime load really ran during the pool's run and was measured
    assert pool["jam"]["participants_seen"] == 4
    assert pool["jam"]["ticks"] > 0
    assert pool["sync"]["rounds"] >= 1
    assert pool["sync"]["delivered"] > 0
    assert "control" in pool
    # demucs ran under the same live load (like for like), measured the same way, no control
    demucs = run["demucs"]
    assert demucs["jam"]["participants_seen"] == 4
    assert demucs["jam"]["ticks"] > 0
    assert demucs["sync"]["rounds"] >= 1
    assert "control" not in demucs
    assert "demucs_jam_deadline_misses" in summary
