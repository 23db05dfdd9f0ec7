//! Test harness for the renewal engine: the project's Upstox simulator and the daemon in
//! one process, sharing one movable clock, with a SQLite store in a temp dir and an
//! optional webhook receiver that collects the alerts the daemon sends.
//!
//! Time: the simulator clock starts frozen; tests move it (`set`, `advance`) or let it
//! run fast (`set_speed`). Real time is only spent waiting for the daemon to react
//! (bounded polls), never for simulated hours.

// Each test binary uses part of the harness; helpers may unwrap.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use jiff::civil::{Date, Time};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upkeep_core::expiry::{inspect, ist_timestamp};
use upkeep_core::{AccessToken, Clock, Secret};
use upkeep_server::alerts::{AlertPolicy, Alerter, WebhookFormat, WebhookTarget};
use upkeep_server::settings::{AccountSettings, DaemonSettings, StrategyKind, TotpSettings};
use upkeep_server::{App, CurrentToken, Engine, EngineDeps};
use upkeep_sim::{
    AppConfig, Counters, Credentials, FaultsPatch, SimClock, SimConfig, SimHandle, TokenKind,
};
use upkeep_store::{AuditEvent, MasterKey, NewToken, TokenStore};
use upkeep_upstox::{Hosts, UpstoxClient};

/// The account every harness configures.
pub const ACCOUNT: &str = "main";
/// How often the daemon re-reads the clock (real time).
pub const POLL: Duration = Duration::from_millis(20);
/// The longest a test waits (real time) for the daemon to do something.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A base32 seed that is not the simulated user's.
pub const WRONG_TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The simulator's clock seen through the daemon's `Clock` trait: moving one moves both.
pub struct SharedClock(pub SimClock);

impl Clock for SharedClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

/// `date` at `h:m:s` IST.
pub fn ist(date: Date, h: i8, m: i8, s: i8) -> Timestamp {
    ist_timestamp(date, Time::constant(h, m, s, 0)).unwrap()
}

/// A change to the daemon's settings.
type Tweak = Box<dyn FnOnce(&mut DaemonSettings) + Send>;
/// A change to the simulator's configuration.
type SimTweak = Box<dyn FnOnce(&mut SimConfig) + Send>;

/// What the harness sets up.
pub struct Setup {
    start: Timestamp,
    strategies: Vec<StrategyKind>,
    wrong_totp: bool,
    seed_issued_at: Option<Timestamp>,
    alerts: bool,
    pin: Option<String>,
    latency_ms: u64,
    user_known: bool,
    busy_timeout: Option<Duration>,
    tweaks: Vec<Tweak>,
    sim_tweaks: Vec<SimTweak>,
    faults: FaultsPatch,
}

impl Setup {
    /// Starts the clock (frozen) at `start`; one account with the totp strategy and the
    /// right credentials, no token stored, no alerts.
    pub fn at(start: Timestamp) -> Self {
        Self {
            start,
            strategies: vec![StrategyKind::Totp],
            wrong_totp: false,
            seed_issued_at: None,
            alerts: false,
            pin: None,
            latency_ms: 0,
            user_known: true,
            busy_timeout: None,
            tweaks: Vec::new(),
            sim_tweaks: Vec::new(),
            faults: FaultsPatch::default(),
        }
    }

    pub fn strategies(mut self, s: &[StrategyKind]) -> Self {
        self.strategies = s.to_vec();
        self
    }

    /// Configure a TOTP seed that is not the user's.
    pub fn wrong_totp(mut self) -> Self {
        self.wrong_totp = true;
        self
    }

    /// Store a daily token the simulator issued at `issued_at` before the daemon starts.
    pub fn token_issued_at(mut self, issued_at: Timestamp) -> Self {
        self.seed_issued_at = Some(issued_at);
        self
    }

    /// Send alerts to a webhook receiver the harness starts.
    pub fn alerts(mut self) -> Self {
        self.alerts = true;
        self
    }

    /// Give the simulated user this PIN instead of a random 6-digit one.
    pub fn pin(mut self, pin: &str) -> Self {
        self.pin = Some(pin.to_owned());
        self
    }

