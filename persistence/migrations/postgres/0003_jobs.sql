-- Inference jobs (PostgreSQL). The durable truth about every job, whichever queue carries it
-- and whichever worker runs it: a job survives a restart and is re-queued or failed, never lost.

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    session_id       text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- A job's record (and what it produced) outlives its source asset, and its author's account.
    asset_id         text REFERENCES assets (id) ON DELETE SET NULL,
    kind             text NOT NULL CHECK (kind IN ('separate', 'transcribe', 'master')),
    params           text NOT NULL,  -- JSON object, kept as text so both backends return it byte for byte
    priority         text NOT NULL CHECK (priority IN ('interactive', 'bulk')),
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress         double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    error            text,
    result           text,           -- JSON object
    created_by       text REFERENCES users (id) ON DELETE SET NULL,
    created_at       double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    worker           text,
    cancel_requested boolean NOT NULL DEFAULT false,
    updated_at       double precision NOT NULL
);
CREATE INDEX jobs_session_id ON jobs (session_id, created_at);
CREATE INDEX jobs_status ON jobs (status, created_at);
-- For ON DELETE SET NULL, which would otherwise scan the table on every asset or user deletion.
CREATE INDEX jobs_asset_id ON jobs (asset_id);
CREATE INDEX jobs_created_by ON jobs (created_by);
