"""Erasure (issue 7, docs/privacy.md): `DELETE /api/me` removes an account and what is its alone.

What goes, at once (no grace period: the user asked for it to be gone):

* the account, its sign-in tokens, its memberships and its consent (columns of the account);
* every session it owns, hard-deleted with its document history and every stored audio file,
  except those whose ownership it hands to a member (`transfer`);
* its id and name in the documents it stays attributed in (collaborators' sessions, and the
  sessions it transfers): jobs' `createdBy`, live tracks' `live.userId` / `live.participantName`,
  and its name in track names; the room is then compacted, so the old values are not kept in
  the update log either (deleted Yjs content is garbage-collected from the state);
* its name in the names of assets it uploaded to sessions it did not own (the audio stays, as
  the session's, with no uploader);
* in the audit log, its id as actor or target, the IP address and the detail of its entries,
  and the detail (titles, file names) of its deleted sessions' and uploads' entries. The events
  themselves stay.

`plan_erasure` is the pure check of a request (which sessions go, which move to whom);
`erase_account` applies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pycrdt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from persistence.ports import Role, SessionRecord, User

from . import errors
from .retention import hard_delete_session
from .services import Services
from .session.room import CloseCode

log = logging.getLogger(__name__)

ERASED_ID = "erased"  # replaces the user's id where a document names it
ERASED_NAME = "Former member"  # replaces the user's name


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    delete: tuple[str, ...]
    transfer: tuple[tuple[str, str], ...]  # (session id, new owner's user id)


@dataclass(frozen=True, slots=True)
class ErasureReport:
    sessions_deleted: int
    sessions_transferred: int
    documents_anonymised: int


def plan_erasure(
    owned: list[SessionRecord], transfer: Mapping[str, str], members: Mapping[str, Mapping[str, Role]]
) -> ErasurePlan:
    """Which owned sessions are deleted and which change hands; `ValidationFailed` if a transfer
    names a session the user does not own or a new owner who is not a member of it.

    `members` is, per owned session, its members' roles (the owner included)."""
    owned_ids = {s.id for s in owned}
    for sid, new_owner in transfer.items():
        if sid not in owned_ids:
            raise errors.ValidationFailed(f"transfer: {sid!r} is not a session you own")
        role = members.get(sid, {}).get(new_owner)
        if role is None or role is Role.OWNER:
            raise errors.ValidationFailed(f"transfer: {new_owner!r} is not a member of session {sid!r}")
    return ErasurePlan(
        delete=tuple(s.id for s in owned if s.id not in transfer),
        transfer=tuple((s.id, transfer[s.id]) for s in owned if s.id in transfer),
    )


def parse_transfer(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 64 and 0 < len(v) <= 64
        for k, v in raw.items()
    ):
        raise errors.ValidationFailed("transfer: must be an object of session id → new owner's user id")
    return dict(raw)


async def check_password(svc: Services, user: User, password: str) -> bool:
    """Whether `password` is the account's, with the sign-in lockout applied to wrong ones."""
    key = user.email.strip().lower()
    wait = svc.accounts.lockout.retry_after(key)
    if wait > 0:
        raise errors.TooManyRequests(
            "too many wrong passwords for this account; try again later",
            code="login_locked",
            retry_after=int(wait) + 1,
        )
    creds = await svc.store.get_credentials(user.email)
    if creds is None:
        return False

    def verify() -> bool:
        try:
            return PasswordHasher().verify(creds.password_hash, password[:1024])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    ok = await asyncio.to_thread(verify)
    if ok:
        svc.accounts.lockout.succeeded(key)
    else:
        svc.accounts.lockout.failed(key)
    return ok


def anonymise_document(doc: pycrdt.Doc[Any], user_id: str, name: str) -> bool:
    """Replace the user's id and name in the server-written attribution fields; True if any."""
    changed = False

    def scrub(text: Any) -> Any:
        nonlocal changed
        if isinstance(text, str) and name and name in text:
            changed = True
            return text.replace(name, ERASED_NAME)
        return text

    with doc.transaction():
        tracks = doc.get("tracks", type=pycrdt.Map)
        for track in list(tracks.values()):
            if not isinstance(track, pycrdt.Map):
                continue
            live = track.get("live")
            if isinstance(live, pycrdt.Map) and live.get("userId") == user_id:
                live["userId"] = ERASED_ID
                live["participantName"] = ERASED_NAME
                changed = True
            new_name = scrub(track.get("name"))
            if new_name != track.get("name"):
                track["name"] = new_name
        jobs = doc.get("jobs", type=pycrdt.Map)
        for job_id, job in list(jobs.items()):
            if isinstance(job, pycrdt.Map):
                if job.get("createdBy") == user_id:
                    job["createdBy"] = ERASED_ID
                    changed = True
            elif isinstance(job, dict) and job.get("createdBy") == user_id:
                jobs[job_id] = {**job, "createdBy": ERASED_ID}
                changed = True
    return changed


async def _anonymise_room(svc: Services, session_id: str, user: User) -> bool:
    runner = await svc.rooms.acquire(session_id)
    if not anonymise_document(runner.room.doc, user.id, user.name):
        return False
    runner.commit_local_changes()
    await runner.drain()
    # Compaction replaces the update log with the current state, in which the overwritten
    # values are garbage-collected: the old id and name are then nowhere in the room's rows.
    await runner.compact()
    return True


async def erase_account(svc: Services, user: User, transfer: Mapping[str, str]) -> ErasureReport:
    """Erase `user` (the password is checked by the caller); bad transfers change nothing."""
    store = svc.store
    owned = await store.list_owned_sessions(user.id)
    members = {sid: {m.user_id: m.role for m in await store.list_members(sid)} for sid in transfer if sid}
    plan = plan_erasure(owned, transfer, members)
    memberships = [s.id for s, role in await store.list_sessions(user.id) if role is not Role.OWNER]

    for sid, new_owner in plan.transfer:
        if not await store.transfer_session(sid, from_user_id=user.id, to_user_id=new_owner):
            raise errors.Conflict(f"session {sid!r} could not be transferred", code="transfer_failed")
        # The new owner's open sockets were authorised with the old role.
        svc.rooms.kick_user(sid, new_owner, CloseCode.ROLE_CHANGED, "your role changed")
        svc.jam.kick_user(sid, new_owner, CloseCode.ROLE_CHANGED, "your role changed")
    for sid in [*memberships, *(sid for sid, _ in plan.transfer)]:
        svc.rooms.kick_user(sid, user.id, CloseCode.FORBIDDEN, "this account was erased")
        svc.jam.kick_user(sid, user.id, CloseCode.FORBIDDEN, "this account was erased")

    for sid in plan.delete:
        if svc.jobs is not None:
            for job in await store.list_jobs(sid, limit=1000):
                if not job.status.finished:
                    await svc.jobs.cancel(job)
        await hard_delete_session(store, svc.assets, sid, rooms=svc.rooms, jam=svc.jam)

    anonymised = 0
    for sid in [*memberships, *(sid for sid, _ in plan.transfer)]:
        if await store.get_session(sid) is not None and await _anonymise_room(svc, sid, user):
            anonymised += 1

    await store.erase_user(user.id, name=user.name, replacement=ERASED_NAME, session_ids=plan.delete)
    svc.accounts.lockout.succeeded(user.email.strip().lower())
    return ErasureReport(len(plan.delete), len(plan.transfer), anonymised)
