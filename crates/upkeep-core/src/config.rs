//! Configuration: types, parsing from TOML text plus an environment map, validation.
//!
//! Pure: the caller reads the file and the process environment and hands both in, so
//! tests never touch the real environment. [`Config::from_sources`] parses, applies
//! environment overrides, fills derived defaults and validates.
//!
//! Environment overrides, strongest last:
//! 1. the TOML file;
//! 2. `UPKEEP_<SECTION>__<KEY>` for the sections server, store, upstox, renewal,
//!    thresholds and sinks (e.g. `UPKEEP_SERVER__LISTEN=0.0.0.0:7878`,
//!    `UPKEEP_RENEWAL__HOLIDAYS=2026-11-24,2026-12-25`). `UPKEEP_` names without `__`
//!    (such as `UPKEEP_CONFIG`) belong to the binary and are ignored here;
//! 3. the names users of other Upstox tools already have (`UPSTOX_ACCESS_TOKEN`,
//!    `UPSTOX_CLIENT_ID`, `UPSTOX_TOTP_SECRET`, ... see [`LEGACY_ENV`]), applied to the
//!    default account. If the file has no account, one called `main` is created; its
//!    `renew` list is inferred: `totp` when mobile, PIN and TOTP secret are all given,
//!    else `oauth` when client id and secret are given, else `static`.
//!
//! Errors name the key (as `section.key`, `account[0].renew`, or `account "main"`) and
//! say how to fix it, on one line. They never contain a secret value.

pub mod gateway_budget;
pub mod import;

use crate::expiry::format_hm;
use crate::plan::{EARLIEST_RENEWAL, LATEST_RENEWAL, RenewalPolicy};
use crate::secret::{AccessToken, Secret};
use crate::state::Thresholds;
use jiff::SignedDuration;
use jiff::civil::{Date, Time};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use toml::{Table, Value};

// ---------------------------------------------------------------------------------
// Errors

/// A configuration problem. Every message is one line, names the key and the fix, and
/// never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid TOML (line {line}, column {column}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// Several problems at once (validation reports all it finds).
    #[error("{}", join_errors(.0))]
    Many(Vec<ConfigError>),
}

fn join_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// Every `Invalid` is made here. Messages quote values from the file and the
    /// environment (ids, URLs, addresses); their control characters are escaped so a
    /// message stays one line and a value cannot forge output lines or terminal escapes.
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: escape_controls(key.into()),
            message: escape_controls(message.into()),
        }
    }

    /// The individual problems (one for anything but `Many`).
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            Self::Many(all) => all.iter().flat_map(ConfigError::problems).collect(),
            other => vec![other],
        }
    }

    pub(crate) fn syntax(text: &str, span: Option<std::ops::Range<usize>>, msg: &str) -> Self {
        let start = span.map(|s| s.start).unwrap_or(0).min(text.len());
        let before = text.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count() + 1)
            .unwrap_or(1);
        Self::Syntax {
            line,
            column,
            message: escape_controls(one_line(msg)),
        }
    }
}

/// `s` with each control character (line breaks, tabs, ESC, ...) written as its Rust
/// escape (`\n`, `\t`, `\u{1b}`).
fn escape_controls(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Drop the literal from serde's "invalid type: string \"...\", expected ..." messages:
/// the value might be a secret typed into the wrong place.
///
/// Also rewords serde's struct vocabulary into config words.
fn sanitize(msg: &str) -> String {
    let msg = one_line(msg);
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once("`, expected ")
    {
        let valid = expected
            .trim_start_matches("one of ")
            .replace('`', "")
            .replace(" or ", ", ");
        return format!("unknown key `{key}`; valid keys here are {valid}");
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("missing required key {rest}");
    }
    if !(msg.starts_with("invalid type: ") || msg.starts_with("invalid value: ")) {
        return msg;
    }
    let msg = match msg.find("expected struct ") {
        Some(i) => format!("{}expected a table", msg.get(..i).unwrap_or("")),
        None => msg,
    };
    let (head, tail) = match msg.find(", expected ") {
        Some(i) => msg.split_at(i),
        None => (msg.as_str(), ""),
    };
    let head = match head.find(['"', '`']) {
        Some(i) => head.get(..i).unwrap_or(head).trim_end(),
        None => head,
    };
    format!("{head}{tail}")
}

/// Rewrites "invalid type: integer, expected a string" (a value of the wrong TOML type)
/// into "expected a time like \"09:00\", found an integer", with an example of a right
/// value for the key at `path`. Other messages are returned as they are.
fn with_example(path: &str, msg: String) -> String {
    let Some(rest) = msg.strip_prefix("invalid type: ") else {
        return msg;
    };
    let found_word = rest.split(", expected ").next().unwrap_or(rest).trim();
    let found = match found_word {
        "integer" => "an integer",
        "floating point" => "a decimal number",
        "string" => "a string",
        "boolean" => "a boolean (true/false)",
        "sequence" => "a list",
        "map" => "a table",
        "datetime" => "a date or time",
        // An enum read from a non-string ("unit variant"): the type is not known.
        _ => "",
    };
    match example_value(path) {
        Some(example) if found.is_empty() => format!("expected {example}"),
        Some(example) => format!("expected {example}, found {found}"),
        None => msg,
    }
}

/// What a correct value of the key at `path` looks like (`account[0].totp.mobile` is
/// looked up as `account.totp.mobile`).
fn example_value(path: &str) -> Option<&'static str> {
    let mut key = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => key.push(c),
            _ => {}
        }
    }
    Some(match key.as_str() {
        "server.listen" => r#"an address and port like "127.0.0.1:7878""#,
        "server.public_url" => r#"a URL like "https://upkeep.example.com""#,
        "server.max_connections" => "a whole number like 2048",
        "server.header_read_timeout" => r#"a duration like "15s""#,
        "server.idle_timeout" => r#"a duration like "60s""#,
        "server.shutdown_timeout" => r#"a duration like "10s""#,
        "store.url" => r#"a quoted URL like "sqlite://upkeep.db""#,
        "store.key_file" => r#"a path like "upkeep.key""#,
        "store.backup_dir" => r#"a path like "/var/backups/upkeep""#,
        "upstox.api_url" => r#"a URL like "https://api.upstox.com""#,
        "upstox.order_url" => r#"a URL like "https://api-hft.upstox.com""#,
        "upstox.login_url" => r#"a URL like "https://service.upstox.com""#,
        "upstox.feed_url" => r#"a URL like "wss://api.upstox.com""#,
        "upstox.sandbox_url" => r#"a URL like "https://api-sandbox.upstox.com""#,
        "renewal.window_start" => r#"a time like "05:30""#,
        "renewal.deadline" => r#"a time like "09:00""#,
        "renewal.jitter" => r#"a duration like "10m""#,
        "renewal.warn_ahead" => r#"a duration like "3d""#,
        "renewal.health_check_interval" => r#"a duration like "30m""#,
        "renewal.holidays" => r#"a list of dates like ["2026-11-24"]"#,
        "renewal.exchanges" => r#"a list of exchanges like ["NSE", "BSE"]"#,
        "renewal.trade_weekends"
        | "renewal.trade_holidays"
        | "account.trades_weekends"
        | "account.default" => "true or false",
        "thresholds.warning" => r#"a duration like "3h""#,
        "thresholds.critical" => r#"a duration like "1h""#,
        "sinks.json_file" => r#"a path like "data/upstox_tokens.json""#,
        "sinks.env_file" => r#"a path like ".env""#,
        "account" => "[[account]] tables",
        "account.id" => r#"a name like "main""#,
        "account.env" => r#""live" or "sandbox""#,
        "account.client_id" => r#"the app's API key in quotes, like "a1b2c3d4-...""#,
        "account.redirect_uri" => r#"a URL like "http://127.0.0.1:7878/auth/upstox/callback""#,
        "account.user_id" => r#"a UCC like "AB1234""#,
        "account.renew" => r#"a list like ["totp", "oauth"]"#,
        "account.totp" | "account.refresh_token" | "alert.email" => "a table",
        "account.totp.mobile" => r#"a quoted number like "9876543210""#,
        "account.refresh_token.token_url" => r#"a URL like "https://auth.example.com/token""#,
        "alert" => "a table",
        "alert.webhook" => "[[alert.webhook]] tables",
        "alert.webhook.format" => r#""generic", "slack" or "telegram""#,
        "alert.webhook.chat_id" => r#"a quoted chat id like "-1001234567890""#,
        "alert.email.smtp_url" => r#"a URL like "smtps://smtp.example.com""#,
        "alert.email.username" => r#"a quoted name like "upkeep@example.com""#,
        "alert.email.from" => r#"an address like "upkeep <upkeep@example.com>""#,
        "alert.email.to" => r#"a list of addresses like ["me@example.com"]"#,
        "relay.enabled" | "relay.persist_ticks" => "true or false",
        "relay.stall_timeout" => r#"a duration like "30s""#,
        "relay.backoff_min" => r#"a duration like "1s""#,
        "relay.backoff_max" => r#"a duration like "60s""#,
        "relay.max_connections" => "a whole number from 0 (the plan's limit) to 5",
        "relay.upstream_queue" => "a whole number like 4096",
        "relay.consumer_queue" => "a whole number like 1024",
        _ => return None,
    })
}

