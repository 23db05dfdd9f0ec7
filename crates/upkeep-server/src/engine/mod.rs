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
use upkeep_core::expiry::{TokenKind, inspect};
use upkeep_core::plan::Plan;
use upkeep_core::state::TokenState;
use upkeep_core::{AccessToken, Clock};
use upkeep_store::{AuditEvent, MasterKey, StoredToken, TokenStore};
use upkeep_upstox::{UpstoxClient, UpstoxError};

use crate::alerts::{Alert, Alerter};
use crate::oauth_state::StateBook;
use crate::settings::{AccountSettings, DaemonSettings, StrategyKind};

pub mod calendar;
mod escalation;
pub(crate) use escalation::when;
mod health;
mod latch;
pub use latch::latch_name;
mod lease;
mod publish;
mod reload;
pub use reload::{ReloadSummary, Reloader};
mod renewal;
mod supervisor;
mod tasks;

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
    /// The token endpoint's answer for this token, rendered on the first read (it
    /// goes, zeroized, with the token: a rotation makes a new `CurrentToken`).
    pub(crate) api_body: crate::api::TokenBody,
    /// `Bearer <token>` as the gateway sends it upstream, rendered on first use (goes,
    /// zeroized, with the token).
    pub(crate) bearer: crate::gateway::BearerHeader,
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
            api_body: Default::default(),
            bearer: Default::default(),
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
    /// The daemon itself (conditions it noticed).
    Daemon,
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
            Actor::Daemon => "daemon",
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
    #[error(
        "this account's Upstox user is not known yet, so a token delivered by webhook cannot \
         be trusted; set user_id in the account's config, or log in once (TOTP, the login \
         link, `upkeep token set`)"
    )]
    UserUnknown,
    #[error("the token is older than the current one (issued {0}); it does not replace it")]
    Stale(String),
    #[error("the store refused the token: {0}")]
    Store(String),
}

/// The store secret that remembers an account's Upstox user once a path that proves
/// it (a login with the account's own credentials, the OAuth callback, an operator's
/// import) has stored a token. Sealed like every secret, bound to the account.
pub(crate) const KNOWN_USER_SECRET: &str = "upstox_user_id";

enum TriggerKind {
    Force,
    Reactive {
        fingerprint: String,
    },
    /// Test builds only: the supervisor panics (to prove it is restarted).
    #[cfg(feature = "testing")]
    Panic,
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
    /// No working token and renewing has failed since then (the alert ladder's
    /// incident); `None` when there is no such trouble.
    pub failing_since: Option<Timestamp>,
    pub disabled: Vec<String>,
    /// Problems that need attention though the token may be fine, by name
    /// (`store_write_failing`, `sink_write_failing`) with their last error.
    pub conditions: std::collections::BTreeMap<String, String>,
    /// The account's supervisor task is running.
    pub supervisor_alive: bool,
    /// How often it was restarted after a panic.
    pub supervisor_restarts: u32,
}

/// A health check's verdict as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCheck {
    pub at: Timestamp,
    /// Upstox refused the token.
    pub refused: bool,
    /// Why (expired, revoked, not permitted), when refused.
    pub problem: Option<String>,
}

/// See [`Engine::recorded_view`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedView {
    /// The latest recorded health-check verdict about the current token.
    pub last_check: Option<RecordedCheck>,
    /// Conditions a daemon recorded and has not cleared.
    pub conditions: std::collections::BTreeMap<String, String>,
}

/// Something that happened, as live watchers see it: every audit event (renewals,
/// token changes, health checks, conditions) and every alert. Never holds a token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineEvent {
    pub account: String,
    /// `"audit"` or `"alert"`.
    pub source: &'static str,
    /// The audit kind (`renewal_succeeded`, `token_stored`, `health_check`, ...) or the
    /// alert kind (`manual_action_needed`, ...).
    pub kind: String,
    pub outcome: String,
    pub detail: String,
    /// IST, RFC 3339.
    pub at: String,
}

