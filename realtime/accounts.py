"""Accounts: password hashing (argon2id), sign-in tokens, and who may do what in a session."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from persistence.ports import Conflict as StoreConflict
from persistence.ports import Role, SessionRecord, Store, User

from . import errors
from .lockout import LoginLockout

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte password is an attack
# The most common passwords of at least MIN_PASSWORD characters in public breach corpora
# (lower-cased); shorter ones are refused by length already.
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "12345678910",
        "0123456789",
        "0987654321",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "qwertyuiop",
        "asdfghjkl;",
        "qwerty1234",
        "qwerty123456",
        "password12",
        "password123",
        "password1234",
        "password!1",
        "passw0rd123",
        "iloveyou12",
        "iloveyou123",
        "football123",
        "baseball123",
        "starwars123",
        "princess123",
        "sunshine123",
        "dragon1234",
        "monkey1234",
        "letmein123",
        "welcome123",
        "welcome1234",
        "abc1234567",
        "abcdefghij",
        "abcd123456",
        "a123456789",
        "1234qwerty",
        "123456789a",
        "1234567890a",
        "qazwsxedc123",
        "zaq12wsxcde",
        "trustno1234",
        "changeme123",
        "administrator",
        "admin12345",
        "admin123456",
        "superman123",
        "michael123",
        "jordan2323",
        "liverpool1",
        "chelsea123",
        "computer123",
        "internet123",
        "escenario123",
    }
)


def password_problem(password: str, *, email: str) -> str | None:
    """Why `password` is not acceptable for the account `email`, or None if it is."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return f"password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    if len(set(password)) == 1:
        return "password: must not be one character repeated"
    folded = password.strip().casefold()
    address = email.strip().casefold()
    if folded in (address, address.split("@", 1)[0]):
        return "password: must not be your e-mail address"
    if folded in COMMON_PASSWORDS:
        return "password: is one of the most common passwords; choose another"
    return None


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: they are random, so no slow hash is needed."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Issued:
    user: User
    token: str
    expires_at: float


class Accounts:
    def __init__(
        self,
        store: Store,
        *,
        token_ttl_s: int,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
        lockout: LoginLockout | None = None,
    ) -> None:
        self._store = store
        self._ttl = token_ttl_s
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._clock = clock
        self.lockout = lockout or LoginLockout()
        # Verifying against a real hash for unknown e-mails keeps login time flat, so the
        # response time does not reveal which addresses have accounts.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def signup(self, *, email: str, password: str, name: str) -> Issued:
        email = email.strip()
        name = name.strip()
        if not EMAIL_RE.match(email):
            raise errors.ValidationFailed("email: not a valid e-mail address")
        problem = password_problem(password, email=email)
        if problem is not None:
            raise errors.ValidationFailed(problem)
        if not 1 <= len(name) <= 100:
            raise errors.ValidationFailed("name: must be 1 to 100 characters")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            user = await self._store.create_user(email=email, name=name, password_hash=password_hash)
        except StoreConflict as exc:
            raise errors.Conflict("an account with this e-mail already exists", code="email_taken") from exc
        return await self.issue_token(user)

    async def login(self, *, email: str, password: str) -> Issued:
        key = email.strip().lower()
        wait = self.lockout.retry_after(key)
        if wait > 0:
            raise errors.TooManyRequests(
                f"too many wrong passwords for this account; try again in {math.ceil(wait)} s",
                code="login_locked",
                retry_after=math.ceil(wait),
            )
        creds = await self._store.get_credentials(email.strip())
        stored_hash = creds.password_hash if creds else self._dummy_hash
        ok = await asyncio.to_thread(self._verify, stored_hash, password[:MAX_PASSWORD])
        if not ok or creds is None:
            self.lockout.failed(key)
            raise errors.NotAuthenticated("wrong e-mail or password", code="invalid_credentials")
        self.lockout.succeeded(key)
        if self._hasher.check_needs_rehash(creds.password_hash):
            new_hash = await asyncio.to_thread(self._hasher.hash, password)
            await self._store.set_password_hash(creds.user.id, new_hash)
        return await self.issue_token(creds.user)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def issue_token(self, user: User) -> Issued:
        token = secrets.token_urlsafe(32)
        expires_at = self._clock() + self._ttl
        await self._store.create_token(token_hash=hash_token(token), user_id=user.id, expires_at=expires_at)
        return Issued(user, token, expires_at)

    async def user_for_token(self, token: str) -> User | None:
        if not token or len(token) > 256:
            return None
        return await self._store.user_for_token(hash_token(token), now=self._clock())

    async def revoke(self, token: str) -> bool:
        return await self._store.revoke_token(hash_token(token))


@dataclass(frozen=True, slots=True)
class Access:
    session: SessionRecord
    role: Role
    user_id: str = ""


class RoleForbidden(errors.Forbidden):
    """A member tried something their role does not allow (audited centrally, see app.py)."""

    code = "role_forbidden"

    def __init__(self, message: str, *, session_id: str, user_id: str) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.user_id = user_id


async def session_access(store: Store, session_id: str, user: User) -> Access:
    """The user's role in a session; 404 both for unknown sessions and for non-members.

    Answering 404 rather than 403 to non-members keeps session ids from being probed.
    """
    session = await store.get_session(session_id) if len(session_id) <= 64 else None
    role = await store.get_role(session_id, user.id) if session else None
    if session is None or role is None:
        raise errors.NotFound("no such session", code="session_not_found")
    return Access(session, role, user.id)


def require(access: Access, *roles: Role) -> None:
    if access.role not in roles:
        raise RoleForbidden(
            f"your role ({access.role.value}) may not do this; needs {' or '.join(r.value for r in roles)}",
            session_id=access.session.id,
            user_id=access.user_id,
        )
