//! `[relay] persist_ticks`: a task per account writes the upstream's ticks (instrument,
//! last trade time and price and quantity, volume, open interest, best bid and ask) and
//! its connection events to the store, in batches (one transaction per second, or per
//! [`BATCH`] rows). A store that fails drops that batch (logged), so memory stays
//! bounded; a writer that falls behind the feed skips what it missed (logged).

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use upkeep_store::{FeedConnectionEvent, TickRecord};
use upkeep_upstox::feed::upstream::{DownCause, FeedPool, UpstreamEvent};
use upkeep_upstox::feed::{self, Feed, FeedData, FeedType, FullFeed};

use crate::engine::Engine;

/// Rows per transaction at most.
pub const BATCH: usize = 2_000;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The tick of one instrument in a frame, if it carries a last-trade block.
pub fn tick_of(account: &str, key: &str, f: &Feed<'_>, received_ms: i64) -> Option<TickRecord> {
    let l = f.ltpc()?;
    let mut t = TickRecord {
        account: account.to_owned(),
        instrument: key.to_owned(),
        ltt_ms: l.ltt,
        ltp: l.ltp,
        ltq: l.ltq,
        volume: None,
        oi: None,
        bid_price: None,
        bid_qty: None,
        ask_price: None,
        ask_qty: None,
        received_ms,
    };
    let best = match &f.data {
        Some(FeedData::Full(Some(FullFeed::Market(m)))) => {
            t.volume = Some(m.vtt);
            t.oi = Some(m.oi);
            m.market_level
                .as_ref()
                .and_then(|d| d.bid_ask_quote.as_slice().first().copied())
        }
        Some(FeedData::FirstLevelWithGreeks(g)) => {
            t.volume = Some(g.vtt);
            t.oi = Some(g.oi);
            g.first_depth
        }
        _ => None,
    };
    if let Some(q) = best {
        t.bid_price = Some(q.bid_p);
        t.bid_qty = Some(q.bid_q);
        t.ask_price = Some(q.ask_p);
        t.ask_qty = Some(q.ask_q);
    }
    Some(t)
}

fn cause_name(c: DownCause) -> &'static str {
    match c {
        DownCause::Rotation => "rotation",
        DownCause::Stall => "stall",
        DownCause::Closed => "closed",
        DownCause::Error => "error",
        DownCause::Unused => "unused",
        DownCause::Stopped => "stopped",
    }
}

/// Starts the writer of `account`'s ticks; it ends with the engine.
pub fn spawn_writer(engine: &Engine, account: &str, pool: &FeedPool) {
    let mut events = pool.events();
    let engine = engine.clone();
    let account = account.to_owned();
    let stop = engine.shutdown_token();
    tokio::spawn(async move {
        let mut ticks: Vec<TickRecord> = Vec::new();
        let mut conn_events: Vec<FeedConnectionEvent> = Vec::new();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        loop {
            let full = tokio::select! {
                ev = events.recv() => {
                    let now_ms = engine.clock().now().as_millisecond();
                    match ev {
                        Ok(UpstreamEvent::Frame { kind, data, .. }) if kind != FeedType::MarketInfo => {
                            match feed::decode(&data) {
                                Ok(frame) => ticks.extend(
                                    frame.feeds.iter().filter_map(|(k, f)| tick_of(&account, k, f, now_ms)),
                                ),
                                Err(e) => tracing::debug!(account = %account, error = %e, "relay: undecodable frame not persisted"),
                            }
                        }
                        Ok(UpstreamEvent::Frame { .. }) => {}
                        Ok(UpstreamEvent::Up { connection, reconnect }) => conn_events.push(FeedConnectionEvent {
                            account: account.clone(),
                            connection: connection as i32,
                            at_ms: now_ms,
                            kind: "up".into(),
                            cause: if reconnect { "reconnect" } else { "open" }.into(),
                            detail: String::new(),
                        }),
                        Ok(UpstreamEvent::Down { connection, cause, reason, .. }) => conn_events.push(FeedConnectionEvent {
                            account: account.clone(),
                            connection: connection as i32,
                            at_ms: now_ms,
                            kind: "down".into(),
                            cause: cause_name(cause).into(),
                            detail: reason,
                        }),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(account = %account, missed = n, "relay: the tick writer fell behind the feed; those ticks are not stored");
                        }
                        Err(RecvError::Closed) => break,
                    }
                    ticks.len() + conn_events.len() >= BATCH
                }
                _ = flush.tick() => true,
                _ = stop.cancelled() => break,
            };
            if full {
                write(&engine, &account, &mut ticks, &mut conn_events).await;
            }
        }
        write(&engine, &account, &mut ticks, &mut conn_events).await;
    });
}

async fn write(
    engine: &Engine,
    account: &str,
    ticks: &mut Vec<TickRecord>,
    events: &mut Vec<FeedConnectionEvent>,
) {
    if ticks.is_empty() && events.is_empty() {
        return;
    }
    if let Err(e) = engine.store().record_ticks(ticks, events).await {
        tracing::warn!(account, rows = ticks.len() + events.len(), error = %e, "relay: could not store ticks; this batch is dropped");
    }
    ticks.clear();
    events.clear();
}
