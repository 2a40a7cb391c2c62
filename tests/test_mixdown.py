"""Mixdowns over HTTP and from the command line: formats, stems, roles, the job in the document."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pycrdt
import pytest
from starlette.testclient import TestClient

from realtime import cli
from realtime.api import render as render_api
from realtime.dsp import render as dsp_render
from realtime.dsp.render import RenderCancelled, render_session
from realtime.media.decode import decode_audio
from realtime.media.dither import Tpdf24
from realtime.media.encode import encode_audio, encoder_available
from realtime.media.mixdown import safe_filename, stem_names, write_mixdown
from realtime.media.stream import stream_mixdown
from realtime.session.schema import read_document

from .appclient import MakeClient, auth, services, signup
from .harness import wait_until
from .media.audio import sine
from .test_assets import add_member, uploaded

FS = 48000


def edit_doc(client: TestClient, sid: str, edit: Callable[[pycrdt.Doc[Any]], None]) -> None:
    """Change the live document on the server's loop, as server code would."""

    async def run() -> None:
        runner = await services(client).rooms.acquire(sid)
        edit(runner.room.doc)
        runner.commit_local_changes()
        await runner.drain()

    assert client.portal is not None
    client.portal.call(run)


def live_doc_update(client: TestClient, sid: str) -> bytes:
    async def run() -> bytes:
        runner = await services(client).rooms.acquire(sid)
        return runner.room.doc.get_update()

    assert client.portal is not None
    return client.portal.call(run)


def put_tracks(doc: pycrdt.Doc[Any], tracks: dict[str, dict[str, Any]]) -> None:
    with doc.transaction():
        tmap = doc.get("tracks", type=pycrdt.Map)
        order = doc.get("trackOrder", type=pycrdt.Array)
        for tid, spec in tracks.items():
            spec = dict(spec)
            clips = spec.pop("clips", {})
            effects = spec.pop("effects", [])
            tmap[tid] = pycrdt.Map(
                {
                    **spec,
                    "clips": pycrdt.Map({cid: pycrdt.Map(c) for cid, c in clips.items()}),
                    "effects": pycrdt.Array([pycrdt.Map(e) for e in effects]),
                }
            )
            order.append(tid)


def server_assets(client: TestClient, ids: list[str]) -> dict[str, np.ndarray]:
    svc = services(client)
    assert client.portal is not None
    out = {}
    for asset_id in ids:
        record = client.portal.call(svc.store.get_asset, asset_id)
        out[asset_id] = client.portal.call(svc.assets.samples, record)
    return out


class Studio:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.owner = signup(client, "owner@example.com", "Olga")
        r = client.post("/api/sessions", json={"title": "Song: take/2"}, headers=auth(self.owner))
        assert r.status_code == 201
        self.sid = str(r.json()["id"])
        rng = np.random.default_rng(7)
        drums = rng.uniform(-0.3, 0.3, (2, FS)).astype(np.float32)
        self.drums = uploaded(client, self.owner, self.sid, encode_audio(drums, "wav"), "drums.wav")[
            "asset_id"
        ]
        bass = sine(220, seconds=0.5, amplitude=0.3)
        self.bass = uploaded(client, self.owner, self.sid, encode_audio(bass, "wav"), "bass.wav")["asset_id"]

    def get(self, query: str = "", token: str | None = None) -> Any:
        return self.client.get(f"/api/sessions/{self.sid}/mixdown{query}", headers=auth(token or self.owner))

    def arrange(self, tracks: dict[str, dict[str, Any]]) -> None:
        edit_doc(self.client, self.sid, lambda doc: put_tracks(doc, tracks))

    def doc(self) -> Any:
        state = live_doc_update(self.client, self.sid)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(state)
        return read_document(doc)


@pytest.fixture
def studio(client: TestClient) -> Studio:
    s = Studio(client)
    s.arrange(
        {
            "d": {"name": "Drums", "kind": "audio", "clips": {"c1": {"assetId": s.drums, "start": 0.0}}},
            "b": {
                "name": "Bass",
                "kind": "audio",
                "gainDb": -3.0,
                "output": "bus",
                "clips": {"c1": {"assetId": s.bass, "start": 0.25}},
                "effects": [{"type": "compressor", "thresholdDb": -20.0}],
            },
            "bus": {"name": "Low end", "kind": "bus", "pan": -0.2},
        }
    )
    return s


