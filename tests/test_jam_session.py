"""The jam in the session: live tracks, document levels as mix defaults, recording, the preview,
and membership changes reaching jam sockets.

The pure parts (alignment, the recorder, the preview's live input, the engine's hooks) are
driven directly; the rest runs against a real server process with real WebSocket players and
a Python Yjs client editing the document.
"""

from __future__ import annotations

import math
import random
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pycrdt
import pytest
from numpy.typing import NDArray

from realtime.jam.control import ControlError, Join, Monitor, Ping, parse_control
from realtime.jam.doc_bridge import defaults_of, recording_transport
from realtime.jam.engine import EngineConfig, JamEngine
from realtime.jam.mixplan import InputDefaults
from realtime.jam.opus import OpusEncoder
from realtime.jam.recorder import (
    TakeFile,
    TakeRecorder,
    alignment_latency,
    place_clip,
    timeline_position,
)
from realtime.media.decode import decode_audio
from realtime.preview import BLOCK as PREVIEW_BLOCK
from realtime.preview import LiveInput
from realtime.session.schema import Transport

from .harness import PyDocClient, ServerProcess, wait_until
from .jam.test_engine import BLOCK, PERIOD, RATE, Clock, Player, Sink, decode_stream, tone_level
from .test_jam_ws import JamClient, heard
from .test_preview import decode, read_stream

# -- alignment (pure) ----------------------------------------------------------------------------


def test_timeline_position_follows_the_transport() -> None:
    playing = Transport(playing=True, started_at=10_000.0, position=2.0)
    assert timeline_position(playing, 10.5) == pytest.approx(2.5)
    assert timeline_position(playing, 9.0) == pytest.approx(2.0)  # before it started: its start
    stopped = Transport(playing=False, started_at=10_000.0, position=7.0)
    assert timeline_position(stopped, 99.0) == 7.0


def test_alignment_latency_adds_residence_half_the_round_trip_and_the_client() -> None:
    assert alignment_latency(residence_s=0.005, rtt_ms=20.0, client_ms=15.0, fallback_s=0.0025) == (
        pytest.approx(0.005 + 0.010 + 0.015)
    )
    # Unmeasured residence: the fallback; missing or invalid reports add nothing.
    assert alignment_latency(residence_s=None, rtt_ms=None, client_ms=None, fallback_s=0.0025) == 0.0025
    assert alignment_latency(residence_s=math.nan, rtt_ms=-1.0, client_ms=math.inf, fallback_s=0.001) == 0.001


def test_place_clip_cuts_what_would_start_before_zero() -> None:
    placed = place_clip(3.0, 0.04, 2.0)
    assert placed is not None
    assert (placed.start, placed.offset, placed.length) == pytest.approx((2.96, 0.0, 2.0))
    early = place_clip(0.01, 0.04, 2.0)
    assert early is not None
    assert (early.start, early.offset, early.length) == pytest.approx((0.0, 0.03, 1.97))
    assert place_clip(0.0, 3.0, 2.0) is None  # nothing of it lands on the timeline


def test_document_values_written_by_any_client_are_read_safely() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    tracks = doc.get("tracks", type=pycrdt.Map)
    session = doc.get("session", type=pycrdt.Map)
    with doc.transaction():
        tracks["ok"] = pycrdt.Map({"gainDb": -6.0, "pan": -0.5, "mute": True})
        tracks["bad"] = pycrdt.Map({"gainDb": "loud", "pan": 7.0, "mute": "yes"})
        tracks["huge"] = pycrdt.Map({"gainDb": 1e308, "pan": math.nan})
        session["transport"] = pycrdt.Map({"playing": True, "recording": True, "startedAt": 5.0})
    assert defaults_of(tracks["ok"]) == InputDefaults(gain_db=-6.0, pan=-0.5, mute=True)
    assert defaults_of(tracks["bad"]) == InputDefaults(gain_db=0.0, pan=1.0, mute=False)
    assert defaults_of(tracks["huge"]) == InputDefaults(gain_db=24.0, pan=0.0)
    assert recording_transport(doc) == Transport(playing=True, started_at=5.0, recording=True)
    for transport in (
        {"playing": False, "recording": True},  # records only while it plays
        {"playing": True, "recording": "true"},
        "not a map",
    ):
        with doc.transaction():
            session["transport"] = pycrdt.Map(transport) if isinstance(transport, dict) else transport
        assert recording_transport(doc) is None, transport
    with doc.transaction():
        session["transport"] = {"playing": True, "recording": True, "position": -3, "startedAt": "x"}
    assert recording_transport(doc) == Transport(playing=True, started_at=0.0, position=0.0, recording=True)


# -- the recorder ----------------------------------------------------------------------------------


def _read_wav(path: Path) -> NDArray[np.float32]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 3, RATE)
        raw = np.frombuffer(w.readframes(w.getnframes()), np.uint8).reshape(-1, 3)
    ints = (
        raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16
    ) << 8
    return (ints >> 8).astype(np.float32) / (1 << 23)


