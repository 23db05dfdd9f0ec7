//! The lockout latch: a strategy that failed on the user's credentials or on the
//! configuration is not tried again by itself, because retrying a wrong PIN or TOTP
//! locks the Upstox account.
//!
//! The latch is stored (a sealed secret `latch:<strategy>` of the account holding a
//! digest of the credentials it failed with, and the reason), so a restart or a crash
//! loop does not spend one login attempt per start. It is cleared by:
//! - changed credentials (the digest no longer matches the configuration),
//! - a human asking for a renewal (`upkeep renew`, a forced renewal through the daemon),
//! - `upkeep accounts reset-strategy`.
//!
//! Another process clearing it is noticed: the supervisor re-reads the stored latches
//! of its disabled strategies every loop.

use sha2::{Digest, Sha256};
use upkeep_core::Secret;

use super::{AccountRuntime, Engine};
use crate::settings::{AccountSettings, StrategyKind};

/// The secret name of a strategy's latch.
pub fn latch_name(kind: StrategyKind) -> String {
    format!("latch:{}", kind.as_str())
}

/// What a latch is about: the user's credentials, or the app's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LatchKind {
    Credential,
    Configuration,
}

impl LatchKind {
    fn as_str(self) -> &'static str {
        match self {
            LatchKind::Credential => "credential",
            LatchKind::Configuration => "configuration",
        }
    }
}

/// A digest of what can fix a fault of `latch` kind for strategy `kind`: the secrets it
/// logs in with for a credential fault (a changed PIN, seed or refresh token clears
/// it), and also the app's URLs for a configuration fault (a fixed redirect URI clears
/// it). Only a digest is kept: the latch reveals nothing.
pub(crate) fn credentials_digest(
    s: &AccountSettings,
    kind: StrategyKind,
    latch: LatchKind,
) -> String {
    let mut h = Sha256::new();
    let mut part = |v: &str| {
        h.update(v.as_bytes());
        h.update([0u8]);
    };
    part(kind.as_str());
    part(latch.as_str());
    part(&s.client_id);
    part(s.client_secret.expose());
    if let Some(t) = &s.totp {
        part(&t.mobile);
        part(t.pin.expose());
        part(t.secret.expose());
    }
    if let Some(r) = &s.refresh {
        part(
            r.refresh_token
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default(),
        );
        if latch == LatchKind::Configuration {
            part(&r.token_url);
        }
    }
    if latch == LatchKind::Configuration {
        part(&s.redirect_uri);
    }
    let digest = h.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    /// Disables `kind` for the account, in memory and in the store.
    pub(super) async fn latch(
        &self,
        a: &AccountRuntime,
        kind: StrategyKind,
        latch: LatchKind,
        reason: &str,
    ) {
        a.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind);
        let value = format!(
            "{}|{}|{reason}",
            latch.as_str(),
            credentials_digest(&a.settings(), kind, latch)
        );
        if let Err(e) = self
            .inner
            .store
            .put_secret(&a.id, &latch_name(kind), &Secret::new(value))
            .await
        {
            // Still disabled in memory; a restart would try once more.
            tracing::error!(account = %a.id, strategy = kind.as_str(), error = %e, "could not store the lockout latch");
        }
    }

    /// Loads the stored latches at start: those for the credentials configured now
    /// disable their strategy; those for older credentials are cleared.
    pub(super) async fn load_latches(&self, a: &AccountRuntime) {
        let id = &a.id;
        for &kind in &a.settings().strategies {
            let name = latch_name(kind);
            let stored = match self.inner.store.get_secret(id, &name).await {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "cannot read the lockout latches");
                    continue;
                }
            };
            let mut parts = stored.expose().splitn(3, '|');
            let (latch, digest, reason) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let latch = match latch {
                "credential" => LatchKind::Credential,
                _ => LatchKind::Configuration,
            };
            if digest == credentials_digest(&a.settings(), kind, latch) {
                tracing::warn!(account = %id, strategy = kind.as_str(), %reason, "strategy stays disabled after a credential or configuration fault; fix it and run `upkeep renew` or `upkeep accounts reset-strategy`");
                a.disabled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(kind);
            } else {
                tracing::info!(account = %id, strategy = kind.as_str(), "the credentials changed since the strategy failed; trying it again");
                if let Err(e) = self.inner.store.delete_secret(id, &name).await {
                    tracing::warn!(account = %id, error = %e, "cannot clear an outdated lockout latch");
                }
            }
        }
    }

    /// Re-enables strategies whose stored latch another process cleared. Returns
    /// whether any was.
    pub(super) async fn resync_latches(&self, a: &AccountRuntime) -> bool {
        let mut any = false;
        let disabled: Vec<StrategyKind> = a
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for kind in disabled {
            if let Ok(None) = self.inner.store.get_secret(&a.id, &latch_name(kind)).await {
                tracing::info!(account = %a.id, strategy = kind.as_str(), "the lockout latch was cleared; the strategy is enabled again");
                a.disabled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&kind);
                any = true;
            }
        }
        any
    }

    /// A human asked: clear the latches of the account (all, or one strategy), in
    /// memory and in the store. Returns the strategies re-enabled.
    pub async fn reset_strategies(
        &self,
        account: &str,
        only: Option<StrategyKind>,
    ) -> Result<Vec<StrategyKind>, upkeep_store::StoreError> {
        let Some(a) = self.account(account) else {
            return Ok(Vec::new());
        };
        let mut cleared = Vec::new();
        for &kind in &a.settings().strategies {
            if only.is_some_and(|o| o != kind) {
                continue;
            }
            let was_stored = self
                .inner
                .store
                .delete_secret(account, &latch_name(kind))
                .await?;
            let was_memory = a
                .disabled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&kind);
            if was_stored || was_memory {
                cleared.push(kind);
            }
        }
        Ok(cleared)
    }
}
