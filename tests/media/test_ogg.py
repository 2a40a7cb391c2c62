from __future__ import annotations

import io
import struct

import av
import numpy as np

from realtime.media.ogg import PageSplitter, ogg_crc, rebase


def opus_stream(seconds: float, freq: float = 1000.0) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg", options={"page_duration": "100000"}) as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "stereo"
        n = int(seconds * 48000)
        t = np.arange(n) / 48000
        x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        for i in range(0, n, 960):
            frame = av.AudioFrame.from_ndarray(np.stack([x[i : i + 960]] * 2), format="fltp", layout="stereo")
            frame.sample_rate = 48000
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as f:
        return np.concatenate([fr.to_ndarray() for fr in f.decode(audio=0)], axis=1)


def test_crc_matches_the_muxer() -> None:
    data = opus_stream(1.0)
    pages = PageSplitter().feed(data)
    assert len(pages) > 5
    for page in pages:
        raw = bytearray(page.data)
        stored = struct.unpack_from("<I", raw, 22)[0]
        raw[22:26] = b"\0\0\0\0"
        assert ogg_crc(bytes(raw)) == stored


def test_splitter_handles_arbitrary_chunking() -> None:
    data = opus_stream(1.0)
    whole = PageSplitter().feed(data)
    splitter = PageSplitter()
    pieces = []
    for i in range(0, len(data), 37):
        pieces += splitter.feed(data[i : i + 37])
    assert [p.data for p in pieces] == [p.data for p in whole]


def test_a_late_joiner_gets_a_valid_stream_starting_at_zero() -> None:
    data = opus_stream(3.0)
    pages = PageSplitter().feed(data)
    headers = [p for p in pages if p.is_header]
    audio = [p for p in pages if not p.is_header]
    assert len(headers) == 2
    join = len(audio) // 2
    offset = audio[join - 1].granule
    joined = b"".join(p.data for p in headers) + b"".join(
        rebase(p, granule_offset=offset, sequence=len(headers) + i) for i, p in enumerate(audio[join:])
    )
    samples = decode(joined)
    expected = audio[-1].granule - offset - 312  # minus the encoder's pre-skip
    assert abs(samples.shape[1] - expected) <= 960
    spectrum = np.abs(np.fft.rfft(samples[0, 4800:52800]))
    assert abs(np.argmax(spectrum) * 48000 / 48000 - 1000) <= 2
