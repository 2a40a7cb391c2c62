"""Signed, single-use invite links (issue 7, docs/privacy.md).

`POST /api/sessions/{id}/invites` {role, expires_in_s} (owner) → `{url, token, …}`;
`POST /api/invites/{token}/accept` (any signed-in user) adds the caller with that role.

The token is `<payload>.<signature>`: the payload (base64url JSON: invite id, session, role,
expiry) signed with HMAC-SHA256 under a server secret (`data_dir/keys/invite-signing.key`). A
token that does not verify is refused (403) before the store is asked; the invite's row makes
it single-use (a second use, like an expired token, is 410 Gone).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persistence.ports import InviteRecord, Role

from . import errors
from .accounts import require, session_access
from .api.common import authenticate, read_json, services, session_json
from .audit import Action, audit
from .export import signing_key

KEY_FILE = "invite-signing.key"
DEFAULT_TTL_S = 7 * 24 * 3600
MIN_TTL_S = 60
MAX_TTL_S = 30 * 24 * 3600
MAX_TOKEN = 1024
_ROLES = {"editor": Role.EDITOR, "viewer": Role.VIEWER}


class InviteGone(errors.ApiError):
    status = 410
    code = "invite_gone"


@dataclass(frozen=True, slots=True)
class InviteClaims:
    invite_id: str
    session_id: str
    role: Role
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(key: bytes, claims: InviteClaims) -> str:
    payload = _b64(
        json.dumps(
            {"i": claims.invite_id, "s": claims.session_id, "r": claims.role.value, "e": claims.expires_at},
            separators=(",", ":"),
        ).encode()
    )
    sig = _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())
    return f"{payload}.{sig}"


def read_token(key: bytes, token: str) -> InviteClaims:
    """The claims of a token this server signed; `Forbidden` for any other (tampered, forged,
    malformed). Expiry is the caller's to check."""
    bad = errors.Forbidden("this invite link is not valid", code="invalid_invite")
    payload, dot, sig = token.partition(".")
    if not dot or len(token) > MAX_TOKEN or not payload.isascii() or not sig.isascii():
        raise bad
    expected = _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, sig):
        raise bad
    try:
        data = json.loads(_unb64(payload))
        return InviteClaims(str(data["i"]), str(data["s"]), _ROLES[data["r"]], int(data["e"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise bad from exc  # signed by us, so this does not happen; never a 500 regardless


async def create_invite(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER)
    data = await read_json(request)
    unknown = set(data) - {"role", "expires_in_s"}
    if unknown:
        raise errors.ValidationFailed(f"unknown fields: {', '.join(sorted(unknown))}")
    raw_role = data.get("role")
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise errors.ValidationFailed("role: must be 'editor' or 'viewer'")
    ttl = data.get("expires_in_s", DEFAULT_TTL_S)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise errors.ValidationFailed(f"expires_in_s: must be an integer from {MIN_TTL_S} to {MAX_TTL_S}")
    now = time.time()
    invite = InviteRecord(
        id=secrets.token_hex(16),
        session_id=access.session.id,
        role=role,
        created_by=caller.user.id,
        created_at=now,
        expires_at=float(int(now + ttl)),
        used_at=None,
        used_by=None,
    )
    await svc.store.create_invite(invite)
    token = make_token(
        signing_key(svc.settings.data_dir, KEY_FILE),
        InviteClaims(invite.id, invite.session_id, role, int(invite.expires_at)),
    )
    await audit(
        request,
        Action.INVITE_CREATED,
        actor_id=caller.user.id,
        target_type="invite",
        target_id=invite.id,
        session_id=invite.session_id,
        detail={"role": role.value, "expires_at": invite.expires_at},
    )
    return JSONResponse(
        {
            "url": str(request.url_for("accept_invite", token=token)),
            "token": token,
            "invite_id": invite.id,
            "role": role.value,
            "expires_at": invite.expires_at,
        },
        status_code=201,
    )


async def accept_invite(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    claims = read_token(signing_key(svc.settings.data_dir, KEY_FILE), request.path_params["token"])
    now = time.time()
    if claims.expires_at <= now:
        raise InviteGone("this invite has expired; ask for a new one", code="invite_expired")
    session = await svc.store.get_session(claims.session_id)
    if session is None:
        raise errors.NotFound("the session of this invite no longer exists", code="session_not_found")
    current = await svc.store.get_role(session.id, caller.user.id)
    if current is not None:
        raise errors.Conflict(f"you are already a member ({current.value})", code="already_member")
    used = await svc.store.use_invite(claims.invite_id, user_id=caller.user.id, at=now)
    if used is None:
        stored = await svc.store.get_invite(claims.invite_id)
        if stored is None:
            raise errors.NotFound("this invite no longer exists", code="invite_not_found")
        if stored.used_at is not None:
            raise InviteGone("this invite was already used", code="invite_used")
        raise InviteGone("this invite has expired; ask for a new one", code="invite_expired")
    await svc.store.set_member(session.id, caller.user.id, used.role)
    for action in (Action.INVITE_ACCEPTED, Action.MEMBER_ADDED):
        await audit(
            request,
            action,
            actor_id=caller.user.id,
            target_type="user",
            target_id=caller.user.id,
            session_id=session.id,
            detail={"role": used.role.value, "previous": None, "invite_id": used.id},
        )
    body: dict[str, Any] = session_json(session, used.role.value)
    return JSONResponse(body)


routes = [
    Route("/api/sessions/{session_id}/invites", create_invite, methods=["POST"]),
    Route("/api/invites/{token}/accept", accept_invite, methods=["POST"], name="accept_invite"),
]
