"""`GET /api/sessions/{id}/preview.ogg`: the session's live mix as an endless Ogg/Opus stream.

Members sign in (header, cookie or `?token=`); listeners without an account use an owner's share
link (`?share=`, see `realtime.share`), which works only while sharing is enabled: an open
stream re-checks its link every `RECHECK_S` and ends once the link is revoked or expires.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from persistence.ports import User

from .. import errors
from ..accounts import session_access
from ..share import RECHECK_S
from .common import authenticate, services
from .share import shared_session


async def _caller_for_media(request: Request) -> User:
    """`<audio src>` cannot send headers, so media URLs also accept `?token=`."""
    token = request.query_params.get("token")
    if token:
        user = await services(request).accounts.user_for_token(token)
        if user is None:
            raise errors.NotAuthenticated("the sign-in token is invalid or expired", code="invalid_token")
        return user
    return (await authenticate(request)).user


async def while_allowed(
    stream: AsyncIterator[bytes],
    allowed: Callable[[], Awaitable[bool]],
    *,
    every_s: float = RECHECK_S,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """`stream`, ended (and closed) at the first chunk after `allowed()` turned false."""
    next_check = clock() + every_s
    async with contextlib.aclosing(stream) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            if clock() >= next_check:
                if not await allowed():
                    return
                next_check = clock() + every_s
            yield chunk


async def preview(request: Request) -> Response:
    svc = services(request)
    session_id = request.path_params["session_id"]
    share = request.query_params.get("share")
    if share is not None:
        _, session = await shared_session(request, share)
        if session.id != session_id:
            raise errors.Forbidden("this listening link is for another session", code="invalid_share_link")

        async def still_shared() -> bool:
            try:
                await shared_session(request, share)
            except errors.ApiError:
                return False
            return True

        body = while_allowed(svc.preview.listen(session.id), still_shared)
    else:
        user = await _caller_for_media(request)
        access = await session_access(svc.store, session_id, user)
        body = svc.preview.listen(access.session.id)
    return StreamingResponse(
        body,
        media_type="audio/ogg",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


routes = [Route("/api/sessions/{session_id}/preview.ogg", preview, methods=["GET"])]
