//! The notifier webhook, the one door anyone can knock on: whose tokens it takes, what a
//! flood of forgeries can and cannot do, and what the logs say about it. Upstox is the
//! project's simulator; the daemon runs on loopback.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use jiff::civil::{Date, Weekday, date};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use upkeep_core::AccessToken;
use upkeep_server::settings::StrategyKind;
use upkeep_server::{Actor, RenewOutcome};
use upkeep_sim::{Plan, TokenKind, UserConfig};

use common::{
    ACCOUNT, Captured, Setup, TestApp, WRONG_TOTP_SECRET, eventually, ist, notifier_body, spawn_app,
};

fn tuesday() -> Date {
    let mut d = date(2026, 12, 1);
    while d.weekday() != Weekday::Tuesday {
        d = d.tomorrow().unwrap();
    }
    d
}

/// A second Upstox user in the simulator, with a valid daily token of their own.
fn stranger_with_token(h: &TestApp) -> String {
    let sim = h.sim.state();
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
    sim.issue_token("OTHER1", TokenKind::Daily).unwrap()
}

async fn post(h: &TestApp, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/upstox/token", h.daemon_url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_strangers_token_is_not_planted_in_an_account_whose_user_nothing_has_proven() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .unknown_user()
            .alerts(),
    )
    .await;
    let client_id = h.creds.client_id.clone();
    let others = stranger_with_token(&h);
    let now = h.clock.now();

    let (status, answer) = post(&h, &notifier_body(&client_id, "OTHER1", &others, now)).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "user_unknown");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user_id"),
        "the error names the config key: {answer}"
    );
    // Not even the owner's own token is trusted by webhook alone.
    let owners = h
        .sim
        .state()
        .issue_token(&h.creds.ucc, TokenKind::Daily)
        .unwrap();
    let (status, answer) = post(&h, &notifier_body(&client_id, &h.creds.ucc, &owners, now)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("user_unknown"))
    );

    assert!(h.current().is_none(), "nothing became current");
    let stored = h.engine.store().current_token(ACCOUNT).await.unwrap();
    assert!(stored.is_none(), "nothing was stored");
    assert_eq!(h.engine.known_user(ACCOUNT), None);
}

#[tokio::test]
async fn once_a_totp_login_proves_the_user_a_strangers_token_is_refused_with_an_alert_even_after_a_restart()
 {
    let tue = tuesday();
    let mut h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::Totp, StrategyKind::TokenRequest])
            .unknown_user()
            .alerts(),
    )
    .await;
    // No token: the daemon logs in with the account's own credentials at once.
    let first = h.wait_for_new_token(None).await;
    assert_eq!(first.source, "totp");
    assert_eq!(
        h.engine.known_user(ACCOUNT).as_deref(),
        Some(h.creds.ucc.as_str())
    );

    let client_id = h.creds.client_id.clone();
    let others = stranger_with_token(&h);
    let now = h.clock.now();
    let (status, answer) = post(&h, &notifier_body(&client_id, "OTHER1", &others, now)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("wrong_user"))
    );
    let knock = h.alerts().wait_for("webhook_intrusion", |_| true).await;
    assert_eq!(knock["account"], ACCOUNT);
    assert!(
        !knock.to_string().contains(&others),
        "the alert carries no token"
    );
    assert_eq!(h.current().unwrap().fingerprint, first.fingerprint);

    // The known user survives a restart (it is kept, sealed, in the store).
    h.restart(|_| {}).await;
    assert_eq!(
        h.engine.known_user(ACCOUNT).as_deref(),
        Some(h.creds.ucc.as_str())
    );
    let (status, answer) = post(&h, &notifier_body(&client_id, "OTHER1", &others, now)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("wrong_user"))
    );

    // The owner's next token, delivered by Upstox, is taken.
    h.clock.advance(SignedDuration::from_mins(1));
    let owners = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Daily)
            .unwrap(),
    );
    let (status, answer) = post(
        &h,
        &notifier_body(&client_id, &h.creds.ucc, owners.expose(), h.clock.now()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["fingerprint"], owners.fingerprint());
    assert_eq!(h.current().unwrap().fingerprint, owners.fingerprint());
}

