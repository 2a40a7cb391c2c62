"""Interop with the real npm `yjs@13.6` + `y-websocket@3` clients, against a real server process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import NodeClient, ServerProcess

pytestmark = pytest.mark.interop

MakeClient = Callable[..., NodeClient]


def owner_and_session(server: ServerProcess) -> tuple[str, str]:
    token = server.signup("owner@example.com", "Owner")
    return token, server.create_session(token, "Interop")


def test_two_clients_converge(server: ServerProcess, node_client: MakeClient) -> None:
    token, sid = owner_and_session(server)
    a = node_client(server.ws_base, sid, token, "A")
    b = node_client(server.ws_base, sid, token, "B")
    a.synced()
    b.synced()
    assert a.call("get")["session"]["title"] == "Interop"  # written by the server at creation
    a.call("addTrack", id="t1", name="Drums")
    b.eventually("get", lambda d: d["tracks"].get("t1", {}).get("name") == "Drums")
    b.call("renameTrack", id="t1", name="Kit")
    b.call("set", map="session", key="bpm", value=128)
    a.eventually("get", lambda d: d["tracks"]["t1"]["name"] == "Kit" and d["session"]["bpm"] == 128)
    assert a.call("get") == b.call("get")


def test_python_side_edit_reaches_js(server: ServerProcess, node_client: MakeClient) -> None:
    token, sid = owner_and_session(server)
    a = node_client(server.ws_base, sid, token)
    a.synced()
    r = server.api("PATCH", f"/api/sessions/{sid}", token=token, json={"title": "Renamed live"})
    assert r.status_code == 200, r.text
    a.eventually("get", lambda d: d["session"]["title"] == "Renamed live")


def test_offline_edits_merge_on_reconnect(server: ServerProcess, node_client: MakeClient) -> None:
    token, sid = owner_and_session(server)
    a = node_client(server.ws_base, sid, token, "A")
    b = node_client(server.ws_base, sid, token, "B")
    a.synced()
    b.synced()
    a.call("disconnect")
    a.wait_event(lambda e: e.get("event") == "status" and e.get("status") == "disconnected")
    a.call("addTrack", id="offline", name="Written offline")
    b.call("addTrack", id="online", name="Written online")
    b.eventually("get", lambda d: "online" in d["tracks"])
    a.call("connect")
    want = {"offline", "online"}
    a.eventually("get", lambda d: set(d["tracks"]) == want and len(d["trackOrder"]) == 2)
    b.eventually("get", lambda d: set(d["tracks"]) == want and len(d["trackOrder"]) == 2)
    assert a.call("get") == b.call("get")


def test_awareness_appears_and_disappears_when_a_client_is_killed(
    server: ServerProcess, node_client: MakeClient
) -> None:
    token, sid = owner_and_session(server)
    a = node_client(server.ws_base, sid, token, "Alice")
    b = node_client(server.ws_base, sid, token, "Bob")
    a.synced()
    b.synced()
    a_id = a.call("clientId")
    b.eventually("states", lambda s: any(x["id"] == a_id and x["user"]["name"] == "Alice" for x in s))
    a.kill()  # SIGKILL: no goodbye message; the server must remove Alice's presence itself
    b.eventually("states", lambda s: all(x["id"] != a_id for x in s), timeout=10)


def test_viewer_edits_never_reach_others(server: ServerProcess, node_client: MakeClient) -> None:
    token, sid = owner_and_session(server)
    server.signup("viewer@example.com", "Vera")
    server.add_member(token, sid, "viewer@example.com", "viewer")
    vtoken = server.api(
        "POST", "/api/auth/login", json={"email": "viewer@example.com", "password": "correct horse"}
    ).json()["token"]
    owner = node_client(server.ws_base, sid, token, "Owner")
    viewer = node_client(server.ws_base, sid, vtoken, "Viewer")
    owner.synced()
    viewer.synced()
    viewer.call("set", map="session", key="title", value="HACKED")
    viewer.call("addTrack", id="evil", name="Viewer track")
    # An edit sent after the viewer's, from the owner: once it is everywhere, the viewer's
    # earlier edits would have been too, if the server had let them through.
    owner.call("set", map="session", key="bpm", value=99)
    viewer.eventually("get", lambda d: d["session"].get("bpm") == 99)
    fresh = node_client(server.ws_base, sid, token, "Fresh")
    fresh.synced()
    for doc in (owner.call("get"), fresh.call("get")):
        assert doc["session"]["title"] == "Interop"
        assert "evil" not in doc["tracks"]


def test_bad_token_gets_4401_and_the_provider_stops(server: ServerProcess, node_client: MakeClient) -> None:
    _, sid = owner_and_session(server)
    c = node_client(server.ws_base, sid, "not-a-real-token")
    close = c.wait_event(lambda e: e.get("event") == "connection-close")
    assert close["code"] == 4401
    c.wait_event(lambda e: e.get("event") == "closed")
    assert c.call("shouldConnect") is False
    closes = [e for e in c.events if e.get("event") == "connection-close"]
    assert len(closes) == 1


def test_non_member_gets_4403(server: ServerProcess, node_client: MakeClient) -> None:
    _, sid = owner_and_session(server)
    stranger = server.signup("stranger@example.com")
    c = node_client(server.ws_base, sid, stranger)
    close = c.wait_event(lambda e: e.get("event") == "connection-close")
    assert close["code"] == 4403
    c.wait_event(lambda e: e.get("event") == "closed")


def test_restart_and_reload_without_duplicated_content(
    server: ServerProcess, node_client: MakeClient
) -> None:
    token, sid = owner_and_session(server)
    a = node_client(server.ws_base, sid, token, "A")
    a.synced()
    for i in range(5):
        a.call("addTrack", id=f"t{i}", name=f"Track {i}")
    b = node_client(server.ws_base, sid, token, "B")
    b.eventually("get", lambda d: len(d["trackOrder"]) == 5)
    assert server.stop()  # graceful: flush, compact, close sockets
    seen = len(a.events)
    server.restart()
    # A reconnects by itself and re-syncs its full local state; nothing may double.
    a.wait_event(lambda e: e.get("event") == "sync" and e.get("synced") is True, timeout=15, since=seen)
    c = node_client(server.ws_base, sid, token, "C")
    c.synced()
    a.call("addTrack", id="after", name="After restart")
    c.eventually("get", lambda d: "after" in d["tracks"])
    doc = c.call("get")
    assert doc["trackOrder"] == [f"t{i}" for i in range(5)] + ["after"]
    assert a.call("get") == doc


def test_sigkill_loses_nothing_a_client_received(any_server: ServerProcess, node_client: MakeClient) -> None:
    server = any_server
    token, sid = owner_and_session(server)
    writer = node_client(server.ws_base, sid, token, "Writer")
    reader = node_client(server.ws_base, sid, token, "Reader")
    writer.synced()
    reader.synced()
    n = 200
    for i in range(n):
        writer.call("set", map="session", key=f"k{i}", value=i)
    reader.eventually("get", lambda d: all(f"k{i}" in d["session"] for i in range(n)), timeout=20)
    writer.kill()
    reader.kill()
    server.kill()
    server.restart()
    fresh = node_client(server.ws_base, sid, token, "Fresh")
    fresh.synced()
    doc = fresh.call("get")
    assert [doc["session"].get(f"k{i}") for i in range(n)] == list(range(n))
