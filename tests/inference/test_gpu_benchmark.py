"""benchmarks/gpu_separation.sh --dry-run: the GPU benchmark's code path, on the CPU with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_dry_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_separation.sh"), "--dry-run", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "max |diff|" in done.stdout
    report = json.loads((tmp_path / "gpu_separation_dryrun.json").read_text())
    assert report["dry_run"] is True
    rows = {(r["path"], r["precision"], r["max_batch"]): r for r in report["results"]}
    expected = {("apply_model", "ieee", 1), ("apply_model", "default", 1)} | {
        ("batched", d, b) for d in ("fp32", "tf32", "bf16") for b in (1, 4)
    }
    assert set(rows) == expected
    assert rows["apply_model", "default", 1]["vs_apply_model"] == 1.0
    for key, row in rows.items():
        assert row["audio_s_per_s"] > 0
        if key[0] == "batched":
            assert row["first_block_s"] > 0
            # two 0.5 s jobs of one 1 s segment each: two passes at batch 1, one at batch 4
            assert row["forward_passes"] == (2 if key[2] == 1 else 1)
            bound = 1e-2 if key[1] == "bf16" else 1e-5
            assert row["max_abs_diff"] < bound, key
