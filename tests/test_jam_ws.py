"""`/jam/{session}` end to end: a real server process, real WebSocket clients streaming Opus in real time."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from realtime.jam.frames import CODEC_OPUS, parse_frame
from realtime.jam.opus import OpusEncoder

from .appclient import auth, signup
from .harness import ServerProcess, wait_until
from .jam.test_engine import BLOCK, PERIOD, RATE, Player, decode_stream, tone_level

FREQS = (500.0, 800.0, 1300.0)


@pytest.fixture(scope="module")
def jam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("jam")) / "data",
        env={"ESCENARIO_JAM_FADE_IN_S": "0", "ESCENARIO_CONNECTS_PER_MINUTE_PER_IP": "10000"},
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


_emails = iter(range(1_000_000))


def band(srv: ServerProcess, players: int, viewers: int = 0) -> tuple[str, list[str], list[str]]:
    """A new session: an owner, `players - 1` editors, `viewers` viewers. (sid, tokens, viewer tokens)"""
    n = next(_emails)
    owner = srv.signup(f"owner{n}@example.com", name="Owner")
    sid = srv.create_session(owner)
    tokens = [owner]
    for i in range(1, players):
        email = f"p{n}-{i}@example.com"
        tokens.append(srv.signup(email, name=f"Player {i}"))
        srv.add_member(owner, sid, email, "editor")
    viewer_tokens = []
    for i in range(viewers):
        email = f"v{n}-{i}@example.com"
        viewer_tokens.append(srv.signup(email, name=f"Viewer {i}"))
        srv.add_member(owner, sid, email, "viewer")
    return sid, tokens, viewer_tokens


class JamClient:
    """One WebSocket participant: a reader thread keeps every frame (with its arrival time) and message."""

    def __init__(self, srv: ServerProcess, sid: str, token: str) -> None:
        # compression=None: a client that negotiates no extension gets the server's direct path.
        self.ws: ClientConnection = connect(
            f"ws://127.0.0.1:{srv.port}/jam/{sid}?token={token}",
            compression=None,
            open_timeout=20,
            legacy=True,
        )
        self.frames: list[tuple[float, bytes]] = []
        self.controls: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.welcome = self.wait_control(lambda m: m["type"] == "welcome")
        self.pid: str = self.welcome["participantId"]

    def _read(self) -> None:
        try:
            while True:
                msg = self.ws.recv()
                with self._cond:
                    if isinstance(msg, bytes):
                        self.frames.append((time.monotonic(), msg))
                    else:
                        self.controls.append(json.loads(msg))
                    self._cond.notify_all()
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code = exc.rcvd.code
                self.close_reason = exc.rcvd.reason
        except OSError:
            pass
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def wait_control(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.controls:
                    if pred(m):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed.is_set():
                    raise AssertionError(f"no such control message; saw {self.controls[-5:]}")
                self._cond.wait(remaining)

    def send_json(self, obj: dict[str, Any]) -> None:
        self.ws.send(json.dumps(obj))

    def send(self, data: bytes) -> bool:
        try:
            self.ws.send(data)
            return True
        except (ConnectionClosed, OSError):
            return False

    def wait_closed(self, timeout: float = 10.0) -> int | None:
        assert self.closed.wait(timeout), "the server did not close the connection"
        return self.close_code

    def frames_since(self, t: float) -> list[bytes]:
        with self._cond:
            return [f for at, f in self.frames if at >= t]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


@contextlib.contextmanager
def clients(srv: ServerProcess, sid: str, tokens: list[str]) -> Iterator[list[JamClient]]:
    opened: list[JamClient] = []
    try:
        for token in tokens:
            opened.append(JamClient(srv, sid, token))
        yield opened
    finally:
        for c in opened:
            c.close()


def stream(
    pairs: list[tuple[JamClient, Player]],
    seconds: float,
    *,
    loss: float = 0.0,
    rng: random.Random | None = None,
    sent_at: dict[int, float] | None = None,
) -> None:
    """Send every player's next frame each block period, at real-time pace (absolute schedule)."""
    t0 = time.monotonic()
    for k in range(round(seconds / PERIOD)):
        for client, player in pairs:
            frame = player.frame()
            if sent_at is not None:
                sent_at[player.seq - 1] = time.monotonic()
            if loss and rng is not None and rng.random() < loss:
                continue
            client.send(frame)
        delay = t0 + (k + 1) * PERIOD - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def heard(client: JamClient, since: float) -> NDArray[np.float32]:
    return decode_stream(client.frames_since(since))


