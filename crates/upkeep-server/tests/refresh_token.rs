//! The `refresh_token` strategy end to end: the daemon renews through the simulator's
//! generic OAuth 2 token service (`POST /sim/oauth2/token`, RFC 6749 section 6), keeps
//! the rotated refresh token, and stops at once on a refresh token that is refused.
//!
//! Self-contained: the simulator and the daemon share one frozen simulator clock, the
//! store is SQLite in a temp dir. Real time is only spent waiting (bounded) for the
//! daemon to react.

// Test helpers may unwrap like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Time, date};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upkeep_core::expiry::ist_timestamp;
use upkeep_core::plan::Action;
use upkeep_core::{Clock, Secret};
use upkeep_server::engine::AccountStatus;
use upkeep_server::settings::{AccountSettings, DaemonSettings, RefreshSettings, StrategyKind};
use upkeep_server::{Actor, App, CurrentToken, Engine, EngineDeps, RenewOutcome};
use upkeep_sim::{Counters, Credentials, SimClock, SimConfig, SimHandle};
use upkeep_store::MasterKey;
use upkeep_upstox::{Hosts, UpstoxClient};

const ACCOUNT: &str = "main";
/// How often the daemon re-reads the clock (real time).
const POLL: Duration = Duration::from_millis(20);
/// The longest a test waits (real time) for the daemon to do something.
const PATIENCE: Duration = Duration::from_secs(15);

/// The simulator's clock seen through the daemon's `Clock` trait: moving one moves both.
struct SharedClock(SimClock);

impl Clock for SharedClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

/// `d` at `h:m` IST.
fn ist(d: Date, h: i8, m: i8) -> Timestamp {
    ist_timestamp(d, Time::constant(h, m, 0, 0)).unwrap()
}

/// A Tuesday; the Wednesday and Thursday after it are trading days too.
const TUESDAY: Date = date(2026, 2, 3);
const WEDNESDAY: Date = date(2026, 2, 4);
const THURSDAY: Date = date(2026, 2, 5);

/// The simulator and what outlives one daemon run: the store (a temp dir) and its key.
struct World {
    sim: SimHandle,
    clock: SimClock,
    creds: Credentials,
    token_url: String,
    http: reqwest::Client,
    key: MasterKey,
    dir: tempfile::TempDir,
}

