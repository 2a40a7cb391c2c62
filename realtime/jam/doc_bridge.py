"""The jam in the session document: live tracks, their levels as mix defaults, and recording.

`JamDocuments` (one per server) gives every running jam engine a `SessionBridge`, which, on the
event loop:

- keeps one `live` track per sending participant (docs/session-schema.md#live-tracks): created
  when a sender joins, or reused when the same user comes back under the same name, marked
  `live.active` false when they leave (the track stays: it may hold recordings);
- pushes each live track's `gainDb`, `pan` and `mute` into the engine as that sender's default
  level in everyone's mix (a listener's own `mix` overrides still win), whenever the document
  changes;
- records: while `session.transport.recording` and `playing` are true, every sender's decoded
  input goes to a file (`realtime.jam.recorder`); when the take ends, or a participant leaves,
  each file becomes an asset and a clip on that participant's live track, placed by the
  recorder's alignment rule. The take shows in `jobs` as `{kind: "record", …}`;
- feeds a running streaming preview of the session with each live track's audio
  (`realtime.preview.LiveInput`).

The engine is reached only through its hooks (`on_roster`, `defaults_for`, `set_tap`,
`set_defaults`); the tick thread sees nothing of this module but one tap call per tick, and only
while something records or previews.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pycrdt
from numpy.typing import NDArray

from persistence.ports import AssetKind

from ..session.schema import Transport
from .mixplan import InputDefaults
from .recorder import TakeFile, TakeRecorder, alignment_latency, place_clip, timeline_position

if TYPE_CHECKING:
    from ..media.library import AssetLibrary
    from ..preview import LiveInput, PreviewHub
    from ..session.hub import RoomManager, RoomRunner
    from .engine import JamEngine, JamTap, Participant

__all__ = ["JamDocuments", "SessionBridge", "defaults_of", "recording_transport"]

log = logging.getLogger(__name__)

LIVE_COLOR: Final = "#e07b39"
RECORD_JOBS_KEPT: Final = 10
HEARTBEAT_S: Final = 1.0
# A new connection joins the engine at once and names itself in its `join` message a moment
# later: waiting this long before writing the document spares a track made for the account's
# name and dropped again.
SETTLE_S: Final = 0.05
_ACTIVE: Final = ("queued", "running")
SETTLE_LIMIT_S: Final = 120.0  # shutdown waits this long at most for recordings to be stored


def _number(value: Any, default: float, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return min(max(float(value), lo), hi)


def defaults_of(entry: pycrdt.Map[Any]) -> InputDefaults:
    """A live track's level as the jam's mix default (invalid values fall back like the schema's)."""
    return InputDefaults(
        gain_db=_number(entry.get("gainDb"), 0.0, -144.0, 24.0),
        pan=_number(entry.get("pan"), 0.0, -1.0, 1.0),
        mute=entry.get("mute") is True,
    )


def _live_of(entry: Any) -> pycrdt.Map[Any] | None:
    if not isinstance(entry, pycrdt.Map) or entry.get("kind") != "live":
        return None
    live = entry.get("live")
    return live if isinstance(live, pycrdt.Map) else None


def _key_of(live: pycrdt.Map[Any]) -> tuple[str, str] | None:
    user, name = live.get("userId"), live.get("participantName")
    if not isinstance(user, str) or not isinstance(name, str):
        return None
    return (user, name)


def recording_transport(doc: pycrdt.Doc[Any]) -> Transport | None:
    """The transport if it records now (`recording` and `playing`), else None."""
    raw = doc.get("session", type=pycrdt.Map).get("transport")
    tr = raw.to_py() if isinstance(raw, pycrdt.Map) else raw
    if not isinstance(tr, dict) or tr.get("recording") is not True or tr.get("playing") is not True:
        return None
    return Transport(
        playing=True,
        started_at=_number(tr.get("startedAt"), 0.0, 0.0, 1e15),
        position=_number(tr.get("position"), 0.0, 0.0, 1e9),
        recording=True,
    )


@dataclass(slots=True)
class _Link:
    """A participant's live track."""

    track_id: str
    key: tuple[str, str]
    created: bool  # made for this connection (a rename may drop it while it is still empty)


@dataclass(slots=True)
class _Take:
    id: str
    transport: Transport
    recorder: TakeRecorder
    wall0: float  # time.time() …
    mono0: float  # … and time.monotonic() read together: the engine clock → wall clock
    done: asyncio.Future[None]
    number: int = 1  # the bridge's n-th take (asset names)
    pending: int = 0
    stopped: bool = False  # asked to stop (or failed): the tap no longer feeds it
    written: bool = False  # the writer is done: every file it made has been handed over
    failed: str | None = None
    tracks: list[str] = field(default_factory=list)
    clips: int = 0
    reported: tuple[float, int, int] = (-1.0, -1, -1)


class SessionBridge:
    """One running jam engine and its session document (see the module docstring)."""

    def __init__(self, owner: JamDocuments, engine: JamEngine) -> None:
        self._owner = owner
        self._rooms = owner.rooms
        self._assets = owner.assets
        self.session_id = engine.session_id
        self.engine = engine
        self._loop = asyncio.get_running_loop()
        self._runner: RoomRunner | None = None
        self._links: dict[str, _Link] = {}
        self._detached: set[str] = set()  # pids whose track a collaborator deleted meanwhile
        self._seen: dict[str, Participant] = {}  # every sender who joined, kept for their recordings
        self._present: set[str] = set()
        self._track_of: dict[str, str] = {}  # pid → the live track its recordings go to
        self._by_key: dict[tuple[str, str], InputDefaults] = {}
        self._pushed: dict[str, InputDefaults] = {}
        self._live: LiveInput | None = owner.preview.live_input(self.session_id) if owner.preview else None
        self._live_ids: dict[str, str] = {}  # pid → track id for the preview (replaced, never mutated)
        self._take: _Take | None = None
        self._takes = 0
        self._no_retry: Transport | None = None
        self._dirty = False
        self._sync_task: asyncio.Task[None] | None = None
        self._closed = False
        self._discarded = False
        engine.on_roster = self._roster_changed
        engine.defaults_for = self._defaults_for
        loaded = self._rooms.get_loaded(self.session_id)
        if loaded is not None:
            self._read_levels(loaded.room.doc)  # known players get their level from the first block
        self._heartbeat = self._owner.spawn(self._beat())
        self._roster_changed()

    # -- engine hooks (loop) -------------------------------------------------------------------
    def _defaults_for(self, user_id: str, name: str | None) -> InputDefaults | None:
        return self._by_key.get((user_id, name or ""))

    def _roster_changed(self) -> None:
        if self._closed:
            return
        members = {p.pid for p in self.engine.participants}
        for p in self.engine.participants:
            if p.can_send:
                self._seen[p.pid] = p
        gone = self._present - members
        self._present = members
        take = self._take
        if take is not None and not take.stopped:
            for pid in gone:
                take.recorder.finish(pid)  # its file is placed now, not at the end of the take
        self._schedule_sync()

    # -- the room --------------------------------------------------------------------------------
    async def _room(self) -> RoomRunner:
        """The session's loaded room, following reloads (the change callback moves with it)."""
        runner = await self._rooms.acquire(self.session_id)
        if runner is not self._runner:
            old = self._runner
            if old is not None:
                with contextlib.suppress(ValueError):
                    old.change_callbacks.remove(self._doc_changed)
            self._runner = runner
            runner.change_callbacks.append(self._doc_changed)
            if old is not None:
                self._schedule_sync()  # a restore may have replaced the tracks
        return runner

    def _doc_changed(self) -> None:
        runner = self._runner
        if runner is None or self._closed:
            return
        doc = runner.room.doc
        self._read_levels(doc)
        self._check_transport(doc)

    def _schedule_sync(self) -> None:
        self._dirty = True
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = self._owner.spawn(self._sync_while_dirty())

    async def _sync_while_dirty(self) -> None:
        await asyncio.sleep(SETTLE_S)
        while self._dirty:
            self._dirty = False
            try:
                runner = await self._room()
                self._reconcile(runner)
                self._check_transport(runner.room.doc)
            except Exception:
                log.exception("jam %s: writing live tracks failed", self.session_id)

    # -- live tracks -----------------------------------------------------------------------------
    def _reconcile(self, runner: RoomRunner) -> None:
        """Bring the live tracks in line with who sends now (one transaction)."""
        doc = runner.room.doc
        tracks = doc.get("tracks", type=pycrdt.Map)
        order = doc.get("trackOrder", type=pycrdt.Array)
        senders = [] if self._closed else [p for p in self.engine.participants if p.can_send]
        present = {p.pid for p in senders}
        with doc.transaction(origin="server"):
            for pid in [pid for pid in self._links if pid not in present]:
                self._release(tracks, order, self._links.pop(pid), drop_if_empty=False)
            self._detached &= present
            for p in senders:
                key = (p.user_id, p.name or "")
                link = self._links.get(p.pid)
                if link is not None and link.key != key:  # renamed
                    self._release(tracks, order, self._links.pop(p.pid), drop_if_empty=True)
                    self._detached.discard(p.pid)
                    link = None
                if link is None:
                    if p.pid not in self._detached:
                        self._links[p.pid] = self._link(tracks, order, p, key)
                    continue
                entry = tracks.get(link.track_id)
                if _live_of(entry) is None:  # a collaborator deleted it: not brought back now
                    del self._links[p.pid]
                    self._detached.add(p.pid)
                    continue
                self._mark(entry, p, active=True)
            if not self._closed:  # a closing bridge may overlap the session's next jam
                linked = {link.track_id for link in self._links.values()}
                for tid, entry in tracks.items():
                    live = _live_of(entry)
                    if live is not None and live.get("active") is True and tid not in linked:
                        live["active"] = False  # left over from a jam that ended without saying so
        runner.commit_local_changes()
        for pid, link in self._links.items():
            self._track_of[pid] = link.track_id
        self._live_ids = {pid: link.track_id for pid, link in self._links.items()}
        self._read_levels(doc)

    def _link(
        self, tracks: pycrdt.Map[Any], order: pycrdt.Array[Any], p: Participant, key: tuple[str, str]
    ) -> _Link:
        taken = {link.track_id for link in self._links.values()}
        for tid in [t for t in order.to_py() or [] if isinstance(t, str)] + sorted(tracks.keys()):
            entry = tracks.get(tid)
            live = _live_of(entry)
            if live is not None and tid not in taken and _key_of(live) == key:
                self._mark(entry, p, active=True)
                return _Link(tid, key, created=False)
        tid = f"live-{secrets.token_hex(6)}"
        tracks[tid] = pycrdt.Map(
            {
                "name": (p.name or "Live")[:200],
                "kind": "live",
                "gainDb": 0.0,
                "pan": 0.0,
                "mute": False,
                "solo": False,
                "color": LIVE_COLOR,
                "clips": pycrdt.Map(),
                "effects": pycrdt.Array(),
                "live": pycrdt.Map(
                    {"participantId": p.pid, "userId": p.user_id, "participantName": key[1], "active": True}
                ),
            }
        )
        order.append(tid)
        return _Link(tid, key, created=True)

    @staticmethod
    def _mark(entry: Any, p: Participant, *, active: bool) -> None:
        live = entry.get("live")
        if not isinstance(live, pycrdt.Map):
            entry["live"] = live = pycrdt.Map()
        for k, v in (("participantId", p.pid), ("userId", p.user_id), ("active", active)):
            if live.get(k) != v:
                live[k] = v

    def _release(
        self, tracks: pycrdt.Map[Any], order: pycrdt.Array[Any], link: _Link, *, drop_if_empty: bool
    ) -> None:
        entry = tracks.get(link.track_id)
        live = _live_of(entry)
        if live is None:
            return
        clips = entry.get("clips") if isinstance(entry, pycrdt.Map) else None
        empty = not isinstance(clips, pycrdt.Map) or len(clips) == 0
        if drop_if_empty and link.created and empty:
            del tracks[link.track_id]
            ids = order.to_py() or []
            if link.track_id in ids:
                del order[ids.index(link.track_id)]
            return
        if live.get("active") is not False:
            live["active"] = False

    def _read_levels(self, doc: pycrdt.Doc[Any]) -> None:
        """Every live track's level → the defaults cache and the engine (only what changed)."""
        tracks = doc.get("tracks", type=pycrdt.Map)
        by_key: dict[tuple[str, str], InputDefaults] = {}
        for _tid, entry in tracks.items():
            live = _live_of(entry)
            key = _key_of(live) if live is not None else None
            if key is not None:
                by_key[key] = defaults_of(entry)
        self._by_key = by_key
        for pid, link in self._links.items():
            entry = tracks.get(link.track_id)
            wanted = defaults_of(entry) if _live_of(entry) is not None else InputDefaults()
            if self._pushed.get(pid) != wanted:
                self._pushed[pid] = wanted
                self.engine.set_defaults(pid, wanted)

    # -- the tap (recording, preview) ------------------------------------------------------------
    def set_live(self, live: LiveInput | None) -> None:
        self._live = live
        self._update_tap()

    def _update_tap(self) -> None:
        recorder = self._take.recorder if self._take is not None and not self._take.stopped else None
        live = None if self._closed else self._live
        self.engine.set_tap(None if recorder is None and live is None else self._make_tap(recorder, live))

    def _make_tap(self, recorder: TakeRecorder | None, live: LiveInput | None) -> JamTap:
        bridge = self
        cache: list[Any] = [None, None, ()]  # inputs, mapping, track ids

        def tap(
            k: int,
            inputs: tuple[str, ...],
            x: NDArray[np.float32],
            arrivals: NDArray[np.float64],
            seqs: NDArray[np.int64],
            now: float,
        ) -> None:
            block = x.copy()  # one copy per tick, shared by both consumers (neither writes to it)
            if recorder is not None:
                recorder.push(k, inputs, block, arrivals.copy(), seqs, now)
            if live is not None:
                mapping = bridge._live_ids
                if cache[0] is not inputs or cache[1] is not mapping:
                    cache[:] = [inputs, mapping, tuple(mapping.get(pid) for pid in inputs)]
                live.write(cache[2], block)

        return tap

    # -- recording -------------------------------------------------------------------------------
    def _check_transport(self, doc: pycrdt.Doc[Any]) -> None:
        if self._closed:
            return
        transport = recording_transport(doc)
        take = self._take
        current = take.transport if take is not None and not take.stopped else None
        if transport == current:
            return
        if take is not None and not take.stopped:
            self._stop_take(take)
        if transport is not None and transport != self._no_retry:
            self._start_take(transport)

    def _hop(self, fn: Callable[..., None]) -> Callable[..., None]:
        """A callable for the recorder's thread that runs ``fn`` on the loop."""
        loop = self._loop

        def call(*args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
                loop.call_soon_threadsafe(fn, *args)

        return call

    def _start_take(self, transport: Transport) -> None:
        take_id = f"record-{secrets.token_hex(8)}"
        holder: list[_Take] = []
        recorder = TakeRecorder(
            block=self.engine.block,
            temp_path=self._assets.temp_path,
            on_file=self._hop(lambda f: self._file_done(holder[0], f)),
            on_stopped=self._hop(lambda: self._recorder_stopped(holder[0])),
            on_error=self._hop(lambda exc: self._recorder_failed(holder[0], exc)),
        )
        take = _Take(
            id=take_id,
            transport=transport,
            recorder=recorder,
            wall0=time.time(),
            mono0=time.monotonic(),
            done=self._loop.create_future(),
            number=self._takes + 1,
        )
        holder.append(take)
        self._take = take
        self._takes += 1
        self._owner.track(take.done)
        recorder.start()
        self._update_tap()
        self._write_job(take, status="running", progress=0.0, startedAt=time.time() * 1000, error=None)
        log.info("jam recording started", extra={"room": self.session_id, "job": take_id})

    def _stop_take(self, take: _Take) -> None:
        take.stopped = True
        self._update_tap()
        take.recorder.stop()

    def _file_done(self, take: _Take, f: TakeFile) -> None:
        if self._discarded:
            f.path.unlink(missing_ok=True)
            return
        take.pending += 1
        self._owner.spawn(self._place(take, f))

    def _recorder_stopped(self, take: _Take) -> None:
        take.stopped = take.written = True
        self._maybe_finish(take)

    def _recorder_failed(self, take: _Take, exc: BaseException) -> None:
        take.failed = f"recording failed: {type(exc).__name__}: {exc}"[:300]
        take.stopped = take.written = True
        self._no_retry = take.transport  # not again for this transport: it would fail again
        if self._take is take:
            self._update_tap()
        self._maybe_finish(take)

    async def _place(self, take: _Take, f: TakeFile) -> None:
        """Ingest one participant's file and lay it on their live track, aligned."""
        try:
            p = self._seen.get(f.pid)
            latency = alignment_latency(
                residence_s=f.residence_s,
                rtt_ms=p.rtt_ms if p is not None else None,
                client_ms=p.latency_ms if p is not None else None,
                fallback_s=self.engine.block / 48000,
            )
            wall = take.wall0 + (f.first_time - take.mono0)
            placement = place_clip(timeline_position(take.transport, wall), latency, f.duration_s)
            if placement is None:
                return
            name = (p.name if p is not None and p.name else "Live") + f" take {take.number}.wav"
            record, ingested = await self._assets.ingest(
                f.path,
                session_id=self.session_id,
                uploader_id=p.user_id if p is not None else None,
                name=name[:200],
                kind=AssetKind.SOURCE,
            )
            if self._discarded:
                await self._assets.delete(record)
                return
            runner = await self._room()
            length = min(placement.length, ingested.frames / 48000 - placement.offset)
            self._add_clip(runner, take, f.pid, record.id, placement.start, placement.offset, length, latency)
        except Exception as exc:
            log.exception("jam %s: placing the recording of %s failed", self.session_id, f.pid)
            take.failed = take.failed or f"{f.pid}: {type(exc).__name__}: {exc}"[:300]
        finally:
            f.path.unlink(missing_ok=True)
            take.pending -= 1
            self._maybe_finish(take)

    def _add_clip(
        self,
        runner: RoomRunner,
        take: _Take,
        pid: str,
        asset_id: str,
        start: float,
        offset: float,
        length: float,
        latency: float,
    ) -> None:
        doc = runner.room.doc
        tracks = doc.get("tracks", type=pycrdt.Map)
        order = doc.get("trackOrder", type=pycrdt.Array)
        with doc.transaction(origin="server"):
            tid = self._track_of.get(pid)
            entry = tracks.get(tid) if tid is not None else None
            if _live_of(entry) is None:
                # Its track was deleted (or never written): the recording gets a fresh one.
                p = self._seen.get(pid)
                if p is None:
                    return
                link = self._link(tracks, order, p, (p.user_id, p.name or ""))
                tid = link.track_id
                self._track_of[pid] = tid
                entry = tracks.get(tid)
                live = _live_of(entry)
                if pid in self._present and pid not in self._links:
                    self._links[pid] = link
                    self._detached.discard(pid)
                    self._live_ids = {q: ln.track_id for q, ln in self._links.items()}
                elif pid not in self._links and live is not None:
                    live["active"] = False
            assert isinstance(entry, pycrdt.Map)
            clips = entry.get("clips")
            if not isinstance(clips, pycrdt.Map):
                entry["clips"] = clips = pycrdt.Map()
            clips[f"{take.id}-{pid}"] = pycrdt.Map(
                {
                    "assetId": asset_id,
                    "start": start,
                    "offset": offset,
                    "length": length,
                    "gainDb": 0.0,
                    "fadeIn": 0.0,
                    "fadeOut": 0.0,
                    "takeId": take.id,
                    "latencyMs": round(latency * 1000, 3),
                }
            )
        runner.commit_local_changes()
        assert tid is not None
        if tid not in take.tracks:
            take.tracks.append(tid)
        take.clips += 1

    def _maybe_finish(self, take: _Take) -> None:
        if not take.written or take.pending or take.done.done():
            return
        take.done.set_result(None)
        if self._take is take:
            self._take = None
        if self._discarded:
            return
        self._owner.spawn(self._finish_job(take))

    async def _finish_job(self, take: _Take) -> None:
        fields: dict[str, Any] = {
            "status": "failed" if take.failed else "done",
            "progress": 1.0,
            "finishedAt": time.time() * 1000,
            "seconds": round(take.recorder.seconds, 3),
            "bytes": take.recorder.bytes,
            "participants": take.recorder.participants,
            "tracks": list(take.tracks),
            "clips": take.clips,
            "droppedBlocks": take.recorder.dropped_blocks,
            "error": take.failed,
        }
        await self._write_job_async(take, prune=True, **fields)
        log.info(
            "jam recording finished",
            extra={"room": self.session_id, "job": take.id, "clips": take.clips, "error": take.failed},
        )

    def _write_job(self, take: _Take, **fields: Any) -> None:
        self._owner.spawn(self._write_job_async(take, **fields))

    async def _write_job_async(self, take: _Take, *, prune: bool = False, **fields: Any) -> None:
        try:
            runner = await self._room()
        except Exception:
            log.exception("jam %s: the session could not be loaded for job %s", self.session_id, take.id)
            return
        doc = runner.room.doc
        jobs = doc.get("jobs", type=pycrdt.Map)
        with doc.transaction(origin="server"):
            entry = jobs.get(take.id)
            if not isinstance(entry, pycrdt.Map):
                jobs[take.id] = entry = pycrdt.Map({"kind": "record"})
            for key, value in {**fields, "updatedAt": time.time() * 1000}.items():
                if key in ("tracks",):
                    value = pycrdt.Array(value)
                elif key in entry and entry.get(key) == value:
                    continue
                entry[key] = value
            if prune:
                _prune_record_jobs(jobs)
        runner.commit_local_changes()

    def _report_progress(self) -> None:
        take = self._take
        if take is None or take.stopped:
            return
        r = take.recorder
        now = (round(r.seconds, 1), r.bytes, r.participants)
        if now != take.reported:
            take.reported = now
            self._write_job(take, seconds=now[0], bytes=now[1], participants=now[2])

    # -- lifecycle -------------------------------------------------------------------------------
    async def _beat(self) -> None:
        """Once a second: keep the room loaded while the jam runs, and show recording progress."""
        while not self._closed:
            try:
                runner = self._rooms.get_loaded(self.session_id)
                if runner is None or runner is not self._runner:
                    runner = await self._room()
                if runner.peer_count == 0:
                    # Nobody syncs, but the jam writes to the document: not idle.
                    runner.empty_since = time.monotonic()
                self._report_progress()
            except Exception:
                log.exception("jam %s: document heartbeat failed", self.session_id)
            await asyncio.sleep(HEARTBEAT_S)

    def close(self) -> None:
        """The engine stopped: end the take (its files are still placed) and free the tracks."""
        if self._closed:
            return
        self._closed = True
        self.engine.on_roster = None
        self.engine.defaults_for = None
        self.engine.set_tap(None)
        self._heartbeat.cancel()
        take = self._take
        if take is not None and not take.stopped:
            self._stop_take(take)
        self._owner.spawn(self._final_sync())

    async def _final_sync(self) -> None:
        if self._discarded:
            return
        try:
            runner = await self._room()
            self._reconcile(runner)
        except Exception:
            log.exception("jam %s: releasing live tracks failed", self.session_id)
        finally:
            if self._runner is not None:
                with contextlib.suppress(ValueError):
                    self._runner.change_callbacks.remove(self._doc_changed)

    def discard(self) -> None:
        """The session is being deleted: stop, and keep nothing of what was being recorded."""
        self._discarded = True
        self.close()


def _prune_record_jobs(jobs: pycrdt.Map[Any]) -> None:
    finished: list[tuple[float, str]] = []
    for jid, raw in (jobs.to_py() or {}).items():
        if isinstance(raw, dict) and raw.get("kind") == "record" and raw.get("status") not in _ACTIVE:
            ended = raw.get("finishedAt")
            finished.append((float(ended) if isinstance(ended, int | float) else 0.0, jid))
    finished.sort()
    for _, jid in finished[: max(0, len(finished) - RECORD_JOBS_KEPT)]:
        del jobs[jid]


class JamDocuments:
    """Connects every running jam of this server to its session document (and preview)."""

    def __init__(self, rooms: RoomManager, assets: AssetLibrary, preview: PreviewHub | None = None) -> None:
        self.rooms = rooms
        self.assets = assets
        self.preview = preview
        self._bridges: dict[str, SessionBridge] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        if preview is not None:
            preview.live_watchers.append(self._preview_changed)

    def attach(self, engine: JamEngine) -> SessionBridge:
        """A jam engine started (on the loop, before its first participant joins)."""
        old = self._bridges.get(engine.session_id)
        if old is not None and old.engine is not engine:
            old.close()
        bridge = self._bridges[engine.session_id] = SessionBridge(self, engine)
        return bridge

    def detach(self, engine: JamEngine) -> None:
        """The engine is stopping: finish its take and release its live tracks."""
        bridge = self._bridges.get(engine.session_id)
        if bridge is not None and bridge.engine is engine:
            del self._bridges[engine.session_id]
            bridge.close()

    def discard(self, session_id: str) -> None:
        """The session is deleted: its running take is thrown away, nothing more is written."""
        bridge = self._bridges.pop(session_id, None)
        if bridge is not None:
            bridge.discard()

    def bridge(self, session_id: str) -> SessionBridge | None:
        return self._bridges.get(session_id)

    def _preview_changed(self, session_id: str, live: LiveInput | None) -> None:
        bridge = self._bridges.get(session_id)
        if bridge is not None:
            bridge.set_live(live)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self.track(task)
        return task

    def track(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def settled(self) -> None:
        """Wait for finishing takes and document writes (shutdown: before the rooms close)."""
        deadline = asyncio.get_running_loop().time() + SETTLE_LIMIT_S
        while True:
            waiting = [f for f in self._pending if not f.done()]
            # A bridge's heartbeat runs as long as its engine: only a closed bridge's work counts.
            live = {b._heartbeat for b in self._bridges.values()}
            waiting = [f for f in waiting if f not in live]
            remaining = deadline - asyncio.get_running_loop().time()
            if not waiting or remaining <= 0:
                return
            await asyncio.wait(waiting, timeout=remaining)
