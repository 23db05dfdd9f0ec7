//! The gateway's shared rate budget and cached fallback through a running daemon,
//! against the simulator: a burst never earns an upstream 429, excess calls get
//! upkeep's 429 with `Retry-After`, two bots behind one user share its limits, an
//! upstream 429 holds the whole user back, a failing Upstox gets the last good LTP
//! answer marked stale, and a too-old one a 503.
//!
//! Real time is used only where the simulator must count a second passing (the burst);
//! the assertions there are counts, never durations.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use jiff::SignedDuration;
use jiff::civil::date;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use upkeep_sim::FaultsPatch;
use upkeep_upstox::ApiGroup;
use upkeep_upstox::RateLimits;

use common::{Setup, TestApp, eventually_async, ist, spawn_app};

const BOT: &str = "upk_budget_bot_one_key_for_tests_0000000000";
const BOT2: &str = "upk_budget_bot_two_key_for_tests_0000000000";
const STATUS: &str = "upk_budget_status_key_for_tests_00000000000";

const LTP: &str = "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016";

fn setup() -> Setup {
    let day = date(2026, 12, 1);
    Setup::at(ist(day, 10, 0, 0)).token_issued_at(ist(day, 9, 0, 0))
}

async fn app_with(setup: Setup) -> TestApp {
    let h = spawn_app(setup).await;
    h.first_health_check_done().await;
    for (name, key, scope) in [
        ("bot", BOT, "token:read"),
        ("bot2", BOT2, "token:read"),
        ("grafana", STATUS, "status:read"),
    ] {
        h.engine
            .store()
            .create_api_key(
                name,
                &Sha256::digest(key.as_bytes()).into(),
                scope,
                h.clock.now(),
            )
            .await
            .unwrap();
    }
    for key in [BOT, BOT2, STATUS] {
        eventually_async("the keys loaded", || async {
            let r = reqwest::Client::new()
                .get(format!("{}/api/v1/accounts", h.daemon_url))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            (r.status() == StatusCode::OK).then_some(())
        })
        .await;
    }
    h
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn get(client: &reqwest::Client, h: &TestApp, path: &str, key: &str) -> Answer {
    let resp = client
        .get(format!("{}/upstox{path}", h.daemon_url))
        .bearer_auth(key)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// The value of an unlabelled metric (or one with exactly `labels`) in `/metrics`.
async fn metric(h: &TestApp, name_and_labels: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", h.daemon_url))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name_and_labels} ")))
        .unwrap_or_else(|| panic!("no {name_and_labels} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn is_upkeeps_429(a: &Answer) -> bool {
    a.status == StatusCode::TOO_MANY_REQUESTS
        && a.header("x-upkeep-error") == Some("rate_budget")
        && a.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
        && a.body["errors"][0]["errorCode"] == "UPKEEP_RATE_BUDGET"
}

#[tokio::test]
async fn three_hundred_concurrent_ltp_calls_never_earn_an_upstream_429_and_the_excess_get_429() {
    const QUEUE_MAX: usize = 32;
    let h = app_with(setup().sim(|c| c.rate_limits = true).settings(|s| {
        let b = &mut s.gateway.budget;
        b.queue_max = QUEUE_MAX;
        b.queue_wait = Duration::from_millis(1500);
    }))
    .await;
    // The simulator counts its windows on its clock: let it run with real time.
    h.clock.set_speed(1.0);
    let before = h.counters();
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let (client, url) = (client.clone(), h.daemon_url.clone());
            tokio::spawn(async move {
                let resp = client
                    .get(format!("{url}/upstox{LTP}"))
                    .bearer_auth(BOT)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap();
                Answer {
                    status,
                    headers,
                    body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                }
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        let a = c.await.unwrap();
        if a.status == StatusCode::OK {
            ok += 1;
        } else {
            assert!(
                is_upkeeps_429(&a),
                "{} {:?} {}",
                a.status,
                a.headers,
                a.body
            );
            refused += 1;
        }
    }
    let after = h.counters();
    assert_eq!(after.rate_limited, before.rate_limited, "no upstream 429");
    assert_eq!(ok + refused, 300);
    assert!(ok >= 50, "a full second's budget went through: {ok}");
    assert!(
        refused >= 1,
        "the excess was refused, not queued without end"
    );
    assert_eq!(after.api_requests - before.api_requests, ok as u64);
    assert!(metric(&h, "upkeep_gateway_budget_queued_total").await >= 1);
    let peak = metric(&h, "upkeep_gateway_budget_waiting_peak").await;
    assert!(
        (1..=QUEUE_MAX as u64).contains(&peak),
        "the line is bounded: {peak}"
    );
    assert_eq!(metric(&h, "upkeep_gateway_budget_waiting").await, 0);
}

#[tokio::test]
async fn two_bots_behind_one_user_share_its_budget() {
    let h = app_with(setup().settings(|s| {
        let b = &mut s.gateway.budget;
        b.queue_max = 0;
        b.queue_wait = Duration::ZERO;
        // Five a minute: wide enough that no window passes during the test.
        *b = b
            .clone()
            .with_limits(ApiGroup::Standard, RateLimits::new(None, Some(5), None));
    }))
    .await;
    let client = reqwest::Client::new();
    for key in [BOT, BOT2, BOT, BOT2, BOT] {
        assert_eq!(get(&client, &h, LTP, key).await.status, StatusCode::OK);
    }
    for key in [BOT2, BOT] {
        let a = get(&client, &h, LTP, key).await;
        assert!(is_upkeeps_429(&a), "{} {}", a.status, a.body);
    }
    assert_eq!(
        get(&client, &h, "/v2/user/profile", BOT2).await.status,
        StatusCode::OK,
        "another API has its own limits"
    );
}

#[tokio::test]
async fn an_upstream_429_holds_back_every_call_of_the_user() {
    let h = app_with(
        setup()
            // A frozen simulator clock: once its window is full it stays full.
            .sim(|c| c.rate_limits = true)
            .settings(|s| {
                let b = &mut s.gateway.budget;
                b.queue_max = 0;
                b.queue_wait = Duration::ZERO;
                b.default_backoff = Duration::from_secs(60);
                // A budget looser than Upstox's, so Upstox is the one to refuse.
                *b = b
                    .clone()
                    .with_limits(ApiGroup::Standard, RateLimits::new(None, None, None));
            }),
    )
    .await;
    let client = reqwest::Client::new();
    let mut upstream_429 = None;
    for _ in 0..60 {
        let a = get(&client, &h, LTP, BOT).await;
        if a.status != StatusCode::OK {
            upstream_429 = Some(a);
            break;
        }
    }
    let a = upstream_429.expect("the simulator refused within 60 calls");
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        a.body["errors"][0]["errorCode"], "UDAPI10005",
        "Upstox's own"
    );
    assert_eq!(h.counters().rate_limited, 1);

    for (path, key) in [(LTP, BOT), (LTP, BOT2), ("/v2/user/profile", BOT2)] {
        let a = get(&client, &h, path, key).await;
        assert!(is_upkeeps_429(&a), "{path}: {} {}", a.status, a.body);
        assert!(a.header("retry-after").unwrap().parse::<u64>().unwrap() <= 60);
    }
    assert_eq!(h.counters().rate_limited, 1, "nothing more reached Upstox");
    assert_eq!(metric(&h, "upkeep_gateway_upstream_429_total").await, 1);
}

#[tokio::test]
async fn a_failing_upstox_gets_the_last_good_ltp_marked_stale_until_it_is_too_old() {
    let h = app_with(setup().settings(|s| {
        s.gateway.cache.max_age = SignedDuration::from_mins(10);
    }))
    .await;
    let client = reqwest::Client::new();
    let good = get(&client, &h, LTP, BOT).await;
    assert_eq!(good.status, StatusCode::OK);
    assert_eq!(good.header("x-upkeep-stale"), None);

    h.sim
        .state()
        .patch_faults(FaultsPatch {
            error_rate: Some(1.0),
            ..FaultsPatch::default()
        })
        .unwrap();
    h.clock.advance(SignedDuration::from_secs(42));
    // The same query, its parameters spelled another way.
    let stale = get(
        &client,
        &h,
        "/v3/market-quote/ltp?instrument_key=NSE_EQ|INE848E01016",
        BOT,
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, good.body);
    assert_eq!(stale.header("x-upkeep-stale"), Some("42"));
    assert_eq!(stale.header("warning"), Some("110 - \"Response is Stale\""));
    assert_eq!(
        metric(&h, "upkeep_gateway_stale_served_total").await,
        1,
        "counted"
    );

    let uncached = get(&client, &h, "/v2/user/profile", BOT).await;
    assert_eq!(
        uncached.header("x-upkeep-stale"),
        None,
        "profile is not cached"
    );
    assert!(uncached.status.is_server_error());

    h.clock.advance(SignedDuration::from_secs(600));
    let too_old = get(&client, &h, LTP, BOT).await;
    assert_eq!(too_old.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        too_old.body["errors"][0]["errorCode"],
        "UPKEEP_UPSTREAM_UNAVAILABLE"
    );
    let message = too_old.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("642 s old") && message.contains("600 s"),
        "{message}"
    );
}