class _Recorded:
    def __init__(self, tmp_path: Path) -> None:
        self.files: dict[str, TakeFile] = {}
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        counter = iter(range(1000))
        self.recorder = TakeRecorder(
            block=BLOCK,
            temp_path=lambda suffix: tmp_path / f"take{next(counter)}{suffix}",
            on_file=lambda f: self.files.__setitem__(f.pid, f),
            on_stopped=self.stopped.set,
            on_error=self.errors.append,
            max_queue_s=0.05,  # 20 blocks: small enough to overflow on purpose
        )


def test_recorder_starts_each_file_at_its_first_sound_and_keeps_blocks_in_place(tmp_path: Path) -> None:
    rec = _Recorded(tmp_path)
    r = rec.recorder
    inputs = ("p1", "p2")
    rng = np.random.default_rng(1)
    sent = {"p1": [], "p2": []}  # type: dict[str, list[NDArray[np.float32]]]
    for k in range(10):
        x = np.zeros((2, BLOCK), np.float32)
        x[0] = rng.uniform(-0.5, 0.5, BLOCK)
        if k >= 4:  # p2 is silent for its first four blocks
            x[1] = rng.uniform(-0.5, 0.5, BLOCK)
        arrivals = np.array([k * PERIOD - 0.005, math.nan if k == 6 else k * PERIOD - 0.010])
        r.push(k, inputs, x, arrivals, np.array([k, k - 4 if k >= 4 else -1]), k * PERIOD)
        sent["p1"].append(x[0].copy())
        if k >= 4:
            sent["p2"].append(x[1].copy())
    r.start()
    r.finish("p2")  # p2 leaves: its file is done before the take is
    wait_until(lambda: "p2" in rec.files, what="p2's file")
    assert "p1" not in rec.files
    # Two ticks lost on the way (the queue was full, or p1 was briefly no input): silence there.
    # The next two blocks waited long (a stall): the median residence does not move.
    for k in (12, 13):
        r.push(
            k,
            ("p1",),
            np.full((1, BLOCK), 0.25, np.float32),
            np.array([k * PERIOD - 0.2]),
            np.array([k]),
            k * PERIOD,
        )
    r.stop()
    assert rec.stopped.wait(5)
    assert not rec.errors
    p1, p2 = rec.files["p1"], rec.files["p2"]
    assert (p1.first_tick, p2.first_tick) == (0, 4)
    # Anchored on arrivals plus residence, both in 0.1 ms bins.
    assert p2.first_time == pytest.approx(4 * PERIOD, abs=2e-4)
    assert p1.residence_s == pytest.approx(0.005, abs=1e-4)  # 0.1 ms bins
    assert p2.residence_s == pytest.approx(0.010, abs=1e-4)  # the concealed block (NaN) does not count
    assert p1.padded_frames == 2 * BLOCK
    audio1 = _read_wav(p1.path)
    expected = np.concatenate([*sent["p1"], np.zeros(2 * BLOCK), np.full(2 * BLOCK, 0.25)])
    assert audio1.shape == expected.shape
    assert np.max(np.abs(audio1 - expected)) < 2**-22
    audio2 = _read_wav(p2.path)
    assert np.max(np.abs(audio2 - np.concatenate(sent["p2"]))) < 2**-22
    assert p1.frames == len(audio1)
    assert p2.frames == len(audio2)
    assert r.participants == 2
    assert r.bytes == 3 * (len(audio1) + len(audio2))


def test_recorder_places_blocks_by_their_place_in_the_stream_not_by_tick(tmp_path: Path) -> None:
    """The jitter buffer deepens (inserts a block), trims (drops two) and the sender pauses and
    resumes with a fresh stream: each block still lands where the sender played it."""
    rec = _Recorded(tmp_path)
    rec.recorder._max_items = 1000  # this test is not about the bounded queue
    r = rec.recorder
    rng = np.random.default_rng(7)
    sent: dict[int, NDArray[np.float32]] = {}
    schedule: list[tuple[int, int]] = []  # (tick, seq); seq -1: inserted by the buffer
    schedule += [(k, k) for k in range(10)]
    schedule += [(10, -1)]  # deepens by a block: the tick plays concealment, no sender audio
    schedule += [(k, k - 1) for k in range(11, 21)]
    schedule += [(k, k + 1) for k in range(21, 40)]  # trims: seqs 20 and 21 are never played
    schedule += [(k + 100, k - 40) for k in range(40, 50)]  # paused 100 ticks, restarted at 0
    for tick, seq in schedule:
        block = rng.uniform(-0.5, 0.5, BLOCK).astype(np.float32)
        if seq >= 0 and tick < 140:
            sent[seq] = block
        arrival = seq * PERIOD - 0.004 if seq >= 0 else math.nan
        if tick >= 140:
            arrival = tick * PERIOD - 0.004
        r.push(tick, ("p1",), block[None, :], np.array([arrival]), np.array([seq]), tick * PERIOD)
    r.start()
    r.stop()
    assert rec.stopped.wait(5)
    assert not rec.errors
    f = rec.files["p1"]
    audio = _read_wav(f.path)
    blocks = audio.reshape(-1, BLOCK)
    for seq, block in sent.items():
        assert np.max(np.abs(blocks[seq] - block)) < 2**-22, seq
    assert not blocks[20:22].any()  # the trimmed places stay silent
    # The restart goes on where the ticks say: 100 ticks after the last block before the pause.
    assert len(blocks) == 41 + 101 + 9
    assert blocks[41 + 100].any()
    assert not blocks[41 : 41 + 100].any()
    assert f.padded_frames == (2 + 100) * BLOCK
    assert f.residence_s is not None
    assert f.first_time == pytest.approx(-0.004 + f.residence_s, abs=2e-4)


