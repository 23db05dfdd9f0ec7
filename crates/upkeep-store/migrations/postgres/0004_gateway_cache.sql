-- The gateway's cached fallback: the last good answer of a market-data GET, per account,
-- path and canonical query. Market data, not secrets; kept per account all the same.
CREATE TABLE gateway_cache (
    account      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    query        TEXT NOT NULL,
    status       BIGINT NOT NULL,
    content_type TEXT,
    body         BYTEA NOT NULL,
    stored_at    BIGINT NOT NULL,
    PRIMARY KEY (account, path, query)
);
CREATE INDEX gateway_cache_stored_at ON gateway_cache (stored_at);
