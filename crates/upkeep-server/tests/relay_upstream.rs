//! The relay's upstream side in the daemon: the account's feed pool follows the
//! engine's in-memory token across the 03:30 rollover, a renewal and a revocation,
//! against the project's simulator (loopback, one movable clock). Simulated hours pass
//! by moving the clock; the simulator ticks every 50 ms of real time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use jiff::civil::{Date, Weekday, date};
use tokio::sync::broadcast;
use upkeep_server::Actor;
use upkeep_server::relay::{RelayError, Upstreams};
use upkeep_upstox::feed::upstream::{DownCause, FeedPool, UpstreamEvent};
use upkeep_upstox::feed::{self, FeedType, SubscriptionMode};

use common::{ACCOUNT, PATIENCE, Setup, TestApp, ist, spawn_app};

const KEY: &str = "NSE_EQ|INE669E01016";

/// Tuesday 2026-02-10.
fn tuesday() -> Date {
    let d = date(2026, 2, 10);
    assert_eq!(d.weekday(), Weekday::Tuesday);
    d
}

async fn app(at: jiff::Timestamp) -> TestApp {
    spawn_app(
        Setup::at(at)
            .sim(|c| c.feed_tick_interval_ms = 50)
            .settings(|s| {
                s.relay.upstream.backoff_min = Duration::from_millis(100);
                s.relay.upstream.backoff_max = Duration::from_millis(500);
            }),
    )
    .await
}

struct Feed {
    pool: FeedPool,
    events: broadcast::Receiver<UpstreamEvent>,
}

impl Feed {
    fn open(relay: &Upstreams) -> Self {
        let pool = relay.pool(ACCOUNT).unwrap();
        let events = pool.events();
        Self { pool, events }
    }

    async fn until<T>(&mut self, mut pick: impl FnMut(&UpstreamEvent) -> Option<T>) -> T {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.events.recv().await {
                    Ok(e) => {
                        if let Some(t) = pick(&e) {
                            return t;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(e) => panic!("event stream ended: {e}"),
                }
            }
        })
        .await
        .expect("the awaited feed event never came")
    }

    async fn tick(&mut self) {
        self.until(|e| match e {
            UpstreamEvent::Frame { kind, data, .. } if *kind != FeedType::MarketInfo => {
                feed::decode(data).unwrap().feed(KEY).map(|_| ())
            }
            _ => None,
        })
        .await
    }

    async fn down(&mut self) -> DownCause {
        self.until(|e| match e {
            UpstreamEvent::Down { cause, .. } => Some(*cause),
            _ => None,
        })
        .await
    }

    async fn up(&mut self) -> bool {
        self.until(|e| match e {
            UpstreamEvent::Up { reconnect, .. } => Some(*reconnect),
            _ => None,
        })
        .await
    }
}

#[tokio::test]
async fn the_feed_waits_out_the_rollover_and_reconnects_on_the_renewed_token() {
    let tue = tuesday();
    let wed = tue.tomorrow().unwrap();
    let h = app(ist(tue, 10, 0, 0)).await;
    let (first, _) = h.wait_for_renewal(None).await;
    let relay = Upstreams::new(h.engine.clone());
    let mut feed = Feed::open(&relay);
    let consumer = feed.pool.consumer();
    consumer.subscribe(SubscriptionMode::Ltpc, &[KEY]).unwrap();
    assert!(!feed.up().await);
    feed.tick().await;

    // 03:30: the token dies; Upstox closes its socket and the feed waits for a token
    // without asking for an early renewal.
    h.clock.set(ist(wed, 3, 30, 0));
    assert_eq!(feed.down().await, DownCause::Closed);
    h.let_daemon_run().await;
    assert_eq!(
        h.counters().logins,
        1,
        "no reactive renewal before the window"
    );

    // The window's renewal: the feed reconnects with the new token.
    let plan = h.engine.status(ACCOUNT).unwrap().next.unwrap();
    h.clock.set(plan.at);
    let (renewed, _) = h.wait_for_renewal(Some(&first.fingerprint)).await;
    assert_ne!(renewed.fingerprint, first.fingerprint);
    assert!(feed.up().await, "reconnected");
    feed.tick().await;
    let c = h.counters();
    assert_eq!(c.feed_connections_opened, 2);
    assert_eq!(c.feed_connections_open, 1);
    assert_eq!(c.logins, 2);
    relay.shutdown();
}

