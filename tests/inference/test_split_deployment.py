"""The split deployment end to end: a server that only queues jobs and a separate `escenario
worker` process that runs them, sharing nothing but PostgreSQL (the store), Redis (the job queue)
and an S3 bucket (the blobs, served by moto), plus a copy of the servers' keyring.

The server is the in-process app (`make_client`) with `inference_workers=0`, so nothing can run
a job in the test process; the worker is a real `python -m realtime.cli worker` with its own data
directory, so whatever it reads or writes must travel through the shared services.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pycrdt
import pytest
from starlette.testclient import TestClient

from persistence.encrypted_blobs import MAGIC, open_keyring
from persistence.ports import JobRecord
from persistence.s3_blobs import S3BlobStore, parse_blob_url
from realtime.media.decode import decode_audio
from realtime.media.encode import encode_audio
from realtime.media.library import AssetKeys

from ..appclient import MakeClient, auth, services, signup
from ..conftest import POSTGRES_URL, _pg, require
from ..harness import spawned_children
from ..persistence.test_s3_blobs import bucket_url, object_names, s3_endpoint
from .test_queue import REDIS_URL, delete_prefix, require_redis

__all__ = ["bucket_url", "s3_endpoint"]  # moto's S3 server and a fresh bucket per test

ROOT = Path(__file__).resolve().parents[2]
FS = 48000
TARGET_LUFS = -14.0
JOB_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
FINAL = ("done", "failed", "cancelled")


# -- the worker process ------------------------------------------------------------------------


@dataclass
class Worker:
    """One `escenario worker` process; stdout and stderr go to `log` (a pipe could fill up)."""

    proc: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]

    @property
    def consumer(self) -> str:
        """Its name in the queue and in `JobRecord.worker` (host:pid, as the executor names it)."""
        return f"{socket.gethostname()}:{self.proc.pid}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        # Polls on purpose: the event is a line in another process's log.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "escenario worker ready" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"the worker exited with {self.proc.returncode}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"the worker never got ready:\n{self.tail()}"
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: a clean stop exits with 0 and says so."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.tail()
        assert "escenario worker stopped" in self.log.read_text(errors="replace")

    def reap(self) -> None:
        """After a failure: SIGTERM (the worker puts a running job back), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        self.out.close()


@dataclass
class Split:
    """The server (an in-process app) and what its remote workers are given."""

    client: TestClient
    tmp: Path
    database_url: str
    prefix: str
    blob_url: str
    worker_key: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str) -> Worker:
        log = self.tmp / f"worker-{name}.log"
        out = log.open("wb")
        argv = [
            sys.executable,
            "-m",
            "realtime.cli",
            "worker",
            "--redis-url",
            REDIS_URL,
            "--queue-prefix",
            self.prefix,
            "--database-url",
            self.database_url,
            "--blob-url",
            self.blob_url,
            "--data-dir",
            str(self.tmp / f"worker-{name}"),
            "--models-dir",
            str(self.tmp / "models"),
            "--device",
            "cpu",
            "--workers",
            "1",
            "--threads",
            "1",
            "--log-format",
            "text",
        ]
        # The AWS variables `bucket_url` set are in os.environ; the keyring is the worker's copy.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ESCENARIO_DATA_KEY": str(self.worker_key)}
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        worker = Worker(proc, log, out)
        self.workers.append(worker)
        return worker


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards (set up before `make_client`, so the app
    is closed before its tables go)."""
    schema = f"split_{uuid.uuid4().hex}"
    problem = asyncio.run(_pg(f'CREATE SCHEMA "{schema}"'))
    require(problem is None, problem or "")
    try:
        yield f"{POSTGRES_URL}?search_path={schema}"
    finally:
        asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """This test's namespace in the shared Redis, deleted afterwards."""
    asyncio.run(require_redis())
    prefix = f"split-{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        asyncio.run(delete_prefix(prefix))