def reference(studio: Studio, **options: Any) -> Any:
    return render_session(studio.doc(), server_assets(studio.client, [studio.drums, studio.bass]), **options)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_mixdown_in_each_format(studio: Studio, fmt: str) -> None:
    if not encoder_available({"ogg": "opus"}.get(fmt, fmt)):
        pytest.skip(f"this FFmpeg build cannot encode {fmt}")
    r = studio.get(f"?format={fmt}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(
        {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}[fmt]
    )
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert f'filename="Song_ take_2.{fmt}"' in disposition
    with av.open(io.BytesIO(r.content)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == FS
        assert stream.codec_context.channels == 2
        if fmt == "ogg":
            assert stream.codec_context.name == "opus"
    decoded = decode_audio(r.content)
    assert decoded.samples.shape == (2, FS)  # the drums clip is the longest: 1 s
    expected = reference(studio).mix
    if fmt in ("wav", "flac"):
        np.testing.assert_allclose(decoded.samples, expected, atol=2.0**-24 + 1e-9)
    else:
        # lossy codecs do not keep white noise sample for sample, but they keep its level
        def rms_db(x: np.ndarray) -> np.ndarray:
            return np.asarray(10 * np.log10(np.mean(np.square(x[:, 2000:-2000], dtype=np.float64), axis=1)))

        np.testing.assert_allclose(rms_db(decoded.samples), rms_db(expected), atol=1.5)


def test_range_and_dither(studio: Studio) -> None:
    r = studio.get("?start=0.25&end=0.75")
    assert r.status_code == 200
    plain = decode_audio(r.content).samples
    assert plain.shape == (2, FS // 2)
    expected = reference(studio, start_s=0.25, end_s=0.75).mix
    np.testing.assert_allclose(plain, expected, atol=2.0**-24 + 1e-9)
    dithered = decode_audio(studio.get("?start=0.25&end=0.75&dither=1&format=flac").content).samples
    diff = np.abs(dithered.astype(np.float64) - plain) * 2**23
    assert diff.max() <= 1.0 + 1e-6
    assert 0.2 < np.mean(diff > 0) < 0.9  # TPDF of ±1 LSB moves most, not all, samples


def test_stems_zip(studio: Studio) -> None:
    r = studio.get("?stems=1&format=flac")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="Song_ take_2.zip"' in r.headers["content-disposition"]
    expected = reference(studio, stems=True).stems
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["Drums.flac", "Bass.flac", "Low end.flac"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        for info, tid in zip(infos, ["d", "b", "bus"], strict=True):
            stem = decode_audio(archive.read(info)).samples
            assert stem.shape == (2, FS)
            np.testing.assert_allclose(stem, expected[tid], atol=2.0**-24 + 1e-9)


def test_members_render_and_others_do_not(client: TestClient, studio: Studio) -> None:
    viewer = signup(client, "vera@example.com", "Vera")
    add_member(client, studio.owner, studio.sid, "vera@example.com", "viewer")
    stranger = signup(client, "sam@example.com", "Sam")
    assert studio.get("?format=wav", token=viewer).status_code == 200
    r = studio.get("?format=wav", token=stranger)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "session_not_found"
    assert client.get(f"/api/sessions/{studio.sid}/mixdown").status_code == 401


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?format=aiff", "validation_error"),
        ("?start=abc", "validation_error"),
        ("?start=-1", "validation_error"),
        ("?start=2&end=1", "invalid_range"),
        ("?dither=2", "validation_error"),
        ("?stems=yes", "validation_error"),
        ("?start=5", "empty_range"),
    ],
)
def test_bad_requests(studio: Studio, query: str, code: str) -> None:
    r = studio.get(query)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


def test_long_ranges_are_refused(make_client: MakeClient) -> None:
    client = make_client(max_render_s=10.0)
    studio = Studio(client)
    r = studio.get("?end=10.5")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "range_too_long"
    assert studio.get("?end=10").status_code == 200


def test_assets_of_other_sessions_are_silent(client: TestClient, studio: Studio) -> None:
    other = signup(client, "eve@example.com", "Eve")
    r = client.post("/api/sessions", json={"title": "Eve's"}, headers=auth(other))
    eve_sid = str(r.json()["id"])
    # Eve's document names Olga's asset: rendering it must not reveal that audio.
    edit_doc(
        client,
        eve_sid,
        lambda doc: put_tracks(doc, {"t": {"name": "T", "clips": {"c": {"assetId": studio.drums}}}}),
    )
    r = client.get(f"/api/sessions/{eve_sid}/mixdown?end=1", headers=auth(other))
    assert r.status_code == 200
    assert not decode_audio(r.content).samples.any()


def test_the_job_shows_progress_in_the_document(
    client: TestClient, studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dsp_render, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(render_api, "JOB_UPDATE_INTERVAL_S", 0.0)
    updates: list[bytes] = []
    start_state = live_doc_update(client, studio.sid)

    async def watch() -> Any:
        runner = await services(client).rooms.acquire(studio.sid)
        return runner.room.doc.observe(lambda event: updates.append(event.update))

    assert client.portal is not None
    subscription = client.portal.call(watch)
    try:
        assert studio.get("?format=wav&end=3").status_code == 200  # 36 blocks of 4096 frames
    finally:

        async def unwatch() -> None:
            runner = await services(client).rooms.acquire(studio.sid)
            runner.room.doc.unobserve(subscription)

        client.portal.call(unwatch)

    replay: pycrdt.Doc[Any] = pycrdt.Doc()
    replay.apply_update(start_state)
    states: list[dict[str, Any]] = []
    for update in updates:
        replay.apply_update(update)
        jobs = replay.get("jobs", type=pycrdt.Map).to_py() or {}
        assert len(jobs) == 1
        states.append(next(iter(jobs.values())))
    assert states[0]["kind"] == "render"
    assert states[0]["status"] == "running"
    assert states[-1]["status"] == "done"
    assert states[-1]["progress"] == 1.0
    progress = [s["progress"] for s in states if s["status"] == "running"]
    assert progress == sorted(progress)
    assert len({p for p in progress if 0 < p < 1}) >= 5
    finished = read_document(replay).jobs
    assert [(j.kind, j.status) for j in finished] == [("render", "done")]


def test_finished_jobs_are_pruned(studio: Studio) -> None:
    for _ in range(render_api.FINISHED_JOBS_KEPT + 3):
        assert studio.get("?end=0.01").status_code == 200
    jobs = studio.doc().jobs
    assert len(jobs) == render_api.FINISHED_JOBS_KEPT
    assert {j.status for j in jobs} == {"done"}


# --------------------------------------------------------------------------------------------
# Files and the command line
# --------------------------------------------------------------------------------------------


def test_cli_render_matches_the_api(client: TestClient, studio: Studio, tmp_path: Path) -> None:
    api_wav = studio.get("?format=wav").content
    out = tmp_path / "out.wav"
    stems = tmp_path / "stems"
    data_dir = str(services(client).settings.data_dir)
    assert (
        cli.main(["render", studio.sid, "-o", str(out), "--stems", str(stems), "--data-dir", data_dir]) == 0
    )
    assert out.read_bytes() == api_wav
    assert sorted(p.name for p in stems.iterdir()) == ["Bass.wav", "Drums.wav", "Low end.wav"]
    assert decode_audio(stems / "Drums.wav").samples.shape == (2, FS)
    flac = tmp_path / "part.flac"
    args = ["render", studio.sid, "-o", str(flac), "--start", "0.5", "--data-dir", data_dir, "--quiet"]
    assert cli.main(args) == 0
    assert decode_audio(flac).samples.shape == (2, FS // 2)


def test_cli_errors(
    client: TestClient, studio: Studio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = str(services(client).settings.data_dir)
    assert cli.main(["render", "no-such-session", "-o", str(tmp_path / "x.wav"), "--data-dir", data_dir]) == 1
    assert "no session 'no-such-session'" in capsys.readouterr().err
    assert cli.main(["render", studio.sid, "--data-dir", data_dir]) == 2
    assert "-o FILE" in capsys.readouterr().err
    args = ["render", studio.sid, "-o", str(tmp_path / "x.wav"), "--data-dir", data_dir]
    assert cli.main([*args, "--end", "0"]) == 2
    assert cli.main([*args, "--start", "9"]) == 1
    assert "nothing to render" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    with pytest.raises(SystemExit):
        cli.main([*args, "--format", "aiff"])


def test_write_mixdown_leaves_nothing_when_cancelled(tmp_path: Path) -> None:
    from realtime.session.schema import Clip, SessionDocument, SessionInfo, Track

    doc = SessionDocument(SessionInfo(), (Track("t", "T", clips=(Clip("c", "a", 0.0),)),))
    assets = {"a": np.zeros((2, 10 * FS), dtype=np.float32)}
    cancel = threading.Event()
    for stems in (False, True):
        dest = tmp_path / f"out-{stems}.zip"
        with pytest.raises(RenderCancelled):
            write_mixdown(
                dest, doc, assets, "flac", stems=stems, cancel=cancel, progress=lambda p: cancel.set()
            )
        cancel.clear()
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="format"):
        write_mixdown(tmp_path / "x", doc, assets, "aiff")


def test_stem_and_file_names() -> None:
    from realtime.session.schema import SessionDocument, SessionInfo, Track

    doc = SessionDocument(
        SessionInfo(),
        (
            Track("1", "Gtr"),
            Track("2", "gtr"),
            Track("3", "a/b:c"),
            Track("4", " .. "),
            Track("5", "Gtr (2)"),
        ),
    )
    assert list(stem_names(doc, ".wav").values()) == [
        "Gtr.wav",
        "gtr (2).wav",
        "a_b_c.wav",
        "Track.wav",
        "Gtr (2) (2).wav",
    ]
    assert safe_filename("\x00Ünïcode \t name?", "x") == "Ünïcode name_"


def test_tpdf_dither_is_within_one_lsb_and_unbiased() -> None:
    x = np.full((2, 100_000), 0.3 + 0.25 / 2**23, dtype=np.float32)
    y = Tpdf24(seed=1)(x)
    lsb = (y.astype(np.float64) - x) * 2**23
    assert np.abs(lsb).max() <= 1.5
    assert np.allclose(y * 2**23, np.round(y * 2**23))  # exactly on the 24-bit grid
    assert abs(float(np.mean(y.astype(np.float64) * 2**23)) - float(x[0, 0]) * 2**23) < 0.01


def test_renders_beyond_the_limit_wait_as_queued(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(max_concurrent_renders=1)
    studio = Studio(client)
    release = threading.Event()
    real = stream_mixdown

    def held(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(render_api, "stream_mixdown", held)

    def statuses() -> list[str]:
        return sorted(j.status for j in studio.doc().jobs)

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(studio.get("?end=0.1").status_code))]
    threads[0].start()
    wait_until(lambda: statuses() == ["running"], what="the first render to run")
    threads.append(threading.Thread(target=lambda: results.append(studio.get("?end=0.1").status_code)))
    threads[1].start()
    wait_until(lambda: statuses() == ["queued", "running"], what="the second render to queue")
    release.set()
    for t in threads:
        t.join(10)
    assert results == [200, 200]
    assert statuses() == ["done", "done"]


def test_an_unreadable_asset_renders_as_silence(client: TestClient, studio: Studio) -> None:
    svc = services(client)
    assert client.portal is not None
    record = client.portal.call(svc.store.get_asset, studio.drums)
    path = svc.blobs.path_for(record.blob_key)  # type: ignore[attr-defined]
    path.unlink()
    r = studio.get("?end=1")
    assert r.status_code == 200, r.text
    mix = decode_audio(r.content).samples
    assert not mix[:, : FS // 4].any()  # only the drums play before the bass enters
    assert mix[:, FS // 4 :].any()
