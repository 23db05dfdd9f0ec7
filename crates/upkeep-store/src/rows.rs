//! What both backends share: SQL text (written with `$n` placeholders, which SQLite and
//! PostgreSQL both accept), raw row shapes, and turning rows into domain values
//! (opening sealed values on the way).

use jiff::Timestamp;
use upkeep_core::{AccessToken, Secret};

use crate::error::StoreError;
use crate::key::MasterKey;
use crate::{AccountRecord, AuditEvent, NewToken, StoredToken, seal};

pub(crate) const PURPOSE_TOKEN: &str = "access_token";
pub(crate) const PURPOSE_KEY_CHECK: &str = "key_check";
pub(crate) const KEY_CHECK_NAME: &str = "key_check";
pub(crate) const KEY_CHECK_PLAINTEXT: &[u8] = b"upkeep key check v1";
/// The account name used in the AAD of store-wide sealed values.
pub(crate) const STORE_ACCOUNT: &str = "";

pub(crate) fn secret_purpose(name: &str) -> String {
    format!("secret:{name}")
}

pub(crate) mod sql {
    pub const KEY_CHECK_GET: &str = "SELECT value FROM upkeep_meta WHERE name = $1";
    pub const KEY_CHECK_PUT: &str =
        "INSERT INTO upkeep_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

    pub const ACCOUNT_UPSERT: &str = "INSERT INTO accounts (id, env, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET env = excluded.env";
    pub const ACCOUNT_DELETE: &str = "DELETE FROM accounts WHERE id = $1";
    pub const LEASE_DELETE_ACCOUNT: &str = "DELETE FROM leases WHERE account = $1";
    pub const ACCOUNT_LIST: &str = "SELECT id, env, created_at FROM accounts ORDER BY id";
    pub const ACCOUNT_INSERT: &str =
        "INSERT INTO accounts (id, env, created_at) VALUES ($1, $2, $3)";

    pub const TOKEN_CURRENT_META: &str =
        "SELECT fingerprint, expires_at FROM tokens WHERE account = $1 AND slot = 'current'";
    pub const TOKEN_DELETE_SLOT: &str = "DELETE FROM tokens WHERE account = $1 AND slot = $2";
    pub const TOKEN_DEMOTE_CURRENT: &str =
        "UPDATE tokens SET slot = 'previous' WHERE account = $1 AND slot = 'current'";
    pub const TOKEN_INSERT: &str = "INSERT INTO tokens \
         (account, slot, sealed, fingerprint, issued_at, expires_at, kind, source, stored_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    pub const TOKEN_GET: &str = "SELECT sealed, fingerprint, issued_at, expires_at, kind, source, stored_at \
         FROM tokens WHERE account = $1 AND slot = $2";
    pub const TOKEN_CLEAR: &str = "DELETE FROM tokens WHERE account = $1";
    pub const TOKEN_ALL: &str = "SELECT account, slot, sealed, fingerprint, issued_at, expires_at, kind, source, stored_at \
         FROM tokens ORDER BY account, slot";

    pub const SECRET_PUT: &str = "INSERT INTO secrets (account, name, sealed) VALUES ($1, $2, $3) \
         ON CONFLICT (account, name) DO UPDATE SET sealed = excluded.sealed";
    pub const SECRET_GET: &str = "SELECT sealed FROM secrets WHERE account = $1 AND name = $2";
    pub const SECRET_DELETE: &str = "DELETE FROM secrets WHERE account = $1 AND name = $2";
    pub const SECRET_ALL: &str = "SELECT account, name, sealed FROM secrets ORDER BY account, name";

