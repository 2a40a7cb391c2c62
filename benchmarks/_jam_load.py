"""Load generator for benchmarks/jam_capacity.py: N synthetic jam participants over WebSocket.

Runs in its own process (never inside the server) and keeps its own cost low so that the
server, not the generator, is what saturates: raw non-blocking TCP sockets, a hand-made
WebSocket handshake, pre-encoded Opus frames (real 2.5 ms stereo CELT packets at the
requested bitrate, several distinct loops so the server decodes varied audio), client frames
masked with the all-zero key (legal: the key is any 32-bit value, and masking is then the
identity, so a frame is built with one ``struct.pack_into``), and one epoll loop that sends
every participant's frame on an absolute 2.5 ms schedule and reads whatever arrived in between.

With ``--click``, participant 0 sends a loud click once a second over quiet tones, and
participant 1 decodes its mix and reports, per click, the time from the click's send to the
arrival of the first mix frame that contains it: a server-added latency measured at a client
(it includes the loopback hops and the generator's own scheduling, so it is an upper bound).

Prints ``STREAMING`` on stdout once every participant is connected and streaming, then a JSON
summary at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.jam.frames import CODEC_OPUS, HEADER, VERSION
from realtime.jam.opus import OpusDecoder, OpusEncoder

RATE = 48000
LOOP_FRAMES = 400  # one second of 2.5 ms frames


def _encode_loops(kinds: int, block: int, bitrate: int) -> list[list[bytes]]:
    rng = np.random.default_rng(7)
    loops = []
    t = np.arange(LOOP_FRAMES * block) / RATE
    for k in range(kinds):
        freq = 110.0 * 2 ** (k / 3)
        left = 0.02 * np.sin(2 * np.pi * freq * t) + 0.002 * rng.standard_normal(t.size)
        right = 0.02 * np.sin(2 * np.pi * freq * 1.5 * t) + 0.002 * rng.standard_normal(t.size)
        loops.append(_encode(np.stack([left, right]).astype(np.float32), block, bitrate))
    return loops


def _click_loop(block: int, bitrate: int) -> list[bytes]:
    rng = np.random.default_rng(11)
    audio = (0.001 * rng.standard_normal((2, LOOP_FRAMES * block))).astype(np.float32)
    audio[:, 10:30] = 0.9  # a 20-sample click in the first frame of every second
    return _encode(audio, block, bitrate)


def _codec_delay_ms(block: int) -> float:
    """One Opus encoder's algorithmic delay (its look-ahead), in ms."""
    enc = OpusEncoder(2, block)
    delay = enc.lookahead / RATE * 1000
    enc.close()
    return delay


def _encode(audio: np.ndarray, block: int, bitrate: int) -> list[bytes]:
    enc = OpusEncoder(2, block, bitrate=bitrate, complexity=5)
    frames = [
        enc.encode(np.ascontiguousarray(audio[:, i * block : (i + 1) * block])) for i in range(LOOP_FRAMES)
    ]
    # A second pass so every packet in the loop comes from a warmed-up encoder state.
    frames = [
        enc.encode(np.ascontiguousarray(audio[:, i * block : (i + 1) * block])) for i in range(LOOP_FRAMES)
    ]
    enc.close()
    return frames


def _ws_connect(host: str, port: int, path: str) -> tuple[socket.socket, bytes]:
    """A connected WebSocket and the bytes that came after the 101 response (the server's
    first frames may share a segment with it)."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise ConnectionError(f"handshake refused: {status!r}")
    return sock, head.split(b"\r\n\r\n", 1)[1]


def _client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload  # zero mask key: masking is the identity


class _Reader:
    """Splits one socket's server→client byte stream into WebSocket frames (unmasked)."""

    __slots__ = ("buf", "closed", "frames", "last_at", "max_gap", "payloads", "per_second", "pings")

    def __init__(self, keep_payloads: bool) -> None:
        self.buf = bytearray()
        # Server pings (keep-alive) waiting for our pong: a client that never answers is dropped.
        self.pings: list[bytes] = []
        self.frames = 0
        self.per_second: dict[int, int] = {}
        self.last_at = 0.0
        self.max_gap = 0.0
        self.closed: str | None = None
        self.payloads: list[tuple[float, bytes]] | None = [] if keep_payloads else None

    def feed(self, data: bytes, now: float, t0: float) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        sec = int(now - t0)
        while end - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if end - pos < hdr + n:
                break
            opcode = b0 & 0x0F
            if opcode == 2:
                self.frames += 1
                self.per_second[sec] = self.per_second.get(sec, 0) + 1
                if self.last_at:
                    self.max_gap = max(self.max_gap, now - self.last_at)
                self.last_at = now
                if self.payloads is not None:
                    self.payloads.append((now, bytes(buf[pos + hdr : pos + hdr + n])))
            elif opcode == 9:
                self.pings.append(bytes(buf[pos + hdr : pos + hdr + n]))
            elif opcode == 8:
                code = (buf[pos + hdr] << 8 | buf[pos + hdr + 1]) if n >= 2 else 1005
                self.closed = f"{code} {bytes(buf[pos + hdr + 2 : pos + hdr + n]).decode(errors='replace')}"
            pos += hdr + n
        if pos:
            del buf[:pos]


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) of each of the process's threads, by thread id."""
    out: dict[str, float] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[tid] = (int(fields[11]) + int(fields[12])) / tck
    return out


