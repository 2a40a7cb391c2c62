"""The worker pool: real spawned processes running the tiny HTDemucs, crashes, cancellation, order."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from inference.pool import PoolConfig, WorkerPool, auto_threads, check_pool_settings, crash_reason
from inference.separation import separate_array
from inference.tasks import save_audio
from inference.worker import Cancelled, Failed, Finished, JobEvent, Progress, Started, Task
from realtime.media.decode import decode_audio

from .conftest import build_tiny_htdemucs

FS = 48000
TIMEOUT_S = 60.0


class Pool:
    """A started pool and the events it emitted, in order."""

    def __init__(self, config: PoolConfig, tmp: Path) -> None:
        self.tmp = tmp
        self.events: list[JobEvent] = []
        self._changed = asyncio.Event()
        self.pool = WorkerPool(config, self._on_event)

    def _on_event(self, event: JobEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, job_id: str, *kinds: type) -> JobEvent:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                for event in self.events:
                    if event.job_id == job_id and isinstance(event, kinds):
                        return event
                self._changed.clear()
                await self._changed.wait()

    def input(self, name: str, audio: np.ndarray) -> str:
        path = self.tmp / f"{name}.npy"
        save_audio(path, audio)
        return str(path)

    def separate(self, job_id: str, audio: np.ndarray, *, model: str = "tiny", **kw: Any) -> Task:
        task = Task(
            job_id,
            "separate",
            {"model": model, **kw.pop("params", {})},
            {"audio": self.input(job_id, audio)},
            str(self.tmp / job_id),
            **kw,
        )
        self.pool.submit(task)
        return task

    def order(self, kind: type) -> list[str]:
        return [e.job_id for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def make_pool(tmp_path: Path, tiny_demucs_repo: tuple[Path, str]) -> AsyncIterator[Any]:
    pools: list[Pool] = []
    models_dir, _ = tiny_demucs_repo

    async def make(**overrides: Any) -> Pool:
        config = PoolConfig(**{"models_dir": str(models_dir), "device": "cpu", **overrides})
        pool = Pool(config, tmp_path)
        await pool.pool.start()
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            await pool.pool.close()


def noise(seconds: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((channels, int(seconds * FS)))).astype(np.float32)


def reference_stems(audio: np.ndarray) -> dict[str, np.ndarray]:
    """What the pool should write: resample to the model's 44.1 kHz, separate, resample back."""
    model = build_tiny_htdemucs(0)
    stereo = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
    mix = soxr.resample(stereo.T, FS, 44100).T
    stems = separate_array(model, np.ascontiguousarray(mix, dtype=np.float32))
    out = {}
    for name, stem in stems.items():
        back = soxr.resample(np.ascontiguousarray(stem.T), 44100, FS).T[:, : audio.shape[1]]
        out[name] = np.pad(back, ((0, 0), (0, audio.shape[1] - back.shape[1])))
    return out


async def test_separation_writes_stems_the_length_of_the_source(make_pool: Any) -> None:
    pool = await make_pool()
    (pid,) = pool.pool.pids()
    odd = noise(2.5)[:, : int(2.5 * FS) - 17]
    mono = noise(1.3, channels=1, seed=3)
    pool.separate("odd", odd)
    pool.separate("mono", mono, params={"stems": ["vocals", "bass"]})
    for job_id, audio, stems in (("odd", odd, 4), ("mono", mono, 2)):
        event = await pool.wait_for(job_id, Finished, Failed)
        assert isinstance(event, Finished), event
        assert event.result["frames"] == audio.shape[1]
        assert len(event.result["stems"]) == stems
        expected = reference_stems(audio)
        for name, path in event.result["stems"].items():
            written = decode_audio(Path(path)).samples
            assert written.shape == (2, audio.shape[1])  # sample-exact: same frames as the source
            # 24-bit files; streaming vs one-shot resampling differs only in rounding
            np.testing.assert_allclose(written, np.clip(expected[name], -1, 1), atol=2e-5)
    progress = [e.fraction for e in pool.events if isinstance(e, Progress) and e.job_id == "odd"]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    # bad input fails that job with a clear message; the worker lives on
    pool.separate("tiny-input", np.zeros((2, 1), np.float32))
    failed = await pool.wait_for("tiny-input", Finished, Failed)
    assert isinstance(failed, Failed)
    assert "cannot separate this audio" in failed.error
    assert pool.pool.pids() == [pid]


