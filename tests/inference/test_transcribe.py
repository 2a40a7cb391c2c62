"""basic-pitch on onnxruntime: notes of synthesized tones, batching, parity with basic-pitch's predict()."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from inference.midi import Note, midi_to_notes, notes_to_midi
from inference.transcribe import (
    MODEL_SAMPLE_RATE,
    WINDOW_SAMPLES,
    Transcriber,
    default_model_path,
    model_windows,
)

SR = 44100
# (pitch, onset s, duration s): C4, E4, G4 in turn, then a C-major chord.
SEQUENCE = [(60, 0.50, 0.8), (64, 1.50, 0.8), (67, 2.50, 0.8)]
CHORD = [(60, 4.00, 1.5), (64, 4.00, 1.5), (67, 4.00, 1.5)]
EXPECTED = SEQUENCE + CHORD

# basic-pitch's predict() reads files with librosa.load, which imports audioread's backends
# (aifc, audioop, sunau: deprecated standard modules) on every call.
audioread_imports = pytest.mark.filterwarnings(
    r"ignore:'(aifc|audioop|sunau)' is deprecated:DeprecationWarning"
)


def tone(pitch: int, seconds: float, sr: int, amp: float) -> NDArray[np.float64]:
    """A plucked-string-like tone: 6 harmonics (amplitudes 0.6^k), 10 ms attack, exponential decay."""
    t = np.arange(round(seconds * sr)) / sr
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-2.0 * t)
    partials = sum(0.6**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(6))
    out: NDArray[np.float64] = amp * envelope * partials
    return out


def synth(notes: list[tuple[int, float, float]], seconds: float, sr: int) -> NDArray[np.float32]:
    x = np.zeros(round(seconds * sr))
    for pitch, onset, duration in notes:
        y = tone(pitch, duration, sr, 0.2)
        start = round(onset * sr)
        x[start : start + y.shape[0]] += y
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(threads=1)


@pytest.fixture(scope="module")
def melody() -> NDArray[np.float32]:
    return synth(EXPECTED, 6.0, SR)


def onset_recall(notes: list[Note], expected: list[tuple[int, float, float]]) -> float:
    """mir_eval's note recall with onsets only (±50 ms, pitch within 50 cents)."""
    ref_intervals = np.array([[onset, onset + duration] for _, onset, duration in expected])
    ref_pitches = np.array([mir_eval.util.midi_to_hz(p) for p, _, _ in expected])
    est_intervals = np.array([[n.start, n.end] for n in notes])
    est_pitches = np.array([mir_eval.util.midi_to_hz(n.pitch) for n in notes])
    _, recall, _, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_intervals, ref_pitches, est_intervals, est_pitches, onset_tolerance=0.05, offset_ratio=None
    )
    return float(recall)


def test_sequence_and_chord_are_found(transcriber: Transcriber, melody: NDArray[np.float32]) -> None:
    notes = transcriber.transcribe(melody, SR)
    assert notes == sorted(notes, key=lambda n: (n.start, n.pitch))
    for pitch, onset, _ in EXPECTED:
        hits = [n for n in notes if n.pitch == pitch and abs(n.start - onset) <= 0.05]
        assert hits, f"pitch {pitch} at {onset} s not found in {notes}"
    assert onset_recall(notes, EXPECTED) == 1.0
    # Harmonics may add notes an octave or more above, never inside the played range.
    assert {n.pitch for n in notes} & set(range(48, 72)) == {60, 64, 67}
    assert all(1 <= n.velocity <= 127 and n.duration > 0 for n in notes)


def test_stereo_and_any_rate(transcriber: Transcriber, melody: NDArray[np.float32]) -> None:
    mono = transcriber.transcribe(melody, SR)
    stereo = transcriber.transcribe(np.stack([melody, melody]), SR)
    assert stereo == mono
    at_model_rate = synth(EXPECTED, 6.0, MODEL_SAMPLE_RATE)
    assert onset_recall(transcriber.transcribe(at_model_rate, MODEL_SAMPLE_RATE), EXPECTED) == 1.0
    at_48k = synth(EXPECTED, 6.0, 48000).astype(np.float64)
    assert onset_recall(transcriber.transcribe(at_48k, 48000), EXPECTED) == 1.0


