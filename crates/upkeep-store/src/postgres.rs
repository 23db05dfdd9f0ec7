//! The PostgreSQL backend. Optionally confined to one schema (tests use a fresh schema
//! each). Writers that read-then-write lock the account row (`FOR UPDATE`).

use std::str::FromStr as _;
use std::time::Duration;

use jiff::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Postgres, Transaction};
use upkeep_core::Secret;

use crate::error::StoreError;
use crate::key::MasterKey;
use crate::rows::{self, sql};
use crate::{
    AccountRecord, ApiKeyRecord, AuditEvent, Backup, CachedAnswerRecord, FeedConnectionEvent,
    NewToken, StoredToken, TickQuery, TickRecord, TokenSlot, TokenStore,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const ACCOUNT_LOCK: &str = "SELECT id FROM accounts WHERE id = $1 FOR UPDATE";

/// A [`TokenStore`] in PostgreSQL.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    key: MasterKey,
    schema: Option<String>,
}

/// Network-level failures while connecting become [`StoreError::Unreachable`].
fn connect_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(io) => StoreError::Unreachable {
            backend: "PostgreSQL",
            reason: io.to_string(),
        },
        sqlx::Error::Tls(tls) => StoreError::Unreachable {
            backend: "PostgreSQL",
            reason: format!("TLS: {tls}"),
        },
        sqlx::Error::PoolTimedOut => StoreError::Unreachable {
            backend: "PostgreSQL",
            reason: "timed out".into(),
        },
        other => StoreError::Database(other),
    }
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgStore {
    /// Connect to `url` (`postgres://...`), migrate, and check the master key.
    pub async fn connect(url: &str, key: MasterKey) -> Result<Self, StoreError> {
        Self::connect_with_schema(url, key, None).await
    }

    /// Like [`PgStore::connect`], with every table inside `schema` (created if missing).
    /// The schema name must be lowercase letters, digits and underscores.
    pub async fn connect_with_schema(
        url: &str,
        key: MasterKey,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
        if let Some(schema) = schema
            && !valid_schema(schema)
        {
            return Err(StoreError::InvalidSchema(schema.to_owned()));
        }
        // One direct connection first: fails at once with the real reason (the pool
        // would retry until its acquire timeout), and sets up the schema.
        let mut probe = PgConnection::connect_with(&options)
            .await
            .map_err(connect_err)?;
        if let Some(schema) = schema {
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                    .bind(schema)
                    .fetch_optional(&mut probe)
                    .await?;
            if exists.is_none() {
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .execute(&mut probe)
                    .await?;
            }
            options = options.options([("search_path", schema)]);
        }
        probe.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        let store = Self {
            pool,
            key,
            schema: schema.map(str::to_owned),
        };
        match store.init().await {
            Ok(()) => Ok(store),
            Err(e) => {
                store.pool.close().await;
                Err(e)
            }
        }
    }

    /// The schema the tables live in, if one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Check the key (before any write), migrate, and seal the key check on a new store.
    async fn init(&self) -> Result<(), StoreError> {
        let has_meta: bool = sqlx::query_scalar("SELECT to_regclass('upkeep_meta') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if has_meta && self.verify_key_if_present().await? {
            MIGRATOR.run(&self.pool).await?;
            return Ok(());
        }
        MIGRATOR.run(&self.pool).await?;
        sqlx::query(sql::KEY_CHECK_PUT)
            .bind(rows::KEY_CHECK_NAME)
            .bind(rows::key_check_blob(&self.key))
            .execute(&self.pool)
            .await?;
        self.verify_key_if_present().await.map(|_| ())
    }

    async fn verify_key_if_present(&self) -> Result<bool, StoreError> {
        let blob: Option<Vec<u8>> = sqlx::query_scalar(sql::KEY_CHECK_GET)
            .bind(rows::KEY_CHECK_NAME)
            .fetch_optional(&self.pool)
            .await?;
        match blob {
            Some(blob) => rows::verify_key_check(&self.key, &blob).map(|()| true),
            None => Ok(false),
        }
    }

    async fn token(
        &self,
        account: &str,
        slot: TokenSlot,
    ) -> Result<Option<StoredToken>, StoreError> {
        let row: Option<rows::TokenRow> = sqlx::query_as(sql::TOKEN_GET)
            .bind(account)
            .bind(slot.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.open(&self.key, account)).transpose()
    }

    /// Begin a transaction holding the account's row lock; `UnknownAccount` if absent.
    async fn lock_account(
        &self,
        account: &str,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<String> = sqlx::query_scalar(ACCOUNT_LOCK)
            .bind(account)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::UnknownAccount {
                account: account.to_owned(),
            });
        }
        Ok(tx)
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Postgres>,
    account: &str,
    slot: TokenSlot,
    t: &rows::TokenInsert,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::TOKEN_INSERT)
        .bind(account)
        .bind(slot.as_str())
        .bind(&t.sealed)
        .bind(&t.fingerprint)
        .bind(t.issued_at)
        .bind(t.expires_at)
        .bind(&t.kind)
        .bind(&t.source)
        .bind(t.stored_at)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

