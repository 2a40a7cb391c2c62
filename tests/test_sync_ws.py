"""`/sync/{id}` in-process: auth close codes, limits and malformed input."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from realtime.app import create_app
from realtime.config import Settings
from realtime.session import protocol as p


def make_client(tmp_path: Path, **overrides: Any) -> TestClient:
    settings = Settings(data_dir=tmp_path / "data", web_dir=tmp_path / "no-web").replace(**overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


def signup(client: TestClient, email: str) -> str:
    r = client.post("/api/auth/signup", json={"email": email, "password": "correct horse", "name": email[:3]})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def new_session(client: TestClient, token: str) -> str:
    r = client.post("/api/sessions", json={"title": "T"}, headers={"authorization": f"Bearer {token}"})
    return str(r.json()["id"])


def update_frame(key: str, value: object) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    doc.get("session", type=pycrdt.Map)[key] = value
    return p.update_message(ups[0])


def handshake(ws: Any) -> None:
    """Read the server's opening SyncStep1, send ours, read the SyncStep2 reply."""
    assert isinstance(p.decode_message(ws.receive_bytes()), p.SyncStep1)
    ws.send_bytes(p.sync_step1_message(b"\x00"))
    assert isinstance(p.decode_message(ws.receive_bytes()), p.SyncStep2)


def drain_until_closed(ws: Any) -> None:
    while True:
        ws.receive_bytes()


def expect_close(ws: Any, code: int) -> None:
    with pytest.raises(WebSocketDisconnect) as info:
        drain_until_closed(ws)
    assert info.value.code == code, info.value.reason


def test_no_token_closes_4401(client: TestClient) -> None:
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    with client.websocket_connect(f"/sync/{sid}") as ws:
        expect_close(ws, 4401)
    with client.websocket_connect(f"/sync/{sid}?token=garbage") as ws:
        expect_close(ws, 4401)


def test_non_member_and_unknown_session_close_4403(client: TestClient) -> None:
    token = signup(client, "o@example.com")
    other = signup(client, "x@example.com")
    sid = new_session(client, token)
    with client.websocket_connect(f"/sync/{sid}?token={other}") as ws:
        expect_close(ws, 4403)
    with client.websocket_connect(f"/sync/nope?token={token}") as ws:
        expect_close(ws, 4403)


def test_stale_epoch_is_told_to_reload(client: TestClient) -> None:
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    with client.websocket_connect(f"/sync/{sid}?token={token}&epoch=7") as ws:
        expect_close(ws, 4410)
    with client.websocket_connect(f"/sync/{sid}?token={token}&epoch=0") as ws:
        handshake(ws)


def test_edit_reaches_the_other_connection_but_not_the_sender(client: TestClient) -> None:
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    with (
        client.websocket_connect(f"/sync/{sid}?token={token}") as a,
        client.websocket_connect(f"/sync/{sid}?token={token}") as b,
    ):
        handshake(a)
        handshake(b)
        frame = update_frame("bpm", 140)
        a.send_bytes(frame)
        got = p.decode_message(b.receive_bytes())
        assert isinstance(got, p.SyncUpdate)
        # The sender gets no echo: the next thing it hears is the answer to its query.
        a.send_bytes(b"\x03")
        assert isinstance(p.decode_message(a.receive_bytes()), p.AwarenessMessage)


def test_text_frame_closes_1003(client: TestClient) -> None:
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
        handshake(ws)
        ws.send_text("hello")
        expect_close(ws, 1003)


def test_oversized_frame_closes_1009(tmp_path: Path) -> None:
    with make_client(tmp_path, max_message_bytes=1024) as client:
        token = signup(client, "o@example.com")
        sid = new_session(client, token)
        with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
            handshake(ws)
            ws.send_bytes(update_frame("big", "x" * 2000))
            expect_close(ws, 1009)


def test_message_rate_limit_closes_1008(tmp_path: Path) -> None:
    with make_client(tmp_path, messages_per_second=1.0, message_burst=5) as client:
        token = signup(client, "o@example.com")
        sid = new_session(client, token)
        with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
            handshake(ws)  # one message used
            for _ in range(10):
                ws.send_bytes(b"\x03")
            expect_close(ws, 1008)


def test_connect_rate_limit_per_ip_closes_1013(tmp_path: Path) -> None:
    with make_client(tmp_path, connects_per_minute_per_ip=3) as client:
        token = signup(client, "o@example.com")
        sid = new_session(client, token)
        for _ in range(3):
            with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
                handshake(ws)
        with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
            expect_close(ws, 1013)


