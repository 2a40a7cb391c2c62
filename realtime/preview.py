"""Live preview: the session's mix as one endless Ogg/Opus stream that follows the transport.

One `PreviewEngine` thread per session renders the graph and encodes each block once, however
many people listen. Pages are fanned out on the event loop to bounded per-listener queues, so a
slow listener is dropped without touching the others. A listener joining mid-stream gets the
header pages first, then pages re-based to start at time zero (`media.ogg.rebase`).

While the preview plays, master and track meters go to the session's sync clients as the
server's awareness state, at most 20 times a second (never through the document).

The session's live jam is part of the mix: each `live` track's audio (the jam's decoded input
of its participant, handed over by `realtime.jam.doc_bridge` through a `LiveInput`) joins that
track's clips before its effects and fader, so the document's levels apply to it as to any
track. It plays whether the transport runs or not, like a DAW's input monitoring.

The pure part is `PlayheadClock`; the engine is a thread on an absolute deadline schedule;
`PreviewHub` is the asyncio shell that wires rooms, assets and listeners together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from persistence.ports import Store

from .dsp.graph import Graph, as_asset_source
from .media.library import AssetLibrary
from .media.live import OggOpusEncoder
from .media.ogg import Page, rebase
from .session.hub import RoomManager, RoomRunner
from .session.schema import SessionDocument, Transport, read_document

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
BLOCK = 960  # 20 ms, one Opus frame
METER_INTERVAL_S = 0.05  # 20 Hz
F32 = NDArray[np.float32]
# Assets a clip may name that hold no samples (a transcription's MIDI file).
SILENT_MIMES = frozenset({"audio/midi"})


class PlayheadClock:
    """Where the preview plays, from the document's shared transport (pure).

    `transport.startedAt` is server time in ms when play started at `position` seconds; the
    clock is re-synced whenever the transport changes and otherwise advances by whole blocks,
    so the stream never jitters with the wall clock.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.frame: int | None = None
        self._loop: tuple[int, int] | None = None

    def sync(self, transport: Transport, now_ms: float) -> None:
        if not transport.playing:
            self.frame = None
            return
        elapsed = max(0.0, now_ms - transport.started_at) / 1000 if transport.started_at > 0 else 0.0
        frame = round((transport.position + elapsed) * self.sample_rate)
        self._loop = None
        if transport.loop is not None:
            start, end = (round(x * self.sample_rate) for x in transport.loop)
            if end > start:
                self._loop = (start, end)
                if frame >= end:
                    frame = start + (frame - start) % (end - start)
        self.frame = frame

    def advance(self, n: int) -> list[tuple[int, int, int]] | None:
        """Segments (timeline frame, count, offset in the block) for the next n frames."""
        if self.frame is None:
            return None
        segments = []
        offset = 0
        while offset < n:
            count = n - offset
            if self._loop is not None and self._loop[0] <= self.frame < self._loop[1]:
                count = min(count, self._loop[1] - self.frame)
            segments.append((self.frame, count, offset))
            self.frame += count
            offset += count
            if self._loop is not None and self.frame >= self._loop[1]:
                self.frame = self._loop[0]
        return segments


