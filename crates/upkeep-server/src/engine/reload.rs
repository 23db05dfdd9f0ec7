//! Reloading the configuration without a restart (`upkeep reload`, SIGHUP): accounts,
//! strategies and their credentials, the renewal policy, alerts and token files.
//!
//! The binary hands the engine a [`Reloader`] that reads and fully validates the
//! configuration; only a configuration that passes replaces the running one, else the
//! old one stays and the one-line error is logged and returned. Then:
//! - a new account gets its token from the store and a supervisor;
//! - a removed account's supervisor stops (its token stays in the store);
//! - a changed account keeps its supervisor, token and status; its settings are swapped,
//!   its latches re-read against the new credentials, and it plans again at once;
//! - the alert channels and the token files are the new ones (the files are written
//!   with the current token).
//!
//! Not reloaded (a restart applies them): `[server]` (the listener), `[store]`, the
//! master key, the `[upstox]` hosts and `[relay]` (the relay's pools keep the settings
//! they started with).

use std::collections::HashMap;
use std::sync::Arc;

use super::latch::{LatchKind, credentials_digest};
use super::{AccountRuntime, Accounts, Engine, new_runtime};
use crate::alerts::Alerter;
use crate::settings::{AccountSettings, DaemonSettings, StrategyKind};

/// Reads and validates the configuration: the new settings and alert channels, or the
/// one-line reason it is refused.
pub type Reloader =
    Arc<dyn Fn() -> Result<(DaemonSettings, Option<Alerter>), String> + Send + Sync>;

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// A digest of everything in an account's settings (secrets only as a digest).
fn account_digest(a: &AccountSettings) -> String {
    format!(
        "{}|{:?}|{:?}|{}|{}|{}",
        a.env,
        a.user_id,
        a.strategies,
        a.trades_weekends,
        a.trades_holidays,
        credentials_digest(a, StrategyKind::Totp, LatchKind::Configuration)
    )
}

impl Engine {
    /// Sets how [`Engine::reload`] reads the configuration.
    pub fn set_reloader(&self, reloader: Reloader) {
        *self
            .inner
            .reloader
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reloader);
    }

    /// Re-reads the configuration and applies it, or keeps the running one when the new
    /// one is invalid (the error is logged and returned). One reload at a time.
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let _one = self.inner.reloading.lock().await;
        let reloader = self
            .inner
            .reloader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| "this daemon was started without a way to reload".to_owned())?;
        let (settings, alerter) = match reloader() {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the configuration is invalid; keeping the running one");
                return Err(e);
            }
        };
        match self.apply_settings(settings, alerter).await {
            Ok(summary) => {
                tracing::info!(added = ?summary.added, removed = ?summary.removed, changed = ?summary.changed, "configuration reloaded");
                Ok(summary)
            }
            Err(e) => {
                let e = format!("cannot apply the configuration: {e}");
                tracing::error!(error = %e, "reload refused; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// Replaces the running settings and alert channels with validated new ones.
    pub async fn apply_settings(
        &self,
        settings: DaemonSettings,
        alerter: Option<Alerter>,
    ) -> Result<ReloadSummary, upkeep_store::StoreError> {
        let now = self.inner.clock.now();
        let old = self.accounts();
        // New accounts first: if the store fails here, nothing has changed yet.
        let mut fresh: HashMap<String, Arc<AccountRuntime>> = HashMap::new();
        for a in &settings.accounts {
            if !old.map.contains_key(&a.id) {
                let runtime = new_runtime(
                    self.inner.store.as_ref(),
                    a.clone(),
                    self.inner.shutdown.child_token(),
                    now,
                )
                .await?;
                fresh.insert(a.id.clone(), Arc::new(runtime));
            }
        }
        let mut summary = ReloadSummary::default();
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for a in &settings.accounts {
            let runtime = match old.map.get(&a.id) {
                Some(rt) => {
                    if account_digest(&rt.settings()) != account_digest(a) {
                        summary.changed.push(a.id.clone());
                        rt.set_settings(a.clone());
                        if let Some(user) = &a.user_id {
                            *rt.expected_user.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(user.clone());
                        }
                        // Latches for credentials that changed are cleared; the others
                        // stop their strategy again.
                        rt.disabled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clear();
                        self.load_latches(rt).await;
                        rt.replan.notify_one();
                    }
                    rt.clone()
                }
                None => {
                    summary.added.push(a.id.clone());
                    match fresh.remove(&a.id) {
                        Some(rt) => rt,
                        None => continue,
                    }
                }
            };
            order.push(a.id.clone());
            map.insert(a.id.clone(), runtime);
        }
        for id in &old.order {
            if !map.contains_key(id)
                && let Some(rt) = old.map.get(id)
            {
                summary.removed.push(id.clone());
                rt.stop.cancel();
                rt.interrupt.notify_waiters();
            }
        }
        let old_settings = self.settings();
        let sinks_changed = old_settings.sinks.json_file != settings.sinks.json_file
            || old_settings.sinks.env_file != settings.sinks.env_file
            || old_settings.sinks.backup_dir != settings.sinks.backup_dir;
        let default_changed = old.order.first() != order.first();
        *self
            .inner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
        *self.inner.alerter.lock().unwrap_or_else(|e| e.into_inner()) = alerter;
        let added: Vec<Arc<AccountRuntime>> = summary
            .added
            .iter()
            .filter_map(|id| map.get(id).cloned())
            .collect();
        let default = order.first().and_then(|id| map.get(id)).cloned();
        *self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(Accounts { map, order });
        if (sinks_changed || default_changed)
            && let Some(rt) = default
        {
            // The (new) token files get the default account's current token.
            rt.sinks_pending
                .store(true, std::sync::atomic::Ordering::Relaxed);
            rt.replan.notify_one();
        }
        for rt in added {
            self.load_latches(&rt).await;
            let handle = self.start_supervisor(rt);
            self.inner
                .late_tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
        }
        Ok(summary)
    }

    /// Supervisors a reload started, for the shutdown to wait for.
    pub fn take_late_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::mem::take(
            &mut *self
                .inner
                .late_tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}
