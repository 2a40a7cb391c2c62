"""Bad input on the real server's direct frame path (our uvicorn protocol), not the test client's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from realtime.session import protocol as p

from .harness import ServerProcess
from .test_sync_ws import update_frame


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, str]]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("direct")) / "data",
        env={
            "ESCENARIO_MAX_MESSAGE_BYTES": "4096",
            "ESCENARIO_MESSAGES_PER_SECOND": "1",
            "ESCENARIO_MESSAGE_BURST": "20",
        },
    )
    srv.start()
    token = srv.signup("o@example.com")
    sid = srv.create_session(token)
    try:
        yield srv, token, sid
    finally:
        srv.kill()


@contextlib.contextmanager
def open_synced(srv: ServerProcess, token: str, sid: str) -> Iterator[ClientConnection]:
    with connect(f"{srv.ws_base}/{sid}?token={token}") as ws:
        assert isinstance(p.decode_message(ws.recv(timeout=20)), p.SyncStep1)  # type: ignore[arg-type]
        yield ws


def read_until_closed(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=20)


def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        read_until_closed(ws)
    return info.value.rcvd.code if info.value.rcvd else None


def flood(ws: ClientConnection, frame: bytes, count: int) -> None:
    """Send `count` frames; the server may cut the connection part-way, which is the point."""
    with contextlib.suppress(ConnectionClosed):
        for _ in range(count):
            ws.send(frame)


def state_of(ws: ClientConnection) -> dict[str, Any]:
    import pycrdt

    ws.send(p.sync_step1_message(b"\x00"))
    while True:
        msg = p.decode_message(ws.recv(timeout=20))  # type: ignore[arg-type]
        if isinstance(msg, p.SyncStep2):
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.apply_update(msg.update)
            return dict(doc.get("session", type=pycrdt.Map).to_py() or {})


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send(b"\x00\x02\x05\x01\x02\x03\x04\x05"), 1007),
        (lambda ws: ws.send(b"\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff"), 1007),
        (lambda ws: ws.send("text frame"), 1003),
        (lambda ws: ws.send(b"\x00\x02" + b"x" * 10_000), 1009),
        (lambda ws: flood(ws, b"\x03", 40), 1008),
    ],
)
def test_bad_input_closes_only_the_sender(
    limited_server: tuple[ServerProcess, str, str], send: Any, code: int
) -> None:
    srv, token, sid = limited_server
    with open_synced(srv, token, sid) as good, open_synced(srv, token, sid) as bad:
        send(bad)
        assert close_code(bad) == code
        good.send(update_frame(f"alive-after-{code}", True))
        assert state_of(good)[f"alive-after-{code}"] is True
