"""`GET /api/sessions/{id}/preview.ogg`: the session's live mix as an endless Ogg/Opus stream."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from persistence.ports import User

from .. import errors
from ..accounts import session_access
from .common import authenticate, services


async def _caller_for_media(request: Request) -> User:
    """`<audio src>` cannot send headers, so media URLs also accept `?token=`."""
    token = request.query_params.get("token")
    if token:
        user = await services(request).accounts.user_for_token(token)
        if user is None:
            raise errors.NotAuthenticated("the sign-in token is invalid or expired", code="invalid_token")
        return user
    return (await authenticate(request)).user


async def preview(request: Request) -> Response:
    svc = services(request)
    user = await _caller_for_media(request)
    access = await session_access(svc.store, request.path_params["session_id"], user)
    return StreamingResponse(
        svc.preview.listen(access.session.id),
        media_type="audio/ogg",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


routes = [Route("/api/sessions/{session_id}/preview.ogg", preview, methods=["GET"])]
