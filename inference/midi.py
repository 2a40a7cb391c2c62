"""Notes ↔ standard MIDI files: the transcription's result as a downloadable asset and back.

:class:`Note` is the one note record the inference package hands around (transcription output,
the document's ``midi`` clips): MIDI pitch, start and duration in seconds, velocity 1-127.
:func:`notes_to_midi` writes a type-1 standard MIDI file (a tempo track plus one instrument
track) through pretty_midi; :func:`midi_to_notes` reads any standard MIDI file back, so a
written file round-trips to the same notes within one tick.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pretty_midi

__all__ = ["MIDI_RESOLUTION", "Note", "midi_to_notes", "notes_to_midi"]

# Ticks per quarter note. pretty_midi's default (220) rounds times to 2.3 ms at 120 bpm; 960 is
# the usual DAW resolution and keeps the round trip under 0.6 ms.
MIDI_RESOLUTION = 960


@dataclass(frozen=True, slots=True)
class Note:
    """One note: MIDI ``pitch`` 0-127, ``start`` ≥ 0 and ``duration`` > 0 in seconds, ``velocity`` 1-127."""

    pitch: int
    start: float
    duration: float
    velocity: int

    def __post_init__(self) -> None:
        for name in ("pitch", "velocity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"note {name} must be an int, got {value!r}")
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"note pitch must be within [0, 127], got {self.pitch}")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"note velocity must be within [1, 127], got {self.velocity}")
        if not (math.isfinite(self.start) and self.start >= 0.0):
            raise ValueError(f"note start must be finite and >= 0 s, got {self.start}")
        if not (math.isfinite(self.duration) and self.duration > 0.0):
            raise ValueError(f"note duration must be finite and > 0 s, got {self.duration}")

    @property
    def end(self) -> float:
        return self.start + self.duration


def notes_to_midi(
    notes: Iterable[Note], *, bpm: float = 120.0, program: int = 0, name: str = "Transcription"
) -> bytes:
    """A type-1 standard MIDI file holding ``notes`` on one track (General MIDI ``program`` 0-127).

    Times are kept in seconds: ``bpm`` only sets the file's tempo (and so where the notes fall on
    the bar grid of an editor that opens it).
    """
    if isinstance(bpm, bool) or not isinstance(bpm, int | float) or not (math.isfinite(bpm) and bpm > 0):
        raise ValueError(f"bpm must be a positive number, got {bpm!r}")
    if isinstance(program, bool) or not isinstance(program, int) or not 0 <= program <= 127:
        raise ValueError(f"program must be an integer within [0, 127], got {program!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    midi = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=float(bpm))
    instrument = pretty_midi.Instrument(program=program, name=name)
    records = list(notes)
    for note in records:
        if not isinstance(note, Note):
            raise TypeError(f"notes must be Note records, got {type(note).__name__}")
    for note in sorted(records, key=lambda n: (n.start, n.pitch)):
        instrument.notes.append(
            pretty_midi.Note(velocity=note.velocity, pitch=note.pitch, start=note.start, end=note.end)
        )
    midi.instruments.append(instrument)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def midi_to_notes(data: bytes) -> list[Note]:
    """Every note of a standard MIDI file (all tracks and channels), sorted by start then pitch.

    Notes that round to zero length in the file are dropped (they carry no sound). Anything that
    is not a standard MIDI file raises ``ValueError``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"MIDI data must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw.startswith(b"MThd"):
        raise ValueError("not a standard MIDI file (no 'MThd' header)")
    try:
        midi = pretty_midi.PrettyMIDI(io.BytesIO(raw))
    except Exception as exc:  # mido and pretty_midi raise many kinds for a corrupt file
        raise ValueError(f"not a valid standard MIDI file: {exc}") from exc
    notes = [
        Note(int(n.pitch), max(0.0, float(n.start)), float(n.end - n.start), max(1, int(n.velocity)))
        for instrument in midi.instruments
        for n in instrument.notes
        if n.end > n.start
    ]
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes
