//! The renewal engine end to end (issue 4): the daemon against the project's Upstox
//! simulator, both on loopback and on one movable clock, with a SQLite store in a temp
//! dir. Simulated hours pass by moving the clock, never by sleeping.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use jiff::civil::{Date, Weekday, date};
use jiff::{SignedDuration, Timestamp};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;
use upkeep_core::state::TokenState;
use upkeep_core::{AccessToken, Secret};
use upkeep_server::settings::StrategyKind;
use upkeep_server::{Actor, RenewOutcome};
use upkeep_sim::{FaultsPatch, Plan, TokenKind, UserConfig};
use upkeep_upstox::ErrorClass;
use url::Url;

use common::{
    ACCOUNT, Captured, Setup, TestApp, WRONG_TOTP_SECRET, browser, eventually, eventually_async,
    ist, notifier_body, spawn_app,
};

/// Thursday 2026-02-05.
fn thursday() -> Date {
    let d = date(2026, 2, 5);
    assert_eq!(d.weekday(), Weekday::Thursday);
    d
}

/// Tuesday 2026-02-10.
fn tuesday() -> Date {
    let d = date(2026, 2, 10);
    assert_eq!(d.weekday(), Weekday::Tuesday);
    d
}

fn next(d: Date) -> Date {
    d.tomorrow().unwrap()
}

fn query(url: &Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .expect("a redirect has a Location")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Moves the clock to each of `times` on `day` and checks that the daemon has still
/// logged in to Upstox exactly `logins` times.
async fn assert_no_login_at(h: &TestApp, logins: u64, day: Date, times: &[(i8, i8, i8)]) {
    for &(hh, mm, ss) in times {
        h.clock.set(ist(day, hh, mm, ss));
        h.let_daemon_run().await;
        assert_eq!(
            h.counters().logins,
            logins,
            "no login on {day} ({:?}) at {hh:02}:{mm:02}:{ss:02} IST",
            day.weekday()
        );
    }
}

#[tokio::test]
async fn a_daily_token_dies_at_0330_and_is_renewed_inside_the_morning_window() {
    let tue = tuesday();
    let wed = next(tue);
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0))).await;

    // No token yet: the daemon logs in at once.
    let (first, _) = h.wait_for_renewal(None).await;
    assert_eq!(first.source, "totp");
    assert_eq!(first.expires_at, ist(wed, 3, 30, 0));
    assert_eq!(h.counters().logins, 1);

    // 03:29:59: valid for the daemon and for Upstox.
    h.clock.set(ist(wed, 3, 29, 59));
    let current = h.current().unwrap();
    assert_eq!(current.fingerprint, first.fingerprint);
    assert!(current.is_valid_at(h.clock.now()));
    assert_ne!(h.engine.token_state(ACCOUNT), Some(TokenState::Expired));
    h.upstox
        .profile(&first.token)
        .await
        .expect("Upstox accepts the token at 03:29:59");

    // 03:30:00: dead for both.
    h.clock.set(ist(wed, 3, 30, 0));
    assert!(!h.current().unwrap().is_valid_at(h.clock.now()));
    assert_eq!(h.engine.token_state(ACCOUNT), Some(TokenState::Expired));
    let err = h.upstox.profile(&first.token).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::TokenInvalid);

    // Between the rollover and the window nothing happens.
    assert_no_login_at(
        &h,
        1,
        wed,
        &[(3, 30, 0), (4, 0, 0), (5, 0, 0), (5, 29, 0), (5, 29, 59)],
    )
    .await;
    let plan = h.engine.status(ACCOUNT).unwrap().next.unwrap();
    assert!(
        plan.at >= ist(wed, 5, 30, 0) && plan.at <= ist(wed, 9, 0, 0),
        "the renewal is planned inside the window: {plan:?}"
    );

    // The planned moment comes: renewed.
    h.clock.set(plan.at);
    let (renewed, succeeded) = h.wait_for_renewal(Some(&first.fingerprint)).await;
    assert_eq!(renewed.source, "totp");
    assert_eq!(renewed.expires_at, ist(next(wed), 3, 30, 0));
    let c = h.counters();
    assert_eq!((c.logins, c.token_exchanges), (2, 2));
    assert_eq!(succeeded.actor, "schedule");
    assert!(succeeded.at >= ist(wed, 5, 30, 0) && succeeded.at <= ist(wed, 9, 0, 0));
    let started: Vec<_> = h.events_of("renewal_started").await;
    assert_eq!(
        started.len(),
        2,
        "one renewal at startup, one in the window"
    );
    assert!(started[1].at >= ist(wed, 5, 30, 0), "never before 05:30");

    // Healthy again before the market opens at 09:15.
    h.clock.set(ist(wed, 9, 14, 59));
    assert!(h.current().unwrap().is_valid_at(h.clock.now()));
    assert_eq!(h.engine.token_state(ACCOUNT), Some(TokenState::Healthy));
    let profile = h.upstox.profile(&renewed.token).await.unwrap();
    assert_eq!(profile.user_id, h.creds.ucc);
}

