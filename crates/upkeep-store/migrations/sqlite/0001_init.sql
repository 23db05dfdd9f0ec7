-- upkeep store, SQLite. Timestamps are UTC seconds since the Unix epoch.
-- Tokens and secrets are sealed (XChaCha20-Poly1305); nothing here holds one in plain text.

CREATE TABLE IF NOT EXISTS upkeep_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE accounts (
    id         TEXT PRIMARY KEY NOT NULL,
    env        TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
    account     TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    slot        TEXT NOT NULL CHECK (slot IN ('current', 'previous')),
    sealed      BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    issued_at   INTEGER,
    expires_at  INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (account, slot)
) STRICT;

CREATE TABLE secrets (
    account TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    sealed  BLOB NOT NULL,
    PRIMARY KEY (account, name)
) STRICT;

-- Audit history outlives the account it is about, so no foreign key here.
CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL
) STRICT;

CREATE INDEX audit_events_by_account ON audit_events (account, id);

CREATE TABLE leases (
    account    TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
