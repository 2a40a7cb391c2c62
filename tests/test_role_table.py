"""The HTTP role table (issue 7, docs/privacy.md): every session-scoped endpoint, every role.

Each route under `/api/sessions/{session_id}`, `/api/assets/{asset_id}` and `/api/jobs/{job_id}`
has one row here saying who may use it; `test_every_session_scoped_route_is_in_the_role_table`
walks the app's route table and fails for a route without a row, so a new endpoint cannot skip
it. Each row is tried as a stranger, another session's owner, viewer, editor and owner, each
on a fresh session (a permitted DELETE must not change the next try):

- non-members get 404 (the session, asset, job or peer does not exist for them), never a 2xx,
  and never see the session's, asset's, job's, peer's or members' ids in the body;
- members with the role succeed (2xx; a job start gets the 503 of a server without inference
  workers, past the role check), or get exactly the answer the row names;
- members without it get 403 `role_forbidden`, recorded in the session's audit log by the
  central handler (realtime/app.py), unless the row names another answer.

The sockets have their own table in tests/test_socket_roles.py.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.routing import Route
from starlette.testclient import TestClient

from persistence.ports import JobKind
from realtime.app import create_app
from realtime.audit import Action
from realtime.config import Settings
from realtime.transport.jam_webrtc import JamWebRtc

from .appclient import MakeClient, auth, services, signup
from .media.audio import sine, wav_bytes
from .test_assets import add_member, new_session, uploaded
from .test_jam_webrtc import client_offer
from .test_retention import user_id
from .test_socket_roles import on_app_loop

ROLES = ("stranger", "other_owner", "viewer", "editor", "owner")
EVERYONE = frozenset({"viewer", "editor", "owner"})
WRITERS = frozenset({"editor", "owner"})
OWNER = frozenset({"owner"})
SCOPED = ("/api/sessions/{session_id}", "/api/assets/{asset_id}", "/api/jobs/{job_id}")
ROLE_FORBIDDEN = (403, "role_forbidden")


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # the route's own template, so the guard test can compare them
    allowed: frozenset[str]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    upload: bool = False  # a multipart audio file
    sdp: bool = False  # an SDP offer (application/sdp)
    stream: bool = False  # an endless response: read the status and headers only
    setup: frozenset[str] = field(default_factory=frozenset)  # asset_deleted, session_deleted, job, peer
    member_answer: tuple[int, str] | None = None  # what an allowed member gets, when not a success
    refused: tuple[int, str] = ROLE_FORBIDDEN  # what a member without the role gets
    audited: bool = True  # whether that refusal is in the session's audit log


def rows(*rs: Row) -> list[Row]:
    return list(rs)


ROLE_TABLE = rows(
    # sessions
    Row("GET", "/api/sessions/{session_id}", EVERYONE),
    Row("PATCH", "/api/sessions/{session_id}", WRITERS, json={"title": "Renamed"}),
    Row("DELETE", "/api/sessions/{session_id}", OWNER),
    Row(
        "POST",
        "/api/sessions/{session_id}/restore",
        OWNER,
        setup=frozenset({"session_deleted"}),
        # A deleted session is nobody's to see but its owner's: other members get the
        # non-member's 404, so restoring cannot probe it either (not a role refusal: not audited).
        refused=(404, "session_not_found"),
        audited=False,
    ),
    Row(
        "POST", "/api/sessions/{session_id}/members", OWNER, json={"email": "x@example.com", "role": "editor"}
    ),
    # Every member sees who else is in the session (as GET /api/sessions/{id} already shows).
    Row("GET", "/api/sessions/{session_id}/members", EVERYONE),
    Row("PATCH", "/api/sessions/{session_id}/members/{user_id}", OWNER, json={"role": "editor"}),
    Row("DELETE", "/api/sessions/{session_id}/members/{user_id}", OWNER),
    Row("POST", "/api/sessions/{session_id}/invites", OWNER, json={"role": "viewer", "expires_in_s": 3600}),
    Row("GET", "/api/sessions/{session_id}/audit", OWNER),
    # public preview share links (issue 6): only the owner manages them
    Row("GET", "/api/sessions/{session_id}/share", OWNER),
    Row("POST", "/api/sessions/{session_id}/share", OWNER, json={"expires_in_s": 3600}),
    Row("DELETE", "/api/sessions/{session_id}/share", OWNER),
    # assets
    Row("GET", "/api/sessions/{session_id}/assets", EVERYONE),
    Row("POST", "/api/sessions/{session_id}/assets", WRITERS, upload=True),
    Row("GET", "/api/assets/{asset_id}", EVERYONE),
    Row("DELETE", "/api/assets/{asset_id}", WRITERS),
    Row("POST", "/api/assets/{asset_id}/restore", WRITERS, setup=frozenset({"asset_deleted"})),
    Row("GET", "/api/assets/{asset_id}/peaks", EVERYONE),
    Row("GET", "/api/assets/{asset_id}/audio", EVERYONE),
    # Members get past the role check to "this asset has no MIDI file" (the asset is audio);
    # non-members' 404 says the asset does not exist.
    Row("GET", "/api/assets/{asset_id}/midi", EVERYONE, member_answer=(404, "not_midi")),
    # renders and the live preview
    Row("GET", "/api/sessions/{session_id}/mixdown", EVERYONE, params={"end": "0.5"}),  # silence
    Row("GET", "/api/sessions/{session_id}/preview.ogg", EVERYONE, stream=True),
    # jobs (no inference workers here: a permitted start gets past the role check to a 503)
    Row("POST", "/api/assets/{asset_id}/transcribe", WRITERS, json={}),
    # No demucs weights here: writers get past the role check to the model check.
    Row(
        "POST",
        "/api/assets/{asset_id}/separate",
        WRITERS,
        json={"model": "htdemucs"},
        member_answer=(422, "model_not_installed"),
    ),
    Row("POST", "/api/assets/{asset_id}/master", WRITERS, json={}),
    Row("GET", "/api/sessions/{session_id}/jobs", EVERYONE, setup=frozenset({"job"})),
    Row("GET", "/api/jobs/{job_id}", EVERYONE, setup=frozenset({"job"})),
    Row("DELETE", "/api/jobs/{job_id}", WRITERS, setup=frozenset({"job"})),
    # the live jam over HTTP. Viewers may join over WebRTC too, receive-only (checked below).
    Row("GET", "/api/sessions/{session_id}/jam/stats", EVERYONE),
    Row("POST", "/api/sessions/{session_id}/jam/webrtc", EVERYONE, sdp=True),
    # Another member's peer: only the session's owner may read or end it; the others get a
    # role refusal with its own code, audited like every other.
    Row(
        "GET",
        "/api/sessions/{session_id}/jam/webrtc/{peer_id}",
        OWNER,
        setup=frozenset({"peer"}),
        refused=(403, "not_your_peer"),
        audited=True,
    ),
    Row(
        "DELETE",
        "/api/sessions/{session_id}/jam/webrtc/{peer_id}",
        OWNER,
        setup=frozenset({"peer"}),
        refused=(403, "not_your_peer"),
        audited=True,
    ),
)


def _route_keys() -> set[tuple[str, str]]:
    """(method, path) of every session-, asset- and job-scoped route the app serves."""
    settings = Settings(data_dir=Path("/nonexistent/unused"), web_dir=Path("/nonexistent/no-web"))
    keys: set[tuple[str, str]] = set()
    for route in create_app(settings).routes:  # building the app touches nothing on disk
        if isinstance(route, Route) and route.path.startswith(SCOPED):
            keys |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return keys


def test_every_session_scoped_route_is_in_the_role_table() -> None:
    served = _route_keys()
    table = {(row.method, row.path) for row in ROLE_TABLE}
    assert len(table) == len(ROLE_TABLE), "a route has two rows"
    assert served - table == set(), "routes without a row in ROLE_TABLE: add one (who may use it?)"
    assert table - served == set(), "rows for routes the app does not serve"
    assert ("GET", "/api/sessions/{session_id}") in served  # the walk sees the routes at all


# -- one try -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    text: str

    def code(self) -> str | None:
        try:
            body = json.loads(self.text)
        except ValueError:
            return None
        error = body.get("error") if isinstance(body, dict) else None
        return error.get("code") if isinstance(error, dict) else None


async def _status_of_stream(app: Any, path: str, token: str) -> Reply:
    """GET an endless response in-process: its status and first bytes, then hang up."""
    started = asyncio.Event()
    sent_request = False
    reply = Reply(0, "")

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            started.set()
        elif message["type"] == "http.response.body" and len(reply.text) < 4096:
            reply.text += message.get("body", b"").decode("latin-1")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 20)
    return reply


class Cast:
    """One app and one account per role (plus `extra`, a viewer whose id and peer rows name)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.tokens = {role: signup(client, f"{role}@example.com", role) for role in ROLES}
        self.ids = {role: user_id(client, token) for role, token in self.tokens.items()}
        self.extra = signup(client, "extra@example.com", "Extra")
        self.extra_id = user_id(client, self.extra)
        signup(client, "x@example.com", "X")  # the one members are added as
        self.other_sid = new_session(client, self.tokens["other_owner"])
        self.audio = wav_bytes(sine(seconds=0.2))
        self.offer = on_app_loop(client, client_offer)

    @property
    def rtc(self) -> JamWebRtc:
        rtc = self.client.app.state.jam_webrtc  # type: ignore[attr-defined]
        assert isinstance(rtc, JamWebRtc)
        return rtc

    def post_offer(self, sid: str, token: str) -> Any:
        return self.client.post(
            f"/api/sessions/{sid}/jam/webrtc",
            content=self.offer.encode(),
            headers={**auth(token), "content-type": "application/sdp"},
        )

    def session(self, row: Row) -> dict[str, str]:
        """A fresh session with its members, an asset and whatever the row needs; its ids."""
        client, owner = self.client, self.tokens["owner"]
        sid = new_session(client, owner)
        add_member(client, owner, sid, "viewer@example.com", "viewer")
        add_member(client, owner, sid, "editor@example.com", "editor")
        add_member(client, owner, sid, "extra@example.com", "viewer")
        aid = uploaded(client, owner, sid, self.audio)["asset_id"]
        ids = {"session_id": sid, "asset_id": aid, "user_id": self.extra_id, "job_id": "", "peer_id": ""}
        if "job" in row.setup:
            store = services(client).store
            job = on_app_loop(
                client,
                store.create_job,
                session_id=sid,
                kind=JobKind.TRANSCRIBE,
                params={},
                asset_id=aid,
                created_by=self.ids["owner"],
            )
            ids["job_id"] = job.id
        if "peer" in row.setup:
            r = self.post_offer(sid, self.extra)
            assert r.status_code == 201, r.text
            ids["peer_id"] = r.headers["location"].rsplit("/", 1)[-1]
        if "asset_deleted" in row.setup:
            assert client.delete(f"/api/assets/{aid}", headers=auth(owner)).status_code == 204
        if "session_deleted" in row.setup:
            assert client.delete(f"/api/sessions/{sid}", headers=auth(owner)).status_code == 204
        return ids

    def call(self, row: Row, role: str, ids: dict[str, str]) -> Reply:
        path = row.path.format(**ids)
        token = self.tokens[role]
        if row.stream:
            return on_app_loop(self.client, _status_of_stream, self.client.app, path, token)
        if row.sdp:
            r = self.post_offer(ids["session_id"], token)
            return Reply(r.status_code, r.text)
        kwargs: dict[str, Any] = {"headers": auth(token)}
        if row.json is not None:
            kwargs["json"] = row.json
        if row.params is not None:
            kwargs["params"] = row.params
        if row.upload:
            kwargs["files"] = {"file": ("t.wav", self.audio, "audio/wav")}
        r = self.client.request(row.method, path, **kwargs)
        return Reply(r.status_code, r.text)

    def close_peers(self, sid: str) -> None:
        for peer_id, peer in list(self.rtc.peers.items()):
            if peer.session_id == sid:
                on_app_loop(self.client, self.rtc.close, peer_id, "role table: next try")


