"""What every benchmark records next to its figures: the machine and the code measured."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": load,
    }


def code_state(*paths: str, key: str = "modified") -> dict[str, Any]:
    """The commit measured, and the uncommitted edits under `paths` (code that differed from it)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", *paths)
    return {"commit": git("rev-parse", "HEAD").strip(), key: dirty.splitlines()}
