//! The simulator's state and its direct Rust control surface ([`Sim`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::clock::SimClock;
use crate::config::{self, AppConfig, ConfigError, Plan, SimConfig, UserConfig};
use crate::feed::{FeedAuthError, FeedEvent, FeedFaults, FeedHost, FeedUser};
use crate::ist;
use crate::jwt::{self, Claims, TokenKind};
use crate::ratelimit::{Group, RateLimiter};

/// Errors from the simulator's Rust API and startup.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("unknown user {0}; add it with POST /sim/users or in the config")]
    UnknownUser(String),
    #[error("unknown app {0}; add it with POST /sim/apps or in the config")]
    UnknownApp(String),
    #[error(
        "no pending access-token request for app {0}; the app must call the token request API first"
    )]
    NoPendingRequest(String),
    #[error("the access-token request for app {0} lapsed at 03:30 IST; the app must ask again")]
    RequestLapsed(String),
    #[error("app {0} has no notifier_url; set one before using the access-token request flow")]
    NoNotifier(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("cannot start the simulator: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the webhook HTTP client: {0}")]
    Http(String),
}

/// Injected faults. See the crate docs for what each one does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Extra delay before every Upstox API/login response, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0..=1) that an Upstox API/login call answers 500 UDAPI100500.
    pub error_rate: f64,
    /// The login service (dialog, login page, TOTP steps, token exchange, token request) answers 503.
    pub login_down: bool,
    /// Headless (TOTP) logins are refused with 403 LOGIN_BLOCKED; the HTML login page still works.
    pub login_blocked: bool,
    /// Feed connections are dropped.
    pub feed_drop: bool,
    /// Feed connections stay open with pings only (a quiet market: not a stall).
    pub feed_quiet: bool,
    /// Feed connections stay open with nothing on them (no data, no pings).
    pub feed_stall: bool,
    /// The next this many authorization codes are issued already expired (the code
    /// exchange answers `UDAPI100057`); counts down as codes are issued.
    pub expired_codes: u32,
    /// The market calendar routes (holidays, timings, status) answer 503 `UDAPI100500`.
    pub calendar_down: bool,
}

/// A partial update of [`Faults`]; absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub login_down: Option<bool>,
    pub login_blocked: Option<bool>,
    pub feed_drop: Option<bool>,
    pub feed_quiet: Option<bool>,
    pub feed_stall: Option<bool>,
    pub expired_codes: Option<u32>,
    pub calendar_down: Option<bool>,
}

/// Login credentials of one app + its user, as printed by `--credentials-out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub ucc: String,
    pub mobile: String,
    pub pin: String,
    pub totp_secret: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub plan: Plan,
}

/// Event counters, for tests and `GET /sim/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Completed logins (HTML page or TOTP sequence) that produced an auth code.
    pub logins: u64,
    /// Wrong TOTP/PIN entries.
    pub failed_logins: u64,
    /// OTP generate calls that succeeded.
    pub otp_requests: u64,
    /// OTP generate calls refused by the generation limit (1017069).
    pub otp_limited: u64,
    /// Successful `POST /v2/login/authorization/token` calls.
    pub token_exchanges: u64,
    /// Tokens minted (all kinds, all paths).
    pub tokens_issued: u64,
    /// Accepted access-token requests (v3).
    pub token_requests: u64,
    /// Webhook deliveries answered with 2xx.
    pub webhooks_delivered: u64,
    /// Webhook deliveries that failed or got a non-2xx answer.
    pub webhook_failures: u64,
    /// Successful logouts.
    pub logouts: u64,
    /// Tokens revoked through the control API or `Sim::revoke`.
    pub revocations: u64,
    /// Daily tokens revoked because a newer one was issued (`revoke_previous_tokens`).
    pub superseded: u64,
    /// Authenticated API calls admitted (profile, funds, quotes, orders, logout).
    pub api_requests: u64,
    /// Calls refused with 429.
    pub rate_limited: u64,
    /// Calls answered with an injected 500/503.
    pub injected_errors: u64,
    /// Orders placed.
    pub orders_placed: u64,
    /// Orders cancelled.
    pub orders_cancelled: u64,
    /// Requests that reached the OAuth 2 token service (`POST /sim/oauth2/token`),
    /// answered or refused (injected faults are counted in `injected_errors` instead).
    pub oauth2_requests: u64,
    /// Refresh grants that succeeded (an access token and a rotated refresh token issued).
    pub oauth2_grants: u64,
    /// OAuth 2 token requests refused with an RFC 6749 error (`invalid_grant`, ...).
    pub oauth2_refused: u64,
    /// Feed WebSockets accepted.
    #[serde(default)]
    pub feed_connections_opened: u64,
    /// Feed WebSockets open now.
    #[serde(default)]
    pub feed_connections_open: u64,
    /// Most feed WebSockets open at once.
    #[serde(default)]
    pub feed_connections_peak: u64,
    /// Feed handshakes refused for the per-user connection limit.
    #[serde(default)]
    pub feed_connections_refused: u64,
    /// Feed sockets closed with 1008 because their token stopped authenticating.
    #[serde(default)]
    pub feed_token_closes: u64,
}

