"""Audio assets over HTTP: upload, decode, store, peaks, ranges, roles and clean-up."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from persistence.ports import AssetRecord
from realtime.config import Settings, settings_from_env
from realtime.media.decode import SAMPLE_RATE, decode_audio
from realtime.media.encode import encode_audio

from .appclient import MakeClient, auth, services, signup
from .media.audio import PYAV_FORMATS, dominant_frequency, encoder_exists, pyav_bytes, sine, wav_bytes


def new_session(client: TestClient, token: str) -> str:
    r = client.post("/api/sessions", json={"title": "Assets"}, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def add_member(client: TestClient, owner: str, sid: str, email: str, role: str) -> None:
    r = client.post(f"/api/sessions/{sid}/members", json={"email": email, "role": role}, headers=auth(owner))
    assert r.status_code in (200, 201), r.text


def upload(
    client: TestClient, token: str, sid: str, data: bytes, filename: str = "take.wav", name: str | None = None
) -> Any:
    return client.post(
        f"/api/sessions/{sid}/assets",
        files={"file": (filename, data, "application/octet-stream")},
        data={"name": name} if name is not None else None,
        headers=auth(token),
    )


def uploaded(
    client: TestClient, token: str, sid: str, data: bytes, filename: str = "take.wav"
) -> dict[str, Any]:
    r = upload(client, token, sid, data, filename)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def asset_rows(client: TestClient) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(services(client).settings.data_dir / "escenario.db")) as db:
        return list(db.execute("SELECT id, session_id, blob_key FROM assets"))


def assert_nothing_stored(client: TestClient) -> None:
    data_dir = services(client).settings.data_dir
    assert files_under(data_dir / "blobs") == []
    assert files_under(data_dir / "tmp") == []
    assert asset_rows(client) == []


@pytest.fixture
def owner_and_session(client: TestClient) -> tuple[str, str]:
    owner = signup(client, "owner@example.com", "Olga")
    return owner, new_session(client, owner)


# uploading --------------------------------------------------------------------------------


UPLOAD_FORMATS = ["wav", *sorted(PYAV_FORMATS)]


@pytest.mark.parametrize("kind", UPLOAD_FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
def test_upload_each_format(
    client: TestClient, owner_and_session: tuple[str, str], kind: str, channels: int
) -> None:
    owner, sid = owner_and_session
    x = sine(440, seconds=1.5, channels=channels)
    if kind == "wav":
        data, suffix = wav_bytes(x), ".wav"
    else:
        suffix, _, codec, _ = PYAV_FORMATS[kind]
        if not encoder_exists(codec):
            pytest.skip(f"this FFmpeg build cannot encode {kind}")
        data = pyav_bytes(x, kind)
    body = uploaded(client, owner, sid, data, f"song{suffix}")
    assert body["name"] == f"song{suffix}"
    assert body["channels"] == channels
    assert body["sample_rate"] == SAMPLE_RATE
    assert body["duration"] == pytest.approx(1.5, abs=0.05)
    assert body["frames"] == round(body["duration"] * SAMPLE_RATE)
    assert body["mime"] == "audio/flac"
    assert body["kind"] == "source"
    assert body["session_id"] == sid
    assert body["processed_at"] is None
    assert body["size_bytes"] > 0
    assert body["created_at"].endswith("Z")

    r = client.get(f"/api/assets/{body['asset_id']}", headers=auth(owner))
    assert r.status_code == 200
    assert r.json() == {k: v for k, v in body.items() if k != "source_sample_rate"}
    listed = client.get(f"/api/sessions/{sid}/assets", headers=auth(owner)).json()["assets"]
    assert [a["asset_id"] for a in listed] == [body["asset_id"]]
    stored = client.get(f"/api/assets/{body['asset_id']}/audio", headers=auth(owner)).content
    decoded = decode_audio(stored)
    assert decoded.samples.shape == (channels, body["frames"])
    assert dominant_frequency(decoded.samples) == pytest.approx(440, abs=2)


def test_a_44k1_upload_is_resampled_to_48k(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    owner, sid = owner_and_session
    body = uploaded(client, owner, sid, wav_bytes(sine(1000, seconds=2.0, rate=44100), 44100))
    assert body["source_sample_rate"] == 44100
    assert body["sample_rate"] == 48000
    assert body["frames"] == pytest.approx(96000, abs=2)
    assert body["duration"] == pytest.approx(2.0, abs=1e-4)
    decoded = decode_audio(client.get(f"/api/assets/{body['asset_id']}/audio", headers=auth(owner)).content)
    assert decoded.source_sample_rate == 48000
    assert abs(dominant_frequency(decoded.samples) - 1000) <= SAMPLE_RATE / decoded.frames


def test_stored_audio_is_the_upload_within_24_bits(
    client: TestClient, owner_and_session: tuple[str, str]
) -> None:
    owner, sid = owner_and_session
    x = np.random.default_rng(5).uniform(-0.9, 0.9, (2, 20_000)).astype(np.float32)
    body = uploaded(client, owner, sid, encode_audio(x, "wav"))
    stored = client.get(f"/api/assets/{body['asset_id']}/audio?format=flac", headers=auth(owner))
    assert stored.headers["content-type"] == "audio/flac"
    assert np.max(np.abs(decode_audio(stored.content).samples - x)) <= 2.0**-24 + 1e-9


def test_names_are_sanitised_or_given(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    owner, sid = owner_and_session
    data = wav_bytes(sine(seconds=0.1))
    assert uploaded(client, owner, sid, data, "C:\\music\\..\\bad   name .wav")["name"] == "bad name .wav"
    assert uploaded(client, owner, sid, data, "../../etc/passwd")["name"] == "passwd"
    assert uploaded(client, owner, sid, data, "...")["name"] == "untitled"
    r = upload(client, owner, sid, data, "x.wav", name="  Lead vocal,\x01\ttake 3  ")
    assert r.json()["name"] == "Lead vocal, take 3"
    assert len(uploaded(client, owner, sid, data, "a" * 500 + ".wav")["name"]) == 200


BAD_UPLOADS = [
    ("garbage.wav", lambda: np.random.default_rng(3).bytes(20_000), 415, "unsupported_media"),
    ("notes.txt", lambda: b"these are my lyrics, not audio\n" * 100, 415, "unsupported_media"),
    ("header.wav", lambda: wav_bytes(sine())[:30], 415, "unsupported_media"),
    ("empty.wav", lambda: b"", 422, "corrupt_audio"),
    ("silent.wav", lambda: wav_bytes(sine())[:44], 422, "corrupt_audio"),
    (
        "half.flac",
        lambda: (f := encode_audio(sine(seconds=2.0), "flac"))[: len(f) // 2],
        422,
        "corrupt_audio",
    ),
]


@pytest.mark.parametrize(("filename", "make", "status", "code"), BAD_UPLOADS)
def test_bad_uploads_are_rejected_and_leave_nothing(
    client: TestClient,
    owner_and_session: tuple[str, str],
    filename: str,
    make: Callable[[], bytes],
    status: int,
    code: str,
) -> None:
    owner, sid = owner_and_session
    r = upload(client, owner, sid, make(), filename)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert_nothing_stored(client)
    assert client.get(f"/api/sessions/{sid}/assets", headers=auth(owner)).json() == {"assets": []}


def test_too_long_is_rejected(make_client: MakeClient) -> None:
    client = make_client(max_asset_duration_s=1.0)
    owner = signup(client)
    sid = new_session(client, owner)
    r = upload(client, owner, sid, wav_bytes(sine(seconds=1.5)))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "too_long")
    assert_nothing_stored(client)
    assert upload(client, owner, sid, wav_bytes(sine(seconds=0.9))).status_code == 201


def test_oversize_uploads_are_rejected_while_streaming(make_client: MakeClient) -> None:
    client = make_client(max_upload_bytes=10_000)
    owner = signup(client)
    sid = new_session(client, owner)
    small = wav_bytes(sine(seconds=0.05))
    assert len(small) < 10_000
    assert upload(client, owner, sid, small).status_code == 201
    created = asset_rows(client)
    for size in (10_001, 50_000, 2_000_000):  # in the body, and (largest) by Content-Length up front
        r = upload(client, owner, sid, wav_bytes(sine(seconds=0.01))[:44] + b"\0" * size)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "upload_too_large")
    assert asset_rows(client) == created
    assert files_under(services(client).settings.data_dir / "tmp") == []


def test_malformed_forms(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    owner, sid = owner_and_session
    path = f"/api/sessions/{sid}/assets"
    r = client.post(path, content=b"raw bytes", headers={**auth(owner), "content-type": "audio/wav"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_upload")
    r = client.post(path, data={"name": "no file"}, files={"other": ("a.wav", b"x")}, headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_upload")
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
    r = client.post(
        path, content=body, headers={**auth(owner), "content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_upload")  # no closing boundary
    two = [("file", ("a.wav", b"1")), ("file", ("b.wav", b"2"))]
    r = client.post(path, files=two, headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_upload")
    assert_nothing_stored(client)


# roles ------------------------------------------------------------------------------------


def test_roles(client: TestClient) -> None:
    owner = signup(client, "owner@example.com", "Olga")
    editor = signup(client, "editor@example.com", "Eddie")
    viewer = signup(client, "viewer@example.com", "Vera")
    stranger = signup(client, "stranger@example.com", "Sam")
    sid = new_session(client, owner)
    add_member(client, owner, sid, "editor@example.com", "editor")
    add_member(client, owner, sid, "viewer@example.com", "viewer")
    data = wav_bytes(sine(seconds=0.2))

    r = upload(client, viewer, sid, data)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden")
    r = upload(client, stranger, sid, data)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
    assert client.post(f"/api/sessions/{sid}/assets", files={"file": ("a.wav", data)}).status_code == 401
    assert_nothing_stored(client)

    asset = uploaded(client, editor, sid, data)["asset_id"]
    for token in (owner, editor, viewer):
        assert client.get(f"/api/assets/{asset}", headers=auth(token)).status_code == 200
        assert client.get(f"/api/assets/{asset}/peaks", headers=auth(token)).status_code == 200
        assert client.get(f"/api/assets/{asset}/audio", headers=auth(token)).status_code == 200
        assert len(client.get(f"/api/sessions/{sid}/assets", headers=auth(token)).json()["assets"]) == 1
    for path in (f"/api/assets/{asset}", f"/api/assets/{asset}/peaks", f"/api/assets/{asset}/audio"):
        r = client.get(path, headers=auth(stranger))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "asset_not_found")
    assert client.get(f"/api/sessions/{sid}/assets", headers=auth(stranger)).status_code == 404
    assert client.delete(f"/api/assets/{asset}", headers=auth(stranger)).status_code == 404
    r = client.delete(f"/api/assets/{asset}", headers=auth(viewer))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden")
    assert client.delete(f"/api/assets/{asset}", headers=auth(editor)).status_code == 204
    assert client.get(f"/api/assets/{asset}", headers=auth(owner)).status_code == 404
    assert client.get(f"/api/assets/{'x' * 65}", headers=auth(owner)).status_code == 404


def test_cookie_uploads_need_the_csrf_header(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    _, sid = owner_and_session
    r = client.post("/api/auth/login", json={"email": "owner@example.com", "password": "correct horse"})
    assert r.status_code == 200
    files = {"file": ("a.wav", wav_bytes(sine(seconds=0.1)))}
    r = client.post(f"/api/sessions/{sid}/assets", files=files)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "csrf_failed")
    csrf = client.cookies["escenario_csrf"]
    assert (
        client.post(f"/api/sessions/{sid}/assets", files=files, headers={"x-csrf-token": csrf}).status_code
        == 201
    )


# peaks ------------------------------------------------------------------------------------


def test_peaks(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    owner, sid = owner_and_session
    asset = uploaded(client, owner, sid, wav_bytes(sine(100, seconds=3.0, channels=2), sampwidth=3))[
        "asset_id"
    ]
    r = client.get(f"/api/assets/{asset}/peaks?width=100", headers=auth(owner))
    assert r.status_code == 200
    body = r.json()
    assert (body["width"], body["channels"], body["frames"], body["merged"]) == (100, 2, 144_000, True)
    assert len(body["min"]) == len(body["max"]) == 100
    assert np.allclose(body["max"], 0.5, atol=1e-3)  # the louder channel wins the merge
    assert np.allclose(body["min"], -0.5, atol=1e-3)
    assert len(client.get(f"/api/assets/{asset}/peaks", headers=auth(owner)).json()["max"]) == 1000
    # Finer than the stored level (one pair per 256 frames): computed from the samples.
    fine = client.get(f"/api/assets/{asset}/peaks?width=65536", headers=auth(owner)).json()
    assert len(fine["max"]) == 65536
    assert max(fine["max"]) == pytest.approx(0.5, abs=1e-4)
    assert all(lo <= hi for lo, hi in zip(fine["min"], fine["max"], strict=True))
    for bad in ("0", "65537", "-1", "abc", "1.5", ""):
        r = client.get(f"/api/assets/{asset}/peaks?width={bad}", headers=auth(owner))
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error"), bad


def test_peaks_match_the_stored_samples(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    owner, sid = owner_and_session
    x = np.random.default_rng(9).uniform(-0.8, 0.8, (1, 256 * 40)).astype(np.float32)
    asset = uploaded(client, owner, sid, encode_audio(x, "wav"))["asset_id"]
    body = client.get(f"/api/assets/{asset}/peaks?width=40", headers=auth(owner)).json()
    blocks = x.reshape(40, 256)
    assert np.allclose(body["max"], blocks.max(axis=1), atol=1e-5)
    assert np.allclose(body["min"], blocks.min(axis=1), atol=1e-5)


# audio and ranges -------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), [("flac", "audio/flac"), ("opus", "audio/ogg")])
def test_audio_with_ranges(
    client: TestClient, owner_and_session: tuple[str, str], fmt: str, mime: str
) -> None:
    owner, sid = owner_and_session
    asset = uploaded(client, owner, sid, wav_bytes(sine(1000, seconds=2.0, channels=2)))["asset_id"]
    url = f"/api/assets/{asset}/audio?format={fmt}"
    full = client.get(url, headers=auth(owner))
    assert full.status_code == 200
    assert full.headers["content-type"] == mime
    assert full.headers["accept-ranges"] == "bytes"
    size = len(full.content)
    assert int(full.headers["content-length"]) == size
    decoded = decode_audio(full.content)
    assert decoded.duration == pytest.approx(2.0, abs=0.03)
    assert dominant_frequency(decoded.samples) == pytest.approx(1000, abs=1)

    def get_range(spec: str) -> Any:
        return client.get(url, headers={**auth(owner), "range": spec})

    first = get_range("bytes=0-99")
    assert first.status_code == 206
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.headers["content-type"] == mime
    assert first.content == full.content[:100]
    middle = get_range(f"bytes=100-{size // 2}")
    tail = get_range(f"bytes={size // 2 + 1}-")
    assert tail.headers["content-range"] == f"bytes {size // 2 + 1}-{size - 1}/{size}"
    assert first.content + middle.content + tail.content == full.content
    suffix = get_range("bytes=-100")
    assert suffix.status_code == 206
    assert suffix.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert suffix.content == full.content[-100:]
    assert get_range(f"bytes=-{size * 2}").content == full.content
    assert get_range(f"bytes=10-{size * 5}").content == full.content[10:]
    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0", "bytes=5-1", "bytes=x-y"):
        r = get_range(bad)
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == f"bytes */{size}"
    assert get_range("items=0-5").status_code == 200  # unknown unit: ignored
    assert get_range("bytes=0-1,5-6").status_code == 200  # several ranges: the whole body

    etag = full.headers["etag"]
    assert client.get(url, headers={**auth(owner), "if-none-match": etag}).status_code == 304
    stale = client.get(url, headers={**auth(owner), "range": "bytes=0-9", "if-range": '"other"'})
    assert stale.status_code == 200
    fresh = client.get(url, headers={**auth(owner), "range": "bytes=0-9", "if-range": etag})
    assert fresh.status_code == 206
    head = client.head(url, headers=auth(owner))
    assert head.status_code == 200
    assert head.headers["content-length"] == str(size)
    assert head.content == b""


def test_opus_is_made_once_and_kept(client: TestClient, owner_and_session: tuple[str, str]) -> None:
    owner, sid = owner_and_session
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.5)))["asset_id"]
    blobs = services(client).settings.data_dir / "blobs"
    assert len(files_under(blobs)) == 2  # the FLAC and the peaks
    first = client.get(f"/api/assets/{asset}/audio?format=opus", headers=auth(owner)).content
    assert len(files_under(blobs)) == 3
    assert client.get(f"/api/assets/{asset}/audio?format=opus", headers=auth(owner)).content == first
    r = client.get(f"/api/assets/{asset}/audio?format=mp3", headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error")


# deletion ---------------------------------------------------------------------------------


# With a grace period (the default, 7 days) a deletion only hides the asset or session until
# the retention scheduler hard-deletes it (tests/test_retention.py); deletion_grace_s=0 deletes
# at once, which these tests cover.


def test_deleting_an_asset_removes_its_row_and_blobs(make_client: MakeClient) -> None:
    client = make_client(deletion_grace_s=0)
    owner = signup(client)
    sid = new_session(client, owner)
    kept = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    gone = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.3)))["asset_id"]
    client.get(f"/api/assets/{gone}/audio?format=opus", headers=auth(owner))
    blobs = services(client).settings.data_dir / "blobs"
    assert len(files_under(blobs)) == 5
    assert client.delete(f"/api/assets/{gone}", headers=auth(owner)).status_code == 204
    assert {p.name for p in files_under(blobs)} == {f"asset-{kept}.flac", f"asset-{kept}.peaks"}
    assert [row[0] for row in asset_rows(client)] == [kept]
    assert client.delete(f"/api/assets/{gone}", headers=auth(owner)).status_code == 404


def test_deleting_a_session_removes_its_asset_blobs(make_client: MakeClient) -> None:
    client = make_client(deletion_grace_s=0)
    owner = signup(client)
    sid = new_session(client, owner)
    other = new_session(client, owner)
    first = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2, channels=2)))
    client.get(f"/api/assets/{first}/audio?format=opus", headers=auth(owner))
    kept = uploaded(client, owner, other, wav_bytes(sine(seconds=0.2)))["asset_id"]
    blobs = services(client).settings.data_dir / "blobs"
    assert len(files_under(blobs)) == 7
    assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
    assert {p.name for p in files_under(blobs)} == {f"asset-{kept}.flac", f"asset-{kept}.peaks"}
    assert [row[0] for row in asset_rows(client)] == [kept]
    assert client.get(f"/api/assets/{first}", headers=auth(owner)).status_code == 404


def test_interrupted_deletions_are_finished_at_start(make_client: MakeClient) -> None:
    client = make_client(deletion_grace_s=0)
    owner = signup(client)
    sid = new_session(client, owner)
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    svc = services(client)
    # A crash right after the first step of a deletion: the row is hidden, the blobs remain.
    assert client.portal.call(svc.store.mark_asset_deleted, asset) is True  # type: ignore[union-attr]
    assert len(files_under(svc.settings.data_dir / "blobs")) == 2
    client.__exit__(None, None, None)
    restarted = make_client(deletion_grace_s=0)
    assert files_under(services(restarted).settings.data_dir / "blobs") == []
    assert asset_rows(restarted) == []


# the samples the DSP engine reads -----------------------------------------------------------


def test_load_asset_samples_is_cached_and_read_only(
    client: TestClient, owner_and_session: tuple[str, str]
) -> None:
    owner, sid = owner_and_session
    x = sine(300, seconds=0.5, channels=2)
    asset = uploaded(client, owner, sid, encode_audio(x, "wav"))["asset_id"]
    svc = services(client)
    portal = client.portal
    assert portal is not None
    record = portal.call(svc.store.get_asset, asset)
    assert isinstance(record, AssetRecord)
    samples = portal.call(svc.assets.samples, record)
    assert samples.dtype == np.float32
    assert samples.shape == (2, 24_000)
    assert np.max(np.abs(samples - x)) <= 2.0**-24 + 1e-9
    assert not samples.flags.writeable
    assert portal.call(svc.assets.samples, record) is samples  # from the cache
    assert svc.assets.samples_cache.bytes == samples.nbytes


def test_asset_settings_come_from_the_environment() -> None:
    env = {
        "ESCENARIO_MAX_UPLOAD_BYTES": "1234",
        "ESCENARIO_MAX_ASSET_DURATION_S": "60.5",
        "ESCENARIO_ASSET_CACHE_BYTES": "99",
    }
    settings = settings_from_env(env)
    assert (settings.max_upload_bytes, settings.max_asset_duration_s, settings.asset_cache_bytes) == (
        1234,
        60.5,
        99,
    )
    defaults = Settings()
    assert defaults.max_upload_bytes == 500 * 2**20
    assert defaults.max_asset_duration_s == 3 * 3600
    assert defaults.asset_cache_bytes == 512 * 2**20
