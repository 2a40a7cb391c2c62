"""`/api/auth/*` and `/api/me`."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import errors
from ..audit import Action, audit
from .common import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    authenticate,
    consent_json,
    field_str,
    read_json,
    services,
    user_json,
)


def _set_cookies(response: Response, request: Request, token: str, max_age: int) -> None:
    secure = services(request).settings.cookie_secure or request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/"
    )
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(24),
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=secure,
        path="/",
    )


async def signup(request: Request) -> Response:
    data = await read_json(request)
    issued = await services(request).accounts.signup(
        email=field_str(data, "email", max_len=320),
        password=field_str(data, "password", max_len=1024, min_len=0),
        name=field_str(data, "name", max_len=100),
    )
    user_id = issued.user.id
    await audit(request, Action.SIGNUP, actor_id=user_id, target_type="user", target_id=user_id)
    await audit(request, Action.TOKEN_CREATED, actor_id=user_id, target_type="user", target_id=user_id)
    return JSONResponse({"user": user_json(issued.user), "token": issued.token}, status_code=201)


async def login(request: Request) -> Response:
    data = await read_json(request)
    svc = services(request)
    email = field_str(data, "email", max_len=320)
    try:
        issued = await svc.accounts.login(
            email=email, password=field_str(data, "password", max_len=1024, min_len=0)
        )
    except (errors.NotAuthenticated, errors.TooManyRequests) as exc:
        # The attempted address is not logged; a failure on a real account is that account's.
        creds = await svc.store.get_credentials(email.strip())
        target = None if creds is None else creds.user.id
        await audit(
            request,
            Action.LOGIN_FAILED,
            target_type=None if target is None else "user",
            target_id=target,
            detail={"reason": exc.code},
        )
        raise
    user_id = issued.user.id
    await audit(request, Action.LOGIN, actor_id=user_id, target_type="user", target_id=user_id)
    await audit(request, Action.TOKEN_CREATED, actor_id=user_id, target_type="user", target_id=user_id)
    response = JSONResponse({"token": issued.token, "user": user_json(issued.user)})
    _set_cookies(response, request, issued.token, svc.settings.token_ttl_s)
    return response


async def logout(request: Request) -> Response:
    caller = await authenticate(request)
    if await services(request).accounts.revoke(caller.token):
        await audit(
            request,
            Action.TOKEN_REVOKED,
            actor_id=caller.user.id,
            target_type="user",
            target_id=caller.user.id,
        )
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


async def me(request: Request) -> Response:
    caller = await authenticate(request)
    body: dict[str, Any] = {"user": user_json(caller.user)}
    consent = await services(request).store.get_consent(caller.user.id)
    if consent is not None:
        body["consent"] = consent_json(consent)
    return JSONResponse(body)


routes = [
    Route("/api/auth/signup", signup, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
]