#[derive(Default)]
pub(crate) struct AtomicCounters {
    pub logins: AtomicU64,
    pub failed_logins: AtomicU64,
    pub otp_requests: AtomicU64,
    pub otp_limited: AtomicU64,
    pub token_exchanges: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub token_requests: AtomicU64,
    pub webhooks_delivered: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub logouts: AtomicU64,
    pub revocations: AtomicU64,
    pub superseded: AtomicU64,
    pub api_requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub injected_errors: AtomicU64,
    pub orders_placed: AtomicU64,
    pub orders_cancelled: AtomicU64,
    pub oauth2_requests: AtomicU64,
    pub oauth2_grants: AtomicU64,
    pub oauth2_refused: AtomicU64,
    pub feed_connections_opened: AtomicU64,
    pub feed_connections_open: AtomicU64,
    pub feed_connections_peak: AtomicU64,
    pub feed_connections_refused: AtomicU64,
    pub feed_token_closes: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl AtomicCounters {
    fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            logins: g(&self.logins),
            failed_logins: g(&self.failed_logins),
            otp_requests: g(&self.otp_requests),
            otp_limited: g(&self.otp_limited),
            token_exchanges: g(&self.token_exchanges),
            tokens_issued: g(&self.tokens_issued),
            token_requests: g(&self.token_requests),
            webhooks_delivered: g(&self.webhooks_delivered),
            webhook_failures: g(&self.webhook_failures),
            logouts: g(&self.logouts),
            revocations: g(&self.revocations),
            superseded: g(&self.superseded),
            api_requests: g(&self.api_requests),
            rate_limited: g(&self.rate_limited),
            injected_errors: g(&self.injected_errors),
            orders_placed: g(&self.orders_placed),
            orders_cancelled: g(&self.orders_cancelled),
            oauth2_requests: g(&self.oauth2_requests),
            oauth2_grants: g(&self.oauth2_grants),
            oauth2_refused: g(&self.oauth2_refused),
            feed_connections_opened: g(&self.feed_connections_opened),
            feed_connections_open: g(&self.feed_connections_open),
            feed_connections_peak: g(&self.feed_connections_peak),
            feed_connections_refused: g(&self.feed_connections_refused),
            feed_token_closes: g(&self.feed_token_closes),
        }
    }
}

/// A user plus login-attempt bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct UserRecord {
    pub config: UserConfig,
    pub attempts_left: u32,
}

impl UserRecord {
    pub fn locked(&self) -> bool {
        self.attempts_left == 0
    }
}

/// A minted token.
#[derive(Debug, Clone)]
pub(crate) struct TokenRecord {
    pub jti: String,
    pub token: String,
    pub ucc: String,
    pub kind: TokenKind,
    pub expires_at: Timestamp,
    pub revoked: bool,
}

/// What a valid token grants.
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub jti: String,
    pub ucc: String,
    pub kind: TokenKind,
    pub plus: bool,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Invalid,
    Expired,
}

