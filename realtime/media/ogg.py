"""Ogg pages (RFC 3533): split a muxer's output into pages, and re-base pages for a late joiner.

A live Ogg/Opus stream is encoded once per session. A listener who joins mid-stream gets the
header pages (OpusHead, OpusTags) followed by the audio pages from the join point on, with
granule positions and page sequence numbers re-based as if the stream had started there, so
every player sees an ordinary stream that begins at time zero.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

CAPTURE = b"OggS"
_HEADER = struct.Struct("<4sBBqIII B")  # capture, version, flags, granule, serial, seq, crc, segments
_HEADER_LEN = 27
FLAG_CONTINUED = 0x01
FLAG_BOS = 0x02
FLAG_EOS = 0x04

# Ogg's CRC-32 is the unreflected polynomial 0x04C11DB7 with zero initial value and no final
# xor. zlib computes the reflected variant in C; bit-reversing the input bytes and the result
# turns one into the other, at C speed.
_REVERSE_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc(data: bytes) -> int:
    reflected = zlib.crc32(data.translate(_REVERSE_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


@dataclass(frozen=True, slots=True)
class Page:
    data: bytes
    flags: int
    granule: int
    serial: int
    sequence: int

    @property
    def is_header(self) -> bool:
        """OpusHead and OpusTags pages carry granule position 0."""
        return self.granule == 0


class PageSplitter:
    """Feed bytes as a muxer writes them; get back whole pages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Page]:
        self._buf += data
        pages: list[Page] = []
        buf = self._buf
        while True:
            if len(buf) < _HEADER_LEN:
                break
            if buf[:4] != CAPTURE:
                raise ValueError("lost Ogg page sync (the muxer output is not a page stream)")
            n_segments = buf[26]
            header_len = _HEADER_LEN + n_segments
            if len(buf) < header_len:
                break
            body_len = sum(buf[_HEADER_LEN:header_len])
            total = header_len + body_len
            if len(buf) < total:
                break
            raw = bytes(buf[:total])
            del buf[:total]
            _, _, flags, granule, serial, sequence, _, _ = _HEADER.unpack_from(raw)
            pages.append(Page(raw, flags, granule, serial, sequence))
        return pages


def rebase(page: Page, *, granule_offset: int, sequence: int) -> bytes:
    """The page with its granule moved back by `granule_offset` and a new sequence number."""
    raw = bytearray(page.data)
    granule = page.granule - granule_offset if page.granule >= 0 else page.granule
    struct.pack_into("<qII", raw, 6, granule, page.serial, sequence)
    struct.pack_into("<I", raw, 22, 0)
    struct.pack_into("<I", raw, 22, ogg_crc(bytes(raw)))
    return bytes(raw)
