"""Trust endpoints (docs/privacy.md): consent, the audit log, undoing deletions, training listing.

* `PATCH /api/me` changes the consent flags (`training_opt_in`, `marketing_opt_in`);
* `GET /api/me/audit` is the caller's own audit trail (as actor, or as the account acted on);
* `GET /api/sessions/{id}/audit` is a session's trail, for its owner only;
* `POST /api/sessions/{id}/restore` and `POST /api/assets/{id}/restore` undo a deletion
  within the grace period (`deletion_grace_s`);
* `GET /api/training/assets` is for a training pipeline, with the `training_token` bearer:
  only assets whose uploader opted in to training.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from persistence.ports import AuditRecord, Role

from .. import errors
from ..accounts import require, session_access
from ..audit import Action, audit
from ..erasure import check_password, erase_account, parse_transfer
from ..export import ExportJob, Exports
from .assets import asset_json
from .common import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    authenticate,
    bearer_token,
    consent_json,
    iso,
    read_json,
    services,
    session_json,
    user_json,
)

_CONSENT_FIELDS = {"training_opt_in": "training", "marketing_opt_in": "marketing"}
_DIGITS = re.compile(r"[0-9]{1,18}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PAGE = 500


def audit_json(entry: AuditRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "action": entry.action,
        "actor_id": entry.actor_id,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "session_id": entry.session_id,
        "ip": entry.ip,
        "detail": entry.detail,
    }


def _page(request: Request, *, default: int = 100) -> tuple[int | None, int]:
    """`before` (an entry id) and `limit` from the query; 422 for anything else."""
    raw_before = request.query_params.get("before")
    raw_limit = request.query_params.get("limit", str(default))
    if raw_before is not None and not _DIGITS.fullmatch(raw_before):
        raise errors.ValidationFailed("before: must be an entry id")
    if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise errors.ValidationFailed(f"limit: must be an integer from 1 to {MAX_PAGE}")
    return (None if raw_before is None else int(raw_before)), int(raw_limit)


def _audit_page(entries: list[AuditRecord], limit: int) -> dict[str, Any]:
    return {
        "entries": [audit_json(e) for e in entries],
        "next_before": entries[-1].id if len(entries) == limit else None,
    }


async def patch_me(request: Request) -> Response:
    caller = await authenticate(request)
    data = await read_json(request)
    unknown = set(data) - set(_CONSENT_FIELDS)
    if unknown:
        raise errors.ValidationFailed(f"cannot change: {', '.join(sorted(unknown))}")
    if not data:
        raise errors.ValidationFailed(f"send at least one of: {', '.join(sorted(_CONSENT_FIELDS))}")
    for name, value in data.items():
        if not isinstance(value, bool):
            raise errors.ValidationFailed(f"{name}: must be true or false")
    store = services(request).store
    before = await store.get_consent(caller.user.id)
    changes = {_CONSENT_FIELDS[name]: value for name, value in data.items()}
    after = await store.set_consent(caller.user.id, at=time.time(), **changes)
    if before is None or after is None:
        raise errors.NotAuthenticated("the account no longer exists", code="invalid_token")
    changed = {
        name: getattr(after, name)
        for name in _CONSENT_FIELDS
        if getattr(after, name) != getattr(before, name)
    }
    if changed:
        await audit(
            request,
            Action.CONSENT_CHANGED,
            actor_id=caller.user.id,
            target_type="user",
            target_id=caller.user.id,
            detail=changed,
        )
    return JSONResponse({"user": user_json(caller.user), "consent": consent_json(after)})


async def my_audit(request: Request) -> Response:
    caller = await authenticate(request)
    before, limit = _page(request)
    entries = await services(request).store.list_audit(user_id=caller.user.id, before_id=before, limit=limit)
    return JSONResponse(_audit_page(entries, limit))


async def session_audit(request: Request) -> Response:
    caller = await authenticate(request)
    store = services(request).store
    access = await session_access(store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER)
    before, limit = _page(request)
    entries = await store.list_audit(session_id=access.session.id, before_id=before, limit=limit)
    return JSONResponse(_audit_page(entries, limit))


async def restore_session(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    sid = request.path_params["session_id"]
    not_found = errors.NotFound("no deleted session to restore", code="session_not_found")
    if not _ID.fullmatch(sid) or await svc.store.get_role(sid, caller.user.id) is not Role.OWNER:
        raise not_found  # as for any session the caller does not own: no probing
    if await svc.store.get_session(sid) is not None:
        raise errors.Conflict("this session is not deleted", code="not_deleted")
    record = await svc.store.restore_session(sid, deleted_after=time.time() - svc.settings.deletion_grace_s)
    if record is None:
        raise not_found  # the grace period is over (or it is being hard-deleted)
    await audit(
        request,
        Action.SESSION_RESTORED,
        actor_id=caller.user.id,
        target_type="session",
        target_id=sid,
        session_id=sid,
    )
    return JSONResponse(session_json(record, Role.OWNER.value))


async def restore_asset(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    asset_id = request.path_params["asset_id"]
    not_found = errors.NotFound("no deleted asset to restore", code="asset_not_found")
    record = await svc.store.get_deleted_asset(asset_id) if _ID.fullmatch(asset_id) else None
    if record is None:
        live = await svc.store.get_asset(asset_id) if _ID.fullmatch(asset_id) else None
        if live is not None:
            try:
                await session_access(svc.store, live.session_id, caller.user)
            except errors.NotFound:
                raise not_found from None
            raise errors.Conflict("this asset is not deleted", code="not_deleted")
        raise not_found
    try:
        access = await session_access(svc.store, record.session_id, caller.user)
    except errors.NotFound:
        raise not_found from None
    require(access, Role.OWNER, Role.EDITOR)
    restored = await svc.store.restore_asset(
        asset_id, deleted_after=time.time() - svc.assets.deletion_grace_s
    )
    if restored is None:
        raise not_found
    await audit(
        request,
        Action.ASSET_RESTORED,
        actor_id=caller.user.id,
        target_type="asset",
        target_id=asset_id,
        session_id=restored.session_id,
    )
    return JSONResponse(asset_json(restored))


async def training_assets(request: Request) -> Response:
    settings = services(request).settings
    if not settings.training_token:
        raise errors.NotFound("not found")  # the endpoint is off unless a token is configured
    token = bearer_token(request) or ""
    if not secrets.compare_digest(token.encode(), settings.training_token.encode()):
        raise errors.NotAuthenticated("send Authorization: Bearer <training_token>", code="invalid_token")
    after = request.query_params.get("after", "")
    raw_limit = request.query_params.get("limit", "100")
    if after and not _ID.fullmatch(after):
        raise errors.ValidationFailed("after: must be an asset id")
    if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise errors.ValidationFailed(f"limit: must be an integer from 1 to {MAX_PAGE}")
    limit = int(raw_limit)
    records = await services(request).store.list_training_assets(after_id=after, limit=limit)
    return JSONResponse(
        {
            "assets": [asset_json(a) for a in records],
            "next_after": records[-1].id if len(records) == limit else None,
        }
    )


async def erase_me(request: Request) -> Response:
    """`DELETE /api/me` {password, transfer?}: erase the account (realtime/erasure.py)."""
    caller = await authenticate(request)
    data = await read_json(request)
    password = data.get("password")
    if not isinstance(password, str) or not password:
        raise errors.ValidationFailed("password: required string (your current password)")
    transfer = parse_transfer(data.get("transfer"))
    svc = services(request)
    user = caller.user
    if not await check_password(svc, user, password):
        await audit(
            request,
            Action.ACCOUNT_ERASE_DENIED,
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            detail={"reason": "wrong_password"},
        )
        raise errors.Forbidden("the password is wrong; the account was not erased", code="wrong_password")
    report = await erase_account(svc, user, transfer)
    # Its archives go too, and any an earlier run of the server left behind.
    await (await _exports(request)).forget_user(user.id)
    # The event stays, without whose account it was.
    await audit(
        request,
        Action.ACCOUNT_ERASED,
        target_type="user",
        ip=None,
        detail={
            "sessions_deleted": report.sessions_deleted,
            "sessions_transferred": report.sessions_transferred,
        },
    )
    response = JSONResponse(
        {
            "erased": True,
            "sessions_deleted": report.sessions_deleted,
            "sessions_transferred": report.sessions_transferred,
            "documents_anonymised": report.documents_anonymised,
        }
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


async def _exports(request: Request) -> Exports:
    """The app's export jobs (made on first use, on the app's loop, removing the archives an
    earlier run left: jobs live in memory)."""
    exports: Exports | None = getattr(request.app.state, "exports", None)
    if exports is None:
        exports = Exports(services(request))
        request.app.state.exports = exports
        await exports.sweep_orphans()
    return exports


def _export_json(exports: Exports, job: ExportJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "error": job.error,
        "created_at": iso(job.created_at),
        "expires_at": None if job.expires_at is None else iso(job.expires_at),
        "size_bytes": job.size_bytes,
    }
    if job.status == "done":
        body["download_url"] = exports.link(job)
    return body


async def start_export(request: Request) -> Response:
    caller = await authenticate(request)
    exports = await _exports(request)
    await exports.sweep()
    job = exports.start(caller.user)
    await audit(
        request,
        Action.EXPORT_REQUESTED,
        actor_id=caller.user.id,
        target_type="user",
        target_id=caller.user.id,
        detail={"export_id": job.id},
    )
    return JSONResponse(_export_json(exports, job), status_code=202)


async def export_status(request: Request) -> Response:
    caller = await authenticate(request)
    exports = await _exports(request)
    await exports.sweep()
    job = exports.get(request.path_params["export_id"], caller.user.id)
    if job is None:  # another user's export does not exist, as far as this caller knows
        raise errors.NotFound("no such export", code="export_not_found")
    return JSONResponse(_export_json(exports, job))


async def export_download(request: Request) -> Response:
    """The signed link: no sign-in needed, the signature is the permission."""
    exports = await _exports(request)
    export_id = request.path_params["export_id"]
    params = request.query_params
    if not exports.verify(export_id, params.get("exp", ""), params.get("sig", "")):
        raise errors.Forbidden("this download link is invalid or expired", code="bad_signature")
    await exports.sweep()
    job = exports.jobs.get(export_id)
    if job is None or job.status != "done":
        raise errors.NotFound("no such export (it may have expired)", code="export_not_found")
    svc = services(request)
    await audit(
        request,
        Action.EXPORT_DOWNLOADED,
        actor_id=job.user_id,
        target_type="user",
        target_id=job.user_id,
        detail={"export_id": job.id},
    )
    key = job.blob_key
    return StreamingResponse(
        svc.blobs.stream(key),
        media_type="application/zip",
        headers={
            "content-disposition": f'attachment; filename="escenario-export-{job.id}.zip"',
            "cache-control": "no-store",
        },
    )


routes = [
    Route("/api/me/export", start_export, methods=["POST"]),
    Route("/api/me/export/{export_id}", export_status, methods=["GET"]),
    Route("/api/me/export/{export_id}/download", export_download, methods=["GET"]),
    Route("/api/me", erase_me, methods=["DELETE"]),
    Route("/api/me", patch_me, methods=["PATCH"]),
    Route("/api/me/audit", my_audit, methods=["GET"]),
    Route("/api/sessions/{session_id}/audit", session_audit, methods=["GET"]),
    Route("/api/sessions/{session_id}/restore", restore_session, methods=["POST"]),
    Route("/api/assets/{asset_id}/restore", restore_asset, methods=["POST"]),
    Route("/api/training/assets", training_assets, methods=["GET"]),
]
