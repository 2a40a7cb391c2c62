"""The processing graph: clips, chains, pan laws, routing, mute/solo, incremental updates."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pycrdt
import pytest
from numpy.typing import NDArray

from realtime.dsp import graph_kernels
from realtime.dsp.effects import Compressor, Equalizer, Limiter
from realtime.dsp.graph import Graph, clip_frames, session_end_frame, strip_gains
from realtime.dsp.units import db_to_gain, pan_gains
from realtime.session.schema import (
    Clip,
    Master,
    SessionDocument,
    SessionInfo,
    Track,
    read_document,
)

from .conftest import FS, max_step, sine

F32 = NDArray[np.float32]
DEFAULT_MASTER = Master()
NO_LIMITER = Master(limiter=False)


def doc_of(*tracks: Track, master: Master = DEFAULT_MASTER) -> SessionDocument:
    return SessionDocument(SessionInfo(master=master), tracks)


def track(tid: str, *clips: Clip, **fields: Any) -> Track:
    return Track(tid, fields.pop("name", tid.upper()), clips=clips, **fields)


def clip(asset: str, start: float = 0.0, **fields: Any) -> Clip:
    return Clip(fields.pop("id", "c"), asset, start, **fields)


def q24(x: NDArray[np.floating]) -> F32:
    """Values a 24-bit asset can hold (what the asset store gives back)."""
    return (np.round(np.asarray(x, dtype=np.float64) * 2**23) / 2**23).astype(np.float32)


def run(graph: Graph, frames: int, block: int = 1000, t0: int = 0, compensate: bool = True) -> F32:
    """Render ``frames`` timeline frames from ``t0`` in blocks, latency compensated."""
    lat = graph.latency if compensate else 0
    total = frames + lat
    out = np.zeros((2, total), dtype=np.float32)
    for s in range(0, total, block):
        n = min(block, total - s)
        out[:, s : s + n] = graph.render_block(t0 + s, n)
    return out[:, lat:]


def render(
    doc: SessionDocument, assets: Mapping[str, F32], frames: int, block: int = 1000, **options: Any
) -> F32:
    with Graph(assets, block=block, **options) as graph:
        graph.update(doc)
        return run(graph, frames, block)


@pytest.fixture
def noise(rng: np.random.Generator) -> F32:
    return q24(rng.uniform(-0.5, 0.5, (2, 24000)))


# --------------------------------------------------------------------------------------------
# Null tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [64, 1000, 4096])
def test_stereo_track_at_unity_is_bit_identical(noise: F32, block: int) -> None:
    doc = doc_of(track("t", clip("a")))  # master limiter on (default), signal below its ceiling
    with Graph({"a": noise}, block=block) as graph:
        graph.update(doc)
        assert graph.latency > 0
        y = run(graph, noise.shape[1], block)
    np.testing.assert_array_equal(y, noise)


@pytest.mark.parametrize("channels", [1, 2])
def test_track_plus_phase_inverted_copy_is_silent(rng: np.random.Generator, channels: int) -> None:
    x = q24(rng.uniform(-0.4, 0.4, (channels, 12000)))
    fx = (
        {"type": "eq", "bands": [{"type": "peaking", "freq": 800.0, "gainDb": 6.0, "q": 1.0}]},
        {"type": "compressor", "thresholdDb": -20.0},
    )
    common = {"gain_db": -3.0, "pan": 0.3, "effects": fx}
    doc = doc_of(
        track("a", clip("x"), **common),
        track("b", clip("x"), phase_invert=True, **common),
    )
    y = render(doc, {"x": x}, 12000)
    assert not y.any()
    alone = render(doc_of(track("a", clip("x"), **common)), {"x": x}, 12000)
    assert np.abs(alone).max() > 0.05


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "offset", "k"),
    [(0.0, 0.0, 0), (0.5, 0.0, 100), (1.25, 0.1, 4800), (0.01, 0.2, 12000), (2.0 / 48000, 0.0, 0)],
)
@pytest.mark.parametrize("block", [100, 1024])
def test_clip_placement_to_the_sample(start: float, offset: float, k: int, block: int) -> None:
    asset = np.zeros((2, 24000), dtype=np.float32)
    asset[:, k] = 0.5
    doc = doc_of(track("t", clip("a", start, offset=offset)))
    y = render(doc, {"a": asset}, 96000, block)
    expected = round(start * FS) + (k - round(offset * FS))
    hits = np.flatnonzero(y[0])
    assert list(hits) == [expected]
    assert y[0, expected] == 0.5
    assert y[1, expected] == 0.5


def test_clip_frames_rounding_and_limits() -> None:
    c = clip_frames(1.0, 0.5, 0.0, 0.0, 0.0, 48000 * 2, FS)
    assert c is not None
    assert (c.start, c.offset, c.length, c.end) == (48000, 24000, 72000, 120000)
    c = clip_frames(0.0, 0.0, 10.0, 0.0, 0.0, 1000, FS)  # longer than its asset: cut
    assert c is not None
    assert c.length == 1000
    assert clip_frames(0.0, 1.0, 0.0, 0.0, 0.0, 1000, FS) is None  # offset past the end
    c = clip_frames(0.0, 0.0, 0.01, 1.0, 1.0, 48000, FS)  # fades cut to the clip
    assert c is not None
    assert (c.length, c.fade_in, c.fade_out) == (480, 480, 480)


def test_clip_length_and_offset_select_the_asset_range() -> None:
    asset = np.arange(1, 1001, dtype=np.float32).reshape(1, -1) / 2048
    doc = doc_of(track("t", clip("a", 0.001, offset=0.002, length=0.003)), master=NO_LIMITER)
    y = render(doc, {"a": asset}, 600)
    g = pan_gains(0.0)[0]
    got = y[0] / np.float32(g)
    nz = np.flatnonzero(y[0])
    assert (nz[0], nz[-1]) == (48, 48 + 144 - 1)
    np.testing.assert_allclose(got[48 : 48 + 144], asset[0, 96 : 96 + 144], rtol=1e-6)


def test_fades_and_clip_gain_are_linear_ramps() -> None:
    ones = np.ones((2, 10000), dtype=np.float32)
    doc = doc_of(
        track("t", clip("a", 0.0, length=0.1, fade_in=0.01, fade_out=0.02, gain_db=-6.0)),
        master=NO_LIMITER,
    )
    for block in (64, 1000):
        y = render(doc, {"a": ones}, 5000, block)
        n = np.arange(4800)
        expected = np.minimum(1.0, n / 480) * np.minimum(1.0, (4800 - 1 - n) / 960) * db_to_gain(-6.0)
        np.testing.assert_allclose(y[0, :4800], expected, rtol=1e-6, atol=1e-7)
        assert y[0, 0] == 0.0
        assert y[0, 4799] == 0.0
        assert not y[:, 4800:].any()


def test_overlapping_clips_sum() -> None:
    a = np.full((2, 4800), 0.25, dtype=np.float32)
    b = np.full((2, 4800), 0.125, dtype=np.float32)
    doc = doc_of(
        track("t", clip("a", 0.0, id="1"), clip("b", 0.05, id="2")),
        master=NO_LIMITER,
    )
    y = render(doc, {"a": a, "b": b}, 9600)
    assert set(np.unique(y[0, :2400])) == {0.25}
    assert set(np.unique(y[0, 2400:4800])) == {0.375}
    assert set(np.unique(y[0, 4800:7200])) == {0.125}
    assert not y[:, 7200:].any()


def test_add_clip_kernel_matches_python() -> None:
    rng = np.random.default_rng(1)
    src = rng.standard_normal((1, 500)).astype(np.float32)
    a = np.zeros((2, 300), dtype=np.float32)
    b = a.copy()
    graph_kernels.add_clip(a, src, 10, 40, 200, 0.7, 50, 80, 30, 260)
    graph_kernels._add_clip(b, src, 10, 40, 200, 0.7, 50, 80, 30, 260)
    np.testing.assert_array_equal(a, b)
    i = 30 + np.arange(200)
    g = 0.7 * np.minimum(1, i / 50) * np.minimum(1, (260 - 1 - i) / 80)
    np.testing.assert_allclose(a[1, 10:210], src[0, 40:240] * g, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("src_channels", [1, 2])
def test_copy_and_accumulate_kernels_match_python(src_channels: int) -> None:
    rng = np.random.default_rng(2)
    src = rng.standard_normal((src_channels, 64)).astype(np.float32)
    a = np.zeros((2, 64), dtype=np.float32)
    b = a.copy()
    graph_kernels.copy_scaled(src, a, 50, -0.5)
    graph_kernels._copy_scaled(src, b, 50, -0.5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[1, :50], src[-1, :50] * np.float32(-0.5))
    assert not a[:, 50:].any()
    dst = rng.standard_normal((2, 64)).astype(np.float32)
    c, d = dst.copy(), dst.copy()
    graph_kernels.accumulate(c, a, 64)
    graph_kernels._accumulate(d, a, 64)
    np.testing.assert_array_equal(c, d)
    np.testing.assert_allclose(c, dst + a, rtol=1e-6)


def test_missing_asset_is_silent_and_reported(noise: F32) -> None:
    doc = doc_of(track("t", clip("gone")), track("u", clip("a")))
    with Graph({"a": noise}) as graph:
        graph.update(doc)
        assert any("gone" in p and "missing" in p for p in graph.problems)
        y = run(graph, 24000)
    np.testing.assert_array_equal(y, noise)


def test_session_end_frame() -> None:
    doc = doc_of(
        track("t", clip("a", 1.0, id="1"), clip("a", 0.0, length=0.5, id="2")),
        track("b", clip("a", 9.0), kind="bus"),  # buses play no clips
    )
    assert session_end_frame(doc, lambda a: 24000 if a == "a" else None) == 48000 + 24000
    assert session_end_frame(doc, lambda a: None) == 0


# --------------------------------------------------------------------------------------------
# Pan laws
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pan", [-1.0, -0.5, 0.0, 0.3, 1.0])
def test_pan_laws(pan: float) -> None:
    mono = np.full((1, 2000), 0.5, dtype=np.float32)
    stereo = np.full((2, 2000), 0.5, dtype=np.float32)
    cp = pan_gains(pan)
    y = render(doc_of(track("t", clip("m"), pan=pan), master=NO_LIMITER), {"m": mono}, 2000)
    np.testing.assert_allclose(y[:, 1000], [0.5 * cp[0], 0.5 * cp[1]], rtol=1e-6)
    y = render(doc_of(track("t", clip("s"), pan=pan), master=NO_LIMITER), {"s": stereo}, 2000)
    balance = [min(1.0, math.sqrt(2) * cp[0]), min(1.0, math.sqrt(2) * cp[1])]
    np.testing.assert_allclose(y[:, 1000], [0.5 * balance[0], 0.5 * balance[1]], rtol=1e-6)
    assert max(balance) == 1.0


def test_strip_gains() -> None:
    assert strip_gains(0.0, 0.0, stereo=True) == (1.0, 1.0)
    left, right = strip_gains(0.0, 0.0, stereo=False)
    assert left == pytest.approx(math.sqrt(0.5))
    assert right == pytest.approx(math.sqrt(0.5))
    assert strip_gains(-6.0, -1.0, stereo=True) == (db_to_gain(-6.0), 0.0)


def test_a_stereo_clip_makes_the_track_stereo() -> None:
    mono = np.full((1, 1000), 0.5, dtype=np.float32)
    stereo = np.full((2, 1000), 0.25, dtype=np.float32)
    doc = doc_of(track("t", clip("m", 0.0, id="1"), clip("s", 0.0, id="2")), master=NO_LIMITER)
    y = render(doc, {"m": mono, "s": stereo}, 1000)
    # mono clip on a stereo track feeds both sides; balance law at the centre is unity
    assert set(np.unique(y)) == {0.75}


# --------------------------------------------------------------------------------------------
# Routing, mute and solo
# --------------------------------------------------------------------------------------------

LEVELS = {"a": 2.0**-3, "b": 2.0**-4, "c": 2.0**-5}  # distinct bits: the sum says who is heard


def _routing_doc(flags: dict[str, tuple[bool, bool]]) -> SessionDocument:
    """Sources a, b → master; c → bus x → master. flags: id → (solo, mute)."""

    def t(tid: str, **kw: Any) -> Track:
        solo, mute = flags[tid]
        return track(tid, *([clip(tid)] if tid in LEVELS else []), solo=solo, mute=mute, **kw)

    return doc_of(t("a"), t("b"), t("c", output="x"), t("x", kind="bus"), master=NO_LIMITER)


def _expected_heard(flags: dict[str, tuple[bool, bool]]) -> set[str]:
    """The DAW rules, written out for this layout independently of the graph's code."""
    solo = {k: s for k, (s, _) in flags.items()}
    mute = {k: m for k, (_, m) in flags.items()}
    any_solo = any(solo.values())

    def audible(node: str) -> bool:
        if mute[node]:
            return False
        if not any_solo:
            return True
        if node == "x":
            return solo["x"] or solo["c"]
        return solo[node] or (node == "c" and solo["x"])

    heard = {s for s in ("a", "b") if audible(s)}
    if audible("c") and audible("x"):
        heard.add("c")
    return heard


