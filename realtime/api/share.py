"""Public preview share links over HTTP (issue 6; tokens in `realtime.share`).

* `GET /api/sessions/{id}/share` (owner): `{enabled, url, listen_path, token, expires_at}`
  (`enabled: false` and nothing else while sharing is off).
* `POST /api/sessions/{id}/share` `{expires_in_s?}` (owner): enables sharing with a new link,
  revoking any earlier one; 201 with the same shape.
* `DELETE /api/sessions/{id}/share` (owner): disables sharing, revoking the link.
* `GET /api/share/{token}` (no account): what the link plays (`session_id`, `title`,
  `expires_at`, `preview_url`), or 403/410 with the reason.
* `GET /listen/{token}` (no account): a small page with an `<audio>` player, no script.

Editors and viewers get 403 on the owner's endpoints (audited as `access.role_denied`); enabling
and disabling are audited as `session.share_enable` / `session.share_disable`.
"""

from __future__ import annotations

import html
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from persistence.ports import Role, SessionRecord, ShareRecord

from .. import errors
from ..accounts import require, session_access
from ..audit import Action, audit
from ..export import signing_key
from ..share import (
    DEFAULT_TTL_S,
    KEY_FILE,
    MAX_TTL_S,
    MIN_TTL_S,
    ShareClaims,
    check_link,
    claims_for,
    make_token,
    read_token,
)
from .common import authenticate, read_json, services


def _key(request: Request) -> bytes:
    return signing_key(services(request).settings.data_dir, KEY_FILE)


def preview_path(claims: ShareClaims, token: str) -> str:
    return f"/api/sessions/{claims.session_id}/preview.ogg?share={token}"


def _share_json(request: Request, share: ShareRecord | None) -> dict[str, Any]:
    claims = None if share is None else claims_for(share)
    if claims is None:
        return {"enabled": False}
    token = make_token(_key(request), claims)
    return {
        "enabled": True,
        "url": str(request.url_for("listen_page", token=token)),
        "listen_path": f"/listen/{token}",
        "token": token,
        "expires_at": claims.expires_at,
    }


async def _owner_session(request: Request) -> tuple[str, SessionRecord]:
    caller = await authenticate(request)
    access = await session_access(services(request).store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER)
    return caller.user.id, access.session


async def get_share(request: Request) -> Response:
    _, session = await _owner_session(request)
    return JSONResponse(_share_json(request, await services(request).store.get_share(session.id)))


async def enable_share(request: Request) -> Response:
    user_id, session = await _owner_session(request)
    data = await read_json(request) if request.headers.get("content-type") else {}
    unknown = set(data) - {"expires_in_s"}
    if unknown:
        raise errors.ValidationFailed(f"unknown fields: {', '.join(sorted(unknown))}")
    ttl = data.get("expires_in_s", DEFAULT_TTL_S)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise errors.ValidationFailed(f"expires_in_s: must be an integer from {MIN_TTL_S} to {MAX_TTL_S}")
    expires_at = float(int(time.time() + ttl))
    store = services(request).store
    share = await store.set_share(session.id, enabled=True, expires_at=expires_at, by=user_id)
    await audit(
        request,
        Action.SHARE_ENABLED,
        actor_id=user_id,
        target_type="session",
        target_id=session.id,
        session_id=session.id,
        detail={"version": share.version, "expires_at": expires_at},
    )
    return JSONResponse(_share_json(request, share), status_code=201)


async def disable_share(request: Request) -> Response:
    user_id, session = await _owner_session(request)
    share = await services(request).store.set_share(session.id, enabled=False, expires_at=None, by=user_id)
    await audit(
        request,
        Action.SHARE_DISABLED,
        actor_id=user_id,
        target_type="session",
        target_id=session.id,
        session_id=session.id,
        detail={"version": share.version},
    )
    return JSONResponse(_share_json(request, share))


async def shared_session(request: Request, token: str) -> tuple[ShareClaims, SessionRecord]:
    """The session a share token may play now; 403 for a bad token, 410 once revoked/expired."""
    claims = read_token(_key(request), token)
    store = services(request).store
    check_link(claims, await store.get_share(claims.session_id), now=time.time())
    session = await store.get_session(claims.session_id)
    if session is None:  # deleted (its share row goes with it only at the hard delete)
        raise errors.NotFound("this session no longer exists", code="session_not_found")
    return claims, session


async def link_info(request: Request) -> Response:
    token = request.path_params["token"]
    claims, session = await shared_session(request, token)
    return JSONResponse(
        {
            "session_id": session.id,
            "title": session.title,
            "expires_at": claims.expires_at,
            "preview_url": preview_path(claims, token),
        },
        headers={"Cache-Control": "no-store"},
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark"><meta name="robots" content="noindex">
<link rel="icon" href="data:,"><title>{title} — Escenario</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;background:#15171c;color:#e8e8ea;display:grid;
place-items:center;min-height:100vh;margin:0}}
main{{max-width:34rem;padding:2rem;text-align:center}}
h1{{font-size:1.4rem;margin:.2rem 0 1rem}} p.muted{{color:#9aa0aa;font-size:.9rem}}
audio{{width:100%;margin:1rem 0}} .error{{color:#ff8f8f}}
</style></head>
<body><main data-testid="listen-page">{body}</main></body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


async def listen_page(request: Request) -> Response:
    """The listener's page: no account and no script, just the browser's own player."""
    token = request.path_params["token"]
    try:
        claims, session = await shared_session(request, token)
    except errors.ApiError as exc:
        body = (
            '<p class="muted">Escenario · live preview</p>'
            f'<h1>Cannot play this session</h1><p class="error" data-testid="listen-error">'
            f"{html.escape(exc.message)}</p>"
        )
        return _page("Link not available", body, exc.status)
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(claims.expires_at))
    body = (
        '<p class="muted">Escenario · live preview</p>'
        f'<h1 data-testid="listen-title">{html.escape(session.title)}</h1>'
        f'<audio controls preload="none" data-testid="listen-audio" '
        f'src="{html.escape(preview_path(claims, token))}"></audio>'
        '<p class="muted">This plays the session\'s mix live, as its players hear it. '
        f"The link works until {expires} unless the owner turns it off.</p>"
    )
    return _page(session.title, body)


routes = [
    Route("/api/sessions/{session_id}/share", get_share, methods=["GET"]),
    Route("/api/sessions/{session_id}/share", enable_share, methods=["POST"]),
    Route("/api/sessions/{session_id}/share", disable_share, methods=["DELETE"]),
    Route("/api/share/{token}", link_info, methods=["GET"]),
    Route("/listen/{token}", listen_page, methods=["GET"], name="listen_page"),
]