    /// Make the simulator answer every Upstox call this much later, from the start.
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = ms;
        self
    }

    /// Open the daemon's SQLite store with this busy timeout (how long a write waits
    /// for another connection's lock before the store refuses it).
    pub fn store_busy_timeout(mut self, t: Duration) -> Self {
        self.busy_timeout = Some(t);
        self
    }

    /// Configure no `user_id`: the daemon must learn the account's user itself.
    pub fn unknown_user(mut self) -> Self {
        self.user_known = false;
        self
    }

    pub fn settings(mut self, f: impl FnOnce(&mut DaemonSettings) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    /// Inject these simulator faults before the daemon starts.
    pub fn faults(mut self, f: FaultsPatch) -> Self {
        self.faults = f;
        self
    }

    /// Change the simulator's configuration (applied after the harness's own).
    pub fn sim(mut self, f: impl FnOnce(&mut SimConfig) + Send + 'static) -> Self {
        self.sim_tweaks.push(Box::new(f));
        self
    }
}

/// A webhook receiver that keeps every alert body it is sent.
#[derive(Clone)]
pub struct AlertSink {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl AlertSink {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route("/alerts", post(receive_alert))
            .with_state(bodies.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/alerts"),
            bodies,
        }
    }

    /// Every alert received, oldest first.
    pub fn all(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|b| b["kind"] == kind)
            .collect()
    }

    /// Waits for the first alert of `kind` that `pick` accepts.
    pub async fn wait_for(&self, kind: &str, pick: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("a {kind} alert"), || {
            self.of_kind(kind).into_iter().find(|b| pick(b))
        })
        .await
    }
}