STATES = [(False, False), (True, False), (False, True), (True, True)]  # (solo, mute)


@pytest.mark.parametrize(
    "combo", list(itertools.product(STATES, repeat=4)), ids=lambda c: "".join("-SMB"[s + 2 * m] for s, m in c)
)
def test_mute_solo_truth_table(combo: tuple[tuple[bool, bool], ...]) -> None:
    flags = dict(zip(("a", "b", "c", "x"), combo, strict=True))
    assets = {k: np.full((2, 256), v, dtype=np.float32) for k, v in LEVELS.items()}
    y = render(_routing_doc(flags), assets, 256, 256)
    expected = sum(LEVELS[s] for s in _expected_heard(flags))
    assert set(np.unique(y)) == {np.float32(expected)}


def test_buses_sum_their_inputs_then_run_their_chain() -> None:
    a = np.full((2, 2000), 0.25, dtype=np.float32)
    b = np.full((2, 2000), 0.125, dtype=np.float32)
    doc = doc_of(
        track("a", clip("a"), output="bus1"),
        track("b", clip("b"), output="bus1"),
        track("bus1", kind="bus", gain_db=-6.0, output="bus2"),
        track("bus2", kind="bus", pan=-1.0),
        master=NO_LIMITER,
    )
    with Graph({"a": a, "b": b}) as graph:
        graph.update(doc)
        assert graph.problems == ()
        y = run(graph, 2000)
        outputs = graph.track_outputs
        np.testing.assert_array_equal(outputs["a"], a[:, :1000])
        np.testing.assert_allclose(outputs["bus1"], 0.375 * db_to_gain(-6.0), rtol=1e-6)
    np.testing.assert_allclose(y[0], 0.375 * db_to_gain(-6.0), rtol=1e-6)
    assert not y[1].any()


