"""Inference jobs end to end: a real server, its worker processes, two live Yjs clients.

The server runs `escenario serve` with the tiny random-weight HTDemucs (built in the test and
loaded through demucs' own loader) as its only separation model. One collaborator arranges a
clip and starts jobs; a second one watches the session document and sees the job's progress
and its results (new assets, new tracks) arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pycrdt
import pytest
from scipy.signal import resample_poly

from inference.midi import midi_to_notes
from realtime.media.decode import decode_audio
from realtime.media.encode import encode_audio

from .conftest import require
from .harness import PyDocClient, ServerProcess, spawned_children
from .inference.conftest import TINY_NAME, TINY_SIG, build_tiny_htdemucs, save_th, write_bag

FS = 48000
JOB_TIMEOUT_S = 120.0
FINAL = ("done", "failed", "cancelled")


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    save_th(build_tiny_htdemucs(0), folder, TINY_SIG)
    write_bag(folder, TINY_NAME, [TINY_SIG])
    return folder


def start_server(data_dir: Path, models_dir: Path, **env: str) -> ServerProcess:
    srv = ServerProcess(
        data_dir,
        env={
            "ESCENARIO_MODELS_DIR": str(models_dir),
            "ESCENARIO_INFERENCE_WORKERS": "1",
            "ESCENARIO_INFERENCE_DEVICE": "cpu",
            **env,
        },
    )
    srv.start()
    return srv


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("jobs") / "data", models_dir)
    try:
        yield server
    finally:
        server.kill()


def noise(seconds: float, seed: int = 0, level: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal((2, int(seconds * FS)))).astype(np.float32)


def notes_audio() -> np.ndarray:
    """C4, E4, G4, then the C-major chord, half a second each (harmonics make them voice-like)."""
    t = np.arange(FS // 2) / FS
    envelope = np.minimum(1.0, np.minimum(t / 0.01, (0.5 - t) / 0.05))

    def tone(pitch: int) -> np.ndarray:
        f = 440.0 * 2 ** ((pitch - 69) / 12)
        return sum(0.3 / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3)) * envelope  # type: ignore[no-any-return]

    parts = [tone(60), tone(64), tone(67), (tone(60) + tone(64) + tone(67)) / 2, np.zeros(FS // 4)]
    mono = np.concatenate(parts).astype(np.float32)
    return np.stack([mono, mono])


class Studio:
    """A session with an owner, an editor, a viewer and a stranger, on a running server."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        tag = uuid.uuid4().hex[:8]
        self.owner = srv.signup(f"olga-{tag}@example.com", "Olga")
        self.sid = srv.create_session(self.owner, "Band")
        self.editor = srv.signup(f"bea-{tag}@example.com", "Bea")
        srv.add_member(self.owner, self.sid, f"bea-{tag}@example.com", "editor")
        self.viewer = srv.signup(f"vic-{tag}@example.com", "Vic")
        srv.add_member(self.owner, self.sid, f"vic-{tag}@example.com", "viewer")
        self.stranger = srv.signup(f"sam-{tag}@example.com", "Sam")
        self.clients: list[PyDocClient] = []

    def upload(self, audio: np.ndarray, name: str) -> dict[str, Any]:
        r = self.srv.api(
            "POST",
            f"/api/sessions/{self.sid}/assets",
            token=self.owner,
            files={"file": (name, encode_audio(audio, "wav"), "audio/wav")},
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def client(self, token: str) -> PyDocClient:
        c = PyDocClient(self.srv.ws_base, self.sid, token)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            # Read what is still queued: a client whose queue is full never sees the close frame.
            with contextlib.suppress(AssertionError, Exception):
                c.pump(until=lambda _m: False, timeout=0.2)
            with contextlib.suppress(Exception):
                c.close()

    def start(
        self, asset_id: str, kind: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> Any:
        return self.srv.api(
            "POST", f"/api/assets/{asset_id}/{kind}", token=token or self.owner, json=body or {}
        )

    def job(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        r = self.srv.api("GET", f"/api/jobs/{job_id}", token=token or self.owner)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait_job(self, job_id: str, status: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            job = self.job(job_id)
            if (status or (lambda j: j["status"] in FINAL))(job):
                return job
            assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
            time.sleep(0.05)


@pytest.fixture
def studio(srv: ServerProcess) -> Iterator[Studio]:
    s = Studio(srv)
    try:
        yield s
    finally:
        s.close()


def add_clip(client: PyDocClient, track_id: str, name: str, clip: dict[str, Any]) -> None:
    """Arrange a track with one clip, as a browser would: an edit on the client's document."""
    with client.doc.transaction():
        tracks = client.doc.get("tracks", type=pycrdt.Map)
        tracks[track_id] = pycrdt.Map(
            {
                "name": name,
                "kind": "audio",
                "gainDb": 0.0,
                "clips": pycrdt.Map({"c1": pycrdt.Map(clip)}),
                "effects": pycrdt.Array(),
            }
        )
        client.doc.get("trackOrder", type=pycrdt.Array).append(track_id)
    client.send_changes()


def job_entry(client: PyDocClient, job_id: str) -> dict[str, Any] | None:
    entry = (client.doc.get("jobs", type=pycrdt.Map).to_py() or {}).get(job_id)
    return entry if isinstance(entry, dict) else None


def watch_job(client: PyDocClient, job_id: str, timeout: float = JOB_TIMEOUT_S) -> list[dict[str, Any]]:
    """Every state of the job's entry this client's document went through, up to the last."""
    states: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        entry = job_entry(client, job_id)
        if entry is not None and (not states or entry != states[-1]):
            states.append(entry)
        if entry is not None and entry.get("status") in FINAL:
            return states
        client.pump(until=lambda _m: True, timeout=max(0.1, deadline - time.monotonic()))


def pump_until(client: PyDocClient, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        client.pump(until=lambda _m: True, timeout=max(0.1, deadline - time.monotonic()))


def doc_tracks(client: PyDocClient) -> tuple[dict[str, Any], list[str]]:
    tracks = client.doc.get("tracks", type=pycrdt.Map).to_py() or {}
    order = client.doc.get("trackOrder", type=pycrdt.Array).to_py() or []
    return tracks, order


def asset_audio(srv: ServerProcess, token: str, asset_id: str) -> np.ndarray:
    r = srv.api("GET", f"/api/assets/{asset_id}/audio", token=token)
    assert r.status_code == 200
    return decode_audio(r.content).samples


# -- separation --------------------------------------------------------------------------------


def test_separation_lands_as_aligned_stem_tracks_seen_by_a_second_client(studio: Studio) -> None:
    srv = studio.srv
    source = noise(20.0, seed=1)
    asset = studio.upload(source, "riff.wav")
    olga = studio.client(studio.owner)
    bea = studio.client(studio.editor)
    clip = {"assetId": asset["asset_id"], "start": 1.5, "offset": 0.25, "length": 12.0, "fadeIn": 0.1}
    add_clip(olga, "gtr", "Guitar", clip)
    bea.pump(until=lambda _m: "gtr" in (bea.doc.get("tracks", type=pycrdt.Map).to_py() or {}))

    r = studio.start(asset["asset_id"], "separate", {"model": TINY_NAME})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/api/jobs/{job_id}"
    assert r.json()["status"] in ("queued", "running")
    assert (r.json()["clip_id"], r.json()["track_id"]) == ("c1", "gtr")
    # the collaborators are in the live session, so the job is interactive
    assert r.json()["priority"] == "interactive"

    states = watch_job(bea, job_id)
    assert states[-1]["status"] == "done", states[-1]
    assert states[-1]["progress"] == 1.0
    assert states[0]["kind"] == "separate"
    assert states[0]["assetId"] == asset["asset_id"]
    running = [s["progress"] for s in states if s["status"] == "running"]
    assert running == sorted(running)
    assert len({p for p in running if 0 < p < 1}) >= 3, running
    assert states[-1]["startedAt"] <= states[-1]["finishedAt"]

    job = studio.job(job_id, token=studio.viewer)  # viewers see jobs
    assert job["status"] == "done"
    assert job["error"] is None
    assert job["attempts"] == 1
    assert job["timings"]["run_s"] > 0
    assert job["timings"]["queued_s"] >= 0
    stems: dict[str, str] = job["result"]["stems"]
    assert sorted(stems) == ["bass", "drums", "other", "vocals"]

    # the stems are assets of the session, made by the server, as long as the source
    listed = {
        a["asset_id"]: a
        for a in srv.api("GET", f"/api/sessions/{studio.sid}/assets", token=studio.owner).json()["assets"]
    }
    for stem, asset_id in stems.items():
        assert listed[asset_id]["kind"] == "output"
        assert listed[asset_id]["name"] == f"riff — {stem}"
        assert listed[asset_id]["frames"] == asset["frames"]
    heard = [asset_audio(srv, studio.owner, stems[s]) for s in ("drums", "vocals")]
    assert heard[0].shape == source.shape
    assert np.abs(heard[0]).max() > 1e-3
    assert not np.allclose(heard[0], heard[1])
    assert listed[asset["asset_id"]]["processed_at"] is not None  # the source knows it was processed

    # ... and a group of tracks right after the source track, clips lined up with its clip
    tracks, order = doc_tracks(bea)
    new = [tid for tid in order if tracks[tid].get("group") == job_id]
    assert order[: 1 + len(new)] == ["gtr", *new]
    assert sorted(tracks[t]["name"] for t in new) == [
        f"Guitar — {s}" for s in ("bass", "drums", "other", "vocals")
    ]
    for tid in new:
        (stem_clip,) = tracks[tid]["clips"].values()
        assert stem_clip["assetId"] == stems[tracks[tid]["name"].split(" — ")[1]]
        for key in ("start", "offset", "length", "fadeIn"):
            assert stem_clip[key] == clip[key]
    assert states[-1]["tracks"] == new


def test_viewers_watch_and_editors_cancel_queued_and_running_jobs(studio: Studio) -> None:
    srv = studio.srv
    long = studio.upload(noise(60.0, seed=2), "long.wav")["asset_id"]
    short = studio.upload(noise(2.0, seed=3), "short.wav")["asset_id"]
    viewer_try = studio.start(long, "separate", {"model": TINY_NAME}, token=studio.viewer)
    assert viewer_try.status_code == 403
    assert viewer_try.json()["error"]["code"] == "role_forbidden"
    assert studio.start(long, "separate", {"model": TINY_NAME}, token=studio.stranger).status_code == 404

    first = studio.start(long, "separate", {"model": TINY_NAME}, token=studio.editor).json()["job_id"]
    # no one is connected: started outside a live session, the job is bulk
    assert studio.job(first)["priority"] == "bulk"
    studio.wait_job(first, lambda j: j["status"] == "running" and j["progress"] > 0)
    # one CPU worker runs one separation at a time: the second waits in the queue
    second = studio.start(short, "separate", {"model": TINY_NAME}).json()["job_id"]
    assert studio.job(second)["status"] == "queued"

    assert srv.api("DELETE", f"/api/jobs/{second}", token=studio.viewer).status_code == 403
    assert srv.api("GET", f"/api/jobs/{second}", token=studio.stranger).status_code == 404
    r = srv.api("DELETE", f"/api/jobs/{second}", token=studio.editor)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    r = srv.api("DELETE", f"/api/jobs/{first}", token=studio.owner)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running"
    assert r.json()["cancel_requested"] is True
    cancelled = studio.wait_job(first)
    assert cancelled["status"] == "cancelled"
    assert cancelled["result"] is None
    assert studio.job(second)["status"] == "cancelled"
    assert srv.api("DELETE", f"/api/jobs/{first}", token=studio.owner).status_code == 200  # already so

    kinds = {
        a["kind"]
        for a in srv.api("GET", f"/api/sessions/{studio.sid}/assets", token=studio.owner).json()["assets"]
    }
    assert kinds == {"source"}  # a cancelled separation leaves no stems behind
    watcher = studio.client(studio.viewer)
    assert job_entry(watcher, first)["status"] == "cancelled"  # type: ignore[index]
    assert job_entry(watcher, second)["status"] == "cancelled"  # type: ignore[index]
    listed = srv.api("GET", f"/api/sessions/{studio.sid}/jobs", token=studio.viewer).json()["jobs"]
    assert [j["id"] for j in listed] == [second, first]


def test_a_killed_worker_fails_the_job_and_the_server_keeps_serving(studio: Studio) -> None:
    srv = studio.srv
    assert srv.proc is not None
    asset = studio.upload(noise(60.0, seed=4), "take.wav")["asset_id"]
    job_id = studio.start(asset, "separate", {"model": TINY_NAME}).json()["job_id"]
    studio.wait_job(job_id, lambda j: j["status"] == "running" and j["progress"] > 0)
    (worker,) = spawned_children(srv.proc.pid)
    os.kill(worker, signal.SIGKILL)
    failed = studio.wait_job(job_id)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("worker crashed (exit code -9: SIGKILL")
    assert srv.api("GET", "/healthz").status_code == 200
    watcher = studio.client(studio.viewer)
    entry = job_entry(watcher, job_id)
    assert entry is not None
    assert entry["status"] == "failed"
    assert "worker crashed" in entry["error"]
    # a replacement worker takes the next job
    short = studio.upload(noise(1.0, seed=5), "short.wav")["asset_id"]
    again = studio.start(short, "separate", {"model": TINY_NAME, "stems": ["vocals"]}).json()["job_id"]
    done = studio.wait_job(again)
    assert done["status"] == "done", done
    assert list(done["result"]["stems"]) == ["vocals"]
    assert spawned_children(srv.proc.pid) not in ([], [worker])


# -- transcription and mastering ---------------------------------------------------------------


def test_transcription_makes_a_midi_asset_and_a_midi_track(studio: Studio) -> None:
    srv = studio.srv
    asset = studio.upload(notes_audio(), "melody.wav")
    olga = studio.client(studio.owner)
    vic = studio.client(studio.viewer)
    add_clip(olga, "keys", "Keys", {"assetId": asset["asset_id"], "start": 4.0, "offset": 0.0, "length": 0.0})
    pump_until(vic, lambda: "keys" in doc_tracks(vic)[0])  # the server has the clip
    r = studio.start(asset["asset_id"], "transcribe", {"onset_threshold": 0.5, "frame_threshold": 0.3})
    assert r.status_code == 202, r.text
    states = watch_job(vic, r.json()["job_id"])
    assert states[-1]["status"] == "done", states[-1]
    job = studio.job(r.json()["job_id"])
    midi_id = job["result"]["midi_asset_id"]

    download = srv.api("GET", f"/api/assets/{midi_id}/midi", token=studio.viewer)
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/midi"
    assert "melody%20%E2%80%94%20MIDI.mid" in download.headers["content-disposition"]
    notes = midi_to_notes(download.content)
    assert {60, 64, 67} <= {n.pitch for n in notes}
    onsets = sorted(n.start for n in notes if n.pitch == 64)
    assert abs(onsets[0] - 0.5) <= 0.05
    assert job["result"]["notes"] == len(notes)
    meta = srv.api("GET", f"/api/assets/{midi_id}", token=studio.owner).json()
    assert meta["mime"] == "audio/midi"
    assert meta["kind"] == "output"
    assert srv.api("GET", f"/api/assets/{asset['asset_id']}/midi", token=studio.owner).status_code == 404

    tracks, order = doc_tracks(vic)
    (tid,) = [t for t in order if tracks[t].get("group") == job["id"]]
    assert order.index(tid) == order.index("keys") + 1
    assert tracks[tid]["kind"] == "midi"
    assert tracks[tid]["name"] == "Keys — MIDI"
    (clip,) = tracks[tid]["clips"].values()
    assert clip["assetId"] == midi_id
    assert clip["start"] == 4.0
    assert [(n["pitch"], n["start"], n["duration"], n["velocity"]) for n in clip["notes"]] == [
        (n.pitch, pytest.approx(n.start, abs=1e-6), pytest.approx(n.duration, abs=1e-6), n.velocity)
        for n in notes
    ]


def true_peak_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(resample_poly(x.astype(np.float64), 4, 1, axis=-1)).max()))


def test_mastering_reaches_the_target_and_lands_as_a_track(studio: Studio) -> None:
    import pyloudnorm

    srv = studio.srv
    t = np.arange(8 * FS) / FS
    music = 0.05 * np.sin(2 * np.pi * 110 * t) + 0.02 * np.sin(2 * np.pi * 880 * t) * (
        np.sin(2 * np.pi * 2 * t) > 0
    )
    audio = np.stack([music, music * 0.8]).astype(np.float32) + noise(8.0, seed=6, level=0.005)
    asset = studio.upload(audio, "mix.wav")["asset_id"]
    reference = studio.upload(noise(4.0, seed=7, level=0.1), "ref.wav")["asset_id"]
    r = studio.start(
        asset, "master", {"target_lufs": -14, "true_peak_db": -1, "reference_asset_id": reference}
    )
    assert r.status_code == 202, r.text
    job = studio.wait_job(r.json()["job_id"])
    assert job["status"] == "done", job
    mastered = asset_audio(srv, studio.owner, job["result"]["asset_id"])
    assert mastered.shape == audio.shape
    loudness = pyloudnorm.Meter(FS).integrated_loudness(mastered.T.astype(np.float64))
    assert abs(loudness - (-14.0)) <= 0.5
    assert true_peak_db(mastered) <= -1.0 + 0.05  # 24-bit storage rounds by at most 2^-23
    assert job["result"]["report"]["reference_matched"] is True
    watcher = studio.client(studio.viewer)
    tracks, _ = doc_tracks(watcher)
    (tid,) = [t for t in tracks if tracks[t].get("group") == job["id"]]
    assert tracks[tid]["name"] == "mix — mastered"  # the source plays in no clip: named after the asset
    assert next(iter(tracks[tid]["clips"].values()))["assetId"] == job["result"]["asset_id"]


# -- bad requests ------------------------------------------------------------------------------


def test_bad_requests_are_refused_with_clear_errors(studio: Studio) -> None:
    srv = studio.srv
    asset = studio.upload(noise(1.0), "a.wav")["asset_id"]

    def refused(kind: str, body: dict[str, Any], status: int, code: str, asset_id: str = asset) -> str:
        r = studio.start(asset_id, kind, body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code, r.text
        return str(r.json()["error"]["message"])

    message = refused("separate", {"model": "htdemucs"}, 422, "model_not_installed")
    assert "escenario models fetch htdemucs" in message
    assert "escenario models import" in message
    refused("separate", {"model": "../etc"}, 422, "validation_error")
    refused("separate", {"model": TINY_NAME, "stems": ["kazoo"]}, 422, "validation_error")
    refused("separate", {"model": TINY_NAME, "stems": []}, 422, "validation_error")
    refused("separate", {"model": TINY_NAME, "stemz": ["vocals"]}, 422, "validation_error")
    refused("transcribe", {"onset_threshold": 1.5}, 422, "validation_error")
    refused("transcribe", {"frame_threshold": "high"}, 422, "validation_error")
    refused("master", {"target_lufs": 3}, 422, "validation_error")
    refused("master", {"true_peak_db": -40}, 422, "validation_error")
    refused("separate", {"model": TINY_NAME, "clip_id": "nope"}, 422, "clip_not_found")
    refused("separate", {"model": TINY_NAME, "priority": "urgent"}, 422, "validation_error")

    other_sid = srv.create_session(studio.owner, "Other")
    r = srv.api(
        "POST",
        f"/api/sessions/{other_sid}/assets",
        token=studio.owner,
        files={"file": ("x.wav", encode_audio(noise(1.0), "wav"), "audio/wav")},
    )
    foreign = r.json()["asset_id"]
    refused("master", {"reference_asset_id": foreign}, 422, "reference_not_in_session")
    refused("master", {"reference_asset_id": "0" * 32}, 422, "reference_not_found")

    gone = studio.upload(noise(1.0), "gone.wav")["asset_id"]
    assert srv.api("DELETE", f"/api/assets/{gone}", token=studio.owner).status_code == 204
    refused("separate", {"model": TINY_NAME}, 404, "asset_not_found", asset_id=gone)
    assert srv.api("GET", "/api/jobs/nope", token=studio.owner).status_code == 404
    r = srv.api(
        "POST",
        f"/api/assets/{asset}/transcribe",
        token=studio.owner,
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    assert srv.api("POST", f"/api/assets/{asset}/transcribe").status_code == 401
    # nothing above created a job
    assert srv.api("GET", f"/api/sessions/{studio.sid}/jobs", token=studio.owner).json()["jobs"] == []


# -- restarts and scale-out ----------------------------------------------------------------------


def test_jobs_interrupted_by_a_server_crash_run_again_after_restart(tmp_path: Path, models_dir: Path) -> None:
    srv = start_server(tmp_path / "data", models_dir)
    try:
        s = Studio(srv)
        long = s.upload(noise(40.0, seed=8), "long.wav")["asset_id"]
        short = s.upload(noise(2.0, seed=9), "short.wav")["asset_id"]
        running = s.start(long, "separate", {"model": TINY_NAME, "stems": ["bass"]}).json()["job_id"]
        s.wait_job(running, lambda j: j["status"] == "running" and j["progress"] > 0)
        waiting = s.start(short, "separate", {"model": TINY_NAME, "stems": ["drums"]}).json()["job_id"]
        assert s.job(waiting)["status"] == "queued"
        srv.kill()  # SIGKILL to the server and its workers: no shutdown code runs
        srv.start()
        for job_id in (running, waiting):
            job = s.wait_job(job_id)
            assert job["status"] == "done", job
        assert s.job(running)["attempts"] == 2  # started again after the crash
        assert s.job(waiting)["attempts"] == 1
        watcher = s.client(s.viewer)
        tracks, _ = doc_tracks(watcher)
        assert sorted(t["name"] for t in tracks.values()) == ["long — bass", "short — drums"]
        assert job_entry(watcher, running)["status"] == "done"  # type: ignore[index]
        s.close()
    finally:
        srv.kill()


def test_a_graceful_restart_requeues_the_running_job(tmp_path: Path, models_dir: Path) -> None:
    srv = start_server(tmp_path / "data", models_dir)
    try:
        s = Studio(srv)
        long = s.upload(noise(60.0, seed=10), "long.wav")["asset_id"]
        job_id = s.start(long, "separate", {"model": TINY_NAME, "stems": ["vocals"]}).json()["job_id"]
        s.wait_job(job_id, lambda j: j["status"] == "running" and j["progress"] > 0)
        assert srv.stop()  # SIGTERM: the server shuts down cleanly and puts the job back
        srv.start()
        job = s.wait_job(job_id)
        assert job["status"] == "done", job
        assert job["attempts"] == 2  # put back at shutdown, started again after the restart
        watcher = s.client(s.viewer)
        pump_until(watcher, lambda: (job_entry(watcher, job_id) or {}).get("status") == "done")
        assert _has_group(watcher, job_id)
        s.close()
    finally:
        srv.kill()


def _redis_url() -> str:
    return os.environ.get("ESCENARIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_problem(url: str) -> str | None:
    import redis.asyncio

    async def ping() -> str | None:
        client = redis.asyncio.from_url(url, socket_connect_timeout=2)
        try:
            await client.ping()
        except (OSError, redis.RedisError) as exc:
            return f"Redis at {url} is unreachable: {exc!r}"
        finally:
            await client.aclose()
        return None

    return asyncio.run(ping())


def test_a_separate_worker_serves_the_redis_queue(tmp_path: Path, models_dir: Path) -> None:
    import subprocess
    import sys

    url = _redis_url()
    problem = _redis_problem(url)
    require(problem is None, problem or "")
    prefix = f"escenario-test-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    # the server only queues jobs; `escenario worker` (another process, sharing the data dir
    # and database as a worker on another machine would) runs them
    srv = start_server(
        data,
        models_dir,
        ESCENARIO_REDIS_URL=url,
        ESCENARIO_JOB_QUEUE_PREFIX=prefix,
        ESCENARIO_INFERENCE_WORKERS="0",
    )
    worker: subprocess.Popen[bytes] | None = None
    log = tmp_path / "worker.log"
    try:
        s = Studio(srv)
        asset = s.upload(noise(3.0, seed=11), "remote.wav")["asset_id"]
        job_id = s.start(asset, "separate", {"model": TINY_NAME, "stems": ["other"]}).json()["job_id"]
        time.sleep(0.5)
        assert s.job(job_id)["status"] == "queued"  # nobody serves the queue yet
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "realtime.cli",
                    "worker",
                    "--redis-url",
                    url,
                    "--queue-prefix",
                    prefix,
                    "--data-dir",
                    str(data),
                    "--models-dir",
                    str(models_dir),
                    "--device",
                    "cpu",
                    "--log-format",
                    "text",
                ],
                cwd=Path(__file__).resolve().parent.parent,
                stdout=out,
                stderr=out,
            )
        job = s.wait_job(job_id)
        assert job["status"] == "done", (job, log.read_text()[-2000:])
        assert job["result"]["stems"].keys() == {"other"}
        watcher = s.client(s.viewer)
        pump_until(watcher, lambda: _has_group(watcher, job_id))
        s.close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-2000:]
        assert "escenario worker stopped" in log.read_text()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        srv.kill()


def _has_group(client: PyDocClient, job_id: str) -> bool:
    tracks, _ = doc_tracks(client)
    return any(t.get("group") == job_id for t in tracks.values())


# -- the command line ----------------------------------------------------------------------------


def test_models_cli_lists_and_imports(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime import cli

    target = str(tmp_path / "installed")
    assert cli.main(["models", "list", "--models-dir", target]) == 0
    out = capsys.readouterr().out
    assert "no models in" in out
    assert "escenario models fetch htdemucs" in out
    assert "transcription (basic-pitch" in out
    assert cli.main(["models", "import", str(models_dir), "--models-dir", target]) == 0
    assert f"installed {TINY_NAME}" in capsys.readouterr().out
    assert cli.main(["models", "list", "--models-dir", target]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith(TINY_NAME)]
    assert line.endswith("\tok")
    assert cli.main(["models", "import", str(tmp_path / "nothing"), "--models-dir", target]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: the fetch must say so and install nothing
    assert cli.main(["models", "fetch", "htdemucs", "--models-dir", target]) == 1
    assert "escenario models import PATH" in capsys.readouterr().err
    assert sorted(p.name for p in Path(target).iterdir()) == sorted(p.name for p in models_dir.iterdir())


def test_worker_cli_refuses_bad_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime import cli

    monkeypatch.delenv("ESCENARIO_REDIS_URL", raising=False)
    assert cli.main(["worker", "--log-format", "text"]) == 2
    assert "give --redis-url" in capsys.readouterr().err
    assert (
        cli.main(
            ["worker", "--redis-url", "redis://127.0.0.1:1/0", "--device", "tpu", "--log-format", "text"]
        )
        == 2
    )
    assert "inference device must be auto, cpu or cuda:N" in capsys.readouterr().err
    # an unreachable Redis is reported, not a traceback
    assert cli.main(["worker", "--redis-url", "redis://127.0.0.1:1/0", "--log-format", "text"]) == 1
    assert "escenario worker:" in capsys.readouterr().err


def test_a_server_without_workers_refuses_jobs_it_could_never_run(make_client: Any) -> None:
    from .appclient import auth, signup

    client = make_client(inference_workers=0)
    owner = signup(client)
    sid = client.post("/api/sessions", json={"title": "S"}, headers=auth(owner)).json()["id"]
    r = client.post(
        f"/api/sessions/{sid}/assets",
        files={"file": ("a.wav", encode_audio(noise(1.0), "wav"), "audio/wav")},
        headers=auth(owner),
    )
    r = client.post(f"/api/assets/{r.json()['asset_id']}/transcribe", headers=auth(owner))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_inference_workers"
    assert client.get(f"/api/sessions/{sid}/jobs", headers=auth(owner)).json()["jobs"] == []


def test_midi_assets_are_refused_as_audio_and_silent_in_the_preview(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A transcription's MIDI asset has no samples: a clear 409, not a FLAC label or a 500,
    and a MIDI clip in the document is skipped by the preview without an error logged."""
    import logging

    from inference import placement
    from inference.midi import Note, notes_to_midi
    from persistence.ports import AssetKind

    from .appclient import auth, services, signup

    client = make_client(inference_workers=0)
    owner = signup(client)
    sid = client.post("/api/sessions", json={"title": "S"}, headers=auth(owner)).json()["id"]
    audio = client.post(
        f"/api/sessions/{sid}/assets",
        files={"file": ("a.wav", encode_audio(noise(1.0), "wav"), "audio/wav")},
        headers=auth(owner),
    ).json()
    svc = services(client)

    async def add_midi() -> str:
        # What the executor stores for a transcription, laid out as the service lays it.
        data = notes_to_midi([Note(60, 0.1, 0.4, 90)])
        key = f"asset-{uuid.uuid4().hex}.mid"
        size = await svc.assets.blobs.put(key, data)
        record = await svc.store.create_asset(
            session_id=sid,
            uploader_id=None,
            name="a — MIDI",
            kind=AssetKind.OUTPUT,
            mime="audio/midi",
            duration_s=1.0,
            sample_rate=FS,
            channels=1,
            frames=FS,
            size_bytes=size,
            blob_key=key,
        )
        runner = await svc.rooms.acquire(sid)
        source = placement.SourceClip(None, None, None)
        with runner.room.doc.transaction(origin="server"):
            placement.place_master(runner.room.doc, "job1", source, "a", audio["asset_id"])
            placement.place_midi(runner.room.doc, "job2", source, "a", record.id, [])
        runner.commit_local_changes()
        return record.id

    midi_id = client.portal.call(add_midi)
    for path in (f"/api/assets/{midi_id}/audio", f"/api/assets/{midi_id}/peaks"):
        r = client.get(path, headers=auth(owner))
        assert r.status_code == 409, (path, r.text)
        assert r.json()["error"]["code"] == "not_audio"
        assert f"/api/assets/{midi_id}/midi" in r.json()["error"]["message"]
    assert client.get(f"/api/assets/{midi_id}/midi", headers=auth(owner)).status_code == 200
    assert client.get(f"/api/assets/{audio['asset_id']}/peaks", headers=auth(owner)).status_code == 200

    caplog.set_level(logging.INFO, logger="realtime.preview")
    hub = svc.preview

    async def preview_assets() -> set[str]:
        stream = await hub._stream(sid)
        try:
            return set(stream.assets)
        finally:
            hub._stop(sid)

    assert client.portal.call(preview_assets) == {audio["asset_id"]}  # the MIDI clip: silent
    assert [r.getMessage() for r in caplog.records if r.name == "realtime.preview"] == []
    # an offline mixdown renders the MIDI clip as silence too, and the audio clip as it is
    r = client.get(f"/api/sessions/{sid}/mixdown?format=wav", headers=auth(owner))
    assert r.status_code == 200, r.text
    mix = decode_audio(r.content).samples
    assert mix.shape[1] == FS
    assert float(np.abs(mix).max()) > 0.1
