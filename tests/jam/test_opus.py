"""The ctypes libopus binding: real libopus (PyAV's bundled copy), real packets."""

from __future__ import annotations

import ctypes
import sys
import threading
import time

import numpy as np
import pytest
from numpy.typing import NDArray

from realtime.jam import opus
from realtime.jam.opus import (
    MAX_PACKET,
    OpusDecoder,
    OpusEncoder,
    OpusError,
    OpusUnavailable,
    float_to_pcm16,
    packet_samples,
    pcm16_to_float,
)


def tone(freq: float, seconds: float, amp: float = 0.5, phase: float = 0.0) -> NDArray[np.float32]:
    t = np.arange(int(48000 * seconds)) / 48000
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def round_trip(
    x: NDArray[np.float32], channels: int, frames: int
) -> tuple[NDArray[np.float32], set[int], int]:
    enc = OpusEncoder(channels, frames)
    dec = OpusDecoder(channels, frames)
    blocks = []
    sizes = set()
    for k in range(len(x) // frames):
        block = np.tile(x[k * frames : (k + 1) * frames], (channels, 1))
        packet = enc.encode(block)
        sizes.add(len(packet))
        out = dec.decode(packet)
        assert out.shape == (channels, frames)
        blocks.append(out.copy())
    return np.concatenate(blocks, axis=1), sizes, enc.lookahead


def snr_db(ref: NDArray[np.float32], got: NDArray[np.float32]) -> float:
    err = got.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(err**2)))