def test_routing_cycles_and_bad_outputs_go_to_master() -> None:
    a = np.full((2, 500), 0.25, dtype=np.float32)
    doc = doc_of(
        track("a", clip("a"), output="x"),
        track("x", kind="bus", output="y"),
        track("y", kind="bus", output="x"),
        track("b", clip("a"), output="nope"),
        track("c", clip("a"), output="b"),  # not a bus
        master=NO_LIMITER,
    )
    with Graph({"a": a}) as graph:
        graph.update(doc)
        problems = " | ".join(graph.problems)
        assert "routing cycle" in problems
        assert "'nope' is not a bus" in problems
        assert "'b' is not a bus" in problems
        y = run(graph, 500)
    assert set(np.unique(y)) == {np.float32(0.75)}


def test_schema_reads_routing_phase_and_master() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    session = doc.get("session", type=pycrdt.Map)
    session["master"] = pycrdt.Map({"gainDb": -3.0, "limiter": False, "ceilingDb": -0.3})
    tracks = doc.get("tracks", type=pycrdt.Map)
    tracks["a"] = pycrdt.Map({"name": "A", "output": "bus", "phaseInvert": True})
    tracks["b"] = pycrdt.Map({"name": "B", "output": 7, "phaseInvert": "yes"})
    tracks["c"] = pycrdt.Map({"name": "C", "output": "master"})
    tracks["bus"] = pycrdt.Map({"name": "Bus", "kind": "bus"})
    read = read_document(doc)
    by_id = {t.id: t for t in read.tracks}
    assert read.session.master == Master(gain_db=-3.0, limiter=False, ceiling_db=-0.3)
    assert (by_id["a"].output, by_id["a"].phase_invert) == ("bus", True)
    assert (by_id["b"].output, by_id["b"].phase_invert) == (None, False)
    assert by_id["c"].output is None
    assert any("tracks.b.output" in p for p in read.problems)
    assert any("tracks.b.phaseInvert" in p for p in read.problems)
    session["master"] = pycrdt.Map({"ceilingDb": 3.0, "limiter": 1})
    read = read_document(doc)
    assert read.session.master == Master(ceiling_db=0.0)
    assert any("session.master.limiter" in p for p in read.problems)


