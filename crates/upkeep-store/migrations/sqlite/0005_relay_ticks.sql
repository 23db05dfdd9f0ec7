-- Market-data relay: ticks as received from the upstream feed, and the feed connections'
-- up/down events. Times are epoch milliseconds. Written in batches; not part of backups.
CREATE TABLE feed_ticks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    instrument  TEXT NOT NULL,
    ltt_ms      INTEGER NOT NULL,
    ltp         REAL NOT NULL,
    ltq         INTEGER NOT NULL,
    volume      INTEGER,
    oi          REAL,
    bid_price   REAL,
    bid_qty     INTEGER,
    ask_price   REAL,
    ask_qty     INTEGER,
    received_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX feed_ticks_instrument_ltt ON feed_ticks (instrument, ltt_ms);
CREATE INDEX feed_ticks_ltt ON feed_ticks (ltt_ms);

CREATE TABLE feed_connection_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account    TEXT NOT NULL,
    connection INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    cause      TEXT NOT NULL,
    detail     TEXT NOT NULL
) STRICT;
CREATE INDEX feed_connection_events_at ON feed_connection_events (at_ms);
