//! The renewal engine: one supervisor task per account, driven by the core's renewal
//! plan, plus the shared entry points every other part of the daemon uses:
//!
//! - [`Engine::current`]: the current token, held in memory (no database, no decrypt);
//! - [`Engine::subscribe`]: a watch channel that changes on every rotation;
//! - [`Engine::renew`]: force a renewal (single-flight: concurrent triggers share one);
//! - [`Engine::report_unauthorized`]: the reactive trigger ("this token got a 401");
//! - [`Engine::accept_token`]: a token delivered by the webhook, the OAuth callback or
//!   an import, validated before it replaces anything.
//!
//! Architecture invariant: only the account's supervisor task runs renewals, so two
//! renewals of one account never overlap inside a process; the store's lease extends
//! that across processes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use upkeep_core::expiry::{TokenKind, format_ist, inspect};
use upkeep_core::plan::{AccountView, Action, Plan, TokenSummary, jitter_seed, plan};
use upkeep_core::state::TokenState;
use upkeep_core::{AccessToken, Clock};
use upkeep_store::{AuditEvent, MasterKey, NewToken, StoredToken, TokenStore};
use upkeep_upstox::{ErrorClass, UpstoxClient, UpstoxError};

use crate::alerts::{Alert, AlertKind, Alerter};
use crate::oauth_state::StateBook;
use crate::settings::{AccountSettings, DaemonSettings, StrategyKind};
use crate::strategies::{self, Failure, Obtained};

/// The current token of an account, as held in memory.
#[derive(Debug, Clone)]
pub struct CurrentToken {
    pub token: AccessToken,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    pub kind: TokenKind,
    pub source: String,
    pub stored_at: Timestamp,
    pub fingerprint: String,
    /// The user (UCC) the token belongs to, from its `sub` claim.
    pub user_id: Option<String>,
}

impl CurrentToken {
    fn from_stored(t: StoredToken) -> Self {
        let info = inspect(&t.token).ok();
        let kind = info
            .as_ref()
            .map(|i| i.kind)
            .unwrap_or_else(|| TokenKind::from_name(&t.kind));
        Self {
            user_id: info.map(|i| i.claims.sub),
            token: t.token,
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            kind,
            source: t.source,
            stored_at: t.stored_at,
            fingerprint: t.fingerprint,
        }
    }

    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// Who asked for a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Schedule,
    Cli,
    Api,
    Webhook,
    Reactive,
    OAuth,
    Health,
    Startup,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Schedule => "schedule",
            Actor::Cli => "cli",
            Actor::Api => "api",
            Actor::Webhook => "webhook",
            Actor::Reactive => "reactive",
            Actor::OAuth => "oauth",
            Actor::Health => "health",
            Actor::Startup => "startup",
        }
    }
}

/// What a renewal request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    /// A new token is current (its fingerprint).
    Renewed {
        strategy: String,
        fingerprint: String,
    },
    /// The 401 was for a token that is no longer current: nothing to do.
    AlreadyRotated,
    /// Another upkeep process holds the renewal lease for this account.
    Busy,
    /// Every strategy failed; the human has been alerted.
    Failed { reason: String },
    /// The daemon is shutting down.
    Cancelled,
}

/// Why a delivered token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("no account `{0}` is configured")]
    UnknownAccount(String),
    #[error("the token is not a readable Upstox JWT: {0}")]
    Malformed(String),
    #[error("the token already expired at {0}")]
    Expired(String),
    #[error("the token belongs to another user than this account's")]
    WrongUser,
    #[error("Upstox does not accept the token ({0})")]
    NotAccepted(String),
    #[error("the token could not be validated with Upstox right now ({0}); it was not stored")]
    Unverified(String),
    #[error("the store refused the token: {0}")]
    Store(String),
}

enum TriggerKind {
    Force,
    Reactive { fingerprint: String },
}

struct Trigger {
    kind: TriggerKind,
    actor: Actor,
    reply: oneshot::Sender<RenewOutcome>,
}

/// Live, in-memory status of one account, for status pages and tests.
#[derive(Debug, Clone, Default)]
pub struct AccountStatus {
    /// Result of the last profile call with the current token (`None`: not checked yet).
    pub api_validated: Option<bool>,
    pub last_check: Option<Timestamp>,
    /// Why the last check failed (expired / revoked / not permitted).
    pub last_check_problem: Option<String>,
    pub next: Option<Plan>,
    pub renewing: bool,
    pub last_renewal: Option<(Timestamp, String, String)>,
    pub disabled: Vec<String>,
}