async fn receive_alert(
    State(bodies): State<Arc<Mutex<Vec<Value>>>>,
    body: axum::Json<Value>,
) -> StatusCode {
    bodies.lock().unwrap().push(body.0);
    StatusCode::OK
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// The simulator and a running daemon.
pub struct TestApp {
    pub sim: SimHandle,
    pub clock: SimClock,
    pub creds: Credentials,
    pub engine: Engine,
    pub daemon_url: String,
    pub alerts: Option<AlertSink>,
    /// A client of the test's own (profile calls against the simulator).
    pub upstox: UpstoxClient,
    /// The token stored before the daemon started, if any.
    pub seeded: Option<AccessToken>,
    spec: DaemonSpec,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

/// Starts the simulator (frozen clock at `setup.start`) and the daemon.
pub async fn spawn_app(setup: Setup) -> TestApp {
    let clock = SimClock::frozen(setup.start);
    // The daemon's listener first: the simulated app's redirect URI and notifier URL
    // point at it.
    let daemon_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon_url = format!("http://{}", daemon_listener.local_addr().unwrap());
    let mut config = SimConfig::demo();
    config.rate_limits = false;
    config.login_shortcut = false;
    if let Some(pin) = setup.pin {
        config.users[0].pin = pin;
    }
    config.apps[0].redirect_uri = format!("{daemon_url}/auth/upstox/callback");
    config.apps[0].notifier_url = Some(format!("{daemon_url}/webhooks/upstox/token"));
    for tweak in setup.sim_tweaks {
        tweak(&mut config);
    }
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = upkeep_sim::spawn_with_clock(config, clock.clone(), sim_listener)
        .await
        .unwrap();
    sim.state()
        .patch_faults(FaultsPatch {
            latency_ms: Some(setup.latency_ms),
            ..setup.faults
        })
        .unwrap();
    let creds = sim.credentials()[0].clone();
    let base = url::Url::parse(&sim.base_url()).unwrap();
    let upstox = UpstoxClient::new(Hosts::all(&base)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("upkeep.db").display());
    let key = MasterKey::generate();

    let seeded = match setup.seed_issued_at {
        Some(issued) => {
            clock.set(issued);
            let token = AccessToken::new(
                sim.state()
                    .issue_token(&creds.ucc, TokenKind::Daily)
                    .unwrap(),
            );
            clock.set(setup.start);
            let store = upkeep_store::open_store(&store_url, key.clone())
                .await
                .unwrap();
            store.upsert_account(ACCOUNT, "live", issued).await.unwrap();
            let info = inspect(&token).unwrap();
            store
                .put_token(
                    ACCOUNT,
                    NewToken {
                        token: token.clone(),
                        issued_at: info.issued_at,
                        expires_at: info.expires_at,
                        kind: "daily".into(),
                        source: "import".into(),
                    },
                    issued,
                )
                .await
                .unwrap();
            store.close().await;
            Some(token)
        }
        None => None,
    };

    let account = AccountSettings {
        id: ACCOUNT.into(),
        env: "live".into(),
        client_id: creds.client_id.clone(),
        client_secret: Secret::new(creds.client_secret.clone()),
        redirect_uri: creds.redirect_uri.clone(),
        user_id: setup.user_known.then(|| creds.ucc.clone()),
        strategies: setup.strategies,
        totp: Some(TotpSettings {
            mobile: creds.mobile.clone(),
            pin: Secret::new(creds.pin.clone()),
            secret: Secret::new(if setup.wrong_totp {
                WRONG_TOTP_SECRET.to_owned()
            } else {
                creds.totp_secret.clone()
            }),
        }),
        refresh: None,
        trades_weekends: false,
        trades_holidays: false,
    };
    let mut settings = DaemonSettings::new(Vec::new());
    settings.poll = POLL;
    // The tests move the clock to exact times (05:30:00): no per-account jitter unless
    // a test asks for it.
    settings.policy.max_jitter = jiff::SignedDuration::ZERO;
    for tweak in setup.tweaks {
        tweak(&mut settings);
    }
    let alerts = if setup.alerts {
        Some(AlertSink::start().await)
    } else {
        None
    };

    let spec = DaemonSpec {
        account,
        settings,
        key,
        store_url,
        busy_timeout: setup.busy_timeout,
    };
    let (engine, running) = start_daemon(
        &spec,
        &clock,
        &sim.base_url(),
        &daemon_url,
        alerts.as_ref(),
        daemon_listener,
    )
    .await;
    TestApp {
        sim,
        clock,
        creds,
        engine,
        daemon_url,
        alerts,
        upstox,
        seeded,
        spec,
        running: Some(running),
        _dir: dir,
    }
}

/// What a daemon is built from (kept to build another one on the same store).
struct DaemonSpec {
    account: AccountSettings,
    settings: DaemonSettings,
    key: MasterKey,
    store_url: String,
    busy_timeout: Option<Duration>,
}

/// Builds a daemon from `spec` on `listener` and runs it in a task.
async fn start_daemon(
    spec: &DaemonSpec,
    clock: &SimClock,
    sim_url: &str,
    daemon_url: &str,
    alerts: Option<&AlertSink>,
    listener: TcpListener,
) -> (Engine, Running) {
    let clock: Arc<dyn Clock> = Arc::new(SharedClock(clock.clone()));
    let mut settings = spec.settings.clone();
    settings.accounts = vec![spec.account.clone()];
    settings.public_url = daemon_url.to_owned();
    let alerter = alerts.map(|sink| {
        Alerter::new(
            vec![WebhookTarget {
                url: sink.url.clone(),
                format: WebhookFormat::Generic,
                chat_id: None,
            }],
            None,
            AlertPolicy {
                dedup_window: SignedDuration::ZERO,
                max_per_hour: 10_000,
                ..AlertPolicy::default()
            },
            clock.clone(),
            reqwest::Client::new(),
        )
        .unwrap()
    });
    let store: Arc<dyn TokenStore> = match spec.busy_timeout {
        Some(t) => Arc::new(
            upkeep_store::SqliteStore::open_with_timeout(&spec.store_url, spec.key.clone(), t)
                .await
                .unwrap(),
        ),
        None => upkeep_store::open_store(&spec.store_url, spec.key.clone())
            .await
            .unwrap(),
    };
    let base = url::Url::parse(sim_url).unwrap();
    let app = App::build(
        EngineDeps {
            settings,
            clock,
            store,
            upstox: UpstoxClient::new(Hosts::all(&base)).unwrap(),
            alerter,
            master_key: spec.key.clone(),
        },
        listener,
    )
    .await
    .unwrap();
    let engine = app.engine().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (engine, Running { stop, task })
}

impl TestApp {
    /// Stops the daemon and waits until `run_until_stopped` returns (at most 10 s).
    pub async fn stop(&mut self) -> std::io::Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), running.task)
            .await
            .expect("run_until_stopped returns within 10 s of the shutdown signal")
            .expect("the daemon task did not panic")
    }

    /// Stops the daemon and starts another one on the same store, with the account
    /// settings changed by `change` (settings are immutable while a daemon runs).
    pub async fn restart(&mut self, change: impl FnOnce(&mut AccountSettings)) {
        self.stop().await.unwrap();
        change(&mut self.spec.account);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.daemon_url = format!("http://{}", listener.local_addr().unwrap());
        // The simulated app follows the daemon to its new address.
        self.spec.account.redirect_uri = format!("{}/auth/upstox/callback", self.daemon_url);
        self.sim
            .state()
            .add_app(AppConfig {
                client_id: self.creds.client_id.clone(),
                client_secret: self.creds.client_secret.clone(),
                redirect_uri: self.spec.account.redirect_uri.clone(),
                notifier_url: Some(format!("{}/webhooks/upstox/token", self.daemon_url)),
                user: self.creds.ucc.clone(),
            })
            .unwrap();
        let (engine, running) = start_daemon(
            &self.spec,
            &self.clock,
            &self.sim.base_url(),
            &self.daemon_url,
            self.alerts.as_ref(),
            listener,
        )
        .await;
        self.engine = engine;
        self.running = Some(running);
    }

    /// Opens the store afresh (e.g. after the daemon stopped and closed its own).
    pub async fn open_store(&self) -> Arc<dyn TokenStore> {
        upkeep_store::open_store(&self.spec.store_url, self.spec.key.clone())
            .await
            .unwrap()
    }

    pub fn alerts(&self) -> &AlertSink {
        self.alerts.as_ref().expect("the setup asked for alerts")
    }

    pub fn counters(&self) -> Counters {
        self.sim.state().counters()
    }

    /// Waits for the daemon's first health check of the account's token (a profile
    /// call, made once the first calendar fetch is done), so a test that counts the
    /// simulator's API calls counts only its own.
    pub async fn first_health_check_done(&self) {
        if self.current().is_some() {
            eventually("the first health check", || {
                self.engine.status(ACCOUNT)?.last_check.map(|_| ())
            })
            .await;
        }
    }

    pub fn current(&self) -> Option<Arc<CurrentToken>> {
        self.engine.current(ACCOUNT)
    }

    /// Waits until the account's current token is one whose fingerprint is not `old`.
    pub async fn wait_for_new_token(&self, old: Option<&str>) -> Arc<CurrentToken> {
        eventually("a new current token", || {
            self.current()
                .filter(|c| Some(c.fingerprint.as_str()) != old)
        })
        .await
    }

    /// Waits until a renewal has replaced the token `old` and recorded its success;
    /// returns the new token and the `renewal_succeeded` audit event.
    pub async fn wait_for_renewal(&self, old: Option<&str>) -> (Arc<CurrentToken>, AuditEvent) {
        let token = self.wait_for_new_token(old).await;
        let detail = format!("token fp={}", token.fingerprint);
        let event = self
            .wait_for_event("renewal_succeeded", |e| e.detail == detail)
            .await;
        (token, event)
    }

    /// Waits until the account's supervisor has completed two more passes of its loop:
    /// the second one started after this call, so it saw the clock as it is now and
    /// did whatever was due. Used before asserting that something did NOT happen.
    pub async fn let_daemon_run(&self) {
        let before = self.engine.supervisor_passes(ACCOUNT);
        eventually("two passes of the supervisor", || {
            (self.engine.supervisor_passes(ACCOUNT) >= before + 2).then_some(())
        })
        .await;
    }

    /// The account's audit events, oldest first.
    pub async fn events(&self) -> Vec<AuditEvent> {
        let mut events: Vec<AuditEvent> = self
            .engine
            .store()
            .events(Some(ACCOUNT), 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        events.reverse();
        events
    }

    pub async fn events_of(&self, kind: &str) -> Vec<AuditEvent> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Waits until an audit event of `kind` accepted by `pick` exists.
    pub async fn wait_for_event(
        &self,
        kind: &str,
        pick: impl Fn(&AuditEvent) -> bool,
    ) -> AuditEvent {
        eventually_async(&format!("a {kind} audit event"), || async {
            self.events_of(kind).await.into_iter().find(|e| pick(e))
        })
        .await
    }

    /// The path of the daemon's SQLite database.
    pub fn db_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.spec.store_url.trim_start_matches("sqlite://"))
    }

    /// The simulator's base URL (`http://127.0.0.1:PORT`).
    pub fn sim_url(&self) -> String {
        self.sim.base_url()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
        }
    }
}

/// Polls `check` every 10 ms until it yields something; panics after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for an async check.
pub async fn eventually_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The body Upstox POSTs to the notifier webhook.
pub fn notifier_body(client_id: &str, user_id: &str, token: &str, now: Timestamp) -> Value {
    let expires = upkeep_core::expiry::next_rollover_after(now);
    serde_json::json!({
        "client_id": client_id,
        "user_id": user_id,
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": expires.as_millisecond().to_string(),
        "issued_at": now.as_millisecond().to_string(),
        "message_type": "access_token",
    })
}

/// A browser: no automatic redirects (each hop is checked), with cookies.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Collects everything a `fmt` subscriber writes (for tests that check what is logged).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