#[tokio::test]
async fn a_renewal_while_streaming_moves_the_feed_to_the_new_token_at_once() {
    let h = app(ist(tuesday(), 10, 0, 0)).await;
    let (first, _) = h.wait_for_renewal(None).await;
    let relay = Upstreams::new(h.engine.clone());
    let mut feed = Feed::open(&relay);
    let consumer = feed.pool.consumer();
    consumer.subscribe(SubscriptionMode::Full, &[KEY]).unwrap();
    feed.tick().await;

    h.engine.renew_now(ACCOUNT, Actor::Cli).await;
    let renewed = h.wait_for_new_token(Some(&first.fingerprint)).await;
    assert_ne!(renewed.fingerprint, first.fingerprint);
    assert_eq!(feed.down().await, DownCause::Rotation);
    assert!(feed.up().await);
    feed.tick().await;
    assert_eq!(h.counters().feed_connections_opened, 2);
    relay.shutdown();
}

#[tokio::test]
async fn a_token_revoked_at_upstox_is_renewed_reactively_and_the_feed_resumes() {
    let h = app(ist(tuesday(), 10, 0, 0)).await;
    let (first, _) = h.wait_for_renewal(None).await;
    let relay = Upstreams::new(h.engine.clone());
    let mut feed = Feed::open(&relay);
    let consumer = feed.pool.consumer();
    consumer.subscribe(SubscriptionMode::Ltpc, &[KEY]).unwrap();
    feed.tick().await;

    assert!(h.sim.state().revoke(first.token.expose()));
    // The socket is closed (1008); authorize then answers 401 and the engine renews
    // (reactively; a health check that happens to run meanwhile may get there first,
    // then the feed sees a rotation instead).
    let down = feed.down().await;
    assert!(
        matches!(down, DownCause::Closed | DownCause::Rotation),
        "{down:?}"
    );
    let renewed = h.wait_for_new_token(Some(&first.fingerprint)).await;
    assert!(feed.up().await);
    feed.tick().await;
    let started = h.events_of("renewal_started").await;
    assert!(
        started
            .iter()
            .any(|e| e.actor == "reactive" || e.actor == "health"),
        "{started:?}"
    );
    assert_ne!(renewed.fingerprint, first.fingerprint);
    assert!(h.counters().feed_token_closes <= 1);
    relay.shutdown();
}

#[tokio::test]
async fn an_unknown_account_and_a_disabled_relay_are_refused() {
    let h =
        spawn_app(Setup::at(ist(tuesday(), 10, 0, 0)).settings(|s| s.relay.enabled = false)).await;
    let relay = Upstreams::new(h.engine.clone());
    assert_eq!(relay.pool(ACCOUNT).unwrap_err(), RelayError::Disabled);
    let h = app(ist(tuesday(), 10, 0, 0)).await;
    let relay = Upstreams::new(h.engine.clone());
    let err = relay.pool("nope").unwrap_err();
    assert_eq!(err, RelayError::UnknownAccount("nope".into()));
    assert!(err.to_string().contains("nope"));
}

#[tokio::test]
async fn with_persist_ticks_the_feeds_ticks_and_connection_events_reach_the_store() {
    let h = spawn_app(
        Setup::at(ist(tuesday(), 10, 0, 0))
            .sim(|c| c.feed_tick_interval_ms = 50)
            .settings(|s| s.relay.persist_ticks = true),
    )
    .await;
    h.wait_for_renewal(None).await;
    let relay = Upstreams::new(h.engine.clone());
    let mut feed = Feed::open(&relay);
    let consumer = feed.pool.consumer();
    consumer.subscribe(SubscriptionMode::Full, &[KEY]).unwrap();
    feed.tick().await;
    let store = h.engine.store().clone();
    let query = upkeep_store::TickQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        instrument: Some(KEY.into()),
        limit: 10,
    };
    let ticks = common::eventually_async("stored ticks", || {
        let (store, query) = (store.clone(), query.clone());
        async move {
            let t = store.ticks(&query).await.unwrap();
            (!t.is_empty()).then_some(t)
        }
    })
    .await;
    let t = &ticks[0];
    assert_eq!(t.account, ACCOUNT);
    assert!(t.ltp > 0.0);
    assert!(
        t.volume.is_some() && t.bid_price.is_some() && t.ask_qty.is_some(),
        "{t:?}"
    );
    let events = store.feed_connection_events(0, i64::MAX).await.unwrap();
    assert_eq!(events[0].kind, "up");
    assert_eq!(events[0].cause, "open");
    relay.shutdown();
}
