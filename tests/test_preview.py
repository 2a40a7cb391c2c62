"""Live preview: the transport clock, listener fan-out, and the real stream end to end."""

from __future__ import annotations

import io
import threading
import time
import wave
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pycrdt
import pytest

from realtime.media.ogg import Page
from realtime.preview import Listener, PlayheadClock, PreviewStream
from realtime.session.protocol import AwarenessMessage
from realtime.session.schema import Transport

from .harness import PyDocClient, ServerProcess

# -- the playhead ---------------------------------------------------------------------


def test_stopped_transport_renders_nothing() -> None:
    clock = PlayheadClock()
    clock.sync(Transport(playing=False, position=3.0), now_ms=1e6)
    assert clock.advance(960) is None


def test_playing_follows_position_and_elapsed_time() -> None:
    clock = PlayheadClock()
    clock.sync(Transport(playing=True, started_at=10_000, position=2.0), now_ms=10_500)
    assert clock.advance(960) == [(int(2.5 * 48000), 960, 0)]
    assert clock.advance(960) == [(int(2.5 * 48000) + 960, 960, 0)]


def test_loop_wraps_inside_a_block() -> None:
    clock = PlayheadClock()
    clock.sync(Transport(playing=True, started_at=0, position=1.0, loop=(0.0, 1.01)), now_ms=0)
    # 1.0 s is 48000; the loop ends at 48480, so a 960-frame block is split there.
    assert clock.advance(960) == [(48000, 480, 0), (0, 480, 480)]
    assert clock.advance(100) == [(480, 100, 0)]


def test_a_start_past_the_loop_end_lands_inside_the_loop() -> None:
    clock = PlayheadClock()
    clock.sync(Transport(playing=True, started_at=0, position=5.0, loop=(1.0, 2.0)), now_ms=0)
    assert clock.frame == 48000


# -- listeners --------------------------------------------------------------------------


class _FakeHub:
    rooms: Any = None


def page(granule: int, seq: int) -> Page:
    body = b"x" * 10
    header = bytearray(b"OggS\x00\x00" + granule.to_bytes(8, "little", signed=True))
    header += (1).to_bytes(4, "little") + seq.to_bytes(4, "little") + b"\0\0\0\0" + bytes([1, len(body)])
    return Page(bytes(header) + body, 0, granule, 1, seq)


async def test_a_slow_listener_is_dropped_and_the_others_keep_everything() -> None:
    stream = PreviewStream("s", _FakeHub())  # type: ignore[arg-type]
    fast, slow = Listener(max_pages=100), Listener(max_pages=3)
    stream.listeners |= {fast, slow}
    for i in range(10):
        stream._publish([page(960 * (i + 1), i + 2)])
    assert slow.dropped
    assert slow not in stream.listeners
    assert fast.queue.qsize() == 10
    first = await fast.queue.get()
    assert first is not None
    assert int.from_bytes(first[6:14], "little") == 960  # re-based: starts at time zero


# -- end to end -------------------------------------------------------------------------


def sine_wav(freq: float, seconds: float) -> bytes:
    t = np.arange(int(48000 * seconds)) / 48000
    x = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(np.repeat(x, 2).tobytes())
    return buf.getvalue()


def read_stream(url: str, seconds: float) -> bytes:
    data = b""
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", url, timeout=15) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "audio/ogg"
        for chunk in r.iter_bytes():
            data += chunk
            if time.monotonic() > deadline:
                break
    return data


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as f:
        frames = []
        try:
            for fr in f.decode(audio=0):
                frames.append(fr.to_ndarray())
        except av.error.InvalidDataError:
            pass  # the stream was cut mid-page when we stopped reading
    return np.concatenate(frames, axis=1)


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * 48000 / len(x))


@pytest.fixture
def playing_session(tmp_path: Path) -> Any:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        token = server.signup("o@example.com")
        sid = server.create_session(token)
        r = server.api(
            "POST",
            f"/api/sessions/{sid}/assets",
            token=token,
            files={"file": ("tone.wav", sine_wav(1000, 8.0), "audio/wav")},
        )
        assert r.status_code == 201, r.text
        asset_id = r.json()["asset_id"]
        client = PyDocClient(server.ws_base, sid, token)
        with client.doc.transaction():
            clip = pycrdt.Map({"assetId": asset_id, "start": 0.0, "offset": 0.0, "length": 8.0})
            track = pycrdt.Map(
                {"name": "Tone", "kind": "audio", "gainDb": 0.0, "pan": 0.0, "clips": pycrdt.Map()}
            )
            client.doc.get("tracks", type=pycrdt.Map)["t1"] = track
            track["clips"]["c1"] = clip
            client.doc.get("trackOrder", type=pycrdt.Array).append("t1")
            transport = client.doc.get("session", type=pycrdt.Map)["transport"]
            transport["position"] = 0.0
            transport["startedAt"] = time.time() * 1000
            transport["playing"] = True
        client.send_changes()
        yield server, token, sid, client
        client.close()
    finally:
        server.kill()


