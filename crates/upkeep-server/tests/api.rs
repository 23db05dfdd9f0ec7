//! The HTTP API through the real router of a running daemon: every route, every scope,
//! the errors; keys revoked by another process; the metrics scrape.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use jiff::SignedDuration;
use jiff::civil::date;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use upkeep_core::AccessToken;
use upkeep_server::api::keys::KeyCache;
use upkeep_server::settings::StrategyKind;
use upkeep_sim::TokenKind;
use upkeep_store::TokenStore as _;

use common::{ACCOUNT, Setup, TestApp, eventually, eventually_async, ist, spawn_app};

const ADMIN: &str = "upk_admin_key_for_tests_0000000000000000000";
const STATUS: &str = "upk_status_key_for_tests_000000000000000000";
const TOKEN: &str = "upk_token_key_for_tests_0000000000000000000";

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

/// A daemon with an admin, a status:read and a token:read key, all known to it.
async fn app(setup: Setup) -> TestApp {
    let h = spawn_app(setup).await;
    add_key(&h, "ops", ADMIN, "admin").await;
    add_key(&h, "grafana", STATUS, "status:read").await;
    add_key(&h, "bot", TOKEN, "token:read").await;
    // Keys created after start reach the daemon's in-memory cache within its refresh.
    for key in [ADMIN, STATUS, TOKEN] {
        eventually_async("the keys loaded", || async {
            (call(&h, Method::GET, "/api/v1/accounts", Some(key), None)
                .await
                .0
                == 200)
                .then_some(())
        })
        .await;
    }
    h
}

async fn call(
    h: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", h.daemon_url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn day() -> jiff::civil::Date {
    date(2026, 12, 1)
}