@pytest.mark.parametrize("frames", [120, 240, 480])
@pytest.mark.parametrize("channels", [1, 2])
def test_tone_round_trip_is_faithful_and_cbr(frames: int, channels: int) -> None:
    x = tone(1000, 1.0)
    y, sizes, lookahead = round_trip(x, channels, frames)
    # CBR at 128 kbit/s: every packet is exactly bitrate * duration.
    assert sizes == {128_000 * frames // 48000 // 8}
    # CELT low delay: the codec delay is its look-ahead (2.5 ms), nothing more.
    assert lookahead == 120
    settle = slice(4800, None)
    for c in range(channels):
        got = y[c, lookahead:][settle]
        ref = x[: y.shape[1] - lookahead][settle]
        assert snr_db(ref, got) > 25.0


def test_stereo_channels_stay_separate() -> None:
    enc, dec = OpusEncoder(2, 120), OpusDecoder(2, 120)
    left, right = tone(500, 0.5), tone(3000, 0.5)
    out = []
    for k in range(len(left) // 120):
        planar = np.stack([left[k * 120 : (k + 1) * 120], right[k * 120 : (k + 1) * 120]])
        out.append(dec.decode(enc.encode(planar)).copy())
    y = np.concatenate(out, axis=1)[:, 4800:]
    freqs = np.fft.rfftfreq(y.shape[1], 1 / 48000)
    assert abs(freqs[np.argmax(np.abs(np.fft.rfft(y[0])))] - 500) < 10
    assert abs(freqs[np.argmax(np.abs(np.fft.rfft(y[1])))] - 3000) < 10


def test_interleaved_input_matches_planar() -> None:
    x = np.stack([tone(440, 0.1), tone(660, 0.1)])
    a, b = OpusEncoder(2, 240), OpusEncoder(2, 240)
    for k in range(x.shape[1] // 240):
        block = np.ascontiguousarray(x[:, k * 240 : (k + 1) * 240])
        assert a.encode(block) == b.encode(np.ascontiguousarray(block.T))


def test_concealment_continues_the_signal() -> None:
    """PLC extrapolates: the concealed block follows the tone (not silence, not noise)."""
    frames = 120
    x = tone(800, 1.0)
    enc, dec = OpusEncoder(1, frames), OpusDecoder(1, frames)
    decoded = []
    blocks = len(x) // frames
    lost = blocks // 2
    for k in range(lost):
        decoded.append(dec.decode(enc.encode(x[None, k * frames : (k + 1) * frames])).copy())
    concealed = dec.conceal()[0].copy()
    lookahead = enc.lookahead
    start = lost * frames - lookahead  # what the decoder should output next, given its delay
    expected = x[start : start + frames]
    rms = float(np.sqrt(np.mean(concealed**2)))
    assert rms > 0.5 * float(np.sqrt(np.mean(expected**2)))
    corr = float(np.dot(concealed, expected) / (np.linalg.norm(concealed) * np.linalg.norm(expected)))
    assert corr > 0.8
    # A long outage fades out rather than buzzing forever.
    for _ in range(100):
        tail = dec.conceal()[0]
    assert float(np.sqrt(np.mean(tail**2))) < 0.1 * rms


def test_decoder_recovers_after_bad_packets() -> None:
    enc, dec = OpusEncoder(2, 120), OpusDecoder(2, 120)
    good = enc.encode(np.zeros((2, 120), np.float32))
    # Code-3 TOC (arbitrary frame count) announcing zero frames: libopus rejects it.
    with pytest.raises(OpusError) as info:
        dec.decode(b"\xfb\x00")
    assert info.value.code < 0
    assert "corrupted" in str(info.value) or "invalid" in str(info.value).lower()
    with pytest.raises(OpusError, match="empty packet"):
        dec.decode(b"")
    with pytest.raises(OpusError, match="max 1275"):
        dec.decode(b"\x00" * (MAX_PACKET + 1))
    # A 20 ms packet does not fit a 2.5 ms decoder: refused before touching the decoder state.
    long_enc = OpusEncoder(2, 480)
    with pytest.raises(OpusError, match="holds 480 samples, expected 120"):
        dec.decode(long_enc.encode(np.zeros((2, 480), np.float32)))
    assert dec.decode(good).shape == (2, 120)


def test_decode_accepts_views_without_keeping_them() -> None:
    enc, dec = OpusEncoder(2, 120), OpusDecoder(2, 120)
    block = np.stack([tone(440, 0.0025), tone(440, 0.0025)])
    packet = enc.encode(block)
    framed = b"HEADER--" + packet + b"tail"
    ref = OpusDecoder(2, 120).decode(packet).copy()
    view = memoryview(framed)[8 : 8 + len(packet)]
    np.testing.assert_array_equal(dec.decode(view), ref)
    np.testing.assert_array_equal(OpusDecoder(2, 120).decode(bytearray(packet)), ref)


def test_encode_into_writes_after_a_reserved_header() -> None:
    enc_a, enc_b = OpusEncoder(2, 120), OpusEncoder(2, 120)
    block = np.stack([tone(440, 0.0025), tone(220, 0.0025)])
    buffer = (ctypes.c_ubyte * (16 + MAX_PACKET))()
    n = enc_a.encode_into(block, buffer, 16)
    assert bytes(buffer)[16 : 16 + n] == enc_b.encode(block)
    assert bytes(buffer)[:16] == b"\x00" * 16


def test_invalid_shapes_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="frames must be 120, 240 or 480"):
        OpusEncoder(2, 128)
    with pytest.raises(ValueError, match="channels must be 1 or 2"):
        OpusDecoder(3, 120)
    with pytest.raises(ValueError, match="bitrate"):
        OpusEncoder(2, 120, bitrate=1000)
    with pytest.raises(ValueError, match="complexity"):
        OpusEncoder(2, 120, complexity=11)
    enc = OpusEncoder(2, 120)
    with pytest.raises(ValueError, match=r"block must be shaped \(2, 120\)"):
        enc.encode(np.zeros((2, 240), np.float32))
    enc.close()
    with pytest.raises(RuntimeError, match="closed"):
        enc.encode(np.zeros((2, 120), np.float32))


def test_pcm16_helpers_round_trip_and_clip() -> None:
    planar = np.stack([tone(440, 0.0025, 0.9), tone(660, 0.0025, 0.3)])
    planar[0, 0] = 1.7  # clipped, not wrapped
    buf = bytearray(2 * 120 * 2)
    assert float_to_pcm16(planar, buf) == len(buf)
    ints = np.frombuffer(bytes(buf), "<i2").reshape(120, 2)
    assert ints[0, 0] == 32767
    assert ints[1, 1] == int(planar[1, 1] * 32767)
    back = pcm16_to_float(bytes(buf), 2, 120, np.empty((2, 120), np.float32))
    np.testing.assert_allclose(back[:, 1:], planar[:, 1:], atol=1 / 16384)
    with pytest.raises(ValueError, match="PCM16 payload is 10 bytes"):
        pcm16_to_float(b"\x00" * 10, 2, 120, np.empty((2, 120), np.float32))
    with pytest.raises(ValueError, match="needs 480"):
        float_to_pcm16(planar, bytearray(100))


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus, "_lib", None)
    monkeypatch.setattr(opus, "_candidates", lambda: [])
    with pytest.raises(OpusUnavailable, match="libopus not found: install PyAV"):
        OpusEncoder()
    monkeypatch.setattr(opus, "_candidates", lambda: ["/nonexistent/libopus.so.0"])
    with pytest.raises(OpusUnavailable, match=r"/nonexistent/libopus\.so\.0"):
        OpusDecoder()


def _progress_while_encoding(hold_gil: bool) -> int:
    """How often the main thread wakes from a 1 ms sleep while another thread encodes for ~0.6 s.

    The switch interval is raised to 0.5 s, so a thread that never releases the GIL starves the
    sleeper; a thread whose codec calls release it does not.
    """
    # 120 stereo frames: the staging copy stays under numpy's own GIL-release threshold.
    enc = OpusEncoder(2, 120, complexity=10, hold_gil=hold_gil)
    block = np.stack([tone(440, 0.0025), tone(440, 0.0025)])
    stop = time.monotonic() + 0.6
    running = threading.Event()

    def work() -> None:
        running.set()
        while time.monotonic() < stop:
            enc.encode(block)

    worker = threading.Thread(target=work)
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        worker.start()
        running.wait()
        wakeups = 0
        while time.monotonic() < stop - 0.05:
            time.sleep(0.001)
            wakeups += 1
    finally:
        sys.setswitchinterval(old)
        worker.join()
    return wakeups


def test_codec_calls_release_the_gil_unless_asked_to_hold_it() -> None:
    released = _progress_while_encoding(hold_gil=False)
    held = _progress_while_encoding(hold_gil=True)  # the tick's choice (realtime.jam.opus notes)
    print(f"wake-ups: {released} releasing, {held} holding")
    assert held <= 3
    assert released >= 20


@pytest.mark.parametrize("frames", [120, 240, 480])
def test_the_toc_table_agrees_with_libopus(frames: int) -> None:
    table = opus.packet_samples_table(frames)
    assert len(table) == 256
    for toc in range(256):
        if toc & 3 == 3:
            assert table[toc] == 0  # frame count in a second byte: left to packet_samples()
        else:
            assert table[toc] == (packet_samples(bytes((toc, 0, 0))) == frames), toc
    real = OpusEncoder(2, frames).encode(np.zeros((2, frames), np.float32))
    assert table[real[0]] == 1


def test_a_mono_decoder_downmixes_a_stereo_stream() -> None:
    left, right = tone(440, 0.5), 0.5 * tone(660, 0.5)
    enc = OpusEncoder(2, 120)
    stereo, mono = OpusDecoder(2, 120), OpusDecoder(1, 120, hold_gil=True)
    folded, direct = [], []
    row = np.zeros(120, np.float32)
    for k in range(len(left) // 120):
        packet = enc.encode(np.stack([left[k * 120 : (k + 1) * 120], right[k * 120 : (k + 1) * 120]]))
        stereo.decode_mono(packet, row, row.ctypes.data)
        folded.append(row.copy())
        mono.decode_mono(packet, row, row.ctypes.data)
        direct.append(row.copy())
    a, b = np.concatenate(folded)[1200:], np.concatenate(direct)[1200:]
    assert float(np.sqrt(np.mean(a**2))) > 0.1
    assert float(np.sqrt(np.mean((a - b) ** 2))) < 0.01 * float(np.sqrt(np.mean(a**2)))
