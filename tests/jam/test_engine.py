"""The jam engine driven tick by tick (manual clock), and once on its real thread."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from realtime.jam.control import Jitter, Join, Mix, Monitor, Ping, StatsRequest
from realtime.jam.engine import EngineConfig, EngineFull, InputRejected, JamEngine, warm_up
from realtime.jam.frames import CODEC_OPUS, CODEC_PCM16, FLAG_RESYNC, FrameError, encode_frame, parse_frame
from realtime.jam.opus import OpusDecoder, OpusEncoder, OpusError, packet_samples
from realtime.jam.sessions import JamSessions
from realtime.jam.stats import HistogramBank, LogHistogram

RATE = 48000
BLOCK = 120
PERIOD = BLOCK / RATE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """An AudioSink that records everything; `accept` decides what send_audio answers."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.controls: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.accept = True
        self.calls = 0

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        self.calls += 1
        if not self.accept:
            return False
        self.frames.extend(frames)
        return True

    def send_control(self, text: str) -> None:
        self.controls.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.controls if c["type"] == kind]


class Player:
    """A client: a tone through its own Opus encoder, framed with a running sequence number."""

    def __init__(self, freq: float, amp: float = 0.25, channels: int = 1, codec: int = CODEC_OPUS) -> None:
        self.freq = freq
        self.amp = amp
        self.channels = channels
        self.codec = codec
        self.encoder = OpusEncoder(channels, BLOCK)
        self.seq = 0
        self.phase = 0

    def block(self) -> NDArray[np.float32]:
        t = (self.phase + np.arange(BLOCK)) / RATE
        self.phase += BLOCK
        mono = (self.amp * np.sin(2 * np.pi * self.freq * t)).astype(np.float32)
        return np.tile(mono, (self.channels, 1))

    def frame(self, block: NDArray[np.float32] | None = None) -> bytes:
        planar = self.block() if block is None else block
        if self.codec == CODEC_OPUS:
            payload = self.encoder.encode(planar)
        else:
            payload = (np.clip(planar.T, -1, 1) * 32767).astype("<i2").tobytes()
        frame = encode_frame(
            codec=self.codec,
            channels=self.channels,
            sequence=self.seq,
            timestamp=self.seq * BLOCK,
            frames=BLOCK,
            payload=payload,
            flags=FLAG_RESYNC if self.seq == 0 else 0,
        )
        self.seq += 1
        return frame


