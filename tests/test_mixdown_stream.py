"""Streamed mixdowns: bytes before the render ends, same output, cancellation, bounded memory."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.types import Message

from realtime.api import byte_stream
from realtime.api import render as render_api
from realtime.dsp.render import RenderCancelled
from realtime.media import stream as media_stream
from realtime.media.decode import decode_audio
from realtime.media.encode import AudioEncoder, encoder_available
from realtime.media.mixdown import write_mixdown
from realtime.media.stream import mp3_info_frame, stream_mixdown, streamed_size, wav_header
from realtime.session.schema import Clip, SessionDocument, SessionInfo, Track, read_document

from .appclient import services
from .harness import wait_until
from .test_mixdown import FS, Studio
from .test_mixdown import studio as studio  # the fixture


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):  # 10 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def available(fmt: str) -> bool:
    return encoder_available({"ogg": "opus"}.get(fmt, fmt))


class Exchange:
    """One request driven straight through the ASGI app, on the TestClient's loop.

    ``on_body(chunk_index)`` runs (on the loop) after each body message; ``disconnect`` makes
    the app's ``receive`` report that the client went away.
    """

    def __init__(self, client: TestClient, token: str, query: str, *, spec_version: str = "2.3") -> None:
        self.client = client
        self.token = token
        self.query = query
        self.spec_version = spec_version
        self.messages: list[Message] = []
        self.on_body: Callable[[int], Any] | None = None
        self.raise_on_body: int | None = None  # like a server whose socket died (ASGI 2.4)
        self.error: BaseException | None = None
        self.disconnect = asyncio.Event()  # set it on the app's loop (from ``on_body``)

    def run(self, sid: str) -> None:
        async def drive() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": self.spec_version},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/api/sessions/{sid}/mixdown",
                "raw_path": f"/api/sessions/{sid}/mixdown".encode(),
                "query_string": self.query.encode(),
                "root_path": "",
                "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {self.token}".encode())],
                "client": ("127.0.0.1", 50000),
                "server": ("testserver", 80),
                "state": dict(self.client.app_state),
            }
            requested = False

            async def receive() -> Message:
                nonlocal requested
                if not requested:
                    requested = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await self.disconnect.wait()
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.body" and self.raise_on_body == len(self.bodies):
                    raise OSError("connection reset")
                self.messages.append(message)
                if message["type"] == "http.response.body" and self.on_body is not None:
                    result = self.on_body(len(self.bodies) - 1)
                    if asyncio.iscoroutine(result):
                        await result

            try:
                await self.client.app(scope, receive, send)
            except Exception as exc:
                self.error = exc

        assert self.client.portal is not None
        self.client.portal.call(drive)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    @property
    def complete(self) -> bool:
        if not self.messages:
            return False
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)


def render_jobs(studio: Studio) -> list[Any]:
    return [j for j in studio.doc().jobs if j.kind == "render"]


async def render_jobs_now(studio: Studio) -> list[Any]:
    """``render_jobs`` from code running on the app's loop."""
    runner = await services(studio.client).rooms.acquire(studio.sid)
    return [j for j in read_document(runner.room.doc).jobs if j.kind == "render"]


def gate_after_first_chunk(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[float]]:
    """Make the render wait inside its second ``emit`` until released; record its progress."""
    release = threading.Event()
    seen: list[float] = []
    real = stream_mixdown

    def gated(emit: Callable[[bytes], None], *args: Any, **kwargs: Any) -> Any:
        count = 0
        progress = kwargs["progress"]

        def gated_emit(data: bytes) -> None:
            nonlocal count
            count += 1
            if count == 2:
                assert release.wait(20)
            emit(data)

        def watch(fraction: float) -> None:
            seen.append(fraction)
            progress(fraction)

        kwargs["progress"] = watch
        return real(gated_emit, *args, **kwargs)

    monkeypatch.setattr(render_api, "stream_mixdown", gated)
    return release, seen