@pytest.fixture
def split(
    database_url: str, queue_prefix: str, bucket_url: str, make_client: MakeClient, tmp_path: Path
) -> Iterator[Split]:
    # The servers' keyring, and the copy a remote worker is given (ESCENARIO_DATA_KEY).
    server_key = tmp_path / "server-keys" / "keyring.json"
    open_keyring(server_key, create=True)
    worker_key = tmp_path / "worker-keyring.json"
    shutil.copyfile(server_key, worker_key)
    client = make_client(
        database_url=database_url,
        redis_url=REDIS_URL,
        job_queue_prefix=queue_prefix,
        blob_url=bucket_url,
        data_key=str(server_key),
        inference_workers=0,  # nothing runs here: only `escenario worker` can take the job
        models_dir=str(tmp_path / "models"),
    )
    made = Split(client, tmp_path, database_url, queue_prefix, bucket_url, worker_key)
    try:
        yield made
    finally:
        for worker in made.workers:
            worker.reap()


# -- helpers -------------------------------------------------------------------------------------


def quiet_music(seconds: float, seed: int) -> np.ndarray:
    """About -33 LUFS: mastering has 19 dB to add."""
    t = np.arange(int(seconds * FS)) / FS
    rng = np.random.default_rng(seed)
    music = 0.02 * np.sin(2 * np.pi * 110 * t) + 0.01 * np.sin(2 * np.pi * 660 * t)
    left = music + 0.002 * rng.standard_normal(t.size)
    return np.stack([left, 0.8 * left]).astype(np.float32)


def loudness(samples: np.ndarray) -> float:
    import pyloudnorm

    return float(pyloudnorm.Meter(FS).integrated_loudness(samples.T.astype(np.float64)))


