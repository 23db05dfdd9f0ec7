use serde_json::{Value, json};

use crate::*;

#[tokio::test]
async fn clock_jump_through_control_api_moves_token_expiry() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let (status, _, clock) = parts(
        sim.post_json("/sim/clock", &json!({"jump_to_ist": "2026-02-06T03:29:50"}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{clock}");
    assert_eq!(clock["now_ist"], "2026-02-06T03:29:50+05:30");
    assert_eq!(clock["now"], "2026-02-05T21:59:50Z");
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
    assert_eq!(status, 200);

    let (_, _, clock) = parts(
        sim.post_json("/sim/clock", &json!({"advance_secs": 10}))
            .await,
    )
    .await;
    assert_eq!(clock["now_ist"], "2026-02-06T03:30:00+05:30");
    assert_invalid_token(sim.get_with("/v2/user/profile", &token).await).await;

    let (_, _, clock) = parts(
        sim.post_json("/sim/clock", &json!({"set": "2026-03-01T00:00:00Z"}))
            .await,
    )
    .await;
    assert_eq!(clock["now"], "2026-03-01T00:00:00Z");
    let (_, _, clock) = parts(sim.http.get(sim.url("/sim/clock")).send().await.unwrap()).await;
    assert_eq!(clock["speed"], 0.0);
}

#[tokio::test]
async fn bad_clock_command_is_refused_with_a_reason() {
    let sim = TestSim::start().await;
    for body in [
        json!({}),
        json!({"speed": -1.0}),
        json!({"jump_to_ist": "not a time"}),
    ] {
        let (status, _, reply) = parts(sim.post_json("/sim/clock", &body).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(reply["error"].is_string(), "{reply}");
    }
}

#[tokio::test]
async fn error_rate_one_makes_every_api_call_fail_with_udapi100500() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let (_, _, faults) = parts(
        sim.post_json("/sim/faults", &json!({"error_rate": 1.0}))
            .await,
    )
    .await;
    assert_eq!(faults["error_rate"], 1.0);
    assert_eq!(faults["login_down"], false);
    for path in [
        "/v2/user/profile",
        "/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016",
    ] {
        let (status, ct, body) = parts(sim.get_with(path, &token).await).await;
        assert_eq!((status, ct.as_str()), (500, "application/json"), "{path}");
        assert_eq!(error_code(&body), "UDAPI100500");
    }
    // The control API is not affected, so the fault can be lifted.
    let (status, _, _) = parts(
        sim.post_json("/sim/faults", &json!({"error_rate": 0.0}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
    assert_eq!(status, 200);
    assert_eq!(sim.handle.state().counters().injected_errors, 2);
}

#[tokio::test]
async fn error_rate_outside_zero_to_one_is_refused() {
    let sim = TestSim::start().await;
    let (status, _, _) = parts(
        sim.post_json("/sim/faults", &json!({"error_rate": 1.5}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn control_api_adds_users_and_apps_and_mints_tokens() {
    let sim = TestSim::start().await;
    let user = json!({
        "ucc": "7QX4LM", "name": "Ravi K", "email": "ravi@example.com", "mobile": "9000000001",
        "pin": "1111", "totp_secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "plan": "normal"
    });
    let (status, _, _) = parts(sim.post_json("/sim/users", &user).await).await;
    assert_eq!(status, 200);
    let app = json!({
        "client_id": "app-2", "client_secret": "sec2", "redirect_uri": "http://127.0.0.1:9/cb2",
        "user": "7QX4LM"
    });
    let (status, _, _) = parts(sim.post_json("/sim/apps", &app).await).await;
    assert_eq!(status, 200);
    let orphan = json!({
        "client_id": "app-3", "client_secret": "s", "redirect_uri": "http://127.0.0.1:9/cb",
        "user": "NOBODY"
    });
    let (status, _, _) = parts(sim.post_json("/sim/apps", &orphan).await).await;
    assert_eq!(status, 404);

    let (status, _, minted) = parts(
        sim.post_json("/sim/tokens", &json!({"ucc": "7QX4LM", "kind": "daily"}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(minted["expires_at"], "2026-02-05T22:00:00Z");
    let token = minted["access_token"].as_str().unwrap();
    let (_, _, profile) = parts(sim.get_with("/v2/user/profile", token).await).await;
    assert_eq!(profile["data"]["user_id"], "7QX4LM");

    let creds = parts(
        sim.http
            .get(sim.url("/sim/credentials"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .2;
    assert_eq!(creds.as_array().unwrap().len(), 2);

    let (_, _, state) = parts(sim.http.get(sim.url("/sim/state")).send().await.unwrap()).await;
    assert_eq!(state["counters"]["api_requests"], 1);
    assert_eq!(state["users"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn minted_token_claims_look_like_upstox() {
    let sim = TestSim::start().await;
    let token = sim.daily_token();
    let mut parts_iter = token.split('.');
    let decode = |p: &str| -> Value {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    let header = decode(parts_iter.next().unwrap());
    assert_eq!(
        header,
        json!({"typ": "JWT", "key_id": "sk_v1.0", "alg": "HS256"})
    );
    let claims = decode(parts_iter.next().unwrap());
    assert_eq!(claims["sub"], UCC);
    assert_eq!(claims["iss"], "udapi-gateway-service");
    assert_eq!(claims["isPlusPlan"], true);
    assert_eq!(claims["isMultiClient"], false);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(iat, ist(2026, 2, 5, 10, 0, 0).as_second());
    assert_eq!(
        claims["exp"].as_i64().unwrap(),
        ist(2026, 2, 6, 3, 30, 0).as_second()
    );
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 24);
    assert_eq!(&jti[..8], format!("{:08x}", iat));
}

#[tokio::test]
async fn credentials_serialize_with_the_documented_keys() {
    let sim = TestSim::start().await;
    let creds = serde_json::to_value(sim.handle.credentials()).unwrap();
    let obj = creds[0].as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "client_id",
            "client_secret",
            "mobile",
            "pin",
            "plan",
            "redirect_uri",
            "totp_secret",
            "ucc"
        ]
    );
    assert_eq!(obj["plan"], "plus");
}

#[tokio::test]
async fn unknown_route_answers_404_in_upstox_envelope() {
    let sim = TestSim::start().await;
    let (status, ct, body) = parts(sim.http.get(sim.url("/v2/nope")).send().await.unwrap()).await;
    assert_eq!((status, ct.as_str()), (404, "application/json"));
    assert_eq!(error_code(&body), "UDAPI100060");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = TestSim::start().await;
    let url = sim.url("/sim/clock");
    let http = sim.http.clone();
    sim.handle.shutdown().await;
    assert!(http.get(url).send().await.is_err());
}