def decode_stream(frames: Sequence[bytes]) -> NDArray[np.float32]:
    """A listener's received frames, decoded (left channel), in order."""
    dec = OpusDecoder(2, BLOCK)
    out = []
    for f in frames:
        header, payload, _ = parse_frame(f)
        if header.codec == CODEC_OPUS:
            out.append(dec.decode(bytes(payload))[0].copy())
        else:
            pcm = np.frombuffer(bytes(payload), "<i2").reshape(BLOCK, 2)
            out.append(pcm[:, 0].astype(np.float32) / 32768)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def tone_level(signal: NDArray[np.float32], freq: float, width: float = 60.0) -> float:
    """Amplitude of what lies within ±`width` Hz of `freq` (band-pass by FFT, then √2·RMS).

    Robust to the phase jumps that concealment and skipped packets leave, unlike a single peak.
    """
    n = len(signal)
    spec = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < freq - width) | (freqs > freq + width)] = 0
    band = np.fft.irfft(spec, n)
    return float(np.sqrt(2 * np.mean(band**2)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_engine(clock: Clock, **cfg: Any) -> JamEngine:
    cfg.setdefault("fade_in_s", 0.0)
    return JamEngine("s1", EngineConfig(**cfg), clock=clock)


def run(
    engine: JamEngine,
    clock: Clock,
    players: dict[str, Player],
    ticks: int,
    *,
    drop: float = 0.0,
    rng: random.Random | None = None,
) -> None:
    """`ticks` blocks of real-time play: each player's frame arrives, then the tick, then delivery."""
    for _ in range(ticks):
        for pid, player in players.items():
            frame = player.frame()
            if drop and rng is not None and rng.random() < drop:
                continue
            engine.receive(pid, frame)
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()


def join(engine: JamEngine, name: str, *, can_send: bool = True) -> tuple[str, Sink]:
    sink = Sink()
    p = engine.join(f"user-{name}", name, can_send=can_send, sink=sink)
    return p.pid, sink


FREQS = {"a": 500.0, "b": 800.0, "c": 1300.0}


def test_three_players_hear_each_other_and_themselves_only_when_monitoring(clock: Clock) -> None:
    engine = make_engine(clock)
    pids, sinks, players = {}, {}, {}
    for name, freq in FREQS.items():
        pid, sink = join(engine, name)
        pids[name], sinks[name], players[pid] = pid, sink, Player(freq)
    welcome = sinks["a"].of_type("welcome")[0]
    assert welcome["participantId"] == pids["a"]
    assert welcome["block"] == BLOCK
    assert welcome["selfMonitor"]
    assert [p["name"] for p in sinks["a"].of_type("participants")[-1]["participants"]] == ["a", "b", "c"]

    run(engine, clock, players, 400)
    for name, sink in sinks.items():
        heard = decode_stream(sink.frames[-200:])
        for other, freq in FREQS.items():
            assert tone_level(heard, freq) > 0.1, (name, other)  # self-monitoring is on by default

    for name in FREQS:
        assert engine.control(pids[name], Monitor(self_monitor=False)) == []
        sinks[name].frames.clear()
    run(engine, clock, players, 400)
    for name, sink in sinks.items():
        heard = decode_stream(sink.frames[-200:])
        for other, freq in FREQS.items():
            level = tone_level(heard, freq)
            if other == name:
                assert level < 0.003, (name, level)
            else:
                assert level > 0.1, (name, other, level)

    engine.control(pids["a"], Monitor(self_monitor=True))
    sinks["a"].frames.clear()
    run(engine, clock, players, 200)
    assert tone_level(decode_stream(sinks["a"].frames[-100:]), FREQS["a"]) > 0.1


def test_identical_mixes_are_encoded_once_and_share_bytes(clock: Clock) -> None:
    engine = make_engine(clock)
    a, sa = join(engine, "a")
    b, sb = join(engine, "b")
    _c, sc = join(engine, "c", can_send=False)
    players = {a: Player(500), b: Player(800)}
    run(engine, clock, players, 20)
    # Default settings, self-monitoring on: one mix, one bytes object for everyone.
    assert sa.frames[-1] is sb.frames[-1] is sc.frames[-1]
    engine.control(a, Monitor(self_monitor=False))
    run(engine, clock, players, 5)
    assert sa.frames[-1] is not sb.frames[-1]
    assert sb.frames[-1] is sc.frames[-1]  # b and c still hear the same mix
    header, _, _ = parse_frame(sa.frames[-1])
    assert (header.codec, header.channels, header.frames) == (CODEC_OPUS, 2, BLOCK)
    seqs = [parse_frame(f)[0].sequence for f in sb.frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one frame per tick, no gaps
    assert parse_frame(sb.frames[0])[0].resync


def test_personal_mix_overrides_mute_and_gain(clock: Clock) -> None:
    engine = make_engine(clock)
    a, sa = join(engine, "a")
    b, sb = join(engine, "b")
    players = {a: Player(500), b: Player(800)}
    engine.control(a, Mix(mutes={b: True}))
    engine.control(b, Mix(gains={a: -20.0}))
    run(engine, clock, players, 400)
    heard_a = decode_stream(sa.frames[-200:])
    heard_b = decode_stream(sb.frames[-200:])
    assert tone_level(heard_a, 800) < 0.003
    assert tone_level(heard_a, 500) > 0.1
    ratio = tone_level(heard_b, 500) / tone_level(heard_b, 800)
    assert 0.07 < ratio < 0.13  # -20 dB


def test_pcm16_in_and_out(clock: Clock) -> None:
    engine = make_engine(clock)
    sink = Sink()
    p = engine.join("u", "pcm", can_send=True, sink=sink, codec="pcm16", channels=2)
    players = {p.pid: Player(700, channels=2, codec=CODEC_PCM16)}
    run(engine, clock, players, 200)
    assert parse_frame(sink.frames[-1])[0].codec == CODEC_PCM16
    heard = decode_stream(sink.frames[-100:])
    assert tone_level(heard, 700) > 0.1
    # Switching codec on the fly: a second join message changes what it receives.
    [welcome] = [json.loads(t) for t in engine.control(p.pid, Join(codec="opus", channels=2))]
    assert welcome["type"] == "welcome"
    assert welcome["codec"] == "opus"
    run(engine, clock, players, 5)
    assert parse_frame(sink.frames[-1])[0].codec == CODEC_OPUS


@pytest.mark.parametrize("loss", [0.05, 0.20])
def test_random_loss_is_concealed_and_audio_keeps_flowing(clock: Clock, loss: float) -> None:
    engine = make_engine(clock)
    a, _sa = join(engine, "a")
    b, sb = join(engine, "b")
    engine.control(b, Monitor(self_monitor=False))
    rng = random.Random(7)
    player_a = Player(600)
    sent = dropped = 0
    for _ in range(800):
        frame = player_a.frame()
        sent += 1
        if rng.random() >= loss:
            engine.receive(a, frame)
        else:
            dropped += 1
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()
    assert len(sb.frames) == 800  # a frame to b every tick, whatever a's losses
    heard = decode_stream(sb.frames[200:])
    blocks = heard.reshape(-1, BLOCK)
    rms = np.sqrt((blocks**2).mean(axis=1))
    assert (rms > 0.03).mean() > 0.97  # PLC keeps the tone going: almost no silent blocks
    assert tone_level(heard, 600) > 0.1
    engine.refresh_stats()
    inbound = {p["id"]: p for p in engine.stats_json()["participants"]}[a]["in"]
    assert inbound["packets"] == sent - dropped
    assert inbound["concealed"] > 0.6 * dropped
    assert inbound["lost"] > 0.6 * dropped


def test_redundant_copies_fill_gaps(clock: Clock) -> None:
    engine = make_engine(clock)
    a, _ = join(engine, "a")
    _b, _sb = join(engine, "b")
    player = Player(600)
    previous = b""
    for k in range(400):
        planar = player.block()
        payload = player.encoder.encode(planar)
        frame = encode_frame(
            codec=CODEC_OPUS,
            channels=1,
            sequence=k,
            timestamp=k * BLOCK,
            frames=BLOCK,
            payload=payload,
            redundant=previous,
        )
        previous = payload
        if k % 10 != 5:  # every tenth frame lost, its copy rides on the next one
            engine.receive(a, frame)
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()
    engine.refresh_stats()
    inbound = {p["id"]: p for p in engine.stats_json()["participants"]}[a]["in"]
    assert inbound["recovered"] >= 30
    assert inbound["lost"] <= 2


def test_malformed_input_is_rejected_with_the_right_close_code(clock: Clock) -> None:
    engine = make_engine(clock)
    a, _ = join(engine, "a")
    v, _ = join(engine, "viewer", can_send=False)
    good = Player(500).frame()
    with pytest.raises(InputRejected) as info:
        engine.receive(v, good)
    assert info.value.close_code == 1008
    bad_codec = bytes([1, 7]) + good[2:]
    with pytest.raises(InputRejected) as info:
        engine.receive(a, bad_codec)
    assert info.value.close_code == 1003
    for junk in (b"\x01", good[:16], bytes([9]) + good[1:]):
        with pytest.raises(InputRejected) as info:
            engine.receive(a, junk)
        assert info.value.close_code == 1007
    # A 5 ms frame in a 2.5 ms session, and an Opus payload whose TOC says 20 ms.
    long = OpusEncoder(1, 240).encode(np.zeros((1, 240), np.float32))
    wrong_frames = encode_frame(
        codec=CODEC_OPUS, channels=1, sequence=0, timestamp=0, frames=240, payload=long
    )
    with pytest.raises(InputRejected, match="frames must be 120"):
        engine.receive(a, wrong_frames)
    lying = encode_frame(codec=CODEC_OPUS, channels=1, sequence=0, timestamp=0, frames=120, payload=long)
    with pytest.raises(InputRejected, match="not 120 samples") as info:
        engine.receive(a, lying)
    assert info.value.close_code == 1007
    with pytest.raises(InputRejected, match="invalid Opus packet"):
        engine.receive(
            a,
            encode_frame(
                codec=CODEC_OPUS, channels=1, sequence=0, timestamp=0, frames=120, payload=b"\xfb\x3f"
            ),
        )
    # Nothing bad reached the jitter buffer: the engine keeps ticking for everyone.
    engine.receive(a, good)
    engine.tick_once()
    engine.receive("p999", good)  # unknown participant (already gone): ignored


def test_silent_sender_leaves_the_mix_and_comes_back(clock: Clock) -> None:
    engine = make_engine(clock)
    a, _ = join(engine, "a")
    _b, sb = join(engine, "b")
    player = Player(600)
    run(engine, clock, {a: player}, 100)
    assert engine.participant(a).active  # type: ignore[union-attr]
    run(engine, clock, {}, int(5.2 / PERIOD))
    assert not engine.participant(a).active  # type: ignore[union-attr]
    assert engine.participant(a) is not None  # still joined, still listening
    tail = decode_stream(sb.frames[-50:])
    assert float(np.abs(tail).max()) < 1e-3
    run(engine, clock, {a: player}, 200)
    assert engine.participant(a).active  # type: ignore[union-attr]
    assert tone_level(decode_stream(sb.frames[-100:]), 600) > 0.1


def test_slow_listener_drops_oldest_then_is_closed_after_a_second(clock: Clock) -> None:
    engine = make_engine(clock, send_queue_frames=8)
    _a, sa = join(engine, "a")
    b, sb = join(engine, "b")
    # The loop does not deliver for 20 ticks: b's queue keeps the 8 newest frames.
    for _ in range(20):
        clock.now += PERIOD
        engine.tick_once()
    engine.deliver()
    seqs = [parse_frame(f)[0].sequence for f in sb.frames]
    assert seqs == list(range(12, 20))
    assert engine.participant(b).dropped_out == 12  # type: ignore[union-attr]
    # b's socket stops taking audio: after ~1 s of refusals it is closed with 1013, a is not.
    sb.accept = False
    for _ in range(int(0.9 / PERIOD)):
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()
    assert sb.closed is None
    for _ in range(int(0.2 / PERIOD)):
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()
    assert sb.closed is not None
    assert sb.closed[0] == 1013
    assert sa.closed is None


def test_listener_that_catches_up_is_not_closed(clock: Clock) -> None:
    engine = make_engine(clock)
    _, sink = join(engine, "a")
    for k in range(int(3 / PERIOD)):
        sink.accept = k % 100 != 0  # an occasional refusal, then it takes audio again
        clock.now += PERIOD
        engine.tick_once()
        engine.deliver()
    assert sink.closed is None


def test_control_ping_stats_jitter_and_stats_push(clock: Clock) -> None:
    engine = make_engine(clock)
    a, sa = join(engine, "a")
    v, sv = join(engine, "v", can_send=False)
    [pong] = [json.loads(t) for t in engine.control(a, Ping(t=12.5))]
    assert pong["type"] == "pong"
    assert pong["t"] == 12.5
    assert pong["serverTime"] > 0
    assert engine.control(a, Jitter(mode="manual", depth=6)) == []
    [err] = [json.loads(t) for t in engine.control(v, Jitter(mode="safe"))]
    assert err["type"] == "error"
    assert err["code"] == "not_sender"
    run(engine, clock, {a: Player(500)}, int(1.1 / PERIOD))
    # Once a second every participant gets its stats.
    stats_a = sa.of_type("stats")
    assert stats_a
    assert stats_a[-1]["up"]["mode"] == "manual"
    assert stats_a[-1]["up"]["depth"] == 6
    assert stats_a[-1]["down"]["sent"] > 0
    assert stats_a[-1]["server"]["periodMs"] == 2.5
    assert sv.of_type("stats")
    assert sv.of_type("stats")[-1]["up"] is None
    [now] = [json.loads(t) for t in engine.control(a, StatsRequest())]
    assert now["type"] == "stats"


def test_server_added_latency_is_the_jitter_depth(clock: Clock) -> None:
    """Frames arrive evenly just before each tick: the wait is the buffer depth in blocks."""
    engine = make_engine(clock)
    a, _ = join(engine, "a")
    engine.control(a, Jitter(mode="manual", depth=3))
    run(engine, clock, {a: Player(500)}, 800)
    lat = engine.stats_json()["participants"][0]["latencyMs"]
    assert lat["count"] > 700
    # Received at t, buffered 3 blocks, mixed at the tick after: about 3-4 blocks (7.5-10 ms).
    assert 6.5 < lat["p50"] < 11.0
    assert lat["max"] < 12.0
    total = engine.stats_json()["latencyMs"]
    assert total["count"] == lat["count"]
    # What the server added beyond the 3 blocks the buffer was told to hold: the wait for the
    # tick, the tick itself and the limiter, under a block (the bound).
    beyond = engine.stats_json()["engine"]["beyondDepthMs"]
    assert beyond["count"] == lat["count"]
    assert beyond["p50"] == pytest.approx(lat["p50"] - 3 * PERIOD * 1000, abs=0.6)
    assert beyond["max"] < PERIOD * 1000


def test_leave_and_on_empty_and_capacity(clock: Clock) -> None:
    emptied: list[JamEngine] = []
    engine = JamEngine(
        "s", EngineConfig(max_participants=2, fade_in_s=0), clock=clock, on_empty=emptied.append
    )
    a, sa = join(engine, "a")
    b, _ = join(engine, "b")
    with pytest.raises(EngineFull):
        join(engine, "c")
    run(engine, clock, {a: Player(500), b: Player(800)}, 10)
    engine.leave(b)
    engine.leave(b)  # idempotent
    assert [p["name"] for p in sa.of_type("participants")[-1]["participants"]] == ["a"]
    run(engine, clock, {a: Player(500)}, 10)
    c, _ = join(engine, "c")  # the slot is free again
    assert engine.totals()["joined"] == 3  # everyone who was ever in, departed included
    engine.leave(a)
    engine.leave(c)
    assert emptied == [engine]


async def test_real_thread_keeps_an_absolute_schedule() -> None:
    await asyncio.to_thread(warm_up)  # as the app does at startup: no compile inside the schedule
    loop = asyncio.get_running_loop()
    engine = JamEngine("thread", EngineConfig(fade_in_s=0), wake=loop.call_soon_threadsafe)
    sink = Sink()
    p = engine.join("u", "a", can_send=True, sink=sink)
    player = Player(500)
    engine.start()
    t0 = time.monotonic()
    try:
        # Feed at real-time pace from the loop for ~0.6 s while the tick thread mixes.
        for k in range(240):
            engine.receive(p.pid, player.frame())
            await asyncio.sleep(max(0.0, t0 + (k + 1) * PERIOD - time.monotonic()))
        await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(engine.stop)
    assert not engine.running
    st = engine.stats
    start, end = engine.schedule
    due = (end - start) / (PERIOD * 1e9)  # deadlines passed between the first tick and the last
    # No drift: every deadline was either ticked or (after a stall) skipped, nothing more.
    assert st.ticks + st.skipped_ticks - 1 == pytest.approx(due, abs=1.0)
    assert st.ticks > 150
    assert len(sink.frames) >= 0.8 * st.ticks  # delivered through the loop (some may be still queued)
    heard = decode_stream(sink.frames[-100:])
    assert tone_level(heard, 500) > 0.05
    assert st.tick.count == st.ticks
    assert st.tick.max < 0.5


async def test_sessions_start_on_first_join_and_stop_on_last_leave() -> None:
    jam = JamSessions(EngineConfig(fade_in_s=0))
    engine = jam.acquire("s")
    assert engine.running
    assert jam.get("s") is engine
    assert jam.acquire("s") is engine
    a = engine.join("ua", "a", can_send=True, sink=Sink())
    b = engine.join("ub", "b", can_send=False, sink=Sink())
    engine.receive(a.pid, Player(500).frame())
    engine.leave(a.pid)
    assert engine.running
    engine.leave(b.pid)
    assert jam.get("s") is None  # gone from the registry at once: a new join gets a new engine
    await jam.settled()
    assert not engine.running
    assert jam.totals()["counters"]["joined"] == 2
    with pytest.raises(EngineFull):
        engine.join("uc", "c", can_send=True, sink=Sink())
    again = jam.acquire("s")
    assert again is not engine
    assert again.running
    sink = Sink()
    again.join("ud", "d", can_send=True, sink=sink)
    await jam.close()
    assert sink.closed == (1001, "server shutting down")
    assert not again.running
    assert jam.totals()["counters"]["joined"] == 3
    with pytest.raises(RuntimeError, match="shutting down"):
        jam.acquire("other")


def test_log_histogram_percentiles_within_a_bin() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(np.log(0.004), 0.6, 20_000)
    h = LogHistogram()
    for v in values[:10_000]:
        h.record(float(v))
    h.record_many(values[10_000:])
    h.record(float("nan"))  # nothing measured: skipped
    assert h.count == len(values)
    assert h.max == float(values.max())
    assert h.sum == pytest.approx(float(values.sum()))
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(values, q))
        assert abs(h.percentile(q) / exact - 1) < 0.07, q  # bins are 12 % wide
    snap = h.snapshot()
    assert snap["count"] == len(values)
    assert snap["p50"] == pytest.approx(4.0, rel=0.1)  # ms


def test_histogram_bank_rows_match_single_histograms() -> None:
    rng = np.random.default_rng(4)
    bank = HistogramBank(4)
    singles = [LogHistogram() for _ in range(4)]
    for _ in range(200):
        rows = rng.integers(0, 4, 8)
        values = rng.uniform(1e-4, 0.05, 8)
        values[rng.random(8) < 0.1] = np.nan
        bank.record(rows, values)
        for r, v in zip(rows, values, strict=True):
            singles[int(r)].record(float(v))
    for r in range(4):
        row = bank.row(r)
        np.testing.assert_array_equal(row.counts, singles[r].counts)
        assert row.count == singles[r].count
        assert row.max == singles[r].max
        assert row.sum == pytest.approx(singles[r].sum)
    total = bank.total()
    assert total.count == sum(s.count for s in singles)
    bank.reset_row(2)
    assert bank.row(2).count == 0
    assert bank.row(1).count == singles[1].count


def test_histogram_bins_subtract_to_a_window() -> None:
    h = LogHistogram()
    for v in (0.001, 0.002, 0.003):
        h.record(v)
    before = h.bins_json()
    for v in (0.010, 0.011, 0.012, 0.013):
        h.record(v)
    after = h.bins_json()
    window = {k: v - before["counts"].get(k, 0) for k, v in after["counts"].items()}
    w = LogHistogram.from_bins({**after, "counts": {k: v for k, v in window.items() if v}})
    assert w.count == 4
    assert 0.0095 < w.percentile(0.5) < 0.0135
    assert w.max >= 0.013


def _reference_verdict(engine: JamEngine, data: bytes) -> str:
    """What the full parser says about a sender's frame: "ok" or the InputRejected code."""
    try:
        header, payload, redundant = parse_frame(data)
    except FrameError as exc:
        return exc.reason
    if header.frames != engine.block:
        return "bad_frames"
    if header.codec == CODEC_OPUS:
        try:
            if packet_samples(bytes(payload)) != engine.block or (
                len(redundant) and packet_samples(bytes(redundant)) != engine.block
            ):
                return "bad_opus"
        except OpusError:
            return "bad_opus"
    return "ok"


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=3),
    cut=st.integers(0, 70),
)
def test_quick_receive_check_agrees_with_the_full_parser(
    data: st.DataObject, edits: list[tuple[int, int]], cut: int
) -> None:
    """receive() clears the common frame with byte compares; it must accept and refuse exactly
    what parse_frame() + packet_samples() would."""
    engine = make_engine(Clock())
    a, _ = join(engine, "a")
    frame = bytearray(data.draw(st.sampled_from(_SAMPLE_FRAMES)))
    for index, value in edits:
        if index < len(frame):
            frame[index] = value
    raw = bytes(frame[: len(frame) - cut] if cut < len(frame) else frame)
    expected = _reference_verdict(engine, raw)
    before = len(engine.participant(a)._inbox)  # type: ignore[union-attr]
    try:
        engine.receive(a, raw)
        got = "ok"
    except InputRejected as exc:
        got = exc.code
    assert got == expected
    queued = len(engine.participant(a)._inbox) - before  # type: ignore[union-attr]
    assert queued == (1 if got == "ok" else 0)