/// The store refused a write (disk full, database down).
pub const CONDITION_STORE: &str = "store_write_failing";
/// A legacy token file or the backup could not be written.
pub const CONDITION_SINK: &str = "sink_write_failing";

pub(crate) struct AccountRuntime {
    pub(crate) id: String,
    /// Swapped whole by a reload (`upkeep reload`, SIGHUP).
    settings: Mutex<Arc<AccountSettings>>,
    /// Stops this account's supervisor (the account left the configuration, or the
    /// daemon stops: a child of the engine's shutdown).
    pub(crate) stop: CancellationToken,
    /// Wakes the supervisor to plan again at once (its settings changed).
    pub(crate) replan: tokio::sync::Notify,
    current: watch::Sender<Option<Arc<CurrentToken>>>,
    triggers: mpsc::Sender<Trigger>,
    /// The supervisor holds the lock while it runs; a restarted one takes it over.
    triggers_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Trigger>>>,
    status: Mutex<AccountStatus>,
    disabled: Mutex<HashSet<StrategyKind>>,
    /// The UCC tokens of this account must belong to, once known.
    expected_user: Mutex<Option<String>>,
    /// Held while a token is being stored and published.
    publishing: tokio::sync::Mutex<()>,
    /// The token files do not hold the current token yet (a write failed).
    sinks_pending: std::sync::atomic::AtomicBool,
    /// The current token, when the store has not taken it yet (it is valid whatever
    /// the store says; saved again until the store takes it).
    unsaved: Mutex<Option<Arc<CurrentToken>>>,
    /// A rotated refresh token the store has not taken yet (the old one is dead).
    pending_refresh: Mutex<Option<upkeep_core::Secret>>,
    /// Completed passes of the supervisor's loop (each one read the clock, planned,
    /// and acted on what was due).
    passes: std::sync::atomic::AtomicU64,
    /// No working token while there should be one, and renewing fails: the alert
    /// ladder's state (see `escalation`).
    /// Boxed: most accounts never have one, and idle accounts should stay small.
    incident: Mutex<Option<Box<escalation::Incident>>>,
    /// The fingerprint of the token that ended the last incident whose alerts went out
    /// (set under the `incident` lock, so a renewal that brought that token knows its
    /// recovery alert is the ladder's).
    resolved_by: Mutex<Option<String>>,
    /// A human asked for a renewal: a strategy waiting for a login or an approval gives
    /// up its wait, so the forced renewal starts now instead of queueing behind it.
    interrupt: tokio::sync::Notify,
}

impl AccountRuntime {
    /// The account's settings now (a reload may swap them).
    pub(crate) fn settings(&self) -> Arc<AccountSettings> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn set_settings(&self, settings: AccountSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }
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
    pub(crate) fn set_pending_refresh(&self, token: upkeep_core::Secret) {
        *self
            .pending_refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(token);
    }
    pub(crate) fn pending_refresh(&self) -> Option<upkeep_core::Secret> {
        self.pending_refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Sets a condition; true if it was not set before.
    fn set_condition(&self, name: &str, detail: &str) -> bool {
        self.status_mut(|s| {
            s.conditions
                .insert(name.to_owned(), detail.to_owned())
                .is_none()
        })
    }
    /// Clears a condition; true if it was set.
    fn clear_condition(&self, name: &str) -> bool {
        self.status_mut(|s| s.conditions.remove(name).is_some())
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
    /// Swapped whole by a reload.
    settings: Mutex<Arc<DaemonSettings>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) upstox: UpstoxClient,
    alerter: Mutex<Option<Alerter>>,
    pub(crate) master_key: MasterKey,
    pub(crate) states: StateBook,
    /// Single-use sign-in links of the dashboard (`upkeep dashboard-link`).
    pub(crate) signins: StateBook,
    /// The supervised accounts; a reload replaces the set.
    accounts: Mutex<Arc<Accounts>>,
    /// Serializes reloads.
    reloading: tokio::sync::Mutex<()>,
    /// Re-reads the configuration for a reload (set by the binary).
    reloader: Mutex<Option<reload::Reloader>>,
    /// Supervisors started by a reload (awaited at shutdown like the first ones).
    pub(crate) late_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) shutdown: CancellationToken,
    /// Every audit event and alert, for live watchers (`GET /api/v1/events`).
    pub(crate) events: tokio::sync::broadcast::Sender<EngineEvent>,
    pub(crate) holder: String,
    /// Completed rounds of the alert ladder's task.
    pub(crate) escalation_passes: std::sync::atomic::AtomicU64,
    /// The trading calendar the plan uses.
    pub(crate) calendar: calendar::CalendarKeeper,
}