#[async_trait::async_trait]
impl TokenStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn upsert_account(&self, id: &str, env: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(sql::ACCOUNT_UPSERT)
            .bind(id)
            .bind(env)
            .bind(rows::secs(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::LEASE_DELETE_ACCOUNT)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(sql::ACCOUNT_DELETE)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows: Vec<rows::AccountRow> = sqlx::query_as(sql::ACCOUNT_LIST)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(rows::AccountRow::into_record)
            .collect()
    }

    async fn put_token(
        &self,
        account: &str,
        token: NewToken,
        now: Timestamp,
    ) -> Result<StoredToken, StoreError> {
        let new = rows::TokenInsert::from_new(&self.key, account, &token, now);
        let mut tx = self.lock_account(account).await?;
        let current: Option<(String, i64)> = sqlx::query_as(sql::TOKEN_CURRENT_META)
            .bind(account)
            .fetch_optional(&mut *tx)
            .await?;
        let delete = |slot: TokenSlot| {
            sqlx::query(sql::TOKEN_DELETE_SLOT)
                .bind(account)
                .bind(slot.as_str())
        };
        match current {
            Some((fp, _)) if fp == new.fingerprint => {
                delete(TokenSlot::Current).execute(&mut *tx).await?;
            }
            Some((_, expires)) if expires > rows::secs(now) => {
                delete(TokenSlot::Previous).execute(&mut *tx).await?;
                sqlx::query(sql::TOKEN_DEMOTE_CURRENT)
                    .bind(account)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {
                sqlx::query(sql::TOKEN_CLEAR)
                    .bind(account)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_token(&mut tx, account, TokenSlot::Current, &new).await?;
        tx.commit().await?;
        new.stored(token)
    }

    async fn current_token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        self.token(account, TokenSlot::Current).await
    }

    async fn previous_token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        self.token(account, TokenSlot::Previous).await
    }

    async fn clear_token(&self, account: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::TOKEN_CLEAR)
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_secret(
        &self,
        account: &str,
        name: &str,
        value: &Secret,
    ) -> Result<(), StoreError> {
        let sealed = rows::seal_secret(&self.key, account, name, value);
        let mut tx = self.lock_account(account).await?;
        sqlx::query(sql::SECRET_PUT)
            .bind(account)
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_secret(&self, account: &str, name: &str) -> Result<Option<Secret>, StoreError> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(sql::SECRET_GET)
            .bind(account)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        sealed
            .map(|s| rows::open_secret(&self.key, account, name, &s))
            .transpose()
    }

    async fn delete_secret(&self, account: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::SECRET_DELETE)
            .bind(account)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_event(&self, event: AuditEvent) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::EVENT_INSERT)
            .bind(&event.account)
            .bind(rows::secs(event.at))
            .bind(&event.actor)
            .bind(&event.kind)
            .bind(&event.outcome)
            .bind(&event.detail)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn events(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        let rows: Vec<rows::EventRow> = sqlx::query_as(sql::EVENT_LIST)
            .bind(account)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(rows::EventRow::into_event).collect()
    }

    async fn try_acquire_lease(
        &self,
        account: &str,
        holder: &str,
        _now: Timestamp,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // The database's clock, not the caller's: two hosts whose clocks disagree
        // must not both believe they hold the lease.
        let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let done = sqlx::query(sql::LEASE_ACQUIRE_DB_CLOCK)
            .bind(account)
            .bind(holder)
            .bind(i64::try_from(ttl_secs).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, account: &str, holder: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::LEASE_RELEASE)
            .bind(account)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn lease_holder(&self, account: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(sql::LEASE_GET)
            .bind(account)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(holder, until)| Ok((holder, rows::ts(until, "lease expiry")?)))
            .transpose()
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::EVENT_PRUNE)
            .bind(rows::secs(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn create_api_key(
        &self,
        name: &str,
        digest: &[u8; 32],
        scope: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(sql::API_KEY_INSERT)
            .bind(name)
            .bind(digest.as_slice())
            .bind(scope)
            .bind(rows::secs(now))
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                Err(StoreError::ApiKeyExists {
                    name: name.to_owned(),
                })
            }
            Err(e) => Err(StoreError::from(e)),
        }
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<rows::ApiKeyRow> = sqlx::query_as(sql::API_KEY_LIST)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(rows::ApiKeyRow::into_record).collect()
    }

    async fn revoke_api_key(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::API_KEY_REVOKE)
            .bind(name)
            .bind(rows::secs(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_cached_answer(&self, answer: &CachedAnswerRecord) -> Result<(), StoreError> {
        let mut tx = self.lock_account(&answer.account).await?;
        sqlx::query(sql::CACHE_PUT)
            .bind(&answer.account)
            .bind(&answer.path)
            .bind(&answer.query)
            .bind(i64::from(answer.status))
            .bind(answer.content_type.as_deref())
            .bind(answer.body.as_slice())
            .bind(rows::secs(answer.stored_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cached_answer(
        &self,
        account: &str,
        path: &str,
        query: &str,
    ) -> Result<Option<CachedAnswerRecord>, StoreError> {
        let row: Option<rows::CachedAnswerRow> = sqlx::query_as(sql::CACHE_GET)
            .bind(account)
            .bind(path)
            .bind(query)
            .fetch_optional(&self.pool)
            .await?;
        row.map(rows::CachedAnswerRow::into_record).transpose()
    }

    async fn prune_cached_answers(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::CACHE_PRUNE)
            .bind(rows::secs(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn export(&self) -> Result<Backup, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let accounts: Vec<rows::AccountRow> = sqlx::query_as(sql::ACCOUNT_LIST)
            .fetch_all(&mut *tx)
            .await?;
        let tokens: Vec<rows::SlotTokenRow> =
            sqlx::query_as(sql::TOKEN_ALL).fetch_all(&mut *tx).await?;
        let secrets: Vec<rows::SecretRow> =
            sqlx::query_as(sql::SECRET_ALL).fetch_all(&mut *tx).await?;
        let events: Vec<rows::EventRow> =
            sqlx::query_as(sql::EVENT_ALL).fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        rows::backup_from_rows(&self.key, accounts, tokens, secrets, events)
    }

    async fn import(&self, backup: Backup) -> Result<(), StoreError> {
        rows::check_backup(&backup)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE accounts, tokens, secrets, audit_events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        for stmt in sql::WIPE_FOR_IMPORT {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        for a in &backup.accounts {
            sqlx::query(sql::ACCOUNT_INSERT)
                .bind(&a.id)
                .bind(&a.env)
                .bind(rows::secs(a.created_at))
                .execute(&mut *tx)
                .await?;
        }
        for t in &backup.tokens {
            let row = rows::TokenInsert::from_stored(&self.key, &t.account, &t.token);
            insert_token(&mut tx, &t.account, t.slot, &row).await?;
        }
        for s in &backup.secrets {
            sqlx::query(sql::SECRET_PUT)
                .bind(&s.account)
                .bind(&s.name)
                .bind(rows::seal_secret(&self.key, &s.account, &s.name, &s.value))
                .execute(&mut *tx)
                .await?;
        }
        for (id, e) in &backup.events {
            sqlx::query(sql::EVENT_INSERT_WITH_ID)
                .bind(id)
                .bind(&e.account)
                .bind(rows::secs(e.at))
                .bind(&e.actor)
                .bind(&e.kind)
                .bind(&e.outcome)
                .bind(&e.detail)
                .execute(&mut *tx)
                .await?;
        }
        // Ids were given explicitly: move the identity past them.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), \
             COALESCE((SELECT MAX(id) FROM audit_events), 0) + 1, false)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_calendar(&self, calendar: &crate::StoredCalendar) -> Result<(), StoreError> {
        sqlx::query(sql::CALENDAR_PUT)
            .bind(i32::from(calendar.year))
            .bind(rows::calendar_body(calendar)?)
            .bind(rows::secs(calendar.fetched_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn calendar(&self, year: i16) -> Result<Option<crate::StoredCalendar>, StoreError> {
        let row: Option<rows::CalendarRow> = sqlx::query_as(sql::CALENDAR_GET)
            .bind(i32::from(year))
            .fetch_optional(&self.pool)
            .await?;
        row.map(rows::calendar_from_row).transpose()
    }

    async fn record_ticks(
        &self,
        ticks: &[TickRecord],
        events: &[FeedConnectionEvent],
    ) -> Result<(), StoreError> {
        if ticks.is_empty() && events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        for t in ticks {
            sqlx::query(sql::TICK_INSERT)
                .bind(&t.account)
                .bind(&t.instrument)
                .bind(t.ltt_ms)
                .bind(t.ltp)
                .bind(t.ltq)
                .bind(t.volume)
                .bind(t.oi)
                .bind(t.bid_price)
                .bind(t.bid_qty)
                .bind(t.ask_price)
                .bind(t.ask_qty)
                .bind(t.received_ms)
                .execute(&mut *tx)
                .await?;
        }
        for e in events {
            sqlx::query(sql::FEED_EVENT_INSERT)
                .bind(&e.account)
                .bind(e.connection)
                .bind(e.at_ms)
                .bind(&e.kind)
                .bind(&e.cause)
                .bind(&e.detail)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)
    }

    async fn ticks(&self, query: &TickQuery) -> Result<Vec<TickRecord>, StoreError> {
        let rows: Vec<rows::TickRow> = sqlx::query_as(sql::TICK_LIST)
            .bind(query.from_ms)
            .bind(query.to_ms)
            .bind(query.instrument.as_deref())
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn feed_connection_events(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<FeedConnectionEvent>, StoreError> {
        let rows: Vec<rows::FeedEventRow> = sqlx::query_as(sql::FEED_EVENT_LIST)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