def _proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _click_latencies(sends: list[float], payloads: list[tuple[float, bytes]], block: int) -> list[float]:
    """Per click: arrival of the first mix frame holding it minus the click's send time (ms)."""
    dec = OpusDecoder(2, block)
    energy: list[tuple[float, float]] = []
    for at, frame in payloads:
        audio = dec.decode(memoryview(frame)[HEADER.size :])
        energy.append((at, float(np.abs(np.diff(audio, axis=1)).max())))
    dec.close()
    out: list[float] = []
    floor = float(np.median([e for _, e in energy])) if energy else 0.0
    threshold = max(0.2, 10 * floor)
    j = 0
    for sent in sends:
        while j < len(energy) and energy[j][0] < sent:
            j += 1
        k = j
        while k < len(energy) and energy[k][0] < sent + 0.5:
            if energy[k][1] > threshold:
                out.append((energy[k][0] - sent) * 1000)
                break
            k += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--session", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated; participant i uses tokens[i % len]")
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--block", type=int, default=120)
    ap.add_argument("--bitrate", type=int, default=128_000)
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--click", action="store_true")
    cfg = ap.parse_args()

    period = cfg.block / RATE
    codec_delay_ms = _codec_delay_ms(cfg.block)
    loops = _encode_loops(8, cfg.block, cfg.bitrate)
    click = _click_loop(cfg.block, cfg.bitrate) if cfg.click else None
    tokens = cfg.tokens.split(",")
    socks: list[socket.socket] = []
    readers = [_Reader(keep_payloads=cfg.click and i == 1) for i in range(cfg.n)]
    for i in range(cfg.n):
        sock, early = _ws_connect(cfg.host, cfg.port, f"/jam/{cfg.session}?token={tokens[i % len(tokens)]}")
        readers[i].buf += early
        sock.sendall(_client_frame(1, json.dumps({"type": "join", "codec": "opus", "channels": 2}).encode()))
        sock.setblocking(False)
        socks.append(sock)
    streams = [loops[i % len(loops)] for i in range(cfg.n)]
    if click is not None:
        streams[0] = click
    # Pre-built WebSocket+jam frames: only sequence and timestamp change per send.
    templates = [
        [
            bytearray(_client_frame(2, HEADER.pack(VERSION, CODEC_OPUS, 2, 0, 0, 0, cfg.block, 0) + p))
            for p in s
        ]
        for s in streams
    ]
    ws_head = [
        [len(t) - len(s[k]) - HEADER.size for k, t in enumerate(tt)]
        for tt, s in zip(templates, streams, strict=True)
    ]
    poller = select.epoll()
    fd_index = {}
    for i, sock in enumerate(socks):
        poller.register(sock.fileno(), select.EPOLLIN)
        fd_index[sock.fileno()] = i

    print("STREAMING", flush=True)
    t0 = time.monotonic()
    end = t0 + cfg.duration
    window_start = t0 + cfg.warmup
    cpu0 = srv0 = None
    late_ticks = skipped = send_blocked = 0
    click_sends: list[float] = []
    k = 0
    offsets = [(i * 37) % LOOP_FRAMES for i in range(cfg.n)]
    while True:
        deadline = t0 + k * period
        now = time.monotonic()
        if now >= end:
            break
        if cpu0 is None and now >= window_start:
            cpu0 = time.process_time()
            wall0 = now
            srv0 = _proc_cpu(cfg.server_pid) if cfg.server_pid else None
            threads0 = _thread_cpu(cfg.server_pid) if cfg.server_pid else {}
            frames0 = [r.frames for r in readers]
        if now - deadline > period:
            late_ticks += 1
            missed = int((now - deadline) / period)
            if missed > 4:  # far behind: skip rather than burst (the way a real client would)
                skipped += missed
                k += missed
                continue
        seq = k & 0xFFFFFFFF
        ts = (k * cfg.block) & 0xFFFFFFFF
        for i, sock in enumerate(socks):
            idx = (k + offsets[i]) % LOOP_FRAMES
            frame = templates[i][idx]
            struct.pack_into("!II", frame, ws_head[i][idx] + 4, seq, ts)
            try:
                sock.send(frame)
            except BlockingIOError:
                send_blocked += 1
            except OSError:
                pass
            if i == 0 and click is not None and idx == 0 and now >= window_start:
                click_sends.append(time.monotonic())  # the click's own send, not the burst's end
        k += 1
        next_deadline = t0 + k * period
        while True:
            timeout = next_deadline - time.monotonic()
            events = poller.poll(max(0.0, timeout))
            now = time.monotonic()
            for fd, _ in events:
                i = fd_index[fd]
                try:
                    data = socks[i].recv(262144)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    readers[i].closed = readers[i].closed or f"socket error {exc}"
                    poller.unregister(fd)
                    continue
                if not data:
                    readers[i].closed = readers[i].closed or "eof"
                    poller.unregister(fd)
                    continue
                readers[i].feed(data, now, t0)
                if readers[i].pings:
                    for ping in readers[i].pings:
                        with contextlib.suppress(OSError):
                            socks[i].send(_client_frame(10, ping))
                    readers[i].pings.clear()
            if now >= next_deadline:
                break
    now = time.monotonic()
    cpu1 = time.process_time()
    srv1 = _proc_cpu(cfg.server_pid) if cfg.server_pid else None
    threads1 = _thread_cpu(cfg.server_pid) if cfg.server_pid else {}
    rss = _proc_rss_mib(cfg.server_pid) if cfg.server_pid else float("nan")
    if cpu0 is None:
        raise SystemExit(
            f"the run ended before its measured window began (duration {cfg.duration} <= warmup)"
        )
    window = now - wall0
    for sock in socks:
        try:
            sock.setblocking(True)
            sock.sendall(_client_frame(8, struct.pack("!H", 1000)))
            sock.close()
        except OSError:
            pass
    first_sec, last_sec = int(cfg.warmup) + 1, int(cfg.duration) - 1
    rates = [(r.frames - f0) / window for r, f0 in zip(readers, frames0, strict=True)]
    worst = min((r.per_second.get(s, 0) for r in readers for s in range(first_sec, last_sec)), default=0)
    out = {
        "n": cfg.n,
        "block": cfg.block,
        "codec_delay_ms": codec_delay_ms,
        "window_s": window,
        "expected_pps": RATE / cfg.block,
        "rx_pps_mean": float(np.mean(rates)),
        "rx_pps_min": float(np.min(rates)),
        "worst_client_second": worst,
        "max_gap_ms": max(r.max_gap for r in readers) * 1000,
        "closed": [r.closed for r in readers if r.closed],
        "gen_cpu_per_s": (cpu1 - cpu0) / window,
        "gen_late_ticks": late_ticks,
        "gen_skipped_ticks": skipped,
        "send_blocked": send_blocked,
    }
    if srv0 is not None and srv1 is not None:
        out["server_cpu_per_s"] = (srv1 - srv0) / window
        out["server_cpu_pct_per_client"] = 100 * (srv1 - srv0) / window / cfg.n
        out["server_rss_mib"] = rss
        # Where the server's CPU went, by thread id (the benchmark names the tick thread's).
        out["server_threads_cpu_per_s"] = {
            name: round((threads1.get(name, 0.0) - threads0.get(name, 0.0)) / window, 4)
            for name in sorted(set(threads0) | set(threads1))
            if threads1.get(name, 0.0) - threads0.get(name, 0.0) > 0
        }
    if click is not None and readers[1].payloads is not None:
        lat = _click_latencies(click_sends, readers[1].payloads, cfg.block)
        out["click_latency_ms"] = {
            "count": len(lat),
            "sent": len(click_sends),
            "p50": float(np.percentile(lat, 50)) if lat else None,
            "p99": float(np.percentile(lat, 99)) if lat else None,
            "max": max(lat) if lat else None,
        }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
