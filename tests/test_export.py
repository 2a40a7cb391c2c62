"""Data export (issue 7, docs/privacy.md): `POST /api/me/export` → a zip behind a signed link."""

from __future__ import annotations

import io
import json
import time
import wave
import zipfile
from typing import Any

import pycrdt
from starlette.testclient import TestClient

from realtime.export import KEY_FILE, sign, signature_ok

from .appclient import auth, services, signup
from .media.audio import sine, wav_bytes
from .test_assets import add_member, files_under, new_session, upload
from .test_erasure import set_in_doc
from .test_retention import user_id


def finished(client: TestClient, token: str, export_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/me/export/{export_id}", headers=auth(token)).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError("the export did not finish in 60 s")


def test_an_export_holds_the_account_sessions_assets_and_audit(client: TestClient) -> None:
    ana = signup(client, "ana@example.com", "Ana")
    bo = signup(client, "bo@example.com", "Bo")
    ana_id = user_id(client, ana)
    song = new_session(client, ana)
    empty = new_session(client, ana)
    r = upload(client, ana, song, wav_bytes(sine(seconds=0.5)), name="riff")
    assert r.status_code == 201, r.text
    riff = r.json()["asset_id"]
    # An upload of Ana's in Bo's session is hers too; Bo's own upload there is not.
    band = new_session(client, bo)
    add_member(client, bo, band, "ana@example.com", "editor")
    mine_elsewhere = upload(client, ana, band, wav_bytes(sine(seconds=0.2)), name="guest").json()["asset_id"]
    bos = upload(client, bo, band, wav_bytes(sine(seconds=0.2)), name="bos").json()["asset_id"]

    def place_clip(doc: pycrdt.Doc[Any]) -> None:
        doc.get("tracks", type=pycrdt.Map)["t1"] = pycrdt.Map(
            {
                "name": "Riff",
                "kind": "audio",
                "gainDb": 0.0,
                "clips": pycrdt.Map({"c1": {"assetId": riff, "start": 0.0, "offset": 0.0, "length": 0.5}}),
            }
        )
        doc.get("trackOrder", type=pycrdt.Array).append("t1")

    set_in_doc(client, song, place_clip)

    r = client.post("/api/me/export", headers=auth(ana))
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("queued", "running", "done")
    body = finished(client, ana, r.json()["id"])
    assert body["status"] == "done", body
    assert body["progress"] == 1.0
    url = body["download_url"]

    # Another user cannot see the job, and the link needs no sign-in but its signature.
    assert client.get(f"/api/me/export/{body['id']}", headers=auth(bo)).status_code == 404
    assert client.get(f"/api/me/export/{body['id']}").status_code == 401
    r = client.get(url)  # no headers: a browser link
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(archive.namelist())

    account = json.loads(archive.read("account.json"))
    assert account["user"]["email"] == "ana@example.com"
    assert account["consent"]["training_opt_in"] is False
    document = json.loads(archive.read(f"sessions/{song}/document.json"))
    assert document["tracks"]["t1"]["clips"]["c1"]["assetId"] == riff
    assert document["trackOrder"] == ["t1"]
    restored: pycrdt.Doc[Any] = pycrdt.Doc()
    restored.apply_update(archive.read(f"sessions/{song}/document.yjs"))
    assert restored.get("tracks", type=pycrdt.Map).to_py()["t1"]["name"] == "Riff"
    with wave.open(io.BytesIO(archive.read(f"sessions/{song}/mixdown.wav"))) as w:
        assert (w.getframerate(), w.getnframes()) == (48000, 24000)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["sessions"][empty]["mixdown"] is None
    assert manifest["sessions"][empty]["mixdown_skipped"] == "the session is empty"
    assert f"sessions/{empty}/document.json" in names
    assert band not in manifest["sessions"]  # Bo's session is Bo's
    assert set(manifest["assets"]) == {riff, mine_elsewhere}
    assert bos not in json.dumps(manifest)
    stored = portal_get(client, f"asset-{riff}.flac")
    assert archive.read(manifest["assets"][riff]["file"]) == stored  # as stored, decrypted
    assert stored[:4] == b"fLaC"
    audit = json.loads(archive.read("audit.json"))
    assert {"auth.signup", "account.export"} <= {e["action"] for e in audit}
    assert all(ana_id in (e["actor_id"], e["target_id"]) for e in audit)

    # At rest, the archive is encrypted like any blob: no zip in the clear under blobs/.
    data_dir = services(client).settings.data_dir
    raw = [p for p in files_under(data_dir / "blobs") if p.name.startswith("export-")]
    assert len(raw) == 1
    assert not raw[0].read_bytes().startswith(b"PK")
    assert (data_dir / "keys" / KEY_FILE).stat().st_mode & 0o077 == 0

    # The download is audited.
    trail = client.get("/api/me/audit", headers=auth(ana)).json()["entries"]
    assert trail[0]["action"] == "account.export_download"


def portal_get(client: TestClient, key: str) -> bytes:
    assert client.portal is not None
    data = client.portal.call(services(client).blobs.get, key)
    assert isinstance(data, bytes)
    return data


def test_bad_and_expired_signatures_are_refused(client: TestClient) -> None:
    ana = signup(client, "ana@example.com", "Ana")
    bo = signup(client, "bo@example.com", "Bo")
    job = finished(client, ana, client.post("/api/me/export", headers=auth(ana)).json()["id"])
    assert job["status"] == "done", job
    good = job["download_url"]
    export_id = job["id"]
    path, _, query = good.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    key = (services(client).settings.data_dir / "keys" / KEY_FILE).read_bytes()
    past = int(time.time()) - 1
    bad = [
        f"{path}",
        f"{path}?exp={params['exp']}",
        f"{path}?exp={params['exp']}&sig={'0' * 64}",
        f"{path}?exp={int(params['exp']) + 1}&sig={params['sig']}",  # a later expiry, same signature
        f"{path}?exp={past}&sig={sign(key, export_id, past)}",  # truly signed, but expired
        f"{path}?exp=abc&sig={params['sig']}",
        f"/api/me/export/{'f' * 24}/download?exp={params['exp']}&sig={params['sig']}",  # another id
    ]
    for url in bad:
        r = client.get(url)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "bad_signature"), url
    # Bo's own export is signed for Bo's id only; Ana's link works, with or without Bo's token.
    bo_job = finished(client, bo, client.post("/api/me/export", headers=auth(bo)).json()["id"])
    bo_params = dict(p.split("=", 1) for p in bo_job["download_url"].partition("?")[2].split("&"))
    r = client.get(f"{path}?exp={bo_params['exp']}&sig={bo_params['sig']}", headers=auth(bo))
    assert r.status_code == 403
    assert client.get(good, headers=auth(bo)).status_code == 200