# --------------------------------------------------------------------------------------------
# Over HTTP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_bytes_arrive_while_the_render_runs(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    if not available(fmt):
        pytest.skip(f"no {fmt} encoder")
    loop = {f"c{i}": {"assetId": studio.drums, "start": float(i)} for i in range(20)}
    studio.arrange({"loop": {"name": "Loop", "kind": "audio", "clips": loop}})  # 20 s of noise
    release, seen = gate_after_first_chunk(monkeypatch)
    exchange = Exchange(studio.client, studio.owner, f"format={fmt}")
    at_first: list[tuple[float, list[str]]] = []

    async def on_body(index: int) -> None:
        if index == 0:
            # the render is held in its next emit: it cannot have finished
            at_first.append((seen[-1], [j.status for j in await render_jobs_now(studio)]))
            release.set()

    exchange.on_body = on_body
    exchange.run(studio.sid)
    assert exchange.error is None
    assert exchange.status == 200
    progress, statuses = at_first[0]
    assert progress < 1.0
    assert statuses == ["running"]
    assert exchange.complete
    body = b"".join(exchange.bodies)
    if fmt == "wav":
        assert exchange.headers["content-length"] == str(len(body)) == str(44 + 20 * FS * 6)
    else:
        assert "content-length" not in exchange.headers
    assert decode_audio(body).samples.shape == (2, 20 * FS)
    assert [j.status for j in render_jobs(studio)] == ["done"]


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
def test_a_client_that_goes_away_stops_the_render(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, spec_version: str
) -> None:
    release, seen = gate_after_first_chunk(monkeypatch)
    exchange = Exchange(studio.client, studio.owner, "format=flac&end=600", spec_version=spec_version)
    if spec_version == "2.4":
        exchange.raise_on_body = 1  # the second body message fails, as on a dead socket

    def on_body(index: int) -> None:
        if index == 0:
            exchange.disconnect.set()  # 2.3: noticed by the response's disconnect listener
            release.set()

    exchange.on_body = on_body
    exchange.run(studio.sid)
    assert not exchange.complete
    wait_until(lambda: [j.status for j in render_jobs(studio)] == ["cancelled"], what="the job to cancel")
    assert max(seen) < 0.5  # 10 minutes of audio: it stopped early
    assert studio.get("?end=0.5").status_code == 200  # and gave its slot back


