"""A reader that stops reading must never slow the room: it is cut off, the others carry on."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pycrdt
from websockets.sync.client import connect

from realtime.session import protocol as p

from .harness import ServerProcess, wait_until


def raw_ws_that_never_reads(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up fast
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def big_updates(n: int, size: int) -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    m = doc.get("session", type=pycrdt.Map)
    for i in range(n):
        m[f"blob{i}"] = f"{i:06d}" + "x" * size
    return ups


def test_laggard_is_dropped_while_a_fast_reader_gets_everything(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={
            "ESCENARIO_SEND_QUEUE_BYTES": str(1024 * 1024),
            "ESCENARIO_WS_PING_INTERVAL_S": "1",
            "ESCENARIO_WS_PING_TIMEOUT_S": "1",
        },
    )
    server.start()
    try:
        token = server.signup("o@example.com")
        sid = server.create_session(token)
        url = f"{server.ws_base}/{sid}?token={token}"
        laggard = raw_ws_that_never_reads(server.port, f"/sync/{sid}?token={token}")

        # 12.8 MB at 6.4 MB/s: easy for a reader that reads, far beyond every buffer on the way
        # (kernel socket buffers, the transport's, our 1 MiB queue) for one that does not.
        updates = big_updates(400, 32 * 1024)
        rate = 200.0
        received: list[int] = []
        with connect(url, max_size=None) as reader, connect(url, max_size=None) as writer:

            def read() -> None:
                while len(received) < len(updates):
                    msg = p.decode_message(reader.recv(timeout=30))  # type: ignore[arg-type]
                    if isinstance(msg, p.SyncUpdate):
                        received.append(1)

            t = threading.Thread(target=read, daemon=True)
            t.start()
            started = time.monotonic()
            for i, u in enumerate(updates):
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not waiting for a condition
                writer.send(p.update_message(u))
            t.join(60)
            assert len(received) == len(updates)
            elapsed = time.monotonic() - started

        # The server gave up on the laggard instead of buffering 6 MB for it...
        wait_until(
            lambda: "closing slow reader" in server.log_path.read_text(), 10, "the laggard to be dropped"
        )
        # ...and its socket is torn down (keep-alive timeout), not left hanging.
        laggard.settimeout(15)
        try:
            while laggard.recv(65536):
                pass  # the backlog the kernel still holds, then EOF
        except ConnectionResetError:
            pass  # an abort shows as a reset: just as closed
        finally:
            laggard.close()
        assert elapsed < 30
    finally:
        server.kill()