struct Collector(Vec<ConfigError>);

impl Collector {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::invalid(key, message));
    }
    fn finish(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

// ---------------------------------------------------------------------------------
// Types

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub upstox: UpstoxConfig,
    #[serde(default)]
    pub renewal: RenewalConfig,
    #[serde(default)]
    pub thresholds: ThresholdsConfig,
    #[serde(default)]
    pub sinks: SinksConfig,
    /// `[[account]]` tables, in file order.
    #[serde(default, rename = "account")]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub alert: AlertConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub relay: RelayConfig,
}

/// `[relay]`: the market-data relay (one upstream Market Data Feed V3 pool per account,
/// shared by local consumers). The pool opens upstream sockets only while consumers
/// want keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Whether the relay runs at all.
    pub enabled: bool,
    /// Silence (no data, no ping, no pong) after which an upstream socket counts as
    /// stalled and is reopened. Upstox pings idle sockets, so keep it well above its
    /// ping interval (5 s to 10 min).
    #[serde(deserialize_with = "de_duration")]
    pub stall_timeout: SignedDuration,
    /// First reconnect delay (doubling, with jitter, up to `backoff_max`).
    #[serde(deserialize_with = "de_duration")]
    pub backoff_min: SignedDuration,
    #[serde(deserialize_with = "de_duration")]
    pub backoff_max: SignedDuration,
    /// Upstream connections per account at most; 0 = what the plan allows (2, or 5 on
    /// Upstox Plus). Lower it to leave connections for other programs.
    pub max_connections: usize,
    /// Upstream events (frames, connection changes) buffered for the local side.
    pub upstream_queue: usize,
    /// Frames buffered per local consumer before it counts as slow.
    pub consumer_queue: usize,
    /// Write ticks and connection events to the store.
    pub persist_ticks: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stall_timeout: SignedDuration::from_secs(30),
            backoff_min: SignedDuration::from_secs(1),
            backoff_max: SignedDuration::from_secs(60),
            max_connections: 0,
            upstream_queue: 4096,
            consumer_queue: 1024,
            persist_ticks: false,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the daemon binds (default `127.0.0.1:7878`).
    #[serde(deserialize_with = "de_socket_addr")]
    pub listen: SocketAddr,
    /// Base URL users and Upstox reach the daemon at, for OAuth redirects and webhook
    /// links. Defaults to `http://<listen>` (with `127.0.0.1` for a wildcard address).
    /// Never ends with `/`.
    #[serde(default)] // empty here, so it is derived from the final `listen`
    pub public_url: String,
    /// Most connections open at once (further lowered to fit the open-file limit,
    /// keeping descriptors for the daemon's own work).
    pub max_connections: usize,
    /// A request's headers must arrive within this (at most 30 s).
    #[serde(deserialize_with = "de_duration")]
    pub header_read_timeout: SignedDuration,
    /// A connection with nothing in flight and nothing moving is closed after this.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: SignedDuration,
    /// On shutdown, connections still open after this are dropped (at most 10 s).
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: SignedDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 7878));
        Self {
            listen,
            public_url: default_public_url(listen),
            max_connections: 2048,
            header_read_timeout: SignedDuration::from_secs(15),
            idle_timeout: SignedDuration::from_secs(60),
            shutdown_timeout: SignedDuration::from_secs(10),
        }
    }
}

fn default_public_url(listen: SocketAddr) -> String {
    let host = match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => "127.0.0.1".to_string(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => "[::1]".to_string(),
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("http://{host}:{}", listen.port())
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://...`. A secret: a Postgres URL may hold a
    /// password. Use [`StoreConfig::redacted_url`] for logs.
    #[serde(deserialize_with = "de_secret")]
    pub url: Secret,
    /// File holding the key that seals secrets at rest (default `upkeep.key`).
    pub key_file: PathBuf,
    /// Optional second location for encrypted backups (empty = none).
    #[serde(deserialize_with = "de_opt_path")]
    pub backup_dir: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://upkeep.db"),
            key_file: PathBuf::from("upkeep.key"),
            backup_dir: None,
        }
    }
}

/// Which database a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    Sqlite,
    Postgres,
}

impl StoreConfig {
    /// The backend named by `url`'s scheme, if supported.
    pub fn backend(&self) -> Option<StoreBackend> {
        let url = self.url.expose();
        if url.starts_with("sqlite:") {
            Some(StoreBackend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(StoreBackend::Postgres)
        } else {
            None
        }
    }

    /// `url` with any password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_userinfo(self.url.expose())
    }

    /// The database file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH`, with any
    /// `?query` removed); `None` for PostgreSQL and in-memory databases.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.url.expose();
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
    }
}

impl Config {
    /// Makes the relative file paths of a configuration read from a file (the SQLite
    /// database, the key file, the backup folder, the legacy sinks) relative to that
    /// file's folder `base`, so the same file means the same store wherever a command
    /// runs from. Pure: joins paths, touches nothing.
    pub fn resolve_relative_paths(&mut self, base: &std::path::Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if let Some(db) = self.store.sqlite_path().filter(|p| p.is_relative()) {
            let url = self.store.url.expose();
            let query = url.find('?').map(|i| &url[i..]).unwrap_or_default();
            self.store.url = Secret::new(format!("sqlite://{}{query}", base.join(db).display()));
        }
        join(&mut self.store.key_file);
        for p in [
            self.store.backup_dir.as_mut(),
            self.sinks.json_file.as_mut(),
            self.sinks.env_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
    }
}

/// Replace the password of `scheme://user:pass@host/...` with `***`.
///
/// A password pasted without percent-encoding may hold `#`, `/`, `?` or `@`, so the
/// userinfo runs to the *last* `@` (over-redacting an odd URL is fine; showing a
/// password is not). Text before that `@` without a `:` but with a path or query
/// delimiter is a path (`sqlite:///me@home/upkeep.db`), and is left alone.
pub fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = url.get(rest_start..).unwrap_or("");
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let userinfo = rest.get(..at).unwrap_or("");
    if !userinfo.contains(':') && userinfo.contains(['/', '?', '#']) {
        return url.to_string();
    }
    let user = userinfo.split(':').next().unwrap_or("");
    format!(
        "{}{}:***@{}",
        url.get(..rest_start).unwrap_or(""),
        user,
        rest.get(at + 1..).unwrap_or("")
    )
}

/// `[upstox]`: every host is overridable (the simulator, a proxy); defaults are real.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstoxConfig {
    pub api_url: String,
    pub order_url: String,
    pub login_url: String,
    pub feed_url: String,
    pub sandbox_url: String,
    /// Run the daemon and the CLI on the simulator's clock (`GET {api_url}/sim/clock`)
    /// instead of the machine's, so a rollover staged in a separately started
    /// `upkeep sim` can be watched. Refused for a real Upstox host.
    pub follow_sim_clock: bool,
}

