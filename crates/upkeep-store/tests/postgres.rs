//! PostgreSQL-specific behaviour: wrong keys write nothing, tampering is detected, and
//! `open_store` dispatches on a postgres:// URL.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers here are not #[test] fns

mod common;

use common::{at, in_pg_schema, key, new_token, pg_raw, pg_url, t0, token_text};
use sqlx::Connection as _;
use upkeep_store::{PgStore, StoreError, TokenStore, open_store};

/// Everything in the schema that a write could change, as text.
async fn snapshot(schema: &str) -> Vec<String> {
    let mut conn = pg_raw(schema).await;
    let mut out = Vec::new();
    for q in [
        "SELECT name || ':' || encode(value, 'hex') FROM upkeep_meta ORDER BY name",
        "SELECT id || ':' || env || ':' || created_at FROM accounts ORDER BY id",
        "SELECT account || ':' || slot || ':' || encode(sealed, 'hex') FROM tokens ORDER BY account, slot",
        "SELECT version || ':' || encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = current_schema()",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(q).fetch_all(&mut conn).await.unwrap();
        out.extend(rows);
    }
    conn.close().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_and_nothing_is_written() {
    in_pg_schema(|schema| async move {
        let right = key("right");
        let store = PgStore::connect_with_schema(&pg_url(), right.clone(), Some(&schema))
            .await
            .unwrap();
        store.upsert_account("a", "live", t0()).await.unwrap();
        store
            .put_token("a", new_token("A", at(10)), t0())
            .await
            .unwrap();
        store.close().await;
        let before = snapshot(&schema).await;
        assert!(before.len() > 3);

        let wrong = key("wrong");
        let err = PgStore::connect_with_schema(&pg_url(), wrong.clone(), Some(&schema))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{msg}");
        assert!(
            msg.contains(&wrong.key_id()) && msg.contains(&right.key_id()),
            "{msg}"
        );
        assert_eq!(snapshot(&schema).await, before);

        let store = PgStore::connect_with_schema(&pg_url(), right, Some(&schema))
            .await
            .unwrap();
        assert_eq!(
            store
                .current_token("a")
                .await
                .unwrap()
                .unwrap()
                .token
                .expose(),
            token_text("A")
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modified_token_row_is_reported_as_tampered() {
    in_pg_schema(|schema| async move {
        let store = PgStore::connect_with_schema(&pg_url(), key("k"), Some(&schema))
            .await
            .unwrap();
        store.upsert_account("a", "live", t0()).await.unwrap();
        store
            .put_token("a", new_token("A", at(10)), t0())
            .await
            .unwrap();
        let mut conn = pg_raw(&schema).await;
        sqlx::query(
            "UPDATE tokens SET sealed = overlay(sealed placing '\\x00'::bytea from length(sealed)) \
             WHERE account = 'a'",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let err = store.current_token("a").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Tampered { account, .. } if account == "a"),
            "{err}"
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_not_stored_in_plain_text() {
    in_pg_schema(|schema| async move {
        let store = PgStore::connect_with_schema(&pg_url(), key("k"), Some(&schema))
            .await
            .unwrap();
        store.upsert_account("a", "live", t0()).await.unwrap();
        store
            .put_token("a", new_token("A", at(10)), t0())
            .await
            .unwrap();
        store
            .put_secret("a", "pin", &upkeep_core::Secret::new("PINSECRET99"))
            .await
            .unwrap();
        store.close().await;
        let dump = snapshot(&schema).await.join("\n");
        let mut conn = pg_raw(&schema).await;
        let secrets: Vec<String> =
            sqlx::query_scalar("SELECT encode(sealed, 'escape') FROM secrets")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        let token_hex = hex::encode(token_text("A"));
        assert!(!dump.contains(&token_hex[..40]), "token bytes found");
        assert!(!secrets.concat().contains("PINSECRET99"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_dispatches_on_a_postgres_url() {
    in_pg_schema(|schema| async move {
        // Pre-create the schema and point the URL's search_path at it.
        let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let url = format!("{}?options=-c%20search_path%3D{schema}", pg_url());
        let store = open_store(&url, key("k")).await.unwrap();
        assert_eq!(store.backend(), "postgres");
        store.upsert_account("a", "live", t0()).await.unwrap();
        store.health().await.unwrap();
        store.close().await;
        let mut conn = pg_raw(&schema).await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "tables live in the URL's schema");
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn invalid_schema_name_is_refused() {
    let err = PgStore::connect_with_schema(&pg_url(), key("k"), Some("x\"; DROP TABLE y"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidSchema(_)), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err = PgStore::connect("postgres://postgres@127.0.0.1:1/test", key("k"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("check the URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expires_on_the_databases_clock_whatever_the_callers_clocks_say() {
    common::with_pg(|s| async move {
        s.upsert_account("a", "live", t0()).await.unwrap();
        // The database keeps whole seconds: a 3 s lease holds for at least 2 s after it
        // was taken, so the refusal below stands however loaded the machine is.
        let ttl = std::time::Duration::from_secs(3);
        // Two hosts whose clocks are a day apart: the one running ahead must not think
        // the other's fresh lease has expired.
        assert!(s.try_acquire_lease("a", "host-a", t0(), ttl).await.unwrap());
        assert!(
            !s.try_acquire_lease("a", "host-b", at(24), ttl)
                .await
                .unwrap()
        );
        // Only time passing on the database frees it. (The database's clock cannot be
        // paused: a short real wait, just past the lease's whole seconds.)
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
        assert!(s.try_acquire_lease("a", "host-b", t0(), ttl).await.unwrap());
        assert!(
            !s.try_acquire_lease("a", "host-a", at(48), ttl)
                .await
                .unwrap()
        );
    })
    .await;
}

/// Whether this connection is encrypted, as the server sees it (`pg_stat_ssl`).
async fn encrypted(conn: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_use_tls_when_the_server_offers_it_and_sslmode_is_honoured() {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let base: PgConnectOptions = pg_url().parse().unwrap();
    // The project's machines run PostgreSQL with TLS on (Debian's default: ssl = on with
    // the snakeoil certificate); a server without it cannot test this.
    let mut plain = sqlx::PgConnection::connect_with(&base.clone().ssl_mode(PgSslMode::Disable))
        .await
        .unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert_eq!(ssl, "on", "the test server must offer TLS (ssl = on)");
    assert!(!encrypted(&mut plain).await, "sslmode=disable is plain");
    plain.close().await.unwrap();

    // sslmode=require, and the default (prefer): encrypted, through the store's own
    // connect path (the URL as a user writes it).
    for url in [format!("{}?sslmode=require", pg_url()), pg_url()] {
        let opts: PgConnectOptions = url.parse().unwrap();
        let mut conn = sqlx::PgConnection::connect_with(&opts).await.unwrap();
        assert!(encrypted(&mut conn).await, "{url} connected in clear");
        conn.close().await.unwrap();
    }
    in_pg_schema(|schema| async move {
        let url = format!("{}?sslmode=require", pg_url());
        let store = PgStore::connect_with_schema(&url, key("k"), Some(&schema))
            .await
            .unwrap();
        store.upsert_account("a", "live", t0()).await.unwrap();
        store.close().await;
    })
    .await;
    // verify-full checks the certificate: the snakeoil one is self-signed, so without
    // its root the connection is refused (verification is on).
    let strict = base.ssl_mode(PgSslMode::VerifyFull);
    assert!(sqlx::PgConnection::connect_with(&strict).await.is_err());
}