# --------------------------------------------------------------------------------------------
# Master
# --------------------------------------------------------------------------------------------


def test_master_gain_and_limiter(rng: np.random.Generator) -> None:
    loud = q24(rng.uniform(-0.99, 0.99, (2, 24000)))
    y = render(doc_of(track("t", clip("a")), master=Master(ceiling_db=-6.0)), {"a": loud}, 24000)
    assert np.abs(y).max() <= db_to_gain(-6.0) * 1.0001
    y = render(doc_of(track("t", clip("a")), master=Master(gain_db=-6.0, limiter=False)), {"a": loud}, 24000)
    np.testing.assert_allclose(y, loud * db_to_gain(-6.0), rtol=1e-6)


def test_master_settings_update_in_place() -> None:
    with Graph() as graph:
        graph.update(doc_of())
        limiter = graph._limiter
        assert isinstance(limiter, Limiter)
        graph.update(doc_of(master=Master(ceiling_db=-3.0)))
        assert graph._limiter is limiter
        assert limiter.ceiling_db == -3.0
        graph.update(doc_of(master=NO_LIMITER))
        assert graph.latency == 0


# --------------------------------------------------------------------------------------------
# Updates: click-free, incremental
# --------------------------------------------------------------------------------------------


def _steady_step(freq: float, amplitude: float) -> float:
    """max |Δ| of a steady sine: 2A·sin(πf/fs) (as in test_smoothing)."""
    return 2.0 * amplitude * float(np.sin(np.pi * freq / FS))


