"""How jobs appear in the session document: the `jobs` map entry and the tracks a result adds.

Pure edits of a pycrdt `Doc` (the caller owns the transaction and commits it). Ids of what a
job adds are derived from the job's id (`<job>-<stem>`, `<job>-<stem>-clip`), so laying a result
out twice writes the same tracks again instead of duplicating them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

STEM_COLORS = {
    "vocals": "#e0607e",
    "drums": "#e0a040",
    "bass": "#6a8ee0",
    "other": "#60c090",
    "guitar": "#c080e0",
    "piano": "#a0a0a0",
}
MIDI_COLOR = "#9a7ee0"
MASTER_COLOR = "#e0d060"
FINISHED_JOBS_KEPT = 20
_ACTIVE = ("queued", "running")


@dataclass(frozen=True, slots=True)
class SourceClip:
    """Where the job's source plays: new clips copy its timing, so they line up with it."""

    track_id: str | None
    clip_id: str | None
    track_name: str | None
    start: float = 0.0
    offset: float = 0.0
    length: float = 0.0
    fade_in: float = 0.0
    fade_out: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "trackId": self.track_id,
            "clipId": self.clip_id,
            "trackName": self.track_name,
            "start": self.start,
            "offset": self.offset,
            "length": self.length,
            "fadeIn": self.fade_in,
            "fadeOut": self.fade_out,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> SourceClip:
        raw = raw or {}

        def num(key: str) -> float:
            value = raw.get(key)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0

        def text(key: str) -> str | None:
            value = raw.get(key)
            return value if isinstance(value, str) else None

        return cls(
            text("trackId"),
            text("clipId"),
            text("trackName"),
            num("start"),
            num("offset"),
            num("length"),
            num("fadeIn"),
            num("fadeOut"),
        )


class NoSuchClip(LookupError):
    """The named clip or track does not exist, or does not play the asset."""


def _py(value: Any) -> dict[str, Any]:
    if isinstance(value, pycrdt.Map):
        return dict(value.to_py() or {})
    return dict(value) if isinstance(value, Mapping) else {}


def _clip_of(tid: str, track: dict[str, Any], cid: str, clip: Any) -> SourceClip:
    c = _py(clip)
    name = track.get("name")
    return SourceClip.from_json(
        {
            "trackId": tid,
            "clipId": cid,
            "trackName": name if isinstance(name, str) else None,
            "start": c.get("start"),
            "offset": c.get("offset"),
            "length": c.get("length"),
            "fadeIn": c.get("fadeIn"),
            "fadeOut": c.get("fadeOut"),
        }
    )


def find_source_clip(
    doc: pycrdt.Doc[Any], asset_id: str, *, clip_id: str | None = None, track_id: str | None = None
) -> SourceClip | None:
    """The clip playing `asset_id`: the named one (checked), else the first in track order.

    None when no clip plays the asset and none was named. Raises `NoSuchClip` when the named
    clip or track does not exist or does not play the asset.
    """
    tracks = _py(doc.get("tracks", type=pycrdt.Map))
    order = [t for t in (doc.get("trackOrder", type=pycrdt.Array).to_py() or []) if isinstance(t, str)]
    ids = list(dict.fromkeys([t for t in order if t in tracks] + sorted(tracks)))
    if track_id is not None and track_id not in tracks:
        raise NoSuchClip(f"no track {track_id!r} in this session")
    for tid in ids if track_id is None else [track_id]:
        track = _py(tracks[tid])
        clips = _py(track.get("clips"))
        names = sorted(clips, key=lambda c: (float(_py(clips[c]).get("start") or 0.0), c))
        for cid in names if clip_id is None else [c for c in names if c == clip_id]:
            if _py(clips[cid]).get("assetId") == asset_id:
                return _clip_of(tid, track, cid, clips[cid])
    if clip_id is not None or track_id is not None:
        where = f"clip {clip_id!r}" if clip_id is not None else f"track {track_id!r}"
        raise NoSuchClip(f"{where} does not play this asset")
    return None


def current_source(doc: pycrdt.Doc[Any], asset_id: str, planned: SourceClip) -> SourceClip:
    """The source clip as it is now (it may have moved since the job started), else as planned."""
    if planned.clip_id is not None and planned.track_id is not None:
        try:
            found = find_source_clip(doc, asset_id, clip_id=planned.clip_id, track_id=planned.track_id)
        except NoSuchClip:
            found = None
        if found is not None:
            return found
    return planned


# -- the jobs map ----------------------------------------------------------------------------------