/// The accounts, by id and in configuration order.
#[derive(Default)]
pub(crate) struct Accounts {
    pub(crate) map: HashMap<String, Arc<AccountRuntime>>,
    pub(crate) order: Vec<String>,
}

/// The account's user as the store knows it: the remembered proven user, else the
/// current token's user if that token came through a path that proves it (then it is
/// remembered). A token that arrived by webhook proves nothing.
async fn known_user_from_store(
    store: &dyn TokenStore,
    account: &str,
    current: Option<&CurrentToken>,
) -> Result<Option<String>, upkeep_store::StoreError> {
    if let Some(u) = store.get_secret(account, KNOWN_USER_SECRET).await? {
        return Ok(Some(u.expose().to_owned()));
    }
    let Some(user) = current
        .filter(|c| c.source != WEBHOOK_SOURCE)
        .and_then(|c| c.user_id.clone())
    else {
        return Ok(None);
    };
    store
        .put_secret(
            account,
            KNOWN_USER_SECRET,
            &upkeep_core::Secret::new(user.clone()),
        )
        .await?;
    Ok(Some(user))
}

/// Whether a configured legacy token file (JSON or .env) does not hold `token`.
fn sinks_behind(sinks: &crate::settings::SinkSettings, token: &AccessToken) -> bool {
    [sinks.json_file.as_deref(), sinks.env_file.as_deref()]
        .into_iter()
        .flatten()
        .any(|path| {
            use std::io::Read as _;
            let mut text = String::new();
            let read =
                std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_string(&mut text));
            read.is_err() || !text.contains(token.expose())
        })
}

/// An account's runtime with its current token from the store (latches not loaded).
async fn new_runtime(
    store: &dyn TokenStore,
    a: AccountSettings,
    stop: CancellationToken,
    now: Timestamp,
) -> Result<AccountRuntime, upkeep_store::StoreError> {
    store.upsert_account(&a.id, &a.env, now).await?;
    let current = store
        .current_token(&a.id)
        .await?
        .map(|t| Arc::new(CurrentToken::from_stored(t)));
    let expected = match &a.user_id {
        Some(u) => Some(u.clone()),
        None => known_user_from_store(store, &a.id, current.as_deref()).await?,
    };
    let (tx, rx) = mpsc::channel(64);
    let (current_tx, _) = watch::channel(current);
    Ok(AccountRuntime {
        id: a.id.clone(),
        settings: Mutex::new(Arc::new(a)),
        stop,
        replan: tokio::sync::Notify::new(),
        current: current_tx,
        triggers: tx,
        triggers_rx: Arc::new(tokio::sync::Mutex::new(rx)),
        status: Mutex::new(AccountStatus::default()),
        disabled: Mutex::new(HashSet::new()),
        expected_user: Mutex::new(expected),
        publishing: tokio::sync::Mutex::new(()),
        sinks_pending: std::sync::atomic::AtomicBool::new(false),
        unsaved: Mutex::new(None),
        pending_refresh: Mutex::new(None),
        passes: std::sync::atomic::AtomicU64::new(0),
        incident: Mutex::new(None),
        resolved_by: Mutex::new(None),
        interrupt: tokio::sync::Notify::new(),
    })
}

/// The `source` of tokens delivered by Upstox's notifier webhook.
pub(crate) const WEBHOOK_SOURCE: &str = "token_request";

