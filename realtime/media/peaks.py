"""Waveform peaks: the minimum and maximum sample of each of `width` equal slices of a signal.

Slice `i` of a signal of `n` frames covers frames `floor(i*n/width)` up to (not including)
`floor((i+1)*n/width)`; when `width > n` a slice may be empty and then shows the sample it
starts at. An asset keeps one fine level (`PeakLevel`, a min/max pair per `PEAK_BLOCK`
frames and channel) from which any coarser width is derived without touching the audio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

PEAK_BLOCK: Final = 256
_HEADER: Final = struct.Struct("<4sB3xIIQQ")  # magic, version, block, channels, frames, bins
_MAGIC: Final = b"ESPK"
_VERSION: Final = 1

F32 = npt.NDArray[np.float32]


def slice_starts(frames: int, width: int) -> npt.NDArray[np.int64]:
    """First frame of each of `width` slices of `frames` frames."""
    return (np.arange(width, dtype=np.int64) * frames) // width


def compute_peaks(samples: npt.ArrayLike, width: int) -> tuple[F32, F32]:
    """Per-channel (min, max) of `samples` (channels, frames), each shaped (channels, width)."""
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1:
        data = data[np.newaxis, :]
    if data.ndim != 2:
        raise ValueError(f"expected (channels, frames), got shape {data.shape}")
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    channels, frames = data.shape
    if frames == 0:
        empty = np.zeros((channels, width), np.float32)
        return empty, empty.copy()
    if frames % width == 0:
        # Equal slices: one reshape, no index arithmetic.
        shaped = data.reshape(channels, width, frames // width)
        return shaped.min(axis=2), shaped.max(axis=2)
    starts = slice_starts(frames, width)
    return np.minimum.reduceat(data, starts, axis=1), np.maximum.reduceat(data, starts, axis=1)


def merge_channels(mins: F32, maxs: F32) -> tuple[F32, F32]:
    """One (min, max) pair per slice over all channels."""
    return mins.min(axis=0), maxs.max(axis=0)


@dataclass(frozen=True, slots=True)
class PeakLevel:
    """Per-channel min/max of every `block` frames (the last block may be shorter)."""

    block: int
    frames: int
    mins: F32  # (channels, bins)
    maxs: F32

    @property
    def channels(self) -> int:
        return int(self.mins.shape[0])

    @property
    def bins(self) -> int:
        return int(self.mins.shape[1])

    def peaks(self, width: int) -> tuple[F32, F32]:
        """Merged (min, max) for `width` slices, from the blocks (slice edges fall on block edges).

        Callers wanting more slices than there are blocks should compute from the samples.
        """
        if width < 1:
            raise ValueError(f"width must be at least 1, not {width}")
        if self.bins == 0:
            return np.zeros(width, np.float32), np.zeros(width, np.float32)
        mins, maxs = merge_channels(self.mins, self.maxs)
        starts = slice_starts(self.bins, width)
        return np.minimum.reduceat(mins, starts), np.maximum.reduceat(maxs, starts)

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(_MAGIC, _VERSION, self.block, self.channels, self.frames, self.bins)
        body = np.stack([self.mins, self.maxs]).astype("<f4", copy=False)
        return header + body.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> PeakLevel:
        if len(data) < _HEADER.size:
            raise ValueError("peak data is truncated")
        magic, version, block, channels, frames, bins = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError("not peak data of a known version")
        expected = _HEADER.size + 2 * channels * bins * 4
        if len(data) != expected:
            raise ValueError(f"peak data has {len(data)} bytes, expected {expected}")
        body = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).reshape(2, channels, bins)
        return cls(
            block=block, frames=frames, mins=body[0].astype(np.float32), maxs=body[1].astype(np.float32)
        )


class PeakAccumulator:
    """Builds a `PeakLevel` from a signal fed in blocks of any length."""

    def __init__(self, channels: int, block: int = PEAK_BLOCK) -> None:
        self.channels = channels
        self.block = block
        self.frames = 0
        self._carry = np.zeros((channels, 0), np.float32)
        self._mins: list[F32] = []
        self._maxs: list[F32] = []

    def feed(self, samples: F32) -> None:
        if samples.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {samples.shape[0]}")
        self.frames += samples.shape[1]
        data = np.concatenate([self._carry, samples], axis=1) if self._carry.shape[1] else samples
        whole = data.shape[1] // self.block * self.block
        if whole:
            shaped = data[:, :whole].reshape(self.channels, -1, self.block)
            self._mins.append(shaped.min(axis=2))
            self._maxs.append(shaped.max(axis=2))
        self._carry = np.array(data[:, whole:], dtype=np.float32)

    def finish(self) -> PeakLevel:
        mins, maxs = list(self._mins), list(self._maxs)
        if self._carry.shape[1]:
            mins.append(self._carry.min(axis=1, keepdims=True))
            maxs.append(self._carry.max(axis=1, keepdims=True))
        empty = np.zeros((self.channels, 0), np.float32)
        return PeakLevel(
            block=self.block,
            frames=self.frames,
            mins=np.concatenate(mins, axis=1) if mins else empty,
            maxs=np.concatenate(maxs, axis=1) if maxs else empty.copy(),
        )