#[tokio::test]
async fn a_health_check_answered_after_0330_does_not_start_a_renewal_before_the_window() {
    let tue = tuesday();
    let wed = next(tue);
    // Upstox answers slowly: the daemon's first health check, made at 03:29:59 with a
    // valid token, is answered after the rollover.
    let h = spawn_app(
        Setup::at(ist(wed, 3, 29, 59))
            .token_issued_at(ist(tue, 9, 0, 0))
            .latency_ms(1000),
    )
    .await;
    // The supervisor plans, then checks the token it found valid at 03:29:59; the
    // rollover comes while Upstox is still answering.
    eventually("the supervisor's first pass", || {
        h.engine.status(ACCOUNT).and_then(|s| s.next)
    })
    .await;
    h.clock.set(ist(wed, 3, 30, 0));
    eventually("the health check to see the token expired", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.last_check_problem.as_deref() == Some("expired"))
    })
    .await;
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            latency_ms: Some(0),
            ..FaultsPatch::default()
        })
        .unwrap();

    // Expiry is the plan's business: nothing until the window.
    assert_no_login_at(&h, 0, wed, &[(3, 30, 0), (4, 30, 0), (5, 29, 59)]).await;
    let plan = h.engine.status(ACCOUNT).unwrap().next.unwrap();
    assert!(plan.at >= ist(wed, 5, 30, 0), "{plan:?}");
    h.clock.set(plan.at);
    let (_, succeeded) = h
        .wait_for_renewal(Some(&h.seeded.as_ref().unwrap().fingerprint()))
        .await;
    assert_eq!(succeeded.actor, "schedule");
    assert_eq!(h.events_of("renewal_started").await.len(), 1);
}

#[tokio::test]
async fn no_renewal_on_weekend_or_holiday_mornings_and_one_on_the_next_trading_day() {
    let thu = thursday();
    let fri = next(thu);
    let (sat, sun, mon) = (next(fri), next(next(fri)), next(next(next(fri))));
    let tue = next(mon);
    // Weekdays and the config holidays only: the simulator's default calendar holds a
    // special session on Saturday 2026-02-07 (tests/calendar.rs covers the calendar).
    let h = spawn_app(
        Setup::at(ist(thu, 10, 0, 0))
            .settings(move |s| s.policy.holidays = vec![mon])
            .sim(|c| c.default_market_calendar = false),
    )
    .await;
    let (thursday_token, _) = h.wait_for_renewal(None).await;

    // Friday is a trading day: renewed in its window.
    assert_no_login_at(&h, 1, fri, &[(3, 30, 1), (5, 29, 59)]).await;
    let plan = h.engine.status(ACCOUNT).unwrap().next.unwrap();
    assert!(plan.at >= ist(fri, 5, 30, 0) && plan.at <= ist(fri, 9, 0, 0));
    h.clock.set(plan.at);
    let (friday_token, _) = h.wait_for_renewal(Some(&thursday_token.fingerprint)).await;
    assert_eq!(friday_token.expires_at, ist(sat, 3, 30, 0));
    assert_eq!(h.counters().logins, 2);

    // Saturday, Sunday and the Monday holiday: no login at all, whatever the hour.
    let day = [
        (3, 30, 1),
        (5, 30, 0),
        (5, 45, 0),
        (8, 59, 0),
        (9, 30, 0),
        (15, 0, 0),
    ];
    for d in [sat, sun, mon] {
        assert_no_login_at(&h, 2, d, &day).await;
        assert_eq!(
            h.current().unwrap().fingerprint,
            friday_token.fingerprint,
            "still Friday's (dead) token on {d}"
        );
    }
    let plan = h.engine.status(ACCOUNT).unwrap().next.unwrap();
    assert!(
        plan.at >= ist(tue, 5, 30, 0) && plan.at <= ist(tue, 9, 0, 0),
        "next renewal on Tuesday morning: {plan:?}"
    );

    // Tuesday: renewed in the window, not before.
    assert_no_login_at(&h, 2, tue, &[(3, 30, 1), (5, 29, 59)]).await;
    h.clock.set(plan.at);
    let (tuesday_token, _) = h.wait_for_renewal(Some(&friday_token.fingerprint)).await;
    assert_eq!(tuesday_token.expires_at, ist(next(tue), 3, 30, 0));
    assert_eq!(h.counters().logins, 3);
    let succeeded = h.events_of("renewal_succeeded").await;
    let days: Vec<Date> = succeeded
        .iter()
        .map(|e| upkeep_core::expiry::ist_date(e.at))
        .collect();
    assert_eq!(days, vec![thu, fri, tue]);
}

