"""The running jams of this server: one :class:`~realtime.jam.engine.JamEngine` per session.

An engine starts (its tick thread with it) when the first participant of a session joins, and
stops when the last one leaves or the server shuts down; stopping joins the thread off the
event loop. Counters of stopped engines are kept, so the server-wide figures exported to
Prometheus only ever grow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .engine import EngineConfig, JamEngine, warm_up
from .scheduling import CpuLatencyHold, hold_cpu_latency, raise_thread_priority
from .stats import LogHistogram

if TYPE_CHECKING:
    from ..config import Settings
    from .doc_bridge import JamDocuments

__all__ = ["JamSessions", "engine_config"]

log = logging.getLogger(__name__)


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        block=settings.jam_block,
        bitrate=settings.jam_bitrate,
        complexity=settings.jam_complexity,
        max_participants=settings.jam_max_participants,
        send_queue_frames=settings.jam_send_queue_frames,
        laggard_s=settings.jam_laggard_s,
        fade_in_s=settings.jam_fade_in_s,
        realtime_priority=settings.jam_realtime_priority,
        loop_nice=settings.jam_loop_nice,
        switch_interval_s=settings.jam_switch_interval_s,
        cpu_latency_us=settings.jam_cpu_latency_us,
    )


class JamSessions:
    """Registry of running engines keyed by session id. All methods run on the event loop."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._engines: dict[str, JamEngine] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._retired_totals: dict[str, int] = {}
        self._retired_latency = LogHistogram()
        self._retired_ticks = LogHistogram()
        self._retired_counts = {"ticks": 0, "deadline_misses": 0, "skipped_ticks": 0}
        self._closed = False
        self._loop_priority_asked = False
        self._cpu_latency: CpuLatencyHold | None = None
        self._cpu_latency_refused = False
        # The session-document side of every jam (live tracks, recording); set by the app.
        self.documents: JamDocuments | None = None

    async def start(self) -> None:
        """Warm the tick's kernels up before the first jam (off the loop; up to a second cold)."""
        await asyncio.to_thread(warm_up, self.config.block)

    def get(self, session_id: str) -> JamEngine | None:
        return self._engines.get(session_id)

    @property
    def engines(self) -> list[JamEngine]:
        return list(self._engines.values())

    def acquire(self, session_id: str) -> JamEngine:
        """The session's running engine, started now if there is none."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        engine = self._engines.get(session_id)
        if engine is None or engine.closed:
            loop = asyncio.get_running_loop()
            engine = JamEngine(
                session_id, self.config, wake=loop.call_soon_threadsafe, on_empty=self._on_empty
            )
            self._engines[session_id] = engine
            if not self._loop_priority_asked:
                self._loop_priority_asked = True
                raise_thread_priority(self.config.loop_nice)
            self._hold_cpu_latency()
            if self.documents is not None:
                self.documents.attach(engine)
            engine.start()
            log.info("jam started", extra={"room": session_id, "block": self.config.block})
        return engine

    def release_if_empty(self, engine: JamEngine) -> None:
        """Stop an engine nobody is in (an :meth:`acquire` whose join then failed)."""
        if not engine.participants:
            self._on_empty(engine)

    def _on_empty(self, engine: JamEngine) -> None:
        if self._engines.get(engine.session_id) is engine:
            del self._engines[engine.session_id]
        self._retire(engine)

    def _retire(self, engine: JamEngine) -> None:
        if engine.closed:
            return
        engine.closed = True  # no new joins; acquire() makes a fresh engine from here on
        if self.documents is not None:
            self.documents.detach(engine)  # its take ends, its live tracks go inactive
        task = asyncio.get_running_loop().create_task(self._stop(engine))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, engine: JamEngine) -> None:
        await asyncio.to_thread(engine.stop)
        for key, value in engine.totals().items():
            self._retired_totals[key] = self._retired_totals.get(key, 0) + value
        self._retired_latency.merged(engine.latency_total())
        self._retired_ticks.merged(engine.stats.tick)
        self._retired_counts["ticks"] += engine.stats.ticks
        self._retired_counts["deadline_misses"] += engine.stats.deadline_misses
        self._retired_counts["skipped_ticks"] += engine.stats.skipped_ticks
        log.info("jam stopped", extra={"room": engine.session_id, "ticks": engine.stats.ticks})
        if not self._engines:
            self._release_cpu_latency()

    def _hold_cpu_latency(self) -> None:
        us = self.config.cpu_latency_us
        if us < 0 or self._cpu_latency_refused or self.cpu_latency_held:
            return
        self._cpu_latency = hold_cpu_latency(us)
        # refused (and logged) once: not asked again for every jam
        self._cpu_latency_refused = self._cpu_latency is None

    def _release_cpu_latency(self) -> None:
        if self._cpu_latency is not None:
            self._cpu_latency.release()

    @property
    def cpu_latency_held(self) -> bool:
        """Whether a CPU wake-up latency request is in force now."""
        return self._cpu_latency is not None and self._cpu_latency.held

    def kick_user(self, session_id: str, user_id: str, code: int, reason: str) -> None:
        """Close a user's jam connections (their role changed, or they were removed)."""
        engine = self._engines.get(session_id)
        if engine is None:
            return
        for p in engine.participants:
            if p.user_id == user_id:
                p.sink.close(code, reason)

    def close_session(self, session_id: str, code: int, reason: str, *, discard: bool = False) -> None:
        """Close every connection of one jam (the session was deleted or restored).

        ``discard``: the session is being deleted, so a recording in progress is thrown away
        instead of stored."""
        if discard and self.documents is not None:
            self.documents.discard(session_id)
        engine = self._engines.get(session_id)
        if engine is not None:
            for p in engine.participants:
                p.sink.close(code, reason)

    async def settled(self) -> None:
        """Wait until every engine being stopped has stopped (its thread joined)."""
        while self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Shutdown: close every participant's connection and stop every tick thread."""
        self._closed = True
        engines = list(self._engines.values())
        self._engines.clear()
        for engine in engines:
            for p in engine.participants:
                p.sink.close(code, reason)
            self._retire(engine)
        await self.settled()
        if self.documents is not None:
            await self.documents.settled()  # recordings stored before the rooms close

    # -- figures for /metrics ----------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """Server-wide monotonic counters and histograms: running engines plus stopped ones."""
        counters = dict(self._retired_totals)
        latency = LogHistogram()
        latency.merged(self._retired_latency)
        ticks = LogHistogram()
        ticks.merged(self._retired_ticks)
        counts = dict(self._retired_counts)
        participants = 0
        for engine in self._engines.values():
            for key, value in engine.totals().items():
                counters[key] = counters.get(key, 0) + value
            latency.merged(engine.latency_total())
            ticks.merged(engine.stats.tick)
            counts["ticks"] += engine.stats.ticks
            counts["deadline_misses"] += engine.stats.deadline_misses
            counts["skipped_ticks"] += engine.stats.skipped_ticks
            participants += len(engine.participants)
        return {
            "counters": counters,
            "latency": latency,
            "ticks": ticks,
            "engine": counts,
            "sessions": len(self._engines),
            "participants": participants,
        }