def test_recorder_queue_is_bounded_and_a_silent_participant_gets_no_file(tmp_path: Path) -> None:
    rec = _Recorded(tmp_path)
    r = rec.recorder
    for k in range(30):  # the writer is not running: 20 fit, 10 are dropped and counted
        r.push(
            k,
            ("p1", "quiet"),
            np.ones((2, BLOCK), np.float32) * np.array([[0.1], [0.0]], np.float32),
            np.zeros(2),
            np.array([k, k]),
            0.0,
        )
    assert r.dropped_blocks == 10
    r.start()
    r.stop()
    assert rec.stopped.wait(5)
    assert set(rec.files) == {"p1"}
    assert rec.files["p1"].frames == 20 * BLOCK


def test_a_writer_failure_is_reported_and_leaves_no_files(tmp_path: Path) -> None:
    rec = _Recorded(tmp_path / "missing-dir")  # the WAV cannot be created there
    r = rec.recorder
    r.start()
    r.push(0, ("p1",), np.full((1, BLOCK), 0.1, np.float32), np.zeros(1), np.zeros(1, np.int64), 0.0)
    wait_until(lambda: bool(rec.errors), what="the failure")
    assert isinstance(rec.errors[0], OSError)
    assert r.failed is rec.errors[0]
    assert not rec.stopped.is_set()
    assert not rec.files


# -- the preview's live input -------------------------------------------------------------------


def test_live_input_prefetches_assembles_tracks_and_recovers_from_underruns() -> None:
    live = LiveInput(prefetch=PREVIEW_BLOCK)
    per_read = PREVIEW_BLOCK // BLOCK
    assert live.read() == {}  # nothing written yet
    for k in range(2 * per_read - 1):
        live.write(("t1", None), np.full((2, BLOCK), k, np.float32))
    assert live.read() == {}  # not a block plus the prefetch yet
    live.write(("t1", None), np.full((2, BLOCK), 99, np.float32))
    out = live.read()
    assert set(out) == {"t1"}  # the row without a track is nobody's audio
    assert np.array_equal(out["t1"], np.repeat(np.arange(per_read, dtype=np.float32), BLOCK))
    assert np.all(live.read()["t1"][-BLOCK:] == 99)  # exactly a block left: it plays
    # A participant joining within the next block: silence before its first tick.
    for _ in range(per_read - 1):
        live.write(("t1", None), np.zeros((2, BLOCK), np.float32))
    live.write(("t1", "t2"), np.ones((2, BLOCK), np.float32))
    out = live.read()
    assert np.array_equal(out["t2"][: (per_read - 1) * BLOCK], np.zeros((per_read - 1) * BLOCK))
    assert np.all(out["t2"][-BLOCK:] == 1.0)
    assert live.read() == {}  # ran dry: an underrun, then prefetching again
    assert live.underruns == 1
    live.write(("t1",), np.ones((1, BLOCK), np.float32))
    assert live.read() == {}


def test_live_input_drops_the_oldest_audio_when_nobody_reads() -> None:
    live = LiveInput(prefetch=PREVIEW_BLOCK, max_frames=2 * PREVIEW_BLOCK)
    for k in range(1000):
        live.write(("t",), np.full((1, BLOCK), k, np.float32))
    assert live.dropped > 900
    first = live.read()["t"]
    assert first[0] >= 1000 - 3 * PREVIEW_BLOCK // BLOCK  # only recent audio was kept
    # A reader that fell behind catches up to a block plus the prefetch in one read.
    per_read = PREVIEW_BLOCK // BLOCK
    behind = LiveInput(prefetch=PREVIEW_BLOCK, max_frames=10 * PREVIEW_BLOCK)
    for k in range(5 * per_read):
        behind.write(("t",), np.full((1, BLOCK), k, np.float32))
    assert behind.read()["t"][0] == 2 * per_read  # the two oldest blocks dropped
    assert behind.dropped == 2 * per_read
    assert behind.read()["t"][0] == 3 * per_read  # then in order, nothing more dropped


