//! [`Relay`]: the local side of every account's feed: one [`Hub`] per account, fed by a
//! task that passes the account's upstream frames on, started with the account's pool
//! on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use upkeep_upstox::feed::SubscriptionMode;
use upkeep_upstox::feed::upstream::{DownCause, FeedConsumer, FeedPool, PoolHealth, UpstreamEvent};

use super::hub::{Hub, HubConfig, HubHealth, UpstreamLink, UpstreamSubscriber};
use super::upstream::{RelayError, Upstreams};
use crate::engine::Engine;

/// Consumers subscribe through the account's pool (its refcounted book).
struct PoolLink(FeedPool);

impl UpstreamLink for PoolLink {
    fn open(&self) -> Box<dyn UpstreamSubscriber> {
        Box::new(self.0.consumer())
    }
}

impl UpstreamSubscriber for FeedConsumer {
    fn subscribe(&self, mode: SubscriptionMode, keys: &[String]) -> Result<(), String> {
        FeedConsumer::subscribe(self, mode, keys).map_err(|e| e.to_string())
    }
    fn change_mode(&self, mode: SubscriptionMode, keys: &[String]) -> Result<(), String> {
        FeedConsumer::change_mode(self, mode, keys).map_err(|e| e.to_string())
    }
    fn unsubscribe(&self, keys: &[String]) {
        FeedConsumer::unsubscribe(self, keys)
    }
}

/// The health of one account's relay.
#[derive(Debug, Clone, Serialize)]
pub struct AccountFeedHealth {
    pub account: String,
    pub upstream: PoolHealth,
    pub local: HubHealth,
}

struct Inner {
    engine: Engine,
    upstreams: Upstreams,
    hubs: Mutex<HashMap<String, Hub>>,
}

/// The relay's local side for all accounts. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(engine: Engine, upstreams: Upstreams) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                upstreams,
                hubs: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The account a consumer means: the one it names, else the first live account.
    pub fn account(&self, named: Option<&str>) -> Result<String, RelayError> {
        let engine = &self.inner.engine;
        match named {
            Some(id) => engine
                .account_settings(id)
                .map(|s| s.id.clone())
                .ok_or_else(|| RelayError::UnknownAccount(id.to_owned())),
            None => engine
                .account_ids()
                .into_iter()
                .find(|id| {
                    engine
                        .account_settings(id)
                        .is_some_and(|s| s.env != "sandbox")
                })
                .ok_or_else(|| RelayError::UnknownAccount("(none live configured)".into())),
        }
    }

    /// The account's hub, started (with its upstream pool) on first use.
    pub fn hub(&self, account: &str) -> Result<Hub, RelayError> {
        let mut hubs = self.inner.hubs.lock().unwrap_or_else(|p| p.into_inner());
        match hubs.get(account) {
            Some(h) if !h.is_closed() => return Ok(h.clone()),
            // Its account was removed (and maybe added again).
            Some(_) => {
                hubs.remove(account);
            }
            None => {}
        }
        let stop = self
            .inner
            .engine
            .account_stop(account)
            .ok_or_else(|| RelayError::UnknownAccount(account.to_owned()))?;
        let pool = self.inner.upstreams.pool(account)?;
        let queue = self.inner.upstreams.settings().consumer_queue.max(4);
        let hub = Hub::new(HubConfig { queue }, PoolLink(pool.clone()));
        spawn_pump(
            Arc::downgrade(&self.inner),
            self.inner.engine.clock().clone(),
            stop,
            account.to_owned(),
            pool,
            hub.clone(),
        );
        hubs.insert(account.to_owned(), hub.clone());
        Ok(hub)
    }

    /// The latest state of up to `max` subscribed instruments of the account's hub
    /// (see [`Hub::latest`]), if its relay has started (this starts nothing).
    pub fn latest(&self, account: &str, max: usize) -> Option<bytes::Bytes> {
        let hub = self
            .inner
            .hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned()?;
        hub.latest(max)
    }

    /// Upstream and local health of every account whose relay has started.
    pub fn health(&self) -> Vec<AccountFeedHealth> {
        let upstream = self.inner.upstreams.health();
        let hubs = self.inner.hubs.lock().unwrap_or_else(|p| p.into_inner());
        upstream
            .into_iter()
            .map(|(account, up)| AccountFeedHealth {
                local: hubs.get(&account).map(Hub::health).unwrap_or_default(),
                account,
                upstream: up,
            })
            .collect()
    }
}

/// Passes the pool's frames to the hub, and its connections' gaps (on the daemon's
/// clock), until the pool or the account stops. When a reload removes the account, its
/// consumers are closed with the reason and its hub forgotten.
fn spawn_pump(
    relay: std::sync::Weak<Inner>,
    clock: Arc<dyn upkeep_core::Clock>,
    stop: tokio_util::sync::CancellationToken,
    account: String,
    pool: FeedPool,
    hub: Hub,
) {
    let mut events = pool.events();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(UpstreamEvent::Frame { connection, data, .. }) => hub.publish_from(connection, data),
                    // A connection closed for want of keys (they moved, or no one wants
                    // them) left no consumer without data: it ends a gap it had open.
                    Ok(UpstreamEvent::Down { connection, cause: DownCause::Unused, .. }) => {
                        hub.upstream_up(connection, clock.now());
                    }
                    Ok(UpstreamEvent::Down { cause: DownCause::Stopped, .. }) => {}
                    Ok(UpstreamEvent::Down { connection, cause, reason, .. }) => {
                        let cause = serde_json::to_value(cause).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                        hub.upstream_down(connection, &cause, &reason, clock.now());
                    }
                    Ok(UpstreamEvent::Up { connection, .. }) => hub.upstream_up(connection, clock.now()),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(account = %account, frames = n, "relay: the local side fell behind the upstream; frames lost for every consumer");
                        metrics::counter!("upkeep_relay_frames_lost_total", "account" => account.clone()).increment(n);
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = stop.cancelled() => break,
            }
        }
        let Some(relay) = relay.upgrade() else { return };
        if stop.is_cancelled() && !relay.engine.shutdown_token().is_cancelled() {
            hub.close(&format!(
                "account `{account}` was removed from the configuration; its feed has stopped"
            ));
            let mut hubs = relay.hubs.lock().unwrap_or_else(|p| p.into_inner());
            if hubs.get(&account).is_some_and(Hub::is_closed) {
                hubs.remove(&account);
            }
            tracing::info!(account = %account, "relay: account removed; its consumers were closed");
        }
    });
}
