from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from realtime.session.schema import init_document, read_document, set_title


def new_doc() -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    init_document(doc, title="Demo")
    return doc


def test_defaults_round_trip() -> None:
    parsed = read_document(new_doc())
    assert parsed.session.title == "Demo"
    assert parsed.session.bpm == 120
    assert parsed.session.time_signature == (4, 4)
    assert parsed.session.sample_rate == 48000
    assert parsed.tracks == ()
    assert parsed.problems == ()


def test_tracks_follow_track_order_and_stragglers_come_last() -> None:
    doc = new_doc()
    tracks = doc.get("tracks", type=pycrdt.Map)
    for tid, name in [("b", "Bass"), ("a", "Drums"), ("z", "Orphan")]:
        tracks[tid] = pycrdt.Map({"name": name, "kind": "audio", "clips": pycrdt.Map()})
    doc.get("trackOrder", type=pycrdt.Array).extend(["a", "b", "missing"])
    assert [t.name for t in read_document(doc).tracks] == ["Drums", "Bass", "Orphan"]


def test_clips_are_typed_and_sorted() -> None:
    doc = new_doc()
    clips = pycrdt.Map(
        {
            "c2": pycrdt.Map({"assetId": "a2", "start": 4.0, "length": 2.0}),
            "c1": pycrdt.Map({"assetId": "a1", "start": 0.5, "length": 1.0, "fadeIn": 0.1, "gainDb": -3}),
        }
    )
    doc.get("tracks", type=pycrdt.Map)["t"] = pycrdt.Map({"name": "Gtr", "clips": clips, "pan": -0.5})
    (track,) = read_document(doc).tracks
    assert track.pan == -0.5
    assert [(c.id, c.asset_id, c.start, c.gain_db, c.fade_in) for c in track.clips] == [
        ("c1", "a1", 0.5, -3.0, 0.1),
        ("c2", "a2", 4.0, 0.0, 0.0),
    ]


@pytest.mark.parametrize(
    ("track", "problem"),
    [
        ({"name": "X", "gainDb": "loud"}, "gainDb: expected a number"),
        ({"name": "X", "pan": 7}, "pan: 7.0 outside"),
        ({"name": "X", "kind": "theremin"}, "unknown kind"),
        ({"name": "X", "mute": "yes"}, "mute: expected a boolean"),
        ({"name": 42}, "name: expected a string"),
        ({"name": "X", "clips": {"c": {"start": 1}}}, "clip without assetId"),
    ],
)
def test_invalid_entries_are_tolerated_and_listed(track: dict[str, Any], problem: str) -> None:
    doc = new_doc()
    doc.get("tracks", type=pycrdt.Map)["t"] = pycrdt.Map(track)
    parsed = read_document(doc)
    assert any(problem in p for p in parsed.problems), parsed.problems
    assert len(parsed.tracks) == 1  # the track itself survives with defaults


def test_a_track_that_is_not_a_map_is_skipped() -> None:
    doc = new_doc()
    doc.get("tracks", type=pycrdt.Map)["bad"] = "not a track"
    doc.get("tracks", type=pycrdt.Map)["good"] = pycrdt.Map({"name": "Keys"})
    parsed = read_document(doc)
    assert [t.id for t in parsed.tracks] == ["good"]
    assert any("bad" in p for p in parsed.problems)


def test_garbage_session_values_fall_back() -> None:
    doc = new_doc()
    session = doc.get("session", type=pycrdt.Map)
    session["bpm"] = "fast"
    session["timeSignature"] = "4/4"
    parsed = read_document(doc)
    assert parsed.session.bpm == 120
    assert parsed.session.time_signature == (4, 4)
    assert len(parsed.problems) == 2


def test_empty_document_reads_as_defaults() -> None:
    parsed = read_document(pycrdt.Doc())
    assert parsed.session.title == "Untitled"
    assert parsed.tracks == ()


def test_set_title() -> None:
    doc = new_doc()
    set_title(doc, "New")
    assert read_document(doc).session.title == "New"
