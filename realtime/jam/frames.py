"""Binary audio frames of a live jam: one 16-byte big-endian header, the payload, an optional copy.

The same format travels both ways (client → server and server → client), over a binary WebSocket
message or the ``jam-audio`` DataChannel (see ``docs/jam-protocol.md``)::

    offset size field
    0      1    version         (1)
    1      1    codec           0 = PCM16 little-endian interleaved, 1 = Opus
    2      1    channels        1 or 2
    3      1    flags           bit 0 RESYNC (first frame after a start or a gap); others reserved
    4      4    sequence        u32, +1 per frame, wraps
    8      4    timestamp       u32, 48 kHz index of the first sample, wraps (like RTP)
    12     2    frames          samples per channel: 120, 240 or 480
    14     2    redundant_len   bytes of a trailing copy of the PREVIOUS frame's payload (0 = none)
    16     …    payload, then redundant_len bytes of redundancy

The parser is on the hot path (one call per packet per participant, 400 packets/s each), so it
returns zero-copy ``memoryview`` slices and allocates nothing beyond the returned tuple.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

__all__ = [
    "ALLOWED_FRAMES",
    "CODEC_NAMES",
    "CODEC_OPUS",
    "CODEC_PCM16",
    "FLAG_RESYNC",
    "HEADER",
    "HEADER_SIZE",
    "MAX_FRAME_BYTES",
    "MAX_OPUS_PAYLOAD",
    "VERSION",
    "FrameError",
    "FrameHeader",
    "encode_frame",
    "frame_sequence",
    "pack_header",
    "parse_frame",
    "seq_diff",
]

HEADER: Final = struct.Struct("!BBBBIIHH")
HEADER_SIZE: Final = HEADER.size  # 16
SEQUENCE: Final = struct.Struct("!I")
"""A frame's sequence number, at byte offset 4 of the header."""
VERSION: Final = 1
CODEC_PCM16: Final = 0
CODEC_OPUS: Final = 1
CODEC_NAMES: Final[dict[int, str]] = {CODEC_PCM16: "pcm16", CODEC_OPUS: "opus"}
FLAG_RESYNC: Final = 0x01
_KNOWN_FLAGS: Final = FLAG_RESYNC
ALLOWED_FRAMES: Final = frozenset({120, 240, 480})
MAX_OPUS_PAYLOAD: Final = 1275
"""RFC 6716 §3.2.1: the largest single Opus frame."""
MAX_FRAME_BYTES: Final = HEADER_SIZE + 2 * 480 * 2 * 2
"""The largest valid frame: PCM16 stereo 480 samples plus an equally large redundant copy (3856)."""

_U32: Final = 1 << 32
_HALF: Final = 1 << 31


