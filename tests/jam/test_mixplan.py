"""The personal-mix planner: distinct-mix grouping, overrides, fades, click-free ramps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from realtime.dsp.effects import LimiterBank
from realtime.dsp.mixer import mix_and_limit, mix_matrix, mix_matrix_ramp
from realtime.dsp.units import db_to_gain, pan_gains
from realtime.jam.mixplan import InputDefaults, MixPlan, MixPlanner

CENTRE = math.sqrt(0.5)


def _settled(planner: MixPlanner) -> MixPlan:
    """Run ticks until nothing moves (fades done, ramps done)."""
    for _ in range(planner.fade_blocks + 3):
        plan = planner.plan()
        if plan.gains_end is None and planner.plan() is plan:
            return plan
    raise AssertionError("the plan never settled")


def _band(n: int, *, viewers: int = 0, fade_in_s: float = 0.0) -> MixPlanner:
    planner = MixPlanner(fade_in_s=fade_in_s)
    for i in range(n):
        planner.add(f"p{i}", sends=True, listens=True)
    for i in range(viewers):
        planner.add(f"v{i}", sends=False, listens=True)
    return planner


def _mix(plan: MixPlan, listener: str) -> np.ndarray:
    m = plan.mix_of[listener]
    return plan.gains[2 * m : 2 * m + 2]


def test_default_band_shares_one_mix_and_viewers_hear_it_too() -> None:
    plan = _settled(_band(6, viewers=3))
    assert plan.inputs == tuple(f"p{i}" for i in range(6))
    assert plan.mixes == 1
    assert plan.gains.shape == (2, 6)
    assert plan.gains.dtype == np.float32
    assert plan.gains.flags.c_contiguous
    np.testing.assert_allclose(plan.gains, CENTRE, rtol=1e-6)
    assert set(plan.mix_of) == {*(f"p{i}" for i in range(6)), "v0", "v1", "v2"}
    assert set(plan.mix_of.values()) == {0}
    assert sorted(plan.listeners_of[0]) == sorted(plan.mix_of)


def test_self_monitor_off_for_everyone_gives_one_mix_each_differing_in_their_own_column() -> None:
    planner = _band(5)
    for i in range(5):
        planner.set_self_monitor(f"p{i}", False)
    plan = _settled(planner)
    assert plan.mixes == 5
    for i in range(5):
        rows = _mix(plan, f"p{i}")
        assert (rows[:, i] == 0).all()
        others = np.delete(rows, i, axis=1)
        np.testing.assert_allclose(others, CENTRE, rtol=1e-6)
    # Turning it back on for two of them folds them back into a shared mix.
    planner.set_self_monitor("p0", True)
    planner.set_self_monitor("p1", True)
    plan = _settled(planner)
    assert plan.mixes == 4
    assert plan.mix_of["p0"] == plan.mix_of["p1"]


def test_overrides_set_the_right_gain_pan_and_mute_for_that_listener_only() -> None:
    planner = _band(3, viewers=1)
    planner.set_overrides("p0", gains={"p1": -6.0}, pans={"p1": -1.0, "p2": 0.5}, mutes={"p2": True})
    plan = _settled(planner)
    assert plan.mixes == 2
    rows = _mix(plan, "p0")
    left, right = pan_gains(0.5)
    assert rows[0, 1] == pytest.approx(db_to_gain(-6.0), rel=1e-6)  # hard left: all of it left
    assert rows[1, 1] == 0.0
    assert rows[0, 2] == 0.0  # muted beats the pan
    assert rows[1, 2] == 0.0
    assert rows[:, 0] == pytest.approx([CENTRE, CENTRE], rel=1e-6)
    for other in ("p1", "p2", "v0"):
        np.testing.assert_allclose(_mix(plan, other), CENTRE, rtol=1e-6)
    # A pan alone keeps the constant-power law.
    planner.set_overrides("p0", mutes={"p2": None})
    rows = _mix(_settled(planner), "p0")
    assert rows[0, 2] == pytest.approx(left, rel=1e-6)
    assert rows[1, 2] == pytest.approx(right, rel=1e-6)
    assert rows[0, 2] ** 2 + rows[1, 2] ** 2 == pytest.approx(1.0, rel=1e-5)


def test_null_clears_one_override_and_reset_clears_all() -> None:
    planner = _band(3)
    planner.set_overrides("p0", gains={"p1": -12.0, "p2": -3.0})
    planner.set_overrides("p0", gains={"p1": None})
    rows = _mix(_settled(planner), "p0")
    assert rows[0, 1] == pytest.approx(CENTRE, rel=1e-6)
    assert rows[0, 2] == pytest.approx(CENTRE * db_to_gain(-3.0), rel=1e-6)
    planner.set_overrides("p0", reset=True, pans={"p1": 1.0})
    rows = _mix(_settled(planner), "p0")
    assert rows[0, 2] == pytest.approx(CENTRE, rel=1e-6)
    assert rows[0, 1] == 0.0
    assert rows[1, 1] == pytest.approx(1.0)


def test_listeners_with_the_same_overrides_share_a_mix() -> None:
    planner = _band(4)
    for who in ("p0", "p3"):
        planner.set_overrides(who, gains={"p1": -9.0})
    plan = _settled(planner)
    assert plan.mixes == 2
    assert plan.mix_of["p0"] == plan.mix_of["p3"] != plan.mix_of["p1"]


def test_session_defaults_apply_to_everyone_and_overrides_win() -> None:
    planner = _band(3)
    planner.set_overrides("p2", gains={"p0": 0.0})
    planner.set_defaults("p0", InputDefaults(gain_db=-20.0, pan=-1.0))
    plan = _settled(planner)
    quiet = db_to_gain(-20.0)
    assert _mix(plan, "p1")[:, 0] == pytest.approx([quiet, 0.0], rel=1e-6)
    assert _mix(plan, "p2")[:, 0] == pytest.approx([1.0, 0.0], rel=1e-6)  # own gain, default pan
    planner.set_defaults("p0", InputDefaults(mute=True))
    plan = _settled(planner)
    assert (_mix(plan, "p1")[:, 0] == 0).all()


def test_new_sender_fades_in_over_three_seconds_monotonically_and_click_free() -> None:
    planner = MixPlanner()  # 120-sample blocks at 48 kHz, 3 s fade
    assert planner.fade_blocks == 1200
    planner.add("a", sends=True, listens=True)
    first = planner.plan()
    assert first.gains_end is not None
    assert (first.gains == 0).all()  # starts from silence
    previous_end = first.gains_end
    levels = [float(first.gains_end[0, 0])]
    for _ in range(1199):
        plan = planner.plan()
        assert plan.gains_end is not None
        np.testing.assert_array_equal(plan.gains, previous_end)  # each block starts where the last ended
        previous_end = plan.gains_end
        levels.append(float(plan.gains_end[0, 0]))
    assert all(b > a for a, b in itertools.pairwise(levels))
    assert levels[-1] == pytest.approx(CENTRE, rel=1e-6)
    assert levels[599] == pytest.approx(CENTRE / 2, rel=1e-3)  # linear: half way at 1.5 s
    done = planner.plan()
    assert done.gains_end is None
    np.testing.assert_array_equal(done.gains, previous_end)
    assert planner.plan() is done


def test_a_late_joiner_fades_in_while_the_others_stay_put() -> None:
    planner = _band(2, fade_in_s=0.05)
    _settled(planner)
    planner.add("late", sends=True, listens=True)
    plan = planner.plan()
    assert plan.inputs == ("p0", "p1", "late")
    assert plan.gains_end is not None
    assert (plan.gains[:, 2] == 0).all()
    np.testing.assert_array_equal(plan.gains[:, :2], plan.gains_end[:, :2])
    assert plan.mixes == 1  # the joiner hears the same mix (self-monitor on)


def test_a_change_ramps_over_exactly_one_block() -> None:
    planner = _band(2)
    before = _settled(planner)
    planner.set_overrides("p0", gains={"p1": -6.0})
    ramp = planner.plan()
    assert ramp.version == before.version + 1
    assert ramp.gains_end is not None
    np.testing.assert_array_equal(_mix(ramp, "p0"), _mix(before, "p0"))
    m = ramp.mix_of["p0"]
    assert ramp.gains_end[2 * m, 1] == pytest.approx(CENTRE * db_to_gain(-6.0), rel=1e-6)
    after = planner.plan()
    assert after.gains_end is None
    np.testing.assert_array_equal(after.gains, ramp.gains_end)


def test_audio_through_the_plans_has_no_steps() -> None:
    """Run real blocks through mix_matrix_ramp: a fade and a pan change stay sample-continuous."""
    planner = MixPlanner(fade_in_s=0.05)  # 20 blocks
    planner.add("a", sends=True, listens=True)
    planner.add("b", sends=True, listens=True)
    x = np.ones((2, 120), dtype=np.float32)  # DC in: the output is the gain trajectory
    out: list[np.ndarray] = []
    for tick in range(60):
        if tick == 30:
            planner.set_overrides("a", pans={"b": 1.0}, gains={"a": -30.0})
        plan = planner.plan()
        if plan.gains_end is None:
            y = mix_matrix(plan.gains, x)
        else:
            y = mix_matrix_ramp(plan.gains, plan.gains_end, x)
        out.append(y[2 * plan.mix_of["a"]].copy())
    left = np.concatenate(out)
    # The change takes the left channel from 1.41 to 0.02: as a step that is one 1.4 jump; ramped
    # over a 120-sample block it moves 1.4 / 120 ≈ 0.012 per sample.
    assert np.max(np.abs(np.diff(left))) < 0.013
    assert left[0] >= 0.0
    assert left[-1] == pytest.approx(CENTRE * db_to_gain(-30.0), abs=1e-6)


def test_plans_drive_mix_and_limit() -> None:
    planner = _band(3)
    planner.set_self_monitor("p2", False)
    plan = _settled(planner)
    bank = LimiterBank(plan.mixes)
    x = np.full((3, 120), 0.1, dtype=np.float32)
    out = np.empty((2 * plan.mixes, 120), dtype=np.float32)
    mix_and_limit(plan.gains, x, bank, out)
    m = plan.mix_of["p2"]
    assert out[2 * m, -1] == pytest.approx(0.2 * CENTRE, rel=1e-4)
    assert out[2 * plan.mix_of["p0"], -1] == pytest.approx(0.3 * CENTRE, rel=1e-4)


def test_removing_a_participant_drops_its_column_its_mix_and_overrides_for_it() -> None:
    planner = _band(3, viewers=1)
    planner.set_overrides("p0", gains={"p1": -6.0})
    planner.set_self_monitor("p2", False)
    _settled(planner)
    planner.remove("p1")
    plan = _settled(planner)
    assert plan.inputs == ("p0", "p2")
    assert "p1" not in plan.mix_of
    assert plan.gains.shape[1] == 2
    # p0's override for p1 went with it, so p0 is back in the shared mix.
    assert plan.mix_of["p0"] == plan.mix_of["v0"]
    planner.remove("p2")
    planner.remove("p0")
    planner.remove("v0")
    plan = _settled(planner)
    assert plan.inputs == ()
    assert plan.mixes == 0
    assert plan.gains.shape == (0, 0)


def test_senders_that_do_not_listen_get_a_column_but_no_mix() -> None:
    planner = MixPlanner(fade_in_s=0)
    planner.add("src", sends=True, listens=False)
    planner.add("ear", sends=False, listens=True)
    plan = _settled(planner)
    assert plan.inputs == ("src",)
    assert plan.mix_of == {"ear": 0}
    assert plan.gains.shape == (2, 1)


def test_nothing_changed_means_the_same_plan_object() -> None:
    planner = _band(8, viewers=4)
    plan = _settled(planner)
    version = plan.version
    for _ in range(100):
        assert planner.plan() is plan
    planner.set_overrides("p0", gains={})  # no-op
    planner.set_self_monitor("p0", True)  # already on
    planner.set_defaults("p1", InputDefaults())  # unchanged
    planner.set_overrides("p0", gains={"nobody": -3.0})  # unknown source: ignored
    assert planner.plan() is plan
    assert plan.version == version


def test_bad_input_is_refused_and_changes_nothing() -> None:
    planner = _band(2)
    plan = _settled(planner)
    with pytest.raises(ValueError, match="gain"):
        planner.set_overrides("p0", gains={"p1": -3.0, "p0": float("nan")})
    with pytest.raises(ValueError, match="pan"):
        planner.set_overrides("p0", pans={"p1": 1.5})
    with pytest.raises(ValueError, match="gain"):
        planner.set_overrides("p0", gains={"p1": float("inf")})
    with pytest.raises(KeyError, match="nobody"):
        planner.set_overrides("nobody", gains={"p1": 0.0})
    with pytest.raises(KeyError, match="nobody"):
        planner.remove("nobody")
    with pytest.raises(ValueError, match="already"):
        planner.add("p0", sends=True, listens=True)
    with pytest.raises(ValueError, match="pan"):
        InputDefaults(pan=-2.0)
    with pytest.raises(ValueError, match="gain_db"):
        InputDefaults(gain_db=float("nan"))
    with pytest.raises(ValueError, match="fade_in_s"):
        MixPlanner(fade_in_s=-1)
    assert planner.plan() is plan


def test_minus_inf_gain_is_silence() -> None:
    planner = _band(2)
    planner.set_overrides("p0", gains={"p1": -math.inf})
    assert (_mix(_settled(planner), "p0")[:, 1] == 0).all()
