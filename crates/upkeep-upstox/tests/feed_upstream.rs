//! The feed upstream (`feed::upstream::FeedPool`) against the project's simulator, on
//! loopback. Every test runs on a paused tokio clock (current-thread runtime): the
//! simulator's ticks and pings, the stall timeout and the backoff are all tokio timers,
//! so long waits cost no wall time. Assertions are about events and counters, never
//! about durations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{broadcast, watch};
use upkeep_core::{AccessToken, Clock};
use upkeep_sim::{FaultsPatch, Plan, SimClock, SimConfig, SimHandle, TokenKind};
use upkeep_upstox::feed::upstream::{
    ConnectionState, DownCause, FeedPool, SubscribeError, TokenSource, UpstreamConfig,
    UpstreamEvent,
};
use upkeep_upstox::feed::{self, FeedType, SubscriptionMode};
use upkeep_upstox::{Hosts, UpstoxClient};
use url::Url;

/// Generous, in virtual time: a hang fails fast.
const WAIT: Duration = Duration::from_secs(600);

/// 2026-02-05 11:30:10 IST, a trading morning.
fn morning() -> Timestamp {
    "2026-02-05T06:00:10Z".parse().unwrap()
}

struct SimTime(SimClock);

impl Clock for SimTime {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

struct Env {
    sim: SimHandle,
    ucc: String,
    tokens: watch::Sender<Option<AccessToken>>,
    refused: Arc<Mutex<Vec<String>>>,
    pool: FeedPool,
    events: broadcast::Receiver<UpstreamEvent>,
}

async fn start(plan: Plan, stall_timeout: Duration) -> Env {
    let mut config = SimConfig::demo();
    config.users[0].plan = plan;
    config.feed_tick_interval_ms = 1_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = upkeep_sim::spawn_with_clock(config, SimClock::frozen(morning()), listener)
        .await
        .unwrap();
    let ucc = sim.credentials()[0].ucc.clone();
    let base = Url::parse(&sim.base_url()).unwrap();
    let client = UpstoxClient::new(Hosts::all(&base)).unwrap();
    let token = AccessToken::new(sim.state().issue_token(&ucc, TokenKind::Daily).unwrap());
    let (tx, rx) = watch::channel(Some(token));
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&refused);
    let source = TokenSource::new(rx, move |t: AccessToken| {
        seen.lock().unwrap().push(t.fingerprint());
    });
    let config = UpstreamConfig {
        stall_timeout,
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(5),
        ..UpstreamConfig::default()
    };
    let pool = FeedPool::start(config, client, source, Arc::new(SimTime(sim.clock())));
    let events = pool.events();
    Env {
        sim,
        ucc,
        tokens: tx,
        refused,
        pool,
        events,
    }
}

impl Env {
    fn new_token(&self) -> AccessToken {
        AccessToken::new(
            self.sim
                .state()
                .issue_token(&self.ucc, TokenKind::Daily)
                .unwrap(),
        )
    }

    fn faults(&self, patch: FaultsPatch) {
        self.sim.state().patch_faults(patch).unwrap();
    }

    /// The next event that `pick` maps to `Some`, skipping others.
    async fn until<T>(&mut self, mut pick: impl FnMut(&UpstreamEvent) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
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
        .expect("the awaited event never came")
    }

    /// Waits until data frames have carried every key in `keys`.
    async fn data_for(&mut self, keys: &[&str]) {
        let mut missing: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
        self.until(|e| {
            if let UpstreamEvent::Frame { kind, data, .. } = e
                && *kind != FeedType::MarketInfo
            {
                let frame = feed::decode(data).unwrap();
                for (k, _) in &frame.feeds {
                    missing.remove(*k);
                }
            }
            missing.is_empty().then_some(())
        })
        .await;
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

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("NSE_EQ|INE{prefix}{i:05}"))
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(start_paused = true)]
async fn three_consumers_on_a_normal_plan_share_two_upstream_connections() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let (a, b, c) = (
        env.pool.consumer(),
        env.pool.consumer(),
        env.pool.consumer(),
    );
    let (ka, kb, kc) = (keys("A", 2), keys("B", 2), keys("C", 2));
    a.subscribe(SubscriptionMode::Ltpc, &ka).unwrap();
    b.subscribe(SubscriptionMode::Full, &kb).unwrap();
    c.subscribe(SubscriptionMode::Ltpc, &kc).unwrap();
    let all: Vec<String> = [ka, kb, kc].concat();
    env.data_for(&refs(&all)).await;

    let health = env.pool.health();
    assert_eq!(health.allowed_connections, 2);
    assert!(!health.plus);
    let live: Vec<_> = health
        .connections
        .iter()
        .filter(|c| c.state == ConnectionState::Live)
        .collect();
    assert_eq!(live.len(), 2, "{health:?}");
    assert_eq!(live[0].keys.total() + live[1].keys.total(), 6);
    assert!(live.iter().all(|c| c.keys.total() == 3), "spread evenly");
    let counters = env.sim.state().counters();
    assert_eq!(counters.feed_connections_open, 2);
    assert_eq!(counters.feed_connections_peak, 2);
    assert_eq!(counters.feed_connections_refused, 0);
}