class FrameError(ValueError):
    """A malformed audio frame. ``reason`` is a short machine code, e.g. ``"bad_version"``.

    Codes: ``too_short``, ``bad_version``, ``unknown_codec``, ``bad_channels``, ``bad_frames``,
    ``bad_length``, ``empty_payload``, ``pcm_size_mismatch``, ``payload_too_long``,
    ``bad_field`` (encoding only). ``unknown_codec`` maps to WebSocket close 1003, the rest to 1007.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class FrameHeader(NamedTuple):
    """The decoded 16-byte header (a tuple: slot-free and cheap to build)."""

    version: int
    codec: int
    channels: int
    flags: int
    sequence: int
    timestamp: int
    frames: int
    redundant_len: int

    @property
    def resync(self) -> bool:
        """True when the sender marked this frame as the first after a start or a gap."""
        return bool(self.flags & FLAG_RESYNC)


def _check_payload(codec: int, channels: int, frames: int, size: int, what: str) -> None:
    if codec == CODEC_PCM16:
        expected = frames * channels * 2
        if size != expected:
            raise FrameError(
                "pcm_size_mismatch",
                f"PCM16 {what} is {size} bytes, expected {frames} x {channels} x 2 = {expected}",
            )
    elif size == 0:
        raise FrameError("empty_payload", f"Opus {what} is empty")
    elif size > MAX_OPUS_PAYLOAD:
        raise FrameError("payload_too_long", f"Opus {what} is {size} bytes (max {MAX_OPUS_PAYLOAD})")


def parse_frame(data: bytes | bytearray | memoryview) -> tuple[FrameHeader, memoryview, memoryview]:
    """Split one frame into ``(header, payload, redundant)``; the views share ``data``'s memory.

    ``redundant`` is empty when the sender attached no copy of its previous payload. Reserved flag
    bits are ignored. Raises :class:`FrameError` (with ``reason``) for anything malformed.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise FrameError("too_short", f"frame is {size} bytes, shorter than the {HEADER_SIZE}-byte header")
    version, codec, channels, flags, seq, ts, frames, red = HEADER.unpack_from(data)
    if version != VERSION:
        raise FrameError("bad_version", f"frame version {version} is not supported (expected {VERSION})")
    if codec != CODEC_PCM16 and codec != CODEC_OPUS:
        raise FrameError("unknown_codec", f"codec {codec} is unknown (0 = PCM16, 1 = Opus)")
    if channels != 1 and channels != 2:
        raise FrameError("bad_channels", f"channels must be 1 or 2, got {channels}")
    if frames not in ALLOWED_FRAMES:
        raise FrameError("bad_frames", f"frames must be 120, 240 or 480 samples, got {frames}")
    body = size - HEADER_SIZE
    if body == 0:
        raise FrameError("empty_payload", "frame has a header but no payload")
    if red >= body:
        raise FrameError("bad_length", f"redundant_len {red} leaves no payload in a {body}-byte body")
    end = size - red
    _check_payload(codec, channels, frames, end - HEADER_SIZE, "payload")
    if red:
        _check_payload(codec, channels, frames, red, "redundant copy")
    view = data if isinstance(data, memoryview) else memoryview(data)
    header = FrameHeader(version, codec, channels, flags & _KNOWN_FLAGS, seq, ts, frames, red)
    return header, view[HEADER_SIZE:end], view[end:]


def pack_header(
    *,
    codec: int,
    channels: int,
    sequence: int,
    timestamp: int,
    frames: int,
    redundant_len: int = 0,
    flags: int = 0,
) -> bytes:
    """The 16-byte header; ``sequence`` and ``timestamp`` are taken modulo 2**32.

    Raises :class:`FrameError` (``bad_field`` or the matching parse code) for values that
    :func:`parse_frame` would reject, so a server never emits a frame its own parser refuses.
    """
    if codec not in CODEC_NAMES:
        raise FrameError("unknown_codec", f"codec {codec} is unknown (0 = PCM16, 1 = Opus)")
    if channels not in (1, 2):
        raise FrameError("bad_channels", f"channels must be 1 or 2, got {channels}")
    if frames not in ALLOWED_FRAMES:
        raise FrameError("bad_frames", f"frames must be 120, 240 or 480 samples, got {frames}")
    if not 0 <= redundant_len <= 0xFFFF:
        raise FrameError("bad_field", f"redundant_len {redundant_len} does not fit 16 bits")
    if flags & ~_KNOWN_FLAGS:
        raise FrameError("bad_field", f"flags {flags:#x} set reserved bits (only RESYNC = 1 is defined)")
    return HEADER.pack(
        VERSION, codec, channels, flags, sequence % _U32, timestamp % _U32, frames, redundant_len
    )


def encode_frame(
    *,
    codec: int,
    channels: int,
    sequence: int,
    timestamp: int,
    frames: int,
    payload: bytes | bytearray | memoryview,
    redundant: bytes | bytearray | memoryview = b"",
    flags: int = 0,
) -> bytes:
    """Header + payload + redundant copy as one ``bytes``; validated like :func:`parse_frame`."""
    header = pack_header(
        codec=codec,
        channels=channels,
        sequence=sequence,
        timestamp=timestamp,
        frames=frames,
        redundant_len=len(redundant),
        flags=flags,
    )
    _check_payload(codec, channels, frames, len(payload), "payload")
    if len(redundant):
        _check_payload(codec, channels, frames, len(redundant), "redundant copy")
    return b"".join((header, payload, redundant))


def frame_sequence(frame: bytes) -> int:
    """The sequence number of an encoded frame (its header already checked)."""
    seq: int = SEQUENCE.unpack_from(frame, 4)[0]
    return seq


def seq_diff(a: int, b: int) -> int:
    """Signed wrapping difference ``a - b`` of two u32 sequence numbers, in [-2**31, 2**31).

    ``seq_diff(0, 2**32 - 1) == 1``: the sequence wrapped and ``a`` is one frame newer.
    """
    return ((a - b + _HALF) % _U32) - _HALF