class Studio:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.owner = signup(client)
        r = self.client.post("/api/sessions", json={"title": "Split"}, headers=auth(self.owner))
        assert r.status_code == 201, r.text
        self.sid = str(r.json()["id"])

    def upload(self, audio: np.ndarray, name: str) -> str:
        r = self.client.post(
            f"/api/sessions/{self.sid}/assets",
            files={"file": (name, encode_audio(audio, "wav"), "audio/wav")},
            headers=auth(self.owner),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["asset_id"])

    def master(self, asset_id: str) -> str:
        r = self.client.post(
            f"/api/assets/{asset_id}/master", json={"target_lufs": TARGET_LUFS}, headers=auth(self.owner)
        )
        assert r.status_code == 202, r.text
        return str(r.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/api/jobs/{job_id}", headers=auth(self.owner))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait_job(self, job_id: str, worker: Worker) -> dict[str, Any]:
        # Polls on purpose: the job is finished by another process, seen through the store.
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while (job := self.job(job_id))["status"] not in FINAL:
            assert worker.proc.poll() is None, f"the worker died ({worker.proc.returncode}):\n{worker.tail()}"
            assert time.monotonic() < deadline, f"{job}\nworker log:\n{worker.tail()}"
            time.sleep(0.1)
        assert job["status"] == "done", f"{job}\nworker log:\n{worker.tail()}"
        return job

    def audio(self, asset_id: str) -> np.ndarray:
        r = self.client.get(f"/api/assets/{asset_id}/audio?format=flac", headers=auth(self.owner))
        assert r.status_code == 200, r.text
        assert r.content.startswith(b"fLaC")
        return decode_audio(r.content).samples

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.client.portal is not None, "the app's lifespan is not entered"
        return self.client.portal.call(fn, *args)

    def record(self, job_id: str) -> JobRecord:
        record = self.call(services(self.client).store.get_job, job_id)
        assert isinstance(record, JobRecord)
        return record

    def document(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            runner = await services(self.client).rooms.acquire(self.sid)
            doc = runner.room.doc
            return {k: doc.get(k, type=pycrdt.Map).to_py() or {} for k in ("tracks", "jobs")}

        result: dict[str, Any] = self.call(read)
        return result

    def wait_placed(self, job_id: str) -> dict[str, Any]:
        """The job's result track in the session document (the server lays it out on `done`)."""
        # Polls on purpose: the server's job mirror polls the store for remote workers' jobs.
        deadline = time.monotonic() + 15
        while True:
            doc = self.document()
            tracks = [t for t in doc["tracks"].values() if t.get("group") == job_id]
            if tracks and doc["jobs"].get(job_id, {}).get("status") == "done":
                (track,) = tracks
                return dict(track)
            assert time.monotonic() < deadline, doc
            time.sleep(0.1)


def bucket(split: Split) -> S3BlobStore:
    return S3BlobStore(parse_blob_url(split.blob_url))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- tests ---------------------------------------------------------------------------------------


def test_a_remote_worker_masters_an_upload_through_the_shared_services(split: Split) -> None:
    worker = split.start_worker("a")
    try:
        studio = Studio(split.client)
        source = quiet_music(4.0, seed=1)
        assert loudness(source) < TARGET_LUFS - 10
        asset = studio.upload(source, "mix.wav")
        job_id = studio.master(asset)
        job = studio.wait_job(job_id, worker)

        # Run by the worker process (not this one), once.
        record = studio.record(job_id)
        assert (record.worker, record.attempts) == (worker.consumer, 1)
        mastered_id = job["result"]["asset_id"]
        mastered = studio.audio(mastered_id)
        assert mastered.shape == source.shape
        assert abs(loudness(mastered) - TARGET_LUFS) <= 1.0

        # The worker wrote the result to the bucket, encrypted with the shared keyring; no data
        # directory holds a blob.
        s3 = bucket(split)
        names = object_names(s3)
        for key in (AssetKeys.of(asset).flac, AssetKeys.of(mastered_id).flac):
            assert f"blobs/v1/{key}" in names, names
        stored = s3.client.get_object(Bucket=s3.bucket, Key=f"blobs/v1/{AssetKeys.of(mastered_id).flac}")
        assert stored["Body"].read().startswith(MAGIC)
        for data_dir in (services(split.client).settings.data_dir, split.tmp / "worker-a"):
            assert not any(p.is_file() for p in (data_dir / "blobs").rglob("*"))

        # The server lays the result out as a track, as with its own pool.
        track = studio.wait_placed(job_id)
        assert track["name"] == "mix — mastered"
        assert [c["assetId"] for c in track["clips"].values()] == [mastered_id]
        worker.stop()
    finally:
        worker.reap()


def test_a_job_queued_after_its_worker_was_killed_runs_on_the_next_worker(split: Split) -> None:
    """A worker SIGKILLed while idle holds no delivery (waiting for a job consumes nothing;
    taking one is a single atomic script), so a job posted while no worker runs waits in the
    stream and the next worker to start takes it on its first attempt. A delivery lost mid-job
    is only reclaimed after the executor's 60 s idle limit (`RECLAIM_IDLE_S`, not a flag):
    test_queue.py covers that with stub workers."""
    doomed = split.start_worker("doomed")
    studio = Studio(split.client)
    source = quiet_music(3.0, seed=2)
    asset = studio.upload(source, "take.wav")
    doomed.wait_ready()
    children = spawned_children(doomed.proc.pid)
    assert children, "the worker started no pool process"
    doomed.proc.kill()
    assert doomed.proc.wait(10) == -signal.SIGKILL
    # Orphaned pool processes must see their parent go and leave, not keep a core busy.
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in children):
        assert time.monotonic() < deadline, f"pool processes {children} outlived their worker"
        time.sleep(0.1)

    job_id = studio.master(asset)
    assert studio.job(job_id)["status"] == "queued"
    survivor = split.start_worker("survivor")
    try:
        job = studio.wait_job(job_id, survivor)
        record = studio.record(job_id)
        assert (record.worker, record.attempts) == (survivor.consumer, 1)
        assert abs(loudness(studio.audio(job["result"]["asset_id"])) - TARGET_LUFS) <= 1.0
        survivor.stop()
    finally:
        survivor.reap()
