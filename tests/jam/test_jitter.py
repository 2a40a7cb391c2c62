"""The adaptive jitter buffer against recorded arrival patterns (tests/jam/arrivals.py).

Each pattern asserts what the network physics allows, e.g. Pareto jitter with a 5e-4 tail
beyond 10 ms must settle on a depth that covers ~10 ms, neither 2.5 ms nor 50 ms.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.jam.jitter import JitterBuffer

from . import arrivals as A

TICKS = 24_000  # 60 s of 2.5 ms blocks
HALF = TICKS // 2


def _played(trace: A.Trace) -> list[int]:
    return [p for p in trace.played if p is not None]


def _assert_in_order(trace: A.Trace) -> None:
    played = _played(trace)
    assert all(a < b for a, b in itertools.pairwise(played)), "playout went backwards"


def _assert_books_balance(buf: JitterBuffer) -> None:
    st_ = buf.stats()
    assert st_.packets == st_.played + st_.late + st_.duplicates + st_.overflows + st_.queued


def test_steady_stream_settles_at_the_minimum_depth_without_concealment() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.steady(TICKS), TICKS)
    st_ = trace.stats
    assert st_ is not None
    first = next(k for k, p in enumerate(trace.played) if p is not None)
    assert first <= 5  # 10 ms network delay + 1-block prefetch
    assert trace.played[first:] == list(range(TICKS - first))  # every tick, in order, nothing skipped
    assert set(trace.depth) == {1}
    assert st_.concealed == st_.lost == st_.late == st_.underruns == st_.overflows == 0
    assert max(trace.queued) <= 1
    assert st_.jitter_ms < 1e-6
    _assert_books_balance(buf)


def test_pareto_jitter_grows_the_depth_to_cover_the_tail_and_then_rarely_underruns() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.pareto(TICKS + 100), TICKS)
    st_ = trace.stats
    assert st_ is not None
    # 1.1 % of packets are > 1 block late, so depth 1 or 2 cannot reach 5e-4; 1.3e-4 are > 7 blocks.
    assert 3 <= st_.depth <= 8
    assert min(trace.depth[HALF:]) >= 3
    assert trace.rate(HALF) <= 1e-3  # concealment per block once settled
    assert st_.jitter_ms > 0.1
    assert st_.lost == 0  # nothing was lost in the network: every concealment was a late packet
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_bursts_are_covered_and_latency_drains_back_after_each() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.bursts(TICKS + 100), TICKS)
    st_ = trace.stats
    assert st_ is not None
    # 20 ms held plus one block of phase: 9 ticks without arrivals.
    assert 9 <= st_.depth <= 12
    assert trace.rate(HALF) == 0.0
    # Between bursts (which start at 0.5 s + k·1 s), the queue sits at the target, not above it.
    for k in range(30, 59):
        quiet = trace.queued[int((k + 0.1) * 400) : int((k + 0.45) * 400)]
        assert max(quiet) <= trace.depth[int((k + 0.1) * 400)]
    _assert_in_order(trace)


@pytest.mark.parametrize("p", [0.05, 0.20])
def test_random_loss_is_concealed_one_for_one_without_adding_latency(p: float) -> None:
    arrivals = A.loss(TICKS + 100, p)
    buf = JitterBuffer()
    trace = A.replay(buf, arrivals, TICKS)
    st_ = trace.stats
    assert st_ is not None
    last = max(_played(trace))
    delivered = {a.index for a in arrivals}
    really_lost = sum(1 for i in range(last) if i not in delivered)
    assert st_.lost == really_lost
    assert abs(st_.concealed - st_.lost) <= max(3, 0.02 * st_.lost)
    assert st_.late == 0
    assert set(trace.depth) == {1}  # loss is not lateness: no depth could have played it
    assert max(trace.queued) <= 1
    flowing = sum(1 for x in trace.played if x is not None) / TICKS
    assert flowing >= 1 - p - 0.01
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_redundant_copies_recover_single_losses() -> None:
    arrivals = A.loss(TICKS + 100, 0.05)
    plain = A.replay(JitterBuffer(), arrivals, TICKS)
    buf = JitterBuffer()
    trace = A.replay(buf, arrivals, TICKS, redundant=True)
    st_ = trace.stats
    assert st_ is not None
    assert plain.stats is not None
    # Only back-to-back losses (p² = 0.25 %) stay lost; single ones come back from the next frame.
    assert st_.recovered >= 0.9 * plain.stats.lost
    assert st_.lost <= 0.005 * TICKS
    assert trace.rate(HALF) <= 0.005 < plain.rate(HALF)
    assert st_.depth <= 2  # one block of extra latency buys the recovery
    assert st_.duplicates == 0  # copies of packets already here are not network duplicates
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_a_lost_outage_is_skipped_as_soon_as_packets_return() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.outage(TICKS + 100, start_s=20.0, duration_s=2.0), TICKS)
    st_ = trace.stats
    assert st_ is not None
    assert st_.lost == 800  # 2 s of 2.5 ms blocks
    assert 800 <= st_.concealed <= 802
    back = next(
        k
        for k in range(int(20.0 * 400), TICKS)
        if trace.played[k] is not None and trace.played[k - 1] is None
    )
    assert trace.played[back] == int(22.0 * 400)  # resumes with the first packet after the outage
    assert max(trace.queued[back:]) <= 1  # and no latency was left behind
    assert set(trace.depth) == {1}
    _assert_in_order(trace)


def test_an_outage_delivered_late_resumes_at_the_target_depth_at_once() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.outage(TICKS + 100, start_s=20.0, duration_s=0.5, delivered_late=True), TICKS)
    st_ = trace.stats
    assert st_ is not None
    release = int(20.5 * 400)
    resumed = next(k for k in range(release, TICKS) if trace.played[k] is not None)
    assert resumed <= release + 10
    # The 200 packets of the outage came as one flood after 0.5 s of concealment: playing them
    # now would add 0.5 s of latency. They are dropped when playout resumes, not after a hold.
    assert max(trace.queued[resumed:]) <= max(trace.depth[resumed:])
    assert trace.played[resumed] >= release - trace.depth[resumed]
    assert st_.overflows >= 150
    assert st_.lost == 0
    assert st_.late == 0
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_fast_sender_clock_is_bounded_by_dropping_the_oldest() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.drift(TICKS + 200, +1000), TICKS)  # 0.1 % fast: 24 extra packets
    st_ = trace.stats
    assert st_ is not None
    assert 15 <= st_.overflows <= 40
    assert st_.concealed <= 2
    assert max(trace.queued) <= 3  # bounded: never grows with time
    assert max(trace.queued[HALF:]) <= max(trace.queued[:HALF]) + 1
    _assert_in_order(trace)


def test_slow_sender_clock_is_absorbed_by_concealment() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.drift(TICKS, -1000), TICKS)  # 0.1 % slow: 24 packets short
    st_ = trace.stats
    assert st_ is not None
    assert 15 <= st_.concealed <= 40
    assert st_.lost == 0
    assert st_.late == 0
    assert max(trace.queued) <= 4
    assert st_.depth <= 3
    _assert_in_order(trace)


def test_reordering_costs_little_and_never_plays_out_of_order() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.reordered(TICKS + 100), TICKS)
    st_ = trace.stats
    assert st_ is not None
    assert st_.depth >= 2  # a packet overtaken by 1.6 blocks needs the room
    assert trace.rate(HALF) <= 1e-3
    assert st_.late <= 20
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_duplicates_are_counted_and_dropped() -> None:
    arrivals = A.duplicated(TICKS + 100)
    copies = len(arrivals) - (TICKS + 100)
    buf = JitterBuffer()
    trace = A.replay(buf, arrivals, TICKS)
    st_ = trace.stats
    assert st_ is not None
    assert copies > 1000
    last = max(_played(trace))
    heard = [a for a in arrivals if a.arrival_s <= (TICKS - 1) * A.BLOCK_S + 0.0011]
    assert st_.duplicates == len(heard) - len({a.index for a in heard})
    assert st_.concealed == 0
    assert _played(trace) == list(range(last + 1))
    _assert_books_balance(buf)


@pytest.mark.parametrize("make", [A.steady, A.pareto])
def test_sequence_wrap_at_2_32_changes_nothing(make: object) -> None:
    assert callable(make)
    start = 2**32 - 3000  # wraps 7.5 s in
    plain = A.replay(JitterBuffer(), make(TICKS // 2), TICKS // 2)
    wrapped = A.replay(JitterBuffer(), make(TICKS // 2, start_seq=start), TICKS // 2)
    assert wrapped.played == plain.played
    assert wrapped.depth == plain.depth
    assert wrapped.stats == plain.stats


def test_manual_depth_is_honoured_and_changed_live() -> None:
    buf = JitterBuffer(mode="manual", manual_depth=4)
    arrivals = A.steady(4000)
    trace = A.replay(buf, arrivals[:1000], 1000)
    assert set(trace.depth[10:]) == {4}
    assert trace.queued[-1] == 3  # 4 before each get, 3 after
    before = buf.stats()
    buf.set_mode("manual", 8)  # deeper: takes effect on the very next get
    _continue(buf, arrivals, 1000, 1100)
    after = buf.stats()
    assert after.depth == 8
    assert after.concealed - before.concealed == 4  # four blocks of PLC bought the extra latency once
    assert after.queued == 7
    buf.set_mode("manual", 2)  # shallower: the oldest go at once
    _continue(buf, arrivals, 1100, 1102)
    final = buf.stats()
    assert final.depth == 2
    assert final.queued == 1
    assert final.overflows - after.overflows == 6
    _assert_books_balance(buf)


def _continue(buf: JitterBuffer, arrivals: list[A.Arrival], start: int, stop: int) -> None:
    """Run ticks ``start … stop - 1`` of a replay already at tick ``start``."""
    for k in range(start, stop):
        t = k * A.BLOCK_S + 0.0011
        for a in arrivals:
            if (k - 1) * A.BLOCK_S + 0.0011 < a.arrival_s <= t:
                buf.put(a.seq, a.payload, a.arrival_s)
        buf.get()


def test_safe_mode_adds_the_margin_to_auto_and_switches_live() -> None:
    buf = JitterBuffer(mode="safe")
    arrivals = A.steady(3000)
    trace = A.replay(buf, arrivals[:1000], 1000)
    assert set(trace.depth[10:]) == {3}  # auto 1 + margin 2
    assert buf.stats().auto_depth == 1
    buf.set_mode("safe", 5)
    _continue(buf, arrivals, 1000, 1010)
    assert buf.depth == 6
    assert buf.stats().queued == 5
    buf.set_mode("auto")
    _continue(buf, arrivals, 1010, 1012)
    assert buf.depth == 1
    assert buf.stats().queued == 0
    assert buf.mode == "auto"


def test_depth_shrinks_slowly_after_the_jitter_stops() -> None:
    calm_from = 8000  # 20 s of Wi-Fi, then a wire
    buf = JitterBuffer()
    trace = A.replay(buf, A.pareto(TICKS + 100, until=calm_from), TICKS)
    calm = calm_from + 4  # the last jittery packet has arrived
    assert trace.depth[calm] >= 3
    # The statistic remembers 15 s of errors, then the IIR shrinks with a 4 s time constant.
    assert min(trace.depth[calm : calm + 10 * 400]) >= 2
    assert trace.depth[-1] == 1
    steps = [b - a for a, b in zip(trace.depth[calm:], trace.depth[calm + 1 :], strict=False)]
    assert min(steps) >= -1
    assert max(steps) <= 0


class _FrozenIIR(JitterBuffer):
    tau_up_s = 1e9  # the statistic can no longer raise the depth: only bumps can


def test_each_real_lateness_bumps_one_block_at_once_but_at_most_every_half_second() -> None:
    buf = _FrozenIIR()
    # From 5 s on, every 40th packet (every 0.1 s) is 12 blocks late.
    trace = A.replay(buf, A.late_spikes(8000, every=40, by_blocks=12, start=2000), 8000)
    changes = [k for k in range(1, 8000) if trace.depth[k] > trace.depth[k - 1]]
    assert changes, "no bump"
    first_late = 2000 + 4 + 12  # index 2000 arrives 12 blocks late
    assert changes[0] <= first_late + 1  # immediately, not after an IIR rise time
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert all(g >= round(JitterBuffer.bump_gap_s / A.BLOCK_S) for g in gaps)
    assert len(changes) >= 5  # the depth keeps climbing while the lateness persists


def test_pause_flagged_resync_is_not_an_error_but_an_unflagged_one_is() -> None:
    flagged = JitterBuffer()
    trace = A.replay(flagged, A.paused(8000, at=2000, pause=2000, flag=True), 8000)
    assert set(trace.depth) == {1}
    assert flagged.stats().late == 0
    assert trace.played[-1] is not None
    assert trace.played[-1] > 5000
    unflagged = JitterBuffer()
    trace = A.replay(unflagged, A.paused(8000, at=2000, pause=2000, flag=False), 8000)
    # Without the flag the first packet after the pause looks 5 s late: the buffer bumps.
    assert max(trace.depth[4000:4100]) >= 2


def test_an_unflagged_restart_reanchors_after_three_packets() -> None:
    buf = JitterBuffer()
    trace = A.replay(buf, A.restarted(4000, at=2000, new_seq=123_456_789), 4000)
    st_ = buf.stats()
    assert st_.late == 2  # the first two far-away packets, until the third confirms the restart
    assert trace.played[-1] is not None
    assert trace.played[-1] >= 3990
    assert st_.lost <= 2
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_reset_forgets_everything_but_the_settings() -> None:
    buf = JitterBuffer(mode="manual", manual_depth=3)
    A.replay(buf, A.steady(500), 500)
    buf.reset()
    st_ = buf.stats()
    assert (st_.packets, st_.played, st_.queued, st_.concealed) == (0, 0, 0, 0)
    assert buf.mode == "manual"
    assert buf.depth == 3
    assert buf.get() is None
    assert buf.stats().concealed == 0


def test_get_before_any_packet_and_during_first_prefetch_is_not_concealment() -> None:
    buf = JitterBuffer(mode="manual", manual_depth=3)
    assert buf.get() is None
    buf.put(10, b"a", 0.0)
    buf.put(11, b"b", 0.0025)
    assert buf.get() is None
    buf.put(12, b"c", 0.005)
    assert buf.get() == b"a"
    assert buf.stats().concealed == 0


def test_reordered_start_plays_from_the_earliest_packet() -> None:
    buf = JitterBuffer(mode="manual", manual_depth=2)
    buf.put(6, b"6", 0.0)
    buf.put(5, b"5", 0.0001)
    assert buf.get() == b"5"
    assert buf.get() == b"6"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_s": 0}, "block_s"),
        ({"block_s": float("nan")}, "block_s"),
        ({"mode": "turbo"}, "jitter mode"),
        ({"manual_depth": 0}, "manual_depth"),
        ({"manual_depth": 21}, "manual_depth"),
        ({"safe_margin": -1}, "safe_margin"),
        ({"min_depth": 0}, "min_depth"),
        ({"min_depth": 5, "max_depth": 4}, "min_depth"),
        ({"capacity": 30}, "capacity"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JitterBuffer(**kwargs)  # type: ignore[arg-type]


def test_bad_live_changes_are_refused_and_change_nothing() -> None:
    buf = JitterBuffer(mode="manual", manual_depth=4)
    with pytest.raises(ValueError, match="jitter mode"):
        buf.set_mode("fast")
    with pytest.raises(ValueError, match="manual depth"):
        buf.set_mode("manual", 99)
    with pytest.raises(ValueError, match="manual depth"):
        buf.set_mode("manual", True)
    assert buf.mode == "manual"
    buf.put(0, b"x", 0.0)
    for _ in range(5):
        buf.get()
    assert buf.depth == 4


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(-40, 80), st.booleans()),
        st.tuples(st.just("far"), st.integers(0, 2**32 - 1), st.booleans()),
        st.tuples(st.just("red"), st.integers(-40, 80), st.booleans()),
        st.tuples(st.just("get"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("mode"), st.integers(0, 5), st.booleans()),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops, base=st.integers(0, 2**32 - 1))
def test_random_interleavings_never_raise_and_the_books_balance(
    ops: list[tuple[str, int, bool]], base: int
) -> None:
    buf = JitterBuffer(capacity=48, max_depth=12)
    sent: dict[bytes, int] = {}
    now = 0.0
    cursor = 0
    returned = 0
    for kind, value, flag in ops:
        now += 0.001
        if kind in ("put", "red", "far"):
            seq = (base + cursor + value) % 2**32 if kind != "far" else value
            payload = seq.to_bytes(4, "big")
            sent[payload] = seq
            if kind == "red":
                buf.put_redundant(seq, payload, now)
            else:
                buf.put(seq, payload, now, resync=flag and kind == "far")
            cursor += 1 if kind == "put" else 0
        elif kind == "get":
            for _ in range(value):
                out = buf.get()
                if out is not None:
                    assert out in sent  # only ever what was put
                    returned += 1
        else:
            buf.set_mode(("auto", "safe", "manual")[value % 3], 1 + value if value % 3 == 2 else None)
        s = buf.stats()
        assert s.packets == s.played + s.late + s.duplicates + s.overflows + s.queued
        assert 0 <= s.queued <= 48
        assert 1 <= s.depth <= 12
        assert 1 <= s.auto_depth <= 12
        assert s.played == returned
        assert min(s.lost, s.late, s.concealed, s.underruns, s.overflows, s.recovered) >= 0
        assert s.recovered <= s.packets


def test_a_route_change_is_counted_once_not_as_a_path_that_stays_late() -> None:
    """From 10 s on every packet takes 5 ms longer, for good: one stall, then back to 1 block.

    A statistic that measured lateness against the old fastest path would see every later
    packet 2 blocks late and keep the buffer deep for as long as the change lasts.
    """
    sends = A._sends(TICKS + 100)
    delays = [A.BASE_DELAY_S + (0.005 if s >= 10.0 else 0.0) for s in sends]
    buf = JitterBuffer()
    trace = A.replay(buf, A._stream(sends, delays), TICKS)
    st_ = trace.stats
    assert st_ is not None
    assert set(trace.depth[: 10 * 400]) == {1}
    assert max(trace.depth) <= 2  # at most the one-block bump of the stall itself
    assert set(trace.depth[20 * 400 :]) == {1}
    assert st_.concealed <= 4  # the 2 blocks the change cost, once
    assert st_.lost == 0
    _assert_in_order(trace)
    _assert_books_balance(buf)


def test_the_auto_depth_does_not_depend_on_how_deep_the_buffer_may_go() -> None:
    """The decision reads a histogram of lateness: a larger max_depth only adds empty columns."""
    arrivals = A.pareto(TICKS // 2 + 100)
    shallow = A.replay(JitterBuffer(), arrivals, TICKS // 2)
    deep = A.replay(JitterBuffer(max_depth=60, capacity=128), arrivals, TICKS // 2)
    assert deep.depth == shallow.depth
    assert deep.played == shallow.played


def test_a_client_that_sent_ahead_before_the_first_tick_starts_at_the_target_depth() -> None:
    # A browser's first frames can pile up while its socket opens: the queue must not start
    # as deep as that pile (each queued block is 2.5 ms for the whole jam).
    buf = JitterBuffer(mode="manual", manual_depth=2)
    for seq in range(10):
        buf.put(seq, bytes([seq]), seq * 0.0001)
    assert buf.get() == bytes([8])
    assert buf.get() == bytes([9])
    st_ = buf.stats()
    assert st_.overflows == 8
    assert st_.concealed == st_.lost == st_.late == 0
