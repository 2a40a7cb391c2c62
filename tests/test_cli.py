"""`escenario` command line: option validation fails fast with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from realtime.config import Settings, settings_from_env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cupy_backend_without_a_gpu_refuses_to_start(tmp_path: object) -> None:
    done = run_cli("serve", "--dsp-backend", "cupy", "--port", "1", "--data-dir", str(tmp_path))
    assert done.returncode != 0
    assert "cupy DSP backend is unavailable" in done.stderr


def test_bad_environment_value_is_a_clear_error(tmp_path: object) -> None:
    done = run_cli("serve", "--data-dir", str(tmp_path), env={"ESCENARIO_PORT": "eighty"})
    assert done.returncode == 2
    assert "ESCENARIO_PORT='eighty' is not a valid int" in done.stderr


def test_environment_overlays_defaults_and_flags_win() -> None:
    env = {"ESCENARIO_PORT": "9001", "ESCENARIO_COOKIE_SECURE": "true", "ESCENARIO_SYNC_BATCH_WINDOW_MS": "0"}
    settings = settings_from_env(env)
    assert (settings.port, settings.cookie_secure, settings.sync_batch_window_ms) == (9001, True, 0.0)
    assert settings.replace(port=9002, host=None).port == 9002
    assert settings.replace(host=None).host == Settings().host


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_booleans_are_strict(value: str) -> None:
    with pytest.raises(ValueError, match="ESCENARIO_COOKIE_SECURE"):
        settings_from_env({"ESCENARIO_COOKIE_SECURE": value})
