//! The publish path: a delivered or obtained token is validated, stored, written to
//! the legacy files, audited, and only then made current in memory.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use upkeep_core::AccessToken;
use upkeep_core::expiry::{TokenKind, format_ist, inspect};
use upkeep_store::NewToken;
use upkeep_upstox::ErrorClass;

use crate::alerts::{Alert, AlertKind};

use super::{
    AccountRuntime, Actor, CONDITION_SINK, CONDITION_STORE, CurrentToken, Engine,
    KNOWN_USER_SECRET, RejectReason, short_error,
};

/// A token issued before the current one (a replayed delivery, an old file) never
/// replaces it while the current one is valid.
fn stale_against_current(
    a: &AccountRuntime,
    info: &upkeep_core::expiry::TokenInfo,
    now: Timestamp,
) -> Result<(), RejectReason> {
    let current = a.current.borrow().clone();
    match (current, info.issued_at) {
        (Some(c), Some(issued))
            if c.is_valid_at(now) && c.issued_at.is_some_and(|ci| issued < ci) =>
        {
            Err(RejectReason::Stale(format_ist(issued)))
        }
        _ => Ok(()),
    }
}

impl Engine {
    /// Validates `token` for `account` and, if good, makes it current: store, memory,
    /// sinks, backup, audit. With `validate`, a profile call must accept it too.
    pub async fn accept_token(
        &self,
        account: &str,
        token: AccessToken,
        source: &str,
        actor: Actor,
        validate: bool,
    ) -> Result<Arc<CurrentToken>, RejectReason> {
        let Some(a) = self.account(account) else {
            return Err(RejectReason::UnknownAccount(account.to_owned()));
        };
        let now = self.inner.clock.now();
        // The same token again (a repeated delivery): nothing to do.
        if let Some(c) = a.current.borrow().clone()
            && c.fingerprint == token.fingerprint()
        {
            return Ok(c);
        }
        let result = self
            .check_token(&a, &token, now, validate, actor)
            .await
            .map(|info| (info.issued_at, info.expires_at, info.kind, info.claims.sub));
        let (issued_at, expires_at, kind, sub) = match result {
            Ok(v) => v,
            Err(reason) => {
                // Webhook rejections are counted and summarised by the webhook's gate
                // (anyone can post there); every other refusal is worth a line.
                if actor == Actor::Webhook {
                    tracing::debug!(account, source, %reason, token_fp = %token.fingerprint(), "token rejected");
                } else {
                    tracing::warn!(account, source, actor = actor.as_str(), %reason, token_fp = %token.fingerprint(), "token rejected");
                }
                metrics::counter!("upkeep_tokens_rejected_total", "account" => account.to_owned(), "source" => source.to_owned()).increment(1);
                self.audit(
                    account,
                    actor,
                    "token_rejected",
                    "rejected",
                    &reason.to_string(),
                )
                .await;
                return Err(reason);
            }
        };
        // Persist in a task of its own: if the caller is cancelled (shutdown, client
        // gone), the write still completes or fails as a whole.
        let engine = self.clone();
        let source = source.to_owned();
        let account_id = account.to_owned();
        let handle = tokio::spawn(async move {
            engine
                .persist(
                    &account_id,
                    token,
                    issued_at,
                    expires_at,
                    kind,
                    sub,
                    &source,
                    actor,
                )
                .await
        });
        match handle.await {
            Ok(r) => r,
            Err(e) => Err(RejectReason::Store(format!("persisting task failed: {e}"))),
        }
    }

    /// The checks that cost nothing but a JWT decode: readable, not expired, the
    /// account's user (known, for a webhook delivery), not older than the current
    /// token. `Ok(Some(current))`: it is the current token already.
    pub(crate) fn precheck(
        &self,
        account: &str,
        token: &AccessToken,
        actor: Actor,
    ) -> Result<Option<Arc<CurrentToken>>, RejectReason> {
        let Some(a) = self.account(account) else {
            return Err(RejectReason::UnknownAccount(account.to_owned()));
        };
        if let Some(c) = a.current.borrow().clone()
            && c.fingerprint == token.fingerprint()
        {
            return Ok(Some(c));
        }
        self.cheap_checks(&a, token, self.inner.clock.now(), actor)?;
        Ok(None)
    }

    fn cheap_checks(
        &self,
        a: &AccountRuntime,
        token: &AccessToken,
        now: Timestamp,
        actor: Actor,
    ) -> Result<upkeep_core::expiry::TokenInfo, RejectReason> {
        let info = inspect(token).map_err(|e| RejectReason::Malformed(e.to_string()))?;
        if now >= info.expires_at {
            return Err(RejectReason::Expired(format_ist(info.expires_at)));
        }
        match a.expected_user() {
            Some(expected) if expected != info.claims.sub => return Err(RejectReason::WrongUser),
            Some(_) => {}
            // Anyone can post to the webhook: its tokens are only trusted for a user
            // that is already known.
            None if actor == Actor::Webhook => return Err(RejectReason::UserUnknown),
            None => {}
        }
        stale_against_current(a, &info, now)?;
        Ok(info)
    }

