-- Accounts, sessions, memberships and the CRDT update log (SQLite).
-- Times are Unix seconds (REAL); ids are opaque TEXT chosen by the store.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    -- Lower-cased in Python, not by SQL lower(), which folds only ASCII in SQLite and follows
    -- the collation in PostgreSQL: both backends must agree on what counts as a duplicate.
    email_key     TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL
);

CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX auth_tokens_user_id ON auth_tokens (user_id);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    -- No cascade: deleting an owner must decide what happens to the session and its room,
    -- which a cascade would silently orphan (rooms are not tied to sessions by a key).
    owner_id   TEXT NOT NULL REFERENCES users (id),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX sessions_owner_id ON sessions (owner_id);

CREATE TABLE session_members (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX session_members_user_id ON session_members (user_id);

-- One row per room; last_seq is the allocator, so sequence numbers survive compaction and
-- reset even when the log itself is empty.
CREATE TABLE crdt_rooms (
    room         TEXT PRIMARY KEY,
    epoch        INTEGER NOT NULL DEFAULT 0,
    snapshot     BLOB,
    snapshot_seq INTEGER NOT NULL DEFAULT 0,
    last_seq     INTEGER NOT NULL DEFAULT 0,
    CHECK (snapshot_seq <= last_seq)
);

CREATE TABLE crdt_updates (
    room TEXT NOT NULL REFERENCES crdt_rooms (room) ON DELETE CASCADE,
    seq  INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (room, seq)
);