def jam_stats(srv: ServerProcess, sid: str, token: str) -> dict[str, Any]:
    r = srv.api("GET", f"/api/sessions/{sid}/jam/stats", token=token)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_three_players_hear_the_others_and_themselves_only_when_monitoring(jam_server: ServerProcess) -> None:
    sid, tokens, _ = band(jam_server, 3)
    with clients(jam_server, sid, tokens) as cs:
        pairs = [(c, Player(f)) for c, f in zip(cs, FREQS, strict=True)]
        for c in cs:
            c.send_json({"type": "monitor", "self": False})
        stream(pairs, 1.0)
        mark = time.monotonic()
        stream(pairs, 1.0)
        for i, c in enumerate(cs):
            audio = heard(c, mark)
            assert len(audio) > 0.7 * RATE
            for j, f in enumerate(FREQS):
                level = tone_level(audio, f)
                if i == j:
                    assert level < 0.01, (i, level)
                else:
                    assert level > 0.08, (i, j, level)
        for c in cs:
            c.send_json({"type": "monitor", "self": True})
        stream(pairs, 0.5)
        mark = time.monotonic()
        stream(pairs, 1.0)
        for i, c in enumerate(cs):
            assert tone_level(heard(c, mark), FREQS[i]) > 0.08
        stats = jam_stats(jam_server, sid, tokens[0])
        assert len(stats["participants"]) == 3
        assert stats["engine"]["ticks"] > 0


def test_viewer_receives_but_cannot_inject_audio(jam_server: ServerProcess) -> None:
    sid, tokens, viewers = band(jam_server, 1, viewers=1)
    with clients(jam_server, sid, [tokens[0], viewers[0]]) as (player, viewer):
        assert viewer.welcome["canSend"] is False
        stream([(player, Player(700))], 0.6)
        wait_until(lambda: len(viewer.frames) > 100, what="audio at the viewer")
        assert tone_level(decode_stream([f for _, f in viewer.frames[-100:]]), 700) > 0.08
        viewer.send(Player(300).frame())
        assert viewer.wait_closed() == 1008
        assert viewer.close_reason.startswith("not_sender: viewers cannot send audio")
        assert viewer.controls[-1]["type"] == "error"
        before = len(player.frames)
        stream([(player, Player(700))], 0.3)
        assert len(player.frames) > before + 50
        assert not player.closed.is_set()


def test_bad_input_closes_only_that_connection(jam_server: ServerProcess) -> None:
    sid, tokens, _ = band(jam_server, 5)
    with clients(jam_server, sid, tokens) as (good, listener, garbage, wrong_codec, bad_json):
        pairs = [(good, Player(600))]
        stream(pairs, 0.4)
        garbage.send(b"\x01\x01\x02\x00" + b"\x00" * 4)  # a truncated header
        assert garbage.wait_closed() == 1007
        assert garbage.close_reason.startswith("too_short: ")
        assert garbage.controls[-1] == {
            "type": "error",
            "code": "too_short",
            "message": garbage.close_reason[11:],
        }
        frame = bytearray(Player(600).frame())
        frame[1] = 9  # codec 9
        wrong_codec.send(bytes(frame))
        assert wrong_codec.wait_closed() == 1003
        assert wrong_codec.close_reason.startswith("unknown_codec: ")
        bad_json.ws.send("{not json")
        assert bad_json.wait_closed() == 1007
        assert bad_json.close_reason.startswith("not_json: ")
        mark = time.monotonic()
        stream(pairs, 0.6)
        assert not good.closed.is_set()
        assert not listener.closed.is_set()
        assert tone_level(heard(listener, mark), 600) > 0.08
        names = listener.wait_control(lambda m: m["type"] == "participants" and len(m["participants"]) == 2)[
            "participants"
        ]
        assert {p["id"] for p in names} == {good.pid, listener.pid}


