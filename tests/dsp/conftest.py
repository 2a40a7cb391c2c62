"""Shared fixtures and helpers for the DSP tests: a seeded rng, block-wise processing, references."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from numpy.typing import NDArray

from realtime.dsp import kernels

FS = 48000
BLOCK_SIZES = (1, 64, 120, 1000)
CHANNELS = (1, 2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(440)


def blocks(frames: int, size: int) -> Iterator[slice]:
    for start in range(0, frames, size):
        yield slice(start, min(frames, start + size))


def random_blocks(frames: int, rng: np.random.Generator, high: int = 700) -> Iterator[slice]:
    start = 0
    while start < frames:
        n = int(rng.integers(1, high))
        yield slice(start, min(frames, start + n))
        start += n


def run_blocks(
    process: Callable[[NDArray[np.float32]], None],
    x: NDArray[np.float32],
    size: int,
    before: Callable[[int], None] | None = None,
) -> NDArray[np.float32]:
    """Feed ``x`` to an in-place ``process`` in contiguous blocks of ``size``; return the output.

    ``before(start_frame)`` runs before each block (to change parameters at block boundaries).
    """
    out = np.empty_like(x)
    for s in blocks(x.shape[1], size):
        if before is not None:
            before(s.start)
        b = x[:, s].copy()  # never a view of x, even when the slice is contiguous
        process(b)
        out[:, s] = b
    return out


def max_step(y: NDArray[np.floating]) -> float:
    """Largest sample-to-sample difference over all channels."""
    return float(np.abs(np.diff(y.astype(np.float64), axis=-1)).max())


def sine(
    freq: float, frames: int, amplitude: float = 1.0, phase: float = 0.0, fs: int = FS
) -> NDArray[np.float64]:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(frames) / fs + phase)


def true_peak_reference(x: NDArray[np.floating]) -> float:
    """BS.1770-4 Annex 2 true peak by zero-stuffing x4 and convolving with the 48-tap filter (linear).

    Independent of the polyphase kernel: the 48 taps are interleaved from the four phases.
    Includes the samples themselves, like the meter.
    """
    taps = kernels.TRUE_PEAK_TAPS
    h = np.zeros(48)
    for p in range(4):
        h[p::4] = taps[p]
    peak = float(np.abs(x).max())
    for ch in np.atleast_2d(x).astype(np.float64):
        up = np.zeros(4 * ch.shape[0])
        up[::4] = ch
        peak = max(peak, float(np.abs(np.convolve(up, h)[: up.shape[0]]).max()))
    return peak


def db(value: float) -> float:
    return 20.0 * float(np.log10(value)) if value > 0 else float("-inf")
