-- Market-data relay: ticks as received from the upstream feed, and the feed connections'
-- up/down events. Times are epoch milliseconds. Written in batches; not part of backups.
CREATE TABLE feed_ticks (
    id          BIGSERIAL PRIMARY KEY,
    account     TEXT NOT NULL,
    instrument  TEXT NOT NULL,
    ltt_ms      BIGINT NOT NULL,
    ltp         DOUBLE PRECISION NOT NULL,
    ltq         BIGINT NOT NULL,
    volume      BIGINT,
    oi          DOUBLE PRECISION,
    bid_price   DOUBLE PRECISION,
    bid_qty     BIGINT,
    ask_price   DOUBLE PRECISION,
    ask_qty     BIGINT,
    received_ms BIGINT NOT NULL
);
CREATE INDEX feed_ticks_instrument_ltt ON feed_ticks (instrument, ltt_ms);
CREATE INDEX feed_ticks_ltt ON feed_ticks (ltt_ms);

CREATE TABLE feed_connection_events (
    id         BIGSERIAL PRIMARY KEY,
    account    TEXT NOT NULL,
    connection INTEGER NOT NULL,
    at_ms      BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    cause      TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX feed_connection_events_at ON feed_connection_events (at_ms);
