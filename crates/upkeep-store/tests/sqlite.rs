//! SQLite-specific behaviour: what is on disk, wrong keys, tampering, corrupt and
//! locked files.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers here are not #[test] fns

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{at, contains, key, new_token, t0, token_text};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use upkeep_core::Secret;
use upkeep_store::{SqliteStore, StoreError, TokenStore, open_store};

fn db_path(dir: &Path) -> PathBuf {
    dir.join("upkeep.db")
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The database file and its -wal/-shm companions, concatenated.
fn all_db_bytes(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(bytes) = std::fs::read(&p) {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

#[tokio::test]
async fn database_and_wal_never_contain_token_or_secret_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = SqliteStore::open(&url(&path), key("k")).await.unwrap();
    store.upsert_account("a", "live", t0()).await.unwrap();
    store
        .put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    store
        .put_token("a", new_token("B", at(11)), at(1))
        .await
        .unwrap();
    store
        .put_secret("a", "totp_seed", &Secret::new("TOTPSEEDSECRETVALUE"))
        .await
        .unwrap();

    let check = |bytes: &[u8], when: &str| {
        assert!(bytes.len() > 4096, "{when}: the database was written");
        for needle in [
            token_text("A"),
            token_text("B"),
            "SECRETPAYLOAD".to_owned(),
            "SIGNATUREPART".to_owned(),
            "TOTPSEEDSECRETVALUE".to_owned(),
        ] {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{when}: found {needle}"
            );
        }
        // The fingerprint is there, for display.
        let fp = upkeep_core::AccessToken::new(token_text("B")).fingerprint();
        assert!(contains(bytes, fp.as_bytes()), "{when}: fingerprint stored");
    };
    // While open (recent writes live in the WAL) and after close (checkpointed).
    check(&all_db_bytes(&path), "open");
    store.close().await;
    check(&all_db_bytes(&path), "closed");
}

#[tokio::test]
async fn database_file_is_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/upkeep.db");
    let store = SqliteStore::open(&url(&path), key("k")).await.unwrap();
    store.upsert_account("a", "live", t0()).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert_eq!(mode(&wal), 0o600, "WAL inherits the database's mode");
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    store.close().await;
}

#[tokio::test]
async fn wrong_key_is_refused_and_the_file_is_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let right = key("right");
    let store = SqliteStore::open(&url(&path), right.clone()).await.unwrap();
    store.upsert_account("a", "live", t0()).await.unwrap();
    store
        .put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    store.close().await;
    let before = std::fs::read(&path).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len(&wal), 0, "closed store keeps nothing in the WAL");

    let wrong = key("from-the-wrong-file");
    let err = SqliteStore::open(&url(&path), wrong.clone())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{msg}");
    assert!(
        msg.contains(&wrong.key_id()) && msg.contains(&right.key_id()),
        "{msg}"
    );
    assert!(
        msg.contains("from-the-wrong-file"),
        "names the key's source: {msg}"
    );
    assert!(msg.contains("UPKEEP_MASTER_KEY"), "says how to fix: {msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");
    assert_eq!(wal_len(&wal), 0, "nothing written to the WAL either");

    // The right key still opens it, with the token intact.
    let store = SqliteStore::open(&url(&path), right).await.unwrap();
    let tok = store.current_token("a").await.unwrap().unwrap();
    assert_eq!(tok.token.expose(), token_text("A"));
    store.close().await;
}

