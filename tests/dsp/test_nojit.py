"""STYLE.md §6: the kernels also run as plain Python (``NUMBA_DISABLE_JIT=1``) and agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_pure_python_kernels_match_compiled(tmp_path: Path) -> None:
    """The whole pipeline with NUMBA_DISABLE_JIT=1 (plain Python kernels) equals the compiled run."""
    from ._pipeline import run_all

    target = tmp_path / "nojit.npz"
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "tests.dsp._pipeline", str(target)], cwd=root, env=env, check=True)
    compiled = run_all()
    with np.load(target) as plain:
        assert sorted(plain.files) == sorted(compiled)
        for name, value in compiled.items():
            np.testing.assert_allclose(plain[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