#[tokio::test(start_paused = true)]
async fn one_consumers_unsubscribe_keeps_a_key_another_still_wants() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let (a, b) = (env.pool.consumer(), env.pool.consumer());
    let key = ["NSE_EQ|INE669E01016"];
    a.subscribe(SubscriptionMode::Ltpc, &key).unwrap();
    b.subscribe(SubscriptionMode::Ltpc, &key).unwrap();
    env.data_for(&key).await;
    a.unsubscribe(&key);
    assert!(a.subscriptions().is_empty());
    // Ticks keep coming for b (two in a row, after the unsubscribe).
    env.data_for(&key).await;
    env.data_for(&key).await;
    assert_eq!(env.pool.health().keys, 1);

    // The last consumer leaving closes the upstream socket.
    drop(b);
    assert_eq!(env.down().await, DownCause::Unused);
    assert_eq!(env.pool.health().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn the_upstream_recovers_when_the_sim_drops_the_socket() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let c = env.pool.consumer();
    let key = ["NSE_EQ|INE669E01016"];
    c.subscribe(SubscriptionMode::Ltpc, &key).unwrap();
    assert!(!env.up().await, "first open is not a reconnect");
    env.data_for(&key).await;
    env.faults(FaultsPatch {
        feed_drop: Some(true),
        ..FaultsPatch::default()
    });
    assert_eq!(env.down().await, DownCause::Closed);
    env.faults(FaultsPatch {
        feed_drop: Some(false),
        ..FaultsPatch::default()
    });
    assert!(env.up().await, "reconnected");
    env.data_for(&key).await;
    let h = &env.pool.health().connections;
    assert!(h.iter().map(|c| c.reconnects).sum::<u64>() >= 1);
    assert!(h.iter().any(|c| c.last_error.is_some()));
}

#[tokio::test(start_paused = true)]
async fn a_silent_socket_is_a_stall_and_is_reopened() {
    let mut env = start(Plan::Normal, Duration::from_secs(5)).await;
    let c = env.pool.consumer();
    let key = ["NSE_EQ|INE669E01016"];
    c.subscribe(SubscriptionMode::Ltpc, &key).unwrap();
    env.data_for(&key).await;
    env.faults(FaultsPatch {
        feed_stall: Some(true),
        ..FaultsPatch::default()
    });
    assert_eq!(env.down().await, DownCause::Stall);
    env.faults(FaultsPatch {
        feed_stall: Some(false),
        ..FaultsPatch::default()
    });
    assert!(env.up().await);
    env.data_for(&key).await;
}

