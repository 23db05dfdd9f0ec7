//! Sealed backups: round trips (also across keys and backends), no plain text on disk,
//! rotation, and refusing bad files before touching the store.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers here are not #[test] fns

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{at, contains, in_pg_schema, key, new_token, pg_url, sqlite_store, t0, token_text};
use jiff::SignedDuration;
use upkeep_core::Secret;
use upkeep_store::{
    AuditEvent, MasterKey, PgStore, SqliteStore, StoreError, TokenStore, backup_to_dir,
    restore_from_file,
};

async fn populate(s: &dyn TokenStore) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.upsert_account("b", "sandbox", at(1)).await.unwrap();
    s.put_token("a", new_token("A1", at(10)), t0())
        .await
        .unwrap();
    s.put_token("a", new_token("A2", at(20)), at(1))
        .await
        .unwrap();
    s.put_token("b", new_token("B1", at(20)), at(1))
        .await
        .unwrap();
    s.put_secret("a", "refresh_token", &Secret::new("REFRESHSECRETXYZ"))
        .await
        .unwrap();
    s.record_event(AuditEvent {
        account: "a".into(),
        at: at(1),
        actor: "cli".into(),
        kind: "token_imported".into(),
        outcome: "ok".into(),
        detail: "imported by hand".into(),
    })
    .await
    .unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

async fn fresh_sqlite(dir: &Path, k: MasterKey) -> SqliteStore {
    SqliteStore::open(dir.join("fresh.db").to_str().unwrap(), k)
        .await
        .unwrap()
}

#[tokio::test]
async fn backup_restores_into_a_fresh_store_with_another_key() {
    let (_d, source) = sqlite_store().await;
    populate(&source).await;
    let backup_key = key("backup");
    let backups = tempfile::tempdir().unwrap();
    let file = backup_to_dir(&source, &backup_key, backups.path(), t0())
        .await
        .unwrap();
    assert_eq!(
        file.file_name().unwrap().to_str().unwrap(),
        "upkeep-backup-20241112T120000Z.sealed"
    );

    let target_dir = tempfile::tempdir().unwrap();
    let target = fresh_sqlite(target_dir.path(), key("target")).await;
    let stats = restore_from_file(&target, &backup_key, &file)
        .await
        .unwrap();
    assert_eq!(
        (stats.accounts, stats.tokens, stats.secrets, stats.events),
        (2, 3, 1, 1)
    );
    assert_eq!(
        target.export().await.unwrap(),
        source.export().await.unwrap()
    );
    assert_eq!(
        target
            .previous_token("a")
            .await
            .unwrap()
            .unwrap()
            .token
            .expose(),
        token_text("A1")
    );
    source.close().await;
    target.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_from_sqlite_restores_into_postgres() {
    let (_d, source) = sqlite_store().await;
    populate(&source).await;
    let expected = source.export().await.unwrap();
    let k = key("k");
    let backups = tempfile::tempdir().unwrap();
    let file = backup_to_dir(&source, &k, backups.path(), t0())
        .await
        .unwrap();
    source.close().await;
    in_pg_schema(move |schema| async move {
        let pg = PgStore::connect_with_schema(&pg_url(), key("pg"), Some(&schema))
            .await
            .unwrap();
        restore_from_file(&pg, &k, &file).await.unwrap();
        assert_eq!(pg.export().await.unwrap(), expected);
        pg.close().await;
    })
    .await;
}

#[tokio::test]
async fn backup_file_is_private_and_holds_no_token_or_secret_text() {
    let (_d, source) = sqlite_store().await;
    populate(&source).await;
    let backups = tempfile::tempdir().unwrap();
    let file = backup_to_dir(&source, &key("k"), backups.path(), t0())
        .await
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    for needle in [
        token_text("A1"),
        token_text("A2"),
        "SECRETPAYLOAD".into(),
        "REFRESHSECRETXYZ".into(),
        "imported by hand".into(),
    ] {
        assert!(!contains(&bytes, needle.as_bytes()), "found {needle}");
    }
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(files_in(backups.path()).len(), 1, "no temp files left");
    source.close().await;
}

#[tokio::test]
async fn only_the_newest_ten_backups_are_kept() {
    let (_d, source) = sqlite_store().await;
    populate(&source).await;
    let k = key("k");
    let backups = tempfile::tempdir().unwrap();
    std::fs::write(backups.path().join("notes.txt"), "mine").unwrap();
    for i in 0..12 {
        let now = t0() + SignedDuration::from_mins(i);
        backup_to_dir(&source, &k, backups.path(), now)
            .await
            .unwrap();
    }
    let files = files_in(backups.path());
    assert_eq!(files.len(), 11, "{files:?}");
    assert!(
        files.contains(&"notes.txt".to_owned()),
        "other files untouched"
    );
    assert!(!files.contains(&"upkeep-backup-20241112T120000Z.sealed".to_owned()));
    assert!(!files.contains(&"upkeep-backup-20241112T120100Z.sealed".to_owned()));
    assert!(files.contains(&"upkeep-backup-20241112T121100Z.sealed".to_owned()));
    source.close().await;
}

#[tokio::test]
async fn restore_with_the_wrong_key_changes_nothing() {
    let (_d, source) = sqlite_store().await;
    populate(&source).await;
    let backups = tempfile::tempdir().unwrap();
    let file = backup_to_dir(&source, &key("right"), backups.path(), t0())
        .await
        .unwrap();

    let target_dir = tempfile::tempdir().unwrap();
    let target = fresh_sqlite(target_dir.path(), key("t")).await;
    target.upsert_account("keep", "live", t0()).await.unwrap();
    let before = target.export().await.unwrap();
    let err = restore_from_file(&target, &key("wrong"), &file)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    assert_eq!(target.export().await.unwrap(), before);
    source.close().await;
    target.close().await;
}

#[tokio::test]
async fn damaged_or_foreign_backup_file_is_refused_and_changes_nothing() {
    let (_d, source) = sqlite_store().await;
    populate(&source).await;
    let k = key("k");
    let backups = tempfile::tempdir().unwrap();
    let file = backup_to_dir(&source, &k, backups.path(), t0())
        .await
        .unwrap();
    let before = source.export().await.unwrap();

    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = backups.path().join("damaged.sealed");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = restore_from_file(&source, &k, &damaged).await.unwrap_err();
    assert!(matches!(err, StoreError::BadBackup { .. }), "{err}");
    assert!(err.to_string().contains("integrity"), "{err}");

    let foreign = backups.path().join("foreign.sealed");
    std::fs::write(&foreign, b"{\"accounts\": []}").unwrap();
    let err = restore_from_file(&source, &k, &foreign).await.unwrap_err();
    assert!(matches!(err, StoreError::BadBackup { .. }), "{err}");

    assert_eq!(source.export().await.unwrap(), before);
    source.close().await;
}