def test_automatic_threads_use_idle_cores_only_in_the_idle_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert auto_threads("cpu", True, 1) == 8  # SCHED_IDLE: only CPU time nothing else wants
    assert auto_threads("cpu", True, 3) == 2  # shared among the CPU workers
    assert auto_threads("cpu", False, 1) == 7  # normal class: a core stays free
    assert auto_threads("cuda:0", True, 1) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert auto_threads("cpu", False, 4) == 1
    configs = PoolConfig(models_dir="m", device="cpu", cpu_workers=2, threads=0).worker_configs()
    assert [c.threads for c in configs] == [1, 1]  # one core (unknown count) for two workers: 1 each
    assert PoolConfig(models_dir="m", device="cpu", threads=3).worker_configs()[0].threads == 3
    with pytest.raises(ValueError, match="0 \\(automatic\\) or more"):
        check_pool_settings(device="cpu", workers=1, threads=-1, max_batch=0, precision="fp32")


async def test_workers_are_niced_and_thread_bounded(make_pool: Any) -> None:
    pool = await make_pool(threads=1, nice=7)
    (ready,) = await asyncio.wait_for(pool.pool.wait_ready(), TIMEOUT_S)
    assert ready.device == "cpu"
    assert ready.note == ""
    (pid,) = pool.pool.pids()
    assert ready.pid == pid
    stat = (await asyncio.to_thread(Path(f"/proc/{pid}/stat").read_text)).rsplit(")", 1)[1].split()
    assert int(stat[16]) >= os.nice(0) + 7  # field 19 of stat: the nice value
    assert ready.threads == 1
    # CPU workers run in the idle scheduling class: a waking realtime thread preempts them at once
    assert await asyncio.to_thread(os.sched_getscheduler, pid) == os.SCHED_IDLE


async def test_jobs_on_one_model_share_a_worker_and_match_running_alone(make_pool: Any) -> None:
    pool = await make_pool(max_batch=4, job_slots=2)
    a, b = noise(3.0, seed=1), noise(2.0, seed=2)
    pool.separate("a", a)
    pool.separate("b", b)
    finished = [await pool.wait_for(j, Finished, Failed) for j in ("a", "b")]
    assert all(isinstance(e, Finished) for e in finished)
    # both were in the worker at once, so their segments went through shared batches
    first_finish = min(pool.events.index(e) for e in finished)
    for job_id in ("a", "b"):
        assert pool.events.index(await pool.wait_for(job_id, Started)) < first_finish
    for event, audio in zip(finished, (a, b), strict=True):
        assert isinstance(event, Finished)
        expected = reference_stems(audio)
        for name, path in event.result["stems"].items():
            np.testing.assert_allclose(
                decode_audio(Path(path)).samples, np.clip(expected[name], -1, 1), atol=2e-5
            )


async def test_interactive_jobs_go_before_bulk_ones(make_pool: Any) -> None:
    pool = await make_pool(job_slots=1)
    pool.separate("first", noise(2.0), interactive=False)
    pool.separate("bulk", noise(0.5), interactive=False)
    pool.separate("interactive", noise(0.5), interactive=True)
    for job_id in ("first", "bulk", "interactive"):
        assert isinstance(await pool.wait_for(job_id, Finished, Failed), Finished)
    assert pool.order(Started) == ["first", "interactive", "bulk"]