#[tokio::test]
async fn every_route_refuses_no_key_and_unknown_keys_and_weaker_scopes_with_a_json_error() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    let routes: [(Method, &str, &str); 12] = [
        (Method::GET, "/api/token/status", "status:read"),
        (Method::POST, "/api/token/force-refresh", "admin"),
        (Method::POST, "/api/upstox/token/refresh", "admin"),
        (Method::GET, "/api/v1/accounts", "status:read"),
        (Method::GET, "/api/v1/accounts/main", "status:read"),
        (Method::POST, "/api/v1/accounts/main/renew", "admin"),
        (Method::GET, "/api/v1/accounts/main/token", "token:read"),
        (Method::GET, "/api/v1/scheduler", "status:read"),
        (Method::POST, "/api/v1/reload", "admin"),
        (Method::GET, "/api/v1/events", "status:read"),
        (Method::GET, "/metrics", "status:read"),
        (Method::GET, "/api/openapi.json", "status:read"),
    ];
    for (method, path, needed) in routes {
        let (status, body) = call(&h, method.clone(), path, None, None).await;
        assert_eq!(status, 401, "{method} {path} without a key");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");
        let (status, _) = call(&h, method.clone(), path, Some("upk_not_a_key"), None).await;
        assert_eq!(status, 401, "{method} {path} with an unknown key");
        let weaker = match needed {
            "admin" => Some(TOKEN),
            "token:read" => Some(STATUS),
            _ => None,
        };
        if let Some(k) = weaker {
            let (status, body) = call(&h, method.clone(), path, Some(k), None).await;
            assert_eq!(status, 403, "{method} {path} with a weaker key");
            assert_eq!(body["error"]["code"], "forbidden");
            assert!(body["error"]["message"].as_str().unwrap().contains(needed));
        }
    }
    // A bearer scheme in any case is a bearer (RFC 7235).
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/accounts", h.daemon_url))
        .header("authorization", format!("bearer {STATUS}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Unknown accounts are a 404 in the same shape.
    let (status, body) = call(&h, Method::GET, "/api/v1/accounts/nope", Some(ADMIN), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_account"))
    );
    // Bodies are size-limited.
    let big = json!({"access_token": "x".repeat(64 * 1024)});
    let (status, _) = call(
        &h,
        Method::PUT,
        "/api/v1/accounts/main/token",
        Some(ADMIN),
        Some(big),
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn status_account_scheduler_and_seed_endpoints_say_what_the_daemon_knows() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    let seeded = h.seeded.clone().unwrap();
    eventually("the first health check", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.api_validated == Some(true))
    })
    .await;
    // Seed-compatible status of the default account.
    let (status, v) = call(&h, Method::GET, "/api/token/status", Some(STATUS), None).await;
    assert_eq!(status, 200);
    assert_eq!(v["valid"], true);
    assert_eq!(v["api_validated"], true);
    assert_eq!(v["account"], ACCOUNT);
    assert_eq!(v["state"], "healthy");
    assert_eq!(v["kind"], "daily");
    // 10:00 IST to the next 03:30 IST: 17.5 hours.
    assert_eq!(v["time_remaining_hours"], 17.5);
    assert_eq!(v["expiry_time"], "2026-12-02T03:30:00+05:30");
    assert_eq!(v["next_action"]["action"], "renew_at");
    assert!(
        !v.to_string().contains(seeded.expose()),
        "status never carries the token"
    );

    let (_, list) = call(&h, Method::GET, "/api/v1/accounts", Some(STATUS), None).await;
    assert_eq!(list["accounts"][0]["account"], ACCOUNT);
    assert_eq!(
        list["accounts"][0]["token"]["fingerprint"],
        seeded.fingerprint()
    );
    let (_, one) = call(&h, Method::GET, "/api/v1/accounts/main", Some(TOKEN), None).await;
    assert_eq!(one["strategies"], json!(["totp"]), "{one}");
    assert_eq!(one["supervisor_alive"], true);
    assert!(one["last_check"]["at"].is_string());

    let (_, sched) = call(&h, Method::GET, "/api/v1/scheduler", Some(STATUS), None).await;
    assert_eq!(sched["running"], true);
    assert_eq!(sched["jobs"][0]["account"], ACCOUNT);
    assert_eq!(sched["jobs"][0]["next_job"], "renew_at");
    assert_eq!(sched["jobs"][0]["env"], "live");

    // The OAuth flow starts with a login link (admin).
    let (status, link) = call(
        &h,
        Method::POST,
        "/api/upstox/token/refresh",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let url = link["login_url"].as_str().unwrap();
    assert!(
        url.contains(&h.creds.client_id) && url.contains("state="),
        "{url}"
    );

    // Force refresh (admin) renews through the engine's single flight.
    let (status, done) = call(
        &h,
        Method::POST,
        "/api/token/force-refresh",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "renewed");
    assert_eq!(done["strategy"], "totp");
    assert_eq!(
        h.current().unwrap().fingerprint,
        done["fingerprint"].as_str().unwrap()
    );
}

#[tokio::test]
async fn consumers_read_the_valid_token_and_get_409_with_a_reason_when_there_is_none() {
    let h = app(Setup::at(ist(day(), 10, 0, 0))
        .strategies(&[StrategyKind::Static])
        .token_issued_at(ist(day(), 9, 0, 0)))
    .await;
    let seeded = h.seeded.clone().unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/accounts/main/token", h.daemon_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["access_token"], seeded.expose());
    assert_eq!(v["token_type"], "Bearer");

    // 03:30 IST passes; a static token is not renewed: 409 with the reason.
    h.clock.set(ist(day().tomorrow().unwrap(), 3, 30, 0));
    let (status, v) = call(
        &h,
        Method::GET,
        "/api/v1/accounts/main/token",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "token_expired");
    assert!(!v.to_string().contains(seeded.expose()));

    // An operator imports a new token (admin; validated with Upstox).
    let fresh = AccessToken::new(
        h.sim
            .state()
            .issue_token(&h.creds.ucc, TokenKind::Daily)
            .unwrap(),
    );
    let (status, v) = call(
        &h,
        Method::PUT,
        "/api/v1/accounts/main/token",
        Some(ADMIN),
        Some(json!({"access_token": fresh.expose()})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["fingerprint"], fresh.fingerprint());
    let (_, v) = call(
        &h,
        Method::GET,
        "/api/v1/accounts/main/token",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(v["access_token"], fresh.expose());
    // Garbage is refused with the reason, and changes nothing.
    let (status, v) = call(
        &h,
        Method::PUT,
        "/api/v1/accounts/main/token",
        Some(ADMIN),
        Some(json!({"access_token": "not-a-jwt"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("token_refused"))
    );
    assert_eq!(h.current().unwrap().fingerprint, fresh.fingerprint());
}

#[tokio::test]
async fn the_token_answer_follows_the_clock_and_a_rotation_serves_the_new_token() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    let seeded = h.seeded.clone().unwrap();
    let read = || async {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/accounts/main/token", h.daemon_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        resp.text().await.unwrap()
    };
    // Exactly the JSON object the endpoint has always answered, byte for byte.
    let expected = |token: &AccessToken, seconds_left: i64| {
        json!({
            "account": ACCOUNT,
            "access_token": token.expose(),
            "token_type": "Bearer",
            "kind": "daily",
            "expires_at": "2026-12-02T03:30:00+05:30",
            "seconds_left": seconds_left,
            "fingerprint": token.fingerprint(),
        })
        .to_string()
    };
    // 10:00 IST to 03:30 IST: 17.5 hours.
    assert_eq!(read().await, expected(&seeded, 63_000));
    // A minute later, the same token with a minute less (the rendering is kept per
    // token; the seconds left are not).
    h.clock.set(ist(day(), 10, 1, 0));
    assert_eq!(read().await, expected(&seeded, 62_940));

    // A rotation: the next read serves the new token, not the one rendered before.
    let (status, done) = call(
        &h,
        Method::POST,
        "/api/v1/accounts/main/renew",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("renewed")),
        "{done}"
    );
    let fresh = h.current().unwrap();
    assert_ne!(fresh.token, seeded);
    assert_eq!(done["fingerprint"], fresh.fingerprint);
    assert_eq!(read().await, expected(&fresh.token, 62_940));
}

#[tokio::test]
async fn a_key_revoked_by_another_process_stops_working_without_a_restart() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    let (status, _) = call(
        &h,
        Method::GET,
        "/api/v1/accounts/main/token",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // `upkeep apikey revoke bot`, another process on the same store.
    let other = h.open_store().await;
    assert!(other.revoke_api_key("bot", h.clock.now()).await.unwrap());
    other.close().await;
    eventually_async("the revoked key refused", || async {
        let (status, _) = call(
            &h,
            Method::GET,
            "/api/v1/accounts/main/token",
            Some(TOKEN),
            None,
        )
        .await;
        (status == 401).then_some(())
    })
    .await;
    // The others still work.
    let (status, _) = call(&h, Method::GET, "/api/v1/accounts", Some(STATUS), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_key_cache_sees_a_revocation_on_postgresql_too() {
    use sqlx::Connection as _;
    let pg = std::env::var("UPKEEP_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("upkeep_api_{}", uuid_like());
    let key = upkeep_store::MasterKey::generate();
    let one = upkeep_store::PgStore::connect_with_schema(&pg, key.clone(), Some(&schema))
        .await
        .unwrap();
    let two = upkeep_store::PgStore::connect_with_schema(&pg, key, Some(&schema))
        .await
        .unwrap();
    let cache = KeyCache::default();
    let now = jiff::Timestamp::from_second(1_764_567_000).unwrap();
    two.create_api_key(
        "bot",
        &Sha256::digest(TOKEN.as_bytes()).into(),
        "token:read",
        now,
    )
    .await
    .unwrap();
    cache.reload(&one).await;
    assert!(cache.check(TOKEN).is_some());
    assert!(cache.check("upk_other").is_none());
    two.revoke_api_key("bot", now + SignedDuration::from_secs(1))
        .await
        .unwrap();
    // What the daemon's refresh task does every 2 s.
    cache.reload(&one).await;
    assert!(
        cache.check(TOKEN).is_none(),
        "revoked in another connection"
    );
    upkeep_store::TokenStore::close(&one).await;
    upkeep_store::TokenStore::close(&two).await;
    let mut conn = sqlx::PgConnection::connect(&pg).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    #[allow(clippy::disallowed_methods)] // a unique schema name, not a clock reading
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{n:x}{}", std::process::id())
}

#[tokio::test]
async fn the_metrics_scrape_is_valid_prometheus_text_with_the_token_gauges() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    eventually("the first health check", || {
        h.engine
            .status(ACCOUNT)
            .filter(|s| s.api_validated == Some(true))
    })
    .await;
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", h.daemon_url))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    // Every sample line: name{labels} value, with a number; every name announced by a
    // TYPE line before its samples.
    let mut typed = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains(name) || typed.contains(family),
            "{name} has no TYPE line"
        );
        samples.insert(series.to_owned(), value);
    }
    // And a Prometheus text-format parser reads it, with the right types.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let gauge = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("account") == Some(ACCOUNT))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                ref other => panic!("{name} is not a gauge: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no {name}{{account=main}}"))
    };
    assert_eq!(gauge("upkeep_token_ready"), 1.0);
    assert_eq!(gauge("upkeep_supervisor_up"), 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "upkeep_upstream_requests_total"
                && matches!(s.value, prometheus_parse::Value::Counter(v) if v >= 1.0))
    );
    let expiry = h.current().unwrap().expires_at.as_second() as f64;
    assert_eq!(
        samples["upkeep_token_expiration_timestamp_seconds{account=\"main\"}"],
        expiry
    );
    assert_eq!(samples["upkeep_token_ready{account=\"main\"}"], 1.0);
    assert_eq!(samples["upkeep_token_api_validated{account=\"main\"}"], 1.0);
    assert_eq!(samples["upkeep_supervisor_up{account=\"main\"}"], 1.0);
    assert!(samples["process_resident_memory_bytes"] > 1_000_000.0);
    assert!(samples["process_open_fds"] >= 3.0);
    // The health check's call to Upstox is counted by endpoint and status.
    assert!(
        samples
            .iter()
            .any(|(k, v)| k.starts_with("upkeep_upstream_requests_total{")
                && k.contains("status=\"200\"")
                && *v >= 1.0),
        "{text}"
    );
    assert!(!text.contains(h.seeded.as_ref().unwrap().expose()));
}

#[tokio::test]
async fn an_events_watcher_gets_a_snapshot_then_the_renewal_as_it_happens() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    let mut resp = reqwest::Client::new()
        .get(format!("{}/api/v1/events", h.daemon_url))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    // The snapshot comes first.
    while !seen.contains("event: snapshot") || !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(common::PATIENCE, resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains(&format!("\"account\":\"{ACCOUNT}\"")),
        "{seen}"
    );
    // A renewal happens: the watcher sees it without asking.
    let engine = h.engine.clone();
    tokio::spawn(async move { engine.renew(ACCOUNT, upkeep_server::Actor::Api).await });
    while !seen.contains("renewal_succeeded") {
        let chunk = tokio::time::timeout(common::PATIENCE, resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: audit"));
    assert!(
        seen.contains("token_stored"),
        "the rotation is an event too"
    );
    let token = h.current().unwrap();
    assert!(
        !seen.contains(token.token.expose()),
        "no token in the stream"
    );
}

#[tokio::test]
async fn reload_applies_a_valid_configuration_and_refuses_an_invalid_one_keeping_the_running_one() {
    let h = app(Setup::at(ist(day(), 10, 0, 0)).token_issued_at(ist(day(), 9, 0, 0))).await;
    // The configuration as the binary would read it: first broken, then with an account
    // more.
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut next = (*h.engine.settings()).clone();
    let mut paper = next.accounts[0].clone();
    paper.id = "paper".into();
    paper.strategies = vec![StrategyKind::Static];
    next.accounts.push(paper);
    let flag = broken.clone();
    h.engine.set_reloader(std::sync::Arc::new(move || {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Err(
                "invalid configuration (upkeep.toml): account[1].renew: unknown strategy `totpp`"
                    .into(),
            )
        } else {
            Ok((next.clone(), None))
        }
    }));

    let (status, v) = call(&h, Method::POST, "/api/v1/reload", Some(ADMIN), None).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_config");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("totpp"),
        "{v}"
    );
    assert_eq!(h.engine.account_ids(), [ACCOUNT]);

    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, v) = call(&h, Method::POST, "/api/v1/reload", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["added"], json!(["paper"]));
    let (_, v) = call(&h, Method::GET, "/api/v1/accounts", Some(STATUS), None).await;
    let ids: Vec<&str> = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ACCOUNT, "paper"]);
}