@audioread_imports
def test_windows_match_basic_pitch(tmp_path: Path) -> None:
    from basic_pitch.inference import get_audio_input

    rng = np.random.default_rng(7)
    for length in (1, 1000, 36164 - 3840, 36164 - 3839, 100_000):
        mono = rng.standard_normal(length).astype(np.float32)
        ours = model_windows(mono)
        path = tmp_path / f"window-{length}.wav"
        sf.write(path, mono, MODEL_SAMPLE_RATE, subtype="FLOAT")
        theirs = np.concatenate([w for w, _, _ in get_audio_input(path, 7680, WINDOW_SAMPLES - 7680)])
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def test_batched_equals_one_window_at_a_time(transcriber: Transcriber) -> None:
    rng = np.random.default_rng(3)
    audio = synth(
        [
            (int(p), float(o), 0.5)
            for p, o in zip(rng.integers(45, 80, 30), rng.uniform(0, 14, 30), strict=True)
        ],
        15.0,
        SR,
    )
    single = Transcriber(threads=1, max_batch=1)
    one = single.model_output(audio, SR)
    assert model_windows(np.zeros(15 * MODEL_SAMPLE_RATE, np.float32)).shape[0] == 10  # 4 + 4 + 2
    for max_batch in (4, 64):
        batched = Transcriber(threads=1, max_batch=max_batch)
        many = batched.model_output(audio, SR)
        for key in ("note", "onset", "contour"):
            assert one[key].shape == many[key].shape
            np.testing.assert_allclose(many[key], one[key], rtol=0, atol=1e-5)
        assert batched.transcribe(audio, SR) == single.transcribe(audio, SR)


@audioread_imports
def test_same_notes_as_basic_pitch_predict(transcriber: Transcriber, tmp_path: Path) -> None:
    from basic_pitch.inference import predict

    rng = np.random.default_rng(11)
    extra = [
        (int(p), float(o), 0.6) for p, o in zip(rng.integers(40, 90, 25), rng.uniform(6, 11, 25), strict=True)
    ]
    audio = synth(EXPECTED + extra, 12.0, SR)
    stereo = np.stack([audio, 0.5 * audio])
    path = tmp_path / "clip.wav"
    sf.write(path, stereo.T, SR, subtype="FLOAT")  # predict() loads, folds to mono and resamples itself
    output, _, events = predict(path)
    ours = transcriber.transcribe(stereo, SR)
    theirs = sorted(events, key=lambda e: (e[0], e[2]))
    assert len(theirs) > len(EXPECTED)
    assert len(ours) == len(theirs)
    for note, (start, end, pitch, amplitude, _) in zip(ours, theirs, strict=True):
        assert note.pitch == pitch
        assert note.start == pytest.approx(start, abs=1e-9)
        assert note.end == pytest.approx(end, abs=1e-9)
        assert abs(note.velocity - round(127 * amplitude)) <= 1
    mine = transcriber.model_output(stereo, SR)
    for key in ("note", "onset", "contour"):
        np.testing.assert_allclose(mine[key], output[key], rtol=0, atol=1e-5)


def test_thresholds_and_pitch_limits(transcriber: Transcriber, melody: NDArray[np.float32]) -> None:
    default = transcriber.transcribe(melody, SR)
    strict = transcriber.transcribe(melody, SR, onset_threshold=0.9, frame_threshold=0.6)
    assert len(strict) < len(default)
    # basic-pitch keeps pitches from round(midi(min)) up to, not including, round(midi(max)).
    limited = transcriber.transcribe(melody, SR, min_frequency=250.0, max_frequency=400.0)
    assert {n.pitch for n in limited} == {60, 64}
    long_only = transcriber.transcribe(melody, SR, min_note_ms=1000.0)
    assert long_only
    assert all(n.duration >= 1.0 for n in long_only)


