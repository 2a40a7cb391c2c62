"""The personal-mix kernel on a CUDA GPU through cupy (optional ``[gpu]`` extra).

This module imports without cupy; its functions raise
:class:`realtime.dsp.backend.BackendUnavailable` when called without it. Arrays are cupy
float32 arrays with the same shapes and semantics as :mod:`realtime.dsp.mixer`; keep the gain
matrix and the output on the device across ticks and copy only the input block in and the
mixes out.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .backend import BackendUnavailable

__all__ = ["cupy_module", "mix_matrix", "mix_matrix_ramp"]

_cupy: ModuleType | None = None


def cupy_module() -> ModuleType:
    """The cupy module, imported on first use."""
    global _cupy
    if _cupy is None:
        try:
            _cupy = importlib.import_module("cupy")
        except ImportError as exc:
            raise BackendUnavailable(f"cupy is not installed (pip install 'escenario[gpu]'): {exc}") from exc
    return _cupy


def _check(name: str, arr: Any) -> Any:
    cp = cupy_module()
    if not isinstance(arr, cp.ndarray):
        raise TypeError(f"{name} must be a cupy array, got {type(arr).__name__}")
    if arr.dtype != cp.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional, got shape {arr.shape}")
    return arr


def mix_matrix(gains: Any, inputs: Any, out: Any = None) -> Any:
    """``Y = G · X`` on the GPU (cuBLAS SGEMM); see :func:`realtime.dsp.mixer.mix_matrix`."""
    cp = cupy_module()
    g = _check("gains", gains)
    x = _check("inputs", inputs)
    if g.shape[1] != x.shape[0]:
        raise ValueError(f"gains has {g.shape[1]} input column(s) but inputs has {x.shape[0]} row(s)")
    shape = (g.shape[0], x.shape[1])
    if out is None:
        return cp.matmul(g, x)
    y = _check("out", out)
    if y.shape != shape or not y.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous and shaped {shape}, got {y.shape}")
    cp.matmul(g, x, out=y)
    return y


def mix_matrix_ramp(gains_start: Any, gains_end: Any, inputs: Any, out: Any = None) -> Any:
    """Gains ramping linearly over the block; see :func:`realtime.dsp.mixer.mix_matrix_ramp`."""
    cp = cupy_module()
    g0 = _check("gains_start", gains_start)
    g1 = _check("gains_end", gains_end)
    if g0.shape != g1.shape:
        raise ValueError(f"gains_start {g0.shape} and gains_end {g1.shape} differ in shape")
    y = mix_matrix(g0, inputs, out)
    frames = y.shape[1]
    if frames:
        w = cp.arange(1, frames + 1, dtype=cp.float32) / cp.float32(frames)
        y += mix_matrix(g1 - g0, inputs) * w
    return y