    pub const EVENT_INSERT: &str = "INSERT INTO audit_events (account, at, actor, kind, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    pub const EVENT_INSERT_WITH_ID: &str = "INSERT INTO audit_events (id, account, at, actor, kind, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub const EVENT_LIST: &str = "SELECT id, account, at, actor, kind, outcome, detail FROM audit_events \
         WHERE ($1 IS NULL OR account = $1) ORDER BY id DESC LIMIT $2";
    pub const EVENT_ALL: &str =
        "SELECT id, account, at, actor, kind, outcome, detail FROM audit_events ORDER BY id";

    /// Insert, or take over a lease held by the same holder or expired at `$4`.
    /// Affects one row exactly when the lease was acquired.
    pub const LEASE_ACQUIRE: &str = "INSERT INTO leases (account, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at <= $4";
    /// PostgreSQL: the same, on the database's clock (`$3` = ttl in seconds), so hosts
    /// with skewed clocks sharing one database agree on who holds a lease.
    #[cfg(feature = "postgres")]
    pub const LEASE_ACQUIRE_DB_CLOCK: &str = "INSERT INTO leases (account, holder, expires_at) \
         VALUES ($1, $2, CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT) + $3) \
         ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder \
            OR leases.expires_at <= CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)";
    pub const LEASE_RELEASE: &str = "DELETE FROM leases WHERE account = $1 AND holder = $2";
    pub const LEASE_GET: &str = "SELECT holder, expires_at FROM leases WHERE account = $1";
    pub const EVENT_PRUNE: &str = "DELETE FROM audit_events WHERE at < $1";

    pub const ACCOUNT_EXISTS: &str = "SELECT id FROM accounts WHERE id = $1";
    pub const API_KEY_INSERT: &str =
        "INSERT INTO api_keys (name, digest, scope, created_at) VALUES ($1, $2, $3, $4)";
    pub const API_KEY_LIST: &str =
        "SELECT name, digest, scope, created_at, revoked_at FROM api_keys ORDER BY name";
    pub const API_KEY_REVOKE: &str =
        "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL";

    pub const CALENDAR_PUT: &str = "INSERT INTO market_calendar (year, body, fetched_at) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (year) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at";
    pub const CALENDAR_GET: &str =
        "SELECT year, body, fetched_at FROM market_calendar WHERE year = $1";
    pub const CACHE_PUT: &str = "INSERT INTO gateway_cache \
         (account, path, query, status, content_type, body, stored_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (account, path, query) DO UPDATE SET status = excluded.status, \
         content_type = excluded.content_type, body = excluded.body, stored_at = excluded.stored_at";
    pub const CACHE_GET: &str = "SELECT account, path, query, status, content_type, body, stored_at \
         FROM gateway_cache WHERE account = $1 AND path = $2 AND query = $3";
    pub const CACHE_PRUNE: &str = "DELETE FROM gateway_cache WHERE stored_at < $1";
    pub const TICK_INSERT: &str = "INSERT INTO feed_ticks \
         (account, instrument, ltt_ms, ltp, ltq, volume, oi, bid_price, bid_qty, ask_price, ask_qty, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
    pub const TICK_LIST: &str = "SELECT account, instrument, ltt_ms, ltp, ltq, volume, oi, \
         bid_price, bid_qty, ask_price, ask_qty, received_ms FROM feed_ticks \
         WHERE ltt_ms >= $1 AND ltt_ms < $2 AND ($3 IS NULL OR instrument = $3) \
         ORDER BY ltt_ms, id LIMIT $4";
    pub const FEED_EVENT_INSERT: &str = "INSERT INTO feed_connection_events \
         (account, connection, at_ms, kind, cause, detail) VALUES ($1, $2, $3, $4, $5, $6)";
    pub const FEED_EVENT_LIST: &str = "SELECT account, connection, at_ms, kind, cause, detail \
         FROM feed_connection_events WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms, id";

    pub const WIPE_FOR_IMPORT: [&str; 4] = [
        "DELETE FROM tokens",
        "DELETE FROM secrets",
        "DELETE FROM audit_events",
        "DELETE FROM accounts",
    ];
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub sealed: Vec<u8>,
    pub fingerprint: String,
    pub issued_at: Option<i64>,
    pub expires_at: i64,
    pub kind: String,
    pub source: String,
    pub stored_at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SlotTokenRow {
    pub account: String,
    pub slot: String,
    #[sqlx(flatten)]
    pub token: TokenRow,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    pub id: String,
    pub env: String,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    pub name: String,
    pub digest: Vec<u8>,
    pub scope: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRow {
    pub fn into_record(self) -> Result<crate::ApiKeyRecord, StoreError> {
        let digest: [u8; 32] =
            self.digest
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::BadRow {
                    what: format!("api key `{}`", self.name),
                    detail: "its digest is not 32 bytes".into(),
                })?;
        Ok(crate::ApiKeyRecord {
            created_at: ts(self.created_at, "api_keys.created_at")?,
            revoked_at: self
                .revoked_at
                .map(|s| ts(s, "api_keys.revoked_at"))
                .transpose()?,
            name: self.name,
            digest,
            scope: self.scope,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CachedAnswerRow {
    pub account: String,
    pub path: String,
    pub query: String,
    pub status: i64,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub stored_at: i64,
}

impl CachedAnswerRow {
    pub fn into_record(self) -> Result<crate::CachedAnswerRecord, StoreError> {
        let status = u16::try_from(self.status).map_err(|_| StoreError::BadRow {
            what: format!("cached answer of `{}`", self.path),
            detail: format!("status {} out of range", self.status),
        })?;
        Ok(crate::CachedAnswerRecord {
            stored_at: ts(self.stored_at, "gateway_cache.stored_at")?,
            account: self.account,
            path: self.path,
            query: self.query,
            status,
            content_type: self.content_type,
            body: self.body,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SecretRow {
    pub account: String,
    pub name: String,
    pub sealed: Vec<u8>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub id: i64,
    pub account: String,
    pub at: i64,
    pub actor: String,
    pub kind: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TickRow {
    pub account: String,
    pub instrument: String,
    pub ltt_ms: i64,
    pub ltp: f64,
    pub ltq: i64,
    pub volume: Option<i64>,
    pub oi: Option<f64>,
    pub bid_price: Option<f64>,
    pub bid_qty: Option<i64>,
    pub ask_price: Option<f64>,
    pub ask_qty: Option<i64>,
    pub received_ms: i64,
}

impl From<TickRow> for crate::TickRecord {
    fn from(r: TickRow) -> Self {
        Self {
            account: r.account,
            instrument: r.instrument,
            ltt_ms: r.ltt_ms,
            ltp: r.ltp,
            ltq: r.ltq,
            volume: r.volume,
            oi: r.oi,
            bid_price: r.bid_price,
            bid_qty: r.bid_qty,
            ask_price: r.ask_price,
            ask_qty: r.ask_qty,
            received_ms: r.received_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct FeedEventRow {
    pub account: String,
    pub connection: i32,
    pub at_ms: i64,
    pub kind: String,
    pub cause: String,
    pub detail: String,
}

impl From<FeedEventRow> for crate::FeedConnectionEvent {
    fn from(r: FeedEventRow) -> Self {
        Self {
            account: r.account,
            connection: r.connection,
            at_ms: r.at_ms,
            kind: r.kind,
            cause: r.cause,
            detail: r.detail,
        }
    }
}

pub(crate) fn ts(secs: i64, what: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_second(secs).map_err(|_| StoreError::BadRow {
        what: what.to_owned(),
        detail: format!("timestamp {secs} out of range"),
    })
}

/// Timestamps are stored as whole seconds (floor).
pub(crate) fn secs(t: Timestamp) -> i64 {
    t.as_second()
}

impl AccountRow {
    pub fn into_record(self) -> Result<AccountRecord, StoreError> {
        Ok(AccountRecord {
            created_at: ts(self.created_at, "account creation time")?,
            id: self.id,
            env: self.env,
        })
    }
}

impl EventRow {
    pub fn into_event(self) -> Result<(i64, AuditEvent), StoreError> {
        Ok((
            self.id,
            AuditEvent {
                at: ts(self.at, "audit event time")?,
                account: self.account,
                actor: self.actor,
                kind: self.kind,
                outcome: self.outcome,
                detail: self.detail,
            },
        ))
    }
}

impl TokenRow {
    /// Open the sealed token and check it against the stored fingerprint.
    pub fn open(self, key: &MasterKey, account: &str) -> Result<StoredToken, StoreError> {
        let plain = seal::open(key, account, PURPOSE_TOKEN, &self.sealed)?;
        let tampered = || StoreError::Tampered {
            account: account.to_owned(),
            what: PURPOSE_TOKEN.to_owned(),
        };
        let text = std::str::from_utf8(&plain).map_err(|_| tampered())?;
        let token = AccessToken::new(text);
        if token.fingerprint() != self.fingerprint {
            return Err(tampered());
        }
        Ok(StoredToken {
            token,
            issued_at: self
                .issued_at
                .map(|s| ts(s, "token issue time"))
                .transpose()?,
            expires_at: ts(self.expires_at, "token expiry")?,
            kind: self.kind,
            source: self.source,
            stored_at: ts(self.stored_at, "token store time")?,
            fingerprint: self.fingerprint,
        })
    }
}

/// Columns of a token row about to be written, with the token sealed.
pub(crate) struct TokenInsert {
    pub sealed: Vec<u8>,
    pub fingerprint: String,
    pub issued_at: Option<i64>,
    pub expires_at: i64,
    pub kind: String,
    pub source: String,
    pub stored_at: i64,
}

impl TokenInsert {
    pub fn from_new(key: &MasterKey, account: &str, t: &NewToken, now: Timestamp) -> Self {
        Self {
            sealed: seal::seal(key, account, PURPOSE_TOKEN, t.token.expose().as_bytes()),
            fingerprint: t.token.fingerprint(),
            issued_at: t.issued_at.map(secs),
            expires_at: secs(t.expires_at),
            kind: t.kind.clone(),
            source: t.source.clone(),
            stored_at: secs(now),
        }
    }

    pub fn from_stored(key: &MasterKey, account: &str, t: &StoredToken) -> Self {
        Self {
            sealed: seal::seal(key, account, PURPOSE_TOKEN, t.token.expose().as_bytes()),
            fingerprint: t.token.fingerprint(),
            issued_at: t.issued_at.map(secs),
            expires_at: secs(t.expires_at),
            kind: t.kind.clone(),
            source: t.source.clone(),
            stored_at: secs(t.stored_at),
        }
    }

    /// What `put_token` returns: the stored shape, without reading it back.
    pub fn stored(&self, t: NewToken) -> Result<StoredToken, StoreError> {
        Ok(StoredToken {
            token: t.token,
            issued_at: self
                .issued_at
                .map(|s| ts(s, "token issue time"))
                .transpose()?,
            expires_at: ts(self.expires_at, "token expiry")?,
            kind: t.kind,
            source: t.source,
            stored_at: ts(self.stored_at, "token store time")?,
            fingerprint: self.fingerprint.clone(),
        })
    }
}

pub(crate) fn open_secret(
    key: &MasterKey,
    account: &str,
    name: &str,
    sealed: &[u8],
) -> Result<Secret, StoreError> {
    let purpose = secret_purpose(name);
    let plain = seal::open(key, account, &purpose, sealed)?;
    let text = std::str::from_utf8(&plain).map_err(|_| StoreError::Tampered {
        account: account.to_owned(),
        what: purpose.clone(),
    })?;
    Ok(Secret::new(text))
}

pub(crate) fn seal_secret(key: &MasterKey, account: &str, name: &str, value: &Secret) -> Vec<u8> {
    seal::seal(
        key,
        account,
        &secret_purpose(name),
        value.expose().as_bytes(),
    )
}

/// Verify the key-check blob; maps "tampered" to a store-level message.
pub(crate) fn verify_key_check(key: &MasterKey, blob: &[u8]) -> Result<(), StoreError> {
    let plain = seal::open(key, STORE_ACCOUNT, PURPOSE_KEY_CHECK, blob).map_err(|e| match e {
        StoreError::Tampered { .. } => StoreError::Tampered {
            account: "(store)".into(),
            what: "key check".into(),
        },
        other => other,
    })?;
    if plain.as_slice() != KEY_CHECK_PLAINTEXT {
        return Err(StoreError::Tampered {
            account: "(store)".into(),
            what: "key check".into(),
        });
    }
    Ok(())
}

pub(crate) fn key_check_blob(key: &MasterKey) -> Vec<u8> {
    seal::seal(key, STORE_ACCOUNT, PURPOSE_KEY_CHECK, KEY_CHECK_PLAINTEXT)
}

/// `now + ttl` in whole seconds, rounding the ttl up so a lease never ends early.
pub(crate) fn lease_until(now: Timestamp, ttl: std::time::Duration) -> i64 {
    let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs(now).saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX))
}

/// Check that every token and secret in a backup belongs to an account in it.
pub(crate) fn check_backup(b: &crate::Backup) -> Result<(), StoreError> {
    let known = |a: &str| b.accounts.iter().any(|r| r.id == a);
    for a in b
        .tokens
        .iter()
        .map(|t| &t.account)
        .chain(b.secrets.iter().map(|s| &s.account))
    {
        if !known(a) {
            return Err(StoreError::UnknownAccount { account: a.clone() });
        }
    }
    Ok(())
}

/// Turn the rows of an export into a [`crate::Backup`], opening every sealed value.
pub(crate) fn backup_from_rows(
    key: &MasterKey,
    accounts: Vec<AccountRow>,
    tokens: Vec<SlotTokenRow>,
    secrets: Vec<SecretRow>,
    events: Vec<EventRow>,
) -> Result<crate::Backup, StoreError> {
    Ok(crate::Backup {
        accounts: accounts
            .into_iter()
            .map(AccountRow::into_record)
            .collect::<Result<_, _>>()?,
        tokens: tokens
            .into_iter()
            .map(|r| {
                let slot = crate::TokenSlot::parse(&r.slot).ok_or_else(|| StoreError::BadRow {
                    what: "token slot".into(),
                    detail: format!("unknown slot '{}'", r.slot),
                })?;
                Ok(crate::BackupToken {
                    token: r.token.open(key, &r.account)?,
                    account: r.account,
                    slot,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        secrets: secrets
            .into_iter()
            .map(|r| {
                Ok(crate::BackupSecret {
                    value: open_secret(key, &r.account, &r.name, &r.sealed)?,
                    account: r.account,
                    name: r.name,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        events: events
            .into_iter()
            .map(EventRow::into_event)
            .collect::<Result<_, _>>()?,
    })
}

#[derive(sqlx::FromRow)]
pub(crate) struct CalendarRow {
    pub year: i32,
    pub body: String,
    pub fetched_at: i64,
}

/// The JSON kept for a year's calendar.
pub(crate) fn calendar_body(c: &crate::StoredCalendar) -> Result<String, StoreError> {
    serde_json::to_string(&c.calendar).map_err(|e| StoreError::BadRow {
        what: format!("trading calendar {}", c.year),
        detail: e.to_string(),
    })
}

/// A stored year's calendar back from its row.
pub(crate) fn calendar_from_row(row: CalendarRow) -> Result<crate::StoredCalendar, StoreError> {
    let what = || format!("trading calendar {}", row.year);
    let year = i16::try_from(row.year).map_err(|_| StoreError::BadRow {
        what: what(),
        detail: "year out of range".into(),
    })?;
    let calendar = serde_json::from_str(&row.body).map_err(|e| StoreError::BadRow {
        what: what(),
        detail: e.to_string(),
    })?;
    Ok(crate::StoredCalendar {
        year,
        calendar,
        fetched_at: ts(row.fetched_at, "calendar fetched_at")?,
    })
}
