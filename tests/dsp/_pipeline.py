"""A short run of every kernel through its public wrapper, for the NUMBA_DISABLE_JIT comparison.

``python -m tests.dsp._pipeline OUT.npz`` (run with ``NUMBA_DISABLE_JIT=1`` by the test) saves
the outputs, and the test compares them with the same run compiled.
"""

from __future__ import annotations

import sys

import numpy as np

from realtime.dsp.effects import LimiterBank, make_effect
from realtime.dsp.filters import biquad_sos, design_biquad, sos_state
from realtime.dsp.meters import LoudnessMeter, TruePeakMeter
from realtime.dsp.smoothing import SmoothedGainPan

FRAMES = 160
SAMPLE_RATE = 16000  # short delay lines, so the reverb's tail shows within FRAMES


def run_all() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(440)
    x = (0.8 * rng.standard_normal((2, FRAMES))).astype(np.float32)
    out: dict[str, np.ndarray] = {}
    sos = design_biquad("peaking", 1000.0, SAMPLE_RATE, q=2.0, gain_db=6.0).reshape(1, 6)
    out["biquad"] = biquad_sos(x, sos, sos_state(2, 1))
    specs = {
        "eq": {"band0_type": "lowshelf", "band0_freq": 200.0, "band0_gain_db": 4.0},
        "compressor": {"threshold_db": -12.0, "attack_ms": 1.0},
        "delay": {"time_ms": 2.0, "feedback": 0.5, "mix": 0.5},
        "reverb": {"room_size": 0.9, "wet": 0.5},
        "limiter": {"ceiling_db": -3.0, "lookahead_ms": 1.0},
    }
    for kind, params in specs.items():
        effect = make_effect(kind, params, 2, SAMPLE_RATE)
        y = x.copy()
        effect.process(y[:, :100].copy())  # state carried into the next block
        y = x.copy()
        effect.process(y)
        out[kind] = y
    for true_peak in (False, True):
        bank = LimiterBank(3, 2, SAMPLE_RATE, ceiling_db=-3.0, lookahead_ms=1.0, true_peak=true_peak)
        stacked = np.stack([x, 0.5 * x, 2.0 * x[::-1]])
        bank.process(stacked[:, :, :100].copy())  # state carried into the next block
        bank.process(stacked)
        out[f"limiter_bank_tp{int(true_peak)}"] = stacked
    strip = SmoothedGainPan(SAMPLE_RATE, gain_db=-6.0, pan=0.3)
    strip.set(gain_db=0.0, pan=-0.3)
    y = x.copy()
    strip.process(y)
    out["gain_pan"] = y
    meter = TruePeakMeter(2)
    meter.feed(x)
    loud = LoudnessMeter(2, SAMPLE_RATE)
    for _ in range(20):
        loud.feed(x)
    out["meters"] = np.array([meter.true_peak_db, loud.integrated, loud.momentary])
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **run_all())
