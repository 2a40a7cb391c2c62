"""Latency compensation: null tests through latent effects, exact placement, edits that re-align."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from realtime.dsp.effects import Limiter
from realtime.dsp.graph import Graph
from realtime.dsp.latency import CompensationDelay, LatencyNode, plan_latency
from realtime.dsp.render import render_session
from realtime.session.schema import Clip, Master, SessionDocument, SessionInfo, Track

from .conftest import FS, max_step

F32 = NDArray[np.float32]
# Ceiling 0 dBTP, input at most 0.4: the limiter never acts, it only delays (by 5 ms = 240 frames).
TRANSPARENT = {"type": "limiter", "ceilingDb": 0.0, "lookaheadMs": 5.0}
LOOKAHEAD = 240


def doc_of(*tracks: Track, master: Master | None = None) -> SessionDocument:
    return SessionDocument(SessionInfo(master=master or Master()), tracks)


def track(tid: str, *clips: Clip, **fields: Any) -> Track:
    return Track(tid, tid.upper(), clips=clips, **fields)


@pytest.fixture
def noise(rng: np.random.Generator) -> F32:
    return (np.round(rng.uniform(-0.4, 0.4, (2, FS // 2)) * 2**23) / 2**23).astype(np.float32)


def null_doc(latent: bool = True, bypass: bool = False, **extra: Any) -> SessionDocument:
    fx = ({**TRANSPARENT, "bypass": bypass},) if latent else ()
    return doc_of(
        track("a", Clip("c", "x", 0.0), effects=fx, **extra),
        track("b", Clip("c", "x", 0.0), phase_invert=True),
    )


def stream(graph: Graph, t0: int, frames: int, block: int = 1000) -> F32:
    out = np.zeros((2, frames), dtype=np.float32)
    for s in range(0, frames, block):
        n = min(block, frames - s)
        out[:, s : s + n] = graph.render_block(t0 + s, n)
    return out


def test_phase_inverted_copy_nulls_through_a_latent_effect_only_with_compensation(noise: F32) -> None:
    with Graph({"x": noise}) as graph:
        graph.update(null_doc())
        out = stream(graph, 0, noise.shape[1])
        # the two post-fader outputs, summed as they come, do not cancel (a is 240 frames late) …
        naive = graph.track_outputs["a"] + graph.track_outputs["b"]
        assert np.abs(naive).max() > 0.1
    # … the compensated master does, exactly
    assert not out.any()


def test_reported_latency_equals_the_effects(noise: F32) -> None:
    with Graph({"x": noise}) as graph:
        graph.update(null_doc())
        limiter = graph.effects("a")[0]
        assert isinstance(limiter, Limiter)
        assert limiter.latency == LOOKAHEAD
        plan = graph.plan
        assert plan.tracks["a"].chain_samples == LOOKAHEAD
        assert plan.tracks["a"].compensation_samples == 0
        assert plan.tracks["b"].compensation_samples == LOOKAHEAD
        assert plan.compensation_samples == {"a": 0, "b": LOOKAHEAD}
        master = Limiter(2, FS).latency  # the default 1.5 ms master look-ahead
        assert plan.master_samples == master
        assert plan.latency_samples == graph.latency == LOOKAHEAD + master
        assert all(isinstance(v, int) for v in (plan.latency_samples, plan.tracks["b"].compensation_samples))


def test_buses_align_their_inputs_and_the_master_aligns_the_buses(noise: F32) -> None:
    doc = doc_of(
        track("a", Clip("c", "x", 0.0), effects=(TRANSPARENT,), output="bus", gain_db=-6.0),
        track("b", Clip("c", "x", 0.0), output="bus", gain_db=-6.0),
        track("bus", kind="bus", effects=({**TRANSPARENT, "lookaheadMs": 2.0},)),
        track("d", Clip("c", "x", 0.0), phase_invert=True),  # = -(a + b)
        master=Master(limiter=False),
    )
    with Graph({"x": noise}) as graph:
        graph.update(doc)
        plan = graph.plan
        assert plan.tracks["b"].compensation_samples == LOOKAHEAD
        assert plan.tracks["bus"].output_latency_samples == LOOKAHEAD + 96
        assert plan.tracks["d"].compensation_samples == LOOKAHEAD + 96
        assert plan.latency_samples == LOOKAHEAD + 96
        out = stream(graph, 0, noise.shape[1])
    # -6 dB is 0.501x, not 0.5x: the residue is 0.24 % of the signal, far below a misalignment's
    assert np.abs(out).max() < 0.005


def test_clips_stay_sample_exact_in_the_mixdown_with_latent_effects() -> None:
    impulse = np.zeros((2, 100), dtype=np.float32)
    impulse[:, 0] = 0.5
    at = 0.5  # seconds: frame 24000
    doc = doc_of(
        track("t", Clip("c", "i", at), output="bus"),
        track("u", Clip("c", "i", 0.25), effects=(TRANSPARENT,)),
        track("bus", kind="bus", effects=({**TRANSPARENT, "lookaheadMs": 3.0},)),
    )
    result = render_session(doc, {"i": impulse}, end_s=1.0, stems=True)
    mix = result.mix
    assert mix.shape == (2, FS)
    hits = np.flatnonzero(np.abs(mix[0]) > 1e-6)
    np.testing.assert_array_equal(hits, [FS // 4, FS // 2])
    np.testing.assert_allclose(mix[:, FS // 2], 0.5, rtol=1e-6)
    # the stems are advanced by their own latency too
    assert result.stems is not None
    for tid, frame in (("t", FS // 2), ("u", FS // 4), ("bus", FS // 2)):
        assert np.flatnonzero(np.abs(result.stems[tid][0]) > 1e-6).tolist() == [frame], tid


def test_an_edit_that_adds_an_effect_realigns_without_rebuilding_the_others(noise: F32) -> None:
    with Graph({"x": noise}) as graph:
        graph.update(null_doc(latent=False))
        b = graph.nodes["b"]
        assert graph.plan.latency_samples == graph.plan.master_samples
        assert not stream(graph, 0, 6000).any()
        graph.update(null_doc(latent=True))  # a limiter is added on a, while playing
        assert graph.nodes["b"] is b
        assert graph.plan.tracks["b"].compensation_samples == LOOKAHEAD
        after = stream(graph, 6000, 6000)
        # a restarts from an empty look-ahead and b's delay crossfades over 10 ms: once both are
        # through (well within 2000 frames) the sum nulls again
        assert not after[:, 2000:].any()
        graph.update(null_doc(latent=True, bypass=True))  # bypassed: no latency, realigned
        assert graph.plan.tracks["b"].compensation_samples == 0
        assert graph.nodes["b"] is b
        again = stream(graph, 12000, 6000)
        assert not again[:, 2000:].any()
        graph.update(null_doc(latent=False))  # removed
        assert graph.plan.compensation_samples == {"a": 0, "b": 0}
        assert not stream(graph, 18000, 6000)[:, 2000:].any()


def test_a_compensation_change_does_not_click() -> None:
    t = np.arange(12000) / FS
    x = np.tile(0.5 * np.sin(2 * np.pi * 100 * t), (2, 1)).astype(np.float32)
    line = CompensationDelay(2, FS)
    line.set(0)
    assert line.idle
    out = [line.process(x[:, :2000]).copy()]
    line.set(300)  # from idle: it records 300 frames of history first, then crossfades
    out += [line.process(x[:, s : s + 500]).copy() for s in range(2000, 6000, 500)]
    line.set(40)  # back, while playing
    out += [line.process(x[:, s : s + 1000]).copy() for s in range(6000, 12000, 1000)]
    y = np.concatenate(out, axis=1)
    # the signal's own steps are 0.0066 at most; a click would be a step of up to 1
    assert max_step(y) < 0.01
    # the old alignment until 300 frames are recorded (at the next block boundary, 2500) …
    np.testing.assert_array_equal(y[:, :2500], x[:, :2500])
    np.testing.assert_array_equal(y[:, 3000:6000], x[:, 2700:5700])  # … then the new one, exactly
    np.testing.assert_array_equal(y[:, 6500:], x[:, 6460:-40])


@pytest.mark.parametrize("block", [1, 7, 100, 1000])
def test_the_delay_line_delays_exactly(rng: np.random.Generator, block: int) -> None:
    x = rng.standard_normal((2, 3000)).astype(np.float32)
    line = CompensationDelay(2, FS)
    line.set(123)
    y = np.concatenate([line.process(x[:, s : s + block]).copy() for s in range(0, 3000, block)], axis=1)
    np.testing.assert_array_equal(y[:, 123:], x[:, :-123])
    assert not y[:, :123].any()
    line.reset()
    np.testing.assert_array_equal(line.process(x[:, :200])[:, 123:], x[:, :77])


def test_bad_arguments() -> None:
    line = CompensationDelay(2, FS)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="delay"):
            line.set(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        line.process(np.zeros((1, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="not a bus"):
        plan_latency([LatencyNode("a", "nowhere", False, 0)])
    with pytest.raises(ValueError, match="before its input"):
        plan_latency([LatencyNode("bus", None, True, 0), LatencyNode("a", "bus", False, 0)])
    with pytest.raises(ValueError, match=">= 0"):
        plan_latency([LatencyNode("a", None, False, -1)])


def test_a_non_boolean_bypass_is_reported(noise: F32) -> None:
    doc = doc_of(track("a", Clip("c", "x", 0.0), effects=({**TRANSPARENT, "bypass": "yes"},)))
    with Graph({"x": noise}) as graph:
        graph.update(doc)
        assert graph.effects("a") == (None,)
        assert any("bypass must be true or false" in p for p in graph.problems)
