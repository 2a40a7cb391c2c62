-- Erasure (issue 7, DELETE /api/me) (PostgreSQL). An erased account's audit entries stay, but
-- without who it was: the trigger now also lets actor_id and target_id be cleared (set to
-- NULL) and detail be emptied ('{}'). Nothing else may change, and nothing may be set to a
-- new value: an entry can lose information, never gain or alter it.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.at IS DISTINCT FROM OLD.at
        OR NEW.action IS DISTINCT FROM OLD.action
        OR (NEW.actor_id IS NOT NULL AND NEW.actor_id IS DISTINCT FROM OLD.actor_id)
        OR NEW.target_type IS DISTINCT FROM OLD.target_type
        OR (NEW.target_id IS NOT NULL AND NEW.target_id IS DISTINCT FROM OLD.target_id)
        OR NEW.session_id IS DISTINCT FROM OLD.session_id
        OR (NEW.detail <> '{}' AND NEW.detail IS DISTINCT FROM OLD.detail)
        OR (NEW.ip IS NOT NULL AND NEW.ip IS DISTINCT FROM OLD.ip) THEN
        RAISE EXCEPTION 'audit_log is append-only: an entry''s ip, actor, target and detail may only be cleared';
    END IF;
    RETURN NEW;
END
$$;

-- Signed, single-use invite links (POST /api/sessions/{id}/invites). The token carries the
-- session, role and expiry under an HMAC; this row makes it single-use (used_at).
CREATE TABLE invites (
    id         text PRIMARY KEY,
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('editor', 'viewer')),
    created_by text REFERENCES users (id) ON DELETE SET NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    used_at    double precision,
    used_by    text REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX invites_session_id ON invites (session_id);
CREATE INDEX invites_created_by ON invites (created_by);
CREATE INDEX invites_used_by ON invites (used_by);