class LiveInput:
    """The jam's audio for the preview's `live` tracks: the jam tick writes, the engine reads.

    The tick appends one block per tick (120, 240 or 480 frames of every live track at once); the
    preview takes `BLOCK` frames every 20 ms. Both follow the monotonic clock, so their rates
    match and only their phase needs a buffer: reading starts once a block plus `prefetch`
    frames wait, a read that finds less than a block plays no live audio and prefetches again,
    a read that finds more than a block beyond that drops the oldest, and a backlog past
    `max_frames` (a reader that stopped) is trimmed by the writer.
    """

    def __init__(self, *, prefetch: int = BLOCK, max_frames: int = 6 * BLOCK) -> None:
        self._items: collections.deque[tuple[Sequence[str | None], F32]] = collections.deque()
        self._prefetch = prefetch
        self._max_frames = max_frames
        self._block = 0
        self._playing = False
        self.underruns = 0
        self.dropped = 0

    def write(self, track_ids: Sequence[str | None], block: F32) -> None:
        """One jam tick (jam tick thread): row i of `block` (tracks x frames, not modified
        afterwards) is the audio of track `track_ids[i]`; None rows belong to no track."""
        frames = block.shape[1]
        if frames <= 0 or BLOCK % frames:
            return  # not a jam block size (120, 240, 480)
        self._block = frames
        items = self._items
        if len(items) * frames >= self._max_frames + BLOCK:
            with contextlib.suppress(IndexError):  # the reader may have emptied it meanwhile
                items.popleft()
                self.dropped += 1
        items.append((track_ids, block))

    def read(self, n: int = BLOCK) -> dict[str, F32]:
        """The next `n` frames per live track (preview thread); empty while there is none."""
        items = self._items
        b = self._block
        if b == 0 or n % b:
            return {}
        queued = len(items) * b
        if not self._playing:
            if queued < n + self._prefetch:
                return {}
            self._playing = True
        elif queued < n:
            self._playing = False
            self.underruns += 1
            return {}
        # Behind by more than a block over the prefetch (this thread stalled): catch up.
        excess = queued - n - self._prefetch - BLOCK
        for _ in range(max(0, excess) // b):
            items.popleft()
            self.dropped += 1
        out: dict[str, F32] = {}
        for j in range(n // b):
            ids, block = items.popleft()
            for i, tid in enumerate(ids):
                if tid is None:
                    continue
                track = out.get(tid)
                if track is None:
                    track = out[tid] = np.zeros(n, np.float32)
                track[j * b : (j + 1) * b] = block[i]
        return out


class _LiveGraph(Graph):
    """The session graph with the jam's audio fed into its `live` tracks (see `LiveInput`).

    A live track's audio is added to its clips before its effects, fader and pan, so mute,
    solo, effects and routing apply to the jam exactly as to recorded audio.
    """

    live: Mapping[str, F32] = {}

    def _render_sources(self, t0: int, n: int) -> None:
        live = self.live
        if not live:
            super()._render_sources(t0, n)
            return
        for node in self._sources:
            node.render_clips(t0, n)
            audio = live.get(node.id)
            if audio is not None:
                block = node.block(n)
                block += audio[:n]
            node.finish(n)


def _window(live: Mapping[str, F32], offset: int, count: int) -> Mapping[str, F32]:
    if not live:
        return live
    return {tid: audio[offset : offset + count] for tid, audio in live.items()}


@dataclass(frozen=True, slots=True)
class Snapshot:
    doc: SessionDocument
    assets: Mapping[str, F32]


class PreviewEngine(threading.Thread):
    """Renders and encodes one session in real time on its own thread."""

    def __init__(
        self,
        *,
        on_pages: Callable[[list[Page]], None],
        on_meters: Callable[[dict[str, Any] | None], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="preview", daemon=True)
        self._on_pages = on_pages
        self._on_meters = on_meters
        self._clock = clock
        self._pending: Snapshot | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.headers: list[Page] = []
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.live = LiveInput()

    def submit(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._pending = snapshot

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported to the hub; a dead engine must not go unnoticed
            self.error = exc
            log.exception("preview engine failed")
            self.ready.set()

    def _run(self) -> None:
        graph = _LiveGraph(sample_rate=SAMPLE_RATE, block=BLOCK, meters=True)
        encoder = OggOpusEncoder()
        playhead = PlayheadClock()
        transport: Transport | None = None
        out = np.zeros((2, BLOCK), dtype=np.float32)
        next_meter = 0.0
        deadline = time.monotonic()
        try:
            while not self._stop_event.is_set():
                with self._lock:
                    snapshot, self._pending = self._pending, None
                if snapshot is not None:
                    graph.assets = as_asset_source(snapshot.assets)
                    graph.update(snapshot.doc)
                    if snapshot.doc.session.transport != transport:
                        transport = snapshot.doc.session.transport
                        playhead.sync(transport, self._clock() * 1000)
                live = self.live.read(BLOCK)
                segments = playhead.advance(BLOCK)
                if segments is None and live:
                    # Stopped, but the jam plays: render before the timeline's start (no clips).
                    segments = [(-BLOCK, BLOCK, 0)]
                if segments is None:
                    out.fill(0.0)
                else:
                    for t0, count, offset in segments:
                        graph.live = _window(live, offset, count)
                        out[:, offset : offset + count] = graph.render_block(t0, count)
                pages = encoder.encode(out)
                if pages:
                    if not self.headers:
                        self.headers = [p for p in pages if p.is_header]
                        self.ready.set()
                    self._on_pages([p for p in pages if not p.is_header])
                now = time.monotonic()
                if now >= next_meter:
                    next_meter = now + METER_INTERVAL_S
                    self._on_meters(_meter_state(graph) if segments is not None else None)
                deadline += BLOCK / SAMPLE_RATE
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._stop_event.wait(delay)
                elif delay < -0.5:
                    deadline = time.monotonic()  # fell far behind (machine stalled): skip ahead
        finally:
            graph.close()
            with contextlib.suppress(Exception):
                encoder.close()
            self._on_meters(None)


def _meter_state(graph: Graph) -> dict[str, Any]:
    master = graph.master_meter
    return {
        "master": master.snapshot() if master is not None else None,
        "tracks": {tid: m.snapshot() for tid, m in graph.meters.items()},
    }


class Listener:
    def __init__(self, max_pages: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_pages)
        self.offset: int | None = None
        self.sequence = 2  # after the two header pages
        self.dropped = False

    def push(self, page: Page, previous_granule: int) -> bool:
        if self.offset is None:
            self.offset = previous_granule
        data = rebase(page, granule_offset=self.offset, sequence=self.sequence)
        self.sequence += 1
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True


class PreviewStream:
    """One session's engine and its listeners (event-loop side)."""

    def __init__(self, session_id: str, hub: PreviewHub) -> None:
        self.session_id = session_id
        self._hub = hub
        self._loop = asyncio.get_running_loop()
        self.listeners: set[Listener] = set()
        self._last_granule = 0
        self.engine = PreviewEngine(on_pages=self._pages_from_thread, on_meters=self._meters_from_thread)
        self.idle_since: float | None = None
        self.dirty = False
        self.assets: dict[str, F32] = {}  # loaded samples of the assets the document uses

    def _pages_from_thread(self, pages: list[Page]) -> None:
        self._loop.call_soon_threadsafe(self._publish, pages)

    def _meters_from_thread(self, state: dict[str, Any] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._meters, state)

    def _publish(self, pages: list[Page]) -> None:
        for page in pages:
            for listener in list(self.listeners):
                if not listener.push(page, self._last_granule):
                    self.drop(listener)
            if page.granule >= 0:
                self._last_granule = page.granule

    def _meters(self, state: dict[str, Any] | None) -> None:
        runner = self._hub.rooms.get_loaded(self.session_id)
        if runner is not None:
            runner.set_server_presence("null" if state is None else json.dumps({"meters": state}))

    def drop(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.discard(listener)
            listener.dropped = True
            with contextlib.suppress(asyncio.QueueFull):
                listener.queue.put_nowait(None)
            log.info("preview %s: dropped a slow listener", self.session_id)


class PreviewHub:
    """Starts a session's preview on its first listener and stops it after the last leaves."""

    def __init__(
        self,
        rooms: RoomManager,
        store: Store,
        assets: AssetLibrary,
        *,
        max_listener_pages: int = 50,
        linger_s: float = 5.0,
    ) -> None:
        self.rooms = rooms
        self._store = store
        self._assets = assets
        self._max_pages = max_listener_pages
        self._linger_s = linger_s
        self._streams: dict[str, PreviewStream] = {}
        self._watchers: dict[str, tuple[RoomRunner, Callable[[], None]]] = {}
        self._refresh: dict[str, asyncio.Task[None]] = {}
        # Told (session id, the stream's LiveInput) when a preview starts and (id, None) when it
        # stops: the jam feeds a running preview (realtime.jam.doc_bridge).
        self.live_watchers: list[Callable[[str, LiveInput | None], None]] = []

    @property
    def active(self) -> list[str]:
        return list(self._streams)

    def live_input(self, session_id: str) -> LiveInput | None:
        """Where the session's jam audio goes while its preview runs."""
        stream = self._streams.get(session_id)
        return stream.engine.live if stream is not None and stream.engine.headers else None

    def _announce(self, session_id: str, live: LiveInput | None) -> None:
        for watcher in list(self.live_watchers):
            try:
                watcher(session_id, live)
            except Exception:
                log.exception("preview %s: live watcher failed", session_id)

    async def listen(self, session_id: str) -> AsyncIterator[bytes]:
        """The Ogg stream for one listener: headers, then live pages until dropped."""
        stream = await self._stream(session_id)
        listener = Listener(self._max_pages)
        stream.listeners.add(listener)
        stream.idle_since = None
        try:
            for page in stream.engine.headers:
                yield page.data
            while True:
                data = await listener.queue.get()
                if data is None:
                    return
                yield data
        finally:
            stream.listeners.discard(listener)
            if not stream.listeners:
                stream.idle_since = time.monotonic()
                asyncio.get_running_loop().call_later(self._linger_s, self._maybe_stop, session_id)

    async def _stream(self, session_id: str) -> PreviewStream:
        stream = self._streams.get(session_id)
        if stream is not None:
            return stream
        stream = PreviewStream(session_id, self)
        self._streams[session_id] = stream
        runner = await self.rooms.acquire(session_id)
        await self._refresh_now(session_id, runner, stream)
        stream.engine.start()
        await asyncio.to_thread(stream.engine.ready.wait, 10)
        if stream.engine.error is not None or not stream.engine.headers:
            self._streams.pop(session_id, None)
            raise RuntimeError(f"the preview encoder did not start: {stream.engine.error!r}")

        def changed() -> None:
            # Edits can come faster than a refresh (which may load audio): one refresh runs at
            # a time and, if the document changed meanwhile, runs again with the latest state.
            stream.dirty = True
            task = self._refresh.get(session_id)
            if task is None or task.done():
                self._refresh[session_id] = asyncio.get_running_loop().create_task(
                    self._refresh_while_dirty(session_id, runner, stream)
                )

        runner.change_callbacks.append(changed)
        self._watchers[session_id] = (runner, changed)
        self._announce(session_id, stream.engine.live)
        return stream

    async def _refresh_while_dirty(self, session_id: str, runner: RoomRunner, stream: PreviewStream) -> None:
        while stream.dirty and self._streams.get(session_id) is stream:
            stream.dirty = False
            try:
                await self._refresh_now(session_id, runner, stream)
            except Exception:
                log.exception("preview %s: refresh failed", session_id)

    async def _refresh_now(self, session_id: str, runner: RoomRunner, stream: PreviewStream) -> None:
        """Read the document on the loop, load its audio, hand both to the engine."""
        doc = read_document(runner.room.doc)
        wanted = {clip.asset_id for track in doc.tracks for clip in track.clips}
        assets: dict[str, F32] = {a: stream.assets[a] for a in wanted if a in stream.assets}
        for asset_id in wanted - assets.keys():
            record = await self._store.get_asset(asset_id)
            # The document is written by clients: only this session's own assets may play.
            if record is None or record.session_id != session_id or record.deleted_at is not None:
                continue
            if record.mime in SILENT_MIMES:
                continue  # MIDI clips are silent in the server's mix (no synth yet)
            try:
                assets[asset_id] = await self._assets.samples(record)
            except Exception:
                log.exception("preview %s: asset %s could not be loaded", session_id, asset_id)
        stream.assets = assets
        stream.engine.submit(Snapshot(doc, assets))

    def _maybe_stop(self, session_id: str) -> None:
        stream = self._streams.get(session_id)
        if stream is None or stream.listeners or stream.idle_since is None:
            return
        if time.monotonic() - stream.idle_since < self._linger_s - 0.01:
            return
        self._stop(session_id)

    def _stop(self, session_id: str) -> None:
        stream = self._streams.pop(session_id, None)
        watcher = self._watchers.pop(session_id, None)
        if watcher is not None:
            runner, callback = watcher
            with contextlib.suppress(ValueError):
                runner.change_callbacks.remove(callback)
        if stream is not None:
            self._announce(session_id, None)
            stream.engine.stop()
            for listener in list(stream.listeners):
                stream.drop(listener)

    async def close(self) -> None:
        engines = [s.engine for s in self._streams.values()]
        for session_id in list(self._streams):
            self._stop(session_id)
        for engine in engines:
            await asyncio.to_thread(engine.join, 5)
