use std::collections::HashMap;

use jiff::SignedDuration;
use serde_json::Value;

use crate::*;

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Runs dialog -> login page -> form post and returns the code.
async fn login_via_browser(sim: &TestSim, state: &str) -> String {
    let resp = sim
        .http
        .get(sim.url("/v2/login/authorization/dialog"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("state", state),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let login_url = resp.headers()["location"].to_str().unwrap().to_string();
    let q = query(&login_url);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["user_id"], UCC);
    assert_eq!(q["user_type"], "individual");

    let page = sim.http.get(&login_url).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<form"));

    let now = sim.clock().now();
    let resp = sim
        .http
        .post(sim.url("/sim/login"))
        .form(&[
            ("request_id", q["request_id"].as_str()),
            ("mobile", MOBILE),
            ("totp", &totp_code(now)),
            ("pin", PIN),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302, "{:?}", resp.text().await);
    let back = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(REDIRECT_URI), "{back}");
    let q = query(&back);
    assert_eq!(q["state"], state);
    q["code"].clone()
}

async fn exchange(sim: &TestSim, code: &str, secret: &str) -> reqwest::Response {
    sim.http
        .post(sim.url("/v2/login/authorization/token"))
        .header("Accept", "application/json")
        .form(&[
            ("code", code),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("redirect_uri", REDIRECT_URI),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oauth_round_trip_issues_working_tokens_and_code_is_single_use() {
    let sim = TestSim::start().await;
    let code = login_via_browser(&sim, "st4te").await;

    let (status, ct, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "application/json");
    assert!(body.get("status").is_none(), "token response is flat");
    for field in [
        "email",
        "exchanges",
        "products",
        "broker",
        "user_id",
        "user_name",
        "order_types",
        "user_type",
        "poa",
        "ddpi",
        "is_active",
        "access_token",
        "extended_token",
    ] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    assert_eq!(body["user_id"], UCC);
    assert_eq!(body["broker"], "UPSTOX");
    let token = body["access_token"].as_str().unwrap();

    let (status, _, profile) = parts(sim.get_with("/v2/user/profile", token).await).await;
    assert_eq!(status, 200);
    assert_eq!(profile["data"]["user_id"], UCC);

    // The same code again fails, even with the right secret.
    let (status, _, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI100057");
    assert_eq!(body["errors"][0]["message"], "Invalid Auth code");
    assert_eq!(sim.handle.state().token_exchanges(), 1);
    assert_eq!(sim.handle.state().logins(), 1);
}

#[tokio::test]
async fn failed_exchange_with_wrong_secret_still_burns_the_code() {
    let sim = TestSim::start().await;
    let code = login_via_browser(&sim, "s").await;
    let (status, _, body) = parts(exchange(&sim, &code, "wrong").await).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI100069");
    assert_eq!(body["errors"][0]["message"], "Invalid client credentials");
    let (status, _, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI100057");
}

#[tokio::test]
async fn exchange_with_another_redirect_uri_answers_udapi100070_not_the_dialog_code() {
    let sim = TestSim::start().await;
    let code = login_via_browser(&sim, "s").await;
    let resp = sim
        .http
        .post(sim.url("/v2/login/authorization/token"))
        .form(&[
            ("code", code.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .unwrap();
    let (status, _, body) = parts(resp).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI100070");
    assert_eq!(body["errors"][0]["message"], "Invalid redirect_uri");
}

#[tokio::test]
async fn a_code_lives_two_minutes_by_default() {
    let sim = TestSim::start().await;
    let issued = sim.clock().now();
    let fresh = login_via_browser(&sim, "a").await;
    let stale = login_via_browser(&sim, "b").await;
    sim.clock().set(issued + SignedDuration::from_secs(119));
    let (status, _, body) = parts(exchange(&sim, &fresh, CLIENT_SECRET).await).await;
    assert_eq!(status, 200, "alive at 1:59: {body}");
    sim.clock().set(issued + SignedDuration::from_secs(120));
    let (status, _, body) = parts(exchange(&sim, &stale, CLIENT_SECRET).await).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI100057", "dead at 2:00");
}

#[tokio::test]
async fn the_code_lifetime_is_a_setting() {
    let mut config = config();
    config.auth_code_ttl_secs = 600;
    let sim = TestSim::start_with(config).await;
    let code = login_via_browser(&sim, "s").await;
    sim.clock().advance(SignedDuration::from_secs(599));
    let (status, _, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_expired_codes_fault_hands_out_dead_codes_then_good_ones() {
    let sim = TestSim::start().await;
    sim.handle
        .state()
        .patch_faults(upkeep_sim::FaultsPatch {
            expired_codes: Some(1),
            ..Default::default()
        })
        .unwrap();
    let dead = login_via_browser(&sim, "a").await;
    let (status, _, body) = parts(exchange(&sim, &dead, CLIENT_SECRET).await).await;
    assert_eq!((status, error_code(&body)), (400, "UDAPI100057"));
    assert_eq!(sim.handle.state().faults().expired_codes, 0);
    let good = login_via_browser(&sim, "b").await;
    let (status, _, body) = parts(exchange(&sim, &good, CLIENT_SECRET).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn dialog_with_wrong_redirect_uri_answers_udapi100068() {
    let sim = TestSim::start().await;
    let resp = sim
        .http
        .get(sim.url("/v2/login/authorization/dialog"))
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://evil.example/cb"),
        ])
        .send()
        .await
        .unwrap();
    let (status, ct, body) = parts(resp).await;
    assert_eq!(status, 400);
    assert_eq!(ct, "application/json");
    assert_eq!(error_code(&body), "UDAPI100068");
    assert_eq!(body["errors"][0]["errorCode"], "UDAPI100068");
}

#[tokio::test]
async fn token_exchange_names_the_missing_field() {
    let sim = TestSim::start().await;
    let full = [
        ("code", "abc123"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("redirect_uri", REDIRECT_URI),
        ("grant_type", "authorization_code"),
    ];
    for (missing, expected) in [
        ("code", "UDAPI1022"),
        ("client_id", "UDAPI1017"),
        ("client_secret", "UDAPI1024"),
        ("redirect_uri", "UDAPI1018"),
        ("grant_type", "UDAPI1023"),
    ] {
        let form: Vec<_> = full.iter().filter(|(k, _)| *k != missing).collect();
        let resp = sim
            .http
            .post(sim.url("/v2/login/authorization/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        let (status, _, body) = parts(resp).await;
        assert_eq!(status, 400, "{missing}");
        assert_eq!(error_code(&body), expected, "{missing}: {body}");
    }
}

#[tokio::test]
async fn daily_token_works_at_032959_and_dies_at_033000_ist() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    sim.clock()
        .jump_to_ist(jiff::civil::date(2026, 2, 6).at(3, 29, 59, 0));
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
    assert_eq!(status, 200);
    sim.clock()
        .jump_to_ist(jiff::civil::date(2026, 2, 6).at(3, 30, 0, 0));
    assert_invalid_token(sim.get_with("/v2/user/profile", &token).await).await;
}

#[tokio::test]
async fn extended_token_reads_quotes_but_not_profile_or_funds() {
    let sim = TestSim::start().await;
    let code = login_via_browser(&sim, "s").await;
    let (_, _, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    let extended = body["extended_token"].as_str().unwrap().to_string();

    for path in ["/v2/user/profile", "/v2/user/get-funds-and-margin"] {
        let (status, _, body) = parts(sim.get_with(path, &extended).await).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(error_code(&body), "UDAPI100067", "{path}");
    }
    let (status, _, _) = parts(
        sim.get_with(
            "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
            &extended,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);

    // The extended token outlives the daily rollover.
    sim.clock().advance(SignedDuration::from_hours(24 * 200));
    let (status, _, _) = parts(
        sim.get_with(
            "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
            &extended,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn extended_token_is_kept_unless_refresh_is_asked_for() {
    let sim = TestSim::start().await;
    let first = {
        let code = login_via_browser(&sim, "a").await;
        parts(exchange(&sim, &code, CLIENT_SECRET).await).await.2
    };
    let second = {
        let code = login_via_browser(&sim, "b").await;
        parts(exchange(&sim, &code, CLIENT_SECRET).await).await.2
    };
    assert_eq!(first["extended_token"], second["extended_token"]);
    assert_ne!(first["access_token"], second["access_token"]);

    let code = login_via_browser(&sim, "c").await;
    let resp = sim
        .http
        .post(sim.url("/v2/login/authorization/token"))
        .form(&[
            ("code", code.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("redirect_uri", REDIRECT_URI),
            ("grant_type", "authorization_code"),
            ("refresh_extended_token", "true"),
        ])
        .send()
        .await
        .unwrap();
    let third: Value = parts(resp).await.2;
    assert_ne!(third["extended_token"], first["extended_token"]);
    let old = first["extended_token"].as_str().unwrap();
    assert_invalid_token(
        sim.get_with(
            "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
            old,
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn html_login_rejects_a_wrong_pin_and_the_demo_shortcut_approves() {
    let mut c = config();
    c.login_shortcut = true;
    let sim = TestSim::start_with(c).await;
    let resp = sim
        .http
        .get(sim.url("/v2/login/authorization/dialog"))
        .query(&[("client_id", CLIENT_ID), ("redirect_uri", REDIRECT_URI)])
        .send()
        .await
        .unwrap();
    let q = query(resp.headers()["location"].to_str().unwrap());
    let request_id = q["request_id"].as_str();

    let now = sim.clock().now();
    let resp = sim
        .http
        .post(sim.url("/sim/login"))
        .form(&[
            ("request_id", request_id),
            ("mobile", MOBILE),
            ("totp", &totp_code(now)),
            ("pin", "000000"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("4 attempts remaining"));

    let resp = sim
        .http
        .post(sim.url("/sim/login"))
        .form(&[("request_id", request_id), ("approve", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let back = query(resp.headers()["location"].to_str().unwrap());
    assert!(back.contains_key("code"));
    assert!(!back.contains_key("state"), "no state was sent");
}

#[tokio::test]
async fn a_new_daily_token_keeps_older_ones_alive_by_default() {
    let sim = TestSim::start().await;
    let old = sim.daily_token();
    let code = login_via_browser(&sim, "s").await;
    let (status, _, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &old).await).await;
    assert_eq!(status, 200, "the older token still works");
    assert_eq!(sim.handle.state().counters().superseded, 0);
}

#[tokio::test]
async fn with_revoke_previous_tokens_a_new_daily_token_revokes_the_users_older_ones() {
    let mut config = config();
    config.revoke_previous_tokens = true;
    let sim = TestSim::start_with(config).await;
    let old = sim.daily_token();
    let extended = sim
        .handle
        .state()
        .issue_token(UCC, upkeep_sim::TokenKind::Extended)
        .unwrap();
    let code = login_via_browser(&sim, "s").await;
    let (status, _, body) = parts(exchange(&sim, &code, CLIENT_SECRET).await).await;
    assert_eq!(status, 200, "{body}");
    let new = body["access_token"].as_str().unwrap().to_owned();

    assert_invalid_token(sim.get_with("/v2/user/profile", &old).await).await;
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &new).await).await;
    assert_eq!(status, 200);
    // Only daily tokens are superseded.
    let (status, _, _) = parts(
        sim.get_with(
            "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
            &extended,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.handle.state().counters().superseded, 1);

    // Minting through the control API (the Developer Apps "Generate" button) counts too.
    let newest = sim.daily_token();
    assert_invalid_token(sim.get_with("/v2/user/profile", &new).await).await;
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &newest).await).await;
    assert_eq!(status, 200);
}
