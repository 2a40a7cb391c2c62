"""Argument checks shared by the public wrappers."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def check_block(
    block: object, channels: int | None = None, name: str = "block", *, writable: bool = True
) -> NDArray[np.float32]:
    """Validate the package's audio convention: float32, (channels, frames), C-contiguous."""
    if not isinstance(block, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(block).__name__}")
    if block.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {block.dtype}")
    if block.ndim != 2:
        raise ValueError(f"{name} must be shaped (channels, frames), got shape {block.shape}")
    if channels is not None and block.shape[0] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got {block.shape[0]}")
    if not block.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not block.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return block


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``float(value)``, which must be finite and > 0 (or ≥ 0)."""
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (v == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return v


def check_range(name: str, value: float, lo: float, hi: float) -> float:
    """``float(value)``, which must lie in ``[lo, hi]``."""
    v = float(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be within [{lo}, {hi}], got {value}")
    return v


def check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or not 1 <= channels <= 64:
        raise ValueError(f"channels must be an integer in [1, 64], got {channels!r}")
    return int(channels)


def check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"sample rate must be an integer, got {sample_rate!r}")
    if not 8000 <= sample_rate <= 384000:
        raise ValueError(f"sample rate must be within [8000, 384000] Hz, got {sample_rate}")
    return int(sample_rate)


MAX_LISTENERS = 4096


def check_listeners(listeners: int) -> int:
    if isinstance(listeners, bool) or not isinstance(listeners, int | np.integer):
        raise ValueError(f"listeners must be an integer, got {listeners!r}")
    if not 1 <= listeners <= MAX_LISTENERS:
        raise ValueError(f"listeners must be within [1, {MAX_LISTENERS}], got {listeners}")
    return int(listeners)


def check_stacked_block(block: object, listeners: int, channels: int) -> NDArray[np.float32]:
    """Validate many listeners' blocks, (listeners, channels, frames) or (listeners · channels, frames).

    Float32, C-contiguous and writeable; returns the (listeners, channels, frames) view.
    """
    if not isinstance(block, np.ndarray):
        raise TypeError(f"block must be a numpy array, got {type(block).__name__}")
    if block.dtype != np.float32:
        raise TypeError(f"block must be float32, got {block.dtype}")
    if block.ndim == 3:
        if block.shape[:2] != (listeners, channels):
            raise ValueError(
                f"block must be shaped ({listeners}, {channels}, frames), got shape {block.shape}"
            )
    elif block.ndim == 2:
        if block.shape[0] != listeners * channels:
            raise ValueError(
                f"block must have {listeners * channels} rows ({listeners} listeners x {channels} "
                f"channels), got shape {block.shape}"
            )
    else:
        raise ValueError(
            f"block must be shaped (listeners, channels, frames) or (listeners·channels, frames), "
            f"got shape {block.shape}"
        )
    if not block.flags.c_contiguous:
        raise ValueError("block must be C-contiguous")
    if not block.flags.writeable:
        raise ValueError("block must be writeable")
    if block.ndim == 3:
        return block
    stacked: NDArray[np.float32] = block.reshape(listeners, channels, block.shape[1])
    return stacked