@pytest.mark.parametrize(
    "change",
    [
        {"gain_db": -30.0},
        {"pan": 1.0},
        {"gain_db": 6.0, "pan": -0.7},
        {"mute": True},
        {"phase_invert": True},
        {"solo": True},  # soloing the other track silences this one
    ],
)
@pytest.mark.parametrize("block", [120, 1000])
def test_step_changes_between_blocks_are_click_free(change: dict[str, Any], block: int) -> None:
    freq, amp = 437.0, 0.4
    x = np.stack([sine(freq, 24000, amp)] * 2).astype(np.float32)
    silent = np.zeros((2, 24000), dtype=np.float32)
    before = track("t", clip("x"))
    other = track("o", clip("z"))
    if change == {"solo": True}:
        after_doc = doc_of(before, dataclasses.replace(other, solo=True), master=NO_LIMITER)
    else:
        after_doc = doc_of(dataclasses.replace(before, **change), other, master=NO_LIMITER)
    change_at = 12000  # a block boundary for both sizes, where |sine| is far from 0
    assert abs(x[0, change_at]) > 0.2

    def go(doc_after: SessionDocument, hard: bool = False) -> F32:
        out = np.zeros((2, 24000), dtype=np.float32)
        with Graph({"x": x, "z": silent}, block=block) as graph:
            graph.update(doc_of(before, other, master=NO_LIMITER))
            for s in range(0, 24000, block):
                if s == change_at:
                    graph.update(doc_after)
                    if hard:
                        graph.reset()  # jump to the new targets: what no smoothing would do
                out[:, s : s + block] = graph.render_block(s, block)
        return out

    y = go(after_doc)
    bound = _steady_step(freq, amp * max(1.0, db_to_gain(change.get("gain_db", 0.0)))) * 1.05 + 1e-4
    assert max_step(y) <= bound
    assert max_step(go(after_doc, hard=True)) > bound


def test_effect_parameter_change_does_not_rebuild() -> None:
    eq = {"type": "eq", "id": "e1", "bands": [{"type": "peaking", "freq": 1000.0, "gainDb": 3.0, "q": 1.0}]}
    comp = {"type": "compressor", "thresholdDb": -20.0}
    a = track("a", clip("x"), effects=(eq, comp))
    b = track("b", clip("x"), effects=(dict(comp),))
    noise = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 4000)).astype(np.float32)
    with Graph({"x": noise}) as graph:
        graph.update(doc_of(a, b))
        nodes = graph.nodes
        fx_a = graph.effects("a")
        fx_b = graph.effects("b")
        run(graph, 2000)
        changed_eq = {**eq, "bands": [{"type": "peaking", "freq": 2000.0, "gainDb": -3.0, "q": 1.0}]}
        changed_comp = {**comp, "thresholdDb": -10.0, "ratio": 8}
        graph.update(doc_of(dataclasses.replace(a, effects=(changed_eq, changed_comp), gain_db=-3.0), b))
        assert graph.nodes["a"] is nodes["a"]
        assert graph.nodes["b"] is nodes["b"]
        assert all(new is old for new, old in zip(graph.effects("a"), fx_a, strict=True))
        assert graph.effects("b")[0] is fx_b[0]
        eq_obj, comp_obj = graph.effects("a")
        assert isinstance(eq_obj, Equalizer)
        assert isinstance(comp_obj, Compressor)
        assert eq_obj.bands[0].freq == 2000.0
        assert eq_obj.bands[0].gain_db == -3.0
        assert (comp_obj.threshold_db, comp_obj.ratio) == (-10.0, 8.0)
        run(graph, 2000)

        # a structural change rebuilds that track's chain only
        graph.update(doc_of(dataclasses.replace(a, effects=(changed_comp,)), b))
        assert graph.nodes["a"] is nodes["a"]
        assert graph.effects("a")[0] is not comp_obj
        assert graph.effects("b")[0] is fx_b[0]
        # removing a track keeps the others
        graph.update(doc_of(b))
        assert list(graph.nodes) == ["b"]
        assert graph.nodes["b"] is nodes["b"]


