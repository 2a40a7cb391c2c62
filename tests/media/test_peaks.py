"""Waveform peaks: vectorised slicing against a plain loop, and the stored fine level."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.media.peaks import PeakAccumulator, PeakLevel, compute_peaks, merge_channels, slice_starts


def naive_peaks(samples: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    channels, frames = samples.shape
    mins = np.zeros((channels, width), np.float32)
    maxs = np.zeros((channels, width), np.float32)
    for i in range(width):
        start = i * frames // width
        stop = max((i + 1) * frames // width, start + 1)
        for c in range(channels):
            mins[c, i] = min(samples[c, start:stop])
            maxs[c, i] = max(samples[c, start:stop])
    return mins, maxs


@pytest.mark.parametrize(
    ("channels", "frames", "width"), [(1, 1000, 10), (2, 1001, 7), (2, 10, 37), (1, 5, 5)]
)
def test_compute_peaks_matches_a_loop(channels: int, frames: int, width: int) -> None:
    x = np.random.default_rng(frames).standard_normal((channels, frames)).astype(np.float32)
    got = compute_peaks(x, width)
    want = naive_peaks(x, width)
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])


def test_compute_peaks_edge_cases() -> None:
    mins, maxs = compute_peaks(np.zeros((2, 0), np.float32), 4)
    assert mins.shape == maxs.shape == (2, 4)
    assert compute_peaks(np.array([1.0, -2.0, 3.0]), 1)[1].tolist() == [[3.0]]
    with pytest.raises(ValueError, match="width"):
        compute_peaks(np.zeros((1, 4)), 0)
    assert slice_starts(10, 4).tolist() == [0, 2, 5, 7]


def test_sine_peaks() -> None:
    t = np.arange(48000) / 48000
    x = (0.5 * np.sin(2 * np.pi * 100 * t)).astype(np.float32)[np.newaxis, :]
    mins, maxs = merge_channels(*compute_peaks(x, 50))
    assert np.allclose(maxs, 0.5, atol=1e-3)
    assert np.allclose(mins, -0.5, atol=1e-3)


@pytest.mark.parametrize("chunk", [1, 100, 256, 1000, 99_999])
def test_accumulator_matches_one_pass(chunk: int) -> None:
    x = np.random.default_rng(7).standard_normal((2, 10_000)).astype(np.float32)
    acc = PeakAccumulator(2, block=256)
    for start in range(0, x.shape[1], chunk):
        acc.feed(x[:, start : start + chunk])
    level = acc.finish()
    assert level.frames == 10_000
    assert level.bins == 40  # 39 whole blocks and a short one
    for b in range(level.bins):
        part = x[:, b * 256 : (b + 1) * 256]
        assert np.array_equal(level.mins[:, b], part.min(axis=1))
        assert np.array_equal(level.maxs[:, b], part.max(axis=1))


def test_level_round_trips_and_derives_widths() -> None:
    x = np.random.default_rng(8).standard_normal((2, 256 * 64)).astype(np.float32)
    acc = PeakAccumulator(2)
    acc.feed(x)
    level = PeakLevel.from_bytes(acc.finish().to_bytes())
    assert (level.channels, level.bins, level.block, level.frames) == (2, 64, 256, x.shape[1])
    # Widths dividing the block count give exactly the sample peaks.
    for width in (1, 2, 8, 64):
        assert all(
            np.array_equal(got, want)
            for got, want in zip(level.peaks(width), merge_channels(*compute_peaks(x, width)), strict=True)
        )
    with pytest.raises(ValueError, match="truncated"):
        PeakLevel.from_bytes(b"xx")
    with pytest.raises(ValueError, match="expected"):
        PeakLevel.from_bytes(acc.finish().to_bytes()[:-4])
    empty = PeakAccumulator(1).finish()
    assert empty.bins == 0
    assert PeakLevel.from_bytes(empty.to_bytes()).peaks(3)[0].tolist() == [0.0, 0.0, 0.0]
