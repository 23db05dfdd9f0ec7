//! # upkeep-store
//!
//! The only crate that knows SQL. A [`TokenStore`] keeps accounts, their current and
//! previous access token, per-account secrets, an audit log and renewal leases, with a
//! SQLite ([`SqliteStore`]) and a PostgreSQL ([`PgStore`]) implementation that pass the
//! same contract tests.
//!
//! Architecture invariants:
//! - No token or secret is ever stored in plain text: they are sealed with
//!   XChaCha20-Poly1305 under the [`MasterKey`] ([`seal`]); a fingerprint is stored for display.
//! - Opening a store with the wrong master key fails with [`StoreError::WrongKey`] and
//!   writes nothing.
//! - Timestamps are stored as whole UTC seconds; time is always handed in (`now`).
//!
//! Also here: the master key ([`key`]), atomic 0600 files, the legacy token sinks and
//! sealed backups ([`files`]).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use upkeep_core::{AccessToken, Secret};

pub mod backup;
mod error;
pub mod files;
pub mod key;
#[cfg(feature = "postgres")]
mod postgres;
mod rows;
pub mod seal;
mod sqlite;

pub use backup::{Backup, BackupSecret, BackupStats, BackupToken, TokenSlot};
pub use error::StoreError;
pub use files::{
    JsonSinkInfo, backup_to_dir, remove_stale_temp_files, restore_from_file, write_atomic,
    write_env_sink, write_json_sink,
};
pub use key::{KeyOrigin, MasterKey, create_key_file, load_or_create};
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// An account known to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: String,
    /// Free-form environment name given by the caller (e.g. "live", "sandbox", "sim").
    pub env: String,
    pub created_at: Timestamp,
}

/// A token to store as an account's current token.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: AccessToken,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    /// Token kind as the caller names it (e.g. "daily", "extended").
    pub kind: String,
    /// The strategy that produced it (e.g. "oauth", "totp", "import").
    pub source: String,
}

/// A token as stored. `Debug` shows only the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token: AccessToken,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    pub kind: String,
    pub source: String,
    pub stored_at: Timestamp,
    /// [`AccessToken::fingerprint`]: safe to show.
    pub fingerprint: String,
}

/// One audit-log entry. `detail` must never contain a token or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub account: String,
    pub at: Timestamp,
    /// "schedule", "cli", "api", "webhook", "reactive", ...
    pub actor: String,
    /// "renewal_started", "renewal_succeeded", "renewal_failed", "token_imported", ...
    pub kind: String,
    pub outcome: String,
    pub detail: String,
}

/// An API key as stored: its name, the SHA-256 digest of the key (never the key), its
/// scope (`admin`, `status:read`, `token:read`) and its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub name: String,
    pub digest: [u8; 32],
    pub scope: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// One year of the trading calendar as fetched from Upstox (public data, not sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCalendar {
    pub year: i16,
    pub calendar: upkeep_core::calendar::TradingCalendar,
    pub fetched_at: Timestamp,
}

/// The gateway's last good answer to one account's market-data GET (path and canonical
/// query). Market data, not a secret: stored as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswerRecord {
    pub account: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub stored_at: Timestamp,
}

/// One market-data tick the relay received (times in epoch milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct TickRecord {
    pub account: String,
    pub instrument: String,
    /// Last trade time.
    pub ltt_ms: i64,
    pub ltp: f64,
    pub ltq: i64,
    /// Volume traded today (full modes only).
    pub volume: Option<i64>,
    /// Open interest (full modes only).
    pub oi: Option<f64>,
    /// Best bid and ask, price and quantity (modes with depth only).
    pub bid_price: Option<f64>,
    pub bid_qty: Option<i64>,
    pub ask_price: Option<f64>,
    pub ask_qty: Option<i64>,
    /// When the relay received it.
    pub received_ms: i64,
}

/// Which ticks to read: last trade time in `[from_ms, to_ms)`, optionally of one
/// instrument, oldest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub instrument: Option<String>,
    pub limit: u32,
}

/// An upstream feed connection going up or down (times in epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConnectionEvent {
    pub account: String,
    pub connection: i32,
    pub at_ms: i64,
    /// "up" or "down".
    pub kind: String,
    /// Why: "open", "reconnect", "rotation", "stall", "closed", "error", ...
    pub cause: String,
    pub detail: String,
}