impl Default for UpstoxConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.upstox.com".into(),
            order_url: "https://api-hft.upstox.com".into(),
            login_url: "https://service.upstox.com".into(),
            feed_url: "wss://api.upstox.com".into(),
            sandbox_url: "https://api-sandbox.upstox.com".into(),
            follow_sim_clock: false,
        }
    }
}

/// `[gateway]`: the Upstox API gateway at `/upstox/...` (bots send an upkeep API key as
/// their Bearer token; upkeep swaps in the account's current Upstox token).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub enabled: bool,
    /// The request header that picks the account (default `X-Upkeep-Account`).
    pub account_header: String,
    /// Connecting to Upstox (TCP + TLS) must take at most this.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: SignedDuration,
    /// A whole upstream exchange (request, response headers and body) at most this.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: SignedDuration,
    /// Idle upstream connections kept per host for reuse.
    pub max_idle_connections: usize,
    /// API key name -> the account its requests use when they name none. Keys not
    /// listed use the default account.
    pub default_accounts: BTreeMap<String, String>,
    /// `[gateway.budget]`: the shared rate budget per Upstox user and API.
    pub budget: gateway_budget::BudgetConfig,
    /// `[gateway.cache]`: the cached fallback for market-data GETs.
    pub cache: gateway_budget::StaleCacheConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            account_header: "X-Upkeep-Account".into(),
            connect_timeout: SignedDuration::from_secs(5),
            request_timeout: SignedDuration::from_secs(30),
            max_idle_connections: 64,
            default_accounts: BTreeMap::new(),
            budget: gateway_budget::BudgetConfig::default(),
            cache: gateway_budget::StaleCacheConfig::default(),
        }
    }
}

/// `[renewal]`: when renewals run. Times are IST.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenewalConfig {
    #[serde(deserialize_with = "de_time")]
    pub window_start: Time,
    #[serde(deserialize_with = "de_time")]
    pub deadline: Time,
    #[serde(deserialize_with = "de_duration")]
    pub jitter: SignedDuration,
    #[serde(deserialize_with = "de_duration")]
    pub warn_ahead: SignedDuration,
    #[serde(deserialize_with = "de_duration")]
    pub health_check_interval: SignedDuration,
    #[serde(deserialize_with = "de_dates")]
    pub holidays: Vec<Date>,
    pub trade_weekends: bool,
    pub trade_holidays: bool,
    /// The exchanges whose trading calendar counts (default `["NSE"]`).
    pub exchanges: Vec<String>,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        let p = RenewalPolicy::default();
        Self {
            window_start: p.window_start,
            deadline: p.deadline,
            jitter: p.max_jitter,
            warn_ahead: p.warn_ahead,
            health_check_interval: SignedDuration::from_mins(30),
            holidays: p.holidays,
            trade_weekends: p.trade_weekends,
            trade_holidays: p.trade_holidays,
            exchanges: p.exchanges,
        }
    }
}

/// `[thresholds]`: token state boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdsConfig {
    #[serde(deserialize_with = "de_duration")]
    pub warning: SignedDuration,
    #[serde(deserialize_with = "de_duration")]
    pub critical: SignedDuration,
}

impl Default for ThresholdsConfig {
    fn default() -> Self {
        let t = Thresholds::default();
        Self {
            warning: t.warning_below,
            critical: t.critical_below,
        }
    }
}

/// `[sinks]`: legacy files rewritten after each token change (empty = off).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(deserialize_with = "de_opt_path")]
    pub json_file: Option<PathBuf>,
    #[serde(deserialize_with = "de_opt_path")]
    pub env_file: Option<PathBuf>,
}

/// Live or sandbox Upstox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstoxEnv {
    #[default]
    Live,
    Sandbox,
}

impl UpstoxEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Sandbox => "sandbox",
        }
    }
}

impl fmt::Display for UpstoxEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UpstoxEnv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "live" => Ok(Self::Live),
            "sandbox" => Ok(Self::Sandbox),
            _ => Err(format!("unknown env \"{}\"; use live or sandbox", s.trim())),
        }
    }
}

impl<'de> Deserialize<'de> for UpstoxEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// How an account gets a new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Headless login with mobile, PIN and TOTP seed, then the OAuth code exchange.
    Totp,
    /// Access Token Request API: the user approves in the Upstox app, Upstox posts the
    /// token to the notifier webhook.
    TokenRequest,
    /// Browser OAuth: the user clicks a link, the callback exchanges the code.
    Oauth,
    /// A user-run token service (`[account.refresh_token]`); Upstox itself has no
    /// refresh grant.
    RefreshToken,
    /// No renewal: the token is pasted by hand.
    Static,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Self::Totp,
        Self::TokenRequest,
        Self::Oauth,
        Self::RefreshToken,
        Self::Static,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::TokenRequest => "token_request",
            Self::Oauth => "oauth",
            Self::RefreshToken => "refresh_token",
            Self::Static => "static",
        }
    }

    /// Can this strategy make a new daily token?
    pub fn renews(self) -> bool {
        self != Self::Static
    }

    /// Does it need a human to click or approve?
    pub fn needs_human(self) -> bool {
        matches!(self, Self::TokenRequest | Self::Oauth)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown strategy \"{}\"; use one of totp, token_request, oauth, \
                     refresh_token, static",
                    s.trim()
                )
            })
    }
}

/// One `[[account]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Short unique name (letters, digits, `-`, `_`).
    pub id: String,
    #[serde(default)]
    pub env: UpstoxEnv,
    /// The app's API key.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub client_id: Option<String>,
    /// The app's API secret.
    #[serde(default, deserialize_with = "de_opt_secret")]
    pub client_secret: Option<Secret>,
    /// The redirect URL registered on the app. Defaults to
    /// `{server.public_url}/auth/upstox/callback`; see [`Config::redirect_uri_for`].
    #[serde(default, deserialize_with = "de_opt_string")]
    pub redirect_uri: Option<String>,
    /// The account's Upstox user (UCC, the `user_id` of Upstox's notifier payload).
    /// Tokens that arrive by webhook are only accepted for a known user: from here, or
    /// learned from a path that proves it (a TOTP login with this account's
    /// credentials, the OAuth callback, `upkeep token set` / `import`).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub user_id: Option<String>,
    /// Strategies to try, in order. Empty means the same as `["static"]`.
    #[serde(default, deserialize_with = "de_strategies")]
    pub renew: Vec<Strategy>,
    /// This account trades on weekends (renews on Saturdays and Sundays).
    #[serde(default)]
    pub trades_weekends: bool,
    /// The account `UPSTOX_*` variables and clients without an account name use.
    #[serde(default)]
    pub default: bool,
    /// Initial or pasted token (`UPSTOX_ACCESS_TOKEN`).
    #[serde(default, deserialize_with = "de_opt_token")]
    pub access_token: Option<AccessToken>,
    /// Pasted sandbox token (`UPSTOX_SANDBOX_TOKEN`).
    #[serde(default, deserialize_with = "de_opt_token")]
    pub sandbox_token: Option<AccessToken>,
    #[serde(default)]
    pub totp: Option<TotpConfig>,
    #[serde(default)]
    pub refresh_token: Option<RefreshTokenConfig>,
}

impl AccountConfig {
    /// An account with only an id (live, no strategies, nothing set).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            env: UpstoxEnv::Live,
            client_id: None,
            client_secret: None,
            redirect_uri: None,
            user_id: None,
            renew: Vec::new(),
            trades_weekends: false,
            default: false,
            access_token: None,
            sandbox_token: None,
            totp: None,
            refresh_token: None,
        }
    }

    /// Whether any configured strategy can make a new daily token.
    pub fn can_renew_daily(&self) -> bool {
        self.renew.iter().any(|s| s.renews())
    }

    /// The token to start from: for sandbox accounts the sandbox token if set.
    pub fn initial_token(&self) -> Option<&AccessToken> {
        match self.env {
            UpstoxEnv::Sandbox => self.sandbox_token.as_ref().or(self.access_token.as_ref()),
            UpstoxEnv::Live => self.access_token.as_ref(),
        }
    }
}

