"""Retention (issue 7, docs/privacy.md): source purges, soft deletion with undo, IP anonymisation.

The pure core is tested on its own; the scheduler runs against the real app on SQLite and
PostgreSQL, driven by `run_once(now)` with times chosen by the test (a fake clock), never by
waiting a day.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from starlette.testclient import TestClient

from persistence.ports import AssetKind, AssetRecord, JobStatus
from realtime.retention import (
    SOURCE_PURGE_REASON,
    RetentionPolicy,
    RetentionReport,
    cutoffs,
    deletion_due,
    restorable,
    source_purge_due,
)

from .appclient import MakeClient, auth, services, signup
from .conftest import POSTGRES_URL, _pg, require
from .media.audio import sine, wav_bytes
from .test_assets import add_member, files_under, new_session, uploaded
from .test_jobs_api import _redis_problem

DAY = 86_400.0
GRACE = 7 * DAY


# the pure core -------------------------------------------------------------------------------


def _asset(**changes: Any) -> AssetRecord:
    fields: dict[str, Any] = {
        "id": "a1",
        "session_id": "s1",
        "uploader_id": "u1",
        "name": "take.wav",
        "kind": AssetKind.SOURCE,
        "mime": "audio/flac",
        "duration_s": 1.0,
        "sample_rate": 48000,
        "channels": 1,
        "frames": 48000,
        "size_bytes": 10,
        "blob_key": "asset-a1.flac",
        "created_at": 0.0,
        "processed_at": 1000.0,
        "deleted_at": None,
    }
    fields.update(changes)
    return AssetRecord(**fields)


def test_a_source_is_due_exactly_one_retention_period_after_processing() -> None:
    policy = RetentionPolicy()
    assert policy.source_s == DAY
    assert policy.deletion_grace_s == GRACE
    assert policy.log_ip_s == 90 * DAY
    source = _asset()
    assert not source_purge_due(source, policy, 1000.0 + DAY - 1)
    assert source_purge_due(source, policy, 1000.0 + DAY)
    # Outputs stay until deleted; unprocessed sources wait for processing; purged ones are done.
    assert not source_purge_due(_asset(kind=AssetKind.OUTPUT), policy, 1e12)
    assert not source_purge_due(_asset(processed_at=None), policy, 1e12)
    assert not source_purge_due(_asset(purged_at=2000.0), policy, 1e12)
    assert not source_purge_due(source, RetentionPolicy(source_s=2 * DAY), 1000.0 + DAY)


def test_deletions_are_restorable_until_the_grace_period_ends() -> None:
    policy = RetentionPolicy(deletion_grace_s=100.0)
    assert restorable(50.0, policy, 149.9)
    assert not deletion_due(50.0, policy, 149.9)
    assert deletion_due(50.0, policy, 150.0)
    assert not restorable(50.0, policy, 150.0)
    assert not deletion_due(None, policy, 1e12)
    assert not restorable(None, policy, 0.0)
    cut = cutoffs(RetentionPolicy(source_s=1, deletion_grace_s=2, log_ip_s=3), 10.0)
    assert (cut.sources_processed_before, cut.deleted_before, cut.ips_logged_before) == (9.0, 8.0, 7.0)
    with pytest.raises(ValueError, match="deletion_grace_s"):
        RetentionPolicy(deletion_grace_s=-1)


# the scheduler against the app, on both backends ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def backend_client(request: pytest.FixtureRequest, make_client: MakeClient) -> Iterator[MakeClient]:
    """`make_client` on the embedded SQLite store, or on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield lambda **overrides: make_client(retention_interval_s=0, **overrides)
        return
    schema = f"ret_{uuid.uuid4().hex}"
    problem = asyncio.run(_pg(f'CREATE SCHEMA "{schema}"'))
    require(problem is None, problem or "")
    url = f"{POSTGRES_URL}?search_path={schema}"
    try:
        yield lambda **overrides: make_client(retention_interval_s=0, database_url=url, **overrides)
    finally:
        asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def portal(client: TestClient) -> BlockingPortal:
    assert client.portal is not None, "the client's lifespan is not entered"
    return client.portal


def run_retention(client: TestClient, now: float) -> RetentionReport:
    report = portal(client).call(client.app.state.retention.run_once, now)  # type: ignore[attr-defined]
    assert isinstance(report, RetentionReport)
    return report


def blob_names(client: TestClient) -> set[str]:
    return {p.name for p in files_under(services(client).settings.data_dir / "blobs")}


def store_call(client: TestClient, method: str, *args: Any, **kwargs: Any) -> Any:
    async def call() -> Any:
        return await getattr(services(client).store, method)(*args, **kwargs)

    return portal(client).call(call)


