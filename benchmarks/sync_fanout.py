"""Sync fan-out: server CPU per delivered update and delivery latency, Escenario vs pycrdt-websocket.

One writer and N readers share one room. The writer sends small map updates
(`m[f"k{i % 50}"] = i`, ~40 bytes) on an absolute schedule (update i leaves at t0 + i/rate);
every reader must receive every update. For each run we report

- server CPU µs per delivered update: utime+stime of every process in the server's process
  group (from /proc/<pid>/stat), taken right before the first measured update and right after
  the last one reached the last reader, divided by updates x readers;
- delivery latency p50/p99/max over all (reader, update) pairs: receive time - send time, both
  read with `time.perf_counter()` in the load generator.

The same load runs against Escenario (`python -m realtime.cli serve`, embedded SQLite: every
update is committed to the log before it is broadcast) and against pycrdt-websocket's ASGI server
under uvicorn with the same uvicorn options and uvicorn's stock `websockets` implementation
(`benchmarks/_pycrdt_websocket_server.py`, `--anchor-ws` to change it; no store, its default).
`pycrdt-websocket+store` gives the anchor's rooms an `SQLiteYStore`, written in the background
after broadcasting. pycrdt-websocket also echoes each update to its sender; that send
is server work but not a delivered update, so the anchor's numbers include it (1/readers extra).

Every run starts fresh server processes; runs alternate between servers and the reported value
is the median over repeats. The load generator is a separate process (one asyncio/uvloop process
for the writer and all readers) that speaks just enough of the y-websocket protocol over a
minimal WebSocket client written on `asyncio.Protocol`, so that the client side stays cheap on a
small machine. Readers recognise an update by its bytes: both servers re-broadcast pycrdt's
`TransactionEvent.update`, which for these updates is byte-identical to what the writer sent
(checked on every run: an unknown frame fails the run).

Usage:
    python benchmarks/sync_fanout.py                # 2000 updates at 500/s, 20 and 100 readers, 3 repeats
    python benchmarks/sync_fanout.py --quick        # smoke test
    python benchmarks/sync_fanout.py --json --plot  # also write benchmarks/results/sync_fanout.{json,png}
    python benchmarks/sync_fanout.py --servers escenario,escenario-nolog   # what persisting costs

Linux only (reads /proc). All connections use one account, so the Escenario server is started
with ESCENARIO_MAX_CONNECTIONS_PER_USER and the per-IP connect and message limits raised.

Targets (issue): at 20 readers Escenario uses ≥ 3x less server CPU per delivered update than
pycrdt-websocket (no store), and its p99 delivery latency is ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from _common import code_state, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
ANCHOR_SCRIPT = ROOT / "benchmarks" / "_pycrdt_websocket_server.py"
VARIANT_SCRIPT = ROOT / "benchmarks" / "_escenario_variant_server.py"

ESCENARIO = "escenario"
ANCHOR = "pycrdt-websocket"
ANCHOR_STORE = "pycrdt-websocket+store"
SERVERS = (ESCENARIO, ANCHOR, ANCHOR_STORE)
# Diagnostic only (not run by default): Escenario without its update log, to show what persisting costs.
ESCENARIO_NOLOG = "escenario-nolog"
KNOWN_SERVERS = (*SERVERS, ESCENARIO_NOLOG)

CPU_TARGET_RATIO = 3.0
P99_TARGET_MS = 10.0
TARGET_READERS = 20

RESULT_PREFIX = "RESULT "
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class GroupCpu:
    """CPU used so far by every live process of a process group."""

    stat_s: float  # utime + stime from /proc/<pid>/stat (clock ticks)
    sched_s: float  # sum of /proc/<pid>/task/*/schedstat run time (ns resolution), 0 if unavailable
    pids: int


def group_cpu(pgid: int) -> GroupCpu:
    ticks = 0
    sched_ns = 0
    pids = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # exited meanwhile
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rindex(b")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) != pgid:
            continue
        pids += 1
        ticks += int(fields[11]) + int(fields[12])
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{entry.name}/task"):
                with contextlib.suppress(OSError), open(f"{task.path}/schedstat", "rb") as f:
                    sched_ns += int(f.read().split()[0])
    return GroupCpu(ticks / CLK_TCK, sched_ns / 1e9, pids)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process: `sync_fanout.py _loadgen ...`)
# --------------------------------------------------------------------------------------------
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def mask_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final client-to-server frame (clients must mask)."""
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if n == 0:
        return header + key
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return header + key + masked