def test_preview_streams_the_mix_that_ffmpeg_decodes(playing_session: Any) -> None:
    server, token, sid, _client = playing_session
    url = f"{server.base_url}/api/sessions/{sid}/preview.ogg?token={token}"
    first = read_stream(url, 2.5)
    samples = decode(first)
    assert samples.shape[1] > 48000
    assert abs(dominant_hz(samples[0, -24000:]) - 1000) < 5
    # A second listener joining mid-stream gets its own valid stream (headers first).
    late = decode(read_stream(url, 1.5))
    assert late.shape[1] > 24000
    assert abs(dominant_hz(late[0, -24000:]) - 1000) < 5


def test_meters_reach_sync_clients_through_awareness(playing_session: Any) -> None:
    server, token, sid, client = playing_session
    url = f"{server.base_url}/api/sessions/{sid}/preview.ogg?token={token}"
    listener = threading.Thread(target=read_stream, args=(url, 3.0))
    listener.start()
    try:
        arrivals: list[float] = []

        def meter_update(msg: Any) -> bool:
            if isinstance(msg, AwarenessMessage) and 0 in client.awareness:
                arrivals.append(time.monotonic())
            return len(arrivals) >= 20

        client.pump(until=meter_update, timeout=10)
        meters = client.awareness[0]["meters"]
        # A 0.5-amplitude sine: peak -6 dBFS on the master and on its track.
        assert meters["master"]["peakDb"] == pytest.approx([-6.02, -6.02], abs=0.1)
        assert meters["tracks"]["t1"]["peakDb"] == pytest.approx([-6.02, -6.02], abs=0.1)
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        assert rate <= 22  # throttled to 20 Hz (plus scheduling jitter)
    finally:
        listener.join()


def test_preview_requires_membership(playing_session: Any) -> None:
    server, _token, sid, _client = playing_session
    stranger = server.signup("x@example.com")
    r = httpx.get(f"{server.base_url}/api/sessions/{sid}/preview.ogg?token={stranger}", timeout=10)
    assert r.status_code == 404
    r = httpx.get(f"{server.base_url}/api/sessions/{sid}/preview.ogg", timeout=10)
    assert r.status_code == 401


def test_chromium_audio_element_plays_the_preview(playing_session: Any, browser: Any) -> None:
    server, token, sid, _client = playing_session
    # The test injects its own script into the page; the app's CSP rightly forbids that.
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.base_url + "/healthz")
        src = f"/api/sessions/{sid}/preview.ogg?token={token}"
        page.evaluate(
            """src => { const a = document.createElement('audio'); a.id = 'p'; a.src = src;
                       document.body.appendChild(a); return a.play(); }""",
            src,
        )
        page.wait_for_function("document.getElementById('p').currentTime > 1.0", timeout=15_000)
        state = page.evaluate(
            "(() => { const a = document.getElementById('p');"
            " return [a.error && a.error.code, a.paused]; })()"
        )
        assert state == [None, False]
        assert errors == []
    finally:
        context.close()


def test_the_stream_follows_edits_and_the_transport(playing_session: Any) -> None:
    server, token, sid, client = playing_session
    url = f"{server.base_url}/api/sessions/{sid}/preview.ogg?token={token}"
    data = b""
    with httpx.stream("GET", url, timeout=15) as r:
        started = time.monotonic()
        changed_at: float | None = None
        for chunk in r.iter_bytes():
            data += chunk
            elapsed = time.monotonic() - started
            if changed_at is None and elapsed > 1.5:
                with client.doc.transaction():
                    client.doc.get("tracks", type=pycrdt.Map)["t1"]["mute"] = True
                client.send_changes()
                changed_at = elapsed
            if elapsed > 3.5:
                break
    samples = decode(data)
    rms = [
        float(np.sqrt(np.mean(samples[0, i : i + 4800] ** 2)))
        for i in range(0, samples.shape[1] - 4800, 4800)
    ]
    assert max(rms[2:10]) > 0.2  # the tone plays before the edit
    assert max(rms[-5:]) < 1e-3  # silence once the mute reached the engine