def _check(cast: Cast, row: Row, role: str, ids: dict[str, str], r: Reply) -> None:
    what = f"{row.method} {row.path} as {role}: {r.status} {r.text[:200]}"
    sid = ids["session_id"]
    if role in ("stranger", "other_owner"):
        assert r.status == 404, what  # not a member: the session, asset, job or peer does not exist
        secrets = [v for k, v in ids.items() if v] + [cast.ids[x] for x in ("owner", "viewer", "editor")]
        assert not any(s in r.text for s in secrets), what  # no id of the session leaks
        return
    if role in row.allowed:
        if row.member_answer is not None:
            assert (r.status, r.code()) == row.member_answer, what
        else:
            assert 200 <= r.status < 300 or (r.status, r.code()) == (503, "no_inference_workers"), what
        if row.sdp:
            # Everyone may join the jam over WebRTC; only owners and editors send.
            engine = services(cast.client).jam.get(sid)
            assert engine is not None, what
            sends = {p.user_id: p.can_send for p in engine.participants}
            assert sends == {cast.ids[role]: role in WRITERS}, what
        return
    assert (r.status, r.code()) == row.refused, what
    # Read through the store: a deleted session's log is not served over HTTP.
    store = services(cast.client).store
    log = on_app_loop(cast.client, store.list_audit, session_id=sid, limit=1)
    if row.audited:
        denied = log[0]
        assert denied.action == Action.ROLE_DENIED, what
        assert denied.actor_id == cast.ids[role], what
        assert denied.detail == {"method": row.method, "path": row.path.format(**ids)}, what
    else:
        assert not log or log[0].action != Action.ROLE_DENIED, what


def test_every_http_endpoint_enforces_its_roles_and_audits_refusals(make_client: MakeClient) -> None:
    # No inference workers: a permitted job request gets past the role check to a 503.
    cast = Cast(make_client(inference_workers=0, jam_webrtc_connect_timeout_s=60.0))
    for row in ROLE_TABLE:
        for role in ROLES:
            ids = cast.session(row)
            reply = cast.call(row, role, ids)
            _check(cast, row, role, ids, reply)
            cast.close_peers(ids["session_id"])
