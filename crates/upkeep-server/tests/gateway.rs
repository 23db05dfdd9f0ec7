//! The Upstox API gateway through a running daemon, against the simulator: calls pass
//! through with the account's token, keys are checked, a token that dies at 03:30 is
//! renewed once and GETs replayed, a POST is told to retry, an extended token's refusal
//! passes through without a renewal; usage is counted.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use jiff::civil::date;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use upkeep_core::AccessToken;
use upkeep_server::Actor;
use upkeep_sim::TokenKind;

use common::{ACCOUNT, Setup, TestApp, eventually_async, ist, spawn_app};

const BOT: &str = "upk_gateway_bot_key_for_tests_00000000000000";
const STATUS: &str = "upk_gateway_status_key_for_tests_000000000";
const ADMIN: &str = "upk_gateway_admin_key_for_tests_0000000000";

const NHPC: &str = "NSE_EQ|INE848E01016";

async fn add_key(h: &TestApp, name: &str, key: &str, scope: &str) {
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

fn day() -> jiff::civil::Date {
    date(2026, 12, 1)
}

/// A daemon with a valid token and a token:read, a status:read and an admin key, loaded.
async fn app() -> TestApp {
    app_with(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await
}

async fn app_with(setup: Setup) -> TestApp {
    let h = spawn_app(setup).await;
    h.first_health_check_done().await;
    add_key(&h, "bot", BOT, "token:read").await;
    add_key(&h, "grafana", STATUS, "status:read").await;
    add_key(&h, "ops", ADMIN, "admin").await;
    for key in [BOT, STATUS, ADMIN] {
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

async fn call(
    h: &TestApp,
    method: Method,
    path_and_query: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/upstox{path_and_query}", h.daemon_url))
        .header("Api-Version", "2.0")
        .header("Accept", "application/json");
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
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

/// The status of `GET <path>` sent byte for byte (no normalisation of the path).
async fn raw_get(h: &TestApp, path: &str, key: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = h.daemon_url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

fn ltp_path() -> String {
    format!(
        "/v3/market-quote/ltp?instrument_key={}",
        NHPC.replace('|', "%7C")
    )
}

fn order() -> Value {
    json!({
        "quantity": 1,
        "product": "D",
        "validity": "DAY",
        "price": 0,
        "instrument_token": NHPC,
        "order_type": "MARKET",
        "transaction_type": "BUY",
        "disclosed_quantity": 0,
        "trigger_price": 0,
        "is_amo": false,
    })
}

#[tokio::test]
async fn profile_funds_ltp_and_an_order_round_trip_pass_through_with_the_accounts_token() {
    let h = app().await;
    let profile = call(&h, Method::GET, "/v2/user/profile", Some(BOT), None).await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.body);
    assert_eq!(profile.body["data"]["user_id"], h.creds.ucc);

    let funds = call(
        &h,
        Method::GET,
        "/v2/user/get-funds-and-margin",
        Some(BOT),
        None,
    )
    .await;
    assert_eq!(funds.status, StatusCode::OK, "{}", funds.body);
    assert!(funds.body["data"]["equity"].is_object(), "{}", funds.body);

    let ltp = call(&h, Method::GET, &ltp_path(), Some(BOT), None).await;
    assert_eq!(ltp.status, StatusCode::OK, "{}", ltp.body);
    assert_eq!(
        ltp.body["data"]["NSE_EQ:NHPC"]["instrument_token"], NHPC,
        "{}",
        ltp.body
    );

    let placed = call(
        &h,
        Method::POST,
        "/v2/order/place",
        Some(BOT),
        Some(order()),
    )
    .await;
    assert_eq!(placed.status, StatusCode::OK, "{}", placed.body);
    let order_id = placed.body["data"]["order_id"].as_str().unwrap().to_owned();
    let cancelled = call(
        &h,
        Method::DELETE,
        &format!("/v2/order/cancel?order_id={order_id}"),
        Some(BOT),
        None,
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["data"]["order_id"], order_id);
    let c = h.counters();
    assert_eq!((c.orders_placed, c.orders_cancelled), (1, 1));

    // An upstream error passes through as Upstox sent it.
    let unknown = call(
        &h,
        Method::GET,
        "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE000000000",
        Some(BOT),
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.body["errors"][0]["errorCode"], "UDAPI1087");
}

#[tokio::test]
async fn the_gateway_refuses_no_key_an_unknown_key_a_status_only_key_and_an_unknown_account() {
    let h = app().await;
    let before = h.counters().api_requests;
    let none = call(&h, Method::GET, "/v2/user/profile", None, None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["upkeep"]["code"], "unauthorized");
    assert_eq!(none.headers["x-upkeep-error"], "unauthorized");
    let wrong = call(&h, Method::GET, "/v2/user/profile", Some("upk_nope"), None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let weak = call(&h, Method::GET, "/v2/user/profile", Some(STATUS), None).await;
    assert_eq!(weak.status, StatusCode::FORBIDDEN);
    assert!(
        weak.body["upkeep"]["message"]
            .as_str()
            .unwrap()
            .contains("token:read"),
        "{}",
        weak.body
    );
    let r = reqwest::Client::new()
        .get(format!("{}/upstox/v2/user/profile", h.daemon_url))
        .bearer_auth(BOT)
        .header("X-Upkeep-Account", "nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A path climbing out of the host's base path, sent raw (a URL library would
    // normalise it away first).
    for raw in ["/upstox/v2/../sim/clock", "/upstox/v2/%2E%2e/sim/clock"] {
        assert_eq!(raw_get(&h, raw, ADMIN).await, 400, "{raw}");
    }
    // Only Upstox API paths are forwarded: not the upstream host's other paths.
    for raw in ["/upstox/sim/clock", "/upstox/sim/state", "/upstox/"] {
        assert_eq!(raw_get(&h, raw, ADMIN).await, 404, "{raw}");
    }
    // None of them reached Upstox.
    assert_eq!(h.counters().api_requests, before);
    // The admin key may use the gateway too; the account may be named.
    let r = reqwest::Client::new()
        .get(format!("{}/upstox/v2/user/profile", h.daemon_url))
        .bearer_auth(ADMIN)
        .header("X-Upkeep-Account", ACCOUNT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn crossing_0330_during_an_ltp_burst_renews_once_replays_the_gets_and_tells_a_post_to_retry()
{
    let h = app().await;
    let old = h.current().unwrap();
    let exchanges_before = h.counters().token_exchanges;
    // 03:31 the next (trading) day: the token died at 03:30, the renewal window opens at
    // 05:30, so only the gateway's 401 can start a renewal now.
    h.clock.set(ist(date(2026, 12, 2), 3, 31, 0));
    let gets = (0..16).map(|_| call(&h, Method::GET, ltp_path().leak(), Some(BOT), None));
    let post = call(
        &h,
        Method::POST,
        "/v2/order/place",
        Some(BOT),
        Some(order()),
    );
    let (gets, post) = tokio::join!(futures_util::future::join_all(gets), post);
    for g in &gets {
        assert_eq!(g.status, StatusCode::OK, "{}", g.body);
        assert_eq!(g.body["data"]["NSE_EQ:NHPC"]["instrument_token"], NHPC);
    }
    assert_eq!(post.status, StatusCode::UNAUTHORIZED, "{}", post.body);
    assert_eq!(post.body["upkeep"]["code"], "token_renewed");
    assert_eq!(post.body["upkeep"]["retry"], true);
    assert_eq!(post.body["errors"][0]["errorCode"], "UPKEEP_TOKEN_RENEWED");
    assert_eq!(post.headers["x-upkeep-error"], "token_renewed");
    assert_eq!(h.counters().orders_placed, 0, "the order was not replayed");
    // Exactly one renewal, by the reactive trigger.
    assert_eq!(h.counters().token_exchanges, exchanges_before + 1);
    let new = h.current().unwrap();
    assert_ne!(new.fingerprint, old.fingerprint);
    let renewals = h.events_of("renewal_succeeded").await;
    assert_eq!(renewals.len(), 1, "{renewals:?}");
    assert_eq!(renewals[0].actor, "reactive");
    // The retried POST goes through with the new token (the order window opens at 05:30).
    h.clock.set(ist(date(2026, 12, 2), 9, 20, 0));
    let retried = call(
        &h,
        Method::POST,
        "/v2/order/place",
        Some(BOT),
        Some(order()),
    )
    .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
}

#[tokio::test]
async fn an_extended_tokens_refusal_passes_through_with_an_upkeep_note_and_no_renewal() {
    let h = app().await;
    let extended = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Extended)
            .unwrap(),
    );
    h.engine
        .accept_token(ACCOUNT, extended, "import", Actor::Api, false)
        .await
        .unwrap();
    let issued_before = h.counters().tokens_issued;
    let profiles = (0..4).map(|_| call(&h, Method::GET, "/v2/user/profile", Some(BOT), None));
    for p in futures_util::future::join_all(profiles).await {
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);
        assert_eq!(p.body["errors"][0]["errorCode"], "UDAPI100067");
        assert_eq!(p.body["upkeep"]["code"], "extended_token_not_allowed");
        assert_eq!(p.headers["x-upkeep-error"], "extended_token_not_allowed");
    }
    // Market data takes an extended token.
    let ltp = call(&h, Method::GET, &ltp_path(), Some(BOT), None).await;
    assert_eq!(ltp.status, StatusCode::OK, "{}", ltp.body);
    assert_eq!(h.counters().tokens_issued, issued_before);
    assert!(
        h.events().await.iter().all(|e| e.actor != "reactive"),
        "no reactive renewal"
    );
}

#[tokio::test]
async fn usage_counts_per_account_key_and_endpoint_in_the_api_and_the_metrics() {
    let h = app().await;
    for _ in 0..3 {
        call(&h, Method::GET, &ltp_path(), Some(BOT), None).await;
    }
    call(
        &h,
        Method::GET,
        "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE000000000",
        Some(BOT),
        None,
    )
    .await;
    call(&h, Method::GET, "/v2/user/profile", Some(ADMIN), None).await;
    let get = |path: &str, key: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", h.daemon_url))
            .bearer_auth(key)
            .send()
    };
    let r = get("/api/v1/usage", BOT).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "token:read also reads status");
    let usage: Value = get("/api/v1/usage", STATUS)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = usage["usage"].as_array().unwrap();
    let ltp = rows
        .iter()
        .find(|r| r["api_key"] == "bot" && r["endpoint"] == "/v3/market-quote/ltp")
        .unwrap();
    assert_eq!(ltp["account"], ACCOUNT);
    assert_eq!(ltp["requests"], 4);
    assert_eq!(ltp["errors"], 1);
    assert!(
        rows.iter()
            .any(|r| r["api_key"] == "ops" && r["endpoint"] == "/v2/user/profile")
    );
    let text = get("/metrics", STATUS).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(
            "upkeep_gateway_requests_total{account=\"main\",api_key=\"bot\",endpoint=\"/v3/market-quote/ltp\"} 4"
        ),
        "{text}"
    );
    assert!(text.contains(
        "upkeep_gateway_errors_total{account=\"main\",api_key=\"bot\",endpoint=\"/v3/market-quote/ltp\"} 1"
    ));
    // No key, not even its digest, appears.
    assert!(!text.contains(BOT) && !usage.to_string().contains(BOT));
}

#[tokio::test]
async fn a_keys_default_account_is_used_when_the_request_names_none() {
    let h = app_with(
        Setup::at(ist(day(), 10, 0, 0))
            .token_issued_at(ist(day(), 9, 0, 0))
            .settings(|s| {
                s.gateway
                    .default_accounts
                    .insert("bot".into(), "elsewhere".into());
            }),
    )
    .await;
    let bot = call(&h, Method::GET, "/v2/user/profile", Some(BOT), None).await;
    assert_eq!(bot.status, StatusCode::NOT_FOUND, "{}", bot.body);
    assert!(
        bot.body["upkeep"]["message"]
            .as_str()
            .unwrap()
            .contains("`elsewhere`")
    );
    // The header wins over the key's default; a key with no default uses the daemon's.
    let named = reqwest::Client::new()
        .get(format!("{}/upstox/v2/user/profile", h.daemon_url))
        .bearer_auth(BOT)
        .header("x-upkeep-account", ACCOUNT)
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::OK);
    let admin = call(&h, Method::GET, "/v2/user/profile", Some(ADMIN), None).await;
    assert_eq!(admin.status, StatusCode::OK);
}

#[tokio::test]
async fn a_disabled_gateway_serves_nothing_under_upstox() {
    let h = app_with(
        Setup::at(ist(day(), 10, 0, 0))
            .token_issued_at(ist(day(), 9, 0, 0))
            .settings(|s| s.gateway.enabled = false),
    )
    .await;
    let before = h.counters().api_requests;
    let r = call(&h, Method::GET, "/v2/user/profile", Some(BOT), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(h.counters().api_requests, before);
}