#[tokio::test]
async fn a_wrong_totp_secret_fails_once_without_retry_or_lockout_and_the_fixed_one_renews() {
    let tue = tuesday();
    let mut h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).wrong_totp().alerts()).await;

    // The startup renewal fails fatally and a human is told.
    let fatal = h.alerts().wait_for("renewal_fatal", |_| true).await;
    assert_eq!(fatal["account"], ACCOUNT);
    h.wait_for_event("strategy_failed", |e| {
        e.outcome == "fatal" && e.detail.starts_with("totp")
    })
    .await;
    assert_eq!(h.counters().failed_logins, 1);

    // Hours pass: the daemon does not try the wrong secret again.
    for _ in 0..3 {
        h.clock.advance(SignedDuration::from_hours(1));
        h.let_daemon_run().await;
    }
    let c = h.counters();
    assert_eq!(c.failed_logins, 1, "one attempt used, no automatic retry");
    assert_eq!(c.otp_requests, 1);
    assert_eq!(c.logins, 0);
    assert!(!h.sim.state().is_locked(&h.creds.ucc));
    assert!(h.current().is_none());
    assert_eq!(h.engine.status(ACCOUNT).unwrap().disabled, vec!["totp"]);

    // A crash loop: the daemon restarts with the same wrong seed, again and again. The
    // stored latch keeps the strategy off, so no restart spends a login attempt.
    for _ in 0..3 {
        h.restart(|_| {}).await;
        h.let_daemon_run().await;
        assert_eq!(h.engine.status(ACCOUNT).unwrap().disabled, vec!["totp"]);
    }
    assert_eq!(
        h.counters().failed_logins,
        1,
        "no attempt spent by a restart"
    );

    // The secret is fixed in the configuration; a new daemon on the same store renews.
    let right = h.creds.totp_secret.clone();
    h.restart(move |a| a.totp.as_mut().unwrap().secret = Secret::new(right))
        .await;
    let token = h.wait_for_new_token(None).await;
    assert_eq!(token.source, "totp");
    h.upstox.profile(&token.token).await.unwrap();
    let c = h.counters();
    assert_eq!((c.logins, c.failed_logins), (1, 1));
    assert!(!h.sim.state().is_locked(&h.creds.ucc), "never locked");
}