def make_output(client: TestClient, tmp_path: Path, sid: str, uploader_id: str) -> str:
    """An asset made by the server (a stem), as the inference executor stores it."""
    path = tmp_path / f"stem-{uuid.uuid4().hex}.wav"
    path.write_bytes(wav_bytes(sine(seconds=0.2)))

    async def ingest() -> str:
        record, _ = await services(client).assets.ingest(
            path, session_id=sid, uploader_id=uploader_id, name="stem.wav", kind=AssetKind.OUTPUT
        )
        return record.id

    return str(portal(client).call(ingest))


def user_id(client: TestClient, token: str) -> str:
    return str(client.get("/api/me", headers=auth(token)).json()["user"]["id"])


def test_sources_are_purged_a_day_after_processing_and_outputs_stay(
    backend_client: MakeClient, tmp_path: Path
) -> None:
    client = backend_client()
    owner = signup(client)
    sid = new_session(client, owner)
    source = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.3)))["asset_id"]
    fresh = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]  # never processed
    output = make_output(client, tmp_path, sid, user_id(client, owner))
    assert client.get(f"/api/assets/{source}/audio?format=opus", headers=auth(owner)).status_code == 200
    t0 = time.time()
    for asset in (source, output):
        assert store_call(client, "mark_asset_processed", asset, t0)

    assert run_retention(client, t0 + DAY - 1).sources_purged == 0
    assert {f"asset-{source}.flac", f"asset-{source}.opus"} <= blob_names(client)

    assert run_retention(client, t0 + DAY).sources_purged == 1
    assert not any(name.startswith(f"asset-{source}.") for name in blob_names(client))
    assert {f"asset-{output}.flac", f"asset-{fresh}.flac"} <= blob_names(client)
    # The row stays, saying what happened; the audio answers 410 with the reason.
    body = client.get(f"/api/assets/{source}", headers=auth(owner)).json()
    assert body["purge_reason"] == SOURCE_PURGE_REASON
    assert body["purged_at"] is not None
    listed = client.get(f"/api/sessions/{sid}/assets", headers=auth(owner)).json()["assets"]
    assert {a["asset_id"] for a in listed} == {source, fresh, output}
    for path in (f"/api/assets/{source}/audio", f"/api/assets/{source}/peaks"):
        r = client.get(path, headers=auth(owner))
        assert (r.status_code, r.json()["error"]["code"]) == (410, "source_purged")
        assert "deleted after processing" in r.json()["error"]["message"]
    assert client.get(f"/api/assets/{output}/audio", headers=auth(owner)).status_code == 200
    # Done once: a later run finds nothing more, even long after.
    assert run_retention(client, t0 + 400 * DAY).sources_purged == 0
    assert client.get(f"/api/assets/{output}", headers=auth(owner)).json()["purged_at"] is None
    actions = [
        e["action"] for e in client.get(f"/api/sessions/{sid}/audit", headers=auth(owner)).json()["entries"]
    ]
    assert actions.count("asset.source_purged") == 1


