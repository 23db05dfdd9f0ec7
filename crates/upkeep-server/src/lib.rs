//! # upkeep-server
//!
//! The upkeep daemon as a library. [`App::build`] takes the settings, a bound
//! listener, a clock, a store and an Upstox client; [`App::run_until_stopped`] runs
//! the renewal supervisors and the HTTP endpoints until the shutdown future resolves.
//!
//! - [`engine`]: supervisor per account, single-flight renewals, health checks, the
//!   in-memory current token and the reactive trigger.
//! - [`strategies`]: totp, token_request, oauth, refresh_token, static.
//! - [`http`]: `/healthz`, `POST /webhooks/upstox/token`, `/auth/upstox/login`,
//!   `/auth/upstox/callback`.
//! - [`gateway`]: the Upstox API gateway at `/upstox/...` (token swap, reactive
//!   renewal, usage).
//! - [`alerts`]: webhook (generic, Slack, Telegram) and SMTP alerts, de-duplicated and
//!   rate-limited.

pub mod alerts;
pub mod api;
pub mod clock;
pub mod dashboard;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod oauth_state;
pub mod relay;
pub mod settings;
mod strategies;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use clock::SystemClock;
pub use engine::calendar::{CalendarSource, CalendarView, resolve_calendar};
pub use engine::{
    Actor, CurrentToken, Engine, EngineDeps, EngineEvent, RecordedCheck, RecordedView,
    RejectReason, ReloadSummary, Reloader, RenewOutcome,
};
pub use settings::{AccountSettings, DaemonSettings, StrategyKind};

/// The daemon: engine + HTTP listener.
pub struct App {
    engine: Engine,
    relay: relay::Upstreams,
    listener: tokio::net::TcpListener,
    local_key: Option<[u8; 32]>,
}

impl App {
    /// Loads the accounts' tokens into memory and prepares the routes. Starts nothing.
    pub async fn build(
        deps: EngineDeps,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, upkeep_store::StoreError> {
        let engine = Engine::new(deps).await?;
        Ok(Self {
            relay: relay::Upstreams::new(engine.clone()),
            engine,
            listener,
            local_key: None,
        })
    }

    /// Accepts the key whose SHA-256 digest is `digest` as an `admin` API key for this
    /// run only (the CLI's local credential; see docs/security.md). It is not stored.
    pub fn with_local_key(mut self, digest: [u8; 32]) -> Self {
        self.local_key = Some(digest);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The market-data relay's upstream pools (one per account, started on first use;
    /// closed when the daemon stops).
    pub fn relay(&self) -> &relay::Upstreams {
        &self.relay
    }

    /// Runs until `shutdown` resolves, then stops the supervisors (waits in the
    /// middle of a renewal end; a token being written is written whole) and drains
    /// HTTP connections.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let engine = self.engine.clone();
        let mut supervisors = engine.start();
        let stop = engine.shutdown_token();
        {
            // Alerts held back by the rate limit go out as one summary once there is room
            // (through the channels configured now: a reload may change them).
            let (e, stop) = (engine.clone(), stop.clone());
            supervisors.push(engine.spawn_supervised("alert flusher", None, move || {
                let (engine, stop) = (e.clone(), stop.clone());
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(60));
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tick.tick() => {
                                if let Some(alerter) = engine.alerter() {
                                    alerter.flush_suppressed().await;
                                }
                            }
                        }
                    }
                }
            }));
        }
        {
            // The audit log keeps `audit_retention`; backups carry it, so they stop
            // growing with it too.
            let (e, stop) = (engine.clone(), stop.clone());
            supervisors.push(engine.spawn_supervised("audit pruner", None, move || {
                let (engine, stop) = (e.clone(), stop.clone());
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tick.tick() => engine.prune_audit_log().await,
                        }
                    }
                }
            }));
        }
        api::install_metrics_recorder();
        let keys = api::keys::KeyCache::start(&engine).await;
        if let Some(digest) = self.local_key {
            keys.set_local(digest);
        }
        let sessions = dashboard::Sessions::default();
        let usage = gateway::Usage::default();
        let settings = engine.settings();
        let budget = gateway::budget::Budget::new(settings.gateway.budget.clone());
        let cache = gateway::cache::StaleCache::with_store(
            settings.gateway.cache.clone(),
            engine.clock().clone(),
            engine.store().clone(),
        );
        let relay_local = relay::Relay::new(engine.clone(), self.relay.clone());
        let mut router = http::router(engine.clone())
            .merge(relay::routes::router(relay::routes::RelayState::new(
                relay_local.clone(),
                keys.clone(),
                sessions.clone(),
            )))
            .merge(api::router(api::ApiState {
                engine: engine.clone(),
                keys: keys.clone(),
                sessions: sessions.clone(),
                usage: usage.clone(),
                budget: budget.clone(),
                cache: cache.clone(),
                relay: relay_local,
            }))
            .merge(dashboard::router(engine.clone(), keys.clone(), sessions));
        if engine.settings().gateway.enabled {
            let gw = gateway::Gateway::new(engine.clone(), keys, usage, budget, cache)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            router = router.merge(gateway::router(gw));
        }
        let server = http::serve::serve(self.listener, router, engine.settings().http, {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = stop.cancelled() => {}
                }
                tracing::info!("shutting down");
                stop.cancel();
            }
        });
        let result = server.await;
        self.relay.shutdown();
        engine.shutdown();
        // The supervisors were told to stop when the shutdown began, alongside the
        // connections' drain; give them a little longer, not a second full deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        for h in supervisors.into_iter().chain(engine.take_late_tasks()) {
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                tracing::warn!("a supervisor did not stop in time");
            }
        }
        engine.store().close().await;
        result
    }
}