#[tokio::test]
async fn a_login_outage_until_0800_is_retried_with_backoff_and_renewed_before_0900() {
    let tue = tuesday();
    let mon = tue.yesterday().unwrap();
    let h = spawn_app(
        Setup::at(ist(tue, 5, 29, 0))
            .token_issued_at(ist(mon, 10, 0, 0))
            .settings(|s| {
                s.retry.first = SignedDuration::from_secs(20);
                s.retry.max = SignedDuration::from_mins(2);
                // The clock runs 3000x here: a 30 s lease would be 10 ms of real time,
                // shorter than the daemon's poll. Ten clock minutes is 0.2 s.
                s.lease_ttl = Duration::from_secs(600);
            }),
    )
    .await;
    let seeded = h.seeded.clone().unwrap();
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            login_down: Some(true),
            ..FaultsPatch::default()
        })
        .unwrap();

    // The login service comes back at 08:00; from then the clock runs slower, so a TOTP
    // code is still current when it reaches the simulator.
    let eight = ist(tue, 8, 0, 0);
    let (sim, clock) = (h.sim.state(), h.clock.clone());
    let healer = tokio::spawn(async move {
        loop {
            if clock.now() >= eight {
                clock.set_speed(60.0);
                // Read before the fault is cleared: no login can succeed earlier, however
                // late this task is scheduled afterwards on a loaded machine.
                let healed_at = clock.now();
                sim.patch_faults(FaultsPatch {
                    login_down: Some(false),
                    ..FaultsPatch::default()
                })
                .unwrap();
                return healed_at;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    h.clock.set_speed(3000.0);

    // Hours into the outage the renewal still holds the lease: no other upkeep process
    // sharing the store may start a second renewer.
    eventually("07:00 IST", || {
        (h.clock.now() >= ist(tue, 7, 0, 0)).then_some(())
    })
    .await;
    let taken = h
        .engine
        .store()
        .try_acquire_lease(
            ACCOUNT,
            "another-upkeep",
            h.clock.now(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(!taken, "the retrying renewal keeps its lease");

    let renewed = h.wait_for_new_token(Some(&seeded.fingerprint())).await;
    h.clock.set_speed(0.0);
    let healed_at = healer.await.unwrap();
    assert!(healed_at >= eight);

    assert_eq!(renewed.source, "totp");
    let succeeded = h.wait_for_event("renewal_succeeded", |_| true).await;
    assert!(
        succeeded.at >= healed_at && succeeded.at < ist(tue, 9, 0, 0),
        "renewed after the outage, before the deadline: {}",
        succeeded.at
    );
    let started = h.events_of("renewal_started").await;
    assert_eq!(started.len(), 1, "one renewal that retried inside");
    assert!(started[0].at >= ist(tue, 5, 30, 0));
    assert!(h.events_of("renewal_failed").await.is_empty());
    let c = h.counters();
    // 2.5 hours of outage (05:30-08:00), retried with backoff: 20 s doubling to a 2 min
    // cap, each wait jittered to between half and all of it. At least one attempt per
    // (2 min + one 60 s poll step of this 3000x clock) = 50, at most one per minimum
    // wait (1 min once capped) = 150, plus the first few short waits.
    assert!(
        (50..=160).contains(&c.injected_errors),
        "{} refused attempts",
        c.injected_errors
    );
    assert_eq!((c.logins, c.token_exchanges, c.failed_logins), (1, 1, 0));
}

#[tokio::test]
async fn when_totp_fails_a_token_request_approved_at_upstox_arrives_by_webhook_and_renews() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::Totp, StrategyKind::TokenRequest])
            .wrong_totp()
            .alerts(),
    )
    .await;
    let client_id = h.creds.client_id.clone();

    let pending = eventually("the access-token request at Upstox", || {
        h.sim
            .state()
            .pending_token_requests()
            .into_iter()
            .find(|p| p.client_id == client_id)
    })
    .await;
    assert_eq!(
        pending.notifier_url,
        format!("{}/webhooks/upstox/token", h.daemon_url)
    );
    let reminder = h
        .alerts()
        .wait_for("manual_action_needed", |a| a["link"].is_string())
        .await;
    assert_eq!(reminder["account"], ACCOUNT);

    // The user approves (the simulator's control API); Upstox calls the daemon's webhook.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/sim/token-requests/{client_id}/approve",
            h.sim_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let approval: Value = resp.json().await.unwrap();
    assert_eq!(approval["webhook_status"], 200);

    let token = h.wait_for_new_token(None).await;
    assert_eq!(token.source, "token_request");
    assert_eq!(
        token.token.expose(),
        approval["access_token"].as_str().unwrap()
    );
    h.wait_for_event("renewal_succeeded", |e| e.outcome == "token_request")
        .await;
    h.wait_for_event("strategy_failed", |e| e.detail.starts_with("totp"))
        .await;
    assert!(!h.alerts().of_kind("renewal_fatal").is_empty());
    let c = h.counters();
    assert_eq!(
        (c.token_requests, c.webhooks_delivered, c.failed_logins),
        (1, 1, 1)
    );
    assert!(!h.sim.state().is_locked(&h.creds.ucc));
}

#[tokio::test]
async fn when_nothing_works_the_login_link_alert_comes_in_time_and_the_callback_renews_once() {
    let tue = tuesday();
    let mon = tue.yesterday().unwrap();
    let h = spawn_app(
        Setup::at(ist(tue, 5, 20, 0))
            .strategies(&[
                StrategyKind::Totp,
                StrategyKind::TokenRequest,
                StrategyKind::Oauth,
            ])
            .token_issued_at(ist(mon, 10, 0, 0))
            .alerts()
            .settings(|s| s.approval_wait = SignedDuration::from_mins(10)),
    )
    .await;
    let seeded_fp = h.seeded.as_ref().unwrap().fingerprint();
    let client_id = h.creds.client_id.clone();
    // Headless logins are blocked for this user.
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            login_blocked: Some(true),
            ..FaultsPatch::default()
        })
        .unwrap();

    // The window opens: TOTP is refused, the token request is sent and the user says no.
    h.clock.set(ist(tue, 5, 30, 0));
    h.alerts().wait_for("renewal_fatal", |_| true).await;
    eventually("the access-token request at Upstox", || {
        h.sim
            .state()
            .pending_token_requests()
            .into_iter()
            .find(|p| p.client_id == client_id)
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/sim/token-requests/{client_id}/reject",
            h.sim_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The approval wait ends: the daemon asks a human to log in, well before 09:00.
    let asked_at = ist(tue, 5, 41, 0);
    h.clock.set(asked_at);
    let alert = h
        .alerts()
        .wait_for("manual_action_needed", |a| {
            a["at"].as_str().unwrap().parse::<Timestamp>().unwrap() >= asked_at
        })
        .await;
    let at: Timestamp = alert["at"].as_str().unwrap().parse().unwrap();
    assert!(at < ist(tue, 9, 0, 0));
    let link = Url::parse(alert["link"].as_str().expect("the alert has a link")).unwrap();
    assert!(
        link.as_str()
            .starts_with(&format!("{}/v2/login/authorization/dialog?", h.sim_url())),
        "{link}"
    );
    let state = query(&link, "state").expect("the link has a state");
    assert!(!state.is_empty());
    assert_eq!(query(&link, "client_id").unwrap(), client_id);
    let callback_base = format!("{}/auth/upstox/callback", h.daemon_url);
    assert_eq!(query(&link, "redirect_uri").unwrap(), callback_base);

    // A human follows it: dialog, the simulator's login page, back to the daemon.
    let browser = browser();
    let resp = browser.get(link.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let login_page = link.join(&location(&resp)).unwrap();
    assert_eq!(login_page.path(), "/sim/login");
    let resp = browser.get(login_page.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let code = upkeep_sim::totp::code_at(&h.creds.totp_secret, h.clock.now()).unwrap();
    let resp = browser
        .post(format!("{}/sim/login", h.sim_url()))
        .form(&[
            ("request_id", query(&login_page, "request_id").unwrap()),
            ("mobile", h.creds.mobile.clone()),
            ("totp", code),
            ("pin", h.creds.pin.clone()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "the simulator accepts the login");
    let callback = Url::parse(&location(&resp)).unwrap();
    assert!(callback.as_str().starts_with(&callback_base));
    assert_eq!(query(&callback, "state").unwrap(), state);
    let resp = browser.get(callback.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Logged in"));

    let renewed = h.wait_for_new_token(Some(&seeded_fp)).await;
    assert_eq!(renewed.source, "oauth");
    h.upstox.profile(&renewed.token).await.unwrap();
    h.wait_for_event("renewal_succeeded", |e| e.outcome == "oauth")
        .await;

    // The same state again is refused, and nothing changes.
    let exchanges = h.counters().token_exchanges;
    let resp = browser.get(callback).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("already used"));
    assert_eq!(h.current().unwrap().fingerprint, renewed.fingerprint);
    assert_eq!(h.counters().token_exchanges, exchanges);
    assert_eq!(h.counters().failed_logins, 0);
}

/// The process-wide metrics recorder (installed once for this test binary).
fn metrics() -> &'static PrometheusHandle {
    upkeep_server::api::install_metrics_recorder().expect("the daemon's recorder is the first")
}

/// The value of counter `name` with label `reason="..."`, 0 if never incremented.
fn rejected_count(reason: &str) -> u64 {
    let prefix = format!("upkeep_webhook_rejections_total{{reason=\"{reason}\"}} ");
    metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn forged_webhooks_are_refused_and_counted_and_a_genuine_one_is_accepted() {
    metrics();
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0)),
    )
    .await;
    let original = h.seeded.clone().unwrap();
    let sim = h.sim.state();
    let (ucc, client_id) = (h.creds.ucc.clone(), h.creds.client_id.clone());
    sim.add_user(UserConfig {
        ucc: "OTHER1".into(),
        name: "Someone Else".into(),
        email: "else@example.com".into(),
        mobile: "9000000001".into(),
        pin: "111111".into(),
        totp_secret: WRONG_TOTP_SECRET.into(),
        plan: Plan::Normal,
    })
    .unwrap();
    let now = h.clock.now();
    let others_token = sim.issue_token("OTHER1", TokenKind::Daily).unwrap();
    let genuine_elsewhere = sim.issue_token(&ucc, TokenKind::Daily).unwrap();
    let forged = upkeep_core::testing::daily_token(&ucc, now);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage JSON", br#"{"client_id": "#.to_vec(), "bad_payload"),
        (
            "another app's client_id",
            notifier_body("not-our-app", &ucc, &genuine_elsewhere, now)
                .to_string()
                .into_bytes(),
            "unknown_client",
        ),
        (
            "another user",
            notifier_body(&client_id, "OTHER1", &others_token, now)
                .to_string()
                .into_bytes(),
            "wrong_user",
        ),
        (
            "another user's token under our user id",
            notifier_body(&client_id, &ucc, &others_token, now)
                .to_string()
                .into_bytes(),
            "wrong_user",
        ),
        (
            "a well-formed JWT Upstox never signed",
            notifier_body(&client_id, &ucc, forged.expose(), now)
                .to_string()
                .into_bytes(),
            "rejected",
        ),
    ];
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/upstox/token", h.daemon_url);
    for (what, body, code) in cases {
        let before = rejected_count(code);
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{what}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains(forged.expose()) && !text.contains(&others_token));
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"]["code"], code, "{what}");
        assert!(
            rejected_count(code) > before,
            "{what}: counted under {code}"
        );
        assert_eq!(
            h.current().unwrap().fingerprint,
            original.fingerprint(),
            "{what}: token unchanged"
        );
    }
    let stored = h.engine.store().current_token(ACCOUNT).await.unwrap();
    assert_eq!(stored.unwrap().token.expose(), original.expose());
    let refused = h.events_of("token_rejected").await;
    assert_eq!(refused.len(), 1, "the forged token reached validation");
    assert_eq!(refused[0].actor, "webhook");
    assert!(!refused[0].detail.contains(forged.expose()));

    // The real thing: a token the simulator issued for this user and app.
    let genuine = AccessToken::new(sim.issue_token(&ucc, TokenKind::Daily).unwrap());
    let resp = http
        .post(&url)
        .json(&notifier_body(&client_id, &ucc, genuine.expose(), now))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["fingerprint"], genuine.fingerprint());
    let current = h.current().unwrap();
    assert_eq!(current.token.expose(), genuine.expose());
    assert_eq!(current.source, "token_request");
}

