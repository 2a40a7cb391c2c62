"""Composition root: the only place that builds concrete adapters and wires them together."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from inference.service import JobService
from persistence.encrypted_blobs import open_encrypted_blobs
from persistence.factory import open_store
from persistence.ports import JobRecord, Store

from . import errors, invites
from .accounts import Accounts, RoleForbidden
from .api import assets as assets_api
from .api import auth as auth_api
from .api import jam as jam_api
from .api import jam_webrtc as jam_webrtc_api
from .api import jobs as jobs_api
from .api import me as me_api
from .api import preview as preview_api
from .api import render as render_api
from .api import sessions as sessions_api
from .api import share as share_api
from .api.common import error_response, services
from .api.headers import SecurityHeaders
from .audit import Action, AuditLog, audit_role_denied
from .config import Settings
from .jam.doc_bridge import JamDocuments
from .jam.sessions import JamSessions, engine_config
from .media.library import AssetLibrary
from .preview import PreviewHub
from .retention import RetentionPolicy, RetentionScheduler
from .services import Services
from .session.hub import HubConfig, RoomManager
from .session.room import RoomLimits
from .transport import jam_ws, sync_ws
from .transport.jam_webrtc import JamWebRtc
from .transport.limits import KeyedRateLimiter

log = logging.getLogger(__name__)

_NO_CLIENT_PAGE = """<!doctype html><meta charset="utf-8"><title>Escenario</title>
<p>The web client is not built. Run <code>make run</code>
(or <code>cd web_client && npm ci && npm run build</code>).</p>
"""


async def healthz(request: Request) -> Response:
    svc = services(request)
    try:
        await svc.store.get_user("healthcheck")
    except Exception as exc:
        log.exception("health check: store unavailable")
        return JSONResponse({"status": "degraded", "store": str(exc)[:200]}, status_code=503)
    return JSONResponse({"status": "ok", "rooms": len(svc.rooms.loaded_rooms)})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ApiError)
    if isinstance(exc, RoleForbidden):  # every role check ends here: audit it once, centrally
        await audit_role_denied(request, session_id=exc.session_id, user_id=exc.user_id)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": exc.detail}}, status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "internal server error"}}, status_code=500
    )


def _web_mount(web_dir: Path) -> Mount | Route:
    if (web_dir / "index.html").is_file():
        return Mount("/", app=StaticFiles(directory=web_dir, html=True), name="web")

    async def placeholder(request: Request) -> Response:
        return HTMLResponse(_NO_CLIENT_PAGE)

    return Route("/", placeholder)


def create_app(settings: Settings, *, store: Store | None = None) -> Starlette:
    """Build the ASGI app. `store` may be injected (tests); otherwise it comes from the URL."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        the_store = store or await open_store(settings.resolved_database_url, data_dir=settings.data_dir)
        rooms = RoomManager(
            the_store,
            HubConfig(
                compact_after_rows=settings.compact_after_rows,
                unload_grace_s=settings.unload_grace_s,
                batch_window_s=settings.sync_batch_window_ms / 1000,
                limits=RoomLimits(max_pending_bytes=settings.max_pending_bytes),
            ),
        )
        blobs = await open_encrypted_blobs(settings.data_dir, settings.data_key, settings.blob_url)
        assets = AssetLibrary(
            the_store,
            blobs,
            tmp_dir=settings.data_dir / "tmp",
            cache_bytes=settings.asset_cache_bytes,
            max_duration_s=settings.max_asset_duration_s,
            deletion_grace_s=settings.deletion_grace_s,
        )
        app.state.services = Services(
            settings=settings,
            store=the_store,
            accounts=Accounts(the_store, token_ttl_s=settings.token_ttl_s),
            rooms=rooms,
            connect_limiter=KeyedRateLimiter(settings.connects_per_minute_per_ip),
            blobs=blobs,
            assets=assets,
            preview=PreviewHub(rooms, the_store, assets),
            jam=JamSessions(engine_config(settings)),
            audit=AuditLog(the_store),
        )
        # Jams write live tracks and recordings into their session documents, and feed previews.
        app.state.services.jam.documents = JamDocuments(rooms, assets, app.state.services.preview)
        jam_api.register_metrics(app.state.services)
        app.state.jam_webrtc = JamWebRtc(
            app.state.services.jam,
            ice_servers=[u.strip() for u in settings.jam_webrtc_ice_servers.split(",") if u.strip()],
            inactivity_s=settings.jam_webrtc_inactivity_s,
            connect_timeout_s=settings.jam_webrtc_connect_timeout_s,
            max_peers_per_user=settings.jam_webrtc_max_peers_per_user,
            frames_per_second=settings.jam_frames_per_second,
            loopback=settings.jam_webrtc_loopback_candidates,
        )
        jobs = JobService(settings=settings, store=the_store, rooms=rooms, assets=assets)
        app.state.services.jobs = jobs
        audit_log = app.state.services.audit

        async def audit_job(record: JobRecord) -> None:
            await audit_log.record_quietly(
                Action.JOB_STARTED,
                actor_id=record.created_by,
                target_type="job",
                target_id=record.id,
                session_id=record.session_id,
                detail={"kind": record.kind.value, "asset_id": record.asset_id},
            )

        jobs.on_submitted = audit_job
        app.state.retention = RetentionScheduler(
            the_store,
            assets,
            RetentionPolicy(
                source_s=settings.retention_source_s,
                deletion_grace_s=settings.deletion_grace_s,
                log_ip_s=settings.log_ip_retention_s,
            ),
            audit=audit_log,
            rooms=rooms,
            jam=app.state.services.jam,
            interval_s=settings.retention_interval_s,
        )
        await assets.startup()
        await rooms.start()
        await app.state.services.jam.start()
        await jobs.start()
        app.state.retention.start()
        log.info(
            "escenario ready",
            extra={
                "database": settings.resolved_database_url.split("@")[-1],
                "dsp_backend": settings.dsp_backend,
            },
        )
        try:
            yield
        finally:
            # Every update is already in the log; this compacts rooms and closes sockets cleanly.
            # Jams first: their tick threads stop and their sockets close with 1001.
            await app.state.retention.close()
            await app.state.jam_webrtc.close_all()  # WebRTC peers leave their jams, connections close
            await app.state.services.jam.close()
            # Jobs before rooms: their last document changes (re-queued jobs) go out with the rooms.
            await jobs.close()
            await app.state.services.preview.close()
            await rooms.close()
            await assets.close()
            await audit_log.drain()  # socket refusals are recorded in the background
            if store is None:
                await the_store.close()
            log.info("escenario stopped")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        *auth_api.routes,
        *sessions_api.routes,
        *me_api.routes,
        *invites.routes,
        *assets_api.routes,
        *render_api.routes,
        *jobs_api.routes,
        *preview_api.routes,
        *share_api.routes,
        *sync_ws.routes,
        *jam_api.routes,
        *jam_ws.routes,
        *jam_webrtc_api.routes,
        _web_mount(settings.web_dir),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders, hsts=settings.cookie_secure)],
        exception_handlers={
            errors.ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
