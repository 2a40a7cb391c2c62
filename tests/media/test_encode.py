"""Encoding 48 kHz float audio, checked by decoding it again."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from realtime.media.decode import decode_audio
from realtime.media.encode import (
    AudioEncoder,
    UnsupportedFormat,
    encode_audio,
    encoder_available,
    quantize_24,
)

from .audio import dominant_frequency, sine

LSB_24 = 2.0**-23


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.99, 0.99, (channels, frames)).astype(np.float32)


def _streaminfo_bits(flac: bytes) -> int:
    assert flac[:4] == b"fLaC"
    info = flac[8 : 8 + 34]
    packed = int.from_bytes(info[10:18], "big")
    return ((packed >> 36) & 0x1F) + 1


@pytest.mark.parametrize("fmt", ["flac", "wav"])
@pytest.mark.parametrize("channels", [1, 2])
def test_lossless_round_trip_within_24_bit_quantisation(fmt: str, channels: int) -> None:
    x = noise(channels, 30_000)
    decoded = decode_audio(encode_audio(x, fmt))
    assert decoded.samples.shape == x.shape
    assert np.max(np.abs(decoded.samples - x)) <= LSB_24 / 2 + 1e-9
    # Exactly the 24-bit values: decoding is lossless.
    assert np.array_equal(quantize_24(decoded.samples), quantize_24(x))


def test_flac_is_24_bit_and_wav_too() -> None:
    x = noise(2, 1000)
    assert _streaminfo_bits(encode_audio(x, "flac")) == 24
    with wave.open(io.BytesIO(encode_audio(x, "wav"))) as w:
        assert (w.getsampwidth(), w.getframerate(), w.getnchannels()) == (3, 48000, 2)


def test_lossless_formats_clip_out_of_range_samples() -> None:
    x = np.array([[1.5, -1.5, 0.25]], dtype=np.float32)
    decoded = decode_audio(encode_audio(x, "flac")).samples
    assert decoded[0, 0] == pytest.approx(1 - LSB_24)
    assert decoded[0, 1] == -1.0
    assert decoded[0, 2] == 0.25


@pytest.mark.parametrize("fmt", ["opus", "mp3"])
def test_lossy_round_trip_keeps_the_tone(fmt: str) -> None:
    if not encoder_available(fmt):
        pytest.skip(f"this FFmpeg build has no {fmt} encoder")
    x = sine(1000, seconds=2.0, channels=2)
    decoded = decode_audio(encode_audio(x, fmt))
    assert decoded.channels == 2
    assert decoded.duration == pytest.approx(2.0, abs=0.06)
    assert dominant_frequency(decoded.samples) == pytest.approx(1000, abs=1)
    n = min(decoded.frames, x.shape[1])
    a, b = decoded.samples[:, 2000 : n - 2000].ravel(), x[:, 2000 : n - 2000].ravel()
    assert float(np.corrcoef(a, b)[0, 1]) > 0.99


def test_opus_is_ogg_and_mp3_is_mpeg() -> None:
    x = sine(seconds=0.5, channels=2)
    assert encode_audio(x, "opus")[:4] == b"OggS"
    if encoder_available("mp3"):
        mp3 = encode_audio(x, "mp3")
        assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


def test_blockwise_encoding_equals_one_shot(tmp_path: Path) -> None:
    x = noise(2, 50_000, seed=3)
    path = tmp_path / "out.flac"
    with AudioEncoder(path, "flac", 2) as encoder:
        for start in range(0, x.shape[1], 777):
            encoder.write(x[:, start : start + 777])
    assert np.array_equal(decode_audio(path).samples, decode_audio(encode_audio(x, "flac")).samples)


def test_bad_arguments() -> None:
    with pytest.raises(UnsupportedFormat):
        encode_audio(sine(), "aiff")
    with pytest.raises(ValueError, match="channels"):
        AudioEncoder(io.BytesIO(), "flac", 3)
    with AudioEncoder(io.BytesIO(), "flac", 2) as encoder, pytest.raises(ValueError, match="block"):
        encoder.write(sine(channels=1))
    assert not encoder_available("aiff")
    assert encoder_available("wav")
