from __future__ import annotations

import math

import numpy as np
import pytest

from realtime.dsp.effects import (
    EFFECT_KINDS,
    Compressor,
    Delay,
    Effect,
    Equalizer,
    Limiter,
    Reverb,
    effect_from_document,
    make_effect,
)
from realtime.dsp.filters import Band

from .conftest import FS


@pytest.mark.parametrize("kind", EFFECT_KINDS)
def test_every_kind_builds_with_defaults_and_processes(kind: str, rng: np.random.Generator) -> None:
    effect = make_effect(kind, {}, 2, FS)
    assert isinstance(effect, Effect)
    x = (0.3 * rng.standard_normal((2, 480))).astype(np.float32)
    effect.process(x)
    assert np.isfinite(x).all()
    effect.reset()
    assert isinstance(effect.latency, int)
    assert effect.latency >= 0


def test_document_maps_with_type_and_camel_case() -> None:
    comp = effect_from_document(
        {
            "type": "compressor",
            "id": "fx1",
            "thresholdDb": -24.0,
            "ratio": 3,
            "attackMs": 2.0,
            "detector": "rms",
        },
        2,
        FS,
    )
    assert isinstance(comp, Compressor)
    assert (comp.threshold_db, comp.ratio, comp.attack_ms, comp.detector) == (-24.0, 3.0, 2.0, "rms")
    delay = make_effect("delay", {"type": "delay", "time_ms": 120.0, "feedback": 0.2, "mix": 0.5}, 1, FS)
    assert isinstance(delay, Delay)
    assert delay.time_ms == 120.0
    rev = make_effect("reverb", {"roomSize": 0.8, "wet": 0.2}, 2, FS)
    assert isinstance(rev, Reverb)
    assert rev.room_size == 0.8
    lim = make_effect("limiter", {"ceilingDb": -1.0, "lookaheadMs": 2.0}, 2, FS)
    assert isinstance(lim, Limiter)
    assert lim.latency == 96


def test_eq_bands_flat_or_as_a_list() -> None:
    flat = make_effect(
        "eq",
        {
            "band0_type": "highpass",
            "band0_freq": 40.0,
            "band1Type": "peaking",
            "band1Freq": 900.0,
            "band1GainDb": -3.0,
        },
        2,
        FS,
    )
    listed = make_effect(
        "eq",
        {"bands": [{"type": "highpass", "freq": 40}, {"kind": "peaking", "freq": 900, "gainDb": -3.0}]},
        2,
        FS,
    )
    assert isinstance(flat, Equalizer)
    assert isinstance(listed, Equalizer)
    assert flat.bands == listed.bands == (Band("highpass", 40.0), Band("peaking", 900.0, -3.0))


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("chorus", {}, "unknown effect type 'chorus'"),
        ("delay", {"type": "reverb"}, "declare type 'reverb'"),
        ("delay", {"speed": 1.0}, "unknown delay parameter"),
        ("compressor", {"ratio": "high"}, "ratio must be a number"),
        ("compressor", {"ratio": True}, "ratio must be a number"),
        ("compressor", {"threshold_db": 10.0}, "threshold_db"),
        ("reverb", {"wet": math.nan}, "wet must be finite"),
        ("limiter", {"ceiling_db": math.inf}, "ceiling_db must be finite"),
        ("eq", {"band0_freq": 100.0}, "needs a type"),
        ("eq", {"band0_type": "notch", "band0_freq": 100.0}, "unknown filter kind"),
        ("eq", {"band0_type": "peaking"}, "needs a freq"),
        ("eq", {"band1_type": "peaking", "band1_freq": 100.0}, "without gaps"),
        ("eq", {"band0_type": "peaking", "band0_freq": 100.0, "band0_width": 2.0}, "'band0_width'"),
        ("eq", {"bands": [{"type": "peaking", "freq": 100.0, "width": 2.0}]}, "unknown eq band 0 parameter"),
        ("eq", {"gain": 1.0}, "unknown eq parameter"),
        ("eq", {"bands": "peaking"}, "list of maps"),
        ("eq", {"band0_type": "lowpass", "band0_freq": 30000.0}, "Nyquist"),
        ("delay", {"timeMs": 10.0, "time_ms": 20.0}, "given twice"),
    ],
)
def test_bad_specs_raise_value_error(kind: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_effect(kind, params, 2, FS)


def test_document_map_needs_a_type() -> None:
    with pytest.raises(ValueError, match="needs a string 'type'"):
        effect_from_document({"ratio": 2.0}, 2, FS)


def test_bad_channels_or_rate() -> None:
    with pytest.raises(ValueError, match="channels"):
        make_effect("delay", {}, 0, FS)
    with pytest.raises(ValueError, match="sample rate"):
        make_effect("delay", {}, 2, 1000)