# -- the engine's hooks ------------------------------------------------------------------------------


def test_engine_tap_hooks_and_client_latency_reports() -> None:
    clock = Clock()
    engine = JamEngine("s", EngineConfig(fade_in_s=0.0), clock=clock)
    rosters: list[tuple[str, ...]] = []
    engine.on_roster = lambda: rosters.append(tuple(p.pid for p in engine.participants))
    engine.defaults_for = lambda user, name: InputDefaults(gain_db=-20.0) if name == "Known" else None
    sa, sb = Sink(), Sink()
    a = engine.join("u1", "Known", can_send=True, sink=sa)
    b = engine.join("u2", "Other", can_send=True, sink=sb)
    assert rosters == [(a.pid,), (a.pid, b.pid)]
    engine.control(b.pid, Join(codec="opus", channels=1, name="Renamed", latency_ms=12.5))
    assert rosters[-1] == (a.pid, b.pid)
    assert len(rosters) == 3
    assert b.latency_ms == 12.5
    engine.control(a.pid, Ping(t=1.0, rtt_ms=30.0))
    assert a.rtt_ms == 30.0
    engine.control(b.pid, Monitor(self_monitor=False))

    seen: list[tuple[int, tuple[str, ...], NDArray[np.float32], NDArray[np.float64]]] = []
    pa, pb = Player(500), Player(800)
    for _ in range(5):  # tap off: nothing is called
        engine.receive(a.pid, pa.frame())
        engine.receive(b.pid, pb.frame())
        clock.now += PERIOD
        engine.tick_once()
    seqs: list[NDArray[np.int64]] = []

    def tap(
        k: int,
        inputs: tuple[str, ...],
        x: NDArray[np.float32],
        arrivals: NDArray[np.float64],
        played: NDArray[np.int64],
        now: float,
    ) -> None:
        seen.append((k, inputs, x.copy(), arrivals.copy()))
        seqs.append(played.copy())

    engine.set_tap(tap)
    for _ in range(40):
        engine.receive(a.pid, pa.frame())
        engine.receive(b.pid, pb.frame())
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()
    assert [k for k, *_ in seen] == list(range(5, 45))
    engine.stats.skipped_ticks += 7  # what the tick thread counts when it skips deadlines
    engine.receive(a.pid, pa.frame())
    engine.receive(b.pid, pb.frame())
    engine.tick_once()
    assert seen[-1][0] == 45 + 7  # the tap keeps time by the schedule
    seen.pop()
    assert all(inputs == (a.pid, b.pid) for _, inputs, *_ in seen)
    rows = np.concatenate([x for _, _, x, _ in seen], axis=1)
    assert tone_level(rows[0], 500) > 0.2
    assert tone_level(rows[0], 800) < 0.01
    assert tone_level(rows[1], 800) > 0.2
    assert tone_level(rows[1], 500) < 0.01
    assert all(np.isfinite(arr).all() for *_, arr in seen[-10:])  # every block arrived
    # Every block arrived, so each sender's places in its stream advance one a tick.
    tail = np.array(seqs[-10:])
    assert (tail >= 0).all()
    assert (np.diff(tail, axis=0) == 1).all()
    # The join-time default: "Known" is 20 dB down in b's mix.
    heard_b = decode_stream(sb.frames[-30:])
    assert tone_level(heard_b, 500) == pytest.approx(0.25 * math.sqrt(0.5) * 0.1, rel=0.2)

    def broken(*_: Any) -> None:
        raise RuntimeError("consumer bug")

    engine.set_tap(broken)
    engine.receive(a.pid, pa.frame())
    engine.tick_once()  # the tap's failure is logged and the tap removed; the tick goes on
    assert engine._tap is None
    engine.leave(a.pid)
    assert rosters[-1] == (b.pid,)


def test_join_latency_and_ping_rtt_are_validated() -> None:
    assert parse_control('{"type":"join","codec":"opus","channels":1,"latencyMs":40}') == Join(
        codec="opus", channels=1, latency_ms=40.0
    )
    assert parse_control('{"type":"ping","t":1,"rttMs":null}') == Ping(t=1.0)
    for text, code in (
        ('{"type":"join","codec":"opus","channels":1,"latencyMs":-1}', "out_of_range"),
        ('{"type":"join","codec":"opus","channels":1,"latencyMs":5000}', "out_of_range"),
        ('{"type":"join","codec":"opus","channels":1,"latencyMs":"40"}', "bad_field"),
        ('{"type":"ping","t":1,"rttMs":1e9}', "out_of_range"),
        ('{"type":"ping","t":1,"rttMs":true}', "bad_field"),
    ):
        with pytest.raises(ControlError) as info:
            parse_control(text)
        assert info.value.code == code, text