MessageHandler = Callable[["WsClient", bytes, float], None]


class WsClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unmasked server frames, masked client frames.

    `on_message(client, payload, t)` gets every binary message with the `perf_counter()` time
    at which the data holding it arrived. Pings are answered; a close frame ends the client.
    """

    def __init__(self, host: str, port: int, target: str, on_message: MessageHandler) -> None:
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ).encode()
        self._key = base64.b64encode(os.urandom(16))
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._handshaking = True
        self._rest = b""
        self._fragments: list[bytes] = []
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.synced: asyncio.Future[None] = loop.create_future()
        self.closing = False

    # asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport.write(self._request + b"Sec-WebSocket-Key: " + self._key + b"\r\n\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(f"connection lost ({exc!r})" if exc else "connection lost")

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._rest:
            data = self._rest + data
            self._rest = b""
        if self._handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._rest = data
                return
            self._check_handshake(data[:end].decode("latin-1"))
            data = data[end + 4 :]
        n = len(data)
        pos = 0
        on_message = self._on_message
        while n - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            if length & 0x80:
                self._fail("server sent a masked frame")
                return
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hdr = 10
            end = pos + hdr + length
            if end > n:
                break
            payload = data[pos + hdr : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x2 and b0 & 0x80:
                on_message(self, payload, now)
            elif opcode in (0x0, 0x1, 0x2):
                self._fragments.append(payload)
                if b0 & 0x80:
                    message, self._fragments = b"".join(self._fragments), []
                    on_message(self, message, now)
            elif opcode == 0x9:
                self.write(mask_frame(payload, 0xA))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                self._finish(f"closed by server: {code} {reason}")
                return
        if pos < n:
            self._rest = data[pos:]

    # -----------------------------------------------------------------------------------
    def _check_handshake(self, head: str) -> None:
        status, *header_lines = head.split("\r\n")
        if " 101 " not in f"{status} ":
            self._fail(f"handshake refused: {status}")
            return
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + _WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            self._fail("handshake: bad Sec-WebSocket-Accept")
            return
        self._handshaking = False
        if not self.opened.done():
            self.opened.set_result(None)

    def write(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    def send(self, payload: bytes) -> None:
        self.write(mask_frame(payload))

    def close(self) -> None:
        self.closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(mask_frame((1000).to_bytes(2, "big"), 0x8))
            self._transport.close()

    def _fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        self._finish(why)
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        if not self.synced.done():
            self.synced.set_exception(ConnectionError(why))
            self.synced.exception()  # retrieved: the waiters re-raise from `closed`


def make_update_frames(count: int) -> list[bytes]:
    """`count` y-websocket update messages, each setting one of 50 keys of a map."""
    import pycrdt

    from realtime.session.protocol import update_message

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    bench: pycrdt.Map[Any] = doc.get("bench", type=pycrdt.Map)
    captured: list[bytes] = []
    doc.observe(lambda event: captured.append(event.update))
    for i in range(count):
        bench[f"k{i % 50}"] = i
    if len(captured) != count:
        raise RuntimeError(f"expected {count} updates, captured {len(captured)}")
    frames = [update_message(u) for u in captured]
    if len(set(frames)) != count:
        raise RuntimeError("update frames are not unique; readers could not tell them apart")
    return frames


class Tally:
    """What the readers saw, shared by all reader callbacks."""

    def __init__(self, frames: list[bytes], warmup: int, readers: int) -> None:
        self.index = {frame: i for i, frame in enumerate(frames)}
        self.warmup = warmup
        self.measured = len(frames) - warmup
        self.sent_at = [0.0] * len(frames)
        self.latencies: list[float] = []
        self.warm_delivered = 0
        self.delivered = 0
        self.duplicates = 0
        self.unknown = 0
        self.unknown_example = b""
        self.warm_done = asyncio.Event()
        self.done = asyncio.Event()
        self.warm_expected = warmup * readers
        self.expected = self.measured * readers
        self.last_arrival = 0.0


def reader_handler(tally: Tally, total: int) -> MessageHandler:
    from realtime.session.protocol import sync_step2_message

    empty_step2 = sync_step2_message(b"\x00\x00")
    index = tally.index
    sent_at = tally.sent_at
    latencies = tally.latencies
    warmup = tally.warmup
    seen: dict[WsClient, bytearray] = {}

    def on_message(client: WsClient, payload: bytes, now: float) -> None:
        if len(payload) < 2 or payload[0] != 0:
            return  # awareness and anything else
        sub = payload[1]
        if sub == 2:  # update
            i = index.get(payload)
            if i is None:
                if payload[2:] != b"\x02\x00\x00":  # an empty update is harmless
                    tally.unknown += 1
                    tally.unknown_example = payload
                return
            flags = seen.get(client)
            if flags is None:
                flags = seen[client] = bytearray(total)
            if flags[i]:
                tally.duplicates += 1
                return
            flags[i] = 1
            if i < warmup:
                tally.warm_delivered += 1
                if tally.warm_delivered == tally.warm_expected:
                    tally.warm_done.set()
                return
            latencies.append(now - sent_at[i])
            tally.delivered += 1
            if tally.delivered == tally.expected:
                tally.last_arrival = now
                tally.done.set()
        elif sub == 0:  # the server's SyncStep1: we hold nothing it lacks
            client.send(empty_step2)
        elif sub == 1 and not client.synced.done():  # SyncStep2: initial state received
            client.synced.set_result(None)

    return on_message


def writer_handler() -> MessageHandler:
    from realtime.session.protocol import sync_step2_message

    empty_step2 = sync_step2_message(b"\x00\x00")

    def on_message(client: WsClient, payload: bytes, now: float) -> None:
        if len(payload) >= 2 and payload[0] == 0:
            if payload[1] == 0:
                client.send(empty_step2)
            elif payload[1] == 1 and not client.synced.done():
                client.synced.set_result(None)

    return on_message


async def _first_closed(clients: Sequence[WsClient]) -> str:
    done, _ = await asyncio.wait([c.closed for c in clients], return_when=asyncio.FIRST_COMPLETED)
    return next(iter(done)).result()


async def _wait_or_fail(event: asyncio.Event, clients: Sequence[WsClient], limit_s: float, what: str) -> None:
    """Wait for `event`; fail early when any connection closes."""
    waiter = asyncio.ensure_future(event.wait())
    closer = asyncio.ensure_future(_first_closed(clients))
    try:
        done, _ = await asyncio.wait({waiter, closer}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        closer.cancel()
    if waiter in done:
        return
    if closer in done:
        raise RuntimeError(f"{what}: a connection closed: {closer.result()}")
    raise TimeoutError(f"{what}: not done within {limit_s:.0f}s")


async def _send_paced(
    writer: WsClient, masked: list[bytes], first: int, rate: float, sent_at: list[float]
) -> float:
    """Send the pre-masked `masked` frames (update `first` onwards) at `rate`/s on an absolute
    schedule, recording each send time; returns the worst lag behind the schedule (s)."""
    perf = time.perf_counter
    write = writer.write
    interval = 1.0 / rate
    worst_lag = 0.0
    n = len(masked)
    i = 0
    t0 = perf()
    while i < n:
        now = perf()
        while i < n and t0 + i * interval <= now:
            worst_lag = max(worst_lag, now - (t0 + i * interval))
            sent_at[first + i] = perf()
            write(masked[i])
            i += 1
        if i < n:
            # sleep(0) when behind: let the readers run between catch-up bursts
            await asyncio.sleep(max(0.0, t0 + i * interval - perf()))
    return worst_lag


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_load(
    url: str, pgid: int, readers: int, updates: int, warmup: int, rate: float, limit_s: float
) -> dict[str, Any]:
    from urllib.parse import urlsplit

    from realtime.session.protocol import sync_step1_message

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    frames = make_update_frames(warmup + updates)
    tally = Tally(frames, warmup, readers)
    loop = asyncio.get_running_loop()
    on_reader = reader_handler(tally, len(frames))
    clients: list[WsClient] = []

    async def connect(handler: MessageHandler) -> WsClient:
        _, client = await loop.create_connection(lambda: WsClient(host, port, target, handler), host, port)
        clients.append(client)
        await asyncio.wait_for(client.opened, 30)
        client.send(sync_step1_message(b"\x00"))
        await asyncio.wait_for(client.synced, 30)
        return client

    try:
        # The writer first and alone: pycrdt-websocket races when the first connections to a
        # room arrive together (both start the room; one fails).
        writer = await connect(writer_handler())
        gate = asyncio.Semaphore(25)

        async def connect_reader() -> WsClient:
            async with gate:
                return await connect(on_reader)

        await asyncio.gather(*(connect_reader() for _ in range(readers)))
        # Warm-up: connections, code paths and allocations settle before the clock starts.
        masked = [mask_frame(f) for f in frames]  # before the clock starts
        if warmup:
            await _send_paced(writer, masked[:warmup], 0, rate, tally.sent_at)
            await _wait_or_fail(tally.warm_done, clients, 30, "warm-up")
        await asyncio.sleep(0.25)

        cpu0 = group_cpu(pgid)
        own0 = own_cpu_s()
        t0 = time.perf_counter()
        worst_lag = await _send_paced(writer, masked[warmup:], warmup, rate, tally.sent_at)
        sent_s = time.perf_counter() - t0
        await _wait_or_fail(tally.done, clients, limit_s, "measured run")
        t1 = time.perf_counter()
        cpu1 = group_cpu(pgid)
        own1 = own_cpu_s()
        if tally.unknown:
            raise RuntimeError(
                f"{tally.unknown} update frames matched nothing that was sent "
                f"(e.g. {tally.unknown_example[:64].hex()}): cannot attribute deliveries"
            )
        wall = t1 - t0
        cpu_s = cpu1.stat_s - cpu0.stat_s
        sched_s = cpu1.sched_s - cpu0.sched_s
        delivered = tally.delivered
        lat = sorted(tally.latencies)
        return {
            "readers": readers,
            "updates": updates,
            "rate": rate,
            "delivered": delivered,
            "duplicates": tally.duplicates,
            "wall_s": wall,
            "send_s": sent_s,
            "drain_s": tally.last_arrival - t0 - sent_s,
            "worst_send_lag_ms": worst_lag * 1e3,
            "server_cpu_s": cpu_s,
            "server_sched_cpu_s": sched_s,
            "server_pids": cpu1.pids,
            "server_cpu_pct": 100 * cpu_s / wall,
            "cpu_us_per_delivery": 1e6 * cpu_s / delivered,
            "sched_us_per_delivery": 1e6 * sched_s / delivered,
            "client_cpu_pct": 100 * (own1 - own0) / wall,
            "p50_ms": percentile(lat, 0.50) * 1e3,
            "p90_ms": percentile(lat, 0.90) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3,
            "p999_ms": percentile(lat, 0.999) * 1e3,
            "max_ms": lat[-1] * 1e3,
            "mean_ms": statistics.fmean(lat) * 1e3,
        }
    finally:
        for client in clients:
            client.close()
        await asyncio.sleep(0.05)


def loadgen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sync_fanout.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pgid", type=int, required=True)
    parser.add_argument("--readers", type=int, required=True)
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    a = parser.parse_args(argv)
    coro = run_load(a.url, a.pgid, a.readers, a.updates, a.warmup, a.rate, a.timeout)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coro)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Servers under test
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server under test in its own process group (`pgid == proc.pid`)."""

    def __init__(self, kind: str, workdir: Path, *, anchor_ws: str = "websockets") -> None:
        self.kind = kind
        self.anchor_ws = anchor_ws
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = dict(os.environ)
        if self.kind in (ESCENARIO, ESCENARIO_NOLOG):
            # `escenario serve`, or the same CLI with its update log stubbed out.
            cmd = (
                [sys.executable, "-m", "realtime.cli"]
                if self.kind == ESCENARIO
                else [sys.executable, str(VARIANT_SCRIPT)]
            )
            cmd += ["serve", "--port", str(self.port), "--data-dir", str(self.workdir / "data")]
            cmd += ["--log-level", "warning", "--log-format", "text"]
            env.update(
                ESCENARIO_CONNECTS_PER_MINUTE_PER_IP="100000",
                ESCENARIO_MESSAGES_PER_SECOND="100000",
                ESCENARIO_MESSAGE_BURST="100000",
                # all connections belong to one account (sign-ups hash passwords: slow)
                ESCENARIO_MAX_CONNECTIONS_PER_USER="100000",
            )
        else:
            cmd = [sys.executable, str(ANCHOR_SCRIPT), "--port", str(self.port), "--ws", self.anchor_ws]
            if self.kind == ANCHOR_STORE:
                cmd += ["--store-dir", str(self.workdir / "ystore")]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_listening(30)
        if self.kind in (ESCENARIO, ESCENARIO_NOLOG):
            self.url = self._prepare_room()
        else:
            self.url = f"ws://127.0.0.1:{self.port}/bench-room"

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} did not listen within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _prepare_room(self) -> str:
        import httpx

        base = f"http://127.0.0.1:{self.port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 30
            while http.get("/healthz").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"escenario not healthy:\n{self.log_tail()}")
                time.sleep(0.05)
            r = http.post(
                "/api/auth/signup",
                json={"email": "bench@example.com", "password": "bench pass", "name": "Bench"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"signup failed: {r.status_code} {r.text}")
            token = r.json()["token"]
            r = http.post(
                "/api/sessions", json={"title": "Fan-out"}, headers={"authorization": f"Bearer {token}"}
            )
            if r.status_code != 201:
                raise RuntimeError(f"create session failed: {r.status_code} {r.text}")
            session_id = r.json()["id"]
        return f"ws://127.0.0.1:{self.port}/sync/{session_id}?token={token}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        # Anything left in the group (the server or a helper it started) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running(kind: str, workdir: Path, *, anchor_ws: str = "websockets") -> Iterator[Server]:
    server = Server(kind, workdir, anchor_ws=anchor_ws)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def run_one(kind: str, readers: int, args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.updates / args.rate + 60.0
    with (
        tempfile.TemporaryDirectory(prefix=f"fanout-{kind}-") as tmp,
        running(kind, Path(tmp), anchor_ws=args.anchor_ws) as server,
    ):
        cmd = [sys.executable, str(Path(__file__).resolve()), "_loadgen", "--url", server.url]
        cmd += ["--pgid", str(server.pgid), "--readers", str(readers), "--updates", str(args.updates)]
        cmd += ["--warmup", str(args.warmup), "--rate", str(args.rate), "--timeout", str(timeout)]
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 90, start_new_session=True
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"load generator timed out ({kind}, {readers} readers)") from exc
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(
                f"load generator failed ({kind}, {readers} readers, exit {done.returncode}):\n"
                f"{done.stderr[-3000:]}\n--- server log ---\n{server.log_tail()}"
            )
        if not server.alive():
            raise RuntimeError(f"{kind} died during the run:\n{server.log_tail()}")
        result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["server"] = kind
    return result


# --------------------------------------------------------------------------------------------
# Orchestration and reporting
# --------------------------------------------------------------------------------------------
SUMMARY_KEYS = (
    "cpu_us_per_delivery",
    "sched_us_per_delivery",
    "server_cpu_pct",
    "client_cpu_pct",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "worst_send_lag_ms",
    "drain_s",
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median (and range) per (server, readers) over repeats."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["server"], r["readers"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for (kind, readers), rs in groups.items():
        entry: dict[str, Any] = {"server": kind, "readers": readers, "repeats": len(rs)}
        for key in SUMMARY_KEYS:
            values = [r[key] for r in rs]
            entry[key] = statistics.median(values)
            entry[key + "_min"] = min(values)
            entry[key + "_max"] = max(values)
        out[f"{kind}/{readers}"] = entry
    return out


def format_table(summary: dict[str, dict[str, Any]], servers: Sequence[str], readers: Sequence[int]) -> str:
    head = (
        f"{'server':<24} {'readers':>7} {'µs/delivered':>13} {'(min-max)':>15} {'server CPU':>10} "
        f"{'client CPU':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for n in readers:
        for kind in servers:
            e = summary.get(f"{kind}/{n}")
            if e is None:
                continue
            spread = f"{e['cpu_us_per_delivery_min']:.1f}-{e['cpu_us_per_delivery_max']:.1f}"
            lines.append(
                f"{kind:<24} {n:>7} {e['cpu_us_per_delivery']:>13.1f} {spread:>15} "
                f"{e['server_cpu_pct']:>9.0f}% {e['client_cpu_pct']:>9.0f}% "
                f"{e['p50_ms']:>8.2f} {e['p99_ms']:>8.2f} {e['max_ms']:>8.1f}"
            )
    return "\n".join(lines)


def ratios(summary: dict[str, dict[str, Any]], readers: Sequence[int]) -> dict[str, dict[int, float]]:
    """anchor µs per delivered update / Escenario µs per delivered update."""
    out: dict[str, dict[int, float]] = {}
    for anchor in (ANCHOR, ANCHOR_STORE):
        for n in readers:
            ours = summary.get(f"{ESCENARIO}/{n}")
            theirs = summary.get(f"{anchor}/{n}")
            if ours and theirs and ours["cpu_us_per_delivery"] > 0:
                out.setdefault(anchor, {})[n] = theirs["cpu_us_per_delivery"] / ours["cpu_us_per_delivery"]
    return out


def verdicts(summary: dict[str, dict[str, Any]], ratio: dict[str, dict[int, float]]) -> list[str]:
    lines = []
    r = ratio.get(ANCHOR, {}).get(TARGET_READERS)
    if r is None:
        lines.append(
            f"CPU target: not evaluated (needs {ESCENARIO} and {ANCHOR} at {TARGET_READERS} readers)"
        )
    else:
        verdict = "TARGET MET" if r >= CPU_TARGET_RATIO else "TARGET MISSED"
        lines.append(
            f"CPU per delivered update, {TARGET_READERS} readers: {ANCHOR} / {ESCENARIO} = {r:.2f}x "
            f"(target ≥ {CPU_TARGET_RATIO:.0f}x): {verdict}"
        )
    ours = summary.get(f"{ESCENARIO}/{TARGET_READERS}")
    if ours is None:
        lines.append(f"p99 target: not evaluated (needs {ESCENARIO} at {TARGET_READERS} readers)")
    else:
        verdict = "TARGET MET" if ours["p99_ms"] <= P99_TARGET_MS else "TARGET MISSED"
        lines.append(
            f"p99 delivery latency, {TARGET_READERS} readers: {ours['p99_ms']:.2f} ms "
            f"(target ≤ {P99_TARGET_MS:.0f} ms): {verdict}"
        )
    return lines


def plot(
    summary: dict[str, dict[str, Any]], servers: Sequence[str], readers: Sequence[int], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cpu, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(servers))
    xs = range(len(readers))
    for k, kind in enumerate(servers):
        cpu = [summary.get(f"{kind}/{n}", {}).get("cpu_us_per_delivery", float("nan")) for n in readers]
        p99 = [summary.get(f"{kind}/{n}", {}).get("p99_ms", float("nan")) for n in readers]
        offs = [x - 0.4 + width * (k + 0.5) for x in xs]
        bars = ax_cpu.bar(offs, cpu, width, label=kind)
        ax_cpu.bar_label(bars, fmt="%.1f", fontsize=8)
        bars = ax_lat.bar(offs, p99, width, label=kind)
        ax_lat.bar_label(bars, fmt="%.1f", fontsize=8)
    for ax, title in ((ax_cpu, "server CPU µs per delivered update"), (ax_lat, "p99 delivery latency (ms)")):
        ax.set_xticks(list(xs), [f"{n} readers" for n in readers])
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax_lat.set_yscale("log")
    ax_lat.axhline(P99_TARGET_MS, color="grey", linestyle="--", linewidth=1)
    fig.suptitle("Sync fan-out: 1 writer, small map updates (median of repeats)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sync fan-out benchmark: Escenario vs pycrdt-websocket.",
        epilog="Targets: ≥ 3x less server CPU per delivered update than pycrdt-websocket, "
        "p99 ≤ 10 ms, at 20 readers.",
    )
    parser.add_argument("--updates", type=int, default=2000, help="measured updates per run (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured updates first (default 100)")
    parser.add_argument("--rate", type=float, default=500.0, help="updates per second (default 500)")
    parser.add_argument("--readers", default="20,100", help="comma-separated reader counts (default 20,100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {', '.join(KNOWN_SERVERS)} (default: {','.join(SERVERS)}); "
        f"{ESCENARIO_NOLOG} is Escenario with its update log stubbed out (diagnostic)",
    )
    parser.add_argument(
        "--anchor-ws",
        default="websockets",
        help="uvicorn WebSocket implementation for the pycrdt-websocket anchor (default: websockets, "
        "the option the issue fixes; websockets-sansio is uvicorn's newer one)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 300 updates, 1 repeat")
    parser.add_argument(
        "--json",
        nargs="?",
        type=Path,
        const=RESULTS_DIR / "sync_fanout.json",
        help="write all runs and the summary as JSON (default path: benchmarks/results/sync_fanout.json)",
    )
    parser.add_argument(
        "--plot",
        nargs="?",
        type=Path,
        const=RESULTS_DIR / "sync_fanout.png",
        help="bar chart of µs per delivered update and p99 (default: benchmarks/results/sync_fanout.png)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.updates, args.warmup, args.repeats = 300, 50, 1
    try:
        args.reader_counts = [int(n) for n in args.readers.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--readers: expected comma-separated integers, got {args.readers!r}")
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - set(KNOWN_SERVERS)
    if unknown:
        choices = ", ".join(KNOWN_SERVERS)
        parser.error(f"--servers: unknown {', '.join(sorted(unknown))}; choose from {choices}")
    if args.updates <= 0 or args.rate <= 0 or args.repeats <= 0 or args.warmup < 0 or not args.reader_counts:
        parser.error("--updates, --rate, --repeats and --readers must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_loadgen":
        return loadgen_main(argv[1:])
    args = parse_args(argv)
    if sys.platform != "linux":
        print("sync_fanout.py reads server CPU from /proc: Linux only", file=sys.stderr)
        return 2
    servers: list[str] = args.server_list
    readers: list[int] = args.reader_counts
    info = machine_info()
    print(
        f"sync fan-out: {args.updates} updates at {args.rate:g}/s (+{args.warmup} warm-up), "
        f"readers {readers}, {args.repeats} repeat(s); {info['nproc']} CPUs, {info['cpu_model']}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(args.repeats):
        order = servers if rep % 2 == 0 else list(reversed(servers))
        for n in readers:
            for kind in order:
                try:
                    r = run_one(kind, n, args)
                except (RuntimeError, OSError) as exc:
                    print(f"\nERROR: {kind} with {n} readers (repeat {rep + 1}): {exc}", file=sys.stderr)
                    return 1
                r["repeat"] = rep + 1
                runs.append(r)
                print(
                    f"  [{time.monotonic() - started:5.0f}s] rep {rep + 1} {kind:<24} {n:>3} readers: "
                    f"{r['cpu_us_per_delivery']:6.1f} µs/delivered (sched {r['sched_us_per_delivery']:.1f}), "
                    f"server {r['server_cpu_pct']:3.0f}% CPU, client {r['client_cpu_pct']:3.0f}%, "
                    f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms, "
                    f"send lag ≤ {r['worst_send_lag_ms']:.1f} ms",
                    flush=True,
                )
    summary = summarise(runs)
    ratio = ratios(summary, readers)
    print()
    print(f"Medians over {args.repeats} repeat(s):")
    print(format_table(summary, servers, readers))
    print()
    for anchor, by_n in ratio.items():
        for n, value in by_n.items():
            print(f"ratio {anchor} / {ESCENARIO} µs per delivered update, {n} readers: {value:.2f}x")
    for line in verdicts(summary, ratio):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": {
                "updates": args.updates,
                "warmup": args.warmup,
                "rate": args.rate,
                "readers": readers,
                "repeats": args.repeats,
                "servers": servers,
                "anchor_ws": args.anchor_ws,
            },
            "machine": info,
            "code": code_state("realtime", "persistence", key="server_code_modified"),
            "runs": runs,
            "summary": summary,
            "ratios": {k: {str(n): v for n, v in by_n.items()} for k, by_n in ratio.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(summary, servers, readers, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