#[tokio::test]
async fn simultaneous_triggers_share_one_renewal_and_a_stale_401_changes_nothing() {
    let tue = tuesday();
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).token_issued_at(ist(tue, 9, 0, 0))).await;
    let old = h.current().unwrap();
    let before = h.counters();

    let (a, b, c) = tokio::join!(
        h.engine.renew(ACCOUNT, Actor::Cli),
        h.engine.renew(ACCOUNT, Actor::Api),
        h.engine.report_unauthorized(ACCOUNT, &old.fingerprint),
    );
    let RenewOutcome::Renewed {
        strategy,
        fingerprint,
    } = &a
    else {
        panic!("expected a renewal, got {a:?}");
    };
    assert_eq!(strategy, "totp");
    assert_eq!(b, a);
    assert_eq!(c, a);
    assert_ne!(fingerprint, &old.fingerprint);
    assert_eq!(&h.current().unwrap().fingerprint, fingerprint);
    let after = h.counters();
    assert_eq!(after.logins - before.logins, 1, "one login");
    assert_eq!(after.token_exchanges - before.token_exchanges, 1);
    assert_eq!(h.events_of("renewal_started").await.len(), 1);

    // A late 401 for the token that was already replaced.
    let stale = h
        .engine
        .report_unauthorized(ACCOUNT, &old.fingerprint)
        .await;
    assert_eq!(stale, RenewOutcome::AlreadyRotated);
    h.let_daemon_run().await;
    assert_eq!(h.counters().logins, after.logins);
    assert_eq!(&h.current().unwrap().fingerprint, fingerprint);
}