def test_default_connect_limit_admits_a_classroom_behind_one_nat() -> None:
    assert Settings().connects_per_minute_per_ip >= 300


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x02\x05\x01\x02\x03\x04\x05",  # an update pycrdt cannot decode
        b"\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # bad varint
        b"\x01\x0c\x01\x01\x01\x07not json",  # awareness with invalid JSON
        p.awareness_message(p.encode_awareness([p.AwarenessEntry(1, 1, '{"a":"' + "x" * 70_000 + '"}')])),
    ],
)
def test_malformed_frame_closes_only_that_connection(client: TestClient, frame: bytes) -> None:
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    with (
        client.websocket_connect(f"/sync/{sid}?token={token}") as bad,
        client.websocket_connect(f"/sync/{sid}?token={token}") as good,
    ):
        handshake(bad)
        handshake(good)
        bad.send_bytes(frame)
        expect_close(bad, 1007)
        good.send_bytes(update_frame("still", "alive"))
        good.send_bytes(p.sync_step1_message(b"\x00"))
        reply = p.decode_message(good.receive_bytes())
        assert isinstance(reply, p.SyncStep2)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(reply.update)
        assert doc.get("session", type=pycrdt.Map)["still"] == "alive"


def answer_or_close_code(ws: Any) -> str | int:
    try:
        reply = p.decode_message(ws.receive_bytes())
        while not isinstance(reply, p.AwarenessMessage):
            reply = p.decode_message(ws.receive_bytes())
    except WebSocketDisconnect as exc:
        return int(exc.code)
    return "answered"


def test_random_frames_never_break_the_room(client: TestClient) -> None:
    rng = random.Random(440)
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    outcomes: list[str | int] = []
    prefixes = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x03"]
    for _ in range(40):
        with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
            handshake(ws)
            for _ in range(5):
                junk = rng.choice(prefixes) + rng.randbytes(rng.randint(0, 64))
                ws.send_bytes(junk)
            ws.send_bytes(b"\x03")  # still open? then this is answered, else it was closed
            outcomes.append(answer_or_close_code(ws))
    assert set(outcomes) <= {"answered", 1007}
    assert "answered" in outcomes
    assert 1007 in outcomes
    with client.websocket_connect(f"/sync/{sid}?token={token}") as ws:
        handshake(ws)
        ws.send_bytes(update_frame("after", "fuzz"))
        ws.send_bytes(p.sync_step1_message(b"\x00"))
        reply = p.decode_message(ws.receive_bytes())
        assert isinstance(reply, p.SyncStep2)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(reply.update)
        assert doc.get("session", type=pycrdt.Map)["after"] == "fuzz"
        assert doc.get("session", type=pycrdt.Map)["title"] == "T"
    assert client.get("/healthz").status_code == 200


def test_cookie_auth_works_same_origin_only(client: TestClient) -> None:
    token = signup(client, "o@example.com")
    sid = new_session(client, token)
    r = client.post("/api/auth/login", json={"email": "o@example.com", "password": "correct horse"})
    assert r.status_code == 200
    with client.websocket_connect(f"/sync/{sid}", headers={"origin": "http://testserver"}) as ws:
        handshake(ws)
    # A page on another site can make the browser attach the cookie; it must not count.
    with client.websocket_connect(f"/sync/{sid}", headers={"origin": "https://evil.example"}) as ws:
        expect_close(ws, 4401)


def test_removed_member_is_disconnected_with_4403(client: TestClient) -> None:
    owner = signup(client, "o@example.com")
    member = signup(client, "m@example.com")
    sid = new_session(client, owner)
    hdr = {"authorization": f"Bearer {owner}"}
    client.post(
        f"/api/sessions/{sid}/members", json={"email": "m@example.com", "role": "editor"}, headers=hdr
    )
    member_id = client.get("/api/me", headers={"authorization": f"Bearer {member}"}).json()["user"]["id"]
    with client.websocket_connect(f"/sync/{sid}?token={member}") as ws:
        handshake(ws)
        assert client.delete(f"/api/sessions/{sid}/members/{member_id}", headers=hdr).status_code == 204
        expect_close(ws, 4403)


def test_deleted_session_closes_open_sockets_with_4404(client: TestClient) -> None:
    owner = signup(client, "o@example.com")
    sid = new_session(client, owner)
    with client.websocket_connect(f"/sync/{sid}?token={owner}") as ws:
        handshake(ws)
        assert (
            client.delete(f"/api/sessions/{sid}", headers={"authorization": f"Bearer {owner}"}).status_code
            == 204
        )
        expect_close(ws, 4404)
