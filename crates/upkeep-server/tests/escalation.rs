//! The alert ladder end to end (operator-experience issue, item 1): an account whose
//! token stops working while renewing fails is reported within 2 minutes, then at
//! +15 min, 30 min before the deadline, at the deadline and at market open, each once,
//! and once more when it works again. The daemon runs against the simulator on one
//! movable clock; simulated minutes pass by moving it, never by sleeping.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use jiff::civil::{Date, Weekday, date};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use upkeep_core::AccessToken;
use upkeep_server::Actor;
use upkeep_server::settings::StrategyKind;
use upkeep_sim::{FaultsPatch, TokenKind};

use common::{ACCOUNT, Setup, TestApp, eventually, ist, spawn_app};

/// Tuesday 2026-02-10.
fn tuesday() -> Date {
    let d = date(2026, 2, 10);
    assert_eq!(d.weekday(), Weekday::Tuesday);
    d
}

fn at(alert: &Value) -> Timestamp {
    alert["at"].as_str().unwrap().parse().unwrap()
}

fn titles(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a["title"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the alert ladder's task has completed two more rounds: the second began
/// after this call, so it saw the clock as it is now and sent whatever was due.
async fn let_ladder_run(h: &TestApp) {
    let before = h.engine.escalation_passes();
    eventually("two rounds of the alert ladder", || {
        (h.engine.escalation_passes() >= before + 2).then_some(())
    })
    .await;
}

/// Waits for the `n`-th `no_working_token` alert.
async fn nth_rung(h: &TestApp, n: usize) -> Value {
    eventually(&format!("alert ladder rung {n}"), || {
        h.alerts().of_kind("no_working_token").get(n - 1).cloned()
    })
    .await
}

fn login_down(h: &TestApp, down: bool) {
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            login_down: Some(down),
            ..FaultsPatch::default()
        })
        .unwrap();
}

/// The morning of the issue: a valid token, checked at 08:30; at 08:37 Upstox revokes
/// it while its login service is down; the 08:38 health check finds it refused and the
/// renewal it starts fails. Returns with the incident open since 08:38:00 and no
/// alert sent yet.
async fn revoked_during_a_login_outage() -> TestApp {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 8, 30, 0))
            .token_issued_at(ist(tue, 5, 35, 0))
            .alerts()
            .settings(|s| {
                s.health_interval = SignedDuration::from_mins(1);
                s.retry.first = SignedDuration::from_secs(20);
                s.retry.max = SignedDuration::from_mins(2);
                // The clock jumps by minutes: keep the lease from lapsing in a jump.
                s.lease_ttl = Duration::from_secs(6 * 3600);
            }),
    )
    .await;
    eventually("the first health check", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.api_validated == Some(true))
    })
    .await;
    login_down(&h, true);
    h.clock.set(ist(tue, 8, 37, 0));
    assert!(h.sim.state().revoke(h.seeded.as_ref().unwrap().expose()));
    h.clock.set(ist(tue, 8, 38, 0));
    let since = eventually("the failed renewal attempt", || {
        h.engine.status(ACCOUNT).and_then(|s| s.failing_since)
    })
    .await;
    assert_eq!(since, ist(tue, 8, 38, 0));
    h
}

