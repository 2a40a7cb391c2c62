"""The tick thread's reads of /jam sockets (realtime/transport/tick_reads.py), on real TCP sockets.

The engine, channel and loop are small fakes that record what the reader does with them; the
sockets are real loopback TCP connections, so kernel timestamps, partial reads, end of file and
resets are the kernel's own.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from realtime.jam.engine import InputRejected
from realtime.transport.tick_reads import TickReads, reads_stats
from realtime.transport.wsframe import binary_frame

MASK = b"\x11\x22\x33\x44"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (FIN set), as a browser sends it."""
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


class Engine:
    """What TickReads uses of a JamEngine: receive, clock, poll, closed."""

    def __init__(self, reject: Callable[[bytes], bool] = lambda _: False) -> None:
        self.poll: Callable[[], None] | None = None
        self.send_now: Callable[..., int] | None = None
        self.closed = False
        self.clock = time.monotonic
        self.got: list[tuple[str, bytes, float | None]] = []
        self._reject = reject

    def receive(self, pid: str, data: bytes, arrival: float | None = None) -> None:
        if self._reject(data):
            raise InputRejected(1007, "bad frame")
        self.got.append((pid, bytes(data), arrival))


class Transport:
    """The loop's transport: records what the loop wrote through it, and closes."""

    def __init__(self) -> None:
        self.closing = False
        self.written = bytearray()
        self.closed = False

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = self.closed = True