def test_silence_and_very_short_audio_give_no_notes(transcriber: Transcriber) -> None:
    assert transcriber.transcribe(np.zeros(3 * SR, np.float32), SR) == []
    assert transcriber.transcribe(np.zeros(5, np.float32), SR) == []
    assert transcriber.transcribe(synth([(60, 0.0, 0.02)], 0.02, SR), SR) == []


def test_progress_and_cancellation(melody: NDArray[np.float32]) -> None:
    small = Transcriber(threads=1, max_batch=1)
    seen: list[float] = []
    small.transcribe(melody, SR, progress=seen.append)
    assert len(seen) >= 4
    assert seen == sorted(seen)
    assert seen[0] > 0
    assert seen[-1] == 1.0

    with pytest.raises(concurrent.futures.CancelledError):
        small.transcribe(melody, SR, cancelled=lambda: True)
    # Cancelled between batches: no batch runs after the flag is seen.
    calls: list[float] = []
    with pytest.raises(concurrent.futures.CancelledError):
        small.transcribe(melody, SR, progress=calls.append, cancelled=lambda: len(calls) >= 2)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("audio", "rate", "error", "match"),
    [
        (np.zeros(0, np.float32), SR, ValueError, "empty"),
        (np.zeros((2, 0), np.float32), SR, ValueError, "empty"),
        (np.array([0.0, np.nan, 0.0], np.float32), SR, ValueError, "NaN"),
        (np.array([0.0, np.inf], np.float32), SR, ValueError, "NaN or infinite"),
        (np.zeros((1, 2, 100), np.float32), SR, ValueError, "shaped"),
        (np.zeros((SR, 2), np.float32), SR, ValueError, "transpose"),
        (np.zeros(100, np.int16), SR, TypeError, "floating"),
        ([0.0, 0.1], SR, TypeError, "numpy array"),
        (np.zeros(100, np.float32), 0, ValueError, "sample_rate"),
        (np.zeros(100, np.float32), 44100.0, TypeError, "sample_rate"),
    ],
)
def test_bad_audio_is_rejected(
    transcriber: Transcriber, audio: object, rate: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        transcriber.transcribe(audio, rate)  # type: ignore[arg-type]


def test_bad_settings_are_rejected(transcriber: Transcriber, tmp_path: Path) -> None:
    audio = np.zeros(SR, np.float32)
    with pytest.raises(ValueError, match="onset_threshold"):
        transcriber.transcribe(audio, SR, onset_threshold=1.5)
    with pytest.raises(ValueError, match="frame_threshold"):
        transcriber.transcribe(audio, SR, frame_threshold=0.0)
    with pytest.raises(ValueError, match="min_note_ms"):
        transcriber.transcribe(audio, SR, min_note_ms=-1.0)
    with pytest.raises(ValueError, match="below max_frequency"):
        transcriber.transcribe(audio, SR, min_frequency=500.0, max_frequency=400.0)
    with pytest.raises(ValueError, match="threads"):
        Transcriber(threads=0)
    with pytest.raises(FileNotFoundError, match="not found"):
        Transcriber(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="cannot load the transcription model"):
        Transcriber(garbage)
    assert default_model_path().name == "nmp.onnx"


def test_notes_survive_a_midi_file(transcriber: Transcriber, melody: NDArray[np.float32]) -> None:
    notes = transcriber.transcribe(melody, SR)
    back = midi_to_notes(notes_to_midi(notes))
    assert [(n.pitch, n.velocity) for n in back] == [(n.pitch, n.velocity) for n in notes]
    for a, b in zip(back, notes, strict=True):
        assert a.start == pytest.approx(b.start, abs=1e-3)
        assert a.duration == pytest.approx(b.duration, abs=1e-3)