def _sample_frames() -> list[bytes]:
    mono = Player(500).frame()
    stereo = Player(700, channels=2).frame()
    wide = OpusEncoder(2, BLOCK, bitrate=510_000).encode(np.zeros((2, BLOCK), np.float32))
    with_copy = encode_frame(
        codec=CODEC_OPUS, channels=2, sequence=5, timestamp=600, frames=BLOCK, payload=wide, redundant=wide
    )
    pcm = Player(900, codec=CODEC_PCM16).frame()
    return [mono, stereo, with_copy, pcm]


_SAMPLE_FRAMES = _sample_frames()


class _FanSink(Sink):
    """A sink whose kind writes in batches: the engine must use the fan-out, not send_audio."""

    def __init__(self, fan: _Fan) -> None:
        super().__init__()
        self.fanout = fan

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        raise AssertionError("a fan-out sink got a send_audio call")


class _Fan:
    def __init__(self) -> None:
        self.calls = 0

    def send_audio_many(self, sinks: Sequence[_FanSink], frames: Sequence[bytes]) -> list[int] | None:
        self.calls += 1
        refused = [i for i, s in enumerate(sinks) if not s.accept]
        for s in sinks:
            if s.accept:
                s.frames.extend(frames)
        return refused or None


def test_fan_out_sinks_get_one_call_per_mix_and_laggards_are_still_closed(clock: Clock) -> None:
    engine = make_engine(clock)
    fan = _Fan()
    sinks = [_FanSink(fan) for _ in range(3)]
    players = {
        engine.join(f"u{i}", f"p{i}", can_send=True, sink=s).pid: Player(400 + 300 * i)
        for i, s in enumerate(sinks)
    }
    plain_pid, plain = join(engine, "plain", can_send=False)  # a listener without fan-out
    run(engine, clock, players, 100)
    assert fan.calls == 100  # everyone hears the same mix: one call a tick for the three
    assert all(len(s.frames) == 100 for s in sinks)
    assert len(plain.frames) == 100
    pid0 = next(iter(players))
    p0 = engine.participant(pid0)
    assert p0 is not None
    assert p0.sent == 100
    assert p0.bytes_out == sum(len(f) for f in sinks[0].frames)
    sinks[1].accept = False  # one socket stops taking audio
    run(engine, clock, players, int(1.2 / PERIOD))
    lagging = [engine.participant(pid) for pid in players][1]
    assert lagging is not None
    assert sinks[1].closed is not None
    assert sinks[1].closed[0] == 1013
    assert lagging.dropped_out > 0
    assert sinks[0].closed is None
    assert sinks[2].closed is None
    assert plain.closed is None
    assert engine.participant(plain_pid).sent == len(plain.frames)  # type: ignore[union-attr]


def test_server_added_latency_counts_the_limiter_look_ahead(clock: Clock) -> None:
    engine = make_engine(clock)
    a, _ = join(engine, "a")
    run(engine, clock, {a: Player(500)}, 200)
    stats = engine.stats_json()
    assert stats["engine"]["limiterMs"] == pytest.approx(0.5)  # the smallest look-ahead: 24 samples
    # Frames arrive right before the tick that plays them (depth 1, manual clock): what is left
    # is one block of wait and the limiter's delay.
    assert stats["latencyMs"]["p50"] == pytest.approx(PERIOD * 1000 + 0.5, rel=0.07)


async def test_starting_a_jam_takes_the_heap_out_of_full_collections() -> None:
    """A full collection stops every thread: what the server holds when a jam starts is frozen."""
    gc.unfreeze()
    held = [object()]  # something long-lived the process already had
    engine = JamEngine("gc", EngineConfig(fade_in_s=0))
    try:
        engine.start()
        assert gc.get_freeze_count() > 0
        assert not any(o is held for o in gc.get_objects())  # no collection walks it any more
    finally:
        await asyncio.to_thread(engine.stop)
