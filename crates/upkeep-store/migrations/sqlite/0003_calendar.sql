-- The trading calendar as last fetched from Upstox, one row per year (JSON of
-- upkeep-core's TradingCalendar). Public data: not sealed. Re-fetched, so not in backups.
CREATE TABLE market_calendar (
    year       INTEGER PRIMARY KEY NOT NULL,
    body       TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
) STRICT;
