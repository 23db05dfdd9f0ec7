//! The SQLite backend: one file (mode 0600), WAL journal, busy timeout, write
//! transactions started with `BEGIN IMMEDIATE` so two processes never deadlock.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use jiff::Timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};
use upkeep_core::Secret;

use crate::error::StoreError;
use crate::key::MasterKey;
use crate::rows::{self, sql};
use crate::{
    AccountRecord, ApiKeyRecord, AuditEvent, Backup, CachedAnswerRecord, FeedConnectionEvent,
    NewToken, StoredToken, TickQuery, TickRecord, TokenSlot, TokenStore,
};

/// How long a statement waits for another process's lock before failing with
/// [`StoreError::Locked`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A [`TokenStore`] in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    key: MasterKey,
    path: PathBuf,
}

/// The file path in `sqlite://PATH`, `sqlite:PATH` or `PATH` (a `?query` is ignored).
fn path_from_url(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let rest = rest.split_once('?').map_or(rest, |(p, _)| p);
    PathBuf::from(rest)
}

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuse a non-empty file that is not SQLite before SQLite touches it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read as _;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("cannot open database", path, e)),
    };
    let mut head = Vec::with_capacity(16);
    (&mut f)
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| StoreError::io("cannot read database", path, e))?;
    if head.is_empty() || head.as_slice() == SQLITE_HEADER {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_owned(),
        })
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:03o}"),
                "the token database is readable by group or others; run `chmod 600` on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Map SQLite's busy/locked and corrupt/not-a-database codes to our errors.
fn map_err(path: &Path, e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok())
    {
        match code & 0xff {
            5 | 6 => {
                return StoreError::Locked {
                    path: path.to_owned(),
                };
            }
            11 | 26 => {
                return StoreError::Corrupt {
                    path: path.to_owned(),
                };
            }
            _ => {}
        }
    }
    StoreError::Database(e)
}

fn map_migrate_err(path: &Path, e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => match map_err(path, e) {
            StoreError::Database(e) => StoreError::Migrate(M::Execute(e)),
            other => other,
        },
        other => StoreError::Migrate(other),
    }
}

impl SqliteStore {
    /// Open (or create, mode 0600) the store at `path_or_url` with the default busy timeout.
    pub async fn open(path_or_url: &str, key: MasterKey) -> Result<Self, StoreError> {
        Self::open_with_timeout(path_or_url, key, DEFAULT_BUSY_TIMEOUT).await
    }

