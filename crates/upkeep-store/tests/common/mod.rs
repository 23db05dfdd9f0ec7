//! Shared test harness: fresh SQLite files in temp folders, and fresh PostgreSQL
//! schemas (dropped afterwards, even when the test panics).
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use jiff::{SignedDuration, Timestamp};
use rand::RngCore as _;
use sqlx::Connection as _;
use upkeep_core::AccessToken;
use upkeep_store::{MasterKey, NewToken, PgStore, SqliteStore, TokenStore};

/// PostgreSQL used by the tests (trust auth on loopback). Override with UPKEEP_TEST_PG_URL.
pub fn pg_url() -> String {
    std::env::var("UPKEEP_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn t0() -> Timestamp {
    "2024-11-12T12:00:00Z".parse().unwrap()
}

pub fn at(hours: i64) -> Timestamp {
    t0() + SignedDuration::from_hours(hours)
}

pub fn key(name: &str) -> MasterKey {
    MasterKey::generate().with_source(format!("test key {name}"))
}

/// A JWT-looking token whose text is easy to search for in raw bytes.
pub fn token_text(tag: &str) -> String {
    format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{tag}SECRETPAYLOAD.sig{tag}SIGNATUREPART")
}

pub fn new_token(tag: &str, expires_at: Timestamp) -> NewToken {
    NewToken {
        token: AccessToken::new(token_text(tag)),
        issued_at: Some(expires_at - SignedDuration::from_hours(10)),
        expires_at,
        kind: "daily".into(),
        source: "test".into(),
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A fresh SQLite store in its own temp folder.
pub async fn sqlite_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upkeep.db");
    let store = SqliteStore::open(path.to_str().unwrap(), key("sqlite"))
        .await
        .unwrap();
    (dir, store)
}

static SCHEMA_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A schema name no other test (or earlier run) uses.
pub fn unique_schema() -> String {
    let mut r = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut r);
    format!(
        "upkeep_test_{}_{}_{}",
        std::process::id(),
        SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed),
        hex::encode(r)
    )
}

pub async fn drop_schema(schema: &str) {
    let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A raw connection whose search_path is `schema`, for tampering and inspection.
pub async fn pg_raw(schema: &str) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Run `f` in a fresh schema, then drop the schema even if `f` panicked.
pub async fn in_pg_schema<F, Fut>(f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = unique_schema();
    let result = tokio::spawn(f(schema.clone())).await;
    drop_schema(&schema).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Run `f` against a fresh PostgreSQL store.
pub async fn with_pg<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn TokenStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    in_pg_schema(|schema| async move {
        let store = PgStore::connect_with_schema(&pg_url(), key("pg"), Some(&schema))
            .await
            .unwrap();
        let store: Arc<dyn TokenStore> = Arc::new(store);
        let result = tokio::spawn(f(store.clone())).await;
        store.close().await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

/// Run `f` against a fresh SQLite store.
pub async fn with_sqlite<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn TokenStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (_dir, store) = sqlite_store().await;
    let store: Arc<dyn TokenStore> = Arc::new(store);
    f(store.clone()).await;
    store.close().await;
}
