"""Mixdowns as a byte stream: the file's bytes handed out while the render runs.

:func:`stream_mixdown` is the streaming twin of :func:`realtime.media.mixdown.write_mixdown`:
blocking (run it in a worker thread), it renders the session block by block and passes the
encoded bytes to ``emit`` in order, in pieces of about :data:`CHUNK_BYTES` (``emit`` may block:
that is the backpressure; it may raise, e.g. ``RenderCancelled``, to stop the render).

- ``wav``: the header is written first with the sizes known from the range
  (:func:`streamed_size` gives the whole length in advance); the bytes are identical to
  ``write_mixdown``'s.
- ``flac`` and ``ogg``: encoded incrementally by PyAV into a non-seekable writer. Ogg is
  identical to the file render; FLAC decodes to the same samples but its STREAMINFO carries no
  total length or MD5 (FFmpeg fills them in by seeking back, which a stream cannot).
- ``mp3``: FFmpeg writes the Xing/LAME "Info" frame (frame count, TOC, encoder delay and
  padding, which players use to trim the MP3 to its exact length) by seeking back after the
  last frame, and leaves it out on a stream; without it a player would add about 1100 frames
  of silence. Its fields depend only on the number of frames (constant bit rate: every frame
  is 960 bytes), so :func:`mp3_info_frame` computes it up front, as FFmpeg would, from a
  template FFmpeg writes once per process, and it is spliced in after the ID3v2 tag. The only
  difference from the file render is the LAME tag's music CRC (left 0; decoders ignore it) and
  the tag CRC over it. Should the template ever not look as expected (another FFmpeg), MP3
  falls back to a spooled file streamed once the render is done.
- ``stems=True``: a zip (stored, with data descriptors, as a zip written to a pipe must be) of
  one file per track. The first track's entry streams as it renders; the other tracks are
  encoded into spooled temporary files (memory, then disk) and follow when the render is done.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from typing import IO, BinaryIO, Final, cast

import numpy as np
import numpy.typing as npt

from ..dsp.graph import AssetSource, as_asset_source
from ..dsp.render import RenderPlan, frames_of_assets, plan_render, render_to
from ..session.schema import SessionDocument
from .decode import SAMPLE_RATE
from .dither import Tpdf24
from .encode import AudioEncoder, quantize_24
from .mixdown import MIXDOWN_FORMATS, MixdownFormat, stem_names

__all__ = ["CHUNK_BYTES", "SPOOL_BYTES", "mp3_info_frame", "stream_mixdown", "streamed_size", "wav_header"]

CHUNK_BYTES: Final = 64 * 1024
SPOOL_BYTES: Final = 4 * 1024 * 1024  # a spooled stem moves from memory to disk past this
_CHANNELS: Final = 2
_WAV_HEADER_BYTES: Final = 44
_F32 = npt.NDArray[np.float32]
Emit = Callable[[bytes], None]


def wav_header(frames: int, channels: int = _CHANNELS, sample_rate: int = SAMPLE_RATE) -> bytes:
    """The 44-byte header of a 24-bit PCM WAVE file of ``frames`` frames, as ``wave`` writes it."""
    data = frames * channels * 3
    if data + 36 > 0xFFFF_FFFF:
        raise ValueError(f"{frames} frames do not fit in a WAVE file")
    return b"RIFF" + struct.pack(
        "<L4s4sLHHLLHH4sL",
        36 + data,
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        channels * sample_rate * 3,
        channels * 3,
        24,
        b"data",
        data,
    )


def streamed_size(fmt: str, frames: int, *, stems: bool) -> int | None:
    """The stream's length in bytes when it is known before rendering (a WAV mix), else None."""
    if fmt == "wav" and not stems:
        return _WAV_HEADER_BYTES + frames * _CHANNELS * 3
    return None


# --------------------------------------------------------------------------------------------
# MP3: the Info frame, computed
# --------------------------------------------------------------------------------------------