#[tokio::test]
async fn a_token_revoked_at_upstox_is_caught_by_the_health_check_and_renewed_early() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .token_issued_at(ist(tue, 9, 0, 0))
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
    assert_eq!(h.counters().logins, 0);

    assert!(h.sim.state().revoke(seeded.expose()));
    h.clock.advance(SignedDuration::from_mins(2));
    let renewed = h.wait_for_new_token(Some(&seeded.fingerprint())).await;

    let check = h
        .wait_for_event("health_check", |e| e.outcome == "invalid")
        .await;
    assert_eq!(
        check.detail,
        format!("revoked token fp={}", seeded.fingerprint())
    );
    let started = h.events_of("renewal_started").await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].actor, "health");
    assert!(
        started[0].at < ist(next(tue), 5, 30, 0),
        "renewed before the planned morning window"
    );
    h.upstox.profile(&renewed.token).await.unwrap();
    assert_eq!(h.counters().logins, 1);
}

#[tokio::test]
async fn shutdown_while_an_approval_is_awaited_returns_promptly_and_keeps_the_store_consistent() {
    let tue = tuesday();
    let mut h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0)),
    )
    .await;
    let seeded = h.seeded.clone().unwrap();
    let engine = h.engine.clone();
    let renewal = tokio::spawn(async move { engine.renew(ACCOUNT, Actor::Cli).await });
    let client_id = h.creds.client_id.clone();
    eventually("the access-token request at Upstox", || {
        h.sim
            .state()
            .pending_token_requests()
            .into_iter()
            .find(|p| p.client_id == client_id)
    })
    .await;
    eventually("the renewal waiting for approval", || {
        h.engine.status(ACCOUNT).filter(|s| s.renewing)
    })
    .await;
    // The request is recorded once Upstox has answered it: then upkeep is waiting.
    h.wait_for_event("token_request_sent", |_| true).await;

    // Well under the daemon's own 10 s limit for a supervisor to stop.
    tokio::time::timeout(Duration::from_secs(5), h.stop())
        .await
        .expect("run_until_stopped returns promptly")
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), renewal)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, RenewOutcome::Cancelled);

    let store = h.open_store().await;
    let current = store.current_token(ACCOUNT).await.unwrap().unwrap();
    assert_eq!(current.token.expose(), seeded.expose());
    assert_eq!(current.fingerprint, seeded.fingerprint());
    assert!(store.previous_token(ACCOUNT).await.unwrap().is_none());
    assert!(
        store
            .try_acquire_lease(
                ACCOUNT,
                "next-daemon",
                h.clock.now(),
                Duration::from_secs(60)
            )
            .await
            .unwrap(),
        "the renewal lease was released"
    );
    let kinds: Vec<String> = store
        .events(Some(ACCOUNT), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert!(kinds.contains(&"token_request_sent".to_owned()));
    assert!(!kinds.contains(&"token_stored".to_owned()));
    store.close().await;
}

// One thread: the subscriber below is the default of this thread, and every task of the
// test (simulator, daemon, alerts) runs on it.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_the_logs_during_renewals() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tue = tuesday();
    // A long PIN: a random 6-digit one could turn up in unrelated numbers.
    let mut h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::Totp, StrategyKind::TokenRequest])
            .pin("8273645190")
            .alerts(),
    )
    .await;
    // 1. Headless TOTP login at startup, 2. a forced one.
    let first = h.wait_for_new_token(None).await;
    let second = h.engine.renew(ACCOUNT, Actor::Cli).await;
    assert!(matches!(second, RenewOutcome::Renewed { .. }), "{second:?}");
    let second = h.current().unwrap();
    // 3. TOTP refused, token request approved, token delivered by the webhook.
    h.sim
        .state()
        .patch_faults(FaultsPatch {
            login_blocked: Some(true),
            ..FaultsPatch::default()
        })
        .unwrap();
    let engine = h.engine.clone();
    let third = tokio::spawn(async move { engine.renew(ACCOUNT, Actor::Cli).await });
    let client_id = h.creds.client_id.clone();
    eventually("the access-token request at Upstox", || {
        h.sim
            .state()
            .pending_token_requests()
            .into_iter()
            .find(|p| p.client_id == client_id)
    })
    .await;
    h.sim
        .state()
        .approve_token_request(&client_id)
        .await
        .unwrap();
    let outcome = third.await.unwrap();
    assert!(
        matches!(&outcome, RenewOutcome::Renewed { strategy, .. } if strategy == "token_request"),
        "{outcome:?}"
    );
    let third = h.current().unwrap();
    // 4. A health check with the new token, then shutdown.
    h.clock.advance(SignedDuration::from_hours(1));
    eventually("a health check", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.api_validated == Some(true))
    })
    .await;
    h.stop().await.unwrap();

    let logs = captured.text();
    assert!(
        logs.contains("new token is current") && logs.contains(&third.fingerprint),
        "the capture works and tokens are logged by fingerprint"
    );
    let pin_b64 = base64::engine::general_purpose::STANDARD.encode(h.creds.pin.as_bytes());
    let secrets = [
        ("first access token", first.token.expose().to_owned()),
        ("second access token", second.token.expose().to_owned()),
        ("third access token", third.token.expose().to_owned()),
        ("client secret", h.creds.client_secret.clone()),
        ("PIN", h.creds.pin.clone()),
        ("PIN (base64)", pin_b64),
        ("TOTP secret", h.creds.totp_secret.clone()),
    ];
    // Nor in the audit log or the alerts.
    let store = h.open_store().await;
    let audit: String = store
        .events(Some(ACCOUNT), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| format!("{} {} {} {}\n", e.actor, e.kind, e.outcome, e.detail))
        .collect();
    store.close().await;
    assert!(audit.contains(&third.fingerprint));
    let alerts: String = h.alerts().all().iter().map(Value::to_string).collect();
    assert!(alerts.contains("renewal_fatal"));
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "the {what} appears in the logs");
        assert!(
            !audit.contains(&secret),
            "the {what} appears in the audit log"
        );
        assert!(!alerts.contains(&secret), "the {what} appears in an alert");
    }
}