#[tokio::test]
async fn modified_token_row_is_reported_as_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let k = key("k");
    let store = SqliteStore::open(&url(&path), k.clone()).await.unwrap();
    for a in ["a", "b"] {
        store.upsert_account(a, "live", t0()).await.unwrap();
        store
            .put_token(a, new_token(a, at(10)), t0())
            .await
            .unwrap();
    }
    store
        .put_secret("a", "pin", &Secret::new("123456"))
        .await
        .unwrap();

    let mut conn = raw(&path).await;
    // Flip one bit of a's sealed token.
    let mut blob: Vec<u8> =
        sqlx::query_scalar("SELECT sealed FROM tokens WHERE account = 'a' AND slot = 'current'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    sqlx::query("UPDATE tokens SET sealed = $1 WHERE account = 'a'")
        .bind(&blob)
        .execute(&mut conn)
        .await
        .unwrap();
    // Put b's sealed token in place of a's secret: moved ciphertext must not open.
    sqlx::query(
        "UPDATE secrets SET sealed = (SELECT sealed FROM tokens WHERE account = 'b') WHERE account = 'a'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Edit b's fingerprint column: the row no longer matches its sealed token.
    sqlx::query("UPDATE tokens SET fingerprint = '000000000000' WHERE account = 'b'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = store.current_token("a").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Tampered { account, .. } if account == "a"),
        "{err}"
    );
    assert!(err.to_string().contains("restore a backup"), "{err}");
    let err = store.get_secret("a", "pin").await.unwrap_err();
    assert!(matches!(err, StoreError::Tampered { .. }), "{err}");
    let err = store.current_token("b").await.unwrap_err();
    assert!(matches!(err, StoreError::Tampered { .. }), "{err}");
    // An export refuses to back up damaged data.
    assert!(matches!(
        store.export().await,
        Err(StoreError::Tampered { .. })
    ));
    store.close().await;
}

#[tokio::test]
async fn garbage_file_is_corrupt_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = SqliteStore::open(&url(&path), key("k")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path: p } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("restore a backup"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[tokio::test]
async fn file_with_sqlite_header_but_garbage_body_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192u32).map(|i| (i * 13 + 5) as u8));
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteStore::open(&url(&path), key("k")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn database_locked_by_another_process_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = SqliteStore::open(&url(&path), key("k")).await.unwrap();
    store.close().await;
    // Nothing of the first store may linger while the lock below is taken.
    drop(store);

    // Another "instance" holds an exclusive lock.
    let mut holder = raw(&path).await;
    sqlx::query("PRAGMA locking_mode = EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();

    let err = SqliteStore::open_with_timeout(&url(&path), key("k"), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Locked { path: p } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("another upkeep instance"), "{err}");

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
}

#[tokio::test]
async fn two_stores_on_one_file_share_data_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let k = key("k");
    let one = SqliteStore::open(&url(&path), k.clone()).await.unwrap();
    let two = SqliteStore::open(&url(&path), k).await.unwrap();
    one.upsert_account("a", "live", t0()).await.unwrap();
    one.put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    assert_eq!(
        two.current_token("a")
            .await
            .unwrap()
            .unwrap()
            .token
            .expose(),
        token_text("A")
    );
    let ttl = Duration::from_secs(60);
    assert!(one.try_acquire_lease("a", "one", t0(), ttl).await.unwrap());
    assert!(!two.try_acquire_lease("a", "two", t0(), ttl).await.unwrap());
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn open_store_dispatches_on_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = open_store(&url(&path), key("k")).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.health().await.unwrap();
    store.close().await;

    let err = open_store("mysql://user:pw@host/db", key("k"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err}");
    assert!(
        !err.to_string().contains("pw"),
        "no credentials in the message: {err}"
    );
}

#[tokio::test]
async fn in_memory_store_works_for_quick_use() {
    let store = SqliteStore::open("sqlite::memory:", key("k"))
        .await
        .unwrap();
    store.upsert_account("a", "sim", t0()).await.unwrap();
    store
        .put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    assert!(store.current_token("a").await.unwrap().is_some());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_new_database_at_the_same_time_all_succeed() {
    // A CLI command next to a starting daemon: both create, switch to WAL and migrate
    // the same new file. Repeated, since a race shows only sometimes.
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(dir.path());
        let k = key("k");
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let (u, k) = (url(&path), k.clone());
                tokio::spawn(async move { SqliteStore::open(&u, k).await })
            })
            .collect();
        for open in opens {
            let store = open
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            store.upsert_account("a", "live", t0()).await.unwrap();
            store.close().await;
        }
    }
}

#[tokio::test]
async fn a_lease_expires_at_now_plus_ttl_on_the_callers_clock() {
    let (_dir, s) = common::sqlite_store().await;
    s.upsert_account("a", "live", t0()).await.unwrap();
    let ttl = Duration::from_secs(60);
    assert!(s.try_acquire_lease("a", "p1", t0(), ttl).await.unwrap());
    // Extended at t0+30s to t0+90s: still held at t0+60s.
    let t30 = t0() + jiff::SignedDuration::from_secs(30);
    assert!(s.try_acquire_lease("a", "p1", t30, ttl).await.unwrap());
    let t60 = t0() + jiff::SignedDuration::from_secs(60);
    assert!(!s.try_acquire_lease("a", "p2", t60, ttl).await.unwrap());
    // Expired at t0+90s: p2 takes over, and p1 is locked out.
    let t90 = t0() + jiff::SignedDuration::from_secs(90);
    assert!(s.try_acquire_lease("a", "p2", t90, ttl).await.unwrap());
    assert!(!s.try_acquire_lease("a", "p1", t90, ttl).await.unwrap());
}
