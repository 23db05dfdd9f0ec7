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

/// Whether a new daily token revokes the user's older ones is not published: upkeep
/// must be right either way. A renewal hands consumers the new token, which passes
/// the next health checks, whatever happened to the old one.
#[tokio::test]
async fn a_renewal_leaves_the_daemon_holding_a_working_token_in_both_revoke_modes() {
    for revoke in [false, true] {
        let tue = tuesday();
        let h = spawn_app(
            Setup::at(ist(tue, 10, 0, 0))
                .token_issued_at(ist(tue, 9, 0, 0))
                .sim(move |c| c.revoke_previous_tokens = revoke)
                .settings(|s| s.health_interval = SignedDuration::from_mins(1)),
        )
        .await;
        let old = h.seeded.clone().unwrap();

        let outcome = h.engine.renew(ACCOUNT, Actor::Cli).await;
        assert!(
            matches!(outcome, RenewOutcome::Renewed { .. }),
            "revoke={revoke}: {outcome:?}"
        );
        let current = h.current().unwrap();
        assert_ne!(current.fingerprint, old.fingerprint());
        h.upstox.profile(&current.token).await.unwrap();
        let old_works = h.upstox.profile(&old).await.is_ok();
        assert_eq!(old_works, !revoke, "revoke={revoke}");

        // The next health checks look at the new token and find it valid: no second login.
        let renewed_at = h.clock.now();
        h.clock.advance(SignedDuration::from_mins(2));
        eventually("a health check of the new token", || {
            h.engine.status(ACCOUNT).filter(|s| {
                s.last_check.is_some_and(|t| t > renewed_at) && s.api_validated == Some(true)
            })
        })
        .await;
        h.let_daemon_run().await;
        assert_eq!(h.counters().logins, 1, "revoke={revoke}");
        assert_eq!(h.current().unwrap().fingerprint, current.fingerprint);
    }
}

/// A login elsewhere (the Developer Apps "Generate" button, another tool) makes a new
/// daily token. If that revokes the daemon's token, the next health check notices and
/// renews; if it does not, the daemon keeps its token and does not log in.
#[tokio::test]
async fn a_token_issued_elsewhere_is_noticed_within_a_health_interval_only_when_it_revokes() {
    for revoke in [false, true] {
        let tue = tuesday();
        let h = spawn_app(
            Setup::at(ist(tue, 10, 0, 0))
                .token_issued_at(ist(tue, 9, 0, 0))
                .sim(move |c| c.revoke_previous_tokens = revoke)
                .settings(|s| s.health_interval = SignedDuration::from_mins(1)),
        )
        .await;
        let seeded = h.seeded.clone().unwrap();
        eventually("the first health check", || {
            h.engine
                .status(ACCOUNT)
                .filter(|s| s.api_validated == Some(true))
        })
        .await;

        let elsewhere = h
            .sim
            .state()
            .issue_token(&h.creds.ucc, upkeep_sim::TokenKind::Daily)
            .unwrap();
        let issued_at = h.clock.now();
        h.clock.advance(SignedDuration::from_mins(2));

        if revoke {
            let renewed = h.wait_for_new_token(Some(&seeded.fingerprint())).await;
            h.upstox.profile(&renewed.token).await.unwrap();
            let started = h.events_of("renewal_started").await;
            assert_eq!(started.len(), 1);
            assert_eq!(started[0].actor, "health");
            assert!(
                started[0].at <= issued_at + SignedDuration::from_mins(2),
                "within one health interval of the revocation"
            );
            // Our login revoked the other token in turn: that is this mode's price.
            let other = upkeep_core::AccessToken::new(elsewhere);
            assert!(h.upstox.profile(&other).await.is_err());
        } else {
            eventually("a health check after the other login", || {
                h.engine.status(ACCOUNT).filter(|s| {
                    s.last_check.is_some_and(|t| t > issued_at) && s.api_validated == Some(true)
                })
            })
            .await;
            h.let_daemon_run().await;
            assert_eq!(h.counters().logins, 0, "no needless login");
            assert_eq!(h.current().unwrap().fingerprint, seeded.fingerprint());
        }
    }
}

/// With revoking logins and a long health interval, a consumer that meets the revoked
/// token (401) reports it and gets a new one at once, not at the next health check.
#[tokio::test]
async fn a_consumer_that_meets_a_revoked_predecessor_gets_the_new_token_at_once() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .token_issued_at(ist(tue, 9, 0, 0))
            .sim(|c| c.revoke_previous_tokens = true)
            .settings(|s| s.health_interval = SignedDuration::from_hours(6)),
    )
    .await;
    let seeded = h.seeded.clone().unwrap();
    h.sim
        .state()
        .issue_token(&h.creds.ucc, upkeep_sim::TokenKind::Daily)
        .unwrap();
    // The consumer's call with the daemon's token is refused...
    let err = h.upstox.profile(&seeded).await.unwrap_err();
    assert_eq!(err.class(), upkeep_upstox::ErrorClass::TokenInvalid);
    // ...it reports the 401, and the answer is a fresh token, on the same clock reading.
    let outcome = h
        .engine
        .report_unauthorized(ACCOUNT, &seeded.fingerprint())
        .await;
    assert!(
        matches!(outcome, RenewOutcome::Renewed { .. }),
        "{outcome:?}"
    );
    let current = h.current().unwrap();
    h.upstox.profile(&current.token).await.unwrap();
    assert_eq!(h.counters().logins, 1);
}
