"""CPU per audio packet on each live-jam transport path: aiortc RTP, aiortc DataChannel, WebSocket.

The server side runs in this process; the remote peers run in a child process (the load
generator), so ``time.process_time()`` here counts only the server's work. Each path carries
``--peers`` streams of 2.5 ms stereo Opus frames (120 samples, 128 kbit/s CBR, real packets from
:mod:`realtime.jam.opus`) at 400 packets per second each, paced on an absolute schedule, for
``--seconds`` per run, ``--runs`` runs per path. The figure is the server's CPU time over the
window, minus what the same connections cost idle for as long (RTCP, consent checks, keep-alive),
divided by the packets the server handled; send paths also subtract the pacing loop's own cost
(``pacing`` row). The table gives the median over runs.

Paths (server side):

- ``rtp-recv``: SRTP → aiortc's RTP parse and routing → our intercept (``rtp_audio``) → a jam frame
  → ``engine.receive`` (a no-op engine): the product receive path.
- ``rtp-recv-stock``: the same packets through aiortc's own receiver (jitter buffer, decoder
  thread, ``AudioFrame`` per packet), consumed from the track: what the intercept replaces.
- ``rtp-send``: ``sink.send_audio`` → :class:`~realtime.transport.rtp_audio.PreEncodedOpusTrack`
  → aiortc's sender (``av.Packet``, RTP serialize, SRTP) for pre-encoded packets.
- ``dc-recv`` / ``dc-send``: jam frames on the ``jam-audio`` DataChannel (unordered, no
  retransmits): aiortc's pure-Python SCTP in both directions.
- ``ws-recv`` / ``ws-send`` (anchor): the same jam frames as binary WebSocket messages under
  uvicorn with :mod:`realtime.transport.uvicorn_ws` (the server's protocol class): inbound through
  the direct ``on_binary`` hook, outbound pre-framed with ``wsframe.binary_frame`` and written to
  the transport, as the sync endpoint does.
- ``ws-asgi-recv`` / ``ws-asgi-send``: the same through plain ASGI ``receive``/``send``.

Usage:
    python benchmarks/webrtc_packet_cost.py                 # 4 peers, 3 s, 3 runs, all paths
    python benchmarks/webrtc_packet_cost.py --quick         # smoke test
    python benchmarks/webrtc_packet_cost.py --json          # also write results/webrtc_packet_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, code_state, machine_info

RESULTS_DIR = ROOT / "benchmarks" / "results"
RATE = 400  # packets per second per stream: one 2.5 ms frame each
PATHS = (
    "rtp-recv",
    "rtp-recv-stock",
    "rtp-send",
    "dc-recv",
    "dc-send",
    "ws-recv",
    "ws-send",
    "ws-asgi-recv",
    "ws-asgi-send",
)


def opus_frames(count: int) -> list[bytes]:
    """Jam frames of real 2.5 ms stereo Opus (a 440/660 Hz chord) with consecutive headers."""
    import numpy as np

    from realtime.jam import frames as jf
    from realtime.jam.opus import OpusEncoder

    enc = OpusEncoder(2, 120, bitrate=128_000)
    out = []
    for i in range(count):
        t = (np.arange(120) + 120 * i) / 48000
        x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
        payload = enc.encode(np.stack([x, x]))
        out.append(
            jf.encode_frame(
                codec=jf.CODEC_OPUS, channels=2, sequence=i, timestamp=120 * i, frames=120, payload=payload
            )
        )
    return out


class Pacer:
    """Calls ``tick(n)`` at RATE per second on an absolute schedule (catching up when late)."""

    def __init__(self, tick: Any) -> None:
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        period = 1.0 / RATE
        start = time.monotonic()
        while True:
            due = int((time.monotonic() - start) / period) + 1
            while self.ticks < due:
                self._tick(self.ticks)
                self.ticks += 1
            await asyncio.sleep(max(0.0, start + self.ticks * period - time.monotonic()))


# ----------------------------------------------------------------------------------------------
# load generator (child process): JSON lines on stdin/stdout


async def _lines() -> Any:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def child(path: str, peers: int, url: str) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from realtime.transport import rtp_audio

    reader = await _lines()
    frames = opus_frames(RATE)
    received = [0]
    senders: list[Any] = []
    closers: list[Any] = []

    if path.startswith("ws"):
        import websockets

        conns = [await websockets.connect(url, max_size=None, compression=None) for _ in range(peers)]

        async def drain(c: Any) -> None:
            async for _ in c:
                received[0] += 1

        drains = [asyncio.create_task(drain(c)) for c in conns]
        if path.endswith("recv"):
            pending: list[Any] = []

            def ws_tick(i: int) -> None:
                f = frames[i % len(frames)]
                for c in conns:
                    pending.append(asyncio.ensure_future(c.send(f)))
                if len(pending) > 1000:
                    del pending[:-100]

            senders.append(Pacer(ws_tick))

        async def close_ws() -> None:
            for d in drains:
                d.cancel()
            for c in conns:
                await c.close()

        closers.append(close_ws)
    else:
        pcs = []
        offers = []
        tracks: list[rtp_audio.PreEncodedOpusTrack] = []
        channels: list[Any] = []
        for _ in range(peers):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            if path.startswith("rtp"):
                track = rtp_audio.PreEncodedOpusTrack(max_queue=64)
                tr = pc.addTransceiver(track, direction="sendrecv")
                tracks.append(track)

                def count(_packet: Any) -> None:
                    received[0] += 1

                rtp_audio.intercept_audio_receiver(tr.receiver, count, {96, 111})
            else:
                ch = pc.createDataChannel("jam-audio", ordered=False, maxRetransmits=0)

                def on_message(_m: Any) -> None:
                    received[0] += 1

                ch.on("message", on_message)
                channels.append(ch)
            await pc.setLocalDescription(await pc.createOffer())
            offers.append(pc.localDescription.sdp)
            pcs.append(pc)
        _say({"offers": offers})
        answers = json.loads(await reader.readline())["answers"]
        for pc, answer in zip(pcs, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        for _ in range(200):
            if all(pc.connectionState == "connected" for pc in pcs) and all(
                c.readyState == "open" for c in channels
            ):
                break
            await asyncio.sleep(0.05)
        if path.endswith("recv") or path == "rtp-recv-stock":
            payloads = [f[16:] for f in frames]

            def rtc_tick(i: int) -> None:
                if tracks:
                    for t in tracks:
                        t.push(payloads[i % len(payloads)], 120 * i)
                else:
                    for c in channels:
                        c.send(frames[i % len(frames)])

            senders.append(Pacer(rtc_tick))

        async def close_rtc() -> None:
            for pc in pcs:
                await pc.close()

        closers.append(close_rtc)

    _say({"ready": True})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)["cmd"]
        if cmd == "start":
            for s in senders:
                s.start()
            _say({"ok": True})
        elif cmd == "stop":
            for s in senders:
                await s.stop()
            _say({"received": received[0], "sent": sum(s.ticks for s in senders) * peers})
        elif cmd == "count":
            _say({"received": received[0]})
        elif cmd == "exit":
            break
    for c in closers:
        await c()
    _say({"bye": True})


# ----------------------------------------------------------------------------------------------
# server side (this process)


class NullEngine:
    """Counts what reaches the engine; does nothing else (the transport's cost alone)."""

    block = 120

    def __init__(self) -> None:
        self.received = 0
        self.sinks: list[Any] = []

    def join(self, user_id: str, name: str, *, can_send: bool, sink: Any) -> Any:
        self.sinks.append(sink)
        return SimpleNamespace(pid=f"p{len(self.sinks)}")

    def leave(self, pid: str) -> None:
        pass

    def receive(self, pid: str, data: bytes) -> None:
        self.received += 1

    def control(self, pid: str, msg: Any) -> list[str]:
        return []

    def set_rtt(self, pid: str, rtt_ms: float) -> None:
        pass


class NullRegistry:
    """The jam registry's face as JamWebRtc sees it, always handing out one NullEngine."""

    def __init__(self, engine: NullEngine) -> None:
        self.engine = engine
        self.config = SimpleNamespace(block=engine.block)

    def acquire(self, session_id: str) -> NullEngine:
        return self.engine


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def send(self, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read()


async def spawn(path: str, peers: int, url: str = "") -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "_child",
        path,
        str(peers),
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    return Child(proc)


async def measure_window(seconds: float, counter: Any) -> tuple[float, int]:
    c0, n0 = time.process_time(), counter()
    await asyncio.sleep(seconds)
    return time.process_time() - c0, counter() - n0


async def run_webrtc(path: str, peers: int, seconds: float, idle_s: float) -> dict[str, Any]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from realtime.transport.jam_webrtc import JamWebRtc

    engine = NullEngine()
    rtc = JamWebRtc(NullRegistry(engine), inactivity_s=60.0)  # type: ignore[arg-type]
    child_proc = await spawn(path, peers)
    offers = (await child_proc.read())["offers"]
    stock_frames = [0]
    stock: list[Any] = []
    answers = []
    for offer in offers:
        if path == "rtp-recv-stock":
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

            @pc.on("track")
            def on_track(track: Any) -> None:
                async def pull() -> None:
                    while True:
                        await track.recv()
                        stock_frames[0] += 1

                stock.append(asyncio.ensure_future(pull()))

            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answers.append(pc.localDescription.sdp)
            stock.append(pc)
        else:
            _, answer = await rtc.open("bench", "u", "bench", can_send=True, offer_sdp=offer)
            answers.append(answer)
    await child_proc.send({"answers": answers})  # → ready
    await asyncio.sleep(0.5)
    sent = [0]
    frames = opus_frames(RATE)

    def send_tick(i: int) -> None:
        f = frames[i % len(frames)]
        for sink in engine.sinks:
            sink.send_audio((f,))
        sent[0] += len(engine.sinks)

    if path == "rtp-recv":
        counter = lambda: engine.received  # noqa: E731
    elif path == "rtp-recv-stock":
        counter = lambda: stock_frames[0]  # noqa: E731
    elif path == "dc-recv":
        counter = lambda: engine.received  # noqa: E731
    else:
        counter = lambda: sent[0]  # noqa: E731
    idle_cpu, _ = await measure_window(idle_s, counter)
    pacer = Pacer(send_tick) if path.endswith("send") else None
    await child_proc.send({"cmd": "start"})
    if pacer:
        pacer.start()
    await asyncio.sleep(0.3)  # past start-up transients
    cpu, packets = await measure_window(seconds, counter)
    if pacer:
        await pacer.stop()
    done = await child_proc.send({"cmd": "stop"})
    await asyncio.sleep(0.2)
    received_total = engine.received if path != "rtp-recv-stock" else stock_frames[0]
    await child_proc.send({"cmd": "exit"})
    await child_proc.proc.wait()
    await rtc.close_all()
    for item in stock:
        if isinstance(item, asyncio.Future):
            item.cancel()
        else:
            await item.close()
    return {
        "cpu_s": cpu,
        "idle_cpu_s": idle_cpu * seconds / idle_s,
        "packets": packets,
        "peer_received": done["received"],
        "peer_sent": done["sent"],
        "server_sent": sent[0],
        "server_received": received_total,
    }


async def run_ws(path: str, peers: int, seconds: float, idle_s: float) -> dict[str, Any]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from realtime.transport.uvicorn_ws import DIRECT_EXTENSION, EscenarioWebSocketProtocol
    from realtime.transport.wsframe import binary_frame

    direct_path = not path.startswith("ws-asgi")
    received = [0]
    outs: list[Any] = []

    def on_binary(_data: bytes) -> None:
        received[0] += 1

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        direct = ws.scope.get("extensions", {}).get(DIRECT_EXTENSION)
        if direct_path:
            assert direct is not None, "uvicorn did not offer the direct channel"
            direct.on_binary = on_binary
            outs.append(direct)
        else:
            outs.append(ws)
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("bytes") is not None:
                received[0] += 1

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=EscenarioWebSocketProtocol, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    serve = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    child_proc = await spawn(path, peers, f"ws://127.0.0.1:{port}/ws")
    await child_proc.read()  # ready
    await asyncio.sleep(0.3)
    frames = opus_frames(RATE)
    wires = [binary_frame(f) for f in frames]
    sent = [0]
    pending: list[Any] = []

    def send_tick(i: int) -> None:
        if direct_path:
            wire = wires[i % len(wires)]
            for d in outs:
                d.write(wire)
        else:
            f = frames[i % len(frames)]
            for ws in outs:
                pending.append(asyncio.ensure_future(ws.send_bytes(f)))
            if len(pending) > 1000:
                del pending[:-100]
        sent[0] += len(outs)

    counter = (lambda: sent[0]) if path.endswith("send") else (lambda: received[0])
    idle_cpu, _ = await measure_window(idle_s, counter)
    pacer = Pacer(send_tick) if path.endswith("send") else None
    await child_proc.send({"cmd": "start"})
    if pacer:
        pacer.start()
    await asyncio.sleep(0.3)
    cpu, packets = await measure_window(seconds, counter)
    if pacer:
        await pacer.stop()
    done = await child_proc.send({"cmd": "stop"})
    await asyncio.sleep(0.2)
    received_total = received[0]
    await child_proc.send({"cmd": "exit"})
    await child_proc.proc.wait()
    server.should_exit = True
    await serve
    return {
        "cpu_s": cpu,
        "idle_cpu_s": idle_cpu * seconds / idle_s,
        "packets": packets,
        "peer_received": done["received"],
        "peer_sent": done["sent"],
        "server_sent": sent[0],
        "server_received": received_total,
    }


async def run_pacing(peers: int, seconds: float) -> dict[str, Any]:
    """The pacing loop alone, handing frames to sinks that do nothing (subtracted from sends)."""
    frames = opus_frames(RATE)
    sent = [0]

    class Null:
        def send_audio(self, frames: Any) -> bool:
            return True

    sinks = [Null() for _ in range(peers)]

    def tick(i: int) -> None:
        f = frames[i % len(frames)]
        for s in sinks:
            s.send_audio((f,))
        sent[0] += peers

    pacer = Pacer(tick)
    pacer.start()
    await asyncio.sleep(0.3)
    cpu, packets = await measure_window(seconds, lambda: sent[0])
    await pacer.stop()
    return {"cpu_s": cpu, "idle_cpu_s": 0.0, "packets": packets}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {"pacing": []}
    for path in args.paths:
        results[path] = []
    for run in range(args.runs):
        results["pacing"].append(await run_pacing(args.peers, args.seconds))
        for path in args.paths:
            runner = run_ws if path.startswith("ws") else run_webrtc
            r = await runner(path, args.peers, args.seconds, args.idle)
            results[path].append(r)
            us = (r["cpu_s"] - r["idle_cpu_s"]) / max(1, r["packets"]) * 1e6
            print(
                f"  run {run + 1} {path:15s} {us:7.1f} µs/packet raw-net ({r['packets']} packets)", flush=True
            )
    pacing_us = statistics.median(r["cpu_s"] / max(1, r["packets"]) * 1e6 for r in results["pacing"])
    table = {}
    for path, runs in results.items():
        per = []
        for r in runs:
            us = (r["cpu_s"] - r["idle_cpu_s"]) / max(1, r["packets"]) * 1e6
            if path.endswith("send") and path != "pacing":
                us -= pacing_us
            per.append(us)
        delivered = None
        if path != "pacing":
            sent = sum(r["server_sent"] if path.endswith("send") else r["peer_sent"] for r in runs)
            got = sum(r["peer_received"] if path.endswith("send") else r["server_received"] for r in runs)
            delivered = None if not sent else min(1.0, got / sent)
        table[path] = {
            "us_per_packet_median": statistics.median(per),
            "us_per_packet_runs": per,
            "packets_per_run": [r["packets"] for r in runs],
            "delivered_fraction": delivered,
            "raw": runs,
        }
    return table


def print_table(table: dict[str, Any], peers: int) -> None:
    ws_recv = table.get("ws-recv", {}).get("us_per_packet_median")
    ws_send = table.get("ws-send", {}).get("us_per_packet_median")
    print()
    print(f"CPU per packet on the server, {peers} streams x {RATE} packets/s, median of runs")
    print(
        f"{'path':16s} {'µs/packet':>10s} {'% core per stream':>18s} {'x WebSocket':>12s} {'delivered':>10s}"
    )
    for path, row in table.items():
        us = row["us_per_packet_median"]
        anchor = ws_send if path.endswith("send") else ws_recv
        ratio = f"{us / anchor:10.1f}x" if anchor and path not in ("pacing", "ws-recv", "ws-send") else ""
        got = row["delivered_fraction"]
        delivered = "" if got is None else f"{got * 100:9.1f}%"
        print(f"{path:16s} {us:10.1f} {us * RATE / 1e6 * 100:17.2f}% {ratio:>12s} {delivered:>10s}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        asyncio.run(child(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else ""))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--idle", type=float, default=1.0, help="idle window per run (s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.peers, args.seconds, args.runs, args.idle = 2, 1.0, 1, 0.5
    print(f"webrtc_packet_cost: {args.peers} peers, {args.seconds} s x {args.runs} runs", flush=True)
    table = asyncio.run(main_async(args))
    print_table(table, args.peers)
    if args.json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = {
            "benchmark": "webrtc_packet_cost",
            "config": {"peers": args.peers, "seconds": args.seconds, "runs": args.runs, "rate": RATE},
            "machine": machine_info(),
            "code": code_state("realtime/transport", "realtime/jam"),
            "results": table,
        }
        path = RESULTS_DIR / "webrtc_packet_cost.json"
        path.write_text(json.dumps(out, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