async def test_transcription_runs_between_separation_batches(make_pool: Any) -> None:
    pool = await make_pool()
    pool.separate("long", noise(40.0))
    await pool.wait_for("long", Progress)
    t = np.arange(2 * FS) / FS
    tone = (0.4 * np.sin(2 * np.pi * 261.63 * t)).astype(np.float32)[None]
    pool.pool.submit(
        Task("notes", "transcribe", {}, {"audio": pool.input("notes", tone)}, str(pool.tmp / "notes"))
    )
    done = await pool.wait_for("notes", Finished, Failed)
    assert isinstance(done, Finished), done
    assert done.result["count"] >= 1
    midi = await asyncio.to_thread(Path(done.result["midi"]).read_bytes)
    assert midi.startswith(b"MThd")
    assert not [e for e in pool.events if isinstance(e, Finished) and e.job_id == "long"]
    assert isinstance(await pool.wait_for("long", Finished, Failed), Finished)


async def test_a_killed_worker_fails_its_job_and_is_replaced(make_pool: Any) -> None:
    pool = await make_pool()
    pool.separate("victim", noise(40.0))
    await pool.wait_for("victim", Progress)
    pid = pool.pool.worker_pid("victim")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    failed = await pool.wait_for("victim", Failed, Finished)
    assert isinstance(failed, Failed)
    assert failed.error.startswith("worker crashed (exit code -9: SIGKILL")
    # a fresh worker takes the next job
    pool.separate("after", noise(0.5))
    assert isinstance(await pool.wait_for("after", Finished, Failed), Finished)
    assert pool.pool.pids()
    assert pid not in pool.pool.pids()


async def test_cancel_a_waiting_and_a_running_job(make_pool: Any) -> None:
    pool = await make_pool(job_slots=1)
    running = pool.separate("running", noise(40.0))
    pool.separate("waiting", noise(1.0))
    await pool.wait_for("running", Progress)
    assert pool.pool.cancel("waiting")
    assert isinstance(await pool.wait_for("waiting", Cancelled, Finished, Failed), Cancelled)
    assert pool.pool.cancel("running")
    assert isinstance(await pool.wait_for("running", Cancelled, Finished, Failed), Cancelled)
    assert not await asyncio.to_thread(lambda: list(Path(running.out_dir).glob("*.wav")))  # partials go
    assert not pool.pool.cancel("running")  # gone from the pool
    assert "waiting" not in pool.order(Started)


async def test_a_missing_model_names_the_install_command(make_pool: Any) -> None:
    pool = await make_pool()
    pool.separate("x", noise(0.5), model="htdemucs")
    failed = await pool.wait_for("x", Failed, Finished)
    assert isinstance(failed, Failed)
    assert "model 'htdemucs' is not installed" in failed.error
    assert "escenario models fetch htdemucs" in failed.error


def test_settings_are_checked() -> None:
    ok = {"device": "cpu", "workers": 1, "threads": 1, "max_batch": 0, "precision": "fp32"}
    check_pool_settings(**ok)  # type: ignore[arg-type]
    check_pool_settings(**{**ok, "device": "cuda:1", "precision": "bf16"})  # type: ignore[arg-type]
    for bad, message in (
        ({"device": "gpu"}, "device"),
        ({"precision": "fp16"}, "precision"),
        ({"workers": -1}, "workers"),
        ({"threads": -1}, "threads"),
        ({"max_batch": -2}, "max batch"),
    ):
        with pytest.raises(ValueError, match=message):
            check_pool_settings(**{**ok, **bad})  # type: ignore[arg-type]
    assert crash_reason(1) == "worker crashed (exit code 1)"
    assert crash_reason(-11) == "worker crashed (exit code -11: SIGSEGV)"
    assert "out of memory" in crash_reason(-9)
    configs = PoolConfig(models_dir="m", device="cpu", cpu_workers=3).worker_configs()
    assert [c.device for c in configs] == ["cpu"] * 3
    assert configs[0].max_batch == 1
    assert PoolConfig(models_dir="m", device="cuda:0").worker_configs()[0].max_batch == 8
