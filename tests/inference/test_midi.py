"""Notes ↔ standard MIDI files."""

from __future__ import annotations

import io

import mido
import pytest

from inference.midi import MIDI_RESOLUTION, Note, midi_to_notes, notes_to_midi

NOTES = [
    Note(60, 0.0, 0.5, 100),
    Note(64, 0.5, 0.25, 80),
    Note(67, 0.5, 1.0, 1),
    Note(72, 2.123456, 0.01, 127),
    Note(0, 3.0, 0.2, 64),
    Note(127, 3.0, 0.2, 64),
]


def test_round_trip_within_a_tick() -> None:
    data = notes_to_midi(NOTES, bpm=97.0, program=33, name="Bass")
    back = midi_to_notes(data)
    tick = 60.0 / 97.0 / MIDI_RESOLUTION
    expected = sorted(NOTES, key=lambda n: (n.start, n.pitch))
    assert [(n.pitch, n.velocity) for n in back] == [(n.pitch, n.velocity) for n in expected]
    for a, b in zip(back, expected, strict=True):
        assert a.start == pytest.approx(b.start, abs=tick)
        assert a.end == pytest.approx(b.end, abs=tick)


def test_standard_midi_file_type_1() -> None:
    data = notes_to_midi(NOTES, bpm=140.0, program=5, name="Keys")
    assert data[:4] == b"MThd"
    midi = mido.MidiFile(file=io.BytesIO(data))
    assert midi.type == 1
    assert midi.ticks_per_beat == MIDI_RESOLUTION
    tempos = [m.tempo for track in midi.tracks for m in track if m.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(140.0)]
    programs = [m.program for track in midi.tracks for m in track if m.type == "program_change"]
    assert programs == [5]
    names = [m.name for track in midi.tracks for m in track if m.type == "track_name"]
    assert "Keys" in names
    ons = [m for track in midi.tracks for m in track if m.type == "note_on" and m.velocity > 0]
    assert sorted(m.note for m in ons) == sorted(n.pitch for n in NOTES)


def test_empty_note_list() -> None:
    assert midi_to_notes(notes_to_midi([])) == []


def test_reads_other_writers_files() -> None:
    """A file not written by us: two tracks, note-offs as note_on velocity 0, a tempo change."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    a = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0)])
    a += [
        mido.Message("note_on", note=50, velocity=90, time=0),
        mido.Message("note_on", note=50, velocity=0, time=480),
    ]
    b = mido.MidiTrack(
        [
            mido.Message("note_on", channel=1, note=70, velocity=40, time=960),
            mido.Message("note_off", channel=1, note=70, velocity=0, time=240),
        ]
    )
    midi.tracks += [a, b]
    buffer = io.BytesIO()
    midi.save(file=buffer)
    notes = midi_to_notes(buffer.getvalue())
    assert [(n.pitch, n.velocity) for n in notes] == [(50, 90), (70, 40)]
    assert (notes[0].start, notes[0].duration) == pytest.approx((0.0, 0.5))
    assert (notes[1].start, notes[1].duration) == pytest.approx((1.0, 0.25))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"MThd",
        b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x03\xc0MTrk\xff\xff",
    ],
)
def test_non_midi_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(ValueError, match="standard MIDI file"):
        midi_to_notes(data)


def test_non_bytes_is_rejected() -> None:
    with pytest.raises(TypeError, match="bytes"):
        midi_to_notes("MThd")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"pitch": 128, "start": 0.0, "duration": 1.0, "velocity": 64}, ValueError),
        ({"pitch": -1, "start": 0.0, "duration": 1.0, "velocity": 64}, ValueError),
        ({"pitch": 60, "start": -0.1, "duration": 1.0, "velocity": 64}, ValueError),
        ({"pitch": 60, "start": float("nan"), "duration": 1.0, "velocity": 64}, ValueError),
        ({"pitch": 60, "start": 0.0, "duration": 0.0, "velocity": 64}, ValueError),
        ({"pitch": 60, "start": 0.0, "duration": float("inf"), "velocity": 64}, ValueError),
        ({"pitch": 60, "start": 0.0, "duration": 1.0, "velocity": 0}, ValueError),
        ({"pitch": 60, "start": 0.0, "duration": 1.0, "velocity": 128}, ValueError),
        ({"pitch": 60.0, "start": 0.0, "duration": 1.0, "velocity": 64}, TypeError),
        ({"pitch": 60, "start": 0.0, "duration": 1.0, "velocity": True}, TypeError),
    ],
)
def test_invalid_notes_are_rejected(kwargs: dict[str, float], error: type) -> None:
    with pytest.raises(error):
        Note(**kwargs)  # type: ignore[arg-type]


def test_invalid_file_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="bpm"):
        notes_to_midi(NOTES, bpm=0.0)
    with pytest.raises(ValueError, match="bpm"):
        notes_to_midi(NOTES, bpm=float("nan"))
    with pytest.raises(ValueError, match="program"):
        notes_to_midi(NOTES, program=128)
    with pytest.raises(TypeError, match="Note"):
        notes_to_midi([(60, 0.0, 1.0, 64)])  # type: ignore[list-item]
