use jiff::{SignedDuration, civil};
use serde_json::json;
use upkeep_sim::TokenKind;

use crate::*;

#[tokio::test]
async fn funds_are_locked_from_midnight_until_0530_ist() {
    let sim = TestSim::start().await;
    let clock = sim.clock();
    clock.jump_to_ist(civil::date(2026, 2, 5).at(5, 0, 0, 0));
    let token = sim.daily_token(); // valid until 2026-02-06 03:30 IST
    for path in [
        "/v2/user/get-funds-and-margin",
        "/v3/user/get-funds-and-margin",
    ] {
        let cases = [
            (civil::date(2026, 2, 5).at(5, 29, 59, 0), 423),
            (civil::date(2026, 2, 5).at(5, 30, 0, 0), 200),
            (civil::date(2026, 2, 5).at(23, 59, 59, 0), 200),
            (civil::date(2026, 2, 6).at(0, 0, 0, 0), 423),
        ];
        for (at, expected) in cases {
            clock.jump_to_ist(at);
            let (status, ct, body) = parts(sim.get_with(path, &token).await).await;
            assert_eq!(status, expected, "{path} at {at}: {body}");
            assert_eq!(ct, "application/json");
            if expected == 423 {
                assert_eq!(error_code(&body), "UDAPI100072");
            } else {
                assert_eq!(body["status"], "success");
            }
        }
    }
}

#[tokio::test]
async fn ltp_v3_answers_by_trading_symbol() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let (status, ct, body) = parts(
        sim.get_with(
            "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016,NSE_INDEX|Nifty%2050",
            &token,
        )
        .await,
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let data = body["data"].as_object().unwrap();
    assert_eq!(data.len(), 2, "{body}");
    let nhpc = &data["NSE_EQ:NHPC"];
    assert_eq!(nhpc["instrument_token"], "NSE_EQ|INE848E01016");
    for f in ["last_price", "ltq", "volume", "cp"] {
        assert!(nhpc[f].is_number(), "{f}");
    }
    assert!(data.contains_key("NSE_INDEX:Nifty 50"));

    let (_, _, v2) = parts(
        sim.get_with(
            "/v2/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
            &token,
        )
        .await,
    )
    .await;
    let entry = v2["data"]["NSE_EQ:NHPC"].as_object().unwrap();
    assert_eq!(
        entry.len(),
        2,
        "v2 has only last_price and instrument_token"
    );
}

#[tokio::test]
async fn one_unknown_instrument_key_fails_the_whole_ltp_call_naming_that_key() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    for version in ["v2", "v3"] {
        let (status, ct, body) = parts(
            sim.get_with(
                &format!(
                    "/{version}/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016,NSE_EQ|INE000X00000"
                ),
                &token,
            )
            .await,
        )
        .await;
        assert_eq!((status, ct.as_str()), (400, "application/json"), "{body}");
        assert_eq!(error_code(&body), "UDAPI1087");
        let e = &body["errors"][0];
        assert_eq!(e["message"], "Invalid Instrument key");
        assert_eq!(e["invalidValue"], "NSE_EQ|INE000X00000");
        assert_eq!(e["invalid_value"], "NSE_EQ|INE000X00000");
        assert!(body.get("data").is_none(), "no partial answer: {body}");
    }
}

#[tokio::test]
async fn ltp_refuses_more_than_500_keys_and_bad_formats() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let keys: Vec<String> = (0..501).map(|i| format!("NSE_FO|{i}")).collect();
    let path = format!("/v3/market-quote/ltp?instrument_key={}", keys.join(","));
    let (status, _, body) = parts(sim.get_with(&path, &token).await).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI100043");

    let keys = vec!["NSE_EQ|INE848E01016"; 500];
    let path = format!("/v3/market-quote/ltp?instrument_key={}", keys.join(","));
    let (status, _, _) = parts(sim.get_with(&path, &token).await).await;
    assert_eq!(status, 200, "500 keys are allowed");

    let (status, _, body) = parts(
        sim.get_with("/v3/market-quote/ltp?instrument_key=NHPC", &token)
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI1011");
    let (status, _, body) = parts(sim.get_with("/v3/market-quote/ltp", &token).await).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI1009");
}

