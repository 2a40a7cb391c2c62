"""What the jam benchmarks share: a fresh ``escenario serve`` and a session of editor accounts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


class Server:
    """``escenario serve`` on a free port with its own data directory, healthy on return."""

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        # The code of the checkout this benchmark belongs to, whatever the venv's editable
        # install points at (so an older copy of the tree can be measured as a baseline).
        full_env = dict(os.environ, ESCENARIO_LOG_LEVEL="warning", PYTHONPATH=str(ROOT), **(env or {}))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "realtime.cli", "serve"),
                *("--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir)),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                http_json("GET", self.base + "/healthz")
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def setup_session(base: str, n: int, *, per_user: int, title: str) -> tuple[str, list[str]]:
    """A session with ``ceil(n / per_user)`` editor accounts: its id and one token per client."""
    users = max(1, -(-n // per_user))
    tokens, emails = [], []
    for u in range(users):
        email = f"player{u}@bench.test"
        out = http_json(
            "POST",
            base + "/api/auth/signup",
            {"email": email, "password": "correct horse battery staple", "name": f"P{u}"},
        )
        tokens.append(out["token"])
        emails.append(email)
    session = http_json("POST", base + "/api/sessions", {"title": title}, tokens[0])
    for email in emails[1:]:
        http_json(
            "POST",
            base + f"/api/sessions/{session['id']}/members",
            {"email": email, "role": "editor"},
            tokens[0],
        )
    return str(session["id"]), [tokens[i // per_user] for i in range(n)]