def test_a_deleted_asset_can_be_restored_until_the_grace_period_ends(backend_client: MakeClient) -> None:
    client = backend_client()
    owner = signup(client)
    viewer = signup(client, "viewer@example.com", "Vi")
    stranger = signup(client, "stranger@example.com", "St")
    sid = new_session(client, owner)
    add_member(client, owner, sid, "viewer@example.com", "viewer")
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    r = client.post(f"/api/assets/{asset}/restore", headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_deleted")

    t0 = time.time()
    assert client.delete(f"/api/assets/{asset}", headers=auth(owner)).status_code == 204
    assert client.get(f"/api/assets/{asset}", headers=auth(owner)).status_code == 404
    assert client.get(f"/api/sessions/{sid}/assets", headers=auth(owner)).json()["assets"] == []
    assert f"asset-{asset}.flac" in blob_names(client)  # kept for the undo
    assert client.post(f"/api/assets/{asset}/restore", headers=auth(stranger)).status_code == 404
    assert client.post(f"/api/assets/{asset}/restore", headers=auth(viewer)).status_code == 403
    r = client.post(f"/api/assets/{asset}/restore", headers=auth(owner))
    assert r.status_code == 200
    assert r.json()["asset_id"] == asset
    assert client.get(f"/api/assets/{asset}/audio", headers=auth(owner)).status_code == 200

    assert client.delete(f"/api/assets/{asset}", headers=auth(owner)).status_code == 204
    assert run_retention(client, t0 + GRACE - 60).assets_deleted == 0
    assert f"asset-{asset}.flac" in blob_names(client)
    assert run_retention(client, t0 + GRACE + 60).assets_deleted == 1
    assert not any(name.startswith(f"asset-{asset}.") for name in blob_names(client))
    assert store_call(client, "list_assets", sid, include_deleted=True) == []
    r = client.post(f"/api/assets/{asset}/restore", headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "asset_not_found")


def test_a_deleted_session_can_be_restored_until_the_grace_period_ends(backend_client: MakeClient) -> None:
    client = backend_client()
    owner = signup(client)
    editor = signup(client, "editor@example.com", "Ed")
    sid = new_session(client, owner)
    kept = new_session(client, owner)
    add_member(client, owner, sid, "editor@example.com", "editor")
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    other = uploaded(client, owner, kept, wav_bytes(sine(seconds=0.2)))["asset_id"]
    r = client.post(f"/api/sessions/{sid}/restore", headers=auth(owner))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_deleted")

    t0 = time.time()
    assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
    assert client.get(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 404
    assert client.get(f"/api/assets/{asset}", headers=auth(owner)).status_code == 404
    assert [s["id"] for s in client.get("/api/sessions", headers=auth(owner)).json()["sessions"]] == [kept]
    assert client.get("/api/sessions", headers=auth(editor)).json()["sessions"] == []
    # Only the owner may undo; to anyone else it looks like no session at all.
    assert client.post(f"/api/sessions/{sid}/restore", headers=auth(editor)).status_code == 404
    r = client.post(f"/api/sessions/{sid}/restore", headers=auth(owner))
    assert r.status_code == 200
    assert r.json()["title"] == "Assets"
    assert r.json()["role"] == "owner"
    body = client.get(f"/api/sessions/{sid}", headers=auth(owner)).json()
    assert {m["email"] for m in body["members"]} == {"ana@example.com", "editor@example.com"}
    assert client.get(f"/api/assets/{asset}/audio", headers=auth(editor)).status_code == 200

    assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
    assert run_retention(client, t0 + GRACE - 60).sessions_deleted == 0
    assert run_retention(client, t0 + GRACE + 60).sessions_deleted == 1
    assert not any(name.startswith(f"asset-{asset}.") for name in blob_names(client))
    assert f"asset-{other}.flac" in blob_names(client)
    assert store_call(client, "list_assets", sid, include_deleted=True) == []
    assert store_call(client, "list_deleted_sessions", before=t0 + 1e9) == []
    assert client.post(f"/api/sessions/{sid}/restore", headers=auth(owner)).status_code == 404
    assert client.get(f"/api/sessions/{kept}", headers=auth(owner)).status_code == 200


def test_a_soft_deleted_asset_survives_a_restart(make_client: MakeClient) -> None:
    client = make_client(retention_interval_s=0)
    owner = signup(client)
    sid = new_session(client, owner)
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    assert client.delete(f"/api/assets/{asset}", headers=auth(owner)).status_code == 204
    client.__exit__(None, None, None)
    restarted = make_client(retention_interval_s=0)
    # The start-up sweep finishes only deletions that are due, not this one.
    assert f"asset-{asset}.flac" in blob_names(restarted)
    assert restarted.post(f"/api/assets/{asset}/restore", headers=auth(owner)).status_code == 200


def test_audit_ips_are_anonymised_after_ninety_days(backend_client: MakeClient) -> None:
    client = backend_client()
    token = signup(client)
    t0 = time.time()
    entries = client.get("/api/me/audit", headers=auth(token)).json()["entries"]
    assert entries
    assert all(e["ip"] == "testclient" for e in entries)
    assert run_retention(client, t0 + 90 * DAY - 60).ips_anonymised == 0
    assert run_retention(client, t0 + 90 * DAY + 60).ips_anonymised == len(entries)
    after = client.get("/api/me/audit", headers=auth(token)).json()["entries"]
    assert [e["id"] for e in after] == [e["id"] for e in entries]  # the entries stay
    assert all(e["ip"] is None for e in after)


def test_the_app_runs_retention_in_the_background(make_client: MakeClient) -> None:
    client = make_client(retention_interval_s=0.05, deletion_grace_s=0.2)
    owner = signup(client)
    sid = new_session(client, owner)
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.2)))["asset_id"]
    assert client.delete(f"/api/assets/{asset}", headers=auth(owner)).status_code == 204

    # The sweep deletes the asset's blobs (flac, opus, peaks) one by one and then its row:
    # wait for all of it, not for the first blob to go.
    def gone() -> bool:
        return not any(name.startswith(f"asset-{asset}.") for name in blob_names(client)) and (
            store_call(client, "list_assets", sid, include_deleted=True) == []
        )

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(name.startswith(f"asset-{asset}.") for name in blob_names(client))
    assert store_call(client, "list_assets", sid, include_deleted=True) == []


def test_deleting_a_session_cancels_its_unfinished_jobs(make_client: MakeClient) -> None:
    url = os.environ.get("ESCENARIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    problem = _redis_problem(url)
    require(problem is None, problem or "")
    # No worker: the job stays queued in Redis until the deletion cancels it.
    client = make_client(
        retention_interval_s=0, inference_workers=0, redis_url=url, job_queue_prefix=f"ret-{uuid.uuid4().hex}"
    )
    owner = signup(client)
    sid = new_session(client, owner)
    asset = uploaded(client, owner, sid, wav_bytes(sine(seconds=0.5)))["asset_id"]
    r = client.post(f"/api/assets/{asset}/transcribe", headers=auth(owner))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
    job = store_call(client, "get_job", job_id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED
