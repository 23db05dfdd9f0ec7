-- API keys: only a SHA-256 digest of each key is kept (keys are >= 128-bit random values,
-- so a fast digest is the right check; the key itself is shown once, at creation).
CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY NOT NULL,
    digest     BLOB NOT NULL UNIQUE,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