#[tokio::test]
async fn forgeries_posted_first_never_crowd_out_the_real_delivery() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0))
            .settings(|s| {
                // The default budget (12 checks, then one per 5 s) with time shrunk so
                // the test does not wait minutes; the order of events is the same.
                s.webhook.check_every = Duration::from_millis(100);
                s.webhook.answer_within = Duration::from_secs(1);
            }),
    )
    .await;
    let (ucc, client_id) = (h.creds.ucc.clone(), h.creds.client_id.clone());
    let engine = h.engine.clone();
    let renewal = tokio::spawn(async move { engine.renew(ACCOUNT, Actor::Api).await });
    eventually("the access-token request at Upstox", || {
        h.sim
            .state()
            .pending_token_requests()
            .into_iter()
            .find(|p| p.client_id == client_id)
    })
    .await;

    // 40 forgeries of every kind, most of them plausible enough to pass the cheap
    // checks (a well-formed JWT for the right user and app, not expired, fresh).
    let now = h.clock.now();
    let others = stranger_with_token(&h);
    let mut bodies = vec![
        serde_json::json!({"client_id": client_id}),
        notifier_body("not-our-app", &ucc, &others, now),
        notifier_body(&client_id, "OTHER1", &others, now),
        notifier_body(&client_id, &ucc, &others, now),
        notifier_body(
            &client_id,
            &ucc,
            upkeep_core::testing::daily_token(&ucc, now - SignedDuration::from_hours(30)).expose(),
            now,
        ),
    ];
    for i in 0..35 {
        let at = now + SignedDuration::from_secs(i);
        let forged = upkeep_core::testing::daily_token(&ucc, at);
        bodies.push(notifier_body(&client_id, &ucc, forged.expose(), at));
    }
    assert_eq!(bodies.len(), 40);
    let posts: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let url = format!("{}/webhooks/upstox/token", h.daemon_url);
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .json(&b)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for p in posts {
        let status = p.await.unwrap();
        assert!(matches!(status, 400 | 202 | 503), "a forgery got {status}");
    }

    // The user approves: Upstox delivers the real token once, without retry.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/sim/token-requests/{}/approve",
            h.sim_url(),
            h.creds.client_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let approval: Value = resp.json().await.unwrap();
    assert_eq!(
        approval["webhook_status"], 200,
        "the real delivery was taken: {approval}"
    );
    let real = approval["access_token"].as_str().unwrap().to_owned();
    let outcome = renewal.await.unwrap();
    assert!(
        matches!(outcome, RenewOutcome::Renewed { .. }),
        "{outcome:?}"
    );
    assert_eq!(h.current().unwrap().token.expose(), real);
    assert_eq!(h.current().unwrap().source, "token_request");
}

#[tokio::test]
async fn a_replayed_older_token_does_not_replace_the_newer_current_one() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0)),
    )
    .await;
    let client_id = h.creds.client_id.clone();
    let sim = h.sim.state();
    h.clock.set(ist(tue, 9, 30, 0));
    let older = sim.issue_token(&h.creds.ucc, TokenKind::Daily).unwrap();
    h.clock.set(ist(tue, 10, 0, 0));
    let newer = AccessToken::new(sim.issue_token(&h.creds.ucc, TokenKind::Daily).unwrap());
    let now = h.clock.now();
    let (status, _) = post(
        &h,
        &notifier_body(&client_id, &h.creds.ucc, newer.expose(), now),
    )
    .await;
    assert_eq!(status, 200);
    // The 09:30 token comes again (a replay, or a late duplicate): refused as stale.
    let (status, answer) = post(&h, &notifier_body(&client_id, &h.creds.ucc, &older, now)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("stale")),
        "{answer}"
    );
    assert_eq!(h.current().unwrap().fingerprint, newer.fingerprint());
    // The current token delivered again is simply confirmed.
    let (status, answer) = post(
        &h,
        &notifier_body(&client_id, &h.creds.ucc, newer.expose(), now),
    )
    .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
}

// One thread: the subscriber is this thread's default, and every task runs on it.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_rejected_posts_is_logged_as_one_summary_per_interval_not_a_line_each() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0))
            .settings(|s| s.webhook.summary_every = Duration::from_millis(400)),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/upstox/token", h.daemon_url);
    let now: Timestamp = h.clock.now();
    for i in 0..300 {
        let body = if i % 3 == 0 {
            notifier_body("not-our-app", &h.creds.ucc, "x.y.z", now).to_string()
        } else {
            "{garbage".to_owned()
        };
        let resp = client.post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400);
    }
    let log = || captured.text();
    // Summaries every 400 ms while the flood lasts: their counts add up to every post.
    let count = |reason: &str| -> u64 {
        log()
            .lines()
            .filter(|l| l.contains("deliveries rejected"))
            .filter_map(|l| {
                let at = l
                    .find(&format!("({reason}="))
                    .or_else(|| l.find(&format!(" {reason}=")))?;
                let rest = &l[at + reason.len() + 2..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    eventually("summaries counting every rejection", || {
        (count("bad_payload") == 200 && count("unknown_client") == 100).then_some(())
    })
    .await;
    let lines = log().lines().filter(|l| l.contains("webhook")).count();
    assert!(
        lines <= 10,
        "{lines} log lines for 300 rejected posts:\n{}",
        log()
    );
}

#[tokio::test]
async fn a_delivery_that_cannot_be_checked_during_an_upstox_blip_is_checked_again_and_taken() {
    let tue = tuesday();
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .strategies(&[StrategyKind::TokenRequest])
            .token_issued_at(ist(tue, 9, 0, 0))
            .settings(|s| s.webhook.answer_within = Duration::from_secs(30)),
    )
    .await;
    h.clock.advance(SignedDuration::from_mins(1));
    let fresh = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Daily)
            .unwrap(),
    );
    // Upstox answers 500 to everything for a moment.
    h.sim
        .state()
        .patch_faults(upkeep_sim::FaultsPatch {
            error_rate: Some(1.0),
            ..upkeep_sim::FaultsPatch::default()
        })
        .unwrap();
    let body = notifier_body(
        &h.creds.client_id,
        &h.creds.ucc,
        fresh.expose(),
        h.clock.now(),
    );
    let url = format!("{}/webhooks/upstox/token", h.daemon_url);
    let delivery = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    });
    eventually("the profile check failing", || {
        (h.counters().injected_errors >= 3).then_some(())
    })
    .await;
    h.sim
        .state()
        .patch_faults(upkeep_sim::FaultsPatch {
            error_rate: Some(0.0),
            ..upkeep_sim::FaultsPatch::default()
        })
        .unwrap();
    // Not a rejection: checked again once Upstox answers, and taken.
    let (status, answer) = delivery.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(h.current().unwrap().fingerprint, fresh.fingerprint());
}
