//! [`Upstreams`]: the upstream feed pool of each account, started on first use and
//! stopped with the daemon, or when a reload removes the account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use upkeep_upstox::feed::upstream::{FeedPool, PoolHealth};

use crate::engine::Engine;
use crate::settings::RelaySettings;

/// Why an account has no upstream pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the market-data relay is disabled ([relay] enabled = false)")]
    Disabled,
    #[error("no account `{0}` is configured")]
    UnknownAccount(String),
    #[error("account `{0}` is a sandbox account; the market-data feed needs a live account")]
    Sandbox(String),
    #[error("the market-data relay is stopping")]
    Stopped,
}

struct Inner {
    engine: Engine,
    settings: RelaySettings,
    /// Each pool with its account's stop token (cancelled when the account is removed).
    pools: Mutex<HashMap<String, (FeedPool, CancellationToken)>>,
    stopped: std::sync::atomic::AtomicBool,
}

/// The upstream pools by account. Cheap to clone. Settings are read once, when it is
/// made (a `[relay]` change needs a restart).
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Pools for the engine's accounts, with the engine's `[relay]` settings. Starts
    /// nothing until [`Upstreams::pool`] is first asked for an account.
    pub fn new(engine: Engine) -> Self {
        let settings = engine.settings().relay.clone();
        Self {
            inner: Arc::new(Inner {
                engine,
                settings,
                pools: Mutex::new(HashMap::new()),
                stopped: false.into(),
            }),
        }
    }

    pub fn settings(&self) -> &RelaySettings {
        &self.inner.settings
    }

    /// The account's pool, started now if it is the first ask. Must be called inside
    /// the runtime.
    pub fn pool(&self, account: &str) -> Result<FeedPool, RelayError> {
        let inner = &self.inner;
        if !inner.settings.enabled {
            return Err(RelayError::Disabled);
        }
        if inner.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RelayError::Stopped);
        }
        let mut pools = inner.pools.lock().unwrap_or_else(|p| p.into_inner());
        match pools.get(account) {
            Some((p, stop)) if !stop.is_cancelled() => return Ok(p.clone()),
            // Its account was removed (and maybe added again): that pool is done.
            Some((p, _)) => {
                p.shutdown();
                pools.remove(account);
            }
            None => {}
        }
        let settings = inner
            .engine
            .account_settings(account)
            .ok_or_else(|| RelayError::UnknownAccount(account.to_owned()))?;
        let stop = inner
            .engine
            .account_stop(account)
            .ok_or_else(|| RelayError::UnknownAccount(account.to_owned()))?;
        if settings.env == "sandbox" {
            return Err(RelayError::Sandbox(account.to_owned()));
        }
        let tokens = super::tokens::token_source(&inner.engine, account)
            .ok_or_else(|| RelayError::UnknownAccount(account.to_owned()))?;
        let pool = FeedPool::start(
            inner.settings.upstream.clone(),
            inner.engine.upstox().clone(),
            tokens,
            inner.engine.clock().clone(),
        );
        if inner.settings.persist_ticks {
            super::persist::spawn_writer(&inner.engine, account, &pool);
        }
        tracing::info!(account, "relay: upstream feed pool started");
        pools.insert(account.to_owned(), (pool.clone(), stop.clone()));
        // When a reload removes the account, its upstream sockets close.
        let weak = Arc::downgrade(inner);
        let (id, p) = (account.to_owned(), pool.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            p.shutdown();
            let Some(inner) = weak.upgrade() else { return };
            if inner.engine.shutdown_token().is_cancelled() {
                return;
            }
            let mut pools = inner.pools.lock().unwrap_or_else(|p| p.into_inner());
            if pools.get(&id).is_some_and(|(_, s)| s.is_cancelled()) {
                pools.remove(&id);
            }
            tracing::info!(account = %id, "relay: account removed from the configuration; upstream feed pool stopped");
        });
        Ok(pool)
    }

    /// The health of every started pool, by account.
    pub fn health(&self) -> Vec<(String, PoolHealth)> {
        let pools = self.inner.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, PoolHealth)> = pools
            .iter()
            .filter(|(_, (_, stop))| !stop.is_cancelled())
            .map(|(id, (p, _))| (id.clone(), p.health()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Closes every upstream socket; later asks are refused.
    pub fn shutdown(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let pools = self.inner.pools.lock().unwrap_or_else(|p| p.into_inner());
        for (p, _) in pools.values() {
            p.shutdown();
        }
    }
}
