//! When the store or the token files cannot be written: the account shows a condition,
//! a human is alerted, and the files are written again until they hold the current
//! token.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use jiff::civil::date;

use common::{ACCOUNT, Setup, eventually, eventually_async, ist, spawn_app};

#[tokio::test]
async fn an_unwritable_token_file_is_a_condition_with_an_alert_and_is_rewritten_once_it_can_be() {
    let dir = tempfile::tempdir().unwrap();
    // The sink's folder is a file: every write fails (root ignores permission bits, so
    // a read-only folder would not do).
    let blocked = dir.path().join("bots");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let sink = blocked.join("upstox_tokens.json");
    let h = spawn_app(
        Setup::at(ist(date(2026, 12, 1), 10, 0, 0))
            .alerts()
            .settings({
                let sink = sink.clone();
                move |s| s.sinks.json_file = Some(sink)
            }),
    )
    .await;
    // No token at start: the daemon logs in; the token is stored and current, but the
    // legacy file cannot be written.
    let token = h.wait_for_new_token(None).await;
    let condition = eventually("the sink condition", || {
        h.engine
            .status(ACCOUNT)
            .and_then(|s| s.conditions.get("sink_write_failing").cloned())
    })
    .await;
    assert!(condition.contains("bots"), "{condition}");
    let alert = h.alerts().wait_for("storage_failing", |_| true).await;
    assert_eq!(alert["title"], "Token files not written");
    assert!(!alert.to_string().contains(token.token.expose()));

    // The folder becomes writable: the daemon writes the current token by itself.
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir(&blocked).unwrap();
    let written = eventually("the token file", || std::fs::read_to_string(&sink).ok()).await;
    assert!(written.contains(token.token.expose()));
    eventually("the condition cleared", || {
        h.engine.status(ACCOUNT).filter(|s| s.conditions.is_empty())
    })
    .await;
}

#[tokio::test]
async fn a_store_that_refuses_writes_is_a_condition_with_an_alert() {
    let h = spawn_app(
        Setup::at(ist(date(2026, 12, 1), 10, 0, 0))
            .alerts()
            .token_issued_at(ist(date(2026, 12, 1), 9, 0, 0)),
    )
    .await;
    // The database goes away under the daemon (as a full disk or a dead server would
    // refuse writes).
    h.engine.store().close().await;
    let outcome = h.engine.renew(ACCOUNT, upkeep_server::Actor::Cli).await;
    assert!(
        !matches!(outcome, upkeep_server::RenewOutcome::Renewed { .. }),
        "{outcome:?}"
    );
    let condition = eventually("the store condition", || {
        h.engine
            .status(ACCOUNT)
            .and_then(|s| s.conditions.get("store_write_failing").cloned())
    })
    .await;
    assert!(!condition.is_empty());
    let alert = h.alerts().wait_for("storage_failing", |_| true).await;
    assert_eq!(alert["title"], "Store write failing");
}

#[tokio::test]
async fn token_files_left_behind_the_store_by_a_crash_are_rewritten_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("upstox_tokens.json");
    let dotenv = dir.path().join(".env");
    // A daemon killed after storing its new token but before writing the files: the
    // store holds the token, the files an older one (here: none, and a stale line).
    std::fs::write(&dotenv, "UPSTOX_ACCESS_TOKEN=an-old-revoked-token\n").unwrap();
    let h = spawn_app(
        Setup::at(ist(date(2026, 12, 1), 10, 0, 0))
            .token_issued_at(ist(date(2026, 12, 1), 9, 0, 0))
            .settings({
                let (json, dotenv) = (json.clone(), dotenv.clone());
                move |s| {
                    s.sinks.json_file = Some(json);
                    s.sinks.env_file = Some(dotenv);
                }
            }),
    )
    .await;
    let token = h.seeded.clone().unwrap();
    for file in [&json, &dotenv] {
        let text = eventually("the token file rewritten", || {
            std::fs::read_to_string(file)
                .ok()
                .filter(|t| t.contains(token.expose()))
        })
        .await;
        assert!(!text.contains("an-old-revoked-token"));
    }
    // No renewal was needed for it.
    assert_eq!(h.current().unwrap().fingerprint, token.fingerprint());
}

#[tokio::test]
async fn a_token_upstox_delivered_while_the_store_refuses_writes_is_used_and_saved_later() {
    use sqlx::Connection as _;
    use upkeep_core::AccessToken;
    let tue = date(2026, 12, 1);
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[upkeep_server::settings::StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0))
            .store_busy_timeout(std::time::Duration::from_millis(200))
            .alerts()
            .settings(|s| s.webhook.answer_within = std::time::Duration::from_secs(30)),
    )
    .await;
    // Another connection holds the write lock (as a long migration, a backup tool or
    // a full disk would refuse writes): the daemon's writes fail after 200 ms.
    let mut holder = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(h.db_path()),
    )
    .await
    .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    h.clock.advance(jiff::SignedDuration::from_mins(1));
    let fresh = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, upkeep_sim::TokenKind::Daily)
            .unwrap(),
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/upstox/token", h.daemon_url))
        .json(&common::notifier_body(
            &h.creds.client_id,
            &h.creds.ucc,
            fresh.expose(),
            h.clock.now(),
        ))
        .send()
        .await
        .unwrap();
    // Upstox delivers once: the token is taken and used although it could not be saved.
    assert_eq!(resp.status(), 200);
    assert_eq!(h.current().unwrap().fingerprint, fresh.fingerprint());
    let status = h.engine.status(ACCOUNT).unwrap();
    assert!(status.conditions.contains_key("store_write_failing"));
    h.alerts()
        .wait_for("storage_failing", |a| a["title"] == "Store write failing")
        .await;

    // The lock goes away: the daemon saves the token by itself and the condition clears.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    eventually_async("the token saved", || async {
        h.engine
            .store()
            .current_token(ACCOUNT)
            .await
            .ok()
            .flatten()
            .filter(|t| t.fingerprint == fresh.fingerprint())
    })
    .await;
    eventually("the condition cleared", || {
        h.engine.status(ACCOUNT).filter(|s| s.conditions.is_empty())
    })
    .await;
}
