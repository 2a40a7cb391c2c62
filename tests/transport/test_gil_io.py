"""gil_io: libc socket calls that keep the GIL (realtime/transport/gil_io.py)."""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from realtime.transport import gil_io

pytestmark = pytest.mark.skipif(not gil_io.available(), reason="gil_io is Linux-only")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    yield client, server
    client.close()
    server.close()


def test_send_recv_and_epoll_round_trip(
    pair: tuple[socket.socket, socket.socket], kernel_stamps: bool
) -> None:
    client, server = pair
    server.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    ep = gil_io.Epoll()
    rx = gil_io.Receiver(4096)
    try:
        ep.register(server.fileno())
        assert ep.ready() == []
        assert rx.recv(server.fileno()) == (None, None)  # nothing there: not an error
        before = time.time()
        client.sendall(b"hello")
        deadline = time.monotonic() + 2
        while not ep.ready():
            assert time.monotonic() < deadline
        data, stamp = rx.recv(server.fileno())
        assert data == b"hello"
        # Where the kernel stamps TCP segments (Linux does; some sandboxed kernels do not), the
        # read carries the stamp, from the time it arrived.
        if kernel_stamps:
            assert stamp is not None
            assert before - 0.01 <= stamp <= time.time() + 0.01
        else:
            assert stamp is None
        assert gil_io.send(server.fileno(), bytearray(b"back")) == 4
        assert client.recv(10) == b"back"
        client.close()
        while not ep.ready():
            assert time.monotonic() < deadline
        assert rx.recv(server.fileno())[0] == b""  # end of file
        ep.unregister(server.fileno())
        assert ep.ready() == []
    finally:
        ep.close()


def test_a_full_socket_takes_nothing_and_a_broken_one_raises(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"x" * 65536
    total = 0
    for _ in range(200):
        n = gil_io.send(server.fileno(), chunk)
        total += n
        if n == 0:
            break
    assert n == 0  # full: 0, not an exception
    assert total > 0
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # a reset
    time.sleep(0.05)
    failure: OSError | None = None
    for _ in range(10):
        try:
            gil_io.send(server.fileno(), b"more")
        except OSError as exc:
            failure = exc
            break
        time.sleep(0.01)
    assert failure is not None
    assert failure.errno in (errno.EPIPE, errno.ECONNRESET)


def test_the_calls_keep_the_gil_while_another_thread_is_busy(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Why the module exists: a call that releases the GIL while another thread is busy may
    have to wait a whole switch interval (here 50 ms) to get it back; gil_io's never do."""
    _, server = pair
    old = sys.getswitchinterval()
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    sys.setswitchinterval(0.05)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        time.sleep(0.01)
        fd = server.fileno()
        slowest = 0.0
        t0 = time.perf_counter()
        for _ in range(400):
            t = time.perf_counter()
            gil_io.send(fd, b"x")
            slowest = max(slowest, time.perf_counter() - t)
        kept = time.perf_counter() - t0
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(old)
    assert slowest < 0.01, slowest  # no call ever waited for the GIL
    assert kept < 0.04, kept