_MP3_FRAME: Final = 1152  # samples per MPEG-1 layer III frame
_MP3_DELAY: Final = 576  # libmp3lame's encoder delay, as FFmpeg writes it in the LAME tag
_MP3_DECODER_DELAY: Final = 529
_XING: Final = 36  # offset of "Info" in an MPEG-1 stereo frame (after the header and side info)
_XING_BAGS: Final = 400
_XING_TOC: Final = 100


def _crc16(data: bytes) -> int:
    """CRC-16/ARC (FFmpeg's AV_CRC_16_ANSI_LE), as the LAME tag's CRC uses."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _id3_length(data: bytes | bytearray) -> int | None:
    """Bytes of the ID3v2 tag at the start of ``data`` (0 if none), None if 10 bytes are not there yet."""
    if len(data) < 10:
        return None if data[:3] == b"ID3"[: len(data)] else 0
    if data[:3] != b"ID3":
        return 0
    return 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])


@functools.cache
def _mp3_template() -> tuple[bytes, int] | None:
    """FFmpeg's Info frame for a 1-sample file, and the frame size; None if it is not as expected."""
    buffer = io.BytesIO()
    with AudioEncoder(buffer, "mp3", _CHANNELS) as encoder:
        encoder.write(np.zeros((_CHANNELS, 1), dtype=np.float32))
    data = buffer.getvalue()
    tag = _id3_length(data) or 0
    body = len(data) - tag
    if body % 3:  # the Info frame and two audio frames, all of one size
        return None
    size = body // 3
    frame = data[tag : tag + size]
    if frame[:2] != b"\xff\xfb" or frame[_XING : _XING + 4] != b"Info" or size < _XING + 156:
        return None
    return frame, size


