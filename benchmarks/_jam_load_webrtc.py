"""WebRTC load generator for ``benchmarks/jam_webrtc_capacity.py`` (one process, ``-n`` clients).

Each client is a real aiortc peer connection that joins the jam through the server's WHIP-style
``POST /api/sessions/{id}/jam/webrtc`` and streams 2.5 ms stereo Opus at 128 kbit/s:

- ``--path rtp``: an ``m=audio`` section whose sending track is
  :class:`~realtime.transport.rtp_audio.PreEncodedOpusTrack`, so aiortc only packetizes the
  pre-encoded 2.5 ms packets (its own 20 ms encoder never runs, on this side either). The mixes
  that come back are counted by :func:`~realtime.transport.rtp_audio.intercept_audio_receiver`
  (no jitter buffer, no decoder thread): the generator spends its CPU on transport, as the server
  does, not on decoding what it would throw away.
- ``--path datachannel``: jam frames on the unordered, zero-retransmit ``jam-audio`` DataChannel,
  mixes read back from it.

Packets are pre-encoded once (a one-second loop per client, from a warmed-up encoder) and sent
on an absolute 2.5 ms schedule for all clients of the process at once; a tick more than four
periods late is skipped, as a real client would, and counted.

Protocol with the driver (stdout / stdin, one line each): the generator connects every client,
starts streaming and prints ``READY``; it waits for ``GO`` on stdin, measures from ``GO + warmup``
to ``GO + duration`` (its own CPU, mixes received per client), then prints one JSON line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtp import RtpPacket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.jam import frames as jf
from realtime.jam.opus import OpusEncoder
from realtime.transport import rtp_audio
from realtime.transport.jam_webrtc import AUDIO_LABEL, CONTROL_LABEL, loopback_candidates

RATE = 48000
LOOP_FRAMES = 400  # one second of 2.5 ms frames
KINDS = 8  # distinct signals; client i plays loop i % KINDS
MAX_BEHIND = 4  # ticks: further behind than this, skip rather than burst
_SEQ_TS = struct.Struct("!II")  # sequence and timestamp at offset 4 of the jam frame header


def encode_loop(kind: int, block: int, bitrate: int) -> list[bytes]:
    """One second of stereo Opus packets (two tones plus a little noise), from a warm encoder."""
    rng = np.random.default_rng(7 + kind)
    t = np.arange(LOOP_FRAMES * block) / RATE
    freq = 110.0 * 2 ** (kind / 3)
    left = 0.02 * np.sin(2 * np.pi * freq * t) + 0.002 * rng.standard_normal(t.size)
    right = 0.02 * np.sin(2 * np.pi * freq * 1.5 * t) + 0.002 * rng.standard_normal(t.size)
    audio = np.stack([left, right]).astype(np.float32)
    enc = OpusEncoder(2, block, bitrate=bitrate, complexity=5)
    try:
        blocks = [np.ascontiguousarray(audio[:, i * block : (i + 1) * block]) for i in range(LOOP_FRAMES)]
        for b in blocks:  # first pass warms the encoder state up; the loop is the second pass
            enc.encode(b)
        return [enc.encode(b) for b in blocks]
    finally:
        enc.close()


def blocks_in(payload: bytes, block: int) -> int:
    """How many engine blocks an Opus packet holds (one, unless the server joined several)."""
    if not payload:
        return 0
    frames = 1 if payload[0] & 3 == 0 else len(rtp_audio.opus_frames(payload))
    return frames * rtp_audio.toc_frame_samples(payload[0]) // block


class Client:
    """One jam participant over WebRTC: sends pre-encoded packets, counts the mixes it gets."""

    def __init__(self, index: int, path: str, block: int, loop: list[bytes]) -> None:
        self.index = index
        self.path = path
        self.block = block
        self.loop = loop
        self.offset = (index * 37) % LOOP_FRAMES
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.control = self.pc.createDataChannel(CONTROL_LABEL)
        self.control.on("message", self._on_control)
        self.track: rtp_audio.PreEncodedOpusTrack | None = None
        self.audio: RTCDataChannel | None = None
        self.templates: list[bytearray] = []
        self.blocks_in = 0
        self.per_second: dict[int, int] = {}
        self.last_at = 0.0
        self.max_gap = 0.0
        self.t0 = 0.0
        self.sent = 0
        self.send_dropped = 0
        self.errors: list[tuple[float, str]] = []  # (monotonic time, error)
        self.location = ""
        self.token = ""
        if path == "rtp":
            self.track = rtp_audio.PreEncodedOpusTrack(max_queue=8)
            transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
            # Every RTP packet of this receiver is the mix: count it, decode nothing.
            rtp_audio.intercept_audio_receiver(transceiver.receiver, self._on_rtp, set(range(128)))
        else:
            self.audio = self.pc.createDataChannel(AUDIO_LABEL, ordered=False, maxRetransmits=0)
            self.audio.on("message", self._on_audio)
            self.templates = [
                bytearray(jf.HEADER.pack(jf.VERSION, jf.CODEC_OPUS, 2, 0, 0, 0, block, 0) + p) for p in loop
            ]

    # receive ------------------------------------------------------------------------------

    def _count(self, blocks: int) -> None:
        now = time.monotonic()
        self.blocks_in += blocks
        sec = int(now - self.t0) if self.t0 else -1
        self.per_second[sec] = self.per_second.get(sec, 0) + blocks
        if self.last_at:
            self.max_gap = max(self.max_gap, now - self.last_at)
        self.last_at = now

    def _on_rtp(self, packet: RtpPacket) -> None:
        self._count(blocks_in(packet.payload, self.block))

    def _on_audio(self, message: bytes | str) -> None:
        if isinstance(message, bytes) and len(message) > jf.HEADER_SIZE:
            self._count(jf.HEADER.unpack_from(message)[6] // self.block)

    def _on_control(self, message: bytes | str) -> None:
        with contextlib.suppress(ValueError, TypeError):
            msg = json.loads(message)
            if isinstance(msg, dict) and msg.get("type") == "error":
                self.errors.append((time.monotonic(), f"{msg.get('code')}: {msg.get('message')}"))

    # send ---------------------------------------------------------------------------------

    def send(self, k: int) -> None:
        idx = (k + self.offset) % LOOP_FRAMES
        ts = (k * self.block) & 0xFFFFFFFF
        if self.track is not None:
            if not self.track.push(self.loop[idx], ts):
                self.send_dropped += 1
        elif self.audio is not None and self.audio.readyState == "open":
            frame = self.templates[idx]
            flags = jf.FLAG_RESYNC if k == 0 else 0
            frame[3] = flags
            _SEQ_TS.pack_into(frame, 4, k & 0xFFFFFFFF, ts)
            self.audio.send(bytes(frame))
        self.sent += 1

    # signalling ---------------------------------------------------------------------------

    async def connect(self, http: httpx.AsyncClient, session: str, token: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        r = await http.post(
            f"/api/sessions/{session}/jam/webrtc",
            content=self.pc.localDescription.sdp.encode(),
            headers={"authorization": f"Bearer {token}", "content-type": "application/sdp"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"client {self.index}: offer refused: {r.status_code} {r.text[:300]}")
        self.location, self.token = r.headers["location"], token
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
        await _wait(lambda: self.pc.connectionState == "connected", 30, f"client {self.index} to connect")
        await _wait(lambda: self.control.readyState == "open", 10, f"client {self.index}: jam-control")
        if self.audio is not None:
            audio = self.audio
            await _wait(lambda: audio.readyState == "open", 10, f"client {self.index}: jam-audio")

    async def server_side(self, http: httpx.AsyncClient) -> dict[str, Any]:
        """The server's view of this peer (``GET`` on the answer's ``Location``)."""
        r = await http.get(self.location, headers={"authorization": f"Bearer {self.token}"})
        if r.status_code != 200:
            return {"error": f"{r.status_code} {r.text[:200]}"}
        snap: dict[str, Any] = r.json()
        return snap

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()


async def _wait(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


class Pacer:
    """Sends one packet per client per block on an absolute schedule, from ``start``."""

    def __init__(self, clients: list[Client], period: float) -> None:
        self.clients = clients
        self.period = period
        self.k = 0
        self.late = 0
        self.skipped = 0
        self.start = 0.0
        self._task: asyncio.Task[None] | None = None

    def run(self) -> None:
        self.start = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            due = int((now - self.start) / self.period) + 1
            behind = due - self.k
            if behind > 1:
                self.late += 1
            if behind > MAX_BEHIND:
                self.skipped += behind - 1
                self.k = due - 1
            while self.k < due:
                for c in self.clients:
                    c.send(self.k)
                self.k += 1
            await asyncio.sleep(max(0.0, self.start + self.k * self.period - time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def main_async(cfg: argparse.Namespace) -> dict[str, Any]:
    if cfg.loopback:
        loopback_candidates(True)
    tokens = cfg.tokens.split(",")
    period = cfg.block / RATE
    indices = range(cfg.first, cfg.first + cfg.n)
    loops = {k: encode_loop(k, cfg.block, cfg.bitrate) for k in {i % KINDS for i in indices}}
    clients = [Client(i, cfg.path, cfg.block, loops[i % KINDS]) for i in indices]
    pacer = Pacer(clients, period)
    try:
        async with httpx.AsyncClient(base_url=cfg.base, timeout=60) as http:
            for i, c in enumerate(clients):  # one at a time: the server gathers ICE per offer
                await c.connect(http, cfg.session, tokens[i % len(tokens)])
            return await _stream(cfg, clients, pacer, http)
    finally:
        await pacer.stop()
        await asyncio.gather(*(c.close() for c in clients))
        if cfg.loopback:
            loopback_candidates(False)


async def _stream(
    cfg: argparse.Namespace, clients: list[Client], pacer: Pacer, http: httpx.AsyncClient
) -> dict[str, Any]:
    pacer.run()
    await asyncio.sleep(0.5)
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        raise RuntimeError(f"expected GO from the driver, got {line!r}")
    go = time.monotonic()
    for c in clients:
        c.t0 = go
    await asyncio.sleep(cfg.warmup)
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    blocks0 = [c.blocks_in for c in clients]
    sent0 = [c.sent for c in clients]
    late0, skipped0 = pacer.late, pacer.skipped
    for c in clients:
        c.max_gap = 0.0
    await asyncio.sleep(max(0.5, go + cfg.duration - time.monotonic()))
    cpu1 = time.process_time()
    window = time.monotonic() - wall0
    late, skipped = pacer.late - late0, pacer.skipped - skipped0
    rates = [(c.blocks_in - b0) / window for c, b0 in zip(clients, blocks0, strict=True)]
    sent = [(c.sent - s0) / window for c, s0 in zip(clients, sent0, strict=True)]
    first_sec, last_sec = int(cfg.warmup) + 1, int(cfg.duration) - 1
    worst = min((c.per_second.get(s, 0) for c in clients for s in range(first_sec, last_sec)), default=0)
    await pacer.stop()
    # After the window: what the server saw of each peer (input decoded? packets joined? drops?).
    server_side = [await c.server_side(http) for c in clients]
    return {
        "n": cfg.n,
        "first": cfg.first,
        "path": cfg.path,
        "window_s": window,
        "expected_pps": RATE / cfg.block,
        "rx_pps": rates,
        "sent_pps": sent,
        "worst_client_second": worst,
        "max_gap_ms": max(c.max_gap for c in clients) * 1000,
        "gen_cpu_per_s": (cpu1 - cpu0) / window,
        "gen_late_ticks": late,
        "gen_skipped_ticks": skipped,
        "send_dropped": sum(c.send_dropped for c in clients),
        # Seconds relative to GO: negative means while the other generators were still connecting.
        "errors": [f"client {c.index} at {at - go:+.1f} s: {e}" for c in clients for at, e in c.errors],
        "closed": [c.index for c in clients if c.pc.connectionState != "connected"],
        "server_side": server_side,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the server's base URL, http://127.0.0.1:PORT")
    ap.add_argument("--session", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated; client i uses tokens[i % len]")
    ap.add_argument("-n", type=int, required=True, help="clients in this process")
    ap.add_argument("--first", type=int, default=0, help="global index of this process's first client")
    ap.add_argument("--path", choices=("rtp", "datachannel"), default="rtp")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds from GO to the end")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds from GO to the measured window")
    ap.add_argument("--block", type=int, default=120)
    ap.add_argument("--bitrate", type=int, default=128_000)
    ap.add_argument("--loopback", action="store_true", help="offer 127.0.0.1 as an ICE candidate")
    cfg = ap.parse_args()
    if cfg.block not in jf.ALLOWED_FRAMES:
        ap.error(f"--block must be one of {sorted(jf.ALLOWED_FRAMES)}")
    if cfg.duration <= cfg.warmup:
        ap.error("--duration must exceed --warmup")
    result = asyncio.run(main_async(cfg))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