/// Storage for accounts, tokens, secrets, audit events and leases.
///
/// Every implementation passes the same contract tests (`tests/contract.rs`).
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    /// Add an account, or change its `env`. `now` becomes `created_at` of a new account.
    async fn upsert_account(&self, id: &str, env: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Remove an account with its tokens, secrets and lease (audit events stay).
    /// Returns whether it existed.
    async fn remove_account(&self, id: &str) -> Result<bool, StoreError>;
    /// All accounts, ordered by id.
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;

    /// Make `token` the account's current token. The old current token becomes the
    /// previous one if it is still valid at `now` (`expires_at > now`); otherwise there
    /// is no previous token afterwards. At most one previous token is kept. Storing the
    /// current token again only refreshes its metadata. Fails with
    /// [`StoreError::UnknownAccount`] if the account does not exist.
    async fn put_token(
        &self,
        account: &str,
        token: NewToken,
        now: Timestamp,
    ) -> Result<StoredToken, StoreError>;
    async fn current_token(&self, account: &str) -> Result<Option<StoredToken>, StoreError>;
    async fn previous_token(&self, account: &str) -> Result<Option<StoredToken>, StoreError>;
    /// Forget both the current and the previous token. Returns whether there was any.
    async fn clear_token(&self, account: &str) -> Result<bool, StoreError>;

    /// Store a named secret of an account (refresh token, TOTP seed, ...), sealed.
    async fn put_secret(&self, account: &str, name: &str, value: &Secret)
    -> Result<(), StoreError>;
    async fn get_secret(&self, account: &str, name: &str) -> Result<Option<Secret>, StoreError>;
    /// Returns whether the secret existed.
    async fn delete_secret(&self, account: &str, name: &str) -> Result<bool, StoreError>;

    /// Append an audit event; returns its id (ids increase).
    async fn record_event(&self, event: AuditEvent) -> Result<i64, StoreError>;
    /// The newest `limit` events, newest first, of one account or of all.
    async fn events(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError>;

    /// Take or extend the renewal lease of `account` for `holder` until `now + ttl`.
    /// Succeeds if nobody holds it, `holder` already holds it, or the holder's lease
    /// has expired at `now`. Atomic across processes. PostgreSQL, shared by hosts whose
    /// clocks may disagree, uses the database's clock instead of `now`.
    async fn try_acquire_lease(
        &self,
        account: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Give the lease up if `holder` holds it. Returns whether it did.
    async fn release_lease(&self, account: &str, holder: &str) -> Result<bool, StoreError>;
    /// Who holds the account's lease (expired or not), and until when.
    async fn lease_holder(&self, account: &str) -> Result<Option<(String, Timestamp)>, StoreError>;

    /// Delete audit events older than `before` (retention). Returns how many.
    async fn prune_events(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Record a new API key by its digest. Names are never reused
    /// ([`StoreError::ApiKeyExists`]).
    async fn create_api_key(
        &self,
        name: &str,
        digest: &[u8; 32],
        scope: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Every API key, revoked ones included, ordered by name.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revoke a live key. Returns whether there was one of that name.
    async fn revoke_api_key(&self, name: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// Keep (or replace) the fetched trading calendar of `calendar.year`.
    async fn put_calendar(&self, calendar: &StoredCalendar) -> Result<(), StoreError>;
    /// The stored trading calendar of `year`, if one was kept.
    async fn calendar(&self, year: i16) -> Result<Option<StoredCalendar>, StoreError>;
    /// Keeps `answer` as the account's last good answer to its path and query,
    /// replacing an older one. The account must exist ([`StoreError::UnknownAccount`]).
    async fn put_cached_answer(&self, answer: &CachedAnswerRecord) -> Result<(), StoreError>;
    /// The last good answer kept for (account, path, query).
    async fn cached_answer(
        &self,
        account: &str,
        path: &str,
        query: &str,
    ) -> Result<Option<CachedAnswerRecord>, StoreError>;
    /// Forgets cached answers stored before `before`; returns how many.
    async fn prune_cached_answers(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Everything except leases and API keys, with tokens and secrets opened.
    /// Consistent snapshot.
    async fn export(&self) -> Result<Backup, StoreError>;
    /// Replace accounts, tokens, secrets and events with `backup`, in one transaction
    /// (all or nothing). Leases are left alone.
    async fn import(&self, backup: Backup) -> Result<(), StoreError>;

    /// Append a batch of relay ticks and feed connection events, in one transaction.
    async fn record_ticks(
        &self,
        ticks: &[TickRecord],
        events: &[FeedConnectionEvent],
    ) -> Result<(), StoreError>;
    /// Relay ticks, oldest first (by last trade time, then arrival).
    async fn ticks(&self, query: &TickQuery) -> Result<Vec<TickRecord>, StoreError>;
    /// Feed connection events with `at_ms` in `[from_ms, to_ms)`, oldest first.
    async fn feed_connection_events(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<FeedConnectionEvent>, StoreError>;

    /// The database answers.
    async fn health(&self) -> Result<(), StoreError>;
    /// Close the connections (pending writes are flushed).
    async fn close(&self);
}

/// Open a store from a URL: `sqlite://PATH` (or `sqlite:PATH`, or a plain path) or
/// `postgres://...` / `postgresql://...`.
pub async fn open_store(url: &str, key: MasterKey) -> Result<Arc<dyn TokenStore>, StoreError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => Ok(Arc::new(PgStore::connect(url, key).await?)),
        #[cfg(not(feature = "postgres"))]
        Some("postgres" | "postgresql") => Err(StoreError::UnsupportedUrl {
            scheme: "postgres (this upkeep was built without the `postgres` feature)".into(),
        }),
        Some("sqlite") | None => Ok(Arc::new(SqliteStore::open(url, key).await?)),
        Some(other) => Err(StoreError::UnsupportedUrl {
            scheme: other.to_owned(),
        }),
    }
}