/// `[account.totp]`: headless login credentials. Empty means not set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpConfig {
    /// The 10-digit mobile number used to log in.
    #[serde(default, deserialize_with = "de_string")]
    pub mobile: String,
    #[serde(default = "empty_secret", deserialize_with = "de_secret")]
    pub pin: Secret,
    /// Base32 TOTP seed from the Upstox TOTP setup page.
    #[serde(default = "empty_secret", deserialize_with = "de_secret")]
    pub secret: Secret,
}

/// `[account.refresh_token]`: a user-run token service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenConfig {
    #[serde(default, deserialize_with = "de_string")]
    pub token_url: String,
    #[serde(default = "empty_secret", deserialize_with = "de_secret")]
    pub refresh_token: Secret,
}

/// `[alert]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// `[[alert.webhook]]`
    pub webhook: Vec<WebhookConfig>,
    /// `[alert.email]`
    pub email: Option<EmailConfig>,
}

/// Body shape of an alert webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Generic,
    Slack,
    Telegram,
}

/// `[[alert.webhook]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A secret: Slack and Telegram URLs carry credentials.
    #[serde(deserialize_with = "de_secret")]
    pub url: Secret,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Telegram chat to post to (required for `format = "telegram"`).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub chat_id: Option<String>,
}

/// `[alert.email]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port` or `smtps://host:port`, without credentials.
    pub smtp_url: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "de_opt_secret")]
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
}

// ---------------------------------------------------------------------------------
// Value parsing

/// Parse `90s`, `30m`, `3h`, `3d`, or combinations such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let bad = || {
        format!(
            "invalid duration \"{}\"; use a number and a unit (s, m, h, d), e.g. 90s, 30m, 3h, 3d",
            s.trim()
        )
    };
    let text: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if text.is_empty() {
        return Err(bad());
    }
    if text == "0" {
        return Ok(SignedDuration::ZERO);
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= 100 * 365 * 86_400)
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(total))
}

/// Parse `HH:MM` (or `H:MM`, `HH:MM:SS`), a time of day in IST.
pub fn parse_time(s: &str) -> Result<Time, String> {
    let bad = || {
        format!(
            "invalid time \"{}\"; use HH:MM in IST, e.g. 05:30",
            s.trim()
        )
    };
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts.iter().enumerate().any(|(i, p)| {
            !(p.len() == 2 || (i == 0 && p.len() == 1)) || !p.bytes().all(|b| b.is_ascii_digit())
        })
    {
        return Err(bad());
    }
    let num = |i: usize| -> Result<i8, String> {
        parts
            .get(i)
            .map_or(Ok(0), |p| p.parse::<i8>())
            .map_err(|_| bad())
    };
    Time::new(num(0)?, num(1)?, num(2)?, 0).map_err(|_| bad())
}

/// Parse `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<Date, String> {
    let t = s.trim();
    let bad = || format!("invalid date \"{t}\"; use YYYY-MM-DD, e.g. 2026-11-24");
    if t.len() != 10 {
        return Err(bad());
    }
    t.parse::<Date>().map_err(|_| bad())
}

/// A duration as config text: `3h`, `1h30m`, `90s`, `3d`.
pub fn format_config_duration(d: SignedDuration) -> String {
    let mut secs = d.as_secs().unsigned_abs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

fn de_with<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).map_err(de::Error::custom)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
    de_with(d, parse_duration)
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    de_with(d, parse_time)
}

fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    de_with(d, |s| {
        s.trim().parse::<SocketAddr>().map_err(|_| {
            format!(
                "\"{}\" is not an IP address and port; use e.g. 127.0.0.1:7878 or 0.0.0.0:7878",
                s.trim()
            )
        })
    })
}

/// Dates as a list of `"YYYY-MM-DD"` strings or bare TOML dates, or one string with
/// comma-separated dates (handy in an environment variable).
fn de_dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Date>, D::Error> {
    let items: Vec<Value> = match Value::deserialize(d)? {
        Value::Array(items) => items,
        Value::String(s) => s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| Value::String(p.to_string()))
            .collect(),
        _ => {
            return Err(de::Error::custom(
                "expected a list of dates, e.g. [\"2026-11-24\"]",
            ));
        }
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => parse_date(s),
            Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
                parse_date(&dt.to_string())
            }
            _ => Err("expected dates like \"2026-11-24\"".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(de::Error::custom)
}

fn de_strategies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Strategy>, D::Error> {
    let names: Vec<String> = match Value::deserialize(d)? {
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(de::Error::custom(
                    "expected a list of strategy names, e.g. [\"totp\", \"oauth\"]",
                )),
            })
            .collect::<Result<_, D::Error>>()?,
        _ => {
            return Err(de::Error::custom(
                "expected a list of strategy names, e.g. [\"totp\", \"oauth\"]",
            ));
        }
    };
    names
        .iter()
        .map(|n| n.parse::<Strategy>())
        .collect::<Result<_, _>>()
        .map_err(de::Error::custom)
}

fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s.trim())))
}

fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(String::deserialize(d)?.trim().to_string())
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    Ok((!s.is_empty()).then(|| s.to_string()))
}

/// Reads a string into a [`Secret`]; any other type is rejected without echoing it.
struct SecretVisitor;

impl Visitor<'_> for SecretVisitor {
    type Value = Secret;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v.trim()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
}

const NOT_A_STRING: &str = "expected a quoted string (value not shown); put quotes around it";

fn empty_secret() -> Secret {
    Secret::new("")
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    d.deserialize_any(SecretVisitor)
}

fn de_opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let s = de_secret(d)?;
    Ok((!s.is_empty()).then_some(s))
}

fn de_opt_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AccessToken>, D::Error> {
    let s = de_secret(d)?;
    Ok((!s.is_empty()).then(|| AccessToken::new(s.expose())))
}

// ---------------------------------------------------------------------------------
// Environment overrides

/// Path of the daemon's OAuth callback, appended to `server.public_url` when an
/// account has no `redirect_uri`.
pub const OAUTH_CALLBACK_PATH: &str = "/auth/upstox/callback";

/// Sections `UPKEEP_<SECTION>__<KEY>` may override.
pub const ENV_SECTIONS: [&str; 6] = [
    "server",
    "store",
    "upstox",
    "renewal",
    "thresholds",
    "sinks",
];

/// Variables other Upstox tools use, and the key of the default account they set.
pub const LEGACY_ENV: [(&str, &str); 10] = [
    ("UPSTOX_ACCESS_TOKEN", "access_token"),
    ("UPSTOX_SANDBOX_TOKEN", "sandbox_token"),
    ("UPSTOX_ENV", "env"),
    ("UPSTOX_CLIENT_ID", "client_id"),
    ("UPSTOX_CLIENT_SECRET", "client_secret"),
    ("UPSTOX_REDIRECT_URI", "redirect_uri"),
    ("UPSTOX_USER_ID", "user_id"),
    ("UPSTOX_USERNAME", "totp.mobile"),
    ("UPSTOX_PIN_CODE", "totp.pin"),
    ("UPSTOX_TOTP_SECRET", "totp.secret"),
];

/// Which config key each environment variable set, for error messages.
type Sources = BTreeMap<String, String>;

fn set_path(table: &mut Table, path: &[&str], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("`{p}` in the config file is not a table")),
        };
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// `true`/`false` become booleans and `[...]` a TOML array; everything else stays a
/// string (no config key under the env-overridable sections is a number).
fn coerce_env_value(name: &str, raw: &str) -> Result<Value, ConfigError> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("true") {
        return Ok(Value::Boolean(true));
    }
    if t.eq_ignore_ascii_case("false") {
        return Ok(Value::Boolean(false));
    }
    if t.starts_with('[') {
        return toml::from_str::<Table>(&format!("v = {t}"))
            .ok()
            .and_then(|mut tab| tab.remove("v"))
            .ok_or_else(|| {
                ConfigError::invalid(
                    name,
                    "not a valid TOML array; write it like [\"2026-11-24\", \"2026-12-25\"]",
                )
            });
    }
    Ok(Value::String(t.to_string()))
}

