-- Accounts, sessions, memberships and the CRDT update log (PostgreSQL).
-- Times are Unix seconds (double precision); ids are opaque text chosen by the store.

CREATE TABLE users (
    id            text PRIMARY KEY,
    email         text NOT NULL,
    -- Lower-cased in Python, not by SQL lower(), whose result depends on the collation here
    -- and folds only ASCII in SQLite: both backends must agree on what counts as a duplicate.
    email_key     text NOT NULL UNIQUE,
    name          text NOT NULL,
    password_hash text NOT NULL,
    created_at    double precision NOT NULL
);

CREATE TABLE auth_tokens (
    token_hash text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at double precision NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX auth_tokens_user_id ON auth_tokens (user_id);

CREATE TABLE sessions (
    id         text PRIMARY KEY,
    title      text NOT NULL,
    -- No cascade: deleting an owner must decide what happens to the session and its room,
    -- which a cascade would silently orphan (rooms are not tied to sessions by a key).
    owner_id   text NOT NULL REFERENCES users (id),
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE INDEX sessions_owner_id ON sessions (owner_id);

CREATE TABLE session_members (
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX session_members_user_id ON session_members (user_id);

-- One row per room; last_seq is the allocator, so sequence numbers survive compaction and
-- reset even when the log itself is empty. Its row lock also serialises concurrent appends.
CREATE TABLE crdt_rooms (
    room         text PRIMARY KEY,
    epoch        integer NOT NULL DEFAULT 0,
    snapshot     bytea,
    snapshot_seq bigint NOT NULL DEFAULT 0,
    last_seq     bigint NOT NULL DEFAULT 0,
    CHECK (snapshot_seq <= last_seq)
);

CREATE TABLE crdt_updates (
    room text NOT NULL REFERENCES crdt_rooms (room) ON DELETE CASCADE,
    seq  bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (room, seq)
);
