//! Health: the profile check of the current token, and adopting a token another
//! process stored.

use std::sync::Arc;

use upkeep_core::expiry::TokenKind;
use upkeep_upstox::ErrorClass;

use super::{AccountRuntime, AccountStatus, Actor, CurrentToken, Engine, short_error};

/// The last check's problem when Upstox refused a token that had not expired.
const REVOKED: &str = "revoked";
/// ... and when it refused one past its expiry.
const EXPIRED: &str = "expired";

/// Whether the last health check found the token refused as such (revoked or expired),
/// not merely not permitted on the endpoint checked.
pub(super) fn token_refused(s: &AccountStatus) -> bool {
    s.api_validated == Some(false)
        && matches!(s.last_check_problem.as_deref(), Some(REVOKED | EXPIRED))
}

impl Engine {
    /// Adopts the store's current token if another process stored a newer valid one.
    /// Returns whether the in-memory token changed.
    pub(super) async fn adopt_from_store(&self, a: &AccountRuntime) -> bool {
        let id = &a.id;
        let stored = match self.inner.store.current_token(id).await {
            Ok(Some(t)) => t,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(account = %id, error = %e, "cannot read the store");
                return false;
            }
        };
        let now = self.inner.clock.now();
        let mine = a.current.borrow().clone();
        let newer = match &mine {
            Some(m) => m.fingerprint != stored.fingerprint && stored.stored_at >= m.stored_at,
            None => true,
        };
        if !newer || now >= stored.expires_at {
            return false;
        }
        let current = Arc::new(CurrentToken::from_stored(stored));
        tracing::info!(account = %id, token_fp = %current.fingerprint, source = %current.source, "adopted a token stored by another process");
        let detail = format!(
            "token fp={} (stored by another process)",
            current.fingerprint
        );
        a.publish(current);
        self.audit(id, Actor::Daemon, "token_adopted", "adopted", &detail)
            .await;
        true
    }

    /// Profile call with the current token. Returns true when the token is found
    /// invalid (expired early or revoked) and should be replaced.
    pub(super) async fn health_check(&self, a: &AccountRuntime, c: &CurrentToken) -> bool {
        if a.settings().env == "sandbox" || c.kind == TokenKind::Sandbox {
            // Sandbox tokens only work on the sandbox order APIs; profile is not one (a
            // live endpoint's 401 would read as "revoked").
            a.status_mut(|s| {
                s.last_check_problem =
                    Some("sandbox tokens cannot be checked: profile is not a sandbox API".into());
            });
            return false;
        }
        let result = if c.kind == TokenKind::Extended {
            // Extended and analytics tokens may not read the profile (UDAPI100067); a
            // quote is what they are for.
            self.inner
                .upstox
                .ltp_v3(&c.token, &["NSE_INDEX|Nifty 50"])
                .await
                .map(|_| ())
        } else {
            self.inner.upstox.profile(&c.token).await.map(|_| ())
        };
        // The answer is about the token when Upstox looked at it: read the clock after
        // the call (a check started at 03:29:59 can be answered after the rollover).
        // A refusal is judged on a freshly read clock (a followed simulator may have
        // just jumped past the token's expiry).
        if result.is_err() {
            self.inner.clock.sync().await;
        }
        let now = self.inner.clock.now();
        let (validated, problem, renew) = match &result {
            Ok(_) => (Some(true), None, false),
            Err(e) => match e.class() {
                ErrorClass::TokenInvalid => {
                    let expired = now >= c.expires_at;
                    let why = if expired { EXPIRED } else { REVOKED };
                    // Only a token refused before its expiry is replaced at once; an
                    // expired one is renewed by the plan, in the morning window.
                    (
                        Some(false),
                        Some(why.to_owned()),
                        !expired && a.settings().can_renew_daily(),
                    )
                }
                ErrorClass::NotPermitted => (
                    Some(false),
                    Some("not permitted (extended token, IP or app permission)".to_owned()),
                    false,
                ),
                _ => (
                    None,
                    Some(format!("check inconclusive: {}", short_error(e))),
                    false,
                ),
            },
        };
        let changed = a.status_mut(|s| {
            let changed = validated.is_some() && s.api_validated != validated;
            if validated.is_some() {
                s.api_validated = validated;
            }
            s.last_check = Some(now);
            s.last_check_problem = problem.clone();
            changed
        });
        let id = &a.id;
        // (upkeep_token_api_validated is rendered from the status at scrape time.)
        if let Some(p) = &problem
            && validated == Some(false)
        {
            tracing::warn!(account = %id, problem = %p, token_fp = %c.fingerprint, "health check: Upstox refused the current token");
            // Recorded every time (other processes, `upkeep status` and `upkeep token`,
            // read the verdict from the audit log).
            self.audit(
                id,
                Actor::Health,
                "health_check",
                "invalid",
                &format!("{p} token fp={}", c.fingerprint),
            )
            .await;
        } else if validated == Some(true) && changed {
            // A valid verdict is recorded when it changes (once per token).
            self.audit(
                id,
                Actor::Health,
                "health_check",
                "valid",
                &format!("token fp={}", c.fingerprint),
            )
            .await;
        }
        renew
    }
}
