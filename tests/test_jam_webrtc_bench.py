"""Smoke test of the WebRTC jam load generator (``benchmarks/_jam_load_webrtc.py``): two aiortc
clients join a real server's jam through the WHIP endpoint, stream 2.5 ms Opus for a few seconds
on each path, and get their mixes back. The figures themselves belong to
``benchmarks/jam_webrtc_capacity.py``; this checks that the generator measures a working jam."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import ServerProcess
from .test_jam_webrtc import require_ice_interface

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "benchmarks" / "_jam_load_webrtc.py"
EXPECTED_PPS = 400  # one 2.5 ms block per packet


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@pytest.mark.parametrize("path", ["rtp", "datachannel"])
def test_generator_streams_two_webrtc_clients_and_counts_their_mixes(tmp_path: Path, path: str) -> None:
    require_ice_interface()
    server = ServerProcess(tmp_path / "data", env={"ESCENARIO_JAM_FADE_IN_S": "0.2"})
    server.start()
    gen: subprocess.Popen[str] | None = None
    try:
        owner = server.signup("owner@example.com", "Owner")
        editor = server.signup("editor@example.com", "Editor")
        sid = server.create_session(owner)
        server.add_member(owner, sid, "editor@example.com", "editor")
        gen = subprocess.Popen(
            [
                *(sys.executable, str(GENERATOR), "--base", server.base_url, "--session", sid),
                # "=": a token may begin with "-", which argparse would take for an option
                *(f"--tokens={owner},{editor}", "-n", "2", "--path", path),
                *("--duration", "4", "--warmup", "1"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        line = _readline(gen, 60)
        if line.strip() != "READY":
            _, err = gen.communicate(timeout=30) if gen.poll() is not None else ("", "")
            raise AssertionError(f"the generator did not start: {line!r} {err[-2000:]}")
        stats = httpx.get(
            f"{server.base_url}/api/sessions/{sid}/jam/stats", headers={"authorization": f"Bearer {owner}"}
        ).json()
        assert len(stats["participants"]) == 2
        assert gen.stdin is not None
        gen.stdin.write("GO\n")
        gen.stdin.flush()
        time.sleep(2.5)
        streaming = httpx.get(
            f"{server.base_url}/api/sessions/{sid}/jam/stats", headers={"authorization": f"Bearer {owner}"}
        ).json()
        out, err = gen.communicate(timeout=60)
        assert gen.returncode == 0, err[-2000:]
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait()
        server.kill()

    assert result["n"] == 2
    assert result["errors"] == []
    assert result["closed"] == []
    assert 2.5 < result["window_s"] < 4.5
    # The schedule held (the pacer skips no more than a few late ticks on a busy machine) and
    # the mixes came back: at least half the blocks, a low bar because tests share the cores.
    assert all(s >= 0.9 * EXPECTED_PPS for s in result["sent_pps"]), result["sent_pps"]
    assert all(r >= 0.5 * EXPECTED_PPS for r in result["rx_pps"]), result["rx_pps"]
    assert all(r <= 1.1 * EXPECTED_PPS for r in result["rx_pps"]), result["rx_pps"]
    assert result["gen_cpu_per_s"] > 0
    # What the server saw: the path asked for, and for RTP one 2.5 ms block per packet both ways.
    sides = result["server_side"]
    assert [s["audioPath"] for s in sides] == [path, path]
    for side in sides:
        assert side["framesPerPacket"] == 1
        if path == "rtp":
            assert side["rtpOut"] > EXPECTED_PPS
            assert side["dcAudioIn"] == 0
        else:
            assert side["dcAudioIn"] > EXPECTED_PPS
            assert side["dcAudioOut"] > EXPECTED_PPS
            assert side["rtpOut"] == 0
    # The engine played both streams: 2.5 ms Opus frames in its jitter buffers, a latency measured.
    assert len(streaming["participants"]) == 2
    for participant in streaming["participants"]:
        assert participant["codec"] == "opus"
        assert participant["in"]["played"] > EXPECTED_PPS
    assert streaming["latencyMs"]["count"] > EXPECTED_PPS