# -- end to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        Path(tmp_path_factory.mktemp("jam-session")) / "data",
        env={"ESCENARIO_JAM_FADE_IN_S": "0", "ESCENARIO_CONNECTS_PER_MINUTE_PER_IP": "10000"},
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


_ids = iter(range(1_000_000))


class Band:
    """A session with an owner (token 0) and editors; `emails[i]` signs in as `tokens[i]`."""

    def __init__(self, server: ServerProcess, players: int) -> None:
        n = next(_ids)
        self.server = server
        self.emails = [f"band{n}-{i}@example.com" for i in range(players)]
        self.tokens = [server.signup(self.emails[0], name="Owner")]
        self.sid = server.create_session(self.tokens[0])
        for i in range(1, players):
            self.tokens.append(server.signup(self.emails[i], name=f"Player {i}"))
            server.add_member(self.tokens[0], self.sid, self.emails[i], "editor")

    def doc(self) -> PyDocClient:
        return PyDocClient(self.server.ws_base, self.sid, self.tokens[0])

    def player(self, i: int, name: str, **join: Any) -> JamClient:
        c = JamClient(self.server, self.sid, self.tokens[i])
        c.send_json({"type": "join", "codec": "opus", "channels": 1, "name": name, **join})
        c.wait_control(
            lambda m: (
                m["type"] == "welcome"
                and any(p["id"] == c.pid and p["name"] == name for p in m["participants"])
            )
        )
        return c


def tracks_of(doc: PyDocClient) -> dict[str, Any]:
    return dict(doc.doc.get("tracks", type=pycrdt.Map).to_py() or {})


def live_tracks(doc: PyDocClient) -> dict[str, Any]:
    return {tid: t for tid, t in tracks_of(doc).items() if t.get("kind") == "live"}


def wait_doc(doc: PyDocClient, pred: Callable[[], bool], timeout: float = 15.0) -> None:
    if not pred():
        doc.pump(until=lambda _msg: pred(), timeout=timeout)


def track_of(doc: PyDocClient, pid: str) -> str:
    found = [tid for tid, t in live_tracks(doc).items() if t["live"]["participantId"] == pid]
    assert len(found) == 1, live_tracks(doc)
    return found[0]


def edit_track(doc: PyDocClient, tid: str, **fields: Any) -> None:
    with doc.doc.transaction():
        track = doc.doc.get("tracks", type=pycrdt.Map)[tid]
        for key, value in fields.items():
            track[key] = value
    doc.send_changes()


