"""`/api/sessions/*`: create, list, read, rename, delete sessions and manage members."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persistence.ports import Member, Role

from .. import errors
from ..accounts import Access, require, session_access
from ..audit import Action, audit
from ..retention import hard_delete_session
from ..session.room import CloseCode
from ..session.schema import init_document, set_title
from .common import authenticate, field_str, read_json, services, session_json

MAX_TITLE = 200
_ASSIGNABLE = {"editor": Role.EDITOR, "viewer": Role.VIEWER}


def _member_json(m: Member) -> dict[str, str]:
    return {"user_id": m.user_id, "email": m.email, "name": m.name, "role": m.role.value}


def _assignable_role(data: dict[str, object]) -> Role:
    role_name = data.get("role")
    if not isinstance(role_name, str) or role_name not in _ASSIGNABLE:
        raise errors.ValidationFailed("role: must be 'editor' or 'viewer'")
    return _ASSIGNABLE[role_name]


async def _set_role(
    request: Request, access: Access, user_id: str, role: Role, previous: Role | None
) -> None:
    """Store a membership, end sockets authorised under the old role, and record the change."""
    svc = services(request)
    sid = access.session.id
    await svc.store.set_member(sid, user_id, role)
    if previous is not None and previous != role:
        # Open sockets were authorised with the old role: make them reconnect with the new one.
        svc.rooms.kick_user(sid, user_id, CloseCode.ROLE_CHANGED, "your role changed")
        svc.jam.kick_user(sid, user_id, CloseCode.ROLE_CHANGED, "your role changed")
    if previous != role:  # setting the same role again changes nothing worth recording
        await audit(
            request,
            Action.MEMBER_ADDED if previous is None else Action.MEMBER_ROLE_CHANGED,
            actor_id=access.user_id,
            target_type="user",
            target_id=user_id,
            session_id=sid,
            detail={"role": role.value, "previous": None if previous is None else previous.value},
        )


async def _write_title(request: Request, session_id: str, title: str, *, new: bool) -> None:
    """The title also lives in the document, where every collaborator sees it change."""
    rooms = services(request).rooms
    runner = await rooms.acquire(session_id)
    if new:
        init_document(runner.room.doc, title=title)
    else:
        set_title(runner.room.doc, title)
    runner.commit_local_changes()
    await runner.drain()


async def create_session(request: Request) -> Response:
    caller = await authenticate(request)
    data = await read_json(request)
    title = field_str(data, "title", max_len=MAX_TITLE).strip()
    store = services(request).store
    record = await store.create_session(owner_id=caller.user.id, title=title)
    await _write_title(request, record.id, title, new=True)
    return JSONResponse(session_json(record, Role.OWNER.value), status_code=201)


async def list_sessions(request: Request) -> Response:
    caller = await authenticate(request)
    rows = await services(request).store.list_sessions(caller.user.id)
    return JSONResponse({"sessions": [session_json(s, role.value) for s, role in rows]})


async def get_session(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    members = await svc.store.list_members(access.session.id)
    body = session_json(access.session, access.role.value)
    body["members"] = [_member_json(m) for m in members]
    runner = svc.rooms.get_loaded(access.session.id)
    if runner is None:
        runner = await svc.rooms.acquire(access.session.id)  # the caller is about to open it anyway
    body["epoch"] = runner.room.epoch
    return JSONResponse(body)


async def patch_session(request: Request) -> Response:
    caller = await authenticate(request)
    store = services(request).store
    access = await session_access(store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER, Role.EDITOR)
    data = await read_json(request)
    unknown = set(data) - {"title"}
    if unknown:
        raise errors.ValidationFailed(f"cannot change: {', '.join(sorted(unknown))}")
    record = access.session
    if "title" in data:
        title = field_str(data, "title", max_len=MAX_TITLE).strip()
        updated = await store.update_session(record.id, title=title)
        if updated is None:
            raise errors.NotFound("no such session", code="session_not_found")
        record = updated
        await _write_title(request, record.id, title, new=False)
    return JSONResponse(session_json(record, access.role.value))


async def delete_session(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER)
    sid = access.session.id
    if svc.settings.deletion_grace_s > 0:
        # Soft deletion (realtime/retention.py): hidden first, so nobody reconnects, then the
        # jam and the room close; restorable (POST .../restore) until the grace period ends.
        await svc.store.mark_session_deleted(sid)
        svc.jam.close_session(sid, CloseCode.NOT_FOUND, "session deleted", discard=True)
        if svc.jobs is not None:  # no work for a hidden session (a restore does not resume it)
            for job in await svc.store.list_jobs(sid, limit=1000):
                if not job.status.finished:
                    await svc.jobs.cancel(job)
        await svc.rooms.delete(sid)
    else:
        await hard_delete_session(svc.store, svc.assets, sid, rooms=svc.rooms, jam=svc.jam)
    await audit(
        request,
        Action.SESSION_DELETED,
        actor_id=caller.user.id,
        target_type="session",
        target_id=sid,
        session_id=sid,
        detail={"title": access.session.title, "grace_s": svc.settings.deletion_grace_s},
    )
    return Response(status_code=204)


async def add_member(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER)
    data = await read_json(request)
    email = field_str(data, "email", max_len=320).strip()
    role = _assignable_role(data)
    creds = await svc.store.get_credentials(email)
    if creds is None:
        raise errors.NotFound("no account uses this e-mail address", code="user_not_found")
    user = creds.user
    if user.id == access.session.owner_id:
        raise errors.Conflict("the owner's role cannot be changed", code="is_owner")
    previous = await svc.store.get_role(access.session.id, user.id)
    await _set_role(request, access, user.id, role, previous)
    status = 200 if previous is not None else 201
    return JSONResponse(
        {"user_id": user.id, "email": user.email, "name": user.name, "role": role.value}, status_code=status
    )


async def list_session_members(request: Request) -> Response:
    # Every member may read the list: GET /api/sessions/{id} already shows them the same
    # members, so hiding it here would protect nothing and only make the client ask twice.
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    members = await svc.store.list_members(access.session.id)
    return JSONResponse({"members": [_member_json(m) for m in members]})


async def change_member_role(request: Request) -> Response:
    """`PATCH .../members/{user_id}` `{role}`: what the members list edits, by id, not e-mail.

    A session has exactly one owner (`sessions.owner_id`), never demoted: ownership is not
    transferable, so the owner's row answers 409 `is_owner` here as it does on POST and DELETE.
    """
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    require(access, Role.OWNER)
    data = await read_json(request)
    unknown = set(data) - {"role"}
    if unknown:
        raise errors.ValidationFailed(f"cannot change: {', '.join(sorted(unknown))}")
    role = _assignable_role(data)
    user_id = request.path_params["user_id"]
    if user_id == access.session.owner_id:
        raise errors.Conflict("the owner's role cannot be changed", code="is_owner")
    previous = await svc.store.get_role(access.session.id, user_id)
    if previous is None:
        raise errors.NotFound("not a member of this session", code="member_not_found")
    await _set_role(request, access, user_id, role, previous)
    user = await svc.store.get_user(user_id)
    if user is None:  # erased meanwhile: memberships go with their account (ON DELETE CASCADE)
        raise errors.NotFound("no such user", code="member_not_found")
    return JSONResponse({"user_id": user.id, "email": user.email, "name": user.name, "role": role.value})


async def remove_member(request: Request) -> Response:
    caller = await authenticate(request)
    svc = services(request)
    access = await session_access(svc.store, request.path_params["session_id"], caller.user)
    user_id = request.path_params["user_id"]
    if user_id != caller.user.id:
        require(access, Role.OWNER)
    if user_id == access.session.owner_id:
        raise errors.Conflict("the owner cannot be removed; delete the session instead", code="is_owner")
    if not await svc.store.remove_member(access.session.id, user_id):
        raise errors.NotFound("not a member of this session", code="member_not_found")
    await audit(
        request,
        Action.MEMBER_REMOVED,
        actor_id=caller.user.id,
        target_type="user",
        target_id=user_id,
        session_id=access.session.id,
    )
    svc.rooms.kick_user(access.session.id, user_id, CloseCode.FORBIDDEN, "you were removed from this session")
    svc.jam.kick_user(access.session.id, user_id, CloseCode.FORBIDDEN, "you were removed from this session")
    return Response(status_code=204)


routes = [
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions", list_sessions, methods=["GET"]),
    Route("/api/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/api/sessions/{session_id}", patch_session, methods=["PATCH"]),
    Route("/api/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/api/sessions/{session_id}/members", add_member, methods=["POST"]),
    Route("/api/sessions/{session_id}/members", list_session_members, methods=["GET"]),
    Route("/api/sessions/{session_id}/members/{user_id}", change_member_role, methods=["PATCH"]),
    Route("/api/sessions/{session_id}/members/{user_id}", remove_member, methods=["DELETE"]),
]
