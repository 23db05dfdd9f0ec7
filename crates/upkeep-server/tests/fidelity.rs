//! The renewal engine against what the real Upstox does and the simulator now models
//! (issue 12): refused authorization codes, the login service's OTP limit, and whether
//! a new token revokes the older ones. The daemon and the simulator share one clock.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use jiff::SignedDuration;
use jiff::civil::{Date, Weekday, date};
use serde_json::json;
use upkeep_server::{Actor, RenewOutcome};
use upkeep_sim::FaultsPatch;

use common::{ACCOUNT, Setup, eventually, ist, spawn_app};

/// Tuesday 2026-02-10.
fn tuesday() -> Date {
    let d = date(2026, 2, 10);
    assert_eq!(d.weekday(), Weekday::Tuesday);
    d
}

#[tokio::test]
async fn an_expired_authorization_code_restarts_the_login_and_renews_without_disabling_totp() {
    let tue = tuesday();
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).token_issued_at(ist(tue, 9, 0, 0))).await;
    let old = h.current().unwrap();
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            expired_codes: Some(1),
            ..FaultsPatch::default()
        })
        .unwrap();

    let outcome = h.engine.renew(ACCOUNT, Actor::Cli).await;
    let RenewOutcome::Renewed { fingerprint, .. } = &outcome else {
        panic!("expected a renewal, got {outcome:?}");
    };
    assert_ne!(fingerprint, &old.fingerprint);
    let c = h.counters();
    assert_eq!(
        (c.logins, c.token_exchanges, c.failed_logins),
        (2, 1, 0),
        "the login ran again after the refused code"
    );
    assert!(h.engine.status(ACCOUNT).unwrap().disabled.is_empty());
}

#[tokio::test]
async fn codes_refused_every_time_fail_the_renewal_but_leave_the_strategy_enabled() {
    let tue = tuesday();
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).token_issued_at(ist(tue, 9, 0, 0))).await;
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            expired_codes: Some(1000),
            ..FaultsPatch::default()
        })
        .unwrap();

    let outcome = h.engine.renew(ACCOUNT, Actor::Cli).await;
    let RenewOutcome::Failed { reason } = &outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(reason.contains("UDAPI100057"), "{reason}");
    assert_eq!(
        h.counters().logins as usize,
        upkeep_upstox::totp::MAX_LOGIN_RUNS,
        "a bounded number of runs"
    );
    assert!(
        h.engine.status(ACCOUNT).unwrap().disabled.is_empty(),
        "not a credential fault: the next attempt may log in"
    );

    // Codes are good again: the next renewal works without a human resetting anything.
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            expired_codes: Some(0),
            ..FaultsPatch::default()
        })
        .unwrap();
    let outcome = h.engine.renew(ACCOUNT, Actor::Api).await;
    assert!(
        matches!(outcome, RenewOutcome::Renewed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn over_the_otp_limit_the_login_waits_ten_minutes_on_the_clock_then_renews() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .token_issued_at(ist(tue, 9, 0, 0))
            .sim(|c| c.otp_generate_limit = 1)
            .settings(|s| {
                // Without the server's wait, the engine would retry within seconds.
                s.retry.first = SignedDuration::from_secs(1);
                s.retry.max = SignedDuration::from_secs(2);
                s.lease_ttl = Duration::from_secs(600);
            }),
    )
    .await;
    // Another client used up this user's OTPs for the next ten minutes.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/login/open/v6/auth/1fa/otp/generate",
            h.sim_url()
        ))
        .json(&json!({"data": {"mobileNumber": h.creds.mobile}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let used_at = h.clock.now();

    let engine = h.engine.clone();
    let renewal = tokio::spawn(async move { engine.renew(ACCOUNT, Actor::Cli).await });
    eventually("the OTP-limit refusal", || {
        (h.counters().otp_limited == 1).then_some(())
    })
    .await;
    // Let simulated time pass (2 s of real time per simulated 4 minutes): a tight retry
    // would be refused again and counted.
    h.clock.set_speed(120.0);
    let outcome = renewal.await.unwrap();
    h.clock.set_speed(0.0);
    assert!(
        matches!(outcome, RenewOutcome::Renewed { .. }),
        "{outcome:?}"
    );
    let c = h.counters();
    assert_eq!(
        c.otp_limited, 1,
        "one refusal, then a wait, not a retry loop"
    );
    assert_eq!(c.failed_logins, 0);
    let done = h.wait_for_event("renewal_succeeded", |_| true).await;
    assert!(
        done.at >= used_at + SignedDuration::from_mins(10),
        "renewed only after the ten minutes: {}",
        done.at
    );
    assert!(h.engine.status(ACCOUNT).unwrap().disabled.is_empty());
}