class Pacer:
    """The players' audio clock: frame k is due at ``t0 + k·PERIOD`` on the wall clock. A
    sender held up (the test thread closing a socket) catches up in a burst, as a real capture
    buffer would, so a frame's due time stays the moment its audio was played."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.k = 0

    def next(self) -> float:
        due = self.t0 + self.k * PERIOD
        self.k += 1
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        return due


def stream(
    pairs: list[tuple[JamClient, Player]],
    seconds: float,
    pacer: Pacer | None = None,
    played_at: dict[int, dict[int, tuple[float, float]]] | None = None,
) -> None:
    """Every player's next frame each block period at real-time pace.

    ``played_at[id(client)][seq]`` is (when the frame's audio was due, when it was sent): their
    difference is this sender's own latency, which a real client would report in ``latencyMs``."""
    pacer = pacer or Pacer()
    for _ in range(round(seconds / PERIOD)):
        due = pacer.next()
        for client, player in pairs:
            frame = player.frame()
            if played_at is not None:
                played_at.setdefault(id(client), {})[player.seq - 1] = (due, time.time())
            client.send(frame)


def test_senders_appear_as_live_tracks_and_a_reconnect_reuses_its_track(srv: ServerProcess) -> None:
    band = Band(srv, 3)
    viewer_email = f"viewer{next(_ids)}@example.com"
    viewer_token = srv.signup(viewer_email, name="Viewer")
    srv.add_member(band.tokens[0], band.sid, viewer_email, "viewer")
    doc = band.doc()
    try:
        bass = band.player(1, "Bass")
        viewer = JamClient(srv, band.sid, viewer_token)
        wait_doc(doc, lambda: any(t["live"]["participantId"] == bass.pid for t in live_tracks(doc).values()))
        tid = track_of(doc, bass.pid)
        track = live_tracks(doc)[tid]
        user_id = next(p["userId"] for p in bass.welcome["participants"] if p["id"] == bass.pid)
        assert track["name"] == "Bass"
        assert (track["gainDb"], track["pan"], track["mute"]) == (0.0, 0.0, False)
        assert track["live"] == {
            "participantId": bass.pid,
            "userId": user_id,
            "participantName": "Bass",
            "active": True,
        }
        assert tid in doc.doc.get("trackOrder", type=pycrdt.Array).to_py()
        # Only senders get tracks, and the account's name ("Player 1", used until `join` named
        # the player) left none behind.
        assert len(live_tracks(doc)) == 1
        bass.close()
        wait_doc(doc, lambda: live_tracks(doc)[tid]["live"]["active"] is False)
        edit_track(doc, tid, gainDb=-6.0)
        again = band.player(1, "Bass")
        wait_doc(doc, lambda: live_tracks(doc)[tid]["live"]["participantId"] == again.pid)
        assert live_tracks(doc)[tid]["live"]["active"] is True
        assert live_tracks(doc)[tid]["gainDb"] == -6.0
        # A second player, and the same user under another name, get tracks of their own.
        keys = band.player(2, "Keys")
        other = band.player(1, "Bass 2")
        wait_doc(doc, lambda: len(live_tracks(doc)) == 3)
        assert len({track_of(doc, c.pid) for c in (again, keys, other)}) == 3
        viewer.close()
        for c in (again, keys, other):
            c.close()
        wait_doc(doc, lambda: all(t["live"]["active"] is False for t in live_tracks(doc).values()))
    finally:
        doc.close()


def test_a_live_tracks_level_in_the_document_is_what_listeners_hear(srv: ServerProcess) -> None:
    band = Band(srv, 2)
    doc = band.doc()
    try:
        sender = band.player(1, "Sax")
        listener = JamClient(srv, band.sid, band.tokens[0])
        listener.send_json({"type": "monitor", "self": False})
        wait_doc(
            doc, lambda: any(t["live"]["participantId"] == sender.pid for t in live_tracks(doc).values())
        )
        tid = track_of(doc, sender.pid)
        pair = [(sender, Player(600))]

        def level() -> float:
            stream(pair, 0.3)  # let the change ramp in and the jitter buffers settle
            mark = time.monotonic()
            stream(pair, 0.8)
            return tone_level(heard(listener, mark), 600)

        before = level()
        assert before == pytest.approx(0.25 * math.sqrt(0.5), rel=0.15)  # centre: -3 dB
        edit_track(doc, tid, gainDb=-20.0)
        assert level() / before == pytest.approx(0.1, rel=0.15)
        edit_track(doc, tid, gainDb=0.0, pan=1.0)
        mark = time.monotonic()
        stream(pair, 0.3)
        stream(pair, 0.8)
        left = decode_stream(listener.frames_since(mark + 0.3))
        assert tone_level(left, 600) < 0.01  # hard right: nothing on the left channel
        edit_track(doc, tid, pan=0.0, mute=True)
        assert level() < 0.003
        # A listener's own override still wins over the document's default.
        listener.send_json({"type": "mix", "mutes": {sender.pid: False}})
        assert level() == pytest.approx(before, rel=0.15)
        sender.close()
        listener.close()
    finally:
        doc.close()


class ClickTone(Player):
    """A tone with short 3 kHz clicks at the given block numbers (sample 10 of the block)."""

    def __init__(self, freq: float, clicks: set[int]) -> None:
        super().__init__(freq, amp=0.15, channels=1)
        self.clicks = clicks

    def block(self) -> NDArray[np.float32]:
        k = self.phase // BLOCK
        out = super().block()
        if k in self.clicks:
            out[:, 10:58] += CLICK[10:58]
        return out


_n = np.arange(48)
CLICK = np.zeros(70, np.float32)
CLICK[10:58] = 0.6 * np.hanning(48) * np.sin(2 * np.pi * 3000 * _n / RATE)


def click_times(audio: NDArray[np.float32]) -> list[float]:
    """Seconds into `audio` of each click: the peaks of its cross-correlation with the click,
    after a high-pass that removes the tones."""
    spec = np.fft.rfft(audio)
    spec[np.fft.rfftfreq(len(audio), 1 / RATE) < 2000] = 0
    hp = np.fft.irfft(spec, len(audio))
    corr = np.correlate(hp, CLICK, mode="valid")
    high = np.flatnonzero(corr > 0.5 * corr.max())
    peaks: list[int] = []
    for i in high:
        if peaks and i - peaks[-1] < RATE // 20:
            if corr[i] > corr[peaks[-1]]:
                peaks[-1] = int(i)
            continue
        peaks.append(int(i))
    return [(p + 10) / RATE for p in peaks]


def asset_audio(srv: ServerProcess, token: str, asset_id: str) -> NDArray[np.float32]:
    r = srv.api("GET", f"/api/assets/{asset_id}/audio?format=flac", token=token)
    assert r.status_code == 200, r.text
    samples = decode_audio(r.content).samples
    assert samples.shape[0] == 1
    return np.asarray(samples[0], np.float32)


def jobs_of(doc: PyDocClient) -> dict[str, Any]:
    return {
        k: v
        for k, v in (doc.doc.get("jobs", type=pycrdt.Map).to_py() or {}).items()
        if v.get("kind") == "record"
    }


def set_transport(doc: PyDocClient, **fields: Any) -> None:
    with doc.doc.transaction():
        transport = doc.doc.get("session", type=pycrdt.Map)["transport"]
        for key, value in fields.items():
            transport[key] = value
    doc.send_changes()


def test_recording_lays_each_players_take_on_their_track_aligned(srv: ServerProcess) -> None:
    band = Band(srv, 3)
    doc = band.doc()
    try:
        a = band.player(0, "A")
        # B reports 20 ms of its own audio latency and a 20 ms round trip: its audio reaches the
        # server 30 ms later than what it played, and it sends its clicks 30 ms (12 blocks) late.
        b = band.player(1, "B", latencyMs=20)
        b.send_json({"type": "ping", "t": 0, "rttMs": 20})
        c = band.player(2, "C")
        # Different, fixed jitter-buffer depths: the residence the recorder measures differs by
        # 10 ms between A and B, and so must the correction.
        a.send_json({"type": "jitter", "mode": "manual", "depth": 8})
        b.send_json({"type": "jitter", "mode": "manual", "depth": 12})
        wait_doc(doc, lambda: len(live_tracks(doc)) == 3)
        tracks = {name: track_of(doc, cl.pid) for name, cl in (("A", a), ("B", b), ("C", c))}
        rng = random.Random(3)
        clicks, k = set(), 300
        while k < 1200:
            clicks.add(k)
            k += rng.randint(60, 110)
        pa, pb, pc = ClickTone(500, clicks), ClickTone(800, {k + 12 for k in clicks}), Player(1300, amp=0.15)
        pacer = Pacer()
        stream([(a, pa), (b, pb), (c, pc)], 0.5, pacer)
        started_at = time.time() * 1000
        set_transport(doc, playing=True, startedAt=started_at, position=0.0, recording=True)
        sent: dict[int, dict[int, tuple[float, float]]] = {}
        stream([(a, pa), (b, pb), (c, pc)], 1.0, pacer, sent)
        c.close()  # leaves mid-take: its clip comes now, the take goes on
        stream([(a, pa), (b, pb)], 1.5, pacer, sent)
        wait_doc(doc, lambda: bool(live_tracks(doc)[tracks["C"]]["clips"]))
        job_id, job = next(iter(jobs_of(doc).items()))
        # Progress about once a second while it records.
        wait_doc(doc, lambda: jobs_of(doc)[job_id]["seconds"] >= 1.5)
        job = jobs_of(doc)[job_id]
        assert job["status"] == "running"
        assert job["bytes"] > 0
        assert job["participants"] == 3
        set_transport(doc, playing=False, position=2.5, recording=False)
        wait_doc(doc, lambda: jobs_of(doc)[job_id]["status"] != "running")
        job = jobs_of(doc)[job_id]
        assert job["status"] == "done", job
        assert job["progress"] == 1.0
        assert job["clips"] == 3
        assert job["error"] is None
        assert sorted(job["tracks"]) == sorted(tracks.values())

        live = live_tracks(doc)
        clip = {name: next(iter(live[tid]["clips"].values())) for name, tid in tracks.items()}
        audio = {name: asset_audio(srv, band.tokens[0], cl["assetId"]) for name, cl in clip.items()}
        for name, freq in (("A", 500), ("B", 800), ("C", 1300)):
            x = audio[name]
            others = [f for f in (500, 800, 1300) if f != freq]
            assert tone_level(x, freq) > 0.1, name  # this player's input, not a mix
            assert all(tone_level(x, f) < 0.005 for f in others), name
            assert clip[name]["takeId"] == job_id
            assert clip[name]["length"] == pytest.approx(len(x) / RATE - clip[name]["offset"], abs=1e-6)
        # The take starts when the server sees `recording` (a few ms after it was set); C left
        # 1.5 s before the end.
        assert 2.0 < len(audio["A"]) / RATE < 2.6, len(audio["A"]) / RATE
        assert len(audio["A"]) - len(audio["C"]) == pytest.approx(1.5 * RATE, abs=0.1 * RATE)
        # Latency corrections: B's includes its 20 ms + 20/2 ms, and its deeper buffer (4 blocks
        # deeper, measured as the time its blocks waited: at least two blocks more).
        diff = clip["B"]["latencyMs"] - clip["A"]["latencyMs"] - 30
        print("latency A", clip["A"]["latencyMs"], "B", clip["B"]["latencyMs"])
        assert 2 * PERIOD * 1000 < diff < 6 * PERIOD * 1000
        assert 0 < clip["A"]["latencyMs"] < 30

        # Each click, on the timeline: where the clip puts it.
        lookahead = OpusEncoder(1, BLOCK).lookahead / RATE  # the player's encoder delays its audio
        on_timeline = {
            name: [clip[name]["start"] - clip[name]["offset"] + t for t in click_times(audio[name])]
            for name in ("A", "B")
        }

        def lag(client: JamClient) -> float:
            """How late this sender's frames left after their audio was due, on average."""
            return float(np.mean([sent_at - due for due, sent_at in sent[id(client)].values()]))

        expected_a = [
            sent[id(a)][s][0] + lag(a) - started_at / 1000 + 10 / RATE + lookahead
            for s in sorted(clicks)
            if s in sent[id(a)]
        ]
        # B's clicks left 30 ms after what B played: the server takes that back out.
        expected_b = [
            sent[id(b)][s + 12][0] + lag(b) - 0.030 - started_at / 1000 + 10 / RATE + lookahead
            for s in sorted(clicks)
            if s + 12 in sent[id(b)]
        ]
        for name, expected in (("A", expected_a), ("B", expected_b)):
            got = on_timeline[name]
            errors = [min((g - e for g in got), key=abs) for e in expected]
            print(name, "click errors (ms):", [round(e * 1000, 2) for e in errors])
            assert len(got) >= len(expected) - 1
            assert abs(float(np.median(errors))) < 0.003, (name, errors)
            # Blocks are placed by their place in the sender's stream, so a jitter buffer that
            # deepens or trims under load mid-take does not move the clicks after it: the whole
            # take is off by one constant (the residence estimate), click to click.
            assert max(errors) - min(errors) < 0.0005, (name, errors)
        # The same musical instant on both tracks: the two takes line up.
        pairs = [min(on_timeline["B"], key=lambda t, x=x: abs(t - x)) - x for x in on_timeline["A"]]
        print("A/B click offsets (ms):", [round(p * 1000, 2) for p in pairs])
        assert abs(float(np.median(pairs))) < 0.003, pairs
        a.close()
        b.close()
    finally:
        doc.close()


def test_the_streaming_preview_plays_the_jam(srv: ServerProcess) -> None:
    band = Band(srv, 1)
    doc = band.doc()
    try:
        player = band.player(0, "Voice")
        wait_doc(doc, lambda: len(live_tracks(doc)) == 1)
        tid = track_of(doc, player.pid)
        done = threading.Event()

        def play() -> None:
            p = Player(700)
            while not done.is_set():
                stream([(player, p)], 0.2)

        sender = threading.Thread(target=play, daemon=True)
        sender.start()
        try:
            url = f"{srv.base_url}/api/sessions/{band.sid}/preview.ogg?token={band.tokens[0]}"
            samples = decode(read_stream(url, 2.5))  # the transport is stopped: the jam still plays
            tail = samples[0, -24000:]
            assert tone_level(tail, 700) > 0.08
            edit_track(doc, tid, mute=True)
            muted = decode(read_stream(url, 2.5))[0, -24000:]
            assert tone_level(muted, 700) < 0.005
        finally:
            done.set()
            sender.join()
        player.close()
    finally:
        doc.close()


def test_membership_changes_and_deletion_close_jam_sockets(srv: ServerProcess) -> None:
    band = Band(srv, 3)
    demoted = band.player(1, "D")
    removed = band.player(2, "R")
    owner = band.player(0, "O")
    r = srv.api(
        "POST",
        f"/api/sessions/{band.sid}/members",
        token=band.tokens[0],
        json={"email": band.emails[1], "role": "viewer"},
    )
    assert r.status_code == 200, r.text
    assert demoted.wait_closed() == 4001
    # Reconnecting picks up the new role: a viewer now.
    again = JamClient(srv, band.sid, band.tokens[1])
    assert again.welcome["canSend"] is False
    uid = next(p["userId"] for p in removed.welcome["participants"] if p["id"] == removed.pid)
    assert (
        srv.api("DELETE", f"/api/sessions/{band.sid}/members/{uid}", token=band.tokens[0]).status_code == 204
    )
    assert removed.wait_closed() == 4403
    assert removed.close_reason == "you were removed from this session"
    assert not owner.closed.is_set()
    assert not again.closed.is_set()
    # Deleting the session mid-recording: every jam socket closes, nothing is stored.
    doc = band.doc()
    try:
        set_transport(doc, playing=True, startedAt=time.time() * 1000, position=0.0, recording=True)
        wait_doc(doc, lambda: bool(jobs_of(doc)))  # the take is running
        stream([(owner, Player(440))], 0.5)
    finally:
        doc.close()
    log_before = len(srv.log_path.read_text())
    assert srv.api("DELETE", f"/api/sessions/{band.sid}", token=band.tokens[0]).status_code == 204
    assert owner.wait_closed() == 4404
    assert again.wait_closed() == 4404
    assert srv.api("GET", f"/api/sessions/{band.sid}", token=band.tokens[0]).status_code == 404
    wait_until(lambda: "jam stopped" in srv.log_path.read_text()[log_before:], what="the jam to stop")
    new_log = srv.log_path.read_text()[log_before:]
    assert "Traceback" not in new_log, new_log
    assert "jam recording finished" not in new_log  # thrown away, not stored