/// A single-use authorization code.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub ucc: String,
    pub expires_at: Timestamp,
}

/// An authorization dialog waiting for the user to log in.
#[derive(Debug, Clone)]
pub(crate) struct LoginAttempt {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub expires_at: Timestamp,
}

/// An OTP generated in step 2 of the headless login.
#[derive(Debug, Clone)]
pub(crate) struct OtpChallenge {
    pub ucc: String,
    pub attempt_id: Option<String>,
    pub expires_at: Timestamp,
}

/// How far a headless login session got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    OtpVerified,
    PinVerified,
}

/// A headless login session, keyed by a cookie.
#[derive(Debug, Clone)]
pub(crate) struct LoginSession {
    pub ucc: String,
    pub attempt_id: Option<String>,
    pub stage: Stage,
    pub client_id: Option<String>,
    pub expires_at: Timestamp,
}

/// A pending access-token request (v3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTokenRequest {
    pub client_id: String,
    pub user_id: String,
    pub notifier_url: String,
    pub requested_at: Timestamp,
    /// The approval window ends at the next 03:30 IST.
    pub authorization_expiry: Timestamp,
}

/// Result of approving an access-token request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub client_id: String,
    pub user_id: String,
    pub access_token: String,
    pub expires_at: Timestamp,
    /// HTTP status the notifier answered, if it answered.
    pub webhook_status: Option<u16>,
    /// Why delivery failed, if it did.
    pub webhook_error: Option<String>,
}

/// An order placed through the simulator.
#[derive(Debug, Clone)]
pub(crate) struct OrderRecord {
    pub ucc: String,
    pub cancelled: bool,
}

#[derive(Default)]
pub(crate) struct State {
    pub users: BTreeMap<String, UserRecord>,
    pub apps: BTreeMap<String, AppConfig>,
    /// Tokens by `jti`.
    pub tokens: HashMap<String, TokenRecord>,
    /// Current extended token `jti` per (ucc, client_id).
    pub extended: HashMap<(String, String), String>,
    pub codes: HashMap<String, AuthCode>,
    pub attempts: HashMap<String, LoginAttempt>,
    pub otps: HashMap<String, OtpChallenge>,
    pub sessions: HashMap<String, LoginSession>,
    /// OTP generations per user (UCC) in the limit's window.
    pub otp_history: HashMap<String, Vec<Timestamp>>,
    pub token_requests: BTreeMap<String, PendingTokenRequest>,
    pub faults: Faults,
    pub rate: RateLimiter,
    pub orders: HashMap<String, OrderRecord>,
    pub order_seq: u64,
    /// Refresh tokens of the OAuth 2 token service, by token.
    pub refresh_tokens: HashMap<String, crate::oauth2::RefreshRecord>,
}

pub(crate) struct Inner {
    pub clock: SimClock,
    pub key: [u8; 32],
    pub base_url: String,
    pub rate_limits: bool,
    pub auto_approve: bool,
    pub tick: Duration,
    pub login_shortcut: bool,
    pub login_attempts: u32,
    pub code_ttl: SignedDuration,
    pub revoke_previous: bool,
    pub otp_limit: u32,
    pub login_errors_as_200: bool,
    pub token_api_limit: Option<u32>,
    pub snapshot_type: config::SnapshotType,
    pub calendar: crate::market_calendar::MarketCalendar,
    pub counters: AtomicCounters,
    pub http: reqwest::Client,
    pub state: Mutex<State>,
}

/// The simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("base_url", &self.inner.base_url)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Lifetime of a login attempt, OTP challenge or login session.
pub(crate) const LOGIN_TTL: SignedDuration = SignedDuration::from_mins(15);

/// Random lowercase alphanumeric text.
pub(crate) fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

impl Sim {
    /// Builds a simulator reachable at `base_url` (e.g. `http://127.0.0.1:8100`), with a clock from the config.
    pub fn new(config: SimConfig, base_url: impl Into<String>) -> Result<Sim, SimError> {
        let clock = SimClock::starting_at(config.start_at, config.speed);
        Sim::with_clock(config, base_url, clock)
    }

