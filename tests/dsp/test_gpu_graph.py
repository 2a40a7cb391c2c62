"""The GPU graph (``--dsp-backend cupy``) without a GPU.

- Its renders are compared with the numba graph's in numba's CUDA simulator, with numpy standing
  in for cupy: ``tests/dsp/gpu_sim_cases.py``, run in a subprocess because the simulator is
  chosen once per process, when numba is imported (it must not leak into the other tests).
- Its CUDA kernels are compiled for the real CUDA target (typing and lowering to NVVM IR; no
  driver is needed), which catches Python the simulator accepts but a GPU build would reject.
- Backend selection and argument checks run here directly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime.dsp import backend, gpu, gpu_kernels
from realtime.dsp.backend import BackendUnavailable, make_graph
from realtime.dsp.gpu_graph import GpuGraph
from realtime.dsp.graph import Graph
from realtime.dsp.render import render_session
from realtime.session.schema import Clip, SessionDocument, SessionInfo, Track

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = Path(__file__).with_name("gpu_sim_cases.py")
CASES = re.findall(r"^def case_(\w+)\(", CASES_FILE.read_text(), re.MULTILINE)


@pytest.fixture(scope="module")
def simulated() -> dict[str, str | None]:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run(
        [sys.executable, "-m", "tests.dsp.gpu_sim_cases"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def test_every_case_is_collected() -> None:
    assert len(CASES) >= 6
    assert "session_matches_cpu" in CASES


@pytest.mark.parametrize("case", CASES)
def test_in_the_cuda_simulator(simulated: dict[str, str | None], case: str) -> None:
    assert case in simulated, f"the simulator run did not report {case}"
    failure = simulated[case]
    assert failure is None, failure


# --------------------------------------------------------------------------------------------
# The kernels compile for the CUDA target
# --------------------------------------------------------------------------------------------


def _signatures() -> dict[str, tuple[Any, ...]]:
    from numba import types as t

    block = t.float32[:, ::1]
    f64, i64 = t.float64[::1], t.int64[::1]
    f64_2, i64_2, f64_3 = t.float64[:, ::1], t.int64[:, ::1], t.float64[:, :, ::1]
    f64_4 = t.float64[:, :, :, ::1]
    scalars = (t.float64,) * 6
    return {
        "biquad_batch": (block, i64, i64, i64, i64, f64_3, i64, f64_4),
        "compressor_batch": (block, i64, i64, f64_2, i64, f64_2, i64, f64_2),
        "biquad": (block, f64_3, t.int64, f64_3),
        "compressor": (block, f64, f64, *scalars, t.boolean, t.float64, t.float64, t.int64),
        "delay": (block, block, i64, t.int64, t.int64, f64, f64, t.int64),
        "reverb": (block, f64_3, i64_2, i64_2, f64_2, f64_3, i64_2, i64_2, f64, t.float64, f64, f64, t.int64),
        "limiter": (block, f64_2, block, f64, f64, i64, i64, f64, f64_2, t.float64, t.float64, t.int64, f64),
    }


@pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="numba.cuda is the simulator in this process"
)
@pytest.mark.parametrize("name", sorted(gpu_kernels.KERNEL_FUNCTIONS))
def test_kernels_compile_for_the_cuda_target(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from numba import types as t
    from numba.cuda import compiler, dispatcher

    # Device functions are compiled for the current device's compute capability; there is none
    # here, so name one (any supported value gives the same typing and lowering).
    device = types.SimpleNamespace(compute_capability=(8, 0))
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: device)
    result = compiler.compile_cuda(gpu_kernels.KERNEL_FUNCTIONS[name], t.void, _signatures()[name], cc=(8, 0))
    assert "define" in result.library.get_llvm_str()


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------


def _doc() -> SessionDocument:
    return SessionDocument(SessionInfo(), (Track("t", "T", clips=(Clip("c", "a", 0.0),)),))


def _no_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    monkeypatch.setattr(gpu, "_cupy", None)


def test_cupy_without_cupy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cupy(monkeypatch)
    with pytest.raises(BackendUnavailable, match="cupy is not installed"):
        GpuGraph()
    with pytest.raises(BackendUnavailable, match="cupy is not installed"):
        make_graph("cupy", None)
    with pytest.raises(BackendUnavailable, match="cupy is not installed"):
        render_session(_doc(), {"a": np.zeros((2, 100), np.float32)}, backend="cupy")


def test_cupy_without_a_cuda_target_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(gpu, "_cupy", fake)
    monkeypatch.setattr(gpu_kernels.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="numba's CUDA target"):
        make_graph("cupy", None)
    # auto falls back to the CPU graph
    graph = make_graph("auto", None)
    assert type(graph) is Graph


def test_make_graph_numba_and_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cupy(monkeypatch)
    assert type(make_graph("numba", None, block=64)) is Graph
    assert type(make_graph("auto", None)) is Graph
    monkeypatch.setattr(backend, "_requested", "numba")
    assert backend.active_backend() == "numba"
    backend.use_backend("cupy")
    assert backend.active_backend() == "cupy"
    with pytest.raises(BackendUnavailable):
        make_graph(None, None)  # the backend in use
    with pytest.raises(ValueError, match="unknown DSP backend"):
        backend.use_backend("opencl")
    with pytest.raises(ValueError, match="unknown DSP backend"):
        make_graph("opencl", None)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def test_gpu_graph_argument_checks() -> None:
    with pytest.raises(TypeError, match="array module"):
        GpuGraph(xp=types.ModuleType("notarrays"))
    with pytest.raises(ValueError, match="workers"):
        GpuGraph(xp=np, workers=0)
    with pytest.raises(ValueError, match="block"):
        GpuGraph(xp=np, block=0)
    graph = GpuGraph({"a": np.zeros((2, 100), np.float32)}, xp=np)
    graph.update(_doc())
    with pytest.raises(ValueError, match="n must be"):
        graph.render_block(0, -1)
    with pytest.raises(ValueError, match="n must be"):
        graph.render_block(0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t0_frame"):
        graph.render_block(0.5, 10)  # type: ignore[arg-type]
    empty = graph.render_block(0, 0)  # no samples: nothing reaches a kernel
    assert empty.shape == (2, 0)
    assert empty.dtype == np.float32


def test_gpu_render_benchmark_dry_run(tmp_path: Path) -> None:
    """The GPU check for a lent machine runs here end to end (simulator, tiny session)."""
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_render.py", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "gpu_render_dry_run.json").read_text())
    assert result["runs"]["cupy"]["graph"] == "GpuGraph"
    assert result["runs"]["numba-1"]["graph"] == "Graph"
    assert result["runs"]["cupy"]["frames"] == result["runs"]["numba-1"]["frames"] > 0
    assert result["max_abs_diff"] <= 1e-6


def test_cli_render_on_cupy_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    args = ["render", "s1", "-o", str(tmp_path / "mix.wav"), "--dsp-backend", "cupy"]
    done = subprocess.run(
        [sys.executable, "-m", "realtime.cli", *args, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "ESCENARIO_DSP_BACKEND": "numba"},
    )
    assert done.returncode == 2
    assert done.stderr.startswith("escenario render: the cupy DSP backend is unavailable")


# --------------------------------------------------------------------------------------------
# Device state bookkeeping (numpy standing in for the device)
# --------------------------------------------------------------------------------------------


def test_slot_pool_grows_keeps_and_frees_slots() -> None:
    from realtime.dsp.gpu_state import DeviceState

    state = DeviceState(np)
    pool = state.pool("biquad")
    hosts = [np.full((1 + i % 2, 2 + i, 2), float(i + 1)) for i in range(6)]  # growing shapes
    slots = [pool.slot(h) for h in hosts]
    assert sorted(slots) == list(range(6))  # past the first 4 slots the array doubled
    pool.view(hosts[0])[:1, :2] += 10.0  # a kernel works on its own extent of the slot
    for h, s in zip(hosts, slots, strict=True):
        c, k, _ = h.shape
        assert (pool.array[s, :c, :k] == h + (10.0 if h is hosts[0] else 0.0)).all()
        assert not pool.array[s, c:].any()
        assert not pool.array[s, :, k:].any()
    assert pool.slot(hosts[3]) == slots[3]  # the same host keeps its slot
    state.reload()  # back to the hosts' values (after a reset)
    assert (pool.view(hosts[0])[:1, :2] == 1.0).all()
    state.prune()  # every host was used since the last prune: all stay
    assert len(state) == 6
    pool.slot(hosts[1])
    state.prune()  # only hosts[1] was used: the others' slots are free again
    assert len(state) == 1
    fresh = np.zeros((2, 3, 2))
    assert pool.slot(fresh) in set(slots) - {slots[1]}
    with pytest.raises(ValueError, match="rank"):
        pool.slot(np.zeros(3))


def test_device_state_forgets_an_effects_arrays() -> None:
    from realtime.dsp.effects import Compressor
    from realtime.dsp.gpu_state import DeviceState

    state = DeviceState(np)
    comp = Compressor(2, 48000)
    state.pool("detector").slot(comp._detector_state)
    copy = state.get(comp._smoothed)
    copy[0] = 5.0
    assert state.get(comp._smoothed) is copy
    state.forget(comp)
    assert len(state) == 0
    assert state.get(comp._smoothed)[0] == 0.0  # uploaded afresh from the host
