"""Public preview share links (issue 6, docs/privacy.md): the pure part.

An owner can let people without an account listen to a session's live preview
(`/api/sessions/{id}/preview.ogg`). The link's token is `<session>.<version>.<expires>.<sig>`,
where `sig` is the export links' HMAC-SHA256 (`realtime.export.sign`) over the session id, the
share version and the expiry, under its own server secret (`data_dir/keys/share-signing.key`).

The version is the store's `ShareRecord.version`, bumped at every enable, re-issue and
disable: a link is honoured only while sharing is enabled *and* its version is the current
one, so disabling or re-issuing revokes every earlier link at once. A token that does not
verify is 403 (`invalid_share_link`); a verified one that expired or was revoked is 410, so a
listener's page can say which.
"""

from __future__ import annotations

from dataclasses import dataclass

from persistence.ports import ShareRecord

from . import errors
from .export import sign, signature_ok

KEY_FILE = "share-signing.key"
DEFAULT_TTL_S = 7 * 24 * 3600
MIN_TTL_S = 60
MAX_TTL_S = 90 * 24 * 3600
MAX_TOKEN = 256
# A listener's open stream re-checks its link this often, so a revoked link goes silent soon.
RECHECK_S = 5.0


class ShareLinkGone(errors.ApiError):
    status = 410
    code = "share_link_gone"


@dataclass(frozen=True, slots=True)
class ShareClaims:
    session_id: str
    version: int
    expires_at: int


def _subject(session_id: str, version: int) -> str:
    # The "share:" prefix keeps a share signature from ever passing as another link's.
    return f"share:{session_id}:{version}"


def make_token(key: bytes, claims: ShareClaims) -> str:
    sig = sign(key, _subject(claims.session_id, claims.version), claims.expires_at)
    return f"{claims.session_id}.{claims.version}.{claims.expires_at}.{sig}"


def read_token(key: bytes, token: str) -> ShareClaims:
    """The claims of a token this server signed (expired or not); `Forbidden` for any other."""
    bad = errors.Forbidden(
        "this listening link is not valid: check that it was copied whole", code="invalid_share_link"
    )
    parts = token.split(".") if len(token) <= MAX_TOKEN and token.isascii() else []
    if len(parts) != 4:
        raise bad
    session_id, version, expires, sig = parts
    if not session_id or len(session_id) > 64 or not version.isdigit() or len(version) > 12:
        raise bad
    # now=0: the signature alone is checked here; expiry is `check_link`'s (a 410, not a 403).
    if not signature_ok(key, _subject(session_id, int(version)), expires, sig, now=0):
        raise bad
    return ShareClaims(session_id, int(version), int(expires))


def check_link(claims: ShareClaims, share: ShareRecord | None, *, now: float) -> None:
    """Raise `ShareLinkGone` unless the link is current: sharing on, same version, not expired."""
    if share is None or not share.enabled or share.version != claims.version:
        raise ShareLinkGone(
            "this listening link was turned off by the session's owner; ask them for a new one",
            code="share_link_revoked",
        )
    if claims.expires_at <= now:
        raise ShareLinkGone(
            "this listening link has expired; ask the session's owner for a new one",
            code="share_link_expired",
        )


def claims_for(share: ShareRecord) -> ShareClaims | None:
    """The claims of the current link of an enabled share, else None."""
    if not share.enabled or share.expires_at is None:
        return None
    return ShareClaims(share.session_id, share.version, int(share.expires_at))
