-- Audio assets of a session (PostgreSQL). The audio is in the BlobStore under blob_key; these
-- rows hold what the API and the DSP engine need without opening the blob.

CREATE TABLE assets (
    id           text PRIMARY KEY,
    -- Deleting a session deletes its asset rows; the API removes their blobs first.
    session_id   text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- A session keeps its audio when the account that uploaded it goes.
    uploader_id  text REFERENCES users (id) ON DELETE SET NULL,
    name         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('source', 'output')),
    mime         text NOT NULL,
    duration_s   double precision NOT NULL,
    sample_rate  integer NOT NULL CHECK (sample_rate > 0),
    channels     integer NOT NULL CHECK (channels > 0),
    frames       bigint NOT NULL CHECK (frames >= 0),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    blob_key     text NOT NULL UNIQUE,
    created_at   double precision NOT NULL,
    processed_at double precision,
    -- Set when a deletion begins (the row is then hidden); the row goes once the blobs are gone.
    deleted_at   double precision
);
CREATE INDEX assets_session_id ON assets (session_id, created_at);
CREATE INDEX assets_uploader_id ON assets (uploader_id);
CREATE INDEX assets_deleted_at ON assets (deleted_at) WHERE deleted_at IS NOT NULL;