/// A running daemon.
struct Daemon {
    engine: Engine,
    clock: SimClock,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl World {
    /// Starts the simulator, its clock frozen at Tuesday 10:00 IST; the store is empty.
    async fn start() -> World {
        let clock = SimClock::frozen(ist(TUESDAY, 10, 0));
        let mut config = SimConfig::demo();
        config.rate_limits = false;
        let sim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = upkeep_sim::spawn_with_clock(config, clock.clone(), sim_listener)
            .await
            .unwrap();
        let creds = sim.credentials()[0].clone();
        let token_url = format!("{}/sim/oauth2/token", sim.base_url());
        World {
            sim,
            clock,
            creds,
            token_url,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            key: MasterKey::generate(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A refresh token for the account's app, as the token service's owner would hand out.
    fn mint(&self) -> String {
        self.sim
            .state()
            .issue_refresh_token(&self.creds.client_id)
            .unwrap()
    }

    /// Starts a daemon with one account that renews only through `refresh_token`,
    /// configured with `refresh_token`.
    async fn daemon(&self, refresh_token: &str) -> Daemon {
        let store = upkeep_store::open_store(
            &format!("sqlite://{}", self.dir.path().join("upkeep.db").display()),
            self.key.clone(),
        )
        .await
        .unwrap();
        let creds = &self.creds;
        let mut settings = DaemonSettings::new(vec![AccountSettings {
            id: ACCOUNT.into(),
            env: "live".into(),
            client_id: creds.client_id.clone(),
            client_secret: Secret::new(creds.client_secret.clone()),
            redirect_uri: creds.redirect_uri.clone(),
            user_id: Some(creds.ucc.clone()),
            strategies: vec![StrategyKind::RefreshToken],
            totp: None,
            refresh: Some(RefreshSettings {
                token_url: self.token_url.clone(),
                refresh_token: Some(Secret::new(refresh_token.to_owned())),
            }),
            trades_weekends: false,
            trades_holidays: false,
        }]);
        settings.poll = POLL;
        // These tests move the clock to 05:30:00 exactly: no per-account jitter.
        settings.policy.max_jitter = jiff::SignedDuration::ZERO;
        let daemon_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        settings.public_url = format!("http://{}", daemon_listener.local_addr().unwrap());
        let base = url::Url::parse(&self.sim.base_url()).unwrap();
        let app = App::build(
            EngineDeps {
                settings,
                clock: Arc::new(SharedClock(self.clock.clone())),
                store,
                upstox: UpstoxClient::new(Hosts::all(&base)).unwrap(),
                alerter: None,
                master_key: self.key.clone(),
            },
            daemon_listener,
        )
        .await
        .unwrap();
        let engine = app.engine().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Daemon {
            engine,
            clock: self.clock.clone(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn counters(&self) -> Counters {
        self.sim.state().counters()
    }

    /// Presents `refresh_token` to the simulator's token service as the app would.
    async fn try_refresh(&self, refresh_token: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", self.creds.client_id.as_str()),
                ("client_secret", self.creds.client_secret.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Asserts that the token service refuses `refresh_token` as used, revoked or unknown.
    async fn assert_refused(&self, refresh_token: &str) {
        let (status, body) = self.try_refresh(refresh_token).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &Value::from("invalid_grant")),
            "{body}"
        );
    }

    async fn stop(self) {
        self.sim.shutdown().await;
    }
}

impl Daemon {
    fn status(&self) -> AccountStatus {
        self.engine.status(ACCOUNT).unwrap()
    }

    /// Waits until `f` holds for the account's status.
    async fn status_until(&self, what: &str, f: impl Fn(&AccountStatus) -> bool) -> AccountStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {what}; status: {s:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a current token whose fingerprint is not `not`.
    async fn token_other_than(&self, not: Option<&str>) -> Arc<CurrentToken> {
        let mut rx = self.engine.subscribe(ACCOUNT).unwrap();
        let wait = async {
            loop {
                if let Some(c) = rx.borrow_and_update().clone()
                    && Some(c.fingerprint.as_str()) != not
                {
                    return c;
                }
                rx.changed().await.unwrap();
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no new token; status: {:?}", self.status()))
    }

    /// Sets the clock and waits until the supervisor has planned something for the new
    /// time or later (a plan of `at` itself, or `want` when given).
    async fn move_clock_to(&self, at: Timestamp, want: Option<Timestamp>) -> AccountStatus {
        self.clock.set(at);
        self.status_until("a plan made after the clock moved", |s| {
            s.next.as_ref().is_some_and(|p| match want {
                Some(w) => p.at == w,
                None => p.at >= at,
            })
        })
        .await
    }

    async fn stored_refresh_token(&self) -> String {
        self.engine
            .store()
            .get_secret(ACCOUNT, "refresh_token")
            .await
            .unwrap()
            .expect("the daemon keeps the rotated refresh token")
            .expose()
            .to_owned()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

#[tokio::test]
async fn renews_through_the_token_service_and_uses_the_rotated_refresh_token_next_morning() {
    let w = World::start().await;
    let initial = w.mint();
    let d = w.daemon(&initial).await;

    // No token at start: renew now.
    let first = d.token_other_than(None).await;
    assert_eq!(first.source, "refresh_token");
    assert_eq!(first.user_id.as_deref(), Some(w.creds.ucc.as_str()));
    assert_eq!(first.expires_at, ist(WEDNESDAY, 3, 30));
    assert_eq!(w.counters().oauth2_grants, 1);
    d.engine
        .upstox()
        .profile(&first.token)
        .await
        .expect("the simulator accepts the token the daemon stored");
    // The daemon used the configured refresh token up and kept the rotated one.
    let rotated = d.stored_refresh_token().await;
    assert_ne!(rotated, initial);
    w.assert_refused(&initial).await;

    // Past the 03:30 rollover the token is dead, but the window has not opened: the
    // plan moves from the jittered time to the window start (05:30 sharp).
    let s = d
        .move_clock_to(ist(WEDNESDAY, 3, 31), Some(ist(WEDNESDAY, 5, 30)))
        .await;
    let plan = s.next.unwrap();
    assert_eq!(plan.action, Action::RenewAt, "{plan:?}");
    assert_eq!(
        w.counters().oauth2_grants,
        1,
        "no renewal before the window"
    );

    // In the window: renewed with the rotated refresh token (the initial one is dead).
    w.clock.set(plan.at);
    let second = d.token_other_than(Some(&first.fingerprint)).await;
    assert_eq!(second.source, "refresh_token");
    assert_eq!(second.expires_at, ist(THURSDAY, 3, 30));
    let c = w.counters();
    assert_eq!((c.oauth2_grants, c.oauth2_refused), (2, 1), "{c:?}");
    // The rotated token was presented (now used up) and rotated again.
    w.assert_refused(&rotated).await;
    let latest = d.stored_refresh_token().await;
    assert_ne!(latest, rotated);
    let (status, body) = w.try_refresh(&latest).await;
    assert_eq!(
        status, 200,
        "the stored refresh token is the live one: {body}"
    );
    d.stop().await;
    w.stop().await;
}

#[tokio::test]
async fn a_refused_refresh_token_disables_the_strategy_without_retrying() {
    const BAD: &str = "rt_this_one_was_never_issued";
    let w = World::start().await;
    let d = w.daemon(BAD).await;

    let s = d
        .status_until("the strategy disabled and the renewal over", |s| {
            s.disabled.iter().any(|k| k == "refresh_token") && s.last_renewal.is_some()
        })
        .await;
    assert!(d.engine.current(ACCOUNT).is_none());
    assert_eq!(
        s.last_renewal.as_ref().map(|(_, _, r)| r.as_str()),
        Some("failed")
    );
    let c = w.counters();
    assert_eq!((c.oauth2_requests, c.oauth2_refused), (1, 1), "{c:?}");
    let events = d.engine.store().events(Some(ACCOUNT), 50).await.unwrap();
    let fatal = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.kind == "strategy_failed" && e.outcome == "fatal")
        .expect("the fatal failure is audited");
    assert!(
        fatal.detail.to_ascii_lowercase().contains("invalid_grant"),
        "{}",
        fatal.detail
    );
    assert!(!fatal.detail.contains(BAD), "the refresh token leaked");

    // Time passes, through the next morning's window: nothing retries by itself. With
    // no strategy left the plan is "manual needed" at the current time, so a plan of
    // `at` shows the supervisor has looked again.
    for at in [
        ist(TUESDAY, 12, 0),
        ist(WEDNESDAY, 5, 30),
        ist(WEDNESDAY, 5, 45),
        ist(WEDNESDAY, 9, 0),
    ] {
        let s = d.move_clock_to(at, None).await;
        assert_eq!(
            s.next.as_ref().map(|p| p.action),
            Some(Action::ManualNeeded)
        );
        assert_eq!(w.counters().oauth2_requests, 1, "retried by itself at {at}");
    }

    // A human asking again gets exactly one more attempt.
    let outcome = d.engine.renew(ACCOUNT, Actor::Cli).await;
    assert!(
        matches!(&outcome, RenewOutcome::Failed { reason } if reason.contains("refresh_token")),
        "{outcome:?}"
    );
    assert_eq!(w.counters().oauth2_requests, 2);
    d.stop().await;
    w.stop().await;
}

#[tokio::test]
async fn a_newly_configured_refresh_token_replaces_a_broken_stored_one() {
    let w = World::start().await;
    let d = w.daemon(&w.mint()).await;
    let first = d.token_other_than(None).await;
    let rotated = d.stored_refresh_token().await;
    d.stop().await;

    // The token service drops the chain (revoked); the user pastes a new refresh token
    // into the configuration and restarts the daemon.
    assert!(w.sim.state().revoke_refresh_token(&rotated));
    let pasted = w.mint();
    let d = w.daemon(&pasted).await;
    w.clock.set(ist(WEDNESDAY, 5, 30));
    let second = d.token_other_than(Some(&first.fingerprint)).await;
    assert_eq!(second.source, "refresh_token");
    assert_eq!(second.expires_at, ist(THURSDAY, 3, 30));
    w.assert_refused(&pasted).await;
    let latest = d.stored_refresh_token().await;
    assert!(latest != rotated && latest != pasted);
    d.stop().await;
    w.stop().await;
}
