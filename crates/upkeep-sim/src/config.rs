//! Simulator configuration: users, apps and switches. Loadable from TOML or JSON.
//!
//! ```toml
//! auto_approve_token_requests = false
//! rate_limits = true
//! feed_tick_interval_ms = 1000
//! start_at = "2026-02-05T00:19:27Z"   # optional; default: system time
//! speed = 1.0                        # simulated seconds per real second; 0 = frozen
//! login_shortcut = false             # show an "Approve" button on the HTML login page
//! auth_code_ttl_secs = 120           # authorization code lifetime
//! revoke_previous_tokens = false     # a new daily token revokes the user's older ones
//! otp_generate_limit = 20            # OTPs per user per 10 min, then 1017069
//! login_errors_as_200 = false        # login-service errors with HTTP 200
//! token_api_limit_per_minute = 30    # optional; 429 UDAPI100099 on the token endpoints
//! feed_snapshot_type = "initial_feed" # or "live_feed"
//! market_holidays = ["2026-03-03"]   # shorthand: every exchange closed that day
//! default_market_calendar = true     # built-in calendar for the clock's year and the next
//!
//! [[market_calendar]]                # a listed date; wins over the default and the shorthand
//! date = "2026-02-07"
//! description = "Special session"
//! holiday_type = "TRADING_HOLIDAY"   # TRADING_HOLIDAY | SETTLEMENT_HOLIDAY | SPECIAL_TIMING
//! closed_exchanges = ["CDS", "BCD"]
//! open_exchanges = [{ exchange = "NSE", start = "09:15", end = "15:30" }]   # IST
//!
//! [[users]]
//! ucc = "2ZCDQ9"
//! name = "Demo Trader"
//! email = "demo@example.com"
//! mobile = "9876543210"
//! pin = "123456"
//! totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
//! plan = "plus"                      # normal | plus
//!
//! [[apps]]
//! client_id = "615b1297-d443-3b39-ba19-1927fbcdddc7"
//! client_secret = "abcd1234ef"
//! redirect_uri = "http://127.0.0.1:8400/callback"
//! notifier_url = "http://127.0.0.1:8400/webhook"   # optional
//! user = "2ZCDQ9"
//! ```

use std::collections::HashSet;
use std::path::Path;

use jiff::Timestamp;
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::{Deserialize, Serialize};

use crate::market_calendar::CalendarEntry;
use crate::totp;

/// Upstox subscription plan of a user (affects `isPlusPlan` and feed limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    #[default]
    Normal,
    Plus,
}

/// A simulated Upstox customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserConfig {
    /// Unique client code, the `user_id` / JWT `sub` (e.g. `2ZCDQ9`).
    pub ucc: String,
    pub name: String,
    pub email: String,
    /// 10-digit mobile number used as the login name.
    pub mobile: String,
    /// Secret PIN (digits) asked in the second factor.
    pub pin: String,
    /// Base32 TOTP seed (RFC 6238, SHA1, 6 digits, 30 s).
    pub totp_secret: String,
    #[serde(default)]
    pub plan: Plan,
}

/// A developer app registered by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// The API key.
    pub client_id: String,
    /// The API secret.
    pub client_secret: String,
    /// Registered redirect URL; must match exactly.
    pub redirect_uri: String,
    /// "Notifier Webhook Endpoint" for the access-token-request flow.
    #[serde(default)]
    pub notifier_url: Option<String>,
    /// UCC of the user who owns the app.
    pub user: String,
}

fn default_true() -> bool {
    true
}
fn default_tick_ms() -> u64 {
    1000
}
fn default_speed() -> f64 {
    1.0
}
fn default_login_attempts() -> u32 {
    5
}
fn default_code_ttl_secs() -> u64 {
    120
}
fn default_otp_limit() -> u32 {
    20
}

/// The `type` of the feed's first snapshot after a subscription (Upstox has been seen
/// sending either; the docs' sample says `live_feed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotType {
    #[default]
    InitialFeed,
    LiveFeed,
}

/// Longest feed tick interval accepted (one hour): the feed schedules `now + interval`,
/// which must not overflow.
pub const MAX_FEED_TICK_MS: u64 = 3_600_000;

/// Longest authorization-code lifetime accepted (one day).
pub const MAX_CODE_TTL_SECS: u64 = 86_400;

