-- Public preview share links (issue 6, POST/DELETE /api/sessions/{id}/share) (SQLite). A link
-- carries the session id, this row's version and an expiry under an HMAC; every change bumps
-- the version, so disabling or re-issuing a link revokes every link handed out before.
CREATE TABLE session_shares (
    session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    version    INTEGER NOT NULL CHECK (version > 0),
    expires_at REAL,
    updated_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX session_shares_updated_by ON session_shares (updated_by);