#[tokio::test]
async fn a_token_revoked_during_a_login_outage_climbs_the_whole_ladder_once_then_recovers() {
    let tue = tuesday();
    let h = revoked_during_a_login_outage().await;

    // Not before a minute has passed (a failure the next retry repairs is no news).
    h.clock.set(ist(tue, 8, 38, 59));
    let_ladder_run(&h).await;
    assert!(h.alerts().of_kind("no_working_token").is_empty());

    // Within 2 minutes of the failure: the first alert, which explains itself.
    h.clock.set(ist(tue, 8, 39, 0));
    let first = nth_rung(&h, 1).await;
    assert_eq!(
        first["title"],
        "account main has no working Upstox token (renewal failing since 08:38 IST)"
    );
    assert_eq!(at(&first), ist(tue, 8, 39, 0));
    assert!(first["link"].is_string(), "it carries the login link");
    let message = first["message"].as_str().unwrap();
    assert!(message.contains("refused"), "{message}");
    assert!(message.contains("revoked"), "{message}");
    assert!(message.contains("Next alert 08:53 IST"), "{message}");

    // 15 minutes after the failure, and not a second earlier.
    h.clock.set(ist(tue, 8, 52, 59));
    let_ladder_run(&h).await;
    assert_eq!(h.alerts().of_kind("no_working_token").len(), 1);
    h.clock.set(ist(tue, 8, 53, 0));
    let second = nth_rung(&h, 2).await;
    assert_eq!(
        second["title"],
        "account main still has no working Upstox token (renewal failing since 08:38 IST)"
    );

    // 08:30 (30 min before the deadline) had passed when it began: skipped. The
    // deadline itself, and not a second earlier.
    h.clock.set(ist(tue, 8, 59, 59));
    let_ladder_run(&h).await;
    assert_eq!(h.alerts().of_kind("no_working_token").len(), 2);
    h.clock.set(ist(tue, 9, 0, 0));
    let third = nth_rung(&h, 3).await;
    assert_eq!(
        third["title"],
        "account main missed the 09:00 IST renewal deadline: no working Upstox token"
    );

    h.clock.set(ist(tue, 9, 15, 0));
    let fourth = nth_rung(&h, 4).await;
    assert_eq!(
        fourth["title"],
        "market open (09:15 IST): account main still has no working Upstox token"
    );
    // The top of the ladder: nothing more while it stays broken.
    h.clock.set(ist(tue, 9, 20, 0));
    let_ladder_run(&h).await;
    assert_eq!(h.alerts().of_kind("no_working_token").len(), 4);
    // The ladder replaces the late "deadline at risk" alert of the same trouble.
    assert!(h.alerts().of_kind("deadline_at_risk").is_empty());

    // Upstox's login comes back; the next retry renews; one recovery alert.
    login_down(&h, false);
    h.clock.set(ist(tue, 9, 25, 0));
    let seeded = h.seeded.as_ref().unwrap().fingerprint();
    h.wait_for_renewal(Some(&seeded)).await;
    let recovered = h.alerts().wait_for("recovered", |_| true).await;
    assert_eq!(
        recovered["title"],
        "account main has a working Upstox token again (it had none from 08:38 IST to 09:25 IST)"
    );
    h.clock.set(ist(tue, 9, 30, 0));
    let_ladder_run(&h).await;
    h.let_daemon_run().await;
    assert_eq!(h.alerts().of_kind("recovered").len(), 1);
    assert_eq!(h.alerts().of_kind("no_working_token").len(), 4);
    // Recorded for `upkeep status` readers and for a restarted daemon.
    let rungs: Vec<String> = h
        .events_of("escalation")
        .await
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        rungs,
        [
            "first",
            "still_failing",
            "at_deadline",
            "market_open",
            "recovered"
        ]
    );
}

#[tokio::test]
async fn a_daemon_that_falls_behind_sends_only_the_latest_due_rung() {
    let tue = tuesday();
    let h = revoked_during_a_login_outage().await;
    h.clock.set(ist(tue, 8, 39, 0));
    nth_rung(&h, 1).await;

    // The machine was suspended from 08:39 to 09:05: the 08:53 rung is stale news.
    h.clock.set(ist(tue, 9, 5, 0));
    let late = nth_rung(&h, 2).await;
    assert_eq!(
        late["title"],
        "account main missed the 09:00 IST renewal deadline: no working Upstox token"
    );
    let_ladder_run(&h).await;
    assert_eq!(
        titles(&h.alerts().of_kind("no_working_token")).len(),
        2,
        "the skipped 08:53 rung is not sent late"
    );

    // Still broken the next morning (the token died at 03:30, the 05:30 renewal
    // fails too): the ladder climbs again, from where the clock is.
    let wed = tue.tomorrow().unwrap();
    h.clock.set(ist(tue, 9, 15, 0));
    nth_rung(&h, 3).await;
    h.clock.set(ist(wed, 8, 45, 0));
    let next_day = nth_rung(&h, 4).await;
    assert_eq!(
        next_day["title"],
        "account main has no working Upstox token 30 min before the 09:00 IST renewal deadline"
    );
    assert!(
        next_day["message"]
            .as_str()
            .unwrap()
            .contains("failed since 2026-02-10 08:38 IST"),
        "{next_day}"
    );
    let_ladder_run(&h).await;
    assert_eq!(
        titles(&h.alerts().of_kind("no_working_token")).len(),
        4,
        "{:#?}",
        h.alerts().all()
    );
}

#[tokio::test]
async fn a_restarted_daemon_continues_the_ladder_instead_of_starting_over() {
    let tue = tuesday();
    let mut h = revoked_during_a_login_outage().await;
    h.clock.set(ist(tue, 8, 39, 0));
    nth_rung(&h, 1).await;

    h.clock.set(ist(tue, 8, 45, 0));
    h.restart(|_| {}).await;
    // The new daemon checks the token, finds it refused and fails to renew.
    h.wait_for_event("health_check", |e| {
        e.outcome == "invalid" && e.at >= ist(tue, 8, 45, 0)
    })
    .await;
    h.clock.set(ist(tue, 8, 47, 0));
    let_ladder_run(&h).await;
    assert_eq!(
        h.alerts().of_kind("no_working_token").len(),
        1,
        "the first alert is not repeated after the restart"
    );
    // The next rung comes on the original schedule, about the original failure.
    h.clock.set(ist(tue, 8, 53, 0));
    let second = nth_rung(&h, 2).await;
    assert_eq!(
        second["title"],
        "account main still has no working Upstox token (renewal failing since 08:38 IST)"
    );

    // Its recovery goes out too, although this process sent no rung before it.
    login_down(&h, false);
    h.clock.set(ist(tue, 8, 58, 0));
    h.alerts().wait_for("recovered", |_| true).await;
}