#[tokio::test(start_paused = true)]
async fn a_quiet_market_with_pings_only_is_not_a_stall() {
    let mut env = start(Plan::Normal, Duration::from_secs(5)).await;
    let c = env.pool.consumer();
    let key = ["NSE_EQ|INE669E01016"];
    c.subscribe(SubscriptionMode::Ltpc, &key).unwrap();
    env.data_for(&key).await;
    env.faults(FaultsPatch {
        feed_quiet: Some(true),
        ..FaultsPatch::default()
    });
    let before =
        env.pool.health().connections[0].messages + env.pool.health().connections[1].messages;
    // Twelve stall timeouts of pings only.
    let quiet = tokio::time::timeout(Duration::from_secs(60), env.down()).await;
    assert!(quiet.is_err(), "a quiet socket was dropped: {quiet:?}");
    let h = env.pool.health();
    let after: u64 = h.connections.iter().map(|c| c.messages).sum();
    assert!(after > before + 10, "pings counted as life");
    assert_eq!(h.connections.iter().map(|c| c.reconnects).sum::<u64>(), 0);
    env.faults(FaultsPatch {
        feed_quiet: Some(false),
        ..FaultsPatch::default()
    });
    env.data_for(&key).await;
    assert_eq!(env.sim.state().counters().feed_connections_opened, 1);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_asks_for_a_renewal_and_the_new_token_reconnects() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let c = env.pool.consumer();
    let key = ["NSE_EQ|INE669E01016"];
    c.subscribe(SubscriptionMode::Ltpc, &key).unwrap();
    env.data_for(&key).await;
    let old = env.tokens.borrow().clone().unwrap();
    assert!(env.sim.state().revoke(old.expose()));
    // The sim closes the token-bound socket (1008); authorize then answers 401.
    assert_eq!(env.down().await, DownCause::Closed);
    tokio::time::timeout(WAIT, async {
        while env.refused.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("no renewal was asked for");
    assert_eq!(*env.refused.lock().unwrap(), vec![old.fingerprint()]);
    // The engine renews: the pool reconnects with the new token.
    let fresh = env.new_token();
    env.tokens.send_replace(Some(fresh));
    assert!(env.up().await);
    env.data_for(&key).await;
    assert_eq!(env.sim.state().counters().feed_token_closes, 1);
    assert_eq!(env.refused.lock().unwrap().len(), 1, "asked once per token");
}

#[tokio::test(start_paused = true)]
async fn a_rotation_reconnects_at_once_with_the_new_token() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let c = env.pool.consumer();
    let key = ["NSE_EQ|INE669E01016"];
    c.subscribe(SubscriptionMode::Full, &key).unwrap();
    env.data_for(&key).await;
    let fresh = env.new_token();
    env.tokens.send_replace(Some(fresh));
    assert_eq!(env.down().await, DownCause::Rotation);
    assert!(env.up().await);
    env.data_for(&key).await;
    let counters = env.sim.state().counters();
    assert_eq!(counters.feed_connections_opened, 2);
    assert_eq!(
        counters.feed_connections_peak, 1,
        "the old socket closed first"
    );
    assert!(env.refused.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn keys_beyond_the_plans_limits_are_refused_with_a_clear_error() {
    let mut env = start(Plan::Plus, Duration::from_secs(30)).await;
    let c = env.pool.consumer();
    // full_d30: 50 keys per connection alone, 5 connections on Plus.
    let many = keys("D", 250);
    c.subscribe(SubscriptionMode::FullD30, &many).unwrap();
    let err = c
        .subscribe(SubscriptionMode::FullD30, &keys("E", 1))
        .unwrap_err();
    assert!(matches!(err, SubscribeError::Overflow { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("full_d30") && msg.contains("50") && msg.contains("unsubscribe"),
        "{msg}"
    );
    // Every connection got its share and the sim accepted all five.
    for _ in 0..5 {
        env.up().await;
    }
    let h = env.pool.health();
    assert!(h.plus);
    assert_eq!(h.allowed_connections, 5);
    assert!(h.connections.iter().all(|c| c.keys.full_d30 == 50), "{h:?}");
    assert_eq!(env.sim.state().counters().feed_connections_open, 5);
    assert_eq!(c.subscriptions().len(), 250);
}

#[tokio::test(start_paused = true)]
async fn full_d30_on_a_normal_plan_is_refused() {
    let env = start(Plan::Normal, Duration::from_secs(30)).await;
    let c = env.pool.consumer();
    let err = c
        .subscribe(SubscriptionMode::FullD30, &["NSE_FO|45450"])
        .unwrap_err();
    assert_eq!(err, SubscribeError::PlusOnly);
    assert!(err.to_string().contains("Upstox Plus"));
    let err = c
        .subscribe(SubscriptionMode::Ltpc, &["not a key"])
        .unwrap_err();
    assert!(matches!(err, SubscribeError::InvalidKey(_)));
}

#[tokio::test(start_paused = true)]
async fn a_connection_refused_for_the_users_limit_backs_off_without_a_renewal_and_gets_in_later() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let a = env.pool.consumer();
    let ka = keys("A", 2);
    a.subscribe(SubscriptionMode::Ltpc, &ka).unwrap();
    env.data_for(&refs(&ka)).await;
    // Another program of the same user (a second pool on the same token).
    let base = Url::parse(&env.sim.base_url()).unwrap();
    let (_tx, rx) = watch::channel(env.tokens.borrow().clone());
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&refused);
    let other = FeedPool::start(
        UpstreamConfig {
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(2),
            ..UpstreamConfig::default()
        },
        UpstoxClient::new(Hosts::all(&base)).unwrap(),
        TokenSource::new(rx, move |t: AccessToken| {
            seen.lock().unwrap().push(t.fingerprint())
        }),
        Arc::new(SimTime(env.sim.clock())),
    );
    let mut other_events = other.events();
    let b = other.consumer();
    b.subscribe(SubscriptionMode::Ltpc, &["NSE_EQ|INE002A01018"])
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while env.sim.state().counters().feed_connections_refused < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the third connection was never refused");
    let h = other.health();
    let err = h.connections[0].last_error.clone().unwrap_or_default();
    assert!(
        err.contains("403") && err.contains("SIM_FEED_CONNECTION_LIMIT"),
        "{err}"
    );
    assert!(
        refused.lock().unwrap().is_empty(),
        "a limit is not a token problem"
    );

    // The first pool gives one connection up: the other program gets in.
    a.unsubscribe(&ka[..1]);
    let up = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(UpstreamEvent::Up { .. }) = other_events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(up.is_ok(), "the other pool never connected");
    assert_eq!(env.sim.state().counters().feed_connections_peak, 2);
    other.shutdown();
}

impl Env {
    /// The simulator's user moves to `plan` (its next tokens carry `isPlusPlan`).
    fn set_plan(&self, plan: Plan) {
        let c = self.sim.credentials()[0].clone();
        assert_eq!(c.ucc, self.ucc);
        let user = upkeep_sim::UserConfig {
            ucc: c.ucc,
            name: "Plan Changer".into(),
            email: "plan@example.com".into(),
            mobile: c.mobile,
            pin: c.pin,
            totp_secret: c.totp_secret,
            plan,
        };
        self.sim.state().add_user(user).unwrap();
    }

    /// Waits (in virtual time) until the pool's health satisfies `ok`.
    async fn health_until(
        &self,
        what: &str,
        ok: impl Fn(&upkeep_upstox::feed::upstream::PoolHealth) -> bool,
    ) {
        let waited = tokio::time::timeout(WAIT, async {
            while !ok(&self.pool.health()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{what}: {:?}", self.pool.health());
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_on_another_plan_resizes_the_pool_and_spreads_the_keys_over_it() {
    let mut env = start(Plan::Normal, Duration::from_secs(30)).await;
    let c = env.pool.consumer();
    let ks = keys("P", 10);
    c.subscribe(SubscriptionMode::Ltpc, &ks).unwrap();
    env.data_for(&refs(&ks)).await;
    assert_eq!(env.sim.state().counters().feed_connections_open, 2);

    // A renewal brings an Upstox Plus token: five connections, two keys each.
    env.set_plan(Plan::Plus);
    env.tokens.send_replace(Some(env.new_token()));
    env.health_until("five live connections with two keys each", |h| {
        h.plus
            && h.allowed_connections == 5
            && h.connections
                .iter()
                .all(|c| c.state == ConnectionState::Live && c.keys.total() == 2)
    })
    .await;
    env.data_for(&refs(&ks)).await;
    let counters = env.sim.state().counters();
    assert_eq!(counters.feed_connections_open, 5);
    assert_eq!(counters.feed_connections_refused, 0);

    // Back to a normal plan: the keys gather on two connections, the others close.
    env.set_plan(Plan::Normal);
    env.tokens.send_replace(Some(env.new_token()));
    env.health_until("two live connections carrying every key", |h| {
        !h.plus
            && h.allowed_connections == 2
            && h.unplaced == 0
            && h.connections[..2]
                .iter()
                .all(|c| c.state == ConnectionState::Live && c.keys.total() == 5)
            && h.connections[2..]
                .iter()
                .all(|c| c.state == ConnectionState::Idle && c.keys.total() == 0)
    })
    .await;
    // Each connection beyond the two ended its gap as unused: no Up will come for it.
    let mut downs: Vec<(usize, DownCause)> = Vec::new();
    while let Ok(e) = env.events.try_recv() {
        if let UpstreamEvent::Down {
            connection, cause, ..
        } = e
        {
            downs.push((connection, cause));
        }
    }
    for i in 2..5 {
        let mine: Vec<DownCause> = downs
            .iter()
            .filter(|(c, _)| *c == i)
            .map(|(_, d)| *d)
            .collect();
        assert_eq!(
            mine.last(),
            Some(&DownCause::Unused),
            "connection {i}: {downs:?}"
        );
    }
    // Every key streams again (frames from now on).
    env.data_for(&refs(&ks)).await;
    assert_eq!(env.sim.state().counters().feed_connections_open, 2);
    // New keys stay within the two.
    let more = keys("Q", 4);
    c.subscribe(SubscriptionMode::Ltpc, &more).unwrap();
    env.data_for(&refs(&more)).await;
    let h = env.pool.health();
    assert_eq!(
        h.connections[0].keys.total() + h.connections[1].keys.total(),
        14
    );
    assert_eq!(env.sim.state().counters().feed_connections_open, 2);
}