/// Everything the simulator needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Approve access-token requests as soon as they arrive.
    #[serde(default)]
    pub auto_approve_token_requests: bool,
    /// Enforce Upstox rate limits (turn off for benchmarks).
    #[serde(default = "default_true")]
    pub rate_limits: bool,
    /// Interval between market-feed ticks.
    #[serde(default = "default_tick_ms")]
    pub feed_tick_interval_ms: u64,
    /// Initial simulated time; the system time when absent.
    #[serde(default)]
    pub start_at: Option<Timestamp>,
    /// Simulated seconds per real second; 0 freezes the clock.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Show a one-click "Approve" button on the HTML login page (demo convenience).
    #[serde(default)]
    pub login_shortcut: bool,
    /// Wrong TOTP/PIN entries allowed before the user is locked.
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    /// Lifetime of an authorization code, in seconds (unpublished; a public note says
    /// about 1-2 minutes).
    #[serde(default = "default_code_ttl_secs")]
    pub auth_code_ttl_secs: u64,
    /// A new daily token revokes the user's earlier daily tokens (unpublished either way).
    #[serde(default)]
    pub revoke_previous_tokens: bool,
    /// OTP generations allowed per user in 10 minutes; the next one is refused with
    /// 1017069 until the window has passed.
    #[serde(default = "default_otp_limit")]
    pub otp_generate_limit: u32,
    /// Login-service errors (`{"success":false,...}`) are sent with HTTP 200 instead of
    /// a 4xx/5xx status (Upstox's status for them is unknown).
    #[serde(default)]
    pub login_errors_as_200: bool,
    /// Requests per minute per app on the token endpoints (code exchange, token
    /// request) before 429 `UDAPI100099`; none when absent (unpublished).
    #[serde(default)]
    pub token_api_limit_per_minute: Option<u32>,
    /// `type` of the feed's first snapshot: `initial_feed` (default) or `live_feed`.
    #[serde(default)]
    pub feed_snapshot_type: SnapshotType,
    /// Shorthand: days (IST) every exchange is closed (a `TRADING_HOLIDAY` listing all
    /// exchanges in the calendar). `market_calendar` entries win on the same date.
    #[serde(default)]
    pub market_holidays: Vec<jiff::civil::Date>,
    /// Listed dates of the market calendar (holidays, settlement holidays, special
    /// sessions), served by `/v2/market/holidays` and used for the market status.
    #[serde(default)]
    pub market_calendar: Vec<CalendarEntry>,
    /// Add the built-in calendar for the clock's year and the next (see
    /// `market_calendar::default_year`); configured dates win over it.
    #[serde(default = "default_true")]
    pub default_market_calendar: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            users: Vec::new(),
            apps: Vec::new(),
            auto_approve_token_requests: false,
            rate_limits: true,
            feed_tick_interval_ms: default_tick_ms(),
            start_at: None,
            speed: default_speed(),
            login_shortcut: false,
            login_attempts: default_login_attempts(),
            auth_code_ttl_secs: default_code_ttl_secs(),
            revoke_previous_tokens: false,
            otp_generate_limit: default_otp_limit(),
            login_errors_as_200: false,
            token_api_limit_per_minute: None,
            feed_snapshot_type: SnapshotType::default(),
            market_holidays: Vec::new(),
            market_calendar: Vec::new(),
            default_market_calendar: true,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read simulator config {path}: {source}; check the path")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("simulator config {path} is not valid {format}: {message}")]
    Parse {
        path: String,
        format: &'static str,
        message: String,
    },
    #[error("invalid simulator config: {0}")]
    Invalid(String),
}