    /// Open with a chosen busy timeout (how long to wait on another process's lock).
    ///
    /// A non-empty file that is not SQLite is [`StoreError::Corrupt`]; a database held
    /// locked longer than `busy_timeout` is [`StoreError::Locked`]; a store sealed with
    /// another key is [`StoreError::WrongKey`], and then nothing is written.
    pub async fn open_with_timeout(
        path_or_url: &str,
        key: MasterKey,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let path = path_from_url(path_or_url);
        let in_memory = path.as_os_str() == ":memory:";
        let (options, max_conns) = if in_memory {
            let o =
                SqliteConnectOptions::from_str("sqlite::memory:").map_err(StoreError::Database)?;
            (o, 1)
        } else {
            check_header(&path)?;
            if path.exists() {
                warn_if_readable_by_others(&path);
            } else {
                crate::files::create_private_dir_all(&crate::files::parent_dir(&path))?;
                match crate::files::create_new_private(&path) {
                    Ok(_) => {}
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            let o = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(false)
                .journal_mode(SqliteJournalMode::Wal);
            (o, 4)
        };
        // Two processes opening a database at once (a CLI command next to a starting
        // daemon) must not both switch it to WAL or run the migrations: serialize the
        // open (connect, key check, migrate); released at the end of this function.
        let _init_guard = if in_memory {
            None
        } else {
            Some(init_lock(&path).await?)
        };
        let options = options.busy_timeout(busy_timeout).foreign_keys(true);
        let mut pool_opts = SqlitePoolOptions::new()
            .max_connections(max_conns)
            .acquire_timeout(busy_timeout + Duration::from_secs(30));
        if in_memory {
            pool_opts = pool_opts
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool_opts
            .connect_with(options)
            .await
            .map_err(|e| map_err(&path, e))?;
        let store = Self { pool, key, path };
        match store.init().await {
            Ok(()) => Ok(store),
            Err(e) => {
                store.pool.close().await;
                Err(e)
            }
        }
    }

    /// Check the key (before any write), migrate, and seal the key check on a new store.
    /// Runs under [`init_lock`].
    async fn init(&self) -> Result<(), StoreError> {
        let has_meta: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'upkeep_meta'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if has_meta.is_some() && self.verify_key_if_present().await? {
            // The key is right: now it is safe to migrate.
            return MIGRATOR
                .run(&self.pool)
                .await
                .map_err(|e| map_migrate_err(&self.path, e));
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| map_migrate_err(&self.path, e))?;
        sqlx::query(sql::KEY_CHECK_PUT)
            .bind(rows::KEY_CHECK_NAME)
            .bind(rows::key_check_blob(&self.key))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        // Another process may have created the store first, with another key.
        self.verify_key_if_present().await.map(|_| ())
    }

    /// `Ok(true)` if the key check is there and opens with our key.
    async fn verify_key_if_present(&self) -> Result<bool, StoreError> {
        let blob: Option<Vec<u8>> = sqlx::query_scalar(sql::KEY_CHECK_GET)
            .bind(rows::KEY_CHECK_NAME)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        match blob {
            Some(blob) => rows::verify_key_check(&self.key, &blob).map(|()| true),
            None => Ok(false),
        }
    }

    /// The database file (":memory:" for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        map_err(&self.path, e)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))
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
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| r.open(&self.key, account)).transpose()
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Sqlite>,
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
impl TokenStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn upsert_account(&self, id: &str, env: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(sql::ACCOUNT_UPSERT)
            .bind(id)
            .bind(env)
            .bind(rows::secs(now))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(sql::LEASE_DELETE_ACCOUNT)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let done = sqlx::query(sql::ACCOUNT_DELETE)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows: Vec<rows::AccountRow> = sqlx::query_as(sql::ACCOUNT_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
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
        let mut tx = self.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar(sql::ACCOUNT_EXISTS)
            .bind(account)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Err(StoreError::UnknownAccount {
                account: account.to_owned(),
            });
        }
        let current: Option<(String, i64)> = sqlx::query_as(sql::TOKEN_CURRENT_META)
            .bind(account)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let delete = |slot: TokenSlot| {
            sqlx::query(sql::TOKEN_DELETE_SLOT)
                .bind(account)
                .bind(slot.as_str())
        };
        match current {
            Some((fp, _)) if fp == new.fingerprint => {
                delete(TokenSlot::Current)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            Some((_, expires)) if expires > rows::secs(now) => {
                delete(TokenSlot::Previous)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
                sqlx::query(sql::TOKEN_DEMOTE_CURRENT)
                    .bind(account)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            _ => {
                sqlx::query(sql::TOKEN_CLEAR)
                    .bind(account)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        insert_token(&mut tx, account, TokenSlot::Current, &new)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
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
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_secret(
        &self,
        account: &str,
        name: &str,
        value: &Secret,
    ) -> Result<(), StoreError> {
        let sealed = rows::seal_secret(&self.key, account, name, value);
        let mut tx = self.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar(sql::ACCOUNT_EXISTS)
            .bind(account)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Err(StoreError::UnknownAccount {
                account: account.to_owned(),
            });
        }
        sqlx::query(sql::SECRET_PUT)
            .bind(account)
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn get_secret(&self, account: &str, name: &str) -> Result<Option<Secret>, StoreError> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(sql::SECRET_GET)
            .bind(account)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        sealed
            .map(|s| rows::open_secret(&self.key, account, name, &s))
            .transpose()
    }

    async fn delete_secret(&self, account: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::SECRET_DELETE)
            .bind(account)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_event(&self, event: AuditEvent) -> Result<i64, StoreError> {
        sqlx::query_scalar(sql::EVENT_INSERT)
            .bind(&event.account)
            .bind(rows::secs(event.at))
            .bind(&event.actor)
            .bind(&event.kind)
            .bind(&event.outcome)
            .bind(&event.detail)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
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
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(rows::EventRow::into_event).collect()
    }

    async fn try_acquire_lease(
        &self,
        account: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::LEASE_ACQUIRE)
            .bind(account)
            .bind(holder)
            .bind(rows::lease_until(now, ttl))
            .bind(rows::secs(now))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, account: &str, holder: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::LEASE_RELEASE)
            .bind(account)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn lease_holder(&self, account: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(sql::LEASE_GET)
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|(holder, until)| Ok((holder, rows::ts(until, "lease expiry")?)))
            .transpose()
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::EVENT_PRUNE)
            .bind(rows::secs(before))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
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
            Err(e) => Err(self.err(e)),
        }
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<rows::ApiKeyRow> = sqlx::query_as(sql::API_KEY_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(rows::ApiKeyRow::into_record).collect()
    }

    async fn revoke_api_key(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::API_KEY_REVOKE)
            .bind(name)
            .bind(rows::secs(now))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_cached_answer(&self, answer: &CachedAnswerRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar(sql::ACCOUNT_EXISTS)
            .bind(&answer.account)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Err(StoreError::UnknownAccount {
                account: answer.account.clone(),
            });
        }
        sqlx::query(sql::CACHE_PUT)
            .bind(&answer.account)
            .bind(&answer.path)
            .bind(&answer.query)
            .bind(i64::from(answer.status))
            .bind(answer.content_type.as_deref())
            .bind(answer.body.as_slice())
            .bind(rows::secs(answer.stored_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
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
            .await
            .map_err(|e| self.err(e))?;
        row.map(rows::CachedAnswerRow::into_record).transpose()
    }

    async fn prune_cached_answers(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::CACHE_PRUNE)
            .bind(rows::secs(before))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    async fn export(&self) -> Result<Backup, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let accounts: Vec<rows::AccountRow> = sqlx::query_as(sql::ACCOUNT_LIST)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let tokens: Vec<rows::SlotTokenRow> = sqlx::query_as(sql::TOKEN_ALL)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let secrets: Vec<rows::SecretRow> = sqlx::query_as(sql::SECRET_ALL)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let events: Vec<rows::EventRow> = sqlx::query_as(sql::EVENT_ALL)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.rollback().await.map_err(|e| self.err(e))?;
        rows::backup_from_rows(&self.key, accounts, tokens, secrets, events)
    }

    async fn import(&self, backup: Backup) -> Result<(), StoreError> {
        rows::check_backup(&backup)?;
        let mut tx = self.begin_write().await?;
        for stmt in sql::WIPE_FOR_IMPORT {
            sqlx::query(stmt)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        for a in &backup.accounts {
            sqlx::query(sql::ACCOUNT_INSERT)
                .bind(&a.id)
                .bind(&a.env)
                .bind(rows::secs(a.created_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        for t in &backup.tokens {
            let row = rows::TokenInsert::from_stored(&self.key, &t.account, &t.token);
            insert_token(&mut tx, &t.account, t.slot, &row)
                .await
                .map_err(|e| self.err(e))?;
        }
        for s in &backup.secrets {
            sqlx::query(sql::SECRET_PUT)
                .bind(&s.account)
                .bind(&s.name)
                .bind(rows::seal_secret(&self.key, &s.account, &s.name, &s.value))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
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
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn put_calendar(&self, calendar: &crate::StoredCalendar) -> Result<(), StoreError> {
        sqlx::query(sql::CALENDAR_PUT)
            .bind(i32::from(calendar.year))
            .bind(rows::calendar_body(calendar)?)
            .bind(rows::secs(calendar.fetched_at))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn calendar(&self, year: i16) -> Result<Option<crate::StoredCalendar>, StoreError> {
        let row: Option<rows::CalendarRow> = sqlx::query_as(sql::CALENDAR_GET)
            .bind(i32::from(year))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
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
        let mut tx = self.begin_write().await?;
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
                .await
                .map_err(|e| self.err(e))?;
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
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn ticks(&self, query: &TickQuery) -> Result<Vec<TickRecord>, StoreError> {
        let rows: Vec<rows::TickRow> = sqlx::query_as(sql::TICK_LIST)
            .bind(query.from_ms)
            .bind(query.to_ms)
            .bind(query.instrument.as_deref())
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
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
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn close(&self) {
        // Move everything from the WAL into the database file and empty the WAL, so the
        // file on disk is complete on its own (backups by copy, byte-level checks).
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint on close failed; the WAL stays valid");
        }
        self.pool.close().await;
    }
}

/// An exclusive lock on `<db>.init.lock` (created 0600), held while a store is opened
/// and migrated; released when the returned file is dropped. Waits for another process
/// that holds it (first-open work takes milliseconds).
async fn init_lock(db: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".init.lock");
    let lock_path = PathBuf::from(name);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StoreError::io("cannot open the store's init lock", &lock_path, e))?;
        file.lock()
            .map_err(|e| StoreError::io("cannot lock the store's init lock", &lock_path, e))?;
        Ok(file)
    })
    .await
    .map_err(|e| StoreError::io("cannot lock the store", db, std::io::Error::other(e)))?
}
