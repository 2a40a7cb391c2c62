"""Decoding uploads: every format this FFmpeg build encodes, resampling, channels, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from realtime.media.decode import SAMPLE_RATE, AudioReader, CorruptAudio, NotAudio, TooLong, decode_audio
from realtime.media.encode import encode_audio

from .audio import PYAV_FORMATS, dominant_frequency, encoder_exists, pyav_bytes, sine, wav_bytes


@pytest.mark.parametrize("kind", sorted(PYAV_FORMATS))
@pytest.mark.parametrize("channels", [1, 2])
def test_every_available_format_decodes_to_48k(kind: str, channels: int) -> None:
    if not encoder_exists(PYAV_FORMATS[kind][2]):
        pytest.skip(f"this FFmpeg build cannot encode {kind}")
    rate = 48000 if kind == "opus" else 44100  # Opus runs at 48 kHz (or 8/12/16/24)
    decoded = decode_audio(pyav_bytes(sine(440, seconds=1.0, rate=rate, channels=channels), kind, rate))
    assert decoded.channels == channels
    assert decoded.samples.shape[0] == channels
    assert decoded.samples.dtype == np.float32
    assert decoded.source_sample_rate == rate
    # Lossy codecs add encoder delay/padding (AAC: a frame or two).
    assert decoded.duration == pytest.approx(1.0, abs=0.05)
    assert dominant_frequency(decoded.samples) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_a_1khz_sine_stays_at_1khz_and_keeps_its_duration(rate: int) -> None:
    decoded = decode_audio(wav_bytes(sine(1000, seconds=2.0, rate=rate), rate))
    assert decoded.source_sample_rate == rate
    assert decoded.frames == pytest.approx(2 * SAMPLE_RATE, abs=2)
    bin_width = SAMPLE_RATE / decoded.frames
    assert abs(dominant_frequency(decoded.samples) - 1000) <= bin_width
    # The amplitude survives resampling (away from the filter's start-up).
    middle = decoded.samples[0, SAMPLE_RATE // 2 : -SAMPLE_RATE // 2]
    assert np.max(np.abs(middle)) == pytest.approx(0.5, abs=0.01)


def test_a_44k1_sine_matches_the_analytic_48k_sine() -> None:
    decoded = decode_audio(wav_bytes(sine(1000, seconds=1.0, rate=44100), 44100, sampwidth=3))
    reference = sine(1000, seconds=1.0, rate=48000)[0]
    # Compare away from the edges, where the resampling filter has no history.
    a, b = decoded.samples[0, 2000:-2000], reference[2000:-2000]
    correlation = float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))
    assert correlation > 0.9999


def test_surround_is_downmixed_to_stereo_and_mono_stays_mono() -> None:
    six = np.repeat(sine(500, seconds=0.5), 6, axis=0)
    decoded = decode_audio(wav_bytes(six))
    assert decoded.channels == 2
    assert decoded.samples.shape == (2, SAMPLE_RATE // 2)
    assert decode_audio(wav_bytes(sine(seconds=0.5))).samples.shape == (1, SAMPLE_RATE // 2)


def test_sources_can_be_bytes_paths_or_files(tmp_path: Path) -> None:
    data = wav_bytes(sine(seconds=0.25, channels=2))
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    for source in (data, path, str(path), io.BytesIO(data)):
        assert decode_audio(source).samples.shape == (2, SAMPLE_RATE // 4)


def test_reader_streams_blocks() -> None:
    data = wav_bytes(sine(seconds=3.0))
    with AudioReader(data) as reader:
        assert reader.channels == 1
        assert reader.source_sample_rate == SAMPLE_RATE
        blocks = list(reader.blocks())
    assert len(blocks) > 10
    assert sum(b.shape[1] for b in blocks) == 3 * SAMPLE_RATE == reader.frames


def test_too_long_stops_early() -> None:
    data = wav_bytes(sine(seconds=5.0))
    with AudioReader(data, max_duration_s=1.0) as reader:
        blocks = reader.blocks()
        with pytest.raises(TooLong, match="longer than 1"):
            list(blocks)
        assert reader.frames <= SAMPLE_RATE + 8192  # it stopped there, not at the end
    assert decode_audio(data, max_duration_s=5.0).frames == 5 * SAMPLE_RATE


def test_not_audio() -> None:
    with pytest.raises(NotAudio):
        decode_audio(b"just some text, not audio at all\n" * 50)
    with pytest.raises(NotAudio):
        decode_audio(np.random.default_rng(1).bytes(4096))
    with pytest.raises(NotAudio):
        decode_audio(wav_bytes(sine())[:30])  # cut inside the header


def test_playlists_are_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "secret.wav"
    target.write_bytes(wav_bytes(sine()))
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{target}\n#EXT-X-ENDLIST\n")
    with pytest.raises(NotAudio):
        decode_audio(playlist)
    concat = tmp_path / "list.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    with pytest.raises(NotAudio):
        decode_audio(concat)


def test_corrupt_audio() -> None:
    with pytest.raises(CorruptAudio, match="empty"):
        decode_audio(b"")
    with pytest.raises(CorruptAudio, match="no decodable audio"):
        decode_audio(wav_bytes(sine())[:44])  # a header and no samples
    flac = encode_audio(sine(seconds=2.0, channels=2), "flac")
    with pytest.raises(CorruptAudio, match="cannot be decoded"):
        decode_audio(flac[: len(flac) // 2])  # ends inside a frame


def test_an_empty_file_on_disk_is_corrupt(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(CorruptAudio, match="empty"):
        decode_audio(empty)
