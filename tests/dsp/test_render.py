"""Offline rendering: range, latency compensation, stems, workers, progress, cancellation."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from realtime.dsp.graph import MappingAssets
from realtime.dsp.render import RenderCancelled, plan_render, render_session
from realtime.session.schema import Clip, Master, SessionDocument, SessionInfo, Track

from .conftest import FS

F32 = NDArray[np.float32]


def q24(x: NDArray[np.floating]) -> F32:
    return (np.round(np.asarray(x, dtype=np.float64) * 2**23) / 2**23).astype(np.float32)


def doc_of(*tracks: Track, master: Master | None = None) -> SessionDocument:
    return SessionDocument(SessionInfo(master=master or Master()), tracks)


@pytest.fixture
def assets(rng: np.random.Generator) -> dict[str, F32]:
    return {
        "drums": q24(rng.uniform(-0.3, 0.3, (2, FS))),
        "bass": q24(rng.uniform(-0.3, 0.3, (1, FS // 2))),
        "keys": q24(rng.uniform(-0.3, 0.3, (2, 3 * FS // 4))),
    }


EQ = {
    "type": "eq",
    "bands": [
        {"type": "lowshelf", "freq": 120.0, "gainDb": 3.0},
        {"type": "peaking", "freq": 1000.0, "gainDb": -2.0, "q": 1.0},
        {"type": "highshelf", "freq": 8000.0, "gainDb": 2.0},
    ],
}
COMP = {"type": "compressor", "thresholdDb": -24.0, "ratio": 4.0}


@pytest.fixture
def busy_doc() -> SessionDocument:
    """Several tracks with effects, a bus and a loud master that makes the limiter work."""
    return doc_of(
        Track("d", "Drums", gain_db=6.0, clips=(Clip("1", "drums", 0.0),), effects=(EQ, COMP)),
        Track("b", "Bass", pan=-0.4, clips=(Clip("1", "bass", 0.25, fade_in=0.05),), effects=(COMP,)),
        Track(
            "k",
            "Keys",
            clips=(Clip("1", "keys", 0.1, offset=0.05), Clip("2", "keys", 0.6, length=0.2, gain_db=-3.0)),
            effects=({"type": "delay", "timeMs": 30.0, "feedback": 0.5}, {"type": "reverb"}),
            output="bus",
        ),
        Track("bus", "Verb bus", kind="bus", gain_db=3.0, effects=(EQ,)),
        master=Master(gain_db=6.0, ceiling_db=-1.0),
    )


def test_null_unity_track_renders_its_asset(assets: dict[str, F32]) -> None:
    result = render_session(doc_of(Track("d", "D", clips=(Clip("1", "drums", 0.0),))), assets)
    assert result.sample_rate == FS
    assert result.mix.dtype == np.float32
    np.testing.assert_array_equal(result.mix, assets["drums"])
    assert result.stems is None


def test_default_range_ends_with_the_last_clip(assets: dict[str, F32], busy_doc: SessionDocument) -> None:
    result = render_session(busy_doc, assets)
    assert result.mix.shape == (2, FS)  # drums: 0 … 1 s
    assert np.abs(result.mix).max() <= 10 ** (-1 / 20) * 1.0001  # the limiter held the ceiling
    tail = render_session(busy_doc, assets, tail_s=0.5)
    assert tail.mix.shape == (2, FS + FS // 2)
    np.testing.assert_array_equal(tail.mix[:, :FS], result.mix)
    assert np.abs(tail.mix[:, FS + 100 :]).max() > 0  # the reverb's tail


def test_explicit_range(assets: dict[str, F32]) -> None:
    doc = doc_of(Track("d", "D", clips=(Clip("1", "drums", 0.5),)))
    whole = render_session(doc, assets)
    assert whole.mix.shape == (2, FS + FS // 2)
    part = render_session(doc, assets, start_s=0.75, end_s=1.25)
    np.testing.assert_array_equal(part.mix, whole.mix[:, 36000:60000])
    beyond = render_session(doc, assets, start_s=2.0, end_s=3.0)
    assert beyond.mix.shape == (2, FS)
    assert not beyond.mix.any()
    assert render_session(doc, assets, start_s=5.0).mix.shape == (2, 0)


def test_plan_render_checks_the_range() -> None:
    doc = doc_of()
    assert plan_render(doc, lambda a: None).frames == 0
    assert plan_render(doc, lambda a: None, start_s=1.0, end_s=1.5).frames == FS // 2
    with pytest.raises(ValueError, match="start"):
        plan_render(doc, lambda a: None, start_s=-1.0)
    with pytest.raises(ValueError, match="end"):
        plan_render(doc, lambda a: None, start_s=2.0, end_s=1.0)
    with pytest.raises(ValueError, match="end"):
        plan_render(doc, lambda a: None, end_s=float("nan"))


def test_stems_are_post_fader_and_sum_to_the_mix(assets: dict[str, F32]) -> None:
    doc = doc_of(
        Track("d", "D", gain_db=-6.0, clips=(Clip("1", "drums", 0.0),)),
        Track("b", "B", pan=0.5, clips=(Clip("1", "bass", 0.25),)),
        Track("m", "M", mute=True, clips=(Clip("1", "keys", 0.0),)),
    )
    result = render_session(doc, assets, stems=True)
    assert result.stems is not None
    assert set(result.stems) == {"d", "b", "m"}
    for stem in result.stems.values():
        assert stem.shape == result.mix.shape
        assert stem.dtype == np.float32
    np.testing.assert_allclose(result.stems["d"], assets["drums"] * 10 ** (-6 / 20), rtol=1e-6)
    assert not result.stems["m"].any()
    np.testing.assert_allclose(result.stems["d"] + result.stems["b"], result.mix, atol=1e-7)


@pytest.mark.parametrize("block", [777, 4096])
def test_workers_are_bit_identical(assets: dict[str, F32], busy_doc: SessionDocument, block: int) -> None:
    one = render_session(busy_doc, assets, block=block, stems=True)
    two = render_session(busy_doc, assets, block=block, workers=2, stems=True)
    three = render_session(busy_doc, assets, block=block, workers=3)
    np.testing.assert_array_equal(one.mix, two.mix)
    np.testing.assert_array_equal(one.mix, three.mix)
    assert one.stems is not None
    assert two.stems is not None
    for tid, stem in one.stems.items():
        np.testing.assert_array_equal(stem, two.stems[tid])


def test_static_renders_do_not_depend_on_the_block_size(assets: dict[str, F32]) -> None:
    doc = doc_of(
        Track("d", "D", clips=(Clip("1", "drums", 0.0, fade_in=0.1, fade_out=0.3),), effects=(EQ, COMP)),
        Track("b", "B", pan=-0.4, clips=(Clip("1", "bass", 0.25),)),
    )
    a = render_session(doc, assets, block=4096)
    b = render_session(doc, assets, block=500)
    np.testing.assert_array_equal(a.mix, b.mix)


def test_progress_is_throttled_and_reaches_one(assets: dict[str, F32], busy_doc: SessionDocument) -> None:
    seen: list[float] = []
    render_session(busy_doc, assets, block=256, progress=seen.append)
    assert seen[0] == 0.0
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) <= 12  # a short render: 0, at most a few throttled updates, 1


def test_cancel_stops_the_render(assets: dict[str, F32], busy_doc: SessionDocument) -> None:
    cancel = threading.Event()
    calls: list[float] = []

    def progress(p: float) -> None:
        calls.append(p)
        cancel.set()

    with pytest.raises(RenderCancelled):
        render_session(busy_doc, assets, progress=progress, cancel=cancel)
    assert calls == [0.0]


def test_asset_source_objects_work(assets: dict[str, F32]) -> None:
    class Counting:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get(self, asset_id: str) -> Any:
            self.asked.append(asset_id)
            return assets.get(asset_id)

    source = Counting()
    doc = doc_of(Track("d", "D", clips=(Clip("1", "drums", 0.0),)))
    result = render_session(doc, source)
    np.testing.assert_array_equal(result.mix, assets["drums"])
    assert set(source.asked) == {"drums"}
    np.testing.assert_array_equal(render_session(doc, MappingAssets(assets)).mix, result.mix)
