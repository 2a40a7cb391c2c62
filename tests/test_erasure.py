"""Erasure (issue 7, docs/privacy.md): `DELETE /api/me` leaves no trace of the account.

Runs on SQLite and PostgreSQL. After the erasure the test reads every row of every table and
every stored blob (raw, and decrypted through the `BlobStore` port) looking for the account's
e-mail, name, id and a marker that was in its uploads' names and its documents.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pycrdt
import pytest
from starlette.testclient import TestClient

from persistence.ports import Role, SessionRecord
from realtime.erasure import ERASED_ID, ERASED_NAME, anonymise_document, plan_erasure
from realtime.errors import ValidationFailed
from realtime.session.hub import build_doc

from .appclient import PASSWORD, MakeClient, auth, services, signup
from .conftest import POSTGRES_URL, _pg, require
from .media.audio import sine, wav_bytes
from .test_assets import add_member, files_under, new_session, upload
from .test_retention import portal, user_id

MARKER = "Zqxmarker7"
EMAIL = "marta.erasable@example.com"
NAME = "Marta Erasable"


@dataclass
class Backend:
    make: MakeClient
    schema: str | None  # the PostgreSQL schema, None on SQLite


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, make_client: MakeClient) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend(lambda **o: make_client(retention_interval_s=0, **o), None)
        return
    schema = f"era_{uuid.uuid4().hex}"
    problem = asyncio.run(_pg(f'CREATE SCHEMA "{schema}"'))
    require(problem is None, problem or "")
    url = f"{POSTGRES_URL}?search_path={schema}"
    try:
        yield Backend(lambda **o: make_client(retention_interval_s=0, database_url=url, **o), schema)
    finally:
        asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def every_value(client: TestClient, schema: str | None) -> Iterator[tuple[str, Any]]:
    """(table, value) for every column of every row of every table."""
    if schema is None:
        with closing(sqlite3.connect(services(client).settings.data_dir / "escenario.db")) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            assert {"users", "sessions", "assets", "audit_log", "crdt_updates", "jobs"} <= set(tables)
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        yield table, value
        return

    async def fetch() -> list[tuple[str, Any]]:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            tables = [
                r[0]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
                )
            ]
            assert {"users", "sessions", "assets", "audit_log", "crdt_updates", "jobs"} <= set(tables)
            out: list[tuple[str, Any]] = []
            for table in tables:
                for row in await conn.fetch(f'SELECT * FROM "{schema}"."{table}"'):
                    out.extend((table, value) for value in row.values())
            return out
        finally:
            await conn.close()

    yield from asyncio.run(fetch())


def traces(value: Any, needles: list[str]) -> list[str]:
    if isinstance(value, str):
        return [n for n in needles if n.casefold() in value.casefold()]
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value).lower()
        return [n for n in needles if n.lower().encode() in raw]
    return []


def set_in_doc(client: TestClient, sid: str, edit: Any) -> None:
    async def go() -> None:
        runner = await services(client).rooms.acquire(sid)
        with runner.room.doc.transaction():
            edit(runner.room.doc)
        runner.commit_local_changes()
        await runner.drain()

    portal(client).call(go)


def stored_doc(client: TestClient, sid: str) -> dict[str, Any]:
    async def load() -> dict[str, Any]:
        record = await services(client).store.load_room(sid)
        doc = build_doc(record.snapshot, (u for _, u in record.updates))
        return {k: doc.get(k, type=pycrdt.Map).to_py() for k in ("session", "tracks", "jobs")}

    return portal(client).call(load)


def erase(client: TestClient, token: str, **body: Any) -> Any:
    return client.request("DELETE", "/api/me", json=body, headers=auth(token))


def test_erasure_leaves_no_trace_and_collaborators_keep_working(backend: Backend) -> None:
    client = backend.make()
    marta = signup(client, EMAIL, NAME)
    colin = signup(client, "colin@example.com", "Colin")
    marta_id, colin_id = user_id(client, marta), user_id(client, colin)
    # A sign-in with an address, and a consent change: both in Marta's audit trail.
    assert client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD}).status_code == 200
    assert client.patch("/api/me", json={"training_opt_in": True}, headers=auth(marta)).status_code == 200

    # Marta's own session: the marker in its title (so in the document) and in an upload's name.
    own = new_session(client, marta)
    assert client.patch(
        f"/api/sessions/{own}", json={"title": f"{MARKER} demo"}, headers=auth(marta)
    ).is_success
    r = upload(client, marta, own, wav_bytes(sine(seconds=0.3)), filename=f"{MARKER}-take.wav")
    assert r.status_code == 201, r.text
    r = upload(client, marta, own, wav_bytes(sine(seconds=0.2)), name=f"{MARKER} chorus")
    assert r.status_code == 201, r.text
    deleted_asset = r.json()["asset_id"]
    assert client.delete(f"/api/assets/{deleted_asset}", headers=auth(marta)).status_code == 204
    # A session Marta soft-deleted (still in the grace period) goes too.
    gone = new_session(client, marta)
    assert client.patch(
        f"/api/sessions/{gone}", json={"title": f"{MARKER} old"}, headers=auth(marta)
    ).is_success
    assert client.delete(f"/api/sessions/{gone}", headers=auth(marta)).status_code == 204
    # A session Marta hands to Colin.
    handed = new_session(client, marta)
    add_member(client, marta, handed, "colin@example.com", "editor")
    # Colin's session, where Marta is an editor: her upload, a live track and a job name her.
    band = new_session(client, colin)
    add_member(client, colin, band, EMAIL, "editor")
    r = upload(client, marta, band, wav_bytes(sine(seconds=0.25)), name=f"{NAME} take 1.wav")
    assert r.status_code == 201, r.text
    band_take = r.json()["asset_id"]

    def attribute(doc: pycrdt.Doc[Any]) -> None:
        tracks = doc.get("tracks", type=pycrdt.Map)
        tracks["live-1"] = pycrdt.Map(
            {
                "name": NAME,
                "kind": "live",
                "live": pycrdt.Map({"userId": marta_id, "participantName": NAME, "active": False}),
            }
        )
        tracks["t-colin"] = pycrdt.Map({"name": "Colin's bass", "kind": "audio"})
        doc.get("jobs", type=pycrdt.Map)["job-1"] = {"kind": "separate", "createdBy": marta_id}

    set_in_doc(client, band, attribute)
    set_in_doc(client, handed, attribute)

    # Refusals change nothing: a wrong password (403, audited), a bad transfer (422).
    r = erase(client, marta, password="not the password")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "wrong_password")
    mine = client.get("/api/me/audit", headers=auth(marta)).json()["entries"]
    assert mine[0]["action"] == "account.erase_denied"
    for bad in ({band: colin_id}, {handed: marta_id}, {handed: "nobody"}, [handed], {handed: 5}):
        r = erase(client, marta, password=PASSWORD, transfer=bad)
        assert r.status_code == 422, (bad, r.text)
    assert erase(client, marta).status_code == 422  # no password
    assert client.get("/api/me", headers=auth(marta)).status_code == 200
    assert client.get(f"/api/sessions/{own}", headers=auth(marta)).status_code == 200

    r = erase(client, marta, password=PASSWORD, transfer={handed: colin_id})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "erased": True,
        "sessions_deleted": 2,
        "sessions_transferred": 1,
        "documents_anonymised": 2,
    }

    # The account is gone: its token, its sign-in.
    assert client.get("/api/me", headers=auth(marta)).status_code == 401
    r = client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 401
    assert client.get(f"/api/sessions/{own}", headers=auth(colin)).status_code == 404

    # Collaborators keep working: Colin's session, with Marta's take (renamed), still plays.
    listed = {s["id"]: s["role"] for s in client.get("/api/sessions", headers=auth(colin)).json()["sessions"]}
    assert listed == {band: "owner", handed: "owner"}
    body = client.get(f"/api/sessions/{band}", headers=auth(colin)).json()
    assert [m["user_id"] for m in body["members"]] == [colin_id]
    take = client.get(f"/api/assets/{band_take}", headers=auth(colin)).json()
    assert take["name"] == f"{ERASED_NAME} take 1.wav"
    assert client.get(f"/api/assets/{band_take}/audio", headers=auth(colin)).status_code == 200
    assert client.patch(f"/api/sessions/{band}", json={"title": "Still ours"}, headers=auth(colin)).is_success
    doc = stored_doc(client, band)
    assert doc["tracks"]["live-1"]["live"] == {
        "userId": ERASED_ID,
        "participantName": ERASED_NAME,
        "active": False,
    }
    assert doc["tracks"]["live-1"]["name"] == ERASED_NAME
    assert doc["tracks"]["t-colin"]["name"] == "Colin's bass"
    assert doc["jobs"]["job-1"] == {"kind": "separate", "createdBy": ERASED_ID}
    assert doc["session"]["title"] == "Still ours"
    # The handed-over session is Colin's to delete now.
    assert client.delete(f"/api/sessions/{handed}", headers=auth(colin)).status_code == 204

    # The erasure is itself recorded, with no trace of whose account it was.
    colin_trail = client.get(f"/api/sessions/{band}/audit", headers=auth(colin)).json()["entries"]
    assert {e["actor_id"] for e in colin_trail} <= {colin_id, None}

    # Nothing left: every row of every table, every blob (raw and decrypted).
    needles = [EMAIL, NAME, MARKER, marta_id]
    found = [
        (table, hit) for table, value in every_value(client, backend.schema) for hit in traces(value, needles)
    ]
    assert found == []
    svc = services(client)
    blob_files = files_under(svc.settings.data_dir / "blobs")
    assert blob_files, "Colin's audio must still be stored"
    for path in blob_files:
        assert traces(path.read_bytes(), needles) == [], path
        assert traces(path.name, needles) == [], path
        plain = portal(client).call(svc.blobs.get, path.name)
        assert traces(plain, needles) == [], path


def test_erased_audit_entries_keep_the_event_without_the_person(backend: Backend) -> None:
    client = backend.make()
    marta = signup(client, EMAIL, NAME)
    marta_id = user_id(client, marta)
    assert erase(client, marta, password=PASSWORD).status_code == 200

    async def trail() -> list[Any]:
        return await services(client).store.list_audit(user_id=marta_id)

    assert portal(client).call(trail) == []
    # A new account with the same address starts from nothing.
    again = signup(client, EMAIL, NAME)
    actions = [e["action"] for e in client.get("/api/me/audit", headers=auth(again)).json()["entries"]]
    assert "account.erase" not in actions
    assert "auth.signup" in actions


def test_the_audit_log_may_lose_information_but_never_gain_it(backend: Backend) -> None:
    client = backend.make()
    signup(client, EMAIL, NAME)
    if backend.schema is None:
        db = sqlite3.connect(services(client).settings.data_dir / "escenario.db")
        with closing(db):
            for sql in (
                "UPDATE audit_log SET actor_id = 'someone-else'",
                "UPDATE audit_log SET detail = '{\"forged\": 1}'",
                "UPDATE audit_log SET target_id = 'x'",
            ):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    db.execute(sql)
            db.execute("UPDATE audit_log SET actor_id = NULL, target_id = NULL, detail = '{}', ip = NULL")
            db.commit()
        return

    async def check() -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": backend.schema or ""})
        try:
            for sql in (
                "UPDATE audit_log SET actor_id = 'someone-else'",
                "UPDATE audit_log SET detail = '{\"forged\": 1}'",
            ):
                with pytest.raises(asyncpg.PostgresError, match="append-only"):
                    await conn.execute(sql)
            await conn.execute(
                "UPDATE audit_log SET actor_id = NULL, target_id = NULL, detail = '{}', ip = NULL"
            )
        finally:
            await conn.close()

    asyncio.run(check())


# the pure parts ------------------------------------------------------------------------------


def _session(sid: str) -> SessionRecord:
    return SessionRecord(id=sid, title="t", owner_id="u", created_at=0.0, updated_at=0.0)


def test_a_transfer_must_name_an_owned_session_and_a_member() -> None:
    owned = [_session("a"), _session("b")]
    members = {"a": {"u": Role.OWNER, "m": Role.VIEWER}, "b": {"u": Role.OWNER}}
    plan = plan_erasure(owned, {"a": "m"}, members)
    assert (plan.delete, plan.transfer) == (("b",), (("a", "m"),))
    assert plan_erasure(owned, {}, members).delete == ("a", "b")
    for bad in ({"c": "m"}, {"b": "m"}, {"a": "u"}):
        with pytest.raises(ValidationFailed):
            plan_erasure(owned, bad, members)


def test_anonymising_a_document_removes_the_name_from_its_state() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with doc.transaction():
        doc.get("tracks", type=pycrdt.Map)["t"] = pycrdt.Map(
            {"name": f"{NAME} vox", "live": pycrdt.Map({"userId": "u1", "participantName": NAME})}
        )
        doc.get("tracks", type=pycrdt.Map)["other"] = pycrdt.Map(
            {"name": "keys", "live": pycrdt.Map({"userId": "u2", "participantName": "Ana"})}
        )
    assert NAME.encode() in doc.get_update()
    assert anonymise_document(doc, "u1", NAME)
    state = doc.get_update()
    assert NAME.encode() not in state
    tracks = doc.get("tracks", type=pycrdt.Map).to_py()
    assert tracks["t"]["name"] == f"{ERASED_NAME} vox"
    assert tracks["other"]["live"] == {"userId": "u2", "participantName": "Ana"}
    assert not anonymise_document(doc, "u1", NAME)  # nothing left to change
