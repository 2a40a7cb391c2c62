"""Choosing the DSP backend (``--dsp-backend auto|numba|cupy``).

``numba`` (CPU kernels + BLAS) is the default and always available. ``cupy`` needs the optional
``[gpu]`` extra and a CUDA device; ``auto`` picks it only when both are present. Probing imports
cupy lazily, so importing this module stays cheap.

The session graph follows the choice: :func:`make_graph` builds the CPU
:class:`~realtime.dsp.graph.Graph` or the GPU :class:`~realtime.dsp.gpu_graph.GpuGraph` (the
same graph rendered on the device). The server records the ``--dsp-backend`` asked for with
:func:`use_backend`; renders that name no backend get it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from .graph import AssetSource, Graph

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "active_backend",
    "cupy_available",
    "make_graph",
    "select_backend",
    "use_backend",
]

log = logging.getLogger(__name__)

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


_requested = "numba"


def use_backend(requested: str) -> None:
    """Make ``requested`` (``auto``, ``numba`` or ``cupy``) the backend of graphs built without one."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown DSP backend {requested!r}; expected one of {', '.join(BACKENDS)}")
    global _requested
    _requested = requested


def active_backend() -> str:
    """The backend :func:`use_backend` set (``numba`` until it is called)."""
    return _requested


def make_graph(
    backend: str | None,
    assets: Mapping[str, np.ndarray] | AssetSource | None,
    *,
    sample_rate: int = 48000,
    block: int = 1024,
    workers: int = 1,
) -> Graph:
    """A session graph on ``backend`` (None: :func:`active_backend`).

    ``numba``: the CPU graph. ``cupy``: the GPU graph, or :class:`BackendUnavailable` (with the
    reason) when cupy, numba's CUDA target or a device is missing. ``auto``: the CPU graph, on
    a GPU machine too: the GPU graph runs each recursion on one GPU thread per channel, and until
    ``benchmarks/gpu_render.py`` shows it beating numba on the machine's cores, ``auto`` must not
    make renders slower (decision 0011). The two render the same mix (within float32 rounding).
    """
    from .graph import Graph

    requested = active_backend() if backend is None else backend
    if requested == "cupy" and select_backend(requested) == "cupy":
        from .gpu_graph import GpuGraph

        return GpuGraph(assets, sample_rate=sample_rate, block=block, workers=workers)
    if requested not in BACKENDS:
        raise ValueError(f"unknown DSP backend {requested!r}; expected one of {', '.join(BACKENDS)}")
    return Graph(assets, sample_rate=sample_rate, block=block, workers=workers)