    pub(super) async fn check_token(
        &self,
        a: &AccountRuntime,
        token: &AccessToken,
        now: Timestamp,
        validate: bool,
        actor: Actor,
    ) -> Result<upkeep_core::expiry::TokenInfo, RejectReason> {
        let info = self.cheap_checks(a, token, now, actor)?;
        if validate {
            let mut last = None;
            for attempt in 0..3u32 {
                match self.inner.upstox.profile(token).await {
                    Ok(p) if p.user_id == info.claims.sub => {
                        last = None;
                        break;
                    }
                    Ok(_) => return Err(RejectReason::WrongUser),
                    Err(e) => match e.class() {
                        ErrorClass::Transient => {
                            last = Some(e.to_string());
                            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                        }
                        // The daily funds/orders window does not apply to profile; treat
                        // anything else as Upstox refusing the token.
                        _ => return Err(RejectReason::NotAccepted(short_error(&e))),
                    },
                }
            }
            if let Some(e) = last {
                return Err(RejectReason::Unverified(e));
            }
        }
        Ok(info)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn persist(
        &self,
        account: &str,
        token: AccessToken,
        issued_at: Option<Timestamp>,
        expires_at: Timestamp,
        kind: TokenKind,
        sub: String,
        source: &str,
        actor: Actor,
    ) -> Result<Arc<CurrentToken>, RejectReason> {
        let Some(a) = self.account(account) else {
            return Err(RejectReason::UnknownAccount(account.to_owned()));
        };
        // One publish at a time per account: memory, store and files then agree on
        // the newest token even when two paths deliver at once.
        let _publishing = a.publishing.lock().await;
        let now = self.inner.clock.now();
        if let Some(c) = a.current.borrow().clone()
            && issued_at.is_some_and(|i| c.issued_at.is_some_and(|ci| i < ci))
            && c.is_valid_at(now)
        {
            return Err(RejectReason::Stale(
                issued_at.map(format_ist).unwrap_or_default(),
            ));
        }
        let token_copy = token.clone();
        let token_fp = token.fingerprint();
        let stored = self
            .inner
            .store
            .put_token(
                account,
                NewToken {
                    token,
                    issued_at,
                    expires_at,
                    kind: kind.as_str().to_owned(),
                    source: source.to_owned(),
                },
                now,
            )
            .await;
        let current = match stored {
            Ok(s) => {
                a.clear_condition(CONDITION_STORE);
                Arc::new(CurrentToken::from_stored(s))
            }
            Err(e) => {
                // Upstox has issued it and it is valid whatever the store says: use it
                // now (memory, files) and save it again until the store takes it.
                self.store_failed(&a, "the new token", &e.to_string()).await;
                let current = Arc::new(CurrentToken {
                    fingerprint: token_fp,
                    token: token_copy,
                    issued_at,
                    expires_at,
                    kind,
                    source: source.to_owned(),
                    stored_at: now,
                    user_id: Some(sub.clone()),
                    api_body: Default::default(),
                    bearer: Default::default(),
                });
                *a.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = Some(current.clone());
                current
            }
        };
        if actor != Actor::Webhook {
            self.remember_user(&a, sub).await;
        }
        self.write_sinks(account, &current).await;
        let detail = format!(
            "token fp={} kind={} expires {}",
            current.fingerprint,
            current.kind.as_str(),
            format_ist(current.expires_at)
        );
        self.audit(account, actor, "token_stored", source, &detail)
            .await;
        // Publish last: whoever watches sees a token that is already durable, in the
        // legacy files and in the audit log.
        a.publish(current.clone());
        tracing::info!(account, source, token_fp = %current.fingerprint, expires_at = %format_ist(current.expires_at), "new token is current");
        Ok(current)
    }

    /// A token obtained through a path that proves whose it is (a login with the
    /// account's own credentials, the OAuth callback, an operator's import) makes its
    /// user the account's known user, in memory and in the store.
    async fn remember_user(&self, a: &AccountRuntime, user: String) {
        {
            let mut g = a.expected_user.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_some() {
                return;
            }
            *g = Some(user.clone());
        }
        let id = &a.id;
        if let Err(e) = self
            .inner
            .store
            .put_secret(id, KNOWN_USER_SECRET, &upkeep_core::Secret::new(user))
            .await
        {
            tracing::error!(account = %id, error = %e, "could not remember the account's Upstox user");
        }
    }

    /// Writes the legacy files (default account) and the backup. A failure becomes the
    /// account's `sink_write_failing` condition, with an alert; the supervisor writes
    /// again until the files hold the current token.
    pub(super) async fn write_sinks(&self, account: &str, current: &CurrentToken) {
        let sinks = &self.settings().sinks;
        let is_default = self.default_account().as_deref() == Some(account);
        let now = self.inner.clock.now();
        let mut failures = Vec::new();
        if is_default {
            if let Some(path) = &sinks.json_file {
                let info = upkeep_store::JsonSinkInfo {
                    account,
                    issued_at: current.issued_at,
                    updated_at: now,
                };
                if let Err(e) =
                    upkeep_store::write_json_sink(path, &current.token, current.expires_at, &info)
                {
                    failures.push(e.to_string());
                }
            }
            if let Some(path) = &sinks.env_file
                && let Err(e) = upkeep_store::write_env_sink(path, &current.token)
            {
                failures.push(e.to_string());
            }
        }
        if let Some(dir) = &sinks.backup_dir {
            match upkeep_store::backup_to_dir(
                self.inner.store.as_ref(),
                &self.inner.master_key,
                dir,
                now,
            )
            .await
            {
                Ok(path) => tracing::debug!(path = %path.display(), "store backed up"),
                Err(e) => failures.push(format!("backup: {e}")),
            }
        }
        let Some(a) = self.account(account) else {
            return;
        };
        if failures.is_empty() {
            a.sinks_pending
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if a.clear_condition(CONDITION_SINK) {
                tracing::info!(account, "the token files are written again");
                self.audit(
                    account,
                    Actor::Daemon,
                    "condition",
                    "cleared",
                    CONDITION_SINK,
                )
                .await;
            }
            return;
        }
        a.sinks_pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let detail = failures.join("; ");
        if a.set_condition(CONDITION_SINK, &detail) {
            tracing::error!(account, error = %detail, "could not write the token files; retrying until they hold the current token");
            self.audit(
                account,
                Actor::Daemon,
                "condition",
                "set",
                &format!("{CONDITION_SINK}: {detail}"),
            )
            .await;
            self.alert(Alert::new(
                AlertKind::StorageFailing,
                account,
                "Token files not written",
                format!(
                    "upkeep could not write the token files of account {account} ({detail}). \
                     Bots reading them keep an old token. upkeep keeps retrying."
                ),
                now,
            ))
            .await;
        }
    }

    /// Saves a current token the store refused earlier, if it is still current.
    pub(super) async fn save_unsaved(&self, a: &AccountRuntime, c: &Arc<CurrentToken>) {
        // Under the publish lock: a publish in progress has finished (memory and
        // `unsaved` agree) before this looks at them.
        let _publishing = a.publishing.lock().await;
        let still_current = a
            .current
            .borrow()
            .as_ref()
            .is_some_and(|now| now.fingerprint == c.fingerprint);
        if !still_current {
            *a.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return;
        }
        let result = self
            .inner
            .store
            .put_token(
                &a.id,
                NewToken {
                    token: c.token.clone(),
                    issued_at: c.issued_at,
                    expires_at: c.expires_at,
                    kind: c.kind.as_str().to_owned(),
                    source: c.source.clone(),
                },
                self.inner.clock.now(),
            )
            .await;
        match result {
            Ok(_) => {
                *a.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = None;
                a.clear_condition(CONDITION_STORE);
                tracing::info!(account = %a.id, token_fp = %c.fingerprint, "the store took the current token");
                self.audit(
                    &a.id,
                    Actor::Daemon,
                    "token_stored",
                    &c.source,
                    &format!(
                        "token fp={} (saved late: the store refused it first)",
                        c.fingerprint
                    ),
                )
                .await;
            }
            Err(e) => {
                tracing::debug!(account = %a.id, error = %e, "the store still refuses the current token")
            }
        }
    }

    /// Saves a rotated refresh token kept in memory; on failure it stays pending (and
    /// the store condition is raised).
    pub(crate) async fn save_pending_refresh(&self, a: &AccountRuntime) {
        let Some(token) = a.pending_refresh() else {
            return;
        };
        match self
            .inner
            .store
            .put_secret(&a.id, "refresh_token", &token)
            .await
        {
            Ok(()) => {
                let mut g = a.pending_refresh.lock().unwrap_or_else(|e| e.into_inner());
                if g.as_ref().is_some_and(|p| p.expose() == token.expose()) {
                    *g = None;
                }
            }
            Err(e) => {
                self.store_failed(a, "the rotated refresh token", &e.to_string())
                    .await;
            }
        }
    }

    /// Records that the store refused a write (`store_write_failing`), with an alert.
    pub(super) async fn store_failed(&self, a: &AccountRuntime, what: &str, e: &str) {
        let id = &a.id;
        if a.set_condition(CONDITION_STORE, &format!("{what}: {e}")) {
            tracing::error!(account = %id, error = %e, "the store refused a write: {what}");
            self.alert(Alert::new(
                AlertKind::StorageFailing,
                id.clone(),
                "Store write failing",
                format!("The store refused to save {what} for account {id}: {e}. Check the disk or the database."),
                self.inner.clock.now(),
            ))
            .await;
        }
    }
}