pub(crate) struct AccountRuntime {
    pub(crate) settings: AccountSettings,
    current: watch::Sender<Option<Arc<CurrentToken>>>,
    triggers: mpsc::Sender<Trigger>,
    triggers_rx: Mutex<Option<mpsc::Receiver<Trigger>>>,
    status: Mutex<AccountStatus>,
    disabled: Mutex<HashSet<StrategyKind>>,
    /// The UCC tokens of this account must belong to, once known.
    expected_user: Mutex<Option<String>>,
}

impl AccountRuntime {
    fn status_mut<R>(&self, f: impl FnOnce(&mut AccountStatus) -> R) -> R {
        let mut g = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
    fn expected_user(&self) -> Option<String> {
        self.expected_user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Makes `current` the in-memory token; its health is unknown until checked.
    fn publish(&self, current: Arc<CurrentToken>) {
        self.status_mut(|s| {
            s.api_validated = None;
            s.last_check_problem = None;
        });
        self.current.send_replace(Some(current));
    }
    fn is_disabled(&self, s: StrategyKind) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&s)
    }
}

/// Everything the engine needs from outside.
pub struct EngineDeps {
    pub settings: DaemonSettings,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn TokenStore>,
    pub upstox: UpstoxClient,
    pub alerter: Option<Alerter>,
    pub master_key: MasterKey,
}

/// The renewal engine. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: DaemonSettings,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) upstox: UpstoxClient,
    pub(crate) alerter: Option<Alerter>,
    pub(crate) master_key: MasterKey,
    pub(crate) states: StateBook,
    pub(crate) accounts: HashMap<String, Arc<AccountRuntime>>,
    pub(crate) order: Vec<String>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) holder: String,
}

