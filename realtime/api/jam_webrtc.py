"""`/api/sessions/{id}/jam/webrtc`: join the live jam over WebRTC, WHIP-style.

``POST`` an SDP offer (``Content-Type: application/sdp``) → 201 with the SDP answer and a
``Location`` naming the peer; ``DELETE`` that location to leave; ``GET`` it for the peer's
transport counters. Owners and editors send and receive audio; viewers only receive.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persistence.ports import Role

from .. import errors
from ..accounts import RoleForbidden, session_access
from ..jam.engine import EngineFull
from ..transport.jam_webrtc import MAX_SDP_BYTES, JamPeer, JamWebRtc, OfferError, PeerLimitReached
from .common import authenticate, services

SDP_TYPE = "application/sdp"


class JamUnavailable(errors.ApiError):
    """503: the session's jam is full or the server is shutting down; try again later."""

    status = 503
    code = "jam_unavailable"


def jam_webrtc(request: Request) -> JamWebRtc:
    rtc = getattr(request.app.state, "jam_webrtc", None)
    if not isinstance(rtc, JamWebRtc):
        raise JamUnavailable("the WebRTC jam transport is not running")
    return rtc


async def _read_sdp(request: Request) -> str:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != SDP_TYPE:
        raise errors.UnsupportedMedia(
            f"send the SDP offer as the body with Content-Type: {SDP_TYPE}", code="unsupported_media"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_SDP_BYTES:
        raise errors.PayloadTooLarge(f"an SDP offer is at most {MAX_SDP_BYTES} bytes", code="body_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SDP_BYTES:
            raise errors.PayloadTooLarge(
                f"an SDP offer is at most {MAX_SDP_BYTES} bytes", code="body_too_large"
            )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BadRequest("the SDP offer is not valid UTF-8", code="invalid_sdp") from exc
    if not text.strip():
        raise errors.BadRequest("the body is empty: send an SDP offer", code="invalid_sdp")
    return text


def _peer_path(session_id: str, peer_id: str) -> str:
    return f"/api/sessions/{session_id}/jam/webrtc/{peer_id}"


async def open_peer(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    offer = await _read_sdp(request)
    host = request.client.host if request.client else "unknown"
    if not svc.connect_limiter.allow(host):
        raise errors.TooManyRequests("too many connection attempts; slow down", retry_after=1)
    rtc = jam_webrtc(request)
    try:
        peer, answer = await rtc.open(
            access.session.id,
            caller.user.id,
            caller.user.name,
            can_send=access.role in (Role.OWNER, Role.EDITOR),
            offer_sdp=offer,
        )
    except OfferError as exc:
        raise errors.BadRequest(exc.message, code=exc.code) from exc
    except PeerLimitReached as exc:
        raise errors.TooManyRequests(str(exc), code="too_many_peers") from exc
    except EngineFull as exc:
        raise JamUnavailable(str(exc), code="jam_full") from exc
    return Response(
        answer,
        status_code=201,
        media_type=SDP_TYPE,
        headers={"Location": _peer_path(access.session.id, peer.id), "Jam-Participant": peer.participant_id},
    )


async def _own_peer(request: Request) -> tuple[JamWebRtc, JamPeer]:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    rtc = jam_webrtc(request)
    peer = rtc.get(request.path_params["peer_id"])
    if peer is None or peer.session_id != access.session.id:
        raise errors.NotFound("no such WebRTC jam peer", code="peer_not_found")
    if peer.user_id != caller.user.id and access.role is not Role.OWNER:
        denied = RoleForbidden(
            "only the peer's own user or the session owner may do this",
            session_id=access.session.id,
            user_id=caller.user.id,
        )
        denied.code = "not_your_peer"
        raise denied  # audited centrally, like every other role refusal
    return rtc, peer


async def close_peer(request: Request) -> Response:
    rtc, peer = await _own_peer(request)
    await rtc.close(peer.id, "deleted by the client")
    return Response(status_code=204)


async def get_peer(request: Request) -> Response:
    _, peer = await _own_peer(request)
    return JSONResponse(peer.snapshot())


routes = [
    Route("/api/sessions/{session_id}/jam/webrtc", open_peer, methods=["POST"]),
    Route("/api/sessions/{session_id}/jam/webrtc/{peer_id}", close_peer, methods=["DELETE"]),
    Route("/api/sessions/{session_id}/jam/webrtc/{peer_id}", get_peer, methods=["GET"]),
]
