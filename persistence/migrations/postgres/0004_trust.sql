-- Trust and privacy (issue 7): retention, soft deletion with undo, consent, audit log (PostgreSQL).

-- A purged source keeps its row (name, duration, when and why it was purged) without its audio.
ALTER TABLE assets ADD COLUMN purged_at double precision;
ALTER TABLE assets ADD COLUMN purge_reason text;
CREATE INDEX assets_purge_due ON assets (processed_at)
    WHERE kind = 'source' AND purged_at IS NULL AND processed_at IS NOT NULL;

-- Set when the owner deletes a session: hidden at once, hard-deleted after the grace period.
ALTER TABLE sessions ADD COLUMN deleted_at double precision;
CREATE INDEX sessions_deleted_at ON sessions (deleted_at) WHERE deleted_at IS NOT NULL;

-- Consent: off unless the user turns it on; *_at is when the choice last changed.
ALTER TABLE users ADD COLUMN training_opt_in boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN training_opt_in_at double precision;
ALTER TABLE users ADD COLUMN marketing_opt_in boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN marketing_opt_in_at double precision;

-- Security-relevant events. No foreign keys: entries outlive the accounts, sessions and
-- assets they name. Rows are never rewritten (the trigger below); only the IP address may be
-- cleared, which is how addresses are anonymised after the retention period.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          double precision NOT NULL,
    action      text NOT NULL,
    actor_id    text,
    target_type text,
    target_id   text,
    session_id  text,
    ip          text,
    detail      text NOT NULL DEFAULT '{}'  -- JSON object
);
CREATE INDEX audit_log_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_target ON audit_log (target_id, id);
CREATE INDEX audit_log_session ON audit_log (session_id, id);
CREATE INDEX audit_log_ip_at ON audit_log (at) WHERE ip IS NOT NULL;

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.at IS DISTINCT FROM OLD.at
        OR NEW.action IS DISTINCT FROM OLD.action OR NEW.actor_id IS DISTINCT FROM OLD.actor_id
        OR NEW.target_type IS DISTINCT FROM OLD.target_type
        OR NEW.target_id IS DISTINCT FROM OLD.target_id
        OR NEW.session_id IS DISTINCT FROM OLD.session_id OR NEW.detail IS DISTINCT FROM OLD.detail
        OR (NEW.ip IS NOT NULL AND NEW.ip IS DISTINCT FROM OLD.ip) THEN
        RAISE EXCEPTION 'audit_log is append-only: only an entry''s ip may be cleared';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
