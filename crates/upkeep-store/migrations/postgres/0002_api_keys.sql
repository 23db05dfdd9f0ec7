-- API keys: only a SHA-256 digest of each key is kept (keys are >= 128-bit random values,
-- so a fast digest is the right check; the key itself is shown once, at creation).
CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY,
    digest     BYTEA NOT NULL UNIQUE,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
