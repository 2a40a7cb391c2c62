"""Encoding 48 kHz float32 audio (channels, frames) into files, block by block.

- `flac`: FLAC, FFmpeg's encoder, 24-bit. The samples go in as `s32` with the low 8 bits
  zero; FFmpeg's FLAC encoder stores `s32` input as 24 bits per sample (STREAMINFO says 24).
- `wav`: RIFF WAVE through the stdlib `wave` module, 24-bit PCM.
- `opus`: Ogg/Opus through libopus, 64 kbit/s per channel (128 kbit/s stereo).
- `mp3`: MP3 through libmp3lame, 160 kbit/s per channel (320 kbit/s stereo); `encoder_available`
  says whether this FFmpeg build has it.

The lossless formats quantise to 24 bits by rounding (no dither) and clip to [-1, 1 - 2^-23].
"""

from __future__ import annotations

import contextlib
import io
import wave
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

import av
import numpy as np
import numpy.typing as npt

from .decode import SAMPLE_RATE, Samples

MIME_TYPES: Final = {
    "flac": "audio/flac",
    "wav": "audio/wav",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
}
_PYAV: Final = {
    # format: (container, codec, sample format, bit rate per channel)
    "flac": ("flac", "flac", "s32", 0),
    "opus": ("ogg", "libopus", "flt", 64_000),
    "mp3": ("mp3", "libmp3lame", "fltp", 160_000),
}
_FULL_SCALE_24: Final = float(1 << 23)


class UnsupportedFormat(ValueError):
    """The format is unknown, or this FFmpeg build has no encoder for it."""


def encoder_available(fmt: str) -> bool:
    if fmt == "wav":
        return True
    if fmt not in _PYAV:
        return False
    try:
        av.Codec(_PYAV[fmt][1], "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def quantize_24(samples: Samples) -> npt.NDArray[np.int32]:
    """Round float samples to 24-bit integers, clipped to the 24-bit range."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * np.float32(_FULL_SCALE_24))
    clipped: npt.NDArray[np.float32] = np.clip(scaled, -_FULL_SCALE_24, _FULL_SCALE_24 - 1)
    return clipped.astype(np.int32)


class AudioEncoder:
    """Write (channels, n) float32 blocks at 48 kHz to `dest` (a path or a binary file object).

    Use as a context manager: leaving it normally finishes the file (flushes the encoder and
    writes the trailer); leaving it with an exception only releases resources.
    """

    def __init__(self, dest: str | Path | BinaryIO, fmt: str, channels: int) -> None:
        if fmt not in MIME_TYPES:
            raise UnsupportedFormat(f"unknown audio format {fmt!r}; use one of {', '.join(MIME_TYPES)}")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        if not encoder_available(fmt):
            raise UnsupportedFormat(f"this FFmpeg build has no encoder for {fmt}")
        self.fmt = fmt
        self.channels = channels
        self._layout = "mono" if channels == 1 else "stereo"
        self._wave: wave.Wave_write | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.AudioStream | None = None
        self._closed = False
        target: str | BinaryIO = str(dest) if isinstance(dest, Path) else dest
        if fmt == "wav":
            self._wave = wave.open(target, "wb")  # noqa: SIM115 -- closed by close() or _abandon()
            self._wave.setnchannels(channels)
            self._wave.setsampwidth(3)
            self._wave.setframerate(SAMPLE_RATE)
            return
        container_format, codec, sample_format, rate_per_channel = _PYAV[fmt]
        self._sample_format = sample_format
        self._container = av.open(target, mode="w", format=container_format)
        try:
            stream = self._container.add_stream(codec, rate=SAMPLE_RATE, layout=self._layout)
            if not isinstance(stream, av.AudioStream):
                raise UnsupportedFormat(f"{codec} is not an audio codec")
            stream.codec_context.format = av.AudioFormat(sample_format)
            if rate_per_channel:
                stream.codec_context.bit_rate = rate_per_channel * channels
            self._stream = stream
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._abandon()

    def write(self, block: Samples) -> None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a ({self.channels}, n) block, got shape {block.shape}")
        if block.shape[1] == 0:
            return
        if self._wave is not None:
            self._wave.writeframes(_pcm24_bytes(block))
            return
        assert self._container is not None
        assert self._stream is not None
        if self._sample_format == "s32":
            ints = np.ascontiguousarray(quantize_24(block).T << 8).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(ints, format="s32", layout=self._layout)
        elif self._sample_format == "flt":
            packed = np.ascontiguousarray(block.T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=self._layout)
        else:  # planar float
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block), format="fltp", layout=self._layout
            )
        frame.sample_rate = SAMPLE_RATE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Finish the file."""
        if self._closed:
            return
        self._closed = True
        if self._wave is not None:
            self._wave.close()
            return
        assert self._container is not None
        assert self._stream is not None
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def _abandon(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The error that got us here matters, not one from closing a half-written file.
        with contextlib.suppress(Exception):
            if self._wave is not None:
                self._wave.close()
            elif self._container is not None:
                self._container.close()


def encode_audio(samples: Samples, fmt: str) -> bytes:
    """`samples` (channels, frames) float32 at 48 kHz as a complete file in `fmt`."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2:
        raise ValueError(f"expected (channels, frames), got shape {samples.shape}")
    buffer = io.BytesIO()
    with AudioEncoder(buffer, fmt, samples.shape[0]) as encoder:
        encoder.write(samples)
    return buffer.getvalue()


def _pcm24_bytes(block: Samples) -> bytes:
    """Interleaved little-endian 24-bit PCM."""
    ints = quantize_24(block).T.astype("<i4")  # (frames, channels)
    return np.ascontiguousarray(ints).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