def mp3_info_frame(samples: int) -> bytes | None:
    """The Info frame FFmpeg would write for an MP3 of ``samples`` frames (music CRC 0); None if unknown.

    Mirrors FFmpeg's mp3 muxer for a constant bit rate: libmp3lame gives one frame more than
    the input fills, the padding is what the last frame holds beyond the input (at most a frame
    plus the decoder delay), and the TOC samples the byte positions of up to 400 "bags" of frames.
    """
    template = _mp3_template()
    if template is None:
        return None
    frame, size = template
    frames = -(-samples // _MP3_FRAME) + 1
    padding = min(frames * _MP3_FRAME - samples - _MP3_DELAY, _MP3_FRAME + _MP3_DECODER_DELAY)
    total = size
    bags = [0] * _XING_BAGS
    want, seen, pos = 1, 0, 0
    for _ in range(frames):
        seen += 1
        total += size
        if seen == want:
            bags[pos] = total
            pos += 1
            if pos == _XING_BAGS:  # keep every second bag, then count twice as many frames per bag
                bags[: _XING_BAGS // 2] = bags[1::2]
                want *= 2
                pos = _XING_BAGS // 2
            seen = 0
    toc = [0] + [min(256 * bags[i * pos // _XING_TOC] // total, 255) for i in range(1, _XING_TOC)]
    out = bytearray(frame)
    x = _XING
    out[x + 8 : x + 16] = struct.pack(">II", frames, total)
    out[x + 16 : x + 16 + _XING_TOC] = bytes(toc)
    out[x + 141 : x + 144] = ((_MP3_DELAY << 12) + padding).to_bytes(3, "big")
    out[x + 148 : x + 152] = struct.pack(">I", total)
    out[x + 152 : x + 154] = b"\0\0"  # the music CRC needs the audio: unknown up front
    out[x + 154 : x + 156] = struct.pack(">H", _crc16(bytes(out[:190])))
    return bytes(out)


class _Mp3Splice(io.RawIOBase):
    """A non-seekable writer that passes an MP3 stream on, with ``info`` inserted after its ID3v2 tag."""

    def __init__(self, out: BinaryIO, info: bytes) -> None:
        super().__init__()
        self._out = out
        self._info = info
        self._head: bytearray | None = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        if self._head is None:
            self._out.write(view)
            return view.nbytes
        self._head += view
        tag = _id3_length(self._head)
        if tag is not None and len(self._head) >= tag:
            self._out.write(self._head[:tag])
            self._out.write(self._info)
            self._out.write(self._head[tag:])
            self._head = None
        return view.nbytes


def _pcm24(block: _F32) -> bytes:
    ints = quantize_24(block).T.astype("<i4")  # (frames, channels), little-endian
    return np.ascontiguousarray(ints).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


class _Chunks(io.RawIOBase):
    """A write-only, non-seekable file that collects bytes for ``emit``.

    Writers (PyAV, zipfile) only buffer here; :meth:`pump` hands the bytes on, outside their
    calls, so an ``emit`` that blocks or raises never runs inside FFmpeg's I/O callback.
    """

    def __init__(self, emit: Emit, chunk: int = CHUNK_BYTES) -> None:
        super().__init__()
        self._emit = emit
        self._chunk = chunk
        self._buf = bytearray()
        self._started = False

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        self._buf += view
        return view.nbytes

    def pump(self, *, everything: bool = False) -> None:
        # The first bytes go out at once (time to first byte); later ones in full chunks.
        everything = everything or not self._started
        while len(self._buf) >= self._chunk or (everything and self._buf):
            self._started = True
            piece = bytes(self._buf[: self._chunk])
            del self._buf[: self._chunk]
            self._emit(piece)


class _Track:
    """One output file: a WAV with a known length, or a PyAV encoder, into ``target``."""

    def __init__(self, target: BinaryIO, fmt: MixdownFormat, frames: int, dither: bool) -> None:
        self._target = target
        self._dither = Tpdf24() if dither and fmt.lossless else None
        self._encoder: AudioEncoder | None = None
        if fmt.name == "wav":
            target.write(wav_header(frames))
        else:
            self._encoder = AudioEncoder(target, fmt.codec, _CHANNELS)

    def write(self, block: _F32) -> None:
        if self._dither is not None:
            block = self._dither(block)
        if self._encoder is not None:
            self._encoder.write(block)
        elif block.shape[1]:
            self._target.write(_pcm24(block))

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.close()

    def abandon(self) -> None:
        if self._encoder is not None:
            with contextlib.suppress(Exception):
                self._encoder.__exit__(RuntimeError, RuntimeError("render failed"), None)


def _spool() -> BinaryIO:
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))


def _copy(source: BinaryIO, dest: IO[bytes], out: _Chunks) -> None:
    source.seek(0)
    while piece := source.read(CHUNK_BYTES):
        dest.write(piece)
        out.pump()


def _mp3_splice(out: _Chunks, fmt: MixdownFormat, frames: int) -> BinaryIO | None:
    """The writer an MP3 streams through (None when the Info frame cannot be computed)."""
    info = mp3_info_frame(frames) if fmt.name == "mp3" else None
    return None if info is None else cast(BinaryIO, _Mp3Splice(cast(BinaryIO, out), info))


class _MixSink:
    """A ``RenderSink`` encoding the mix straight into the stream (or into a spool first, see above)."""

    def __init__(self, out: _Chunks, fmt: MixdownFormat, frames: int, dither: bool) -> None:
        self._out = out
        target = _mp3_splice(out, fmt, frames) if fmt.name == "mp3" else cast(BinaryIO, out)
        self._spool = _spool() if target is None else None
        self._track = _Track(target or self._spool or cast(BinaryIO, out), fmt, frames, dither)

    def mix(self, block: _F32) -> None:
        self._track.write(block)
        self._out.pump()

    def stems(self, blocks: Mapping[str, _F32]) -> None:
        """A mixdown streams the mix only: the render's per-track blocks are not wanted here."""

    def close(self) -> None:
        self._track.close()
        if self._spool is not None:
            _copy(self._spool, cast(BinaryIO, self._out), self._out)
            self._spool.close()

    def abandon(self) -> None:
        self._track.abandon()
        if self._spool is not None:
            self._spool.close()


class _StemsSink:
    """A ``RenderSink`` writing a zip of stems: the first live, the rest through spools."""

    def __init__(
        self, out: _Chunks, fmt: MixdownFormat, frames: int, dither: bool, names: Mapping[str, str]
    ) -> None:
        self._out = out
        self._fmt = fmt
        self._names = dict(names)
        # Sizes decide zip64 up front (a pipe cannot be patched): WAV's is exact, the codecs'
        # stay below PCM's.
        self._size = frames * _CHANNELS * 3 + _WAV_HEADER_BYTES
        self._zip = zipfile.ZipFile(cast(BinaryIO, out), "w", compression=zipfile.ZIP_STORED)
        self._tracks: dict[str, _Track] = {}
        self._spools: dict[str, BinaryIO] = {}
        self._live: BinaryIO | None = None
        ids = list(names)
        try:
            for i, tid in enumerate(ids):
                live = i == 0 and (fmt.name != "mp3" or mp3_info_frame(frames) is not None)
                if live:
                    self._live = self._entry(tid)
                    target = self._live
                    if fmt.name == "mp3":
                        info = mp3_info_frame(frames)
                        assert info is not None
                        target = cast(BinaryIO, _Mp3Splice(self._live, info))
                else:
                    target = self._spools[tid] = _spool()
                self._tracks[tid] = _Track(target, fmt, frames, dither)
        except BaseException:
            self.abandon()
            raise

    def _entry(self, tid: str) -> BinaryIO:
        info = zipfile.ZipInfo(self._names[tid], date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_STORED
        if self._fmt.name == "wav":
            info.file_size = self._size
        entry = self._zip.open(info, "w", force_zip64=self._size * 1.05 > zipfile.ZIP64_LIMIT)
        return cast(BinaryIO, entry)

    def mix(self, block: _F32) -> None:
        """A stem zip holds the tracks only: the render's master block is not wanted here."""

    def stems(self, blocks: Mapping[str, _F32]) -> None:
        for tid, block in blocks.items():
            track = self._tracks.get(tid)
            if track is not None:
                track.write(block)
        self._out.pump()

    def close(self) -> None:
        for tid, track in self._tracks.items():
            track.close()
            if tid in self._spools:
                with self._entry(tid) as entry:
                    _copy(self._spools[tid], entry, self._out)
                self._spools.pop(tid).close()
            elif self._live is not None:
                self._live.close()
                self._live = None
            self._out.pump()
        self._zip.close()

    def abandon(self) -> None:
        for track in self._tracks.values():
            track.abandon()
        for spool in self._spools.values():
            spool.close()
        # The zip is left unfinished on purpose: the stream is cut, nothing reads it.


def stream_mixdown(
    emit: Emit,
    doc: SessionDocument,
    assets: Mapping[str, np.ndarray] | AssetSource,
    fmt: str,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    dither: bool = False,
    stems: bool = False,
    workers: int = 1,
    block: int = 4096,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> RenderPlan:
    """Render ``doc`` in ``fmt`` (see the module docstring) and ``emit`` the file's bytes in order.

    Blocking. Raises ``ValueError`` for an unknown format or a bad range (before any byte), and
    whatever ``emit`` or the render raises (``RenderCancelled`` when ``cancel`` is set).
    """
    if fmt not in MIXDOWN_FORMATS:
        raise ValueError(f"unknown mixdown format {fmt!r}; use one of {', '.join(MIXDOWN_FORMATS)}")
    spec = MIXDOWN_FORMATS[fmt]
    source = as_asset_source(assets)
    plan = plan_render(doc, frames_of_assets(source), start_s=start_s, end_s=end_s)
    out = _Chunks(emit)
    sink: _MixSink | _StemsSink
    if stems:
        sink = _StemsSink(out, spec, plan.frames, dither, stem_names(doc, spec.extension))
    else:
        sink = _MixSink(out, spec, plan.frames, dither)
    try:
        render_to(
            sink,
            doc,
            source,
            start_s=start_s,
            end_s=end_s,
            block=block,
            workers=workers,
            stems=stems,
            progress=progress,
            cancel=cancel,
        )
        sink.close()
    except BaseException:
        sink.abandon()
        raise
    out.pump(everything=True)
    return plan
