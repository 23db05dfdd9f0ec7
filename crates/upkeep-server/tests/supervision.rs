//! Background tasks that die are restarted and reported; `/readyz` tells whether every
//! account is looked after; a renewal cancelled half-way gives its lease back.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use jiff::civil::date;
use serde_json::Value;
use sha2::{Digest, Sha256};
use upkeep_server::settings::StrategyKind;
use upkeep_server::{Actor, RenewOutcome};

use common::{ACCOUNT, Setup, eventually, eventually_async, ist, spawn_app};

#[tokio::test]
async fn a_supervisor_that_panics_is_restarted_reported_and_keeps_renewing() {
    let day = date(2026, 12, 1);
    let h = spawn_app(
        Setup::at(ist(day, 10, 0, 0))
            .token_issued_at(ist(day, 9, 0, 0))
            .alerts(),
    )
    .await;
    eventually("the supervisor running", || {
        h.engine.status(ACCOUNT).filter(|s| s.supervisor_alive)
    })
    .await;
    // A bug: the supervisor panics (a test hook makes it).
    let answer = h.engine.inject_supervisor_panic(ACCOUNT).await;
    assert_eq!(answer, RenewOutcome::Cancelled);
    let alert = h.alerts().wait_for("internal_error", |_| true).await;
    assert_eq!(alert["account"], ACCOUNT);
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("injected supervisor panic"),
        "{alert}"
    );
    let status = eventually("the supervisor restarted", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.supervisor_alive && s.supervisor_restarts == 1)
    })
    .await;
    assert_eq!(status.supervisor_restarts, 1);
    // The restarted supervisor serves triggers again.
    let outcome = h.engine.renew(ACCOUNT, Actor::Cli).await;
    assert!(
        matches!(outcome, RenewOutcome::Renewed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn readyz_says_whether_every_account_is_looked_after_and_details_need_a_key() {
    let day = date(2026, 12, 1);
    let h = spawn_app(
        Setup::at(ist(day, 10, 0, 0))
            .strategies(&[StrategyKind::Static])
            .token_issued_at(ist(day, 9, 0, 0)),
    )
    .await;
    let key = "upk_test_status_reader_key_0123456789";
    h.engine
        .store()
        .create_api_key(
            "reader",
            &Sha256::digest(key.as_bytes()).into(),
            "status:read",
            h.clock.now(),
        )
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/readyz", h.daemon_url);
    eventually_async("ready", || async {
        let resp = client.get(&url).send().await.unwrap();
        (resp.status() == 200).then_some(())
    })
    .await;
    let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ready": true}),
        "no details without a key"
    );

    // 03:30 passes and nothing can renew a static token: not ready.
    h.clock.set(ist(day.tomorrow().unwrap(), 3, 30, 1));
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let resp = client.get(&url).bearer_auth(key).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["store"], true);
    assert_eq!(body["accounts"][0]["account"], ACCOUNT);
    assert_eq!(body["accounts"][0]["token_valid"], false);
    assert_eq!(body["accounts"][0]["supervisor_alive"], true);
}

#[tokio::test]
async fn a_renewal_cancelled_half_way_gives_its_lease_back() {
    let day = date(2026, 12, 1);
    // Every call to Upstox takes a while: the login is still under way when cancelled.
    let h = spawn_app(
        Setup::at(ist(day, 10, 0, 0))
            .token_issued_at(ist(day, 9, 0, 0))
            .latency_ms(1500),
    )
    .await;
    let engine = h.engine.clone();
    // `upkeep renew` in-process (the CLI), interrupted with Ctrl-C half-way.
    let renewal = tokio::spawn(async move { engine.renew_now(ACCOUNT, Actor::Cli).await });
    eventually_async("the lease taken", || async {
        h.engine.store().lease_holder(ACCOUNT).await.unwrap()
    })
    .await;
    renewal.abort();
    assert!(renewal.await.unwrap_err().is_cancelled());
    eventually_async("the lease released", || async {
        h.engine
            .store()
            .lease_holder(ACCOUNT)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
