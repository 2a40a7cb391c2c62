"""Shared fixtures of the transport tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

SO_TIMESTAMPNS = 35


@pytest.fixture
def kernel_stamps() -> Iterator[bool]:
    """Whether this kernel stamps TCP reads (``SO_TIMESTAMPNS``), with stamping switched on.

    Linux switches receive timestamps on for the whole system when the first socket asks, and
    off when the last one closes, through deferred work: segments that arrive meanwhile come
    unstamped (the jam then takes its own clock). This keeps a stamping socket open for the
    test and waits until a read comes back stamped; a kernel that never stamps (some sandboxes)
    gives False after a second.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    server.settimeout(1.0)
    stamped = False
    try:
        deadline = time.monotonic() + 1.0
        while not stamped and time.monotonic() < deadline:
            client.sendall(b"p")
            _data, ancillary, _flags, _addr = server.recvmsg(16, 64)
            stamped = any(
                level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS for level, kind, _ in ancillary
            )
            if not stamped:
                time.sleep(0.005)
        yield stamped
    finally:
        client.close()
        server.close()