def test_a_peer_that_vanishes_is_removed_and_the_others_continue(jam_server: ServerProcess) -> None:
    sid, tokens, _ = band(jam_server, 3)
    with clients(jam_server, sid, tokens) as (a, b, gone):
        pairs = [(a, Player(500)), (b, Player(800)), (gone, Player(1300))]
        stream(pairs, 0.5)
        # No close frame, no FIN handshake: the TCP connection is reset under the client's feet.
        sock = gone.ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        stream(pairs[:2], 0.3)
        wait_until(
            lambda: len(jam_stats(jam_server, sid, tokens[0])["participants"]) == 2,
            what="the vanished peer removed",
        )
        mark = time.monotonic()
        stream(pairs[:2], 0.8)
        for c in (a, b):
            audio = heard(c, mark)
            assert tone_level(audio, 500) > 0.08
            assert tone_level(audio, 800) > 0.08
            assert tone_level(audio, 1300) < 0.01
        a.wait_control(lambda m: m["type"] == "participants" and len(m["participants"]) == 2)


def test_a_sender_that_stops_reading_is_closed_and_the_others_keep_their_audio(
    jam_server: ServerProcess,
) -> None:
    """The tick writes the mixes to the sockets it reads (decision 0019): a client that keeps
    sending but never reads fills its socket, its audio is refused, and after jam_laggard_s
    it is dropped, while the tick never waits for it and the others hear no gap."""
    sid, tokens, _ = band(jam_server, 2)
    # A small receive window, so the server's socket buffer fills in well under a second.
    raw, early = _raw_ws(jam_server, sid, tokens[1], rcvbuf=4096)
    with raw:
        _until_welcome(raw, early)
        # PCM16 mixes: 200 kB/s towards a reader that reads nothing from here on.
        raw.sendall(_client_frame(1, json.dumps({"type": "join", "codec": "pcm16", "channels": 2}).encode()))
        with clients(jam_server, sid, tokens[:1]) as (a,):
            lazy = Player(800)
            pairs = [(a, Player(500))]
            t0 = time.monotonic()
            dropped = False
            while time.monotonic() - t0 < 12 and not dropped:
                stream(pairs, 0.25)
                for _ in range(100):  # the lazy one keeps sending, so its socket stays with the tick
                    try:
                        raw.sendall(_client_frame(2, lazy.frame()))
                    except OSError:
                        dropped = True
                        break
                if not dropped:
                    ids = [p["id"] for p in jam_stats(jam_server, sid, tokens[0])["participants"]]
                    dropped = len(ids) == 1
            assert dropped, "the client that stopped reading was never dropped"
            mark = time.monotonic()
            stream(pairs, 0.8)
            audio = heard(a, mark)
            assert len(audio) > 0.6 * RATE  # the mixes kept coming
            stats = jam_stats(jam_server, sid, tokens[0])
            assert stats["tickReads"]["sent"] > 0
            assert stats["engine"]["deadlineMisses"] < 0.05 * stats["engine"]["ticks"]