    /// Like [`Sim::new`] but with a clock of your own (e.g. [`SimClock::frozen`]).
    pub fn with_clock(
        config: SimConfig,
        base_url: impl Into<String>,
        clock: SimClock,
    ) -> Result<Sim, SimError> {
        config.validate()?;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SimError::Http(e.to_string()))?;
        let mut state = State::default();
        for user in config.users {
            state.users.insert(
                user.ucc.clone(),
                UserRecord {
                    config: user,
                    attempts_left: config.login_attempts,
                },
            );
        }
        for app in config.apps {
            state.apps.insert(app.client_id.clone(), app);
        }
        Ok(Sim {
            inner: Arc::new(Inner {
                clock,
                key,
                base_url: base_url.into().trim_end_matches('/').to_string(),
                rate_limits: config.rate_limits,
                auto_approve: config.auto_approve_token_requests,
                tick: Duration::from_millis(config.feed_tick_interval_ms),
                login_shortcut: config.login_shortcut,
                login_attempts: config.login_attempts,
                code_ttl: SignedDuration::from_secs(
                    i64::try_from(config.auth_code_ttl_secs).unwrap_or(i64::MAX),
                ),
                revoke_previous: config.revoke_previous_tokens,
                otp_limit: config.otp_generate_limit,
                login_errors_as_200: config.login_errors_as_200,
                token_api_limit: config.token_api_limit_per_minute,
                snapshot_type: config.feed_snapshot_type,
                calendar: crate::market_calendar::MarketCalendar::new(
                    &config.market_calendar,
                    &config.market_holidays,
                    config.default_market_calendar,
                ),
                counters: AtomicCounters::default(),
                http,
                state: Mutex::new(state),
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn counters_raw(&self) -> &AtomicCounters {
        &self.inner.counters
    }

    /// The market calendar.
    pub(crate) fn calendar(&self) -> &crate::market_calendar::MarketCalendar {
        &self.inner.calendar
    }

    /// The simulator clock.
    pub fn clock(&self) -> SimClock {
        self.inner.clock.clone()
    }

    /// Current simulated time.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// `http://host:port` the simulator is served under.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Whether rate limits are enforced.
    pub fn rate_limits_enabled(&self) -> bool {
        self.inner.rate_limits
    }

    /// Credentials of every app joined with its user.
    pub fn credentials(&self) -> Vec<Credentials> {
        let st = self.lock();
        st.apps
            .values()
            .filter_map(|app| {
                let user = &st.users.get(&app.user)?.config;
                Some(Credentials {
                    ucc: user.ucc.clone(),
                    mobile: user.mobile.clone(),
                    pin: user.pin.clone(),
                    totp_secret: user.totp_secret.clone(),
                    client_id: app.client_id.clone(),
                    client_secret: app.client_secret.clone(),
                    redirect_uri: app.redirect_uri.clone(),
                    plan: user.plan,
                })
            })
            .collect()
    }

    /// Adds a user, or replaces the one with the same UCC (which also unlocks it).
    pub fn add_user(&self, user: UserConfig) -> Result<(), SimError> {
        config::validate_user(&user).map_err(SimError::Invalid)?;
        let mut st = self.lock();
        if let Some(other) = st
            .users
            .values()
            .find(|u| u.config.mobile == user.mobile && u.config.ucc != user.ucc)
        {
            return Err(SimError::Invalid(format!(
                "mobile {} already belongs to user {}",
                user.mobile, other.config.ucc
            )));
        }
        let attempts_left = self.inner.login_attempts;
        st.users.insert(
            user.ucc.clone(),
            UserRecord {
                config: user,
                attempts_left,
            },
        );
        Ok(())
    }

    /// Adds an app, or replaces the one with the same client id.
    pub fn add_app(&self, app: AppConfig) -> Result<(), SimError> {
        config::validate_app(&app).map_err(SimError::Invalid)?;
        let mut st = self.lock();
        if !st.users.contains_key(&app.user) {
            return Err(SimError::UnknownUser(app.user));
        }
        st.apps.insert(app.client_id.clone(), app);
        Ok(())
    }

    /// Restores a locked user's login attempts.
    pub fn unlock_user(&self, ucc: &str) -> Result<(), SimError> {
        let attempts = self.inner.login_attempts;
        let mut st = self.lock();
        let user = st
            .users
            .get_mut(ucc)
            .ok_or_else(|| SimError::UnknownUser(ucc.to_string()))?;
        user.attempts_left = attempts;
        Ok(())
    }

    /// True if the user is locked after too many wrong TOTP/PIN entries.
    pub fn is_locked(&self, ucc: &str) -> bool {
        self.lock().users.get(ucc).is_some_and(UserRecord::locked)
    }

    /// Mints a token for `ucc` directly (no login), like the Developer Apps "Generate" button.
    pub fn issue_token(&self, ucc: &str, kind: TokenKind) -> Result<String, SimError> {
        let mut st = self.lock();
        self.mint(&mut st, ucc, kind).map(|r| r.token)
    }

    pub(crate) fn mint(
        &self,
        st: &mut State,
        ucc: &str,
        kind: TokenKind,
    ) -> Result<TokenRecord, SimError> {
        let user = st
            .users
            .get(ucc)
            .ok_or_else(|| SimError::UnknownUser(ucc.to_string()))?;
        let now = self.now();
        let iat = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let expires_at = jwt::expiry(kind, iat);
        let claims = Claims {
            sub: ucc.to_string(),
            jti: jwt::new_jti(iat),
            is_multi_client: false,
            is_plus_plan: user.config.plan == Plan::Plus,
            iat: iat.as_second(),
            iss: jwt::ISSUER.to_string(),
            exp: expires_at.as_second(),
        };
        let record = TokenRecord {
            jti: claims.jti.clone(),
            token: jwt::sign(&self.inner.key, &claims),
            ucc: ucc.to_string(),
            kind,
            expires_at,
            revoked: false,
        };
        if kind == TokenKind::Daily && self.inner.revoke_previous {
            // `revoke_previous_tokens`: the user's earlier daily tokens die now.
            for old in st.tokens.values_mut() {
                if old.kind == TokenKind::Daily && old.ucc == ucc && !old.revoked {
                    old.revoked = true;
                    bump(&self.inner.counters.superseded);
                }
            }
        }
        st.tokens.insert(claims.jti, record.clone());
        bump(&self.inner.counters.tokens_issued);
        Ok(record)
    }

    /// The extended token for (ucc, app): reused while valid unless `refresh`.
    pub(crate) fn extended_for(
        &self,
        st: &mut State,
        ucc: &str,
        client_id: &str,
        refresh: bool,
    ) -> Result<String, SimError> {
        let key = (ucc.to_string(), client_id.to_string());
        let now = self.now();
        if let Some(jti) = st.extended.get(&key).cloned()
            && let Some(rec) = st.tokens.get_mut(&jti)
        {
            if !refresh && !rec.revoked && now < rec.expires_at {
                return Ok(rec.token.clone());
            }
            rec.revoked = true;
        }
        let rec = self.mint(st, ucc, TokenKind::Extended)?;
        st.extended.insert(key, rec.jti);
        Ok(rec.token)
    }

    /// Checks signature, registry, revocation and expiry against the sim clock.
    pub(crate) fn check_token(&self, token: &str) -> Result<TokenInfo, TokenError> {
        let claims = jwt::verify(&self.inner.key, token).ok_or(TokenError::Invalid)?;
        let now = self.now();
        let st = self.lock();
        let rec = st.tokens.get(&claims.jti).ok_or(TokenError::Invalid)?;
        if rec.revoked || rec.token != token {
            return Err(TokenError::Invalid);
        }
        if now >= rec.expires_at {
            return Err(TokenError::Expired);
        }
        let plus = st
            .users
            .get(&rec.ucc)
            .is_some_and(|u| u.config.plan == Plan::Plus);
        Ok(TokenInfo {
            jti: claims.jti,
            ucc: rec.ucc.clone(),
            kind: rec.kind,
            plus,
        })
    }

    /// Revokes a token. Returns false if the sim never issued it (or it was already revoked).
    pub fn revoke(&self, token: &str) -> bool {
        let Some(claims) = jwt::verify(&self.inner.key, token) else {
            return false;
        };
        let mut st = self.lock();
        match st.tokens.get_mut(&claims.jti) {
            Some(rec) if !rec.revoked => {
                rec.revoked = true;
                bump(&self.inner.counters.revocations);
                true
            }
            _ => false,
        }
    }

    /// Admits one call of `api` by user `ucc` for the rate limiter, unless limits are off.
    pub(crate) fn admit(&self, ucc: &str, api: &str, group: Group) -> bool {
        if !self.inner.rate_limits {
            return true;
        }
        let now = self.now();
        self.lock().rate.admit(ucc, api, group, now)
    }

    /// Admits one call of a token endpoint by app `client_id`, when a limit is set.
    pub(crate) fn admit_token_api(&self, client_id: &str) -> bool {
        let Some(per_minute) = self.inner.token_api_limit else {
            return true;
        };
        let now = self.now();
        self.lock().rate.admit_token_api(client_id, per_minute, now)
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Replaces all faults.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        if !(0.0..=1.0).contains(&faults.error_rate) {
            return Err(SimError::Invalid(
                "error_rate must be between 0 and 1".into(),
            ));
        }
        self.lock().faults = faults;
        Ok(())
    }

    /// Updates only the given faults; returns the result.
    pub fn patch_faults(&self, patch: FaultsPatch) -> Result<Faults, SimError> {
        let mut f = self.faults();
        if let Some(v) = patch.latency_ms {
            f.latency_ms = v;
        }
        if let Some(v) = patch.error_rate {
            f.error_rate = v;
        }
        if let Some(v) = patch.login_down {
            f.login_down = v;
        }
        if let Some(v) = patch.login_blocked {
            f.login_blocked = v;
        }
        if let Some(v) = patch.feed_drop {
            f.feed_drop = v;
        }
        if let Some(v) = patch.feed_quiet {
            f.feed_quiet = v;
        }
        if let Some(v) = patch.feed_stall {
            f.feed_stall = v;
        }
        if let Some(v) = patch.expired_codes {
            f.expired_codes = v;
        }
        if let Some(v) = patch.calendar_down {
            f.calendar_down = v;
        }
        self.set_faults(f.clone())?;
        Ok(f)
    }

    /// All counters.
    pub fn counters(&self) -> Counters {
        self.inner.counters.snapshot()
    }

    /// Successful token exchanges so far.
    pub fn token_exchanges(&self) -> u64 {
        self.counters().token_exchanges
    }

    /// Completed logins so far.
    pub fn logins(&self) -> u64 {
        self.counters().logins
    }

    /// Pending access-token requests (lapsed ones are dropped).
    pub fn pending_token_requests(&self) -> Vec<PendingTokenRequest> {
        let now = self.now();
        let mut st = self.lock();
        st.token_requests
            .retain(|_, r| now < r.authorization_expiry);
        st.token_requests.values().cloned().collect()
    }

    /// Approves the pending request of `client_id`: mints a daily token for the app's user and
    /// POSTs it to the app's notifier URL. Waits for the delivery and reports its outcome.
    pub async fn approve_token_request(&self, client_id: &str) -> Result<Approval, SimError> {
        let now = self.now();
        let (request, record) = {
            let mut st = self.lock();
            let request = st
                .token_requests
                .remove(client_id)
                .ok_or_else(|| SimError::NoPendingRequest(client_id.to_string()))?;
            if now >= request.authorization_expiry {
                return Err(SimError::RequestLapsed(client_id.to_string()));
            }
            let record = self.mint(&mut st, &request.user_id, TokenKind::Daily)?;
            (request, record)
        };
        // Whole seconds, like the token's `iat`.
        let issued_at = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let payload = serde_json::json!({
            "client_id": request.client_id,
            "user_id": request.user_id,
            "access_token": record.token,
            "token_type": "Bearer",
            "expires_at": ist::epoch_ms_string(record.expires_at),
            "issued_at": ist::epoch_ms_string(issued_at),
            "message_type": "access_token",
        });
        let outcome = self
            .inner
            .http
            .post(&request.notifier_url)
            .json(&payload)
            .send()
            .await;
        let (webhook_status, webhook_error) = match outcome {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    bump(&self.inner.counters.webhooks_delivered);
                    (Some(status.as_u16()), None)
                } else {
                    bump(&self.inner.counters.webhook_failures);
                    (
                        Some(status.as_u16()),
                        Some(format!("notifier answered HTTP {}", status.as_u16())),
                    )
                }
            }
            Err(e) => {
                bump(&self.inner.counters.webhook_failures);
                tracing::warn!(client_id, "webhook delivery failed: {e}");
                (None, Some(format!("delivery failed: {e}")))
            }
        };
        Ok(Approval {
            client_id: request.client_id,
            user_id: request.user_id,
            access_token: record.token,
            expires_at: record.expires_at,
            webhook_status,
            webhook_error,
        })
    }

    /// Rejects (discards) the pending request of `client_id`; nothing is sent.
    pub fn reject_token_request(&self, client_id: &str) -> Result<(), SimError> {
        self.lock()
            .token_requests
            .remove(client_id)
            .map(|_| ())
            .ok_or_else(|| SimError::NoPendingRequest(client_id.to_string()))
    }

    pub(crate) fn auto_approve(&self) -> bool {
        self.inner.auto_approve
    }

    pub(crate) fn login_shortcut(&self) -> bool {
        self.inner.login_shortcut
    }

    pub(crate) fn login_attempts(&self) -> u32 {
        self.inner.login_attempts
    }

    pub(crate) fn otp_limit(&self) -> u32 {
        self.inner.otp_limit
    }

    pub(crate) fn login_errors_as_200(&self) -> bool {
        self.inner.login_errors_as_200
    }
}

impl FeedHost for Sim {
    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn authenticate(&self, bearer: &str) -> Result<FeedUser, FeedAuthError> {
        match self.check_token(bearer) {
            Ok(info) if info.kind == TokenKind::Sandbox => Err(FeedAuthError::Invalid),
            Ok(info) => Ok(FeedUser {
                ucc: info.ucc,
                plus: info.plus,
            }),
            Err(TokenError::Expired) => Err(FeedAuthError::Expired),
            Err(TokenError::Invalid) => Err(FeedAuthError::Invalid),
        }
    }

    fn feed_event(&self, event: FeedEvent) {
        let c = &self.inner.counters;
        match event {
            FeedEvent::Opened => {
                bump(&c.feed_connections_opened);
                let open = c.feed_connections_open.fetch_add(1, Ordering::Relaxed) + 1;
                c.feed_connections_peak.fetch_max(open, Ordering::Relaxed);
            }
            FeedEvent::Closed => {
                let _ = c.feed_connections_open.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |n| Some(n.saturating_sub(1)),
                );
            }
            FeedEvent::RefusedLimit => bump(&c.feed_connections_refused),
            FeedEvent::TokenClosed => bump(&c.feed_token_closes),
        }
    }

    fn faults(&self) -> FeedFaults {
        let f = Sim::faults(self);
        FeedFaults {
            drop: f.feed_drop,
            quiet: f.feed_quiet,
            stall: f.feed_stall,
        }
    }

    fn tick_interval(&self) -> Duration {
        self.inner.tick
    }

    fn snapshot_type(&self) -> config::SnapshotType {
        self.inner.snapshot_type
    }

    fn segment_status(&self, segment: &str, now: Timestamp) -> upkeep_proto::feed::MarketStatus {
        Sim::segment_status(self, segment, now)
    }

    fn base_ws_url(&self) -> String {
        let base = &self.inner.base_url;
        if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.clone()
        }
    }
}