#[tokio::test]
async fn fifty_first_request_in_a_second_gets_429() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    for i in 0..50 {
        let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
        assert_eq!(status, 200, "request {i}");
    }
    let (status, ct, body) = parts(sim.get_with("/v2/user/profile", &token).await).await;
    assert_eq!((status, ct.as_str()), (429, "application/json"));
    assert_eq!(error_code(&body), "UDAPI10005");
    assert_eq!(body["errors"][0]["message"], "Too Many Request Sent");

    // The next second resets the budget.
    sim.clock().advance(SignedDuration::from_secs(1));
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rate_limits_are_per_user_and_api_not_per_token() {
    let sim = TestSim::start().await;
    let (a, b) = (sim.daily_token(), sim.daily_token());
    for i in 0..50 {
        let token = if i % 2 == 0 { &a } else { &b };
        let (status, _, _) = parts(sim.get_with("/v2/user/profile", token).await).await;
        assert_eq!(status, 200, "request {i}");
    }
    // Both tokens of the one user share the bucket: the 51st is refused for either.
    for token in [&a, &b] {
        let (status, _, body) = parts(sim.get_with("/v2/user/profile", token).await).await;
        assert_eq!(status, 429);
        assert_eq!(error_code(&body), "UDAPI10005");
    }
    // Another API of the same user has its own bucket.
    let (status, _, _) = parts(
        sim.get_with(
            "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
            &a,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    // Another user has their own.
    let mut other = config().users[0].clone();
    other.ucc = "OTHER1".into();
    other.mobile = "9000000001".into();
    sim.handle.state().add_user(other).unwrap();
    let c = sim
        .handle
        .state()
        .issue_token("OTHER1", upkeep_sim::TokenKind::Daily)
        .unwrap();
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &c).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn token_endpoints_answer_udapi100099_over_their_optional_limit() {
    let mut config = config();
    config.token_api_limit_per_minute = Some(2);
    let sim = TestSim::start_with(config).await;
    let exchange = || {
        sim.http
            .post(sim.url("/v2/login/authorization/token"))
            .form(&[
                ("code", "nosuch"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("redirect_uri", REDIRECT_URI),
                ("grant_type", "authorization_code"),
            ])
            .send()
    };
    for _ in 0..2 {
        let (status, _, body) = parts(exchange().await.unwrap()).await;
        assert_eq!((status, error_code(&body)), (400, "UDAPI100057"));
    }
    let (status, ct, body) = parts(exchange().await.unwrap()).await;
    assert_eq!((status, ct.as_str()), (429, "application/json"));
    assert_eq!(error_code(&body), "UDAPI100099");
    assert_eq!(
        body["errors"][0]["message"],
        "Token API rate limit exceeded"
    );
    // The token request endpoint counts in the same bucket of the app.
    let (status, _, body) = parts(
        sim.post_json(
            &format!("/v3/login/auth/token/request/{CLIENT_ID}"),
            &serde_json::json!({"client_secret": CLIENT_SECRET}),
        )
        .await,
    )
    .await;
    assert_eq!((status, error_code(&body)), (429, "UDAPI100099"));
    sim.clock().advance(SignedDuration::from_secs(60));
    let (status, _, body) = parts(exchange().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "UDAPI100057"),
        "a minute later"
    );
}

#[tokio::test]
async fn no_token_endpoint_limit_by_default() {
    let sim = TestSim::start().await;
    for _ in 0..60 {
        let resp = sim
            .http
            .post(sim.url("/v2/login/authorization/token"))
            .form(&[("code", "nosuch"), ("client_id", CLIENT_ID)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
    }
}

#[tokio::test]
async fn rate_limits_can_be_switched_off() {
    let mut c = config();
    c.rate_limits = false;
    let sim = TestSim::start_with(c).await;
    let token = sim.daily_token();
    for _ in 0..60 {
        let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn revoked_token_gets_401() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let (status, _, body) = parts(
        sim.post_json("/sim/tokens/revoke", &json!({"access_token": token}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["revoked"], true);
    assert_invalid_token(sim.get_with("/v2/user/profile", &token).await).await;
}

#[tokio::test]
async fn garbage_forged_and_missing_tokens_get_401() {
    let sim = TestSim::start().await;
    assert_invalid_token(sim.get_with("/v2/user/profile", "garbage").await).await;
    // Same header and claims, different signature.
    let token = sim.daily_token();
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &sig[1..]);
    assert_invalid_token(sim.get_with("/v2/user/profile", &forged).await).await;
    let resp = sim
        .http
        .get(sim.url("/v2/user/profile"))
        .send()
        .await
        .unwrap();
    assert_invalid_token(resp).await;
}

#[tokio::test]
async fn logout_invalidates_the_token() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let resp = sim
        .http
        .delete(sim.url("/v2/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, ct, body) = parts(resp).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    assert_eq!(body, json!({"status": "success", "data": true}));
    assert_invalid_token(sim.get_with("/v2/user/profile", &token).await).await;
}

#[tokio::test]
async fn sandbox_token_places_orders_but_cannot_read_profile() {
    let sim = TestSim::start().await;
    let sandbox = sim
        .handle
        .state()
        .issue_token(UCC, TokenKind::Sandbox)
        .unwrap();
    assert_invalid_token(sim.get_with("/v2/user/profile", &sandbox).await).await;
    let resp = sim
        .http
        .post(sim.url("/v2/order/place"))
        .bearer_auth(&sandbox)
        .json(&order())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

fn order() -> serde_json::Value {
    json!({
        "quantity": 1, "product": "D", "validity": "DAY", "price": 0, "tag": "t",
        "instrument_token": "NSE_EQ|INE848E01016", "order_type": "MARKET",
        "transaction_type": "BUY", "disclosed_quantity": 0, "trigger_price": 0, "is_amo": false
    })
}

#[tokio::test]
async fn orders_are_placed_and_cancelled_in_v2_and_v3_shapes() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let place = |path: &'static str| {
        sim.http
            .post(sim.url(path))
            .bearer_auth(&token)
            .json(&order())
            .send()
    };
    let (status, _, v2) = parts(place("/v2/order/place").await.unwrap()).await;
    assert_eq!(status, 200, "{v2}");
    let id2 = v2["data"]["order_id"].as_str().unwrap().to_string();
    let (status, _, v3) = parts(place("/v3/order/place").await.unwrap()).await;
    assert_eq!(status, 200, "{v3}");
    let id3 = v3["data"]["order_ids"][0].as_str().unwrap().to_string();
    assert!(v3["metadata"]["latency"].is_u64());

    for (path, id) in [("/v2/order/cancel", &id2), ("/v3/order/cancel", &id3)] {
        let resp = sim
            .http
            .delete(sim.url(path))
            .query(&[("order_id", id)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let (status, _, body) = parts(resp).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["data"]["order_id"], id.as_str());
    }
    let resp = sim
        .http
        .delete(sim.url("/v2/order/cancel"))
        .query(&[("order_id", "999")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    let mut bad = order();
    bad["quantity"] = json!(0);
    let resp = sim
        .http
        .post(sim.url("/v2/order/place"))
        .bearer_auth(&token)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn orders_are_refused_between_midnight_and_0530_ist() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    sim.clock()
        .jump_to_ist(civil::date(2026, 2, 6).at(1, 0, 0, 0));
    let resp = sim
        .http
        .post(sim.url("/v3/order/place"))
        .bearer_auth(&token)
        .json(&order())
        .send()
        .await
        .unwrap();
    let (status, _, body) = parts(resp).await;
    assert_eq!(status, 423);
    assert_eq!(error_code(&body), "UDAPI100074");
}

#[tokio::test]
async fn eleventh_order_in_a_second_gets_429_and_extended_tokens_cannot_order() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    for i in 0..10 {
        let resp = sim
            .http
            .post(sim.url("/v2/order/place"))
            .bearer_auth(&token)
            .json(&order())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "order {i}");
    }
    let resp = sim
        .http
        .post(sim.url("/v2/order/place"))
        .bearer_auth(&token)
        .json(&order())
        .send()
        .await
        .unwrap();
    let (status, _, body) = parts(resp).await;
    assert_eq!(status, 429);
    assert_eq!(error_code(&body), "UDAPI10005");

    let extended = sim
        .handle
        .state()
        .issue_token(UCC, TokenKind::Extended)
        .unwrap();
    let resp = sim
        .http
        .post(sim.url("/v2/order/place"))
        .bearer_auth(&extended)
        .json(&order())
        .send()
        .await
        .unwrap();
    let (status, _, body) = parts(resp).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "UDAPI100067");
}