impl SimConfig {
    /// Loads a config file; `.json` files are JSON, anything else is TOML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SimConfig, ConfigError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let config = if is_json {
            SimConfig::from_json(&text)
        } else {
            SimConfig::from_toml(&text)
        };
        config.map_err(|e| match e {
            ConfigError::Parse {
                format, message, ..
            } => ConfigError::Parse {
                path: shown,
                format,
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<SimConfig, ConfigError> {
        let config: SimConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            format: "TOML",
            message: e.message().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates JSON text.
    pub fn from_json(text: &str) -> Result<SimConfig, ConfigError> {
        let config: SimConfig = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            format: "JSON",
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-references and values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut uccs = HashSet::new();
        let mut mobiles = HashSet::new();
        for user in &self.users {
            validate_user(user).map_err(ConfigError::Invalid)?;
            if !uccs.insert(user.ucc.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "user {} appears twice; give each user its own ucc",
                    user.ucc
                )));
            }
            if !mobiles.insert(user.mobile.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "mobile number of user {} is used twice; mobiles identify users at login",
                    user.ucc
                )));
            }
        }
        let mut clients = HashSet::new();
        for app in &self.apps {
            validate_app(app).map_err(ConfigError::Invalid)?;
            if !uccs.contains(app.user.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "app {} belongs to unknown user {}; add that user first",
                    app.client_id, app.user
                )));
            }
            if !clients.insert(app.client_id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "app {} appears twice; client ids must be unique",
                    app.client_id
                )));
            }
        }
        if !self.speed.is_finite() || self.speed < 0.0 {
            return Err(ConfigError::Invalid(
                "speed must be a finite number >= 0 (0 freezes the clock)".into(),
            ));
        }
        if !(1..=MAX_FEED_TICK_MS).contains(&self.feed_tick_interval_ms) {
            return Err(ConfigError::Invalid(format!(
                "feed_tick_interval_ms must be between 1 and {MAX_FEED_TICK_MS} (one hour)"
            )));
        }
        if !(1..=MAX_CODE_TTL_SECS).contains(&self.auth_code_ttl_secs) {
            return Err(ConfigError::Invalid(format!(
                "auth_code_ttl_secs must be between 1 and {MAX_CODE_TTL_SECS} (one day)"
            )));
        }
        if self.otp_generate_limit == 0 {
            return Err(ConfigError::Invalid(
                "otp_generate_limit must be at least 1".into(),
            ));
        }
        if self.token_api_limit_per_minute == Some(0) {
            return Err(ConfigError::Invalid(
                "token_api_limit_per_minute must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        let mut dates = HashSet::new();
        for entry in &self.market_calendar {
            entry.validate().map_err(ConfigError::Invalid)?;
            if !dates.insert(entry.date) {
                return Err(ConfigError::Invalid(format!(
                    "market_calendar lists {} twice; one entry per date",
                    entry.date
                )));
            }
        }
        if self.login_attempts == 0 {
            return Err(ConfigError::Invalid(
                "login_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// One demo user and one app with random but printable credentials.
    pub fn demo() -> SimConfig {
        let mut rng = rand::thread_rng();
        let ucc: String = (0..6)
            .map(|_| {
                let chars = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
                char::from(chars[rng.gen_range(0..chars.len())])
            })
            .collect();
        let mobile = format!("9{:09}", rng.gen_range(0..1_000_000_000u32));
        let pin = format!("{:06}", rng.gen_range(0..1_000_000u32));
        let seed: [u8; 20] = rng.r#gen();
        let client_secret: String = (&mut rng)
            .sample_iter(&Alphanumeric)
            .take(10)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        SimConfig {
            users: vec![UserConfig {
                ucc: ucc.clone(),
                name: "Demo Trader".into(),
                email: "demo.trader@example.com".into(),
                mobile,
                pin,
                totp_secret: totp::encode_secret(&seed),
                plan: Plan::Plus,
            }],
            apps: vec![AppConfig {
                client_id: uuid::Uuid::new_v4().to_string(),
                client_secret,
                redirect_uri: "http://127.0.0.1:8400/oauth/callback".into(),
                notifier_url: Some("http://127.0.0.1:8400/upstox/notifier".into()),
                user: ucc,
            }],
            login_shortcut: true,
            ..SimConfig::default()
        }
    }
}

pub(crate) fn validate_user(user: &UserConfig) -> Result<(), String> {
    if user.ucc.is_empty() || !user.ucc.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "user ucc {:?} must be non-empty letters and digits",
            user.ucc
        ));
    }
    if user.mobile.is_empty() || !user.mobile.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("mobile of user {} must be digits", user.ucc));
    }
    if user.pin.is_empty() {
        return Err(format!("pin of user {} must not be empty", user.ucc));
    }
    if totp::decode_secret(&user.totp_secret).is_none() {
        return Err(format!(
            "totp_secret of user {} is not base32 (A-Z, 2-7)",
            user.ucc
        ));
    }
    Ok(())
}

pub(crate) fn validate_app(app: &AppConfig) -> Result<(), String> {
    if app.client_id.is_empty() || app.client_secret.is_empty() {
        return Err("app client_id and client_secret must not be empty".into());
    }
    if url::Url::parse(&app.redirect_uri).is_err() {
        return Err(format!(
            "redirect_uri of app {} is not an absolute URL",
            app.client_id
        ));
    }
    if let Some(n) = &app.notifier_url
        && url::Url::parse(n).is_err()
    {
        return Err(format!(
            "notifier_url of app {} is not an absolute URL",
            app.client_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid() {
        SimConfig::demo().validate().unwrap();
    }

    #[test]
    fn toml_config_defaults_rate_limits_on() {
        let c = SimConfig::from_toml(
            r#"
            [[users]]
            ucc = "2ZCDQ9"
            name = "A"
            email = "a@example.com"
            mobile = "9876543210"
            pin = "123456"
            totp_secret = "JBSWY3DPEHPK3PXP"
            [[apps]]
            client_id = "c"
            client_secret = "s"
            redirect_uri = "http://127.0.0.1:1/cb"
            user = "2ZCDQ9"
            "#,
        )
        .unwrap();
        assert!(c.rate_limits);
        assert_eq!(c.users[0].plan, Plan::Normal);
    }

    #[test]
    fn json_config_round_trips() {
        let demo = SimConfig::demo();
        let text = serde_json::to_string(&demo).unwrap();
        assert_eq!(SimConfig::from_json(&text).unwrap(), demo);
    }

    #[test]
    fn a_feed_tick_interval_too_long_to_schedule_is_refused() {
        // Scheduling `now + interval` for u64::MAX ms would overflow (a panic in every feed
        // connection); one hour is the most the simulator accepts.
        let mut c = SimConfig::demo();
        c.feed_tick_interval_ms = u64::MAX;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("feed_tick_interval_ms"), "{err}");
        c.feed_tick_interval_ms = MAX_FEED_TICK_MS;
        c.validate().unwrap();
    }

    #[test]
    fn app_of_unknown_user_is_refused() {
        let mut c = SimConfig::demo();
        c.apps[0].user = "NOPE".into();
        assert!(c.validate().is_err());
    }
}