def test_an_expired_export_is_deleted(client: TestClient) -> None:
    ana = signup(client, "ana@example.com", "Ana")
    job = finished(client, ana, client.post("/api/me/export", headers=auth(ana)).json()["id"])
    exports = client.app.state.exports  # type: ignore[attr-defined]
    assert client.portal is not None
    assert client.portal.call(exports.sweep, time.time() + 25 * 3600) == 1
    data_dir = services(client).settings.data_dir
    assert [p for p in files_under(data_dir / "blobs") if p.name.startswith("export-")] == []
    assert client.get(f"/api/me/export/{job['id']}", headers=auth(ana)).status_code == 404
    # The link's signature is still valid, but there is nothing behind it any more.
    assert client.get(job["download_url"]).status_code == 404


def test_signatures() -> None:
    key = b"k" * 32
    s = sign(key, "abc", 2000)
    assert signature_ok(key, "abc", "2000", s, now=1999.0)
    assert not signature_ok(key, "abc", "2000", s, now=2000.0)
    assert not signature_ok(key, "abd", "2000", s, now=0.0)
    assert not signature_ok(b"j" * 32, "abc", "2000", s, now=0.0)
    assert not signature_ok(key, "abc", "-2000", s, now=0.0)
    assert not signature_ok(key, "abc", "2000", s[:-1], now=0.0)


def export_blobs(client: TestClient) -> list[str]:
    data_dir = services(client).settings.data_dir
    return [p.name for p in files_under(data_dir / "blobs") if p.name.startswith("export-")]


def test_archives_go_with_a_restart_and_with_the_account(client: TestClient) -> None:
    ana = signup(client, "ana@example.com", "Ana")
    first = finished(client, ana, client.post("/api/me/export", headers=auth(ana)).json()["id"])
    assert export_blobs(client) == [f"export-{first['id']}.zip"]
    # A restart forgets the jobs (they live in memory): the next use removes what they left.
    del client.app.state.exports  # type: ignore[attr-defined]
    second = finished(client, ana, client.post("/api/me/export", headers=auth(ana)).json()["id"])
    assert export_blobs(client) == [f"export-{second['id']}.zip"]
    assert client.get(first["download_url"]).status_code == 404
    # Erasing the account deletes its archives at once.
    r = client.request("DELETE", "/api/me", json={"password": "correct horse"}, headers=auth(ana))
    assert r.status_code == 200, r.text
    assert export_blobs(client) == []
    assert client.get(second["download_url"]).status_code == 404