@pytest.mark.parametrize("loss", [0.05, 0.20])
def test_random_loss_keeps_audio_flowing_with_concealment_counted(
    jam_server: ServerProcess, loss: float
) -> None:
    sid, tokens, _ = band(jam_server, 2)
    with clients(jam_server, sid, tokens) as (sender, listener):
        listener.send_json({"type": "monitor", "self": False})
        mark = time.monotonic()
        stream([(sender, Player(600))], 2.0, loss=loss, rng=random.Random(int(loss * 100)))
        audio = heard(listener, mark + 0.3)
        assert tone_level(audio, 600) > 0.08
        blocks = audio[: len(audio) // BLOCK * BLOCK].reshape(-1, BLOCK)
        silent = float((np.sqrt((blocks**2).mean(axis=1)) < 0.02).mean())
        # Without concealment `loss` of the blocks would be silent; Opus PLC fills most gaps.
        assert silent < loss / 2, silent
        wait_until(lambda: "concealed" in _inbound(jam_server, sid, tokens[0], sender.pid), what="stats")
        time.sleep(1.1)  # stats are refreshed once a second
        inbound = _inbound(jam_server, sid, tokens[0], sender.pid)
        expected = loss * 2.0 / PERIOD
        assert inbound["concealed"] > 0.5 * expected
        assert inbound["lost"] > 0.5 * expected
        pushed = sender.wait_control(lambda m: m["type"] == "stats" and m["up"] and m["up"]["concealed"] > 0)
        assert pushed["up"]["lost"] > 0


def _inbound(srv: ServerProcess, sid: str, token: str, pid: str) -> dict[str, Any]:
    for p in jam_stats(srv, sid, token)["participants"]:
        if p["id"] == pid:
            return dict(p["in"])
    raise AssertionError(f"{pid} is not in the jam")


class ClickPlayer(Player):
    """Silence with a short 3 kHz burst at irregular intervals (so a correlation has one peak)."""

    def __init__(self) -> None:
        super().__init__(0, channels=1)
        rng = random.Random(5)
        self.click_blocks: set[int] = set()
        k = 10
        while k < 100_000:
            self.click_blocks.add(k)
            k += rng.randint(40, 110)  # 100-275 ms apart

    def block(self) -> NDArray[np.float32]:
        k = self.phase // BLOCK
        self.phase += BLOCK
        out = np.zeros((self.channels, BLOCK), np.float32)
        if k in self.click_blocks:
            n = np.arange(48)
            out[:, 10:58] = 0.6 * np.hanning(48) * np.sin(2 * np.pi * 3000 * n / RATE)
        return out


def _click_positions(audio: NDArray[np.float32], template: NDArray[np.float32]) -> list[int]:
    """Sample positions of the clicks in `audio`: peaks of its cross-correlation with the click."""
    corr = np.correlate(audio, template, mode="valid")
    high = np.flatnonzero(corr > 0.4 * corr.max())
    clicks: list[int] = []
    for i in high:
        if clicks and i - clicks[-1] < RATE // 20:
            if corr[i] > corr[clicks[-1]]:
                clicks[-1] = int(i)
            continue
        clicks.append(int(i))
    return clicks


def _train(positions: list[int], length: int, blur: int) -> NDArray[np.float64]:
    line = np.zeros(length)
    for p in positions:
        line[max(0, p - blur) : p + blur] = 1.0
    return line


def test_click_round_trip_through_the_server(jam_server: ServerProcess) -> None:
    """Mouth to ear through the server: clicks found by cross-correlation, timed on the wall clock."""
    sid, tokens, _ = band(jam_server, 1)
    with clients(jam_server, sid, tokens) as (c,):
        player = ClickPlayer()
        stream([(c, player)], 0.5)  # let the jitter buffer settle
        sent_at: dict[int, float] = {}
        mark = time.monotonic()
        stream([(c, player)], 2.5, sent_at=sent_at)
        time.sleep(0.2)
        first = min(sent_at)
        sent_clicks = [(s - first) * BLOCK + 10 for s in sorted(sent_at) if s in player.click_blocks]
        frames = [(at, f) for at, f in c.frames if at >= mark]
        audio = decode_stream([f for _, f in frames])
        template = np.zeros(70, np.float32)
        n = np.arange(48)
        template[10:58] = 0.6 * np.hanning(48) * np.sin(2 * np.pi * 3000 * n / RATE)
        heard_clicks = [p + 10 for p in _click_positions(audio, template)]
        assert len(heard_clicks) >= 8
        # Which sent click is which heard one: the irregular spacing lines the two trains up at
        # one offset (in samples of stream position, not of time).
        length = max(len(audio), (max(sent_at) - first + 1) * BLOCK) + RATE
        spectrum = np.fft.rfft(_train(heard_clicks, length, 120), 2 * length) * np.conj(
            np.fft.rfft(_train(sent_clicks, length, 120), 2 * length)
        )
        corr = np.fft.irfft(spectrum, 2 * length)
        offset = int(np.argmax(np.concatenate((corr[-length:], corr[:length])))) - length
        delays = []
        for h in heard_clicks:
            s = min(sent_clicks, key=lambda x: abs(h - (x + offset)))
            # The offset moves when the jitter buffer changes depth; clicks are >= 40 blocks apart.
            if abs(h - (s + offset)) > 20 * BLOCK:
                continue
            heard_at = frames[h // BLOCK][0] + (h % BLOCK) / RATE
            sent_time = sent_at[first + s // BLOCK] + (s % BLOCK) / RATE
            delays.append(heard_at - sent_time)
        assert len(delays) >= 6
        measured = float(np.median(delays))
        me = jam_stats(jam_server, sid, tokens[0])["participants"][0]
        depth = me["in"]["depth"]
        # What the audio path itself adds (not scheduling): our encoder's and the server's
        # encoder's look-ahead, and the server limiter's look-ahead (1.5 ms).
        codec = (OpusEncoder(1, BLOCK).lookahead + OpusEncoder(2, BLOCK).lookahead + 72) / RATE
        server_added = measured - codec
        p50 = me["latencyMs"]["p50"] / 1000
        print(
            f"click round trip {measured * 1000:.2f} ms (spread {np.ptp(delays) * 1000:.1f} ms), codec "
            f"{codec * 1000:.2f} ms, server-added {server_added * 1000:.2f} ms, jitter depth {depth}, "
            f"stats p50 {p50 * 1000:.2f} ms"
        )
        margin = 0.015  # two shared cores: this test's threads and the server run on them
        assert server_added <= (depth + 2) * PERIOD + margin, (measured, server_added, depth)
        assert p50 > 0
        assert 0.2 < max(server_added, PERIOD) / p50 < 5, (server_added, p50)


def test_metrics_and_stats_endpoints(jam_server: ServerProcess) -> None:
    sid, tokens, _ = band(jam_server, 2)
    outsider = jam_server.signup(f"outsider{next(_emails)}@example.com")
    assert jam_server.api("GET", f"/api/sessions/{sid}/jam/stats").status_code == 401
    assert jam_server.api("GET", f"/api/sessions/{sid}/jam/stats", token=outsider).status_code == 404
    assert jam_stats(jam_server, sid, tokens[0]) == {"session": sid, "running": False, "participants": []}
    with clients(jam_server, sid, tokens) as (a, _b):
        stream([(a, Player(500))], 0.5)
        text = jam_server.api("GET", "/metrics").text
        assert 'escenario_jam_packets_total{direction="in"}' in text
        assert f'escenario_jam_session_participants{{session="{sid}"}} 2.0' in text
        assert "escenario_jam_tick_duration_seconds_bucket" in text
        assert "escenario_jam_server_latency_seconds_count" in text
        stats = jam_stats(jam_server, sid, tokens[1])
        assert {p["id"] for p in stats["participants"]} == {a.pid, _b.pid}
        # Both senders' sockets are read on the tick thread (decision 0019), and the audio went
        # that way, not through the loop.
        reads = stats["tickReads"]
        assert reads["sockets"] == 2
        assert reads["frames"] >= 0.8 * 0.5 * 400
        assert reads["sent"] >= 0.8 * 0.5 * 400  # … and the mixes left from the tick


def test_auth_and_close_codes(jam_server: ServerProcess) -> None:
    sid, tokens, _ = band(jam_server, 1)
    stranger = jam_server.signup(f"stranger{next(_emails)}@example.com")
    for url, code in (
        (f"/jam/{sid}", 4401),
        (f"/jam/{sid}?token=nope", 4401),
        (f"/jam/{sid}?token={stranger}", 4403),
        (f"/jam/{'0' * 32}?token={tokens[0]}", 4403),
    ):
        with connect(f"ws://127.0.0.1:{jam_server.port}{url}", compression=None) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == code, url


def test_join_message_sets_codec_and_leave_closes_normally(jam_server: ServerProcess) -> None:
    sid, tokens, _ = band(jam_server, 1)
    with clients(jam_server, sid, tokens) as (c,):
        c.send_json({"type": "join", "codec": "pcm16", "channels": 1, "name": "Drums"})
        welcome = c.wait_control(lambda m: m["type"] == "welcome" and m["codec"] == "pcm16")
        assert welcome["participants"][0]["name"] == "Drums"
        pcm = Player(440, channels=1, codec=0)
        stream([(c, pcm)], 0.4)
        wait_until(lambda: any(parse_frame(f)[0].codec == 0 for _, f in c.frames[-5:]), what="PCM16 frames")
        c.send_json({"type": "ping", "t": 1.5})
        assert c.wait_control(lambda m: m["type"] == "pong")["t"] == 1.5
        c.send_json({"type": "leave"})
        assert c.wait_closed() == 1000


def test_in_process_app_queued_path(make_client: Callable[..., TestClient]) -> None:
    """Under the test client (no direct socket access) the queued sink carries the same protocol."""
    client = make_client(jam_fade_in_s=0.0)
    token = signup(client)
    sid = client.post("/api/sessions", json={"title": "Jam"}, headers=auth(token)).json()["id"]
    with client.websocket_connect(f"/jam/{sid}?token={token}") as ws:
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome"
        assert ws.receive_json()["type"] == "participants"
        ws.send_json({"type": "ping", "t": 3})
        player = Player(500)
        for _ in range(40):
            ws.send_bytes(player.frame())
        got_pong = False
        audio = 0
        while not (got_pong and audio >= 20):
            msg = ws.receive()
            if msg.get("bytes") is not None:
                header, _, _ = parse_frame(msg["bytes"])
                assert header.codec == CODEC_OPUS
                audio += 1
            elif msg.get("text") is not None and json.loads(msg["text"])["type"] == "pong":
                got_pong = True
        ws.send_bytes(b"\x02" + bytes(20))  # version 2
        msg = ws.receive()
        while msg["type"] != "websocket.close":
            msg = ws.receive()
        assert msg["code"] == 1007


def test_metrics_token_is_required_when_configured(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics_token="s3cret")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/metrics", headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "escenario_jam_sessions 0.0" in r.text


def _raw_ws(
    srv: ServerProcess, sid: str, token: str, *, rcvbuf: int | None = None
) -> tuple[socket.socket, bytes]:
    """A bare WebSocket handshake: the test controls exactly how frames are cut into segments.
    ``rcvbuf``: the client's receive buffer, set before connecting (it sizes the TCP window)."""
    sock = socket.socket()
    sock.settimeout(10)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", srv.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        (
            f"GET /jam/{sid}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert b" 101 " in head.split(b"\r\n", 1)[0]
    return sock, head.split(b"\r\n\r\n", 1)[1]


def _until_welcome(sock: socket.socket, early: bytes) -> bytes:
    """Read until the welcome. The 101 comes before the server has checked the token and joined
    the jam: frames sent earlier wait in the loop's queue; after the welcome the tick reads."""
    deadline = time.monotonic() + 10
    while b'"welcome"' not in early and time.monotonic() < deadline:
        early += sock.recv(65536)
    assert b'"welcome"' in early
    return early


def _client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame, with a random (non-zero) key so unmasking is really exercised."""
    key = bytes(random.randrange(1, 256) for _ in range(4))
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    head = bytes((first, 0x80 | n)) if n < 126 else bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def test_frames_however_the_stream_is_cut_all_reach_the_engine(jam_server: ServerProcess) -> None:
    """Our protocol parses whole binary frames itself; anything else goes to the websockets parser.

    Coalesced frames, a control message among them, a frame split across segments, a 16-bit
    length and a fragmented message must all arrive, in order, as if parsed one by one.
    """
    sid, tokens, _ = band(jam_server, 1)
    sock, early = _raw_ws(jam_server, sid, tokens[0])
    try:
        early = _until_welcome(sock, early)
        small = Player(500, channels=2)
        wide = Player(500, channels=2)
        wide.encoder = OpusEncoder(2, BLOCK, bitrate=510_000)  # > 125-byte frames: 16-bit length
        frames = [small.frame() for _ in range(20)]
        wide.seq = small.seq
        frames += [wide.frame() for _ in range(20)]
        assert all(len(f) < 126 for f in frames[:20])
        assert all(len(f) >= 126 for f in frames[20:])
        wire = [_client_frame(2, f) for f in frames]
        ping = _client_frame(1, json.dumps({"type": "ping", "t": 1.5}).encode())
        # 1. ten frames and a ping in one segment; 2. a frame cut in two segments
        sock.sendall(b"".join(wire[:10]) + ping + wire[10][:7])
        time.sleep(0.02)
        sock.sendall(wire[10][7:] + b"".join(wire[11:25]))
        time.sleep(0.02)
        # 3. one message in two fragments (FIN clear, then a continuation)
        half = len(frames[25]) // 2
        sock.sendall(_client_frame(2, frames[25][:half], fin=False) + _client_frame(0, frames[25][half:]))
        for w in wire[26:]:
            sock.sendall(w)
            time.sleep(0.0025)
        received = early
        deadline = time.monotonic() + 10
        while b'"pong"' not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
        assert b'"t":1.5' in received
        time.sleep(1.2)  # the tick snapshots each participant's counters once a second
        stats = jam_stats(jam_server, sid, tokens[0])
        [me] = stats["participants"]
        assert me["in"]["bytes"] == sum(len(f) for f in frames)
        assert me["in"]["packets"] == len(frames)
        assert me["in"]["corrupt"] == 0
        # The tick read most of them; the ping and the fragments went back to the loop's parser.
        reads = stats["tickReads"]
        assert reads["frames"] >= 20, reads
        assert reads["givenBack"] >= 2, reads
    finally:
        sock.close()
