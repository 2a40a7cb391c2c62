"""Public preview share links (issue 6): the owner enables a signed link, people without an
account listen with it, and disabling or re-issuing it revokes every earlier link."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pycrdt
import pytest
from starlette.testclient import TestClient

from persistence.ports import ShareRecord
from realtime import errors
from realtime.api.preview import while_allowed
from realtime.audit import Action
from realtime.export import signing_key
from realtime.share import KEY_FILE, ShareClaims, ShareLinkGone, check_link, make_token, read_token

from .appclient import MakeClient, auth, services, signup
from .harness import PyDocClient, ServerProcess
from .test_assets import add_member, new_session
from .test_preview import decode, dominant_hz, sine_wav

KEY = b"k" * 32


def _share(version: int = 3, *, enabled: bool = True) -> ShareRecord:
    return ShareRecord("s1", enabled, version, 2_000_000_000.0, "u1", 1.0)


# -- the token (pure) -------------------------------------------------------------------


def test_a_token_round_trips_and_any_change_to_it_is_refused() -> None:
    claims = ShareClaims("s1", 3, 2_000_000_000)
    token = make_token(KEY, claims)
    assert read_token(KEY, token) == claims
    sid, version, exp, sig = token.split(".")
    forged = [
        f"s2.{version}.{exp}.{sig}",  # another session
        f"{sid}.4.{exp}.{sig}",  # another version
        f"{sid}.{version}.{int(exp) + 1}.{sig}",  # a later expiry
        f"{sid}.{version}.{exp}.{sig[:-1]}{'0' if sig[-1] != '0' else '1'}",
        f"{sid}.{version}.{exp}",
        "",
        "a.b.c.d",
        token + "x" * 300,
    ]
    for bad in forged:
        with pytest.raises(errors.Forbidden) as info:
            read_token(KEY, bad)
        assert info.value.code == "invalid_share_link", bad
    with pytest.raises(errors.Forbidden):
        read_token(b"another key".ljust(32, b"!"), token)


def test_a_link_is_current_only_while_enabled_at_its_version_and_unexpired() -> None:
    claims = ShareClaims("s1", 3, 2_000_000_000)
    check_link(claims, _share(3), now=1_999_999_999)
    for share, now, code in [
        (None, 0.0, "share_link_revoked"),
        (_share(3, enabled=False), 0.0, "share_link_revoked"),
        (_share(4), 0.0, "share_link_revoked"),  # re-issued since
        (_share(3), 2_000_000_000.0, "share_link_expired"),
    ]:
        with pytest.raises(ShareLinkGone) as info:
            check_link(claims, share, now=now)
        assert (info.value.status, info.value.code) == (410, code)


async def test_an_open_stream_ends_once_its_link_is_no_longer_allowed() -> None:
    now = [0.0]
    allowed = [True]
    closed = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for i in range(100):
                now[0] = float(i)
                yield bytes([i])
        finally:
            closed.append(True)

    async def still() -> bool:
        return allowed[0]

    got = []
    async for chunk in while_allowed(chunks(), still, every_s=5.0, clock=lambda: now[0]):
        got.append(chunk[0])
        if chunk[0] == 7:
            allowed[0] = False
    # Checked at t=5 (allowed) and t=10 (refused): chunk 10 is never sent, the source is closed.
    assert got == list(range(10))
    await asyncio.sleep(0)
    assert closed == [True]


# -- the endpoints (in process) ---------------------------------------------------------


def _shared(client: TestClient, owner: str, sid: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/api/sessions/{sid}/share", json=body or None, headers=auth(owner))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def _code(r: Any) -> tuple[int, str]:  # TestClient's and httpx's responses
    return r.status_code, r.json()["error"]["code"]


def test_only_the_owner_manages_the_link_and_each_change_is_audited(make_client: MakeClient) -> None:
    client = make_client()
    owner = signup(client, "o@example.com")
    editor = signup(client, "e@example.com")
    viewer = signup(client, "v@example.com")
    sid = new_session(client, owner)
    add_member(client, owner, sid, "e@example.com", "editor")
    add_member(client, owner, sid, "v@example.com", "viewer")
    assert client.get(f"/api/sessions/{sid}/share", headers=auth(owner)).json() == {"enabled": False}
    for token in (editor, viewer):
        for method in ("GET", "POST", "DELETE"):
            r = client.request(method, f"/api/sessions/{sid}/share", headers=auth(token))
            assert _code(r) == (403, "role_forbidden"), (method, r.text)

    link = _shared(client, owner, sid, expires_in_s=3600)
    assert link["enabled"] is True
    assert link["url"].endswith(link["listen_path"])
    assert link["listen_path"] == f"/listen/{link['token']}"
    assert time.time() + 3590 < link["expires_at"] <= time.time() + 3600
    assert client.get(f"/api/sessions/{sid}/share", headers=auth(owner)).json() == link  # the same link
    r = client.delete(f"/api/sessions/{sid}/share", headers=auth(owner))
    assert r.status_code == 200
    assert r.json() == {"enabled": False}

    for bad in ({"expires_in_s": 10}, {"expires_in_s": "1h"}, {"expires_in_s": True}, {"ttl": 60}):
        r = client.post(f"/api/sessions/{sid}/share", json=bad, headers=auth(owner))
        assert _code(r) == (422, "validation_error"), bad

    r = client.get(f"/api/sessions/{sid}/audit", headers=auth(owner))
    actions = [e["action"] for e in r.json()["entries"]]
    assert actions.count(Action.SHARE_ENABLED) == 1
    assert actions.count(Action.SHARE_DISABLED) == 1
    assert actions.count(Action.ROLE_DENIED) == 6


def test_revoked_reissued_expired_and_tampered_links_are_refused(make_client: MakeClient) -> None:
    client = make_client()
    owner = signup(client)
    sid = new_session(client, owner)
    first = _shared(client, owner, sid)
    info = client.get(f"/api/share/{first['token']}")
    assert info.status_code == 200, info.text
    assert info.json()["session_id"] == sid
    assert info.json()["title"] == "Assets"
    assert info.json()["preview_url"] == f"/api/sessions/{sid}/preview.ogg?share={first['token']}"
    page = client.get(first["listen_path"])
    assert page.status_code == 200
    assert "<audio" in page.text
    assert "<script" not in page.text

    second = _shared(client, owner, sid)  # re-issuing revokes the first link
    assert second["token"] != first["token"]
    assert _code(client.get(f"/api/share/{first['token']}")) == (410, "share_link_revoked")
    assert _code(client.get(f"/api/sessions/{sid}/preview.ogg?share={first['token']}")) == (
        410,
        "share_link_revoked",
    )
    gone = client.get(first["listen_path"])
    assert gone.status_code == 410
    assert "turned off by the session" in gone.text

    # A link signed by this server for the current version, but past its expiry.
    key = signing_key(services(client).settings.data_dir, KEY_FILE)
    version = int(second["token"].split(".")[1])
    expired = make_token(key, ShareClaims(sid, version, int(time.time()) - 1))
    assert _code(client.get(f"/api/share/{expired}")) == (410, "share_link_expired")
    assert _code(client.get(f"/api/sessions/{sid}/preview.ogg?share={expired}")) == (
        410,
        "share_link_expired",
    )

    sid_, ver, exp, sig = second["token"].split(".")
    for forged in (f"{sid_}.{ver}.{int(exp) + 86400}.{sig}", f"{sid_}.{ver}.{exp}.{'0' * 64}", "x"):
        assert _code(client.get(f"/api/share/{forged}")) == (403, "invalid_share_link")
        r = client.get(f"/api/sessions/{sid}/preview.ogg?share={forged}")
        assert _code(r) == (403, "invalid_share_link")
    assert client.get(f"/listen/{'0' * 20}").status_code == 403

    # A valid link plays its own session only, and nothing once sharing is off.
    other = new_session(client, owner)
    r = client.get(f"/api/sessions/{other}/preview.ogg?share={second['token']}")
    assert _code(r) == (403, "invalid_share_link")
    client.delete(f"/api/sessions/{sid}/share", headers=auth(owner))
    assert _code(client.get(f"/api/share/{second['token']}")) == (410, "share_link_revoked")
    # Turning it back on makes a new link; the old ones stay dead.
    third = _shared(client, owner, sid)
    assert client.get(f"/api/share/{third['token']}").status_code == 200
    assert _code(client.get(f"/api/share/{second['token']}")) == (410, "share_link_revoked")


# -- a listener without an account, end to end (SQLite and PostgreSQL) ------------------


def _play_a_tone(server: ServerProcess, token: str, sid: str) -> PyDocClient:
    r = server.api(
        "POST",
        f"/api/sessions/{sid}/assets",
        token=token,
        files={"file": ("tone.wav", sine_wav(1000, 8.0), "audio/wav")},
    )
    assert r.status_code == 201, r.text
    client = PyDocClient(server.ws_base, sid, token)
    with client.doc.transaction():
        track = pycrdt.Map(
            {"name": "Tone", "kind": "audio", "gainDb": 0.0, "pan": 0.0, "clips": pycrdt.Map()}
        )
        client.doc.get("tracks", type=pycrdt.Map)["t1"] = track
        clips = track["clips"]
        assert isinstance(clips, pycrdt.Map)
        clips["c1"] = pycrdt.Map(
            {"assetId": r.json()["asset_id"], "start": 0.0, "offset": 0.0, "length": 8.0}
        )
        client.doc.get("trackOrder", type=pycrdt.Array).append("t1")
        transport: pycrdt.Map[Any] = client.doc.get("session", type=pycrdt.Map)["transport"]
        transport["position"] = 0.0
        transport["startedAt"] = time.time() * 1000
        transport["playing"] = True
    client.send_changes()
    return client


def test_a_listener_without_an_account_hears_the_mix_until_the_link_is_revoked(
    any_server: ServerProcess,
) -> None:
    server = any_server
    owner = server.signup("o@example.com")
    sid = server.create_session(owner)
    doc_client = _play_a_tone(server, owner, sid)
    try:
        r = server.api("POST", f"/api/sessions/{sid}/share", token=owner, json={"expires_in_s": 600})
        assert r.status_code == 201, r.text
        url = f"{server.base_url}/api/sessions/{sid}/preview.ogg?share={r.json()['token']}"

        received = bytearray()
        ended = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", url, timeout=20) as resp:  # no sign-in of any kind
                assert resp.status_code == 200
                assert resp.headers["content-type"] == "audio/ogg"
                for chunk in resp.iter_bytes():
                    received.extend(chunk)
            ended.set()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        deadline = time.monotonic() + 20
        while len(received) < 20_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        samples = decode(bytes(received))
        assert samples.shape[1] > 24000
        assert abs(dominant_hz(samples[0, -24000:]) - 1000) < 5

        assert server.api("DELETE", f"/api/sessions/{sid}/share", token=owner).status_code == 200
        # The open stream ends at its next check (every 5 s); a new request is refused.
        assert ended.wait(12), "the revoked link's stream kept playing"
        r = httpx.get(url, timeout=10)
        assert r.status_code == 410
        assert r.json()["error"]["code"] == "share_link_revoked"
    finally:
        doc_client.close()
