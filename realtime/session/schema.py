"""The session document schema (docs/session-schema.md): typed, validated reads and initial state.

Any Yjs client can write anything into the document, so reading never trusts it: an invalid
entry is logged and skipped (or a field falls back to its default), and never crashes the
server or a render.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pycrdt

log = logging.getLogger(__name__)

TRACK_KINDS = ("audio", "midi", "live", "bus")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Transport:
    playing: bool = False
    started_at: float = 0.0
    position: float = 0.0
    loop: tuple[float, float] | None = None
    # While true (and playing), every sender of the session's live jam is recorded onto its
    # live track (realtime.jam.doc_bridge).
    recording: bool = False


@dataclass(frozen=True, slots=True)
class Master:
    """The master strip: gain, then a true-peak limiter (on by default) at ``ceiling_db`` dBTP."""

    gain_db: float = 0.0
    limiter: bool = True
    ceiling_db: float = -1.0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    title: str = "Untitled"
    bpm: float = 120.0
    time_signature: tuple[int, int] = (4, 4)
    sample_rate: int = 48000
    transport: Transport = Transport()
    master: Master = Master()


@dataclass(frozen=True, slots=True)
class Clip:
    id: str
    asset_id: str
    start: float
    offset: float = 0.0
    length: float = 0.0
    gain_db: float = 0.0
    fade_in: float = 0.0
    fade_out: float = 0.0


@dataclass(frozen=True, slots=True)
class Track:
    id: str
    name: str
    kind: str = "audio"
    gain_db: float = 0.0
    pan: float = 0.0
    mute: bool = False
    solo: bool = False
    color: str = "#888888"
    clips: tuple[Clip, ...] = ()
    effects: tuple[Mapping[str, Any], ...] = ()
    # The id of the bus track this track feeds; None (absent, or not a string) means the master.
    # Whether it names an existing bus is checked by the DSP graph, which falls back to master.
    output: str | None = None
    phase_invert: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    status: str
    progress: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SessionDocument:
    session: SessionInfo
    tracks: tuple[Track, ...]
    jobs: tuple[Job, ...] = ()
    problems: tuple[str, ...] = field(default=())


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")
        log.warning("session document: %s: %s", where, what)


def _num(value: Any, where: str, problems: _Problems, default: float, lo: float, hi: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, f"expected a number, got {type(value).__name__}")
        return default
    if not lo <= float(value) <= hi:
        problems.add(where, f"{value} outside [{lo}, {hi}]")
        return min(max(float(value), lo), hi)
    return float(value)


def _bool(value: Any, where: str, problems: _Problems, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        problems.add(where, f"expected a boolean, got {type(value).__name__}")
        return default
    return value


def _str(value: Any, where: str, problems: _Problems, default: str, max_len: int = 200) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        problems.add(where, f"expected a string, got {type(value).__name__}")
        return default
    return value[:max_len]


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, pycrdt.Map):
        return dict(value.to_py() or {})
    if isinstance(value, dict):
        return value
    return None


def _read_session(raw: dict[str, Any], problems: _Problems) -> SessionInfo:
    ts = raw.get("timeSignature")
    time_signature = (4, 4)
    if ts is not None:
        if isinstance(ts, list | tuple) and len(ts) == 2 and all(isinstance(x, int | float) for x in ts):
            time_signature = (int(ts[0]), int(ts[1]))
        else:
            problems.add("session.timeSignature", "expected [beats, unit]")
    tr = raw.get("transport")
    transport = Transport()
    if isinstance(tr, dict):
        loop = tr.get("loop")
        loop_range = None
        if (
            isinstance(loop, list | tuple)
            and len(loop) == 2
            and all(isinstance(x, int | float) for x in loop)
        ):
            loop_range = (float(loop[0]), float(loop[1]))
        transport = Transport(
            playing=_bool(tr.get("playing"), "session.transport.playing", problems, False),
            started_at=_num(tr.get("startedAt"), "session.transport.startedAt", problems, 0.0, 0, 1e15),
            position=_num(tr.get("position"), "session.transport.position", problems, 0.0, 0, 1e9),
            loop=loop_range,
            recording=_bool(tr.get("recording"), "session.transport.recording", problems, False),
        )
    elif tr is not None:
        problems.add("session.transport", "expected a map")
    master = Master()
    raw_master = raw.get("master")
    if isinstance(raw_master, dict):
        master = Master(
            gain_db=_num(raw_master.get("gainDb"), "session.master.gainDb", problems, 0.0, -144.0, 24.0),
            limiter=_bool(raw_master.get("limiter"), "session.master.limiter", problems, True),
            ceiling_db=_num(
                raw_master.get("ceilingDb"), "session.master.ceilingDb", problems, -1.0, -60.0, 0.0
            ),
        )
    elif raw_master is not None:
        problems.add("session.master", "expected a map")
    return SessionInfo(
        title=_str(raw.get("title"), "session.title", problems, "Untitled"),
        bpm=_num(raw.get("bpm"), "session.bpm", problems, 120.0, 20.0, 999.0),
        time_signature=time_signature,
        sample_rate=int(_num(raw.get("sampleRate"), "session.sampleRate", problems, 48000, 8000, 192000)),
        transport=transport,
        master=master,
    )


def _read_clip(cid: str, raw: Any, where: str, problems: _Problems) -> Clip | None:
    d = _as_dict(raw)
    if d is None:
        problems.add(where, "clip is not a map")
        return None
    asset = d.get("assetId")
    if not isinstance(asset, str) or not asset:
        problems.add(where, "clip without assetId")
        return None
    return Clip(
        id=cid,
        asset_id=asset,
        start=_num(d.get("start"), f"{where}.start", problems, 0.0, 0, 1e9),
        offset=_num(d.get("offset"), f"{where}.offset", problems, 0.0, 0, 1e9),
        length=_num(d.get("length"), f"{where}.length", problems, 0.0, 0, 1e9),
        gain_db=_num(d.get("gainDb"), f"{where}.gainDb", problems, 0.0, -144.0, 24.0),
        fade_in=_num(d.get("fadeIn"), f"{where}.fadeIn", problems, 0.0, 0, 1e9),
        fade_out=_num(d.get("fadeOut"), f"{where}.fadeOut", problems, 0.0, 0, 1e9),
    )


def _read_track(tid: str, raw: Any, problems: _Problems) -> Track | None:
    where = f"tracks.{tid}"
    d = _as_dict(raw)
    if d is None:
        problems.add(where, "track is not a map")
        return None
    kind = _str(d.get("kind"), f"{where}.kind", problems, "audio")
    if kind not in TRACK_KINDS:
        problems.add(f"{where}.kind", f"unknown kind {kind!r}")
        kind = "audio"
    clips: list[Clip] = []
    raw_clips = d.get("clips")
    if isinstance(raw_clips, dict):
        for cid, craw in raw_clips.items():
            clip = _read_clip(cid, craw, f"{where}.clips.{cid}", problems)
            if clip is not None:
                clips.append(clip)
    elif raw_clips is not None:
        problems.add(f"{where}.clips", "expected a map")
    effects = d.get("effects")
    fx: tuple[Mapping[str, Any], ...] = ()
    if isinstance(effects, list):
        fx = tuple(e for e in effects if isinstance(e, dict))
    clips.sort(key=lambda c: (c.start, c.id))
    output = d.get("output")
    if output in ("", "master"):
        output = None  # the master, said explicitly
    elif output is not None and (not isinstance(output, str) or output == tid):
        problems.add(f"{where}.output", "expected the id of another (bus) track")
        output = None
    return Track(
        id=tid,
        name=_str(d.get("name"), f"{where}.name", problems, "Track"),
        kind=kind,
        gain_db=_num(d.get("gainDb"), f"{where}.gainDb", problems, 0.0, -144.0, 24.0),
        pan=_num(d.get("pan"), f"{where}.pan", problems, 0.0, -1.0, 1.0),
        mute=_bool(d.get("mute"), f"{where}.mute", problems, False),
        solo=_bool(d.get("solo"), f"{where}.solo", problems, False),
        color=_str(d.get("color"), f"{where}.color", problems, "#888888", 32),
        clips=tuple(clips),
        effects=fx,
        output=output,
        phase_invert=_bool(d.get("phaseInvert"), f"{where}.phaseInvert", problems, False),
    )


def read_document(doc: pycrdt.Doc[Any]) -> SessionDocument:
    """Read the whole document into typed objects; problems are listed, never raised."""
    problems = _Problems()
    session = _read_session(dict(doc.get("session", type=pycrdt.Map).to_py() or {}), problems)
    tracks_raw = dict(doc.get("tracks", type=pycrdt.Map).to_py() or {})
    order = [t for t in (doc.get("trackOrder", type=pycrdt.Array).to_py() or []) if isinstance(t, str)]
    # Tracks missing from trackOrder (a client that crashed mid-edit) still show, at the end.
    ids = list(dict.fromkeys([t for t in order if t in tracks_raw] + sorted(tracks_raw)))
    tracks = [t for tid in ids if (t := _read_track(tid, tracks_raw[tid], problems)) is not None]
    jobs: list[Job] = []
    for jid, jraw in dict(doc.get("jobs", type=pycrdt.Map).to_py() or {}).items():
        if not isinstance(jraw, dict):
            problems.add(f"jobs.{jid}", "job is not a map")
            continue
        status = _str(jraw.get("status"), f"jobs.{jid}.status", problems, "queued")
        if status not in JOB_STATUSES:
            problems.add(f"jobs.{jid}.status", f"unknown status {status!r}")
        err = jraw.get("error")
        jobs.append(
            Job(
                id=jid,
                kind=_str(jraw.get("kind"), f"jobs.{jid}.kind", problems, "unknown"),
                status=status,
                progress=_num(jraw.get("progress"), f"jobs.{jid}.progress", problems, 0.0, 0.0, 1.0),
                error=err if isinstance(err, str) else None,
            )
        )
    return SessionDocument(session, tuple(tracks), tuple(jobs), tuple(problems.items))


def init_document(doc: pycrdt.Doc[Any], *, title: str) -> None:
    """Write a new session's defaults (one transaction, so one log row)."""
    with doc.transaction(origin="server"):
        session = doc.get("session", type=pycrdt.Map)
        session["title"] = title
        session["bpm"] = 120
        session["timeSignature"] = [4, 4]
        session["sampleRate"] = 48000
        session["transport"] = pycrdt.Map({"playing": False, "startedAt": 0, "position": 0})
        doc.get("tracks", type=pycrdt.Map)
        doc.get("trackOrder", type=pycrdt.Array)
        doc.get("jobs", type=pycrdt.Map)


def set_title(doc: pycrdt.Doc[Any], title: str) -> None:
    with doc.transaction(origin="server"):
        doc.get("session", type=pycrdt.Map)["title"] = title