impl Engine {
    /// Loads each account's current token from the store into memory. Starts nothing.
    pub async fn new(deps: EngineDeps) -> Result<Self, upkeep_store::StoreError> {
        let now = deps.clock.now();
        let mut accounts = HashMap::new();
        let mut order = Vec::new();
        for a in &deps.settings.accounts {
            deps.store.upsert_account(&a.id, &a.env, now).await?;
            let current = deps
                .store
                .current_token(&a.id)
                .await?
                .map(|t| Arc::new(CurrentToken::from_stored(t)));
            let expected = a
                .user_id
                .clone()
                .or_else(|| current.as_ref().and_then(|c| c.user_id.clone()));
            let (tx, rx) = mpsc::channel(64);
            let (current_tx, _) = watch::channel(current);
            order.push(a.id.clone());
            accounts.insert(
                a.id.clone(),
                Arc::new(AccountRuntime {
                    settings: a.clone(),
                    current: current_tx,
                    triggers: tx,
                    triggers_rx: Mutex::new(Some(rx)),
                    status: Mutex::new(AccountStatus::default()),
                    disabled: Mutex::new(HashSet::new()),
                    expected_user: Mutex::new(expected),
                }),
            );
        }
        let states = StateBook::new(deps.master_key.to_hex().as_bytes());
        let holder = format!("upkeep-{}", uuid::Uuid::new_v4());
        Ok(Self {
            inner: Arc::new(Inner {
                settings: deps.settings,
                clock: deps.clock,
                store: deps.store,
                upstox: deps.upstox,
                alerter: deps.alerter,
                master_key: deps.master_key,
                states,
                accounts,
                order,
                shutdown: CancellationToken::new(),
                holder,
            }),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
    pub fn settings(&self) -> &DaemonSettings {
        &self.inner.settings
    }
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.inner.store
    }
    pub fn upstox(&self) -> &UpstoxClient {
        &self.inner.upstox
    }
    pub fn alerter(&self) -> Option<&Alerter> {
        self.inner.alerter.as_ref()
    }
    pub(crate) fn states(&self) -> &StateBook {
        &self.inner.states
    }
    /// Account ids in configuration order.
    pub fn account_ids(&self) -> &[String] {
        &self.inner.order
    }
    /// The default account: the first configured one.
    pub fn default_account(&self) -> Option<&str> {
        self.inner.order.first().map(String::as_str)
    }
    pub(crate) fn account(&self, id: &str) -> Option<&Arc<AccountRuntime>> {
        self.inner.accounts.get(id)
    }
    pub fn account_settings(&self, id: &str) -> Option<&AccountSettings> {
        self.account(id).map(|a| &a.settings)
    }
    /// Finds the account an app's client id belongs to.
    pub fn account_for_client(&self, client_id: &str) -> Option<&str> {
        self.inner
            .order
            .iter()
            .find(|id| {
                self.inner
                    .accounts
                    .get(*id)
                    .is_some_and(|a| a.settings.client_id == client_id)
            })
            .map(String::as_str)
    }

    /// The account's current token from memory (may be expired: check `expires_at`).
    pub fn current(&self, account: &str) -> Option<Arc<CurrentToken>> {
        self.account(account)
            .and_then(|a| a.current.borrow().clone())
    }

    /// A receiver that sees every change of the account's current token.
    pub fn subscribe(&self, account: &str) -> Option<watch::Receiver<Option<Arc<CurrentToken>>>> {
        self.account(account).map(|a| a.current.subscribe())
    }

    pub fn status(&self, account: &str) -> Option<AccountStatus> {
        self.account(account).map(|a| {
            let mut s = a.status_mut(|s| s.clone());
            s.disabled = a
                .disabled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect();
            s.disabled.sort();
            s
        })
    }

    /// The token's display state now.
    pub fn token_state(&self, account: &str) -> Option<TokenState> {
        let now = self.inner.clock.now();
        self.current(account)
            .map(|c| TokenState::at(c.expires_at, now, &self.inner.settings.thresholds))
    }

    /// A login link for the browser OAuth flow (works from a phone): the Upstox
    /// dialog URL with a fresh single-use `state`.
    pub fn login_link(&self, account: &str) -> Option<String> {
        let a = self.account(account)?;
        let state = self.inner.states.mint(account, self.inner.clock.now());
        Some(
            self.inner
                .upstox
                .authorize_url(&a.settings.client_id, &a.settings.redirect_uri, &state)
                .to_string(),
        )
    }

    /// Runs a renewal in the calling task with the account's strategies that need no
    /// human (totp, refresh_token), for one-shot use by the CLI when no daemon's
    /// supervisors run in this process. The store lease still keeps it exclusive.
    pub async fn renew_now(&self, account: &str, actor: Actor) -> RenewOutcome {
        let Some(a) = self.account(account).cloned() else {
            return RenewOutcome::Failed {
                reason: format!("no account `{account}` is configured"),
            };
        };
        let deadline = self.inner.clock.now() + SignedDuration::from_mins(10);
        self.run_renewal_with(&a, actor, deadline, false).await
    }

    /// Asks for a renewal now. Concurrent calls share one renewal.
    pub async fn renew(&self, account: &str, actor: Actor) -> RenewOutcome {
        self.send_trigger(account, TriggerKind::Force, actor).await
    }

    /// The reactive trigger: `fingerprint` (of the token that got a 401) is renewed if
    /// it is still the current token; if it was already rotated, nothing happens.
    pub async fn report_unauthorized(&self, account: &str, fingerprint: &str) -> RenewOutcome {
        if self
            .current(account)
            .is_some_and(|c| c.fingerprint != fingerprint)
        {
            return RenewOutcome::AlreadyRotated;
        }
        self.send_trigger(
            account,
            TriggerKind::Reactive {
                fingerprint: fingerprint.to_owned(),
            },
            Actor::Reactive,
        )
        .await
    }

    async fn send_trigger(&self, account: &str, kind: TriggerKind, actor: Actor) -> RenewOutcome {
        let Some(a) = self.account(account) else {
            return RenewOutcome::Failed {
                reason: format!("no account `{account}` is configured"),
            };
        };
        let (reply, rx) = oneshot::channel();
        if a.triggers
            .send(Trigger { kind, actor, reply })
            .await
            .is_err()
        {
            return RenewOutcome::Cancelled;
        }
        rx.await.unwrap_or(RenewOutcome::Cancelled)
    }

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
        let Some(a) = self.account(account).cloned() else {
            return Err(RejectReason::UnknownAccount(account.to_owned()));
        };
        let now = self.inner.clock.now();
        let result = self
            .check_token(&a, &token, now, validate)
            .await
            .map(|info| (info.issued_at, info.expires_at, info.kind, info.claims.sub));
        let (issued_at, expires_at, kind, sub) = match result {
            Ok(v) => v,
            Err(reason) => {
                tracing::warn!(account, source, actor = actor.as_str(), %reason, token_fp = %token.fingerprint(), "token rejected");
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

    async fn check_token(
        &self,
        a: &AccountRuntime,
        token: &AccessToken,
        now: Timestamp,
        validate: bool,
    ) -> Result<upkeep_core::expiry::TokenInfo, RejectReason> {
        let info = inspect(token).map_err(|e| RejectReason::Malformed(e.to_string()))?;
        if now >= info.expires_at {
            return Err(RejectReason::Expired(format_ist(info.expires_at)));
        }
        if let Some(expected) = a.expected_user()
            && expected != info.claims.sub
        {
            return Err(RejectReason::WrongUser);
        }
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
    async fn persist(
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
        let Some(a) = self.account(account).cloned() else {
            return Err(RejectReason::UnknownAccount(account.to_owned()));
        };
        let now = self.inner.clock.now();
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
            .await
            .map_err(|e| RejectReason::Store(e.to_string()))?;
        let current = Arc::new(CurrentToken::from_stored(stored));
        {
            let mut g = a.expected_user.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = Some(sub);
            }
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

    async fn write_sinks(&self, account: &str, current: &CurrentToken) {
        let sinks = &self.inner.settings.sinks;
        let is_default = self.default_account() == Some(account);
        let now = self.inner.clock.now();
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
                    tracing::error!(account, error = %e, "could not write the JSON token file");
                }
            }
            if let Some(path) = &sinks.env_file
                && let Err(e) = upkeep_store::write_env_sink(path, &current.token)
            {
                tracing::error!(account, error = %e, "could not write the .env token file");
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
                Err(e) => tracing::error!(error = %e, "could not back up the store"),
            }
        }
    }

    pub(crate) async fn audit(
        &self,
        account: &str,
        actor: Actor,
        kind: &str,
        outcome: &str,
        detail: &str,
    ) {
        let event = AuditEvent {
            account: account.to_owned(),
            at: self.inner.clock.now(),
            actor: actor.as_str().to_owned(),
            kind: kind.to_owned(),
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        };
        if let Err(e) = self.inner.store.record_event(event).await {
            tracing::error!(account, error = %e, "could not record an audit event");
        }
    }

    pub(crate) async fn alert(&self, alert: Alert) {
        if let Some(alerter) = &self.inner.alerter {
            let kind = alert.kind;
            let outcome = alerter.send(alert).await;
            tracing::debug!(kind = kind.as_str(), ?outcome, "alert");
        }
    }

    /// Sleeps until the engine's clock reaches `target`, re-reading the clock at least
    /// every `poll`, so that a clock step (or a paused VM) is noticed. Returns false if
    /// the engine is shutting down.
    pub(crate) async fn sleep_until(&self, target: Timestamp) -> bool {
        loop {
            if self.inner.shutdown.is_cancelled() {
                return false;
            }
            let now = self.inner.clock.now();
            if now >= target {
                return true;
            }
            let remaining =
                Duration::try_from(target.duration_since(now)).unwrap_or(Duration::ZERO);
            let chunk = remaining.min(self.inner.settings.poll);
            tokio::select! {
                _ = tokio::time::sleep(chunk) => {}
                _ = self.inner.shutdown.cancelled() => return false,
            }
        }
    }

    /// Starts one supervisor task per account. Call once.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for id in &self.inner.order {
            let Some(a) = self.inner.accounts.get(id) else {
                continue;
            };
            let rx = a
                .triggers_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(rx) = rx {
                let engine = self.clone();
                let a = a.clone();
                handles.push(tokio::spawn(async move { engine.supervise(a, rx).await }));
            }
        }
        handles
    }

    /// Asks every supervisor to stop. In-flight waits end; writes in progress finish.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn policy_for(&self, a: &AccountSettings) -> upkeep_core::plan::RenewalPolicy {
        let mut p = self.inner.settings.policy.clone();
        p.trade_weekends |= a.trades_weekends;
        p.trade_holidays |= a.trades_holidays;
        p
    }

