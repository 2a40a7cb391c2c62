-- Erasure (issue 7, DELETE /api/me) (SQLite). An erased account's audit entries stay, but
-- without who it was: the trigger now also lets actor_id and target_id be cleared (set to
-- NULL) and detail be emptied ('{}'). Nothing else may change, and nothing may be set to a
-- new value: an entry can lose information, never gain or alter it.
DROP TRIGGER audit_log_append_only;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
WHEN NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at OR NEW.action IS NOT OLD.action
    OR (NEW.actor_id IS NOT NULL AND NEW.actor_id IS NOT OLD.actor_id)
    OR NEW.target_type IS NOT OLD.target_type
    OR (NEW.target_id IS NOT NULL AND NEW.target_id IS NOT OLD.target_id)
    OR NEW.session_id IS NOT OLD.session_id
    OR (NEW.detail IS NOT '{}' AND NEW.detail IS NOT OLD.detail)
    OR (NEW.ip IS NOT NULL AND NEW.ip IS NOT OLD.ip)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: an entry''s ip, actor, target and detail may only be cleared');
END;

-- Signed, single-use invite links (POST /api/sessions/{id}/invites). The token carries the
-- session, role and expiry under an HMAC; this row makes it single-use (used_at).
CREATE TABLE invites (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL,
    used_by    TEXT REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX invites_session_id ON invites (session_id);
CREATE INDEX invites_created_by ON invites (created_by);
CREATE INDEX invites_used_by ON invites (used_by);