impl Engine {
    /// Loads each account's current token from the store into memory. Starts nothing.
    pub async fn new(deps: EngineDeps) -> Result<Self, upkeep_store::StoreError> {
        let now = deps.clock.now();
        let mut accounts = HashMap::new();
        let mut order = Vec::new();
        let shutdown = CancellationToken::new();
        for a in &deps.settings.accounts {
            let runtime =
                new_runtime(deps.store.as_ref(), a.clone(), shutdown.child_token(), now).await?;
            order.push(a.id.clone());
            accounts.insert(a.id.clone(), Arc::new(runtime));
        }
        // A daemon killed between storing a token and writing the token files leaves
        // them behind the store: check them once at start (the supervisor rewrites them).
        if let Some(a) = order.first().and_then(|id| accounts.get(id))
            && let Some(c) = a.current.borrow().as_ref()
            && sinks_behind(&deps.settings.sinks, &c.token)
        {
            tracing::warn!(account = %a.id, "the token files do not hold the current token; rewriting them");
            a.sinks_pending
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let states = StateBook::new(deps.master_key.to_hex().as_bytes());
        let signins = StateBook::with_purpose(
            b"upkeep/dashboard-signin/v1",
            deps.master_key.to_hex().as_bytes(),
            SignedDuration::from_mins(10),
        );
        let holder = lease::holder_id();
        let stored_calendar = Self::stored_calendar(deps.store.as_ref(), now).await;
        let engine = Self {
            inner: Arc::new(Inner {
                settings: Mutex::new(Arc::new(deps.settings)),
                clock: deps.clock,
                store: deps.store,
                upstox: deps.upstox,
                alerter: Mutex::new(deps.alerter),
                master_key: deps.master_key,
                states,
                signins,
                accounts: Mutex::new(Arc::new(Accounts {
                    map: accounts,
                    order,
                })),
                reloading: tokio::sync::Mutex::new(()),
                reloader: Mutex::new(None),
                late_tasks: Mutex::new(Vec::new()),
                shutdown,
                holder,
                events: tokio::sync::broadcast::channel(256).0,
                escalation_passes: std::sync::atomic::AtomicU64::new(0),
                calendar: calendar::CalendarKeeper::new(stored_calendar),
            }),
        };
        for a in engine.accounts().map.values() {
            engine.load_latches(a).await;
        }
        Ok(engine)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
    /// The daemon's settings now (a reload may swap them).
    pub fn settings(&self) -> Arc<DaemonSettings> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub(crate) fn accounts(&self) -> Arc<Accounts> {
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.inner.store
    }
    pub fn upstox(&self) -> &UpstoxClient {
        &self.inner.upstox
    }
    pub fn alerter(&self) -> Option<Alerter> {
        self.inner
            .alerter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub(crate) fn states(&self) -> &StateBook {
        &self.inner.states
    }
    /// Account ids in configuration order.
    pub fn account_ids(&self) -> Vec<String> {
        self.accounts().order.clone()
    }
    /// The default account: the first configured one.
    pub fn default_account(&self) -> Option<String> {
        self.accounts().order.first().cloned()
    }
    pub(crate) fn account(&self, id: &str) -> Option<Arc<AccountRuntime>> {
        self.accounts().map.get(id).cloned()
    }
    pub fn account_settings(&self, id: &str) -> Option<Arc<AccountSettings>> {
        self.account(id).map(|a| a.settings())
    }
    /// Cancelled when the account stops: removed by a reload, or the daemon stopping
    /// (`None` for an account not configured now).
    pub fn account_stop(&self, id: &str) -> Option<CancellationToken> {
        self.account(id).map(|a| a.stop.clone())
    }
    /// Finds the account an app's client id belongs to.
    pub fn account_for_client(&self, client_id: &str) -> Option<String> {
        let accounts = self.accounts();
        accounts
            .order
            .iter()
            .find(|id| {
                accounts
                    .map
                    .get(*id)
                    .is_some_and(|a| a.settings().client_id == client_id)
            })
            .cloned()
    }

    /// The Upstox user (UCC) the account's tokens must belong to, if known: from the
    /// config's `user_id`, or learned from a path that proves it.
    pub fn known_user(&self, account: &str) -> Option<String> {
        self.account(account).and_then(|a| a.expected_user())
    }

    /// How many passes the account's supervisor has completed. A pass that starts after
    /// the clock was moved sees the new time: tests wait for passes, not wall time,
    /// before asserting that something did not happen.
    pub fn supervisor_passes(&self, account: &str) -> u64 {
        self.account(account)
            .map(|a| a.passes.load(std::sync::atomic::Ordering::Acquire))
            .unwrap_or(0)
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

    /// What the token endpoint needs, without copying the status: `None` for an
    /// unknown account, else the current token and whether Upstox refused it at the
    /// last health check.
    pub fn token_for_reading(&self, account: &str) -> Option<(Option<Arc<CurrentToken>>, bool)> {
        let a = self.account(account)?;
        let refused = a.status_mut(|s| s.api_validated == Some(false));
        Some((a.current.borrow().clone(), refused))
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
            s.failing_since = a
                .incident
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|i| i.since());
            s
        })
    }

    /// The token's display state now.
    pub fn token_state(&self, account: &str) -> Option<TokenState> {
        let now = self.inner.clock.now();
        self.current(account)
            .map(|c| TokenState::at(c.expires_at, now, &self.settings().thresholds))
    }

    /// A single-use link (10 minutes) that signs a browser into the dashboard. Any
    /// process holding the master key can mint it; the daemon redeems it once.
    pub fn dashboard_link(&self) -> String {
        let token = self.inner.signins.mint("dashboard", self.inner.clock.now());
        format!(
            "{}/dashboard/signin?token={token}",
            self.settings().public_url.trim_end_matches('/')
        )
    }

    /// Redeems a dashboard sign-in token (once).
    pub(crate) fn redeem_signin(&self, token: &str) -> Result<(), crate::oauth_state::StateError> {
        self.inner
            .signins
            .redeem(token, self.inner.clock.now())
            .map(drop)
    }

    /// A login link for the browser OAuth flow (works from a phone): the Upstox
    /// dialog URL with a fresh single-use `state`.
    pub fn login_link(&self, account: &str) -> Option<String> {
        let a = self.account(account)?;
        let state = self.inner.states.mint(account, self.inner.clock.now());
        Some(
            self.inner
                .upstox
                .authorize_url(&a.settings().client_id, &a.settings().redirect_uri, &state)
                .to_string(),
        )
    }

    /// Runs a renewal in the calling task with the account's strategies that need no
    /// human (totp, refresh_token), for one-shot use by the CLI when no daemon's
    /// supervisors run in this process. The store lease still keeps it exclusive.
    pub async fn renew_now(&self, account: &str, actor: Actor) -> RenewOutcome {
        let Some(a) = self.account(account) else {
            return RenewOutcome::Failed {
                reason: format!("no account `{account}` is configured"),
            };
        };
        // A human asked: strategies stopped by a credential or configuration fault get
        // another go (the fix is presumably in).
        if let Err(e) = self.reset_strategies(account, None).await {
            tracing::warn!(account, error = %e, "cannot clear the lockout latches");
        }
        let deadline = self.inner.clock.now() + SignedDuration::from_mins(10);
        self.run_renewal_with(&a, actor, deadline, false).await
    }

    /// Asks for a renewal now. Concurrent calls share one renewal. A renewal that is
    /// waiting for a human (a login link, an approval in the Upstox app) is cut short
    /// and a new one started with the latches cleared: the human's fix may be in.
    pub async fn renew(&self, account: &str, actor: Actor) -> RenewOutcome {
        if let Some(a) = self.account(account) {
            a.interrupt.notify_waiters();
        }
        self.send_trigger(account, TriggerKind::Force, actor).await
    }

    /// Resolves when a human forces a renewal of `account` (see [`Engine::renew`]).
    pub(crate) async fn interrupted(&self, account: &str) {
        match self.account(account) {
            Some(a) => a.interrupt.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Makes the account's supervisor panic (feature `testing`, for tests of the
    /// supervision). Returns what the restarted supervisor... nothing: the trigger's
    /// reply is dropped with the panicking task.
    #[cfg(feature = "testing")]
    pub async fn inject_supervisor_panic(&self, account: &str) -> RenewOutcome {
        self.send_trigger(account, TriggerKind::Panic, Actor::Cli)
            .await
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
        self.emit(EngineEvent {
            account: account.to_owned(),
            source: "audit",
            kind: kind.to_owned(),
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
            at: upkeep_core::expiry::format_ist(event.at),
        });
        let Some(a) = self.account(account) else {
            if let Err(e) = self.inner.store.record_event(event).await {
                tracing::error!(account, error = %e, "could not record an audit event");
            }
            return;
        };
        match self.inner.store.record_event(event).await {
            Ok(_) => {
                if a.clear_condition(CONDITION_STORE) {
                    tracing::info!(account, "the store takes writes again");
                    let cleared = AuditEvent {
                        account: account.to_owned(),
                        at: self.inner.clock.now(),
                        actor: Actor::Daemon.as_str().to_owned(),
                        kind: "condition".into(),
                        outcome: "cleared".into(),
                        detail: CONDITION_STORE.into(),
                    };
                    let _ = self.inner.store.record_event(cleared).await;
                }
            }
            Err(e) => {
                self.store_failed(&a, "an audit event", &e.to_string())
                    .await;
            }
        }
    }

    /// A receiver of every [`EngineEvent`] from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, event: EngineEvent) {
        // No receiver is fine: nobody is watching.
        let _ = self.inner.events.send(event);
    }

    pub(crate) async fn alert(&self, alert: Alert) {
        self.emit(EngineEvent {
            account: alert.account.clone(),
            source: "alert",
            kind: alert.kind.as_str().to_owned(),
            outcome: alert.title.clone(),
            detail: alert.message.clone(),
            at: upkeep_core::expiry::format_ist(alert.at),
        });
        if let Some(alerter) = self.alerter() {
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
            let chunk = remaining.min(self.settings().poll);
            tokio::select! {
                _ = tokio::time::sleep(chunk) => {}
                _ = self.inner.shutdown.cancelled() => return false,
            }
        }
    }

    /// What the store's audit log says about the account's current token and open
    /// conditions: what another process (the CLI) can know of a running daemon's view.
    pub async fn recorded_view(&self, account: &str) -> RecordedView {
        let mut view = RecordedView::default();
        let fp = self.current(account).map(|c| c.fingerprint.clone());
        let Ok(events) = self.inner.store.events(Some(account), 500).await else {
            return view;
        };
        let mut settled = std::collections::BTreeSet::new();
        // Newest first: the first verdict about the current token wins; the first
        // event about a condition decides whether it is open.
        for (_, e) in events {
            match e.kind.as_str() {
                "health_check"
                    if view.last_check.is_none()
                        && fp
                            .as_ref()
                            .is_some_and(|fp| e.detail.ends_with(&format!("token fp={fp}"))) =>
                {
                    let problem = e
                        .detail
                        .split(" token fp=")
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    view.last_check = Some(RecordedCheck {
                        at: e.at,
                        refused: e.outcome == "invalid",
                        problem: (e.outcome == "invalid").then_some(problem),
                    });
                }
                "condition" => {
                    let (name, detail) = e.detail.split_once(": ").unwrap_or((&e.detail, ""));
                    if settled.insert(name.to_owned()) && e.outcome == "set" {
                        view.conditions.insert(name.to_owned(), detail.to_owned());
                    }
                }
                _ => {}
            }
        }
        view
    }

    /// Deletes audit events older than the retention (`settings.audit_retention`).
    pub async fn prune_audit_log(&self) {
        let before = self.inner.clock.now() - self.settings().audit_retention;
        match self.inner.store.prune_events(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned audit events past the retention"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
        }
    }

    /// Asks every supervisor to stop. In-flight waits end; writes in progress finish.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }
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