    fn plan_for(&self, a: &AccountRuntime, now: Timestamp) -> Plan {
        let current = a.current.borrow().clone();
        let usable = a
            .settings
            .strategies
            .iter()
            .any(|s| s.renews() && !a.is_disabled(*s));
        let view = AccountView {
            token: current.map(|c| TokenSummary {
                expires_at: c.expires_at,
                kind: c.kind,
            }),
            can_renew_daily: usable,
            jitter_seed: jitter_seed(&a.settings.id),
        };
        plan(now, &view, &self.policy_for(&a.settings))
    }

    // The big steps (a renewal, a health check) are boxed: an idle supervisor's future
    // then holds a pointer instead of their whole state, which keeps 10,000 idle
    // accounts small.
    async fn supervise(self, a: Arc<AccountRuntime>, mut rx: mpsc::Receiver<Trigger>) {
        let id = a.settings.id.clone();
        tracing::info!(account = %id, strategies = ?a.settings.strategies.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "supervisor started");
        let health_every = self.inner.settings.health_interval;
        let mut next_health = self.inner.clock.now();
        // After an automatic renewal fails, wait this long before the plan may start
        // another one by itself (a human can always force one).
        let mut cooldown_until: Option<Timestamp> = None;
        // The last expiry warning: (what, for which token expiry, when). Repeated daily
        // while nothing changes; the plan's `at` is "now" once the warning is due, so it
        // cannot be the key.
        let mut warned: Option<(Action, Option<Timestamp>, Timestamp)> = None;
        loop {
            if self.inner.shutdown.is_cancelled() {
                break;
            }
            let now = self.inner.clock.now();
            let p = self.plan_for(&a, now);
            a.status_mut(|s| s.next = Some(p.clone()));

            let mut wake = p.at;
            match p.action {
                Action::RenewNow | Action::RenewAt if p.at <= now => {
                    // Another process (`upkeep token set`, `upkeep renew`, a second daemon)
                    // may have stored a fresh token already: use it rather than log in.
                    if Box::pin(self.adopt_from_store(&a)).await {
                        continue;
                    }
                    if cooldown_until.is_none_or(|c| now >= c) {
                        let deadline = p.deadline.unwrap_or(now + SignedDuration::from_hours(1));
                        let deadline = deadline.max(now + SignedDuration::from_mins(30));
                        let outcome =
                            Box::pin(self.run_renewal(&a, Actor::Schedule, deadline)).await;
                        self.answer_queued(&mut rx, &outcome);
                        cooldown_until = match outcome {
                            RenewOutcome::Renewed { .. } => None,
                            _ => Some(
                                self.inner.clock.now()
                                    + self
                                        .inner
                                        .settings
                                        .retry
                                        .max
                                        .max(SignedDuration::from_mins(15)),
                            ),
                        };
                        continue;
                    }
                    wake = cooldown_until.unwrap_or(now);
                }
                Action::WarnExpiry | Action::ManualNeeded if p.at <= now => {
                    let expiry = a.current.borrow().as_ref().map(|c| c.expires_at);
                    let due = match warned {
                        Some((action, exp, at)) if action == p.action && exp == expiry => {
                            now >= at + SignedDuration::from_hours(24)
                        }
                        _ => true,
                    };
                    if due {
                        warned = Some((p.action, expiry, now));
                        Box::pin(self.warn_no_renewal(&a, &p)).await;
                    }
                    // Nothing to do until the token changes or a trigger arrives.
                    wake = now + SignedDuration::from_hours(6);
                }
                _ => {}
            }

            // Health check of a token that should be valid.
            if now >= next_health {
                next_health = now + health_every;
                if Box::pin(self.adopt_from_store(&a)).await {
                    continue;
                }
                let current = a.current.borrow().clone();
                if let Some(c) = current
                    && c.is_valid_at(now)
                    && Box::pin(self.health_check(&a, &c)).await
                {
                    // Found invalid early: renew now.
                    let deadline = now + SignedDuration::from_hours(1);
                    let outcome = Box::pin(self.run_renewal(&a, Actor::Health, deadline)).await;
                    self.answer_queued(&mut rx, &outcome);
                    continue;
                }
            }
            wake = wake.min(next_health);

            let mut changes = a.current.subscribe();
            changes.mark_unchanged();
            let remaining = Duration::try_from(wake.duration_since(self.inner.clock.now()))
                .unwrap_or(Duration::ZERO);
            let chunk = remaining
                .min(self.inner.settings.poll)
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = tokio::time::sleep(chunk) => {}
                _ = changes.changed() => { cooldown_until = None; }
                t = rx.recv() => {
                    let Some(t) = t else { break };
                    let outcome = Box::pin(self.handle_trigger(&a, t.kind, t.actor)).await;
                    let _ = t.reply.send(outcome.clone());
                    self.answer_queued(&mut rx, &outcome);
                    if matches!(outcome, RenewOutcome::Renewed { .. }) {
                        cooldown_until = None;
                    }
                }
            }
        }
        // Refuse whatever is still queued.
        rx.close();
        while let Ok(t) = rx.try_recv() {
            let _ = t.reply.send(RenewOutcome::Cancelled);
        }
        tracing::info!(account = %id, "supervisor stopped");
    }

    /// Triggers that arrived while a renewal ran share its outcome (single-flight).
    fn answer_queued(&self, rx: &mut mpsc::Receiver<Trigger>, outcome: &RenewOutcome) {
        while let Ok(t) = rx.try_recv() {
            let _ = t.reply.send(outcome.clone());
        }
    }

    async fn handle_trigger(
        &self,
        a: &AccountRuntime,
        kind: TriggerKind,
        actor: Actor,
    ) -> RenewOutcome {
        let now = self.inner.clock.now();
        match kind {
            TriggerKind::Reactive { fingerprint } => {
                if a.current
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| c.fingerprint != fingerprint)
                {
                    return RenewOutcome::AlreadyRotated;
                }
            }
            TriggerKind::Force => {
                // A human asked: give strategies stopped by a fatal error another go.
                a.disabled.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
        }
        let p = self.plan_for(a, now);
        // A forced or reactive renewal is about now: use today's window deadline when
        // it is near, otherwise give it an hour (not tomorrow's deadline: the caller waits).
        let deadline = p
            .deadline
            .filter(|d| {
                *d > now + SignedDuration::from_mins(30)
                    && *d <= now + SignedDuration::from_hours(4)
            })
            .unwrap_or(now + SignedDuration::from_hours(1));
        self.run_renewal(a, actor, deadline).await
    }

    /// Profile call with the current token. Returns true when the token is found
    /// invalid (expired early or revoked) and should be replaced.
    /// Adopts the store's current token if another process stored a newer valid one.
    /// Returns whether the in-memory token changed.
    async fn adopt_from_store(&self, a: &AccountRuntime) -> bool {
        let id = &a.settings.id;
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
        a.publish(current);
        true
    }

    async fn health_check(&self, a: &AccountRuntime, c: &CurrentToken) -> bool {
        if a.settings.env == "sandbox" {
            // Sandbox tokens only work on the sandbox order APIs; profile is not one.
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
        let now = self.inner.clock.now();
        let (validated, problem, renew) = match &result {
            Ok(_) => (Some(true), None, false),
            Err(e) => match e.class() {
                ErrorClass::TokenInvalid => {
                    let expired = now >= c.expires_at;
                    let why = if expired { "expired" } else { "revoked" };
                    // Only a token refused before its expiry is replaced at once; an
                    // expired one is renewed by the plan, in the morning window.
                    (
                        Some(false),
                        Some(why.to_owned()),
                        !expired && a.settings.can_renew_daily(),
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
        a.status_mut(|s| {
            if validated.is_some() {
                s.api_validated = validated;
            }
            s.last_check = Some(now);
            s.last_check_problem = problem.clone();
        });
        let id = &a.settings.id;
        metrics::gauge!("upkeep_token_api_validated", "account" => id.clone())
            .set(if validated == Some(true) { 1.0 } else { 0.0 });
        if let Some(p) = &problem
            && validated == Some(false)
        {
            tracing::warn!(account = %id, problem = %p, token_fp = %c.fingerprint, "health check: Upstox refused the current token");
            self.audit(id, Actor::Health, "health_check", "invalid", p)
                .await;
        }
        renew
    }

    async fn warn_no_renewal(&self, a: &AccountRuntime, p: &Plan) {
        let id = &a.settings.id;
        let current = a.current.borrow().clone();
        let when = current
            .as_ref()
            .map(|c| format_ist(c.expires_at))
            .unwrap_or_else(|| "now".into());
        let link = self.login_link(id);
        let (kind, title) = match p.action {
            Action::ManualNeeded => (AlertKind::ManualActionNeeded, "Token expired: log in"),
            _ => (
                AlertKind::ExpiringNoRenewal,
                "Token expiring, no automatic renewal",
            ),
        };
        let mut alert = Alert::new(
            kind,
            id.clone(),
            title,
            format!("The token of account {id} expires at {when}. {}", p.reason),
            self.inner.clock.now(),
        );
        if let Some(link) = link {
            alert = alert.with_link(link);
        }
        self.alert(alert).await;
    }

    /// Runs the account's strategies in order until one yields a token that is
    /// accepted, or all fail. Transient failures retry with exponential backoff and
    /// jitter, capped by `deadline`.
    pub(crate) async fn run_renewal(
        &self,
        a: &AccountRuntime,
        actor: Actor,
        deadline: Timestamp,
    ) -> RenewOutcome {
        self.run_renewal_with(a, actor, deadline, true).await
    }

    async fn run_renewal_with(
        &self,
        a: &AccountRuntime,
        actor: Actor,
        deadline: Timestamp,
        interactive: bool,
    ) -> RenewOutcome {
        let id = a.settings.id.clone();
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        match store
            .try_acquire_lease(&id, &self.inner.holder, now, self.inner.settings.lease_ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(account = %id, "another upkeep process is renewing this account");
                return RenewOutcome::Busy;
            }
            Err(e) => {
                tracing::error!(account = %id, error = %e, "cannot take the renewal lease");
                return RenewOutcome::Failed {
                    reason: format!("store unavailable: {e}"),
                };
            }
        }
        a.status_mut(|s| s.renewing = true);
        let started = tokio::time::Instant::now();
        self.audit(
            &id,
            actor,
            "renewal_started",
            "started",
            &format!("deadline {}", format_ist(deadline)),
        )
        .await;
        // A renewal can outlast the lease (retries through an outage, a wait for a
        // human): keep extending it, and stop if another process took it over.
        let outcome = tokio::select! {
            o = self.try_strategies(a, actor, deadline, interactive) => o,
            () = self.keep_lease(&id) => RenewOutcome::Busy,
        };
        let elapsed = started.elapsed().as_secs_f64();
        let _ = store.release_lease(&id, &self.inner.holder).await;
        a.status_mut(|s| s.renewing = false);
        let now = self.inner.clock.now();
        match &outcome {
            RenewOutcome::Renewed {
                strategy,
                fingerprint,
            } => {
                metrics::counter!("upkeep_renewals_total", "account" => id.clone(), "strategy" => strategy.clone(), "result" => "success").increment(1);
                metrics::histogram!("upkeep_renewal_duration_seconds").record(elapsed);
                a.status_mut(|s| s.last_renewal = Some((now, strategy.clone(), "success".into())));
                self.audit(
                    &id,
                    actor,
                    "renewal_succeeded",
                    strategy,
                    &format!("token fp={fingerprint}"),
                )
                .await;
                self.alert(Alert::new(
                    AlertKind::Recovered,
                    id.clone(),
                    "Token renewed",
                    format!("Account {id} has a fresh token (strategy {strategy})."),
                    now,
                ))
                .await;
            }
            RenewOutcome::Failed { reason } => {
                metrics::counter!("upkeep_renewals_total", "account" => id.clone(), "strategy" => "all", "result" => "failure").increment(1);
                a.status_mut(|s| s.last_renewal = Some((now, "none".into(), "failed".into())));
                self.audit(&id, actor, "renewal_failed", "failed", reason)
                    .await;
                let mut alert = Alert::new(
                    AlertKind::ManualActionNeeded,
                    id.clone(),
                    "Renewal failed: log in",
                    format!(
                        "Every renewal strategy of account {id} failed ({reason}). Open the link to log in with Upstox."
                    ),
                    now,
                );
                if let Some(link) = self.login_link(&id) {
                    alert = alert.with_link(link);
                }
                self.alert(alert).await;
            }
            _ => {}
        }
        outcome
    }

    /// Extends the account's renewal lease every third of its lifetime (clock time).
    /// Returns only if the lease was lost to another holder (it had expired, e.g. while
    /// the machine was suspended); store errors are logged and retried.
    async fn keep_lease(&self, id: &str) {
        let ttl = self.inner.settings.lease_ttl;
        let every = SignedDuration::try_from(ttl / 3)
            .unwrap_or(SignedDuration::from_mins(1))
            .max(SignedDuration::from_secs(1));
        loop {
            if !self.sleep_until(self.inner.clock.now() + every).await {
                // Shutting down: the renewal itself stops; nothing is left to keep.
                return std::future::pending().await;
            }
            let now = self.inner.clock.now();
            match self
                .inner
                .store
                .try_acquire_lease(id, &self.inner.holder, now, ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(account = %id, "another upkeep process took over the renewal lease; stopping this renewal");
                    return;
                }
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "could not extend the renewal lease");
                }
            }
        }
    }

    async fn try_strategies(
        &self,
        a: &AccountRuntime,
        actor: Actor,
        deadline: Timestamp,
        interactive: bool,
    ) -> RenewOutcome {
        let id = a.settings.id.clone();
        let mut reasons = Vec::new();
        for &kind in &a.settings.strategies {
            if !kind.renews() {
                continue;
            }
            if !interactive && kind.needs_human() {
                reasons.push(format!(
                    "{}: needs the daemon (`upkeep serve`) running",
                    kind.as_str()
                ));
                continue;
            }
            if a.is_disabled(kind) {
                reasons.push(format!("{}: disabled after a fatal error", kind.as_str()));
                continue;
            }
            let mut delay = self.inner.settings.retry.first;
            loop {
                if self.inner.shutdown.is_cancelled() {
                    return RenewOutcome::Cancelled;
                }
                // Shutdown cancels a strategy mid-flight (an HTTP step of a login, a wait
                // for approval); nothing is written until a token is accepted, and that
                // write runs in a task of its own.
                let result = tokio::select! {
                    r = strategies::obtain(self, a, kind, deadline) => r,
                    _ = self.inner.shutdown.cancelled() => return RenewOutcome::Cancelled,
                };
                let failure = match result {
                    Ok(Obtained::Token { token, validate }) => {
                        match self
                            .accept_token(&id, token, kind.as_str(), actor, validate)
                            .await
                        {
                            Ok(c) => {
                                return RenewOutcome::Renewed {
                                    strategy: kind.as_str().to_owned(),
                                    fingerprint: c.fingerprint.clone(),
                                };
                            }
                            Err(reason) => Failure::Fatal(format!("token refused: {reason}")),
                        }
                    }
                    Ok(Obtained::Delivered(c)) => {
                        return RenewOutcome::Renewed {
                            strategy: c.source.clone(),
                            fingerprint: c.fingerprint.clone(),
                        };
                    }
                    Err(f) => f,
                };
                match failure {
                    Failure::Cancelled => return RenewOutcome::Cancelled,
                    Failure::NotApplicable(why) => {
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::Fatal(why) => {
                        tracing::error!(account = %id, strategy = kind.as_str(), reason = %why, "strategy failed fatally; not retrying it");
                        a.disabled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(kind);
                        self.audit(
                            &id,
                            actor,
                            "strategy_failed",
                            "fatal",
                            &format!("{}: {why}", kind.as_str()),
                        )
                        .await;
                        self.alert(Alert::new(
                            AlertKind::RenewalFatal,
                            id.clone(),
                            format!("Strategy {} failed", kind.as_str()),
                            format!("{why}. upkeep will not retry it automatically (to avoid a lockout); fix it and run `upkeep renew --account {id}`."),
                            self.inner.clock.now(),
                        ))
                        .await;
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::TimedOut(why) => {
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::Transient {
                        reason,
                        retry_after,
                    } => {
                        let now = self.inner.clock.now();
                        // Retry-After comes from the network: never let it overflow the
                        // clock arithmetic (past the deadline is past the deadline).
                        let wait = retry_after.unwrap_or_else(|| jittered(delay));
                        let retry_at = now.checked_add(wait).unwrap_or(deadline);
                        let at_risk = retry_at.checked_add(wait).unwrap_or(deadline);
                        tracing::warn!(account = %id, strategy = kind.as_str(), %reason, retry_in = %wait, "transient failure; retrying");
                        if retry_at >= deadline {
                            self.audit(
                                &id,
                                actor,
                                "strategy_failed",
                                "transient",
                                &format!("{}: {reason} (deadline reached)", kind.as_str()),
                            )
                            .await;
                            reasons.push(format!("{}: {reason}", kind.as_str()));
                            break;
                        }
                        if at_risk >= deadline {
                            let mut alert = Alert::new(
                                AlertKind::DeadlineAtRisk,
                                id.clone(),
                                "Renewal deadline at risk",
                                format!(
                                    "Strategy {} keeps failing ({reason}); the deadline is {}. \
                                     Log in with the link to be safe.",
                                    kind.as_str(),
                                    format_ist(deadline)
                                ),
                                now,
                            );
                            if let Some(link) = self.login_link(&id) {
                                alert = alert.with_link(link);
                            }
                            self.alert(alert).await;
                        }
                        if !self.sleep_until(retry_at).await {
                            return RenewOutcome::Cancelled;
                        }
                        delay = (delay * 2).min(self.inner.settings.retry.max);
                    }
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("no renewing strategy is configured".into());
        }
        RenewOutcome::Failed {
            reason: reasons.join("; "),
        }
    }
}

/// Full jitter between half and all of `d`.
fn jittered(d: SignedDuration) -> SignedDuration {
    let ms = d.as_millis().max(2) as u64;
    let half = ms / 2;
    let extra = rand::random::<u64>() % (half + 1);
    SignedDuration::from_millis((half + extra) as i64)
}

pub(crate) fn short_error(e: &UpstoxError) -> String {
    truncate_chars(e.to_string(), 200)
}

/// At most `max` bytes, cut at a character boundary (error text may hold a server's
/// non-ASCII message; `String::truncate` panics inside a character).
fn truncate_chars(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::truncate_chars;

    #[test]
    fn long_error_text_is_cut_at_a_character_boundary_not_mid_character() {
        // 199 ASCII bytes then a 3-byte character straddling byte 200.
        let text = format!("{}₹ and more", "x".repeat(199));
        let cut = truncate_chars(text, 200);
        assert_eq!(cut, "x".repeat(199));
        assert_eq!(truncate_chars("short".into(), 200), "short");
    }
}
