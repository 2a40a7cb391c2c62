"""Choosing the DSP backend (``--dsp-backend auto|numba|cupy``).

``numba`` (CPU kernels + BLAS) is the default and always available. ``cupy`` needs the optional
``[gpu]`` extra and a CUDA device; ``auto`` picks it only when both are present. Probing imports
cupy lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Literal

__all__ = ["BACKENDS", "BackendUnavailable", "cupy_available", "select_backend"]

BACKENDS = ("auto", "numba", "cupy")
Backend = Literal["numba", "cupy"]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine."""


def _probe_cupy() -> str | None:
    """``None`` if cupy imports and sees a CUDA device, else the reason it cannot be used."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        return f"cupy is not installed (pip install 'escenario[gpu]'): {exc}"
    except Exception as exc:  # a broken CUDA install can raise anything at import
        return f"cupy failed to import: {exc}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return f"no usable CUDA runtime: {exc}"
    if count < 1:
        return "no CUDA device found"
    return None


def cupy_available() -> bool:
    return _probe_cupy() is None


def select_backend(requested: str = "auto") -> Backend:
    """Resolve ``auto``/``numba``/``cupy`` to the backend to use.

    ``cupy`` raises :class:`BackendUnavailable` (with the reason) when cupy or a CUDA device is
    missing; ``auto`` then falls back to ``numba``. Anything else raises ``ValueError``.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown DSP backend {requested!r}; expected one of {', '.join(BACKENDS)}")
    if requested == "numba":
        return "numba"
    reason = _probe_cupy()
    if reason is None:
        return "cupy"
    if requested == "cupy":
        raise BackendUnavailable(f"the cupy DSP backend is unavailable: {reason}")
    return "numba"