class Channel:
    """A DirectChannel stand-in: lends its server-side socket's descriptor, records take-backs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.proto = type("Proto", (), {"transport": Transport()})()
        self.lender: Callable[[Any], None] | None = None
        self.lent = False
        self.taken_back: list[bytes] = []

    def lend_reads(self) -> int | None:
        if self.lent:
            return None
        self.lent = True
        return self.sock.fileno()

    def take_back(self, rest: bytes) -> None:
        self.lent = False
        self.taken_back.append(rest)


class Loop:
    """call_soon_threadsafe, run at once (the test is its own loop)."""

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)


class Sink:
    def __init__(self) -> None:
        self.closing = False
        self.max_buffer = 64 * 1024
        self.lent: Any = None
        self.tick_sent = -1
        self.tick_refused = -1


class Member:
    def __init__(self, sink: Any) -> None:
        self.sink = sink


class Group:
    def __init__(self, *sinks: Any) -> None:
        self.members = tuple(Member(s) for s in sinks)


def mix_frame(seq: int, payload: bytes = b"mix") -> bytes:
    """A jam frame as the engine makes it: the 16-byte header (sequence number at offset 4)."""
    return bytes((1, 1, 2, 0)) + struct.pack("!I", seq) + bytes(8) + payload


def read_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(2.0)
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "connection closed"
        got += chunk
    return got


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, server) ends of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield client, server
    client.close()
    server.close()


_made: list[TickReads] = []


@pytest.fixture(autouse=True)
def _close_readers() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def setup(
    server: socket.socket,
    engine: Engine | None = None,
    take: Callable[[], bool] = lambda: True,
    writes: bool = False,
) -> tuple[Engine, TickReads, Channel, Sink]:
    engine = engine or Engine()
    reads = TickReads(engine, Loop(), max_message=1 << 16, writes=writes)  # type: ignore[arg-type]
    _made.append(reads)
    channel = Channel(server)
    sink = Sink()
    reads.register(channel, "p1", take, sink)  # type: ignore[arg-type]
    assert engine.poll is not None
    assert channel.lent
    return engine, reads, channel, sink


def poll_until(reads: TickReads, done: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the reader did not get there"
        reads.poll()
        time.sleep(0.001)


def test_audio_frames_reach_the_engine_with_the_kernels_arrival_time(pair: Any, kernel_stamps: bool) -> None:
    client, server = pair
    engine, reads, channel, _ = setup(server)
    frames = [bytes([1, 2, i]) * 20 for i in range(5)]
    sent_at = time.monotonic()
    client.sendall(b"".join(client_frame(2, f) for f in frames))
    time.sleep(0.03)  # the tick comes late: the arrival must still be when the data came
    poll_until(reads, lambda: len(engine.got) == 5)
    assert [g[1] for g in engine.got] == frames
    assert {g[0] for g in engine.got} == {"p1"}
    arrival = engine.got[0][2]
    if kernel_stamps:
        assert arrival is not None
        assert sent_at - 0.001 <= arrival <= sent_at + 0.015  # not the read 30 ms later
    else:
        assert arrival is None  # no stamp: the engine takes its own clock
    assert channel.taken_back == []
    assert reads_stats(engine) is None  # only readers made by reads_for() are listed
    assert reads.frames == 5


def test_a_frame_split_across_segments_is_carried_to_the_next_read(pair: Any) -> None:
    client, server = pair
    engine, reads, channel, _ = setup(server)
    wire = client_frame(2, b"x" * 300)  # a 16-bit length
    client.sendall(wire[:5])
    time.sleep(0.02)
    reads.poll()
    assert engine.got == []
    client.sendall(wire[5:200])
    time.sleep(0.02)
    reads.poll()
    assert engine.got == []
    client.sendall(wire[200:])
    poll_until(reads, lambda: len(engine.got) == 1)
    assert engine.got[0][1] == b"x" * 300
    assert channel.taken_back == []


def test_a_control_message_goes_back_to_the_loop_with_everything_after_it(pair: Any) -> None:
    client, server = pair
    engine, reads, channel, _ = setup(server)
    text = client_frame(1, b'{"type":"ping","t":1}')
    after = client_frame(2, b"late audio")
    client.sendall(client_frame(2, b"audio") + text + after)
    poll_until(reads, lambda: bool(channel.taken_back))
    assert [g[1] for g in engine.got] == [b"audio"]
    assert channel.taken_back == [text + after]  # in order, for the loop's parser
    assert not channel.lent
    assert reads.given_back == 1
    # The loop lends it again once its parser is back at a frame boundary.
    assert channel.lender is not None
    channel.lender(channel)
    assert channel.lent
    client.sendall(client_frame(2, b"more"))
    poll_until(reads, lambda: len(engine.got) == 2)
    assert engine.got[1][1] == b"more"


def test_a_rejected_frame_goes_back_to_the_loop_unconsumed(pair: Any) -> None:
    client, server = pair
    engine, reads, channel, _ = setup(server, Engine(reject=lambda d: d == b"bad"))
    client.sendall(client_frame(2, b"good") + client_frame(2, b"bad") + client_frame(2, b"never"))
    poll_until(reads, lambda: bool(channel.taken_back))
    assert [g[1] for g in engine.got] == [b"good"]
    # The loop's own path parses the rejected frame again and closes with its code.
    assert channel.taken_back == [client_frame(2, b"bad") + client_frame(2, b"never")]


def test_a_refused_rate_goes_back_to_the_loop(pair: Any) -> None:
    client, server = pair
    tokens = [True, False]
    engine, reads, channel, _ = setup(server, take=lambda: tokens.pop(0) if tokens else False)
    client.sendall(client_frame(2, b"one") + client_frame(2, b"two"))
    poll_until(reads, lambda: bool(channel.taken_back))
    assert [g[1] for g in engine.got] == [b"one"]
    assert channel.taken_back == [client_frame(2, b"two")]


def test_end_of_file_gives_the_socket_back_with_the_partial_frame(pair: Any) -> None:
    client, server = pair
    engine, reads, channel, _ = setup(server)
    client.sendall(client_frame(2, b"last") + client_frame(2, b"cut")[:4])
    poll_until(reads, lambda: len(engine.got) == 1)
    client.close()
    poll_until(reads, lambda: bool(channel.taken_back))
    assert channel.taken_back == [client_frame(2, b"cut")[:4]]  # the loop's read then sees the end
    assert not reads._owned


def test_a_closing_sink_wants_its_reads_back_for_the_close_handshake(pair: Any) -> None:
    client, server = pair
    engine, reads, channel, sink = setup(server)
    sink.closing = True
    close = client_frame(8, struct.pack("!H", 1000))
    client.sendall(client_frame(2, b"after close") + close)
    poll_until(reads, lambda: bool(channel.taken_back))
    assert engine.got == []
    assert channel.taken_back == [client_frame(2, b"after close") + close]


def test_a_connection_the_loop_closed_is_let_go(pair: Any) -> None:
    client, server = pair
    engine, reads, channel, _ = setup(server)
    channel.proto.transport.closing = True
    poll_until(reads, lambda: not reads._owned)
    assert channel.taken_back == []  # nothing to give back to a closed transport
    client.sendall(client_frame(2, b"unread"))
    for _ in range(5):
        reads.poll()
    assert engine.got == []


def test_unregister_hands_back_what_the_tick_held(pair: Any) -> None:
    client, server = pair
    _, reads, channel, _ = setup(server)
    partial = client_frame(2, b"half a frame")[:6]
    client.sendall(partial)
    time.sleep(0.02)
    reads.poll()
    reads.unregister(channel)  # type: ignore[arg-type]
    assert channel.taken_back == [partial]
    assert channel.lender is None
    assert not reads._owned
    # The descriptor the reader used was its own duplicate: the connection itself is intact.
    client.sendall(b"still open")
    assert server.recv(100) == b"still open"


# -- writes: the tick sends the mixes to the sockets it holds ----------------------------------


def test_the_tick_sends_the_mix_itself_and_marks_it_sent(pair: Any) -> None:
    client, server = pair
    engine, reads, _channel, sink = setup(server, writes=True)
    assert sink.lent is not None
    assert engine.send_now is not None
    assert reads.send_now([Group(sink)], [mix_frame(7)]) == 2  # every listener served
    wire = binary_frame(mix_frame(7))
    assert read_exactly(client, len(wire)) == wire
    assert (sink.tick_sent, sink.tick_refused) == (7, -1)
    # A listener the tick does not hold is the loop's: "some served".
    assert reads.send_now([Group(sink, Sink())], [mix_frame(8)]) == 1
    assert read_exactly(client, len(wire)) == binary_frame(mix_frame(8))


def test_the_loops_writes_queue_behind_the_ticks_in_order(pair: Any) -> None:
    client, server = pair
    _, reads, channel, sink = setup(server, writes=True)
    transport = channel.proto.transport
    assert transport is not channel.proto.transport.real  # the protocol writes through the proxy
    reads.send_now([Group(sink)], [mix_frame(1)])
    transport.write(b"CONTROL")  # a control message from the loop: queued, not written
    assert transport.get_write_buffer_size() == len(b"CONTROL")
    reads.send_now([Group(sink)], [mix_frame(2)])  # behind the queued bytes
    reads.poll()
    expected = binary_frame(mix_frame(1)) + b"CONTROL" + binary_frame(mix_frame(2))
    assert read_exactly(client, len(expected)) == expected
    assert transport.real.written == b""  # nothing went through the loop's own transport


def test_a_full_backlog_is_refused_and_marked(pair: Any) -> None:
    _client, server = pair
    _, reads, channel, sink = setup(server, writes=True)
    sink.max_buffer = 100
    channel.proto.transport.write(b"x" * 90)  # the loop's bytes wait for the tick
    reads.send_now([Group(sink)], [mix_frame(5, b"y" * 40)])
    assert (sink.tick_sent, sink.tick_refused) == (5, 5)  # the loop counts it as refused


def test_closing_takes_the_socket_back_with_its_queued_bytes(pair: Any) -> None:
    _client, server = pair
    _, reads, channel, sink = setup(server, writes=True)
    proxy = channel.proto.transport
    real = proxy.real
    proxy.write(b"close frame")
    proxy.close()
    assert channel.proto.transport is real
    assert real.written == b"close frame"
    assert real.closed
    assert not reads._owned
    assert sink.lent is None
    assert reads.send_now([Group(sink)], [mix_frame(9)]) == 0


def test_a_give_back_flushes_the_queued_writes_before_the_parser_runs(pair: Any) -> None:
    client, server = pair
    _, reads, channel, _sink = setup(server, writes=True)
    proxy = channel.proto.transport
    proxy.write(b"pong")
    client.sendall(client_frame(1, b'{"type":"ping"}'))
    poll_until(reads, lambda: bool(channel.taken_back))
    # The tick flushed "pong" itself on that poll, before it gave the socket back.
    assert read_exactly(client, 4) == b"pong"
    assert channel.proto.transport is proxy.real
    assert channel.taken_back == [client_frame(1, b'{"type":"ping"}')]
