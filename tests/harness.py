"""Test harness: a real server process and real Node yjs/y-websocket clients.

Waits are event-driven: readers push lines into queues and tests block on the event they
need (with a deadline), never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests" / "interop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class ServerProcess:
    """`escenario serve` in a subprocess (its own process group, so SIGKILL is real)."""

    def __init__(self, data_dir: Path, *, database_url: str = "", env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "realtime.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        env = {**os.environ, "ESCENARIO_LOG_FORMAT": "text", **self.extra_env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hook runs."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> bool:
        """SIGTERM and wait; True if the server logged a completed graceful shutdown.

        uvicorn re-raises the captured signal after shutting down, so the exit status is
        -SIGTERM even when everything went well; the log line is the real evidence.
        """
        assert self.proc is not None
        before = self.log_path.read_text().count("escenario stopped")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode in (0, -signal.SIGTERM) and (
            self.log_path.read_text().count("escenario stopped") == before + 1
        )

    def restart(self) -> None:
        self.start()

    # -- API shortcuts ---------------------------------------------------------
    def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.request(method, self.base_url + path, headers=headers, timeout=30, **kw)

    def signup(self, email: str, name: str = "Player", password: str = "correct horse") -> str:
        r = self.api("POST", "/api/auth/signup", json={"email": email, "password": password, "name": name})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def create_session(self, token: str, title: str = "Jam") -> str:
        r = self.api("POST", "/api/sessions", token=token, json={"title": title})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def add_member(self, token: str, session_id: str, email: str, role: str) -> None:
        r = self.api(
            "POST", f"/api/sessions/{session_id}/members", token=token, json={"email": email, "role": role}
        )
        assert r.status_code in (200, 201), r.text


class NodeClient:
    """One `tests/interop/client.mjs` process: a real `yjs` doc behind a real `WebsocketProvider`."""

    def __init__(self, ws_base: str, session_id: str, token: str | None, name: str = "node") -> None:
        self.proc = subprocess.Popen(
            ["node", str(INTEROP / "client.mjs"), ws_base, session_id, token or "", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=INTEROP,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_event(lambda e: e.get("event") == "started")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if "reply" in msg:
                self._replies.put(msg)
            else:
                with self._cond:
                    self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "exited"})
            self._cond.notify_all()

    def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, *, since: int = 0
    ) -> dict[str, Any]:
        """The first event at index >= `since` that matches (waiting for it if needed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[since:]:
                    if predicate(e):
                        return e
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; saw {self.events[-20:]}")
                self._cond.wait(remaining)

    def synced(self, timeout: float = 10.0) -> None:
        self.wait_event(lambda e: e.get("event") == "sync" and e.get("synced") is True, timeout)

    def call(self, cmd: str, timeout: float = 10.0, **kw: Any) -> Any:
        self._next_id += 1
        req = {"cmd": cmd, "rid": self._next_id, **kw}
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            reply = self._replies.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply["reply"] == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"client error: {reply['error']}")
                return reply["result"]

    def eventually(self, cmd: str, predicate: Callable[[Any], bool], timeout: float = 10.0, **kw: Any) -> Any:
        """Poll a query command until its result satisfies the predicate."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.call(cmd, **kw)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd} never satisfied the condition; last result {result!r}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("exit", timeout=2)
                self.proc.wait(3)
            except (AssertionError, queue.Empty, subprocess.TimeoutExpired, BrokenPipeError):
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class PyDocClient:
    """A minimal Python Yjs client over `/sync` (pycrdt + websockets), for tests that edit."""

    def __init__(self, ws_base: str, session_id: str, token: str) -> None:
        import pycrdt
        from websockets.sync.client import connect

        from realtime.session import protocol as p

        self._p = p
        self.doc: Any = pycrdt.Doc()
        self._cm = connect(f"{ws_base}/{session_id}?token={token}", max_size=None)
        self.ws = self._cm.__enter__()
        self.awareness: dict[int, Any] = {}
        assert isinstance(p.decode_message(self.ws.recv(timeout=10)), p.SyncStep1)  # type: ignore[arg-type]
        self.ws.send(p.sync_step1_message(self.doc.get_state()))
        self.pump(until=lambda m: isinstance(m, p.SyncStep2))
        self._outgoing: list[bytes] = []
        self.doc.observe(lambda e: self._outgoing.append(e.update))

    def pump(self, until: Callable[[Any], bool] | None = None, timeout: float = 10.0) -> Any:
        """Read messages (applying updates, recording awareness) until one matches `until`."""
        p = self._p
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting for a sync message")
            msg = p.decode_message(self.ws.recv(timeout=remaining))  # type: ignore[arg-type]
            if isinstance(msg, p.SyncStep2 | p.SyncUpdate):
                self.doc.apply_update(msg.update)
            elif isinstance(msg, p.AwarenessMessage):
                for entry in p.decode_awareness(msg.payload, max_entries=1000, max_state_bytes=1 << 20):
                    self.awareness[entry.client_id] = json.loads(entry.state_json)
            if until is not None and until(msg):
                return msg

    def send_changes(self) -> None:
        p = self._p
        updates, self._outgoing = self._outgoing, []
        for u in updates:
            self.ws.send(p.update_message(u))

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def spawned_children(pid: int) -> list[int]:
    """The inference worker processes of a server (spawned interpreters whose parent it is)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found