#[tokio::test]
async fn a_token_stored_by_another_process_is_adopted_instead_of_logging_in_again() {
    // The token died at 03:30; before the window opens a human imports a fresh one with
    // `upkeep token set` (another process, same store). At 05:30 the daemon uses it.
    let tue = tuesday();
    let mon = tue.yesterday().unwrap();
    let h = spawn_app(Setup::at(ist(tue, 4, 0, 0)).token_issued_at(ist(mon, 10, 0, 0))).await;
    let seeded = h.seeded.clone().unwrap();
    let fresh = h
        .sim
        .state()
        .issue_token(&h.creds.ucc, TokenKind::Daily)
        .unwrap();
    let fresh = AccessToken::new(fresh);
    let info = upkeep_core::expiry::inspect(&fresh).unwrap();
    let other_process = h.open_store().await;
    other_process
        .put_token(
            ACCOUNT,
            upkeep_store::NewToken {
                token: fresh.clone(),
                issued_at: info.issued_at,
                expires_at: info.expires_at,
                kind: "daily".into(),
                source: "import".into(),
            },
            h.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(h.current().unwrap().fingerprint, seeded.fingerprint());

    h.clock.set(ist(tue, 5, 30, 0));
    let adopted = h.wait_for_new_token(Some(&seeded.fingerprint())).await;
    assert_eq!(adopted.fingerprint, fresh.fingerprint());
    assert_eq!(adopted.source, "import");
    h.let_daemon_run().await;
    assert_eq!(
        h.counters().logins,
        0,
        "no login: the imported token was used"
    );
    assert!(h.events_of("renewal_started").await.is_empty());
}

#[tokio::test]
async fn an_extended_token_is_health_checked_with_a_quote_not_the_profile() {
    // Extended tokens may not read the profile (UDAPI100067); a quote call proves them.
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::Static])
            .settings(|s| s.health_interval = SignedDuration::from_mins(1)),
    )
    .await;
    let extended = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Extended)
            .unwrap(),
    );
    h.engine
        .accept_token(ACCOUNT, extended.clone(), "import", Actor::Cli, false)
        .await
        .unwrap();
    h.clock.advance(SignedDuration::from_mins(2));
    let status = eventually("a health check of the extended token", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.last_check.is_some_and(|t| t >= ist(tue, 10, 1, 0)))
    })
    .await;
    assert_eq!(status.api_validated, Some(true), "{status:?}");
    assert_eq!(h.counters().logins, 0);
}

#[tokio::test]
async fn an_expiring_token_that_cannot_be_renewed_is_warned_about_once_a_day_not_in_a_loop() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::Static])
            .alerts(),
    )
    .await;
    let sandbox = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Sandbox)
            .unwrap(),
    );
    h.engine
        .accept_token(ACCOUNT, sandbox, "import", Actor::Cli, false)
        .await
        .unwrap();
    // 28 days on: inside the 3-day warning period of the 30-day token.
    h.clock.advance(SignedDuration::from_hours(28 * 24));
    h.alerts().wait_for("expiring_no_renewal", |_| true).await;
    // Hours pass (each beyond the alerter's own 30-minute de-duplication): no repeats.
    for _ in 0..5 {
        h.clock.advance(SignedDuration::from_hours(1));
        h.let_daemon_run().await;
    }
    assert_eq!(h.alerts().of_kind("expiring_no_renewal").len(), 1);
    // A day later, one reminder.
    h.clock.advance(SignedDuration::from_hours(20));
    eventually("the daily reminder", || {
        (h.alerts().of_kind("expiring_no_renewal").len() == 2).then_some(())
    })
    .await;
    h.let_daemon_run().await;
    assert_eq!(h.alerts().of_kind("expiring_no_renewal").len(), 2);
}