#[tokio::test]
async fn a_renewal_that_gives_up_alerts_at_once_without_waiting_for_the_minute() {
    let tue = tuesday();
    // No token and a TOTP seed that is not the user's: the only strategy stops at once.
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).wrong_totp().alerts()).await;
    let first = nth_rung(&h, 1).await;
    assert_eq!(at(&first), ist(tue, 10, 0, 0), "the clock never moved");
    assert_eq!(
        first["title"],
        "account main has no working Upstox token (renewal failing since 10:00 IST)"
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("Account main has no token"),
        "{first}"
    );
    h.alerts().wait_for("renewal_fatal", |_| true).await;
    h.let_daemon_run().await;
    // The ladder's alert is the one "log in" message, not one more beside it.
    assert!(h.alerts().of_kind("manual_action_needed").is_empty());
}

#[tokio::test]
async fn a_renewal_failure_while_the_token_still_works_opens_no_incident() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .token_issued_at(ist(tue, 9, 0, 0))
            .alerts(),
    )
    .await;
    login_down(&h, true);
    // `upkeep renew` while Upstox's login is down: the current token is fine.
    let engine = h.engine.clone();
    let renewal = tokio::spawn(async move { engine.renew(ACCOUNT, Actor::Cli).await });
    h.wait_for_event("renewal_started", |_| true).await;
    h.clock.set(ist(tue, 10, 5, 0));
    let_ladder_run(&h).await;
    h.clock.set(ist(tue, 10, 30, 0));
    let_ladder_run(&h).await;
    assert!(h.alerts().of_kind("no_working_token").is_empty());
    renewal.abort();
}

#[tokio::test]
async fn expiring_no_renewal_reports_a_token_the_health_check_found_refused() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::Static])
            .alerts()
            .settings(|s| s.health_interval = SignedDuration::from_mins(1)),
    )
    .await;
    let token = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Daily)
            .unwrap(),
    );
    h.engine
        .accept_token(ACCOUNT, token.clone(), "import", Actor::Cli, false)
        .await
        .unwrap();
    // A daily token on an account that cannot renew: warned about at once.
    let first = h.alerts().wait_for("expiring_no_renewal", |_| true).await;
    assert_eq!(
        first["title"],
        "account main: token expires 2026-02-11 03:30 IST, no automatic renewal"
    );

    // Upstox revokes it; the next health check finds it refused.
    assert!(h.sim.state().revoke(token.expose()));
    h.clock.advance(SignedDuration::from_mins(2));
    let refused = h
        .alerts()
        .wait_for("expiring_no_renewal", |a| a != &first)
        .await;
    assert_eq!(
        refused["title"],
        "account main: Upstox refused the token, no automatic renewal"
    );
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("revoked"), "{message}");
    assert!(message.contains("does not work now"), "{message}");
    assert!(
        !message.contains("(in "),
        "no time left is claimed for a refused token: {message}"
    );
    h.clock.advance(SignedDuration::from_mins(2));
    h.let_daemon_run().await;
    assert_eq!(h.alerts().of_kind("expiring_no_renewal").len(), 2);
}

#[tokio::test]
async fn reminders_to_approve_a_token_request_say_what_and_for_whom_not_a_bare_counter() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .alerts(),
    )
    .await;
    let first = h.alerts().wait_for("manual_action_needed", |_| true).await;
    assert_eq!(
        first["title"],
        "account main: approve the Upstox access-token request before 10:20 IST"
    );
    h.clock.set(ist(tue, 10, 15, 0));
    let second = h
        .alerts()
        .wait_for("manual_action_needed", |a| a != &first)
        .await;
    assert_eq!(
        second["title"],
        "account main: approve the Upstox access-token request before 10:20 IST (reminder 2)"
    );
}

#[tokio::test]
async fn a_store_that_cannot_lease_the_morning_renewal_starts_the_ladder_too() {
    let tue = tuesday();
    let mon = tue.yesterday().unwrap();
    let h = spawn_app(
        Setup::at(ist(tue, 5, 0, 0))
            .token_issued_at(ist(mon, 10, 0, 0))
            .alerts(),
    )
    .await;
    // The token died at 03:30; the database goes away before the 05:30 renewal.
    h.let_daemon_run().await;
    h.engine.store().close().await;
    h.clock.set(ist(tue, 5, 30, 0));
    let first = nth_rung(&h, 1).await;
    assert_eq!(
        first["title"],
        "account main has no working Upstox token (renewal failing since 05:30 IST)"
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("store unavailable"),
        "{first}"
    );
}
