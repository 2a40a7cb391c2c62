-- Audio assets of a session (SQLite). The audio is in the BlobStore under blob_key; these
-- rows hold what the API and the DSP engine need without opening the blob.

CREATE TABLE assets (
    id           TEXT PRIMARY KEY,
    -- Deleting a session deletes its asset rows; the API removes their blobs first.
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- A session keeps its audio when the account that uploaded it goes.
    uploader_id  TEXT REFERENCES users (id) ON DELETE SET NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('source', 'output')),
    mime         TEXT NOT NULL,
    duration_s   REAL NOT NULL,
    sample_rate  INTEGER NOT NULL CHECK (sample_rate > 0),
    channels     INTEGER NOT NULL CHECK (channels > 0),
    frames       INTEGER NOT NULL CHECK (frames >= 0),
    size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
    blob_key     TEXT NOT NULL UNIQUE,
    created_at   REAL NOT NULL,
    processed_at REAL,
    -- Set when a deletion begins (the row is then hidden); the row goes once the blobs are gone.
    deleted_at   REAL
);
CREATE INDEX assets_session_id ON assets (session_id, created_at);
CREATE INDEX assets_uploader_id ON assets (uploader_id);
CREATE INDEX assets_deleted_at ON assets (deleted_at) WHERE deleted_at IS NOT NULL;
