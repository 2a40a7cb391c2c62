-- Public preview share links (issue 6, POST/DELETE /api/sessions/{id}/share) (PostgreSQL). A
-- link carries the session id, this row's version and an expiry under an HMAC; every change
-- bumps the version, so disabling or re-issuing a link revokes every link handed out before.
CREATE TABLE session_shares (
    session_id text PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    enabled    boolean NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    expires_at double precision,
    updated_by text REFERENCES users (id) ON DELETE SET NULL,
    updated_at double precision NOT NULL
);
CREATE INDEX session_shares_updated_by ON session_shares (updated_by);
