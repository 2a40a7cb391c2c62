-- Trust and privacy (issue 7): retention, soft deletion with undo, consent, audit log (SQLite).

-- A purged source keeps its row (name, duration, when and why it was purged) without its audio.
ALTER TABLE assets ADD COLUMN purged_at REAL;
ALTER TABLE assets ADD COLUMN purge_reason TEXT;
CREATE INDEX assets_purge_due ON assets (processed_at)
    WHERE kind = 'source' AND purged_at IS NULL AND processed_at IS NOT NULL;

-- Set when the owner deletes a session: hidden at once, hard-deleted after the grace period.
ALTER TABLE sessions ADD COLUMN deleted_at REAL;
CREATE INDEX sessions_deleted_at ON sessions (deleted_at) WHERE deleted_at IS NOT NULL;

-- Consent: off unless the user turns it on; *_at is when the choice last changed.
ALTER TABLE users ADD COLUMN training_opt_in INTEGER NOT NULL DEFAULT 0 CHECK (training_opt_in IN (0, 1));
ALTER TABLE users ADD COLUMN training_opt_in_at REAL;
ALTER TABLE users ADD COLUMN marketing_opt_in INTEGER NOT NULL DEFAULT 0 CHECK (marketing_opt_in IN (0, 1));
ALTER TABLE users ADD COLUMN marketing_opt_in_at REAL;

-- Security-relevant events. No foreign keys: entries outlive the accounts, sessions and
-- assets they name. Rows are never rewritten (the trigger below); only the IP address may be
-- cleared, which is how addresses are anonymised after the retention period.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    action      TEXT NOT NULL,
    actor_id    TEXT,
    target_type TEXT,
    target_id   TEXT,
    session_id  TEXT,
    ip          TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'  -- JSON object
);
CREATE INDEX audit_log_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_target ON audit_log (target_id, id);
CREATE INDEX audit_log_session ON audit_log (session_id, id);
CREATE INDEX audit_log_ip_at ON audit_log (at) WHERE ip IS NOT NULL;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
WHEN NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at OR NEW.action IS NOT OLD.action
    OR NEW.actor_id IS NOT OLD.actor_id OR NEW.target_type IS NOT OLD.target_type
    OR NEW.target_id IS NOT OLD.target_id OR NEW.session_id IS NOT OLD.session_id
    OR NEW.detail IS NOT OLD.detail OR (NEW.ip IS NOT NULL AND NEW.ip IS NOT OLD.ip)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: only an entry''s ip may be cleared');
END;