#[tokio::test]
async fn a_lease_left_by_a_killed_renewer_is_taken_over_at_once_and_the_revoked_token_renewed() {
    let tue = tuesday();
    let mut h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).token_issued_at(ist(tue, 9, 0, 0))).await;
    let seeded = h.seeded.clone().unwrap();
    h.stop().await.unwrap();

    // A daemon of this host killed with -9 in the middle of a renewal: its lease (ten
    // minutes, as leases were) stays in the store, and its process is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let dead_holder = format!("{}/{dead_pid}/4242/deadbeef", host.trim());
    let store = h.open_store().await;
    assert!(
        store
            .try_acquire_lease(
                ACCOUNT,
                &dead_holder,
                h.clock.now(),
                Duration::from_secs(600)
            )
            .await
            .unwrap()
    );
    store.close().await;
    // Meanwhile Upstox revoked the token.
    assert!(h.sim.state().revoke(seeded.expose()));

    // The restarted daemon's first health check finds the token refused and renews at
    // once: the dead holder's lease does not hold it up (the clock does not move).
    h.restart(|_| {}).await;
    let renewed = h.wait_for_new_token(Some(&seeded.fingerprint())).await;
    assert_eq!(renewed.source, "totp");
    assert_eq!(h.clock.now(), ist(tue, 10, 0, 0));
    let started = h.wait_for_event("renewal_started", |_| true).await;
    assert_eq!(started.actor, "health");
    // And it gave the lease up when done.
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

#[tokio::test]
async fn a_latch_cleared_by_another_process_re_enables_the_strategy_in_the_running_daemon() {
    let tue = tuesday();
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).wrong_totp()).await;
    h.wait_for_event("strategy_failed", |e| e.outcome == "fatal")
        .await;
    h.let_daemon_run().await;
    assert_eq!(h.counters().failed_logins, 1);
    // `upkeep accounts reset-strategy` (another process) deletes the stored latch.
    let store = h.open_store().await;
    assert!(
        store
            .delete_secret(
                ACCOUNT,
                &upkeep_server::engine::latch_name(StrategyKind::Totp)
            )
            .await
            .unwrap()
    );
    store.close().await;
    // The daemon notices and tries again (with the still wrong seed: a human reset
    // it without fixing it, and that one attempt is what they asked for).
    eventually("the second attempt", || {
        (h.counters().failed_logins == 2).then_some(())
    })
    .await;
    h.let_daemon_run().await;
    assert_eq!(h.counters().failed_logins, 2, "then disabled again");
}

#[tokio::test]
async fn a_refusal_that_is_not_the_credentials_fails_the_attempt_without_disabling_the_strategy() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::RefreshToken])
            .unknown_user(),
    )
    .await;
    // No refresh token configured for this harness account: not applicable, not a fault.
    let outcome = h.engine.renew(ACCOUNT, Actor::Cli).await;
    assert!(
        matches!(outcome, RenewOutcome::Failed { .. }),
        "{outcome:?}"
    );
    assert!(h.engine.status(ACCOUNT).unwrap().disabled.is_empty());
}

#[tokio::test]
async fn a_reload_with_the_fixed_totp_secret_re_enables_the_strategy_and_renews_without_a_restart()
{
    let tue = tuesday();
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0)).wrong_totp().alerts()).await;
    h.alerts().wait_for("renewal_fatal", |_| true).await;
    eventually("totp stopped", || {
        (h.engine.status(ACCOUNT).unwrap().disabled == ["totp"]).then_some(())
    })
    .await;
    h.let_daemon_run().await;
    assert!(h.current().is_none());

    // The operator fixes the secret in the file and reloads: same daemon, same engine.
    let mut fixed = (*h.engine.settings()).clone();
    fixed.accounts[0].totp.as_mut().unwrap().secret = Secret::new(h.creds.totp_secret.clone());
    let summary = h
        .engine
        .apply_settings(fixed, h.engine.alerter())
        .await
        .unwrap();
    assert_eq!(summary.changed, [ACCOUNT]);
    assert!(summary.added.is_empty() && summary.removed.is_empty());
    let token = h.wait_for_new_token(None).await;
    assert_eq!(token.source, "totp");
    assert!(h.engine.status(ACCOUNT).unwrap().disabled.is_empty());
    let c = h.counters();
    assert_eq!((c.logins, c.failed_logins), (1, 1));
}

#[tokio::test]
async fn a_reload_supervises_an_added_account_and_stops_a_removed_one() {
    let tue = tuesday();
    let h = spawn_app(Setup::at(ist(tue, 10, 0, 0))).await;
    let first = h.wait_for_new_token(None).await;
    let mut more = (*h.engine.settings()).clone();
    let mut second = more.accounts[0].clone();
    second.id = "second".into();
    more.accounts.push(second);
    let summary = h.engine.apply_settings(more.clone(), None).await.unwrap();
    assert_eq!(summary.added, ["second"]);
    assert_eq!(h.engine.account_ids(), [ACCOUNT, "second"]);
    // Its supervisor runs: it renews the missing token at once.
    eventually("the added account's token", || h.engine.current("second")).await;
    assert!(h.engine.status("second").unwrap().supervisor_alive);

    more.accounts.pop();
    let summary = h.engine.apply_settings(more, None).await.unwrap();
    assert_eq!(summary.removed, ["second"]);
    assert_eq!(h.engine.account_ids(), [ACCOUNT]);
    assert!(h.engine.status("second").is_none());
    // The first account was not touched.
    assert_eq!(h.current().unwrap().fingerprint, first.fingerprint);
}