def test_the_queue_bounds_what_a_slow_client_holds(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[byte_stream.ByteStream] = []

    class Recorded(byte_stream.ByteStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            streams.append(self)

    monkeypatch.setattr(render_api, "ByteStream", Recorded)
    exchange = Exchange(studio.client, studio.owner, "format=wav&end=300")
    observed: list[tuple[int, int]] = []

    async def stall(index: int) -> None:
        if index != 0:
            return
        # the client reads nothing for a while: the render fills the queue, then waits
        stream = streams[0]
        await until(lambda: stream.emitted >= stream.maxsize)
        await asyncio.sleep(0.3)
        observed.append((stream.emitted, stream.maxsize))
        exchange.disconnect.set()

    exchange.on_body = stall
    exchange.run(studio.sid)
    emitted, maxsize = observed[0]
    # the first chunk went out, `maxsize` wait in the queue, one more may be blocked in put
    assert maxsize <= emitted <= maxsize + 2
    assert maxsize == render_api.STREAM_QUEUE_CHUNKS
    wait_until(lambda: [j.status for j in render_jobs(studio)] == ["cancelled"], what="the job to cancel")


def test_an_error_before_the_first_byte_is_a_json_error(
    client: TestClient, studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(render_api, "stream_mixdown", broken)
    exchange = Exchange(client, studio.owner, "format=flac")
    exchange.run(studio.sid)
    assert exchange.status == 500
    assert b"internal_error" in b"".join(exchange.bodies)
    jobs = render_jobs(studio)
    assert [(j.status, j.error) for j in jobs] == [("failed", "RuntimeError: encoder exploded")]


def test_an_error_mid_stream_cuts_the_connection_and_is_logged(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = stream_mixdown

    def fails_later(emit: Callable[[bytes], None], *args: Any, **kwargs: Any) -> Any:
        count = 0

        def emit_then_fail(data: bytes) -> None:
            nonlocal count
            count += 1
            if count == 3:
                raise OSError("disk on fire")
            emit(data)

        return real(emit_then_fail, *args, **kwargs)

    monkeypatch.setattr(render_api, "stream_mixdown", fails_later)
    exchange = Exchange(studio.client, studio.owner, "format=wav&end=10")
    with caplog.at_level(logging.ERROR, logger="realtime.api.render"):
        exchange.run(studio.sid)
    assert exchange.status == 200
    assert len(exchange.bodies) == 2
    assert not exchange.complete  # no final message: the server drops the connection
    assert isinstance(exchange.error, OSError)
    assert any("failed" in r.getMessage() for r in caplog.records)
    assert [(j.status, j.error) for j in render_jobs(studio)] == [("failed", "OSError: disk on fire")]


# --------------------------------------------------------------------------------------------
# The streaming encoder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def session() -> tuple[SessionDocument, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    assets = {
        "a": rng.uniform(-0.3, 0.3, (2, FS)).astype(np.float32),
        "b": rng.uniform(-0.3, 0.3, (1, 30000)).astype(np.float32),
    }
    doc = SessionDocument(
        SessionInfo(),
        (
            Track("t", "Drums", clips=(Clip("c", "a", 0.0),)),
            Track(
                "u", "Bass", clips=(Clip("c", "b", 0.1),), effects=({"type": "limiter", "ceilingDb": 0.0},)
            ),
        ),
    )
    return doc, assets


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_the_stream_is_the_file_render(
    session: tuple[SessionDocument, dict[str, np.ndarray]], tmp_path: Path, fmt: str
) -> None:
    if not available(fmt):
        pytest.skip(f"no {fmt} encoder")
    doc, assets = session
    chunks: list[bytes] = []
    plan = stream_mixdown(chunks.append, doc, assets, fmt)
    streamed = b"".join(chunks)
    write_mixdown(tmp_path / "ref", doc, assets, fmt)
    reference = (tmp_path / "ref").read_bytes()
    if fmt == "wav":
        assert streamed == reference
        assert streamed_size("wav", plan.frames, stems=False) == len(streamed)
    if fmt == "mp3":
        # the same file but for the LAME tag's music CRC and the tag CRC over it
        assert len(streamed) == len(reference)
        tag = 10 + ((reference[6] << 21) | (reference[7] << 14) | (reference[8] << 7) | reference[9])
        differ = [i for i in range(len(reference)) if streamed[i] != reference[i]]
        assert set(differ) <= set(range(tag + 188, tag + 192))
    with av.open(io.BytesIO(streamed)) as container:
        assert container.streams.audio[0].codec_context.sample_rate == FS
    np.testing.assert_array_equal(decode_audio(streamed).samples, decode_audio(reference).samples)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_streamed_stems_are_the_file_stems(
    session: tuple[SessionDocument, dict[str, np.ndarray]], tmp_path: Path, fmt: str
) -> None:
    if not available(fmt):
        pytest.skip(f"no {fmt} encoder")
    doc, assets = session
    chunks: list[bytes] = []
    stream_mixdown(chunks.append, doc, assets, fmt, stems=True)
    write_mixdown(tmp_path / "ref.zip", doc, assets, fmt, stems=True)
    with (
        zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as streamed,
        zipfile.ZipFile(tmp_path / "ref.zip") as reference,
    ):
        names = [i.filename for i in streamed.infolist()]
        assert names == [i.filename for i in reference.infolist()] == [f"Drums.{fmt}", f"Bass.{fmt}"]
        assert streamed.testzip() is None
        for name in names:
            np.testing.assert_array_equal(
                decode_audio(streamed.read(name)).samples, decode_audio(reference.read(name)).samples
            )


def test_mp3_falls_back_to_a_spool_without_a_known_info_frame(
    session: tuple[SessionDocument, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not available("mp3"):
        pytest.skip("no mp3 encoder")
    doc, assets = session
    monkeypatch.setattr(media_stream, "mp3_info_frame", lambda samples: None)
    chunks: list[bytes] = []
    stream_mixdown(chunks.append, doc, assets, "mp3")
    write_mixdown(tmp_path / "ref.mp3", doc, assets, "mp3")
    assert b"".join(chunks) == (tmp_path / "ref.mp3").read_bytes()


def test_a_cancelled_stream_stops(session: tuple[SessionDocument, dict[str, np.ndarray]]) -> None:
    doc, assets = session
    cancel = threading.Event()
    chunks: list[bytes] = []

    def emit(data: bytes) -> None:
        chunks.append(data)
        cancel.set()

    with pytest.raises(RenderCancelled):
        stream_mixdown(emit, doc, assets, "wav", end_s=60.0, cancel=cancel)
    assert sum(map(len, chunks)) < 60 * FS * 6 // 10
    with pytest.raises(ValueError, match="format"):
        stream_mixdown(emit, doc, assets, "aiff")


@pytest.mark.parametrize("frames", [1, 47, 1105, 1152, 1153, 48000, 460_801, 1_234_567])
def test_the_mp3_info_frame_is_ffmpegs(frames: int) -> None:
    if not available("mp3"):
        pytest.skip("no mp3 encoder")
    buffer = io.BytesIO()
    with AudioEncoder(buffer, "mp3", 2) as encoder:  # seekable: FFmpeg writes its own
        for start in range(0, frames, 4096):
            encoder.write(np.zeros((2, min(4096, frames - start)), dtype=np.float32))
    data = buffer.getvalue()
    tag = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    ffmpeg = data[tag : tag + 960]
    mine = mp3_info_frame(frames)
    assert mine is not None
    assert len(mine) == len(ffmpeg) == 960
    # everything but the music CRC (188, 189) and the tag CRC (190, 191)
    assert mine[:188] == ffmpeg[:188]
    assert mine[192:] == ffmpeg[192:]
    assert mine[188:190] == b"\0\0"


def test_wav_header_and_sizes() -> None:
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(FS)
        w.writeframes(bytes(6 * 1000))
    assert buffer.getvalue()[:44] == wav_header(1000)
    assert streamed_size("flac", 1000, stems=False) is None
    assert streamed_size("wav", 1000, stems=True) is None
    with pytest.raises(ValueError, match="WAVE"):
        wav_header(1 << 30)


def test_the_byte_stream_blocks_when_full_and_aborts() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stream = byte_stream.ByteStream(loop, maxsize=3)
        outcome: list[BaseException | None] = []

        def produce() -> None:
            try:
                for _ in range(100):
                    stream.emit(b"x" * 10)
                outcome.append(None)
            except RenderCancelled as exc:
                outcome.append(exc)

        thread = threading.Thread(target=produce)
        thread.start()
        await until(lambda: stream.emitted >= 3)
        await asyncio.sleep(0.2)
        assert stream.emitted == 3  # blocked on the fourth
        assert await stream.first() == b"x" * 10
        await until(lambda: stream.emitted >= 4)
        stream.abort()
        await asyncio.to_thread(thread.join, 5)
        assert isinstance(outcome[0], byte_stream.StreamAborted)
        with pytest.raises(ValueError, match="maxsize"):
            byte_stream.ByteStream(loop, maxsize=0)

    asyncio.run(main())


def test_a_failed_stream_raises_where_it_failed() -> None:
    async def main() -> None:
        stream = byte_stream.ByteStream(asyncio.get_running_loop(), maxsize=4)

        def produce() -> None:  # from a thread, as the render does
            stream.emit(b"a")
            stream.emit(b"b")
            stream.end(OSError("boom"))

        await asyncio.to_thread(produce)
        assert await stream.first() == b"a"
        chunks = stream.chunks()
        assert await anext(chunks) == b"b"
        with pytest.raises(OSError, match="boom"):
            await anext(chunks)

    asyncio.run(main())