#[tokio::test]
async fn a_disabled_budget_lets_upstox_answer_for_itself() {
    let h = app_with(
        setup()
            // A frozen simulator clock: its window fills and stays full.
            .sim(|c| c.rate_limits = true)
            .settings(|s| s.gateway.budget.enabled = false),
    )
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..55 {
        let a = get(&client, &h, LTP, BOT).await;
        assert_eq!(a.header("x-upkeep-error"), None, "never upkeep's 429");
        statuses.push(a.status);
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 5, "Upstox's own limit of 50 a second");
    assert_eq!(h.counters().rate_limited, 5);
}

#[tokio::test]
async fn a_refused_token_whose_renewal_fails_gets_the_last_good_ltp_marked_stale() {
    let h = app_with(setup().wrong_totp()).await;
    let client = reqwest::Client::new();
    let good = get(&client, &h, LTP, BOT).await;
    assert_eq!(good.status, StatusCode::OK);

    // Upstox stops accepting the token; the renewal cannot succeed (wrong TOTP seed).
    assert!(h.sim.state().revoke(h.seeded.as_ref().unwrap().expose()));
    h.clock.advance(SignedDuration::from_secs(5));
    let stale = get(&client, &h, LTP, BOT).await;
    assert_eq!(stale.status, StatusCode::OK, "{}", stale.body);
    assert_eq!(stale.body, good.body);
    assert_eq!(stale.header("x-upkeep-stale"), Some("5"));
    assert_eq!(stale.header("warning"), Some("110 - \"Response is Stale\""));
}
