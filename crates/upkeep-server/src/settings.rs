//! What the daemon needs to know, in the daemon's own terms. The binary builds these
//! from `upkeep_core::config::Config`; tests build them directly.

use std::path::PathBuf;
use std::time::Duration;

use jiff::SignedDuration;
use upkeep_core::Secret;
use upkeep_core::plan::RenewalPolicy;
use upkeep_core::state::Thresholds;

/// One renewal strategy, in the order an account lists them (`renew = [...]`).
/// The same type the configuration uses.
pub use upkeep_core::config::Strategy as StrategyKind;

/// Headless-login credentials.
#[derive(Debug, Clone)]
pub struct TotpSettings {
    pub mobile: String,
    pub pin: Secret,
    pub secret: Secret,
}

/// Generic OAuth2 refresh-token settings.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    pub token_url: String,
    /// The initial refresh token; a rotated one is kept in the store afterwards.
    pub refresh_token: Option<Secret>,
}

/// One account.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub id: String,
    /// "live" or "sandbox".
    pub env: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_uri: String,
    /// The UCC the account's tokens must belong to, when known. If unset, the user of
    /// the first token upkeep stores becomes the expected one.
    pub user_id: Option<String>,
    pub strategies: Vec<StrategyKind>,
    pub totp: Option<TotpSettings>,
    pub refresh: Option<RefreshSettings>,
    /// Overrides the policy's weekend/holiday skipping for this account.
    pub trades_weekends: bool,
    pub trades_holidays: bool,
}

impl AccountSettings {
    pub fn can_renew_daily(&self) -> bool {
        self.strategies.iter().any(|s| s.renews())
    }
}

/// Where to write the current token for legacy bots after every change.
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    pub json_file: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    /// Second location for encrypted store backups.
    pub backup_dir: Option<PathBuf>,
}

/// Retry/backoff for transient failures inside one strategy.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    pub first: SignedDuration,
    pub max: SignedDuration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            first: SignedDuration::from_secs(5),
            max: SignedDuration::from_mins(5),
        }
    }
}

/// Limits of the notifier webhook, the one door anyone can knock on.
#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    /// Profile calls that may validate delivered tokens at once (burst).
    pub checks_burst: u32,
    /// One more validation is allowed per this much time (real time).
    pub check_every: Duration,
    /// Deliveries that passed the cheap checks and wait for validation; beyond it the
    /// oldest is dropped (the newest is the most likely to be the real one).
    pub queue: usize,
    /// How long a delivery's request waits for its validation before it is answered
    /// `202 queued` (the validation goes on).
    pub answer_within: Duration,
    /// Rejections are logged as one summary line per this interval.
    pub summary_every: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            checks_burst: 12,
            check_every: Duration::from_secs(5),
            queue: 16,
            answer_within: Duration::from_secs(10),
            summary_every: Duration::from_secs(60),
        }
    }
}

/// The Upstox API gateway (`/upstox/...`).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub enabled: bool,
    /// The request header that picks the account.
    pub account_header: String,
    pub connect_timeout: Duration,
    /// A whole upstream exchange, body included.
    pub request_timeout: Duration,
    /// Idle upstream connections kept per host.
    pub max_idle_connections: usize,
    /// API key name -> account used when a request names none (else the default account).
    pub default_accounts: std::collections::BTreeMap<String, String>,
    /// The shared rate budget (`[gateway.budget]`).
    pub budget: crate::gateway::budget::BudgetSettings,
    /// The cached fallback (`[gateway.cache]`).
    pub cache: upkeep_core::config::gateway_budget::StaleCacheConfig,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            account_header: "X-Upkeep-Account".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_idle_connections: 64,
            default_accounts: Default::default(),
            budget: Default::default(),
            cache: Default::default(),
        }
    }
}

/// The daemon's settings.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub accounts: Vec<AccountSettings>,
    pub policy: RenewalPolicy,
    pub thresholds: Thresholds,
    /// How often a valid token is checked with a profile call (clock time).
    pub health_interval: SignedDuration,
    /// How long the token-request strategy waits for the user's approval before the
    /// next strategy is tried (it keeps accepting the webhook afterwards).
    pub approval_wait: SignedDuration,
    /// How often a waiting task re-reads the clock (real time). Bounded sleeps are
    /// what make a paused VM or a clock step unable to skip 03:30.
    pub poll: Duration,
    /// Base URL of this daemon as a browser reaches it (OAuth links).
    pub public_url: String,
    pub sinks: SinkSettings,
    pub retry: RetrySettings,
    /// The renewal lease duration (one renewer per account across processes).
    pub lease_ttl: Duration,
    pub webhook: WebhookSettings,
    /// The HTTP listener's connection cap and timeouts.
    pub http: crate::http::serve::ServeLimits,
    /// Audit events older than this are deleted (checked every few hours).
    pub audit_retention: SignedDuration,
    /// The Upstox API gateway (read at start; a reload keeps the running one).
    pub gateway: GatewaySettings,
    /// The market-data relay (`[relay]`).
    pub relay: RelaySettings,
}

/// The market-data relay's settings (`[relay]`).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub enabled: bool,
    /// The upstream pool's behaviour (stall timeout, backoff, event queue, connections).
    pub upstream: upkeep_upstox::feed::upstream::UpstreamConfig,
    /// Frames buffered per local consumer.
    pub consumer_queue: usize,
    /// Write ticks and connection events to the store.
    pub persist_ticks: bool,
    /// The feed door's cap on failed single-use code attempts.
    pub code_guard: crate::relay::codes::CodeGuardLimits,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            upstream: Default::default(),
            consumer_queue: 1024,
            persist_ticks: false,
            code_guard: Default::default(),
        }
    }
}

impl DaemonSettings {
    pub fn new(accounts: Vec<AccountSettings>) -> Self {
        Self {
            accounts,
            policy: RenewalPolicy::default(),
            thresholds: Thresholds::default(),
            health_interval: SignedDuration::from_mins(30),
            approval_wait: SignedDuration::from_mins(20),
            poll: Duration::from_secs(15),
            public_url: "http://127.0.0.1:7878".into(),
            sinks: SinkSettings::default(),
            retry: RetrySettings::default(),
            lease_ttl: Duration::from_secs(30),
            webhook: WebhookSettings::default(),
            http: crate::http::serve::ServeLimits::default(),
            audit_retention: SignedDuration::from_hours(90 * 24),
            gateway: GatewaySettings::default(),
            relay: RelaySettings::default(),
        }
    }
}