def test_invalid_effects_are_skipped_and_reported(noise: F32) -> None:
    bad = {"type": "compressor", "ratio": "lots"}
    doc = doc_of(track("t", clip("a"), effects=({"type": "fuzz"}, bad, {"noType": 1})))
    with Graph({"a": noise}) as graph:
        graph.update(doc)
        assert graph.effects("t") == (None, None, None)
        assert len([p for p in graph.problems if "effects[" in p]) == 3
        np.testing.assert_array_equal(run(graph, 24000), noise)
        # fixed in place: built now, without touching anything else
        fixed = {"type": "compressor", "ratio": 2}
        graph.update(doc_of(track("t", clip("a"), effects=({"type": "fuzz"}, fixed, {"noType": 1}))))
        assert isinstance(graph.effects("t")[1], Compressor)
        assert len([p for p in graph.problems if "effects[" in p]) == 2
        comp = graph.effects("t")[1]
        # an invalid value later keeps the last valid parameters
        graph.update(doc_of(track("t", clip("a"), effects=({"type": "fuzz"}, bad, {"noType": 1}))))
        assert graph.effects("t")[1] is comp
        assert isinstance(comp, Compressor)
        assert comp.ratio == 2.0
        assert any("keeping the previous values" in p for p in graph.problems)


def test_fixed_parameters_rebuild_only_that_effect() -> None:
    lim = {"type": "limiter", "lookaheadMs": 1.0}
    comp = {"type": "compressor"}
    with Graph() as graph:
        graph.update(doc_of(track("t", effects=(lim, comp))))
        first, second = graph.effects("t")
        graph.update(doc_of(track("t", effects=({**lim, "lookaheadMs": 2.0}, comp))))
        new_first, new_second = graph.effects("t")
        assert new_first is not first
        assert new_second is second
        assert isinstance(new_first, Limiter)
        assert new_first.lookahead_ms == 2.0
        assert graph.problems == ()


def test_channel_change_rebuilds_the_node() -> None:
    mono = np.full((1, 100), 0.5, dtype=np.float32)
    stereo = np.full((2, 100), 0.5, dtype=np.float32)
    with Graph({"m": mono, "s": stereo}) as graph:
        graph.update(doc_of(track("t", clip("m"))))
        node = graph.nodes["t"]
        graph.update(doc_of(track("t", clip("s"))))
        assert graph.nodes["t"] is not node


def test_meters_and_track_outputs(noise: F32) -> None:
    doc = doc_of(track("t", clip("a"), gain_db=-6.0), track("u", clip("a"), mute=True))
    with Graph({"a": noise}, block=4096, meters=True) as graph:
        graph.update(doc)
        run(graph, 24000, 4096)
        meters = graph.meters
        assert set(meters) == {"t", "u"}
        assert meters["t"].true_peak_db < 0
        assert math.isinf(meters["u"].true_peak_db)
        assert graph.master_meter is not None
        assert graph.master_meter.momentary > -30
        out = graph.render_block(0, 100)
        assert out.shape == (2, 100)
        np.testing.assert_allclose(graph.track_outputs["t"], noise[:, :100] * db_to_gain(-6.0), rtol=1e-6)
        assert not graph.track_outputs["u"].any()


def test_blocks_larger_than_the_buffer_grow_it(noise: F32) -> None:
    with Graph({"a": noise}, block=16) as graph:
        graph.update(doc_of(track("t", clip("a")), master=NO_LIMITER))
        np.testing.assert_array_equal(graph.render_block(0, 24000), noise)


def test_graph_argument_checks() -> None:
    with pytest.raises(ValueError, match="block"):
        Graph(block=0)
    with pytest.raises(ValueError, match="workers"):
        Graph(workers=0)
    with Graph() as graph, pytest.raises(ValueError, match="non-negative"):
        graph.render_block(0, -1)