def write_job_entry(doc: pycrdt.Doc[Any], job_id: str, fields: Mapping[str, Any]) -> None:
    jobs = doc.get("jobs", type=pycrdt.Map)
    entry = jobs.get(job_id)
    if isinstance(entry, pycrdt.Map):
        for key, value in fields.items():
            if entry.get(key) != value:
                entry[key] = value
    else:  # new, or a collaborator removed it meanwhile
        jobs[job_id] = pycrdt.Map(dict(fields))


def job_entry_status(doc: pycrdt.Doc[Any], job_id: str) -> str | None:
    entry = doc.get("jobs", type=pycrdt.Map).get(job_id)
    if isinstance(entry, pycrdt.Map):
        status = entry.get("status")
        return status if isinstance(status, str) else None
    return None


def prune_jobs(doc: pycrdt.Doc[Any], kinds: Sequence[str], keep: int = FINISHED_JOBS_KEPT) -> None:
    """Keep only the newest `keep` finished jobs of `kinds`, so the document does not grow forever."""
    jobs = doc.get("jobs", type=pycrdt.Map)
    finished: list[tuple[float, str]] = []
    for jid, raw in (jobs.to_py() or {}).items():
        if isinstance(raw, dict) and raw.get("kind") in kinds and raw.get("status") not in _ACTIVE:
            ended = raw.get("finishedAt")
            finished.append((float(ended) if isinstance(ended, int | float) else 0.0, jid))
    finished.sort()
    for _, jid in finished[: max(0, len(finished) - keep)]:
        del jobs[jid]


# -- tracks from results ---------------------------------------------------------------------------


def _insert_tracks(
    doc: pycrdt.Doc[Any], after: str | None, tracks: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    tmap = doc.get("tracks", type=pycrdt.Map)
    order = doc.get("trackOrder", type=pycrdt.Array)
    current = [t for t in (order.to_py() or [])]
    position = current.index(after) + 1 if after in current else len(current)
    added: list[str] = []
    for tid, spec in tracks:
        spec = dict(spec)
        clips = spec.pop("clips")
        tmap[tid] = pycrdt.Map(
            {
                **spec,
                "clips": pycrdt.Map({cid: pycrdt.Map(c) for cid, c in clips.items()}),
                "effects": pycrdt.Array(),
            }
        )
        if tid not in current:
            order.insert(position, tid)
            current.insert(position, tid)
            position += 1
        added.append(tid)
    return added


def _clip(asset_id: str, source: SourceClip, **extra: Any) -> dict[str, Any]:
    return {
        "assetId": asset_id,
        "start": source.start,
        "offset": source.offset,
        "length": source.length,
        "gainDb": 0.0,
        "fadeIn": source.fade_in,
        "fadeOut": source.fade_out,
        **extra,
    }


def _track(
    name: str, kind: str, color: str, group: str, job_id: str, clips: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name[:200],
        "kind": kind,
        "gainDb": 0.0,
        "pan": 0.0,
        "mute": False,
        "solo": False,
        "color": color,
        "group": group,
        "jobId": job_id,
        "clips": clips,
    }


def place_stems(
    doc: pycrdt.Doc[Any], job_id: str, source: SourceClip, base_name: str, stems: Mapping[str, str]
) -> list[str]:
    """One audio track per stem, in one group, right after the source's track."""
    tracks = []
    for stem, asset_id in stems.items():
        tid = f"{job_id}-{stem}"
        clips = {f"{tid}-clip": _clip(asset_id, source)}
        tracks.append(
            (
                tid,
                _track(
                    f"{base_name} — {stem}", "audio", STEM_COLORS.get(stem, "#888888"), job_id, job_id, clips
                ),
            )
        )
    return _insert_tracks(doc, source.track_id, tracks)


def place_midi(
    doc: pycrdt.Doc[Any],
    job_id: str,
    source: SourceClip,
    base_name: str,
    asset_id: str,
    notes: Sequence[Mapping[str, Any]],
) -> list[str]:
    """A `midi` track whose clip holds the notes (times in seconds of the source audio)."""
    tid = f"{job_id}-midi"
    clips = {f"{tid}-clip": _clip(asset_id, source, notes=pycrdt.Array([dict(n) for n in notes]))}
    return _insert_tracks(
        doc,
        source.track_id,
        [(tid, _track(f"{base_name} — MIDI", "midi", MIDI_COLOR, job_id, job_id, clips))],
    )


def place_master(
    doc: pycrdt.Doc[Any], job_id: str, source: SourceClip, base_name: str, asset_id: str
) -> list[str]:
    tid = f"{job_id}-master"
    clips = {f"{tid}-clip": _clip(asset_id, source)}
    return _insert_tracks(
        doc,
        source.track_id,
        [(tid, _track(f"{base_name} — mastered", "audio", MASTER_COLOR, job_id, job_id, clips))],
    )
