"""Helpers shared by the JSON endpoints: bodies, authentication, CSRF, serialisation."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from persistence.ports import Consent, SessionRecord, User

from .. import errors
from ..services import Services

SESSION_COOKIE = "escenario_session"
CSRF_COOKIE = "escenario_csrf"
CSRF_HEADER = "x-csrf-token"
MAX_JSON_BYTES = 64 * 1024
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def services(conn: HTTPConnection) -> Services:
    return cast(Services, conn.app.state.services)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "created_at": iso(user.created_at)}


def consent_json(c: Consent) -> dict[str, Any]:
    return {
        "training_opt_in": c.training_opt_in,
        "training_opt_in_at": None if c.training_opt_in_at is None else iso(c.training_opt_in_at),
        "marketing_opt_in": c.marketing_opt_in,
        "marketing_opt_in_at": None if c.marketing_opt_in_at is None else iso(c.marketing_opt_in_at),
    }


def session_json(s: SessionRecord, role: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s.id,
        "title": s.title,
        "owner_id": s.owner_id,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }
    if role is not None:
        out["role"] = role
    return out


def error_response(exc: errors.ApiError) -> JSONResponse:
    headers = {}
    if isinstance(exc, errors.TooManyRequests) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status, headers=headers
    )


async def read_json(request: Request) -> dict[str, Any]:
    if "application/json" not in request.headers.get("content-type", ""):
        raise errors.BadRequest("send a JSON body with Content-Type: application/json", code="invalid_json")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise errors.BadRequest(f"request body over {MAX_JSON_BYTES} bytes", code="body_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise errors.BadRequest(f"request body over {MAX_JSON_BYTES} bytes", code="body_too_large")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise errors.BadRequest("request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise errors.BadRequest("request body must be a JSON object", code="invalid_json")
    return data


def field_str(
    data: dict[str, Any], name: str, *, max_len: int, min_len: int = 1, required: bool = True
) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise errors.ValidationFailed(f"{name}: required string")
    if not min_len <= len(value.strip()) <= max_len:
        raise errors.ValidationFailed(f"{name}: must be {min_len} to {max_len} characters")
    return value


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    token: str
    via_cookie: bool


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate(conn: HTTPConnection) -> Caller:
    """The signed-in caller, by bearer token or session cookie (then CSRF-checked)."""
    svc = services(conn)
    token = bearer_token(conn)
    via_cookie = False
    if token is None:
        token = conn.cookies.get(SESSION_COOKIE)
        via_cookie = token is not None
    if not token:
        raise errors.NotAuthenticated("sign in first (Authorization: Bearer <token> or the session cookie)")
    user = await svc.accounts.user_for_token(token)
    if user is None:
        raise errors.NotAuthenticated("the sign-in token is invalid or expired", code="invalid_token")
    if via_cookie and isinstance(conn, Request) and conn.method not in _SAFE_METHODS:
        check_csrf(conn)
    return Caller(user, token, via_cookie)


def check_csrf(request: Request) -> None:
    """Double-submit check: a cross-site page can send the cookie but cannot read it."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not secrets.compare_digest(cookie, header):
        raise errors.Forbidden(
            f"cookie-authenticated requests must send the {CSRF_COOKIE} cookie's value in {CSRF_HEADER}",
            code="csrf_failed",
        )
