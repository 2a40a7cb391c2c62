"""Jam visibility: `GET /api/sessions/{id}/jam/stats` (members) and `GET /metrics` (Prometheus).

The stats endpoint shows one session's jam as its members see it: the tick (durations, deadline
misses), and per participant and direction the packet, loss, lateness and concealment counters,
jitter-buffer depth, RTT and the server-added latency histogram (p50/p99/max).

`/metrics` is the Prometheus text format from prometheus-client. Server-wide series are
monotonic (stopped jams keep counting); per-session series exist for at most
``jam_metrics_max_sessions`` sessions (the longest-running), so labels stay bounded however many
jams run. When ``metrics_token`` is set, scrapers must send it as a bearer token.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import errors
from ..accounts import session_access
from ..jam.sessions import JamSessions
from ..jam.stats import LogHistogram
from ..services import Services
from ..transport.tick_reads import reads_stats
from .common import authenticate, bearer_token, services

# Bucket bounds on the histograms' own bin edges (10 µs · 10^(i/20)), so counts are exact:
# ~0.1, 0.2, 0.5, 1, 2, 2.5, 5, 10, 20, 50, 100 ms, 1 s.
_BOUND_INDEX = (20, 26, 34, 40, 46, 48, 54, 60, 66, 74, 80, 100)


def _buckets(h: LogHistogram) -> list[tuple[str, float]]:
    cum = np.concatenate(([0], np.cumsum(h.counts)))
    out: list[tuple[str, float]] = []
    for i in _BOUND_INDEX:
        if i < len(h.edges):
            out.append((f"{float(h.edges[i]):.6g}", float(cum[i])))
    out.append(("+Inf", float(h.count)))
    return out


class JamCollector:
    """Reads the jam registry at scrape time (on the event loop, where the registry lives)."""

    def __init__(self, jam: JamSessions, max_sessions: int) -> None:
        self._jam = jam
        self._max_sessions = max_sessions

    def describe(self) -> list[Metric]:
        return []  # collected on demand: no registration-time scrape

    def collect(self) -> Iterator[Metric]:
        t = self._jam.totals()
        c = t["counters"]
        yield GaugeMetricFamily("escenario_jam_sessions", "Jams running now", value=t["sessions"])
        yield GaugeMetricFamily(
            "escenario_jam_participants", "Participants in all jams now", value=t["participants"]
        )
        packets = CounterMetricFamily("escenario_jam_packets", "Audio frames", labels=["direction"])
        packets.add_metric(["in"], c.get("packets_in", 0))
        packets.add_metric(["out"], c.get("packets_out", 0))
        yield packets
        volume = CounterMetricFamily("escenario_jam_bytes", "Audio frame bytes", labels=["direction"])
        volume.add_metric(["in"], c.get("bytes_in", 0))
        volume.add_metric(["out"], c.get("bytes_out", 0))
        yield volume
        dropped = CounterMetricFamily(
            "escenario_jam_dropped",
            "Frames dropped (in: sender flooding the tick; out: listener behind)",
            labels=["direction"],
        )
        dropped.add_metric(["in"], c.get("dropped_in", 0))
        dropped.add_metric(["out"], c.get("dropped_out", 0))
        yield dropped
        for key, doc in (
            ("lost", "Inbound frames that never arrived"),
            ("late", "Inbound frames that arrived after their slot was played"),
            ("concealed", "Blocks made by packet loss concealment"),
            ("corrupt", "Inbound packets the decoder refused"),
            ("joined", "Participants who joined a jam"),
        ):
            yield CounterMetricFamily(f"escenario_jam_{key}", doc, value=c.get(key, 0))
        e = t["engine"]
        yield CounterMetricFamily("escenario_jam_ticks", "Ticks run", value=e["ticks"])
        yield CounterMetricFamily(
            "escenario_jam_deadline_misses",
            "Ticks that ended after the next tick was due",
            value=e["deadline_misses"],
        )
        yield CounterMetricFamily(
            "escenario_jam_skipped_ticks",
            "Ticks skipped after a stall of the tick thread",
            value=e["skipped_ticks"],
        )
        ticks: LogHistogram = t["ticks"]
        tick_h = HistogramMetricFamily("escenario_jam_tick_duration_seconds", "Compute time of one tick")
        tick_h.add_metric([], _buckets(ticks), sum_value=ticks.sum)
        yield tick_h
        latency: LogHistogram = t["latency"]
        lat_h = HistogramMetricFamily(
            "escenario_jam_server_latency_seconds",
            "Arrival of an audio frame to the departure of the first mix containing it",
        )
        lat_h.add_metric([], _buckets(latency), sum_value=latency.sum)
        yield lat_h

        engines = self._jam.engines[: self._max_sessions]
        members = GaugeMetricFamily(
            "escenario_jam_session_participants", "Participants in this jam", labels=["session"]
        )
        misses = CounterMetricFamily(
            "escenario_jam_session_deadline_misses", "Deadline misses of this jam's tick", labels=["session"]
        )
        concealed = CounterMetricFamily(
            "escenario_jam_session_concealed", "Concealed blocks in this jam", labels=["session"]
        )
        p99 = GaugeMetricFamily(
            "escenario_jam_session_latency_p99_seconds",
            "Server-added latency p99 in this jam",
            labels=["session"],
        )
        for engine in engines:
            sid = engine.session_id
            members.add_metric([sid], len(engine.participants))
            misses.add_metric([sid], engine.stats.deadline_misses)
            concealed.add_metric([sid], engine.totals().get("concealed", 0))
            p99.add_metric([sid], engine.latency_total().percentile(0.99))
        yield members
        yield misses
        yield concealed
        yield p99


def register_metrics(svc: Services) -> None:
    """Add the jam figures to the app's Prometheus registry (once, at startup)."""
    svc.metrics.register(JamCollector(svc.jam, svc.settings.jam_metrics_max_sessions))


async def jam_stats(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    engine = svc.jam.get(access.session.id)
    if engine is None:
        return JSONResponse({"session": access.session.id, "running": False, "participants": []})
    body = engine.stats_json()
    body["tickReads"] = reads_stats(engine)
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    svc = services(request)
    expected = svc.settings.metrics_token
    if expected:
        given = bearer_token(request) or ""
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise errors.NotAuthenticated("send the metrics token as a bearer token", code="invalid_token")
    return Response(generate_latest(svc.metrics), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/api/sessions/{session_id}/jam/stats", jam_stats, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
