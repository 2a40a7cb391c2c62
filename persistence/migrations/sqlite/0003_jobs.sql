-- Inference jobs (SQLite). The durable truth about every job, whichever queue carries it and
-- whichever worker runs it: a job survives a restart and is re-queued or failed, never lost.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- A job's record (and what it produced) outlives its source asset, and its author's account.
    asset_id         TEXT REFERENCES assets (id) ON DELETE SET NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('separate', 'transcribe', 'master')),
    params           TEXT NOT NULL,  -- JSON object
    priority         TEXT NOT NULL CHECK (priority IN ('interactive', 'bulk')),
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress         REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    error            TEXT,
    result           TEXT,           -- JSON object
    created_by       TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    worker           TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    updated_at       REAL NOT NULL
);
CREATE INDEX jobs_session_id ON jobs (session_id, created_at);
CREATE INDEX jobs_status ON jobs (status, created_at);
-- For ON DELETE SET NULL, which would otherwise scan the table on every asset or user deletion.
CREATE INDEX jobs_asset_id ON jobs (asset_id);
CREATE INDEX jobs_created_by ON jobs (created_by);