fn apply_upkeep_env(
    table: &mut Table,
    env: &BTreeMap<String, String>,
    sources: &mut Sources,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("UPKEEP_") else {
            continue;
        };
        if !rest.contains("__") {
            continue; // UPKEEP_CONFIG, UPKEEP_LOG, ...: the binary's, not config keys
        }
        let segs: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segs.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                name.as_str(),
                "empty key part; use UPKEEP_<SECTION>__<KEY>, e.g. UPKEEP_SERVER__LISTEN",
            ));
        }
        let section = segs.first().map(String::as_str).unwrap_or("");
        if !ENV_SECTIONS.contains(&section) {
            return Err(ConfigError::invalid(
                name.as_str(),
                format!(
                    "unknown section `{section}`; use one of {}",
                    ENV_SECTIONS.join(", ")
                ),
            ));
        }
        let path: Vec<&str> = segs.iter().map(String::as_str).collect();
        set_path(table, &path, coerce_env_value(name, raw)?)
            .map_err(|m| ConfigError::invalid(name.as_str(), m))?;
        sources.insert(segs.join("."), name.clone());
    }
    Ok(())
}

fn apply_legacy_env(
    table: &mut Table,
    env: &BTreeMap<String, String>,
    sources: &mut Sources,
) -> Result<(), ConfigError> {
    let given: Vec<(&str, &str, &str)> = LEGACY_ENV
        .iter()
        .filter_map(|(var, key)| {
            let v = env.get(*var)?.trim();
            (!v.is_empty()).then_some((*var, *key, v))
        })
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    let accounts = table
        .entry("account")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(accounts) = accounts else {
        return Ok(()); // reported by deserialization
    };
    let created = accounts.is_empty();
    if created {
        let mut t = Table::new();
        t.insert("id".into(), Value::String("main".into()));
        accounts.push(Value::Table(t));
    }
    let index = accounts
        .iter()
        .position(|a| a.get("default").and_then(Value::as_bool) == Some(true))
        .unwrap_or(0);
    let Some(Value::Table(account)) = accounts.get_mut(index) else {
        return Ok(()); // reported by deserialization
    };
    for (var, key, value) in &given {
        let path: Vec<&str> = key.split('.').collect();
        set_path(account, &path, Value::String((*value).to_string()))
            .map_err(|m| ConfigError::invalid(*var, format!("account[{index}]: {m}")))?;
        sources.insert(format!("account[{index}].{key}"), (*var).to_string());
    }
    if created {
        let has = |var: &str| given.iter().any(|(v, _, _)| *v == var);
        let env_name = if has("UPSTOX_ENV") {
            None
        } else if has("UPSTOX_SANDBOX_TOKEN") && !has("UPSTOX_ACCESS_TOKEN") {
            Some("sandbox")
        } else {
            None
        };
        if let Some(e) = env_name {
            account.insert("env".into(), Value::String(e.into()));
        }
        let sandbox = env_name == Some("sandbox")
            || given
                .iter()
                .any(|(v, _, val)| *v == "UPSTOX_ENV" && val.eq_ignore_ascii_case("sandbox"));
        let strategy = if sandbox {
            "static"
        } else if has("UPSTOX_USERNAME") && has("UPSTOX_PIN_CODE") && has("UPSTOX_TOTP_SECRET") {
            "totp"
        } else if has("UPSTOX_CLIENT_ID") && has("UPSTOX_CLIENT_SECRET") {
            "oauth"
        } else {
            "static"
        };
        account.insert(
            "renew".into(),
            Value::Array(vec![Value::String(strategy.into())]),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Loading

impl Config {
    /// Parse `toml_text` (the config file, if any), apply the environment `env`, fill
    /// derived defaults and validate.
    pub fn from_sources(
        toml_text: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut table = match toml_text {
            Some(text) => toml::from_str::<Table>(text)
                .map_err(|e| ConfigError::syntax(text, e.span(), e.message()))?,
            None => Table::new(),
        };
        if matches!(table.get("account"), Some(Value::Table(_))) {
            return Err(ConfigError::invalid(
                "account",
                "write accounts as [[account]] (double brackets), one table per account",
            ));
        }
        let mut sources = Sources::new();
        apply_upkeep_env(&mut table, env, &mut sources)?;
        apply_legacy_env(&mut table, env, &mut sources)?;

        let mut config: Config =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let message = with_example(&path, sanitize(e.inner().message()));
                ConfigError::invalid(annotate(&path, &sources), message)
            })?;
        config.fill_defaults();
        config.validate()?;
        Ok(config)
    }

    fn fill_defaults(&mut self) {
        let url = self
            .server
            .public_url
            .trim()
            .trim_end_matches('/')
            .to_string();
        self.server.public_url = if url.is_empty() {
            default_public_url(self.server.listen)
        } else {
            url
        };
        let up = &mut self.upstox;
        for u in [
            &mut up.api_url,
            &mut up.order_url,
            &mut up.login_url,
            &mut up.feed_url,
            &mut up.sandbox_url,
        ] {
            *u = u.trim().trim_end_matches('/').to_string();
        }
    }

    /// Values left as `upkeep config example` wrote them: credentials that cannot work
    /// (and would spend Upstox's lockout attempts) and alert targets that reach nobody.
    /// One line each, naming the key; secret values are not shown.
    pub fn placeholders(&self) -> Vec<String> {
        let example_host = |url: &str| host_within(&url_host(url), "example.com");
        let example_mail = |m: &str| m.trim().to_ascii_lowercase().ends_with("@example.com");
        let mut out = Vec::new();
        let mut flag = |key: String, shown: Option<&str>| {
            out.push(match shown {
                Some(v) => format!("{key}: \"{v}\" is the example's placeholder; put your own"),
                None => {
                    format!("{key}: is the example's placeholder (value not shown); put your own")
                }
            });
        };
        for a in &self.accounts {
            let key = |field: &str| format!("account \"{}\".{field}", a.id);
            if let Some(v) = a.client_id.as_deref().filter(|v| *v == "your-api-key") {
                flag(key("client_id"), Some(v));
            }
            if a.client_secret
                .as_ref()
                .is_some_and(|s| s.expose() == "your-api-secret")
            {
                flag(key("client_secret"), None);
            }
            if let Some(v) = a.user_id.as_deref().filter(|v| *v == "AB1234") {
                flag(key("user_id"), Some(v));
            }
            if let Some(t) = &a.totp {
                if t.mobile == "9876543210" {
                    flag(key("totp.mobile"), Some(&t.mobile));
                }
                if t.pin.expose() == "123456" {
                    flag(key("totp.pin"), None);
                }
                if t.secret.expose() == "JBSWY3DPEHPK3PXP" {
                    flag(key("totp.secret"), None);
                }
            }
            if let Some(r) = &a.refresh_token
                && example_host(&r.token_url)
            {
                flag(key("refresh_token.token_url"), Some(&r.token_url));
            }
        }
        for (i, w) in self.alert.webhook.iter().enumerate() {
            if example_host(w.url.expose()) {
                flag(format!("alert.webhook[{i}].url"), None);
            }
        }
        if let Some(e) = &self.alert.email {
            if example_mail(&e.from) {
                flag("alert.email.from".into(), Some(&e.from));
            }
            if e.to.iter().any(|t| example_mail(t)) {
                flag("alert.email.to".into(), Some("you@example.com"));
            }
        }
        out
    }

    /// Check everything parsing cannot: cross-field rules, strategy requirements,
    /// duplicates. Reports every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Collector(Vec::new());
        self.validate_server(&mut c);
        self.validate_renewal(&mut c);
        self.validate_accounts(&mut c);
        self.validate_alerts(&mut c);
        self.validate_gateway(&mut c);
        self.validate_relay(&mut c);
        c.finish()
    }

    fn validate_relay(&self, c: &mut Collector) {
        let r = &self.relay;
        let secs = SignedDuration::from_secs;
        if r.stall_timeout < secs(5) || r.stall_timeout > secs(600) {
            c.push(
                "relay.stall_timeout",
                format!(
                    "is {}; use 5s to 10m, well above Upstox's ping interval (default 30s)",
                    format_config_duration(r.stall_timeout)
                ),
            );
        }
        if r.backoff_min <= SignedDuration::ZERO || r.backoff_min > secs(60) {
            c.push(
                "relay.backoff_min",
                format!(
                    "is {}; use more than 0 and at most 60s (default 1s)",
                    format_config_duration(r.backoff_min)
                ),
            );
        }
        if r.backoff_max < r.backoff_min || r.backoff_max > secs(3600) {
            c.push(
                "relay.backoff_max",
                format!(
                    "is {}; use at least backoff_min ({}) and at most 1h (default 60s)",
                    format_config_duration(r.backoff_max),
                    format_config_duration(r.backoff_min)
                ),
            );
        }
        if r.max_connections > 5 {
            c.push(
                "relay.max_connections",
                format!(
                    "is {}; Upstox allows at most 5 feed connections (Plus) or 2; use 0 for the plan's limit",
                    r.max_connections
                ),
            );
        }
        for (key, n) in [
            ("relay.upstream_queue", r.upstream_queue),
            ("relay.consumer_queue", r.consumer_queue),
        ] {
            if !(16..=1_000_000).contains(&n) {
                c.push(key, format!("is {n}; use 16 to 1000000"));
            }
        }
    }

    fn validate_server(&self, c: &mut Collector) {
        if !is_http_url(&self.server.public_url) {
            c.push(
                "server.public_url",
                format!(
                    "\"{}\" is not an http(s) URL; use e.g. http://127.0.0.1:7878",
                    self.server.public_url
                ),
            );
        }
        if self.store.backend().is_none() {
            let scheme = scheme_of(self.store.url.expose());
            c.push(
                "store.url",
                format!(
                    "unsupported database URL{}; use sqlite://upkeep.db or postgres://USER@HOST/DB",
                    scheme.map(|s| format!(" scheme `{s}`")).unwrap_or_default()
                ),
            );
        }
        let srv = &self.server;
        if srv.max_connections == 0 {
            c.push(
                "server.max_connections",
                "is 0; use at least 1 (default 2048)",
            );
        }
        for (key, d, max) in [
            ("server.header_read_timeout", srv.header_read_timeout, 30),
            ("server.shutdown_timeout", srv.shutdown_timeout, 10),
            ("server.idle_timeout", srv.idle_timeout, 3600),
        ] {
            if d <= SignedDuration::ZERO || d > SignedDuration::from_secs(max) {
                c.push(
                    key,
                    format!(
                        "is {}; use more than 0 and at most {max}s",
                        format_config_duration(d)
                    ),
                );
            }
        }
        if self.store.key_file.as_os_str().is_empty() {
            c.push(
                "store.key_file",
                "is empty; name the file that holds the sealing key, e.g. upkeep.key",
            );
        }
        let up = &self.upstox;
        for (key, url, ws) in [
            ("upstox.api_url", &up.api_url, false),
            ("upstox.order_url", &up.order_url, false),
            ("upstox.login_url", &up.login_url, false),
            ("upstox.feed_url", &up.feed_url, true),
            ("upstox.sandbox_url", &up.sandbox_url, false),
        ] {
            let ok = if ws {
                url.starts_with("ws://") || url.starts_with("wss://")
            } else {
                is_http_url(url)
            };
            if !ok {
                let want = if ws {
                    "a ws:// or wss://"
                } else {
                    "an http(s)"
                };
                c.push(key, format!("\"{url}\" is not {want} URL"));
            }
        }
        if up.follow_sim_clock && is_upstox_host(&up.api_url) {
            c.push(
                "upstox.follow_sim_clock",
                format!(
                    "is on while upstox.api_url is Upstox itself (\"{}\"); point api_url at \
                     `upkeep sim` or turn follow_sim_clock off",
                    up.api_url
                ),
            );
        }
    }

    fn validate_renewal(&self, c: &mut Collector) {
        let r = &self.renewal;
        if r.window_start < EARLIEST_RENEWAL {
            c.push(
                "renewal.window_start",
                format!(
                    "{} is before the 03:30 IST rollover, and a token made then dies at 03:30; \
                     use 03:30 or later",
                    format_hm(r.window_start)
                ),
            );
        }
        if r.deadline <= r.window_start {
            c.push(
                "renewal.deadline",
                format!(
                    "{} is not after window_start {}; set a deadline later than window_start",
                    format_hm(r.deadline),
                    format_hm(r.window_start)
                ),
            );
        }
        if r.deadline > LATEST_RENEWAL {
            c.push(
                "renewal.deadline",
                format!(
                    "{} is too close to the next 03:30 IST rollover (a token made then lives \
                     under 6 hours); use 21:30 or earlier",
                    format_hm(r.deadline)
                ),
            );
        }
        if r.exchanges.is_empty() {
            c.push(
                "renewal.exchanges",
                "is empty; list the exchanges the accounts trade on, e.g. [\"NSE\"]",
            );
        }
        for e in &r.exchanges {
            if e.is_empty() || !e.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                c.push(
                    "renewal.exchanges",
                    format!("{e:?} is not an exchange name; use names like \"NSE\" or \"BSE\""),
                );
            }
        }
        if r.health_check_interval < SignedDuration::from_secs(10) {
            c.push(
                "renewal.health_check_interval",
                format!(
                    "{} is too short; use at least 10s",
                    format_config_duration(r.health_check_interval)
                ),
            );
        }
        let t = &self.thresholds;
        if t.critical > t.warning {
            c.push(
                "thresholds.critical",
                format!(
                    "{} is more than thresholds.warning {}; critical must be the smaller one",
                    format_config_duration(t.critical),
                    format_config_duration(t.warning)
                ),
            );
        }
    }

    fn validate_accounts(&self, c: &mut Collector) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let defaults: Vec<&str> = self
            .accounts
            .iter()
            .filter(|a| a.default)
            .map(|a| a.id.as_str())
            .collect();
        if defaults.len() > 1 {
            c.push(
                "account",
                format!(
                    "{} accounts have default = true ({}); mark only one",
                    defaults.len(),
                    defaults.join(", ")
                ),
            );
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if !valid_account_id(&a.id) {
                c.push(
                    format!("account[{i}].id"),
                    format!(
                        "\"{}\" is not a valid id; use 1-64 letters, digits, '-' or '_'",
                        a.id
                    ),
                );
            } else if let Some(first) = seen.insert(&a.id, i) {
                c.push(
                    format!("account[{i}].id"),
                    format!(
                        "duplicate account id \"{}\" (also account[{first}]); give each \
                         [[account]] its own id",
                        a.id
                    ),
                );
            }
            validate_account(a, c);
        }
        // The notifier webhook finds the account by the app's client id: two accounts
        // on one app would make that ambiguous.
        let mut by_client: BTreeMap<&str, &str> = BTreeMap::new();
        for a in &self.accounts {
            let Some(client_id) = a.client_id.as_deref().filter(|c| !c.is_empty()) else {
                continue;
            };
            if let Some(first) = by_client.insert(client_id, &a.id) {
                c.push(
                    format!("account \"{}\".client_id", a.id),
                    format!(
                        "accounts \"{first}\" and \"{}\" use the same client_id; each account \
                         needs its own Upstox app (the webhook finds the account by it)",
                        a.id
                    ),
                );
            }
        }
    }

    fn validate_gateway(&self, c: &mut Collector) {
        let g = &self.gateway;
        gateway_budget::validate(&g.budget, &g.cache, "gateway", c);
        let name = g.account_header.to_ascii_lowercase();
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token_char) {
            c.push(
                "gateway.account_header",
                format!(
                    "\"{}\" is not an HTTP header name; use e.g. X-Upkeep-Account",
                    g.account_header
                ),
            );
        } else if [
            "authorization",
            "host",
            "connection",
            "content-length",
            "content-type",
            "transfer-encoding",
            "te",
            "upgrade",
            "cookie",
        ]
        .contains(&name.as_str())
        {
            c.push(
                "gateway.account_header",
                format!(
                    "\"{}\" is a standard header the requests need; use e.g. X-Upkeep-Account",
                    g.account_header
                ),
            );
        }
        for (key, d) in [
            ("gateway.connect_timeout", g.connect_timeout),
            ("gateway.request_timeout", g.request_timeout),
        ] {
            if d <= SignedDuration::ZERO || d > SignedDuration::from_mins(10) {
                c.push(
                    key,
                    format!(
                        "is {}; use more than 0 and at most 10m",
                        format_config_duration(d)
                    ),
                );
            }
        }
        for (key, account) in &g.default_accounts {
            if self.account(account).is_none() {
                c.push(
                    format!("gateway.default_accounts.{key}"),
                    format!(
                        "names account \"{account}\", which is not configured; use one of the \
                         [[account]] ids"
                    ),
                );
            }
        }
    }

    fn validate_alerts(&self, c: &mut Collector) {
        for (i, w) in self.alert.webhook.iter().enumerate() {
            if !is_http_url(w.url.expose()) {
                c.push(
                    format!("alert.webhook[{i}].url"),
                    "is not an http(s) URL (value not shown)",
                );
            }
            if w.format == WebhookFormat::Telegram && w.chat_id.is_none() {
                c.push(
                    format!("alert.webhook[{i}]"),
                    "format telegram needs chat_id (the chat the bot posts to)",
                );
            }
        }
        if let Some(e) = &self.alert.email {
            let url = e.smtp_url.trim();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                c.push(
                    "alert.email.smtp_url",
                    "is not an smtp:// or smtps:// URL; use e.g. smtp://127.0.0.1:2525",
                );
            } else if authority_of(url).contains('@') {
                c.push(
                    "alert.email.smtp_url",
                    "holds credentials (value not shown); move them to alert.email.username \
                     and alert.email.password",
                );
            }
            if !e.from.contains('@') {
                c.push(
                    "alert.email.from",
                    format!("\"{}\" is not an email address", e.from),
                );
            }
            if e.to.is_empty() {
                c.push("alert.email.to", "is empty; list at least one address");
            }
            for (j, to) in e.to.iter().enumerate() {
                if !to.contains('@') {
                    c.push(
                        format!("alert.email.to[{j}]"),
                        format!("\"{to}\" is not an email address"),
                    );
                }
            }
        }
    }

    // -----------------------------------------------------------------------------
    // Accessors

    /// The renewal policy from `[renewal]`.
    pub fn to_policy(&self) -> RenewalPolicy {
        let r = &self.renewal;
        RenewalPolicy {
            window_start: r.window_start,
            deadline: r.deadline,
            max_jitter: r.jitter,
            warn_ahead: r.warn_ahead,
            holidays: r.holidays.clone(),
            trade_weekends: r.trade_weekends,
            trade_holidays: r.trade_holidays,
            exchanges: r.exchanges.iter().map(|e| e.to_ascii_uppercase()).collect(),
            calendar: None,
        }
    }

    /// The renewal policy for one account (its `trades_weekends` added).
    pub fn policy_for(&self, account: &AccountConfig) -> RenewalPolicy {
        let mut p = self.to_policy();
        p.trade_weekends |= account.trades_weekends;
        p
    }

    /// The token state thresholds from `[thresholds]`.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            warning_below: self.thresholds.warning,
            critical_below: self.thresholds.critical,
        }
    }

    /// The account marked `default = true`, else the first.
    pub fn default_account(&self) -> Option<&AccountConfig> {
        self.accounts
            .iter()
            .find(|a| a.default)
            .or_else(|| self.accounts.first())
    }

    /// The account's redirect URL: its `redirect_uri`, else
    /// `{server.public_url}/auth/upstox/callback` (the daemon's OAuth callback). It must
    /// equal the URL registered on the Upstox app exactly.
    pub fn redirect_uri_for(&self, account: &AccountConfig) -> String {
        account
            .redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}{OAUTH_CALLBACK_PATH}", self.server.public_url))
    }

    /// The account with this id.
    pub fn account(&self, id: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

fn annotate(path: &str, sources: &Sources) -> String {
    let from = sources.iter().find(|(key, _)| {
        path == key.as_str()
            || path
                .strip_prefix(key.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    });
    match from {
        Some((_, var)) => format!("{path} (from {var})"),
        None if path == "." => "config".to_string(),
        None => path.to_string(),
    }
}

/// An Upstox UCC: a short run of ASCII letters and digits.
fn valid_user_id(id: &str) -> bool {
    (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_account_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// The host of `url`, lower case, without user info, port or a trailing dot.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.split(':')
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `host` is `domain` or one of its subdomains.
fn host_within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.ends_with('.'))
}

/// Whether `url`'s host is Upstox's own (`upstox.com` or a subdomain).
pub fn is_upstox_host(url: &str) -> bool {
    host_within(&url_host(url), "upstox.com")
}

fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    (!scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+'))
    .then_some(scheme)
}

fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.get(..end).unwrap_or(rest)
}

fn list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A TOTP seed the login can use: base32 (whitespace, lower case and trailing `=` are
/// fine) holding at least one byte of key. One symbol carries only 5 bits, which
/// decodes to an empty key that `upkeep_upstox::TotpCode::from_base32` refuses.
fn is_base32(seed: &str) -> bool {
    let s: String = seed
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let s = s.trim_end_matches('=');
    s.len() * 5 / 8 >= 1
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

fn validate_account(a: &AccountConfig, c: &mut Collector) {
    let key = format!("account \"{}\"", a.id);
    if let Some(user) = &a.user_id
        && !valid_user_id(user)
    {
        c.push(
            format!("{key}.user_id"),
            "is not an Upstox UCC; use the client id shown in the Upstox app (letters and \
             digits, e.g. \"AB1234\")",
        );
    }
    // A token delivered by the webhook proves nothing about whose it is: an account
    // that can only get tokens that way must be told its user.
    let renewing: Vec<Strategy> = a.renew.iter().copied().filter(|s| s.renews()).collect();
    if a.user_id.is_none()
        && !renewing.is_empty()
        && renewing.iter().all(|s| *s == Strategy::TokenRequest)
    {
        c.push(
            format!("{key}.user_id"),
            "is required with renew = [\"token_request\"]: tokens arrive by webhook, which \
             anyone can post to, so upkeep must know whose they are; set user_id = \"<your \
             UCC>\" (the client id shown in the Upstox app)",
        );
    }
    let mut seen = Vec::new();
    for s in &a.renew {
        if seen.contains(s) {
            c.push(
                format!("{key}.renew"),
                format!("strategy {s} is listed twice; list each once"),
            );
        }
        seen.push(*s);
    }
    let client_id = a.client_id.is_some();
    let client_secret = a.client_secret.is_some();
    for s in &seen {
        if a.env == UpstoxEnv::Sandbox
            && matches!(s, Strategy::Totp | Strategy::TokenRequest | Strategy::Oauth)
        {
            c.push(
                key.as_str(),
                format!(
                    "strategy {s} does not work with env = \"sandbox\" (sandbox tokens are \
                     generated on the Upstox Developer Apps page and last 30 days); use \
                     renew = [\"static\"] and paste the token"
                ),
            );
            continue;
        }
        let needs_app = matches!(s, Strategy::Totp | Strategy::TokenRequest | Strategy::Oauth);
        let missing: Vec<&str> = [("client_id", client_id), ("client_secret", client_secret)]
            .into_iter()
            .filter(|(_, present)| needs_app && !present)
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            c.push(
                key.as_str(),
                format!(
                    "strategy {s} needs {} (from the app on the Upstox Developer Apps page)",
                    list(&missing)
                ),
            );
        }
        match s {
            Strategy::Totp => {
                let t = a.totp.as_ref();
                let mut missing = Vec::new();
                if t.is_none_or(|t| t.mobile.is_empty()) {
                    missing.push("mobile");
                }
                if t.is_none_or(|t| t.pin.is_empty()) {
                    missing.push("pin");
                }
                if t.is_none_or(|t| t.secret.is_empty()) {
                    missing.push("secret");
                }
                if !missing.is_empty() {
                    c.push(
                        key.as_str(),
                        format!("strategy totp needs [account.totp] {}", list(&missing)),
                    );
                } else if t.is_some_and(|t| !is_base32(t.secret.expose())) {
                    c.push(
                        format!("{key}.totp.secret"),
                        "is not a base32 TOTP seed (value not shown); copy the key shown \
                         when enabling TOTP on Upstox",
                    );
                }
            }
            Strategy::RefreshToken => {
                let r = a.refresh_token.as_ref();
                let mut missing = Vec::new();
                if r.is_none_or(|r| r.token_url.is_empty()) {
                    missing.push("token_url");
                }
                if r.is_none_or(|r| r.refresh_token.is_empty()) {
                    missing.push("refresh_token");
                }
                if !missing.is_empty() {
                    c.push(
                        key.as_str(),
                        format!(
                            "strategy refresh_token needs [account.refresh_token] {}",
                            list(&missing)
                        ),
                    );
                } else if r.is_some_and(|r| !is_http_url(&r.token_url)) {
                    c.push(
                        format!("{key}.refresh_token.token_url"),
                        format!(
                            "\"{}\" is not an http(s) URL",
                            r.map(|r| r.token_url.as_str()).unwrap_or("")
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(uri) = &a.redirect_uri
        && !is_http_url(uri)
    {
        c.push(
            format!("{key}.redirect_uri"),
            format!(
                "\"{uri}\" is not an http(s) URL; use the redirect URL registered on the \
                 Upstox app"
            ),
        );
    }
    for (field, token) in [
        ("access_token", &a.access_token),
        ("sandbox_token", &a.sandbox_token),
    ] {
        if let Some(t) = token
            && let Err(e) = crate::jwt::decode_claims(t.expose())
        {
            c.push(format!("{key}.{field}"), e.to_string());
        }
    }
}

/// A commented example configuration; it parses and validates as-is.
pub fn example_toml() -> &'static str {
    EXAMPLE_TOML
}

const EXAMPLE_TOML: &str = r#"# upkeep configuration. Every key is optional unless marked; defaults shown.
# Environment overrides: UPKEEP_<SECTION>__<KEY> (e.g. UPKEEP_SERVER__LISTEN=0.0.0.0:7878),
# and UPSTOX_ACCESS_TOKEN, UPSTOX_CLIENT_ID, UPSTOX_CLIENT_SECRET, UPSTOX_REDIRECT_URI,
# UPSTOX_USERNAME, UPSTOX_PIN_CODE, UPSTOX_TOTP_SECRET, UPSTOX_SANDBOX_TOKEN, UPSTOX_ENV
# for the default account.
# Durations: 90s, 30m, 3h, 3d (or 1h30m). Times: HH:MM in IST.

[server]
listen = "127.0.0.1:7878"
public_url = "http://127.0.0.1:7878"    # used for OAuth redirect and webhook links
max_connections = 2048                  # lowered to fit the open-file limit
header_read_timeout = "15s"             # slow or stalled clients are dropped
idle_timeout = "60s"
shutdown_timeout = "10s"                # open connections are dropped after this

[store]
url = "sqlite://upkeep.db"              # or postgres://user@host/db
key_file = "upkeep.key"                 # seals secrets at rest; back it up
backup_dir = ""                         # optional second location for encrypted backups

[upstox]                                # every host overridable; defaults are the real ones
api_url = "https://api.upstox.com"
order_url = "https://api-hft.upstox.com"
login_url = "https://service.upstox.com"
feed_url = "wss://api.upstox.com"
sandbox_url = "https://api-sandbox.upstox.com"
# follow_sim_clock = false              # run on `upkeep sim`'s clock (api_url = the sim)

[renewal]
window_start = "05:30"                  # daily tokens die at 03:30 IST; renew after that
deadline = "09:00"                      # latest scheduled renewal (markets open 09:15)
jitter = "10m"                          # spreads accounts over the window
warn_ahead = "3d"                       # warn this long before a non-renewable token dies
health_check_interval = "30m"
holidays = ["2026-11-24"]               # no renewal on these dates (IST), whatever the calendar says
exchanges = ["NSE"]                     # whose trading calendar (from Upstox) decides trading days
trade_weekends = false
trade_holidays = false

[thresholds]
warning = "3h"
critical = "1h"

[sinks]                                 # legacy files rewritten after each token change
json_file = ""                          # e.g. "data/upstox_tokens.json"
env_file = ""                           # e.g. ".env"

[relay]                                 # market-data relay: one upstream feed per account
enabled = true
stall_timeout = "30s"                   # silence (no data, no pings) before a reconnect
backoff_min = "1s"                      # reconnect delay, doubling with jitter
backoff_max = "60s"
max_connections = 0                     # upstream sockets per account; 0 = plan limit (2, Plus 5)
upstream_queue = 4096                   # frames buffered between the upstream and the consumers
consumer_queue = 1024                   # frames buffered per local consumer
persist_ticks = false                   # write ticks and connection events to the store

[[account]]
id = "main"
env = "live"                            # live | sandbox
client_id = "your-api-key"
client_secret = "your-api-secret"
redirect_uri = "http://127.0.0.1:7878/auth/upstox/callback"
user_id = "AB1234"                      # your Upstox UCC; webhook tokens must belong to it
renew = ["totp", "token_request", "oauth"]   # tried in order; also "refresh_token", "static"
trades_weekends = false
default = true                          # optional; the first account is default otherwise
# access_token = "eyJ..."               # optional initial token (or UPSTOX_ACCESS_TOKEN)

[account.totp]
mobile = "9876543210"
pin = "123456"
secret = "JBSWY3DPEHPK3PXP"             # base32 seed from the Upstox TOTP setup

# [account.refresh_token]               # for renew = ["refresh_token"]
# token_url = "https://tokens.example.com/upstox"
# refresh_token = "..."

[gateway]                               # the Upstox API gateway at /upstox/... (see README)
enabled = true
account_header = "X-Upkeep-Account"     # picks the account; else the key's default below
connect_timeout = "5s"
request_timeout = "30s"
max_idle_connections = 64               # pooled upstream connections per host

[gateway.default_accounts]              # API key name = account its requests use
# trading-bot = "main"

[gateway.budget]                        # every bot behind one Upstox user shares its limits
enabled = true
queue_max = 64                          # calls of one user waiting for a slot; more get 429
queue_wait_ms = 1000                    # the longest a call waits, then 429 + Retry-After
max_backoff = "60s"                     # cap on how long an upstream 429 holds a user back
# [gateway.budget.rate_limits.order]    # override Upstox's published limits per group:
# per_second = 50                       # order, standard, payout_standard, payout_restricted, ipo

[gateway.cache]                         # last good market-data answers, served stale on failure
paths = ["/v2/market-quote/", "/v3/market-quote/", "/v2/historical-candle/", "/v3/historical-candle/"]
max_age = "15m"                         # older: 503 instead
max_entries = 10000
max_bytes = 67108864
max_body_bytes = 1048576
store = false                           # also keep them in the store (survive a restart)

[[alert.webhook]]
url = "https://hooks.example.com/upkeep"
format = "generic"                      # generic | slack | telegram (telegram needs chat_id)

[alert.email]
smtp_url = "smtp://127.0.0.1:2525"
from = "upkeep@example.com"
to = ["you@example.com"]
# username = "..."
# password = "..."
"#;

#[cfg(test)]
mod tests;
