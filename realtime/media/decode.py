"""Decoding any audio file PyAV (FFmpeg) reads into 48 kHz float32, block by block.

`AudioReader` streams: it never holds more than one decoded block, so a three-hour upload
is checked, transcoded and summarised in bounded memory. `decode_audio` collects the blocks
into one array for callers that want the whole signal.

Resampling and channel conversion go through PyAV's `AudioResampler` (libswresample):
mono stays one channel, everything with two or more channels becomes stereo (FFmpeg's
standard downmix matrix for surround layouts).

Untrusted input: only the demuxers in `AUDIO_DEMUXERS` may open a file, so playlists and
other formats that make FFmpeg open further files or URLs (HLS, concat, …) are refused.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import av
import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48_000

# FFmpeg demuxer names (one name of a group matches the group, e.g. "mov" for mp4/m4a).
AUDIO_DEMUXERS = (
    "wav,w64,flac,mp3,ogg,mov,aac,matroska,aiff,caf,ac3,eac3,dts,wv,ape,tta,amr,au,asf,mpc,mpc8,"
    "voc,dsf,truehd,mlp,shn,loas,ircam,nistsphere,sox,tak,gsm,g722,xwma,vqf,avi,flv,mpeg"
)

Samples = npt.NDArray[np.float32]
Source = str | Path | bytes | bytearray | memoryview | BinaryIO


class MediaError(Exception):
    """An upload that cannot become an asset; `str()` is a message for the user."""


class NotAudio(MediaError):
    """Not a media file FFmpeg recognises, or one without an audio stream."""


class CorruptAudio(MediaError):
    """A recognised audio file whose audio cannot be decoded (or that holds none)."""


class TooLong(MediaError):
    """Longer than the allowed duration."""


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: Samples  # (channels, frames) float32 at SAMPLE_RATE
    source_sample_rate: int
    channels: int

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.frames / SAMPLE_RATE


class AudioReader:
    """Decode the first audio stream of `source` into float32 blocks of shape (channels, n).

    Use as a context manager; `source_sample_rate` and `channels` are known once it is open.
    Iterating `blocks()` raises `CorruptAudio` on a decode error and `TooLong` as soon as
    the output passes `max_duration_s` (decoding stops there).
    """

    def __init__(self, source: Source, *, max_duration_s: float | None = None) -> None:
        self._source = source
        self._max_frames = None if max_duration_s is None else round(max_duration_s * SAMPLE_RATE)
        self._container: av.container.InputContainer | None = None
        self._stream: av.AudioStream | None = None
        self.source_sample_rate = 0
        self.channels = 0
        self.frames = 0

    def __enter__(self) -> Self:
        file: str | BinaryIO
        if isinstance(self._source, bytes | bytearray | memoryview):
            file = io.BytesIO(bytes(self._source))
        elif isinstance(self._source, Path):
            file = str(self._source)
        else:
            file = self._source
        if _is_empty(file):
            raise CorruptAudio("the file is empty")
        options = {"format_whitelist": AUDIO_DEMUXERS}
        if isinstance(file, str):
            options["protocol_whitelist"] = "file"
        try:
            container = av.open(file, mode="r", options=options, metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise NotAudio("this is not an audio file in a format the server reads") from exc
        if not container.streams.audio:
            container.close()
            raise NotAudio("the file has no audio stream")
        self._container = container
        self._stream = container.streams.audio[0]
        ctx = self._stream.codec_context
        self.source_sample_rate = int(ctx.sample_rate or 0)
        self.channels = 1 if ctx.channels == 1 else 2
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def blocks(self) -> Iterator[Samples]:
        if self._container is None or self._stream is None:
            raise RuntimeError("use AudioReader as a context manager")
        layout = "mono" if self.channels == 1 else "stereo"
        resampler: av.AudioResampler | None = None
        shape: tuple[str, str, int] | None = None
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    if not isinstance(frame, av.AudioFrame) or frame.samples == 0:
                        continue
                    if not self.source_sample_rate:
                        self.source_sample_rate = frame.sample_rate
                    current = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if shape != current:
                        # A stream may change rate or layout midway; the resampler's setup may not.
                        if resampler is not None:
                            yield from self._converted(resampler.resample(None))
                        resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
                        shape = current
                    assert resampler is not None
                    yield from self._converted(resampler.resample(frame))
            if resampler is not None:
                yield from self._converted(resampler.resample(None))
        except (av.FFmpegError, ValueError) as exc:
            # ValueError: PyAV refusing a frame it cannot describe (an unknown layout, say).
            raise CorruptAudio(f"the audio cannot be decoded: {_reason(exc)}") from exc
        if self.frames == 0:
            raise CorruptAudio("the file contains no decodable audio")

    def _converted(self, frames: list[av.AudioFrame]) -> Iterator[Samples]:
        for out in frames:
            array = out.to_ndarray()
            if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != self.channels:
                raise CorruptAudio("the decoder produced audio in an unexpected shape")
            block: Samples = array.astype(np.float32, copy=False)
            self.frames += block.shape[1]
            if self._max_frames is not None and self.frames > self._max_frames:
                raise TooLong(f"the audio is longer than {self._max_frames / SAMPLE_RATE:g} seconds")
            yield block


def decode_audio(
    source: Source, *, max_duration_s: float | None = None, expected_frames: int | None = None
) -> DecodedAudio:
    """The whole first audio stream of `source` as float32 (channels, frames) at 48 kHz.

    `expected_frames` (known for stored assets) lets the result be filled in place instead
    of concatenated, which halves the peak memory of long files; it is only a hint.
    """
    with AudioReader(source, max_duration_s=max_duration_s) as reader:
        out = np.empty((reader.channels, max(0, expected_frames or 0)), np.float32)
        filled = 0
        extra: list[Samples] = []
        for block in reader.blocks():
            n = block.shape[1]
            if not extra and filled + n <= out.shape[1]:
                out[:, filled : filled + n] = block
                filled += n
            else:
                extra.append(block)
        samples = np.concatenate([out[:, :filled], *extra], axis=1) if extra else out[:, :filled]
        return DecodedAudio(
            samples=np.ascontiguousarray(samples, dtype=np.float32),
            source_sample_rate=reader.source_sample_rate,
            channels=reader.channels,
        )


def _is_empty(file: str | BinaryIO) -> bool:
    if isinstance(file, str):
        return Path(file).stat().st_size == 0
    if isinstance(file, io.BytesIO):
        return not file.getbuffer().nbytes
    return False


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)[:200]
