use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};

use crate::*;

/// A client like upstox-totp's session: keeps cookies, follows redirects when asked.
fn session(follow: bool) -> reqwest::Client {
    let policy = if follow {
        reqwest::redirect::Policy::limited(5)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .redirect(policy)
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, String, Value) {
    parts(
        client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "*/*")
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

struct Step1 {
    user_id: String,
    client_id: String,
}

/// Step 1: the dialog, followed to the login page.
async fn open_dialog(sim: &TestSim, client: &reqwest::Client) -> Step1 {
    let resp = client
        .get(sim.url("/v2/login/authorization/dialog"))
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let q: HashMap<String, String> = resp
        .url()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(
        !resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("json")
    );
    assert!(q.contains_key("user_type"), "{q:?}");
    Step1 {
        user_id: q["user_id"].clone(),
        client_id: q["client_id"].clone(),
    }
}

async fn generate_otp(
    sim: &TestSim,
    client: &reqwest::Client,
    user_id: &str,
) -> (u16, String, Value) {
    post(
        client,
        sim.url("/login/open/v6/auth/1fa/otp/generate"),
        json!({"data": {"mobileNumber": MOBILE, "userId": user_id}}),
    )
    .await
}

async fn verify_otp(
    sim: &TestSim,
    client: &reqwest::Client,
    otp: &str,
    token: &str,
) -> (u16, String, Value) {
    post(
        client,
        sim.url("/login/open/v4/auth/1fa/otp-totp/verify"),
        json!({"data": {"otp": otp, "validateOtpToken": token}}),
    )
    .await
}

async fn submit_pin(
    sim: &TestSim,
    client: &reqwest::Client,
    client_id: &str,
    pin: &str,
) -> (u16, String, Value) {
    let url = format!(
        "{}?client_id={client_id}&redirect_uri=https://api-v2.upstox.com/login/authorization/redirect",
        sim.url("/login/open/v3/auth/2fa")
    );
    let pin = base64::engine::general_purpose::STANDARD.encode(pin);
    post(
        client,
        url,
        json!({"data": {"twoFAMethod": "SECRET_PIN", "inputText": pin}}),
    )
    .await
}

#[tokio::test]
async fn headless_totp_login_yields_a_code_that_exchanges_for_a_token() {
    let sim = TestSim::start().await;
    let client = session(true);
    let step1 = open_dialog(&sim, &client).await;
    assert_eq!(step1.client_id, CLIENT_ID);

    let (status, ct, body) = generate_otp(&sim, &client, &step1.user_id).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    assert_eq!(body["success"], true);
    let data = &body["data"];
    for f in ["message", "validateOTPToken", "userType"] {
        assert!(data[f].is_string(), "{f}: {data}");
    }
    assert!(data["nextRequestInterval"].is_i64());
    assert_eq!(data["isTotpEnabled"], true);
    let otp_token = data["validateOTPToken"].as_str().unwrap().to_string();

    let otp = totp_code(sim.clock().now());
    let (status, ct, body) = verify_otp(&sim, &client, &otp, &otp_token).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let data = &body["data"];
    assert!(data["userProfile"]["profileId"].is_i64(), "{data}");
    assert_eq!(data["userProfile"]["userId"], UCC);
    assert_eq!(data["isSecretPinSet"], true);

    let (status, ct, body) = submit_pin(&sim, &client, &step1.client_id, PIN).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let data = &body["data"];
    assert!(data["refreshTokenExpiry"].is_i64(), "{data}");
    for f in [
        "isPlusPlanFastWebsocketEnabled",
        "isNewRefreshTokenCreated",
        "isExternalClientOAuthApp",
    ] {
        assert!(data[f].is_boolean(), "{f}: {data}");
    }

    let url = format!(
        "{}?client_id={}&redirect_uri=https://api-v2.upstox.com/login/authorization/redirect&requestId=WPRO-abcdefghij&response_type=code",
        sim.url("/login/v2/oauth/authorize"),
        step1.client_id
    );
    let (status, ct, body) = post(&client, url, json!({"data": {"userOAuthApproval": true}})).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    assert_eq!(body["data"]["isApproved"], true);
    let redirect = url::Url::parse(body["data"]["redirectUri"].as_str().unwrap()).unwrap();
    let code = redirect
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    // Step 6: a fresh session and a hand-built, not URL-encoded body.
    let fresh = session(false);
    let body = format!(
        "code={code}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&redirect_uri={REDIRECT_URI}&grant_type=authorization_code"
    );
    let resp = fresh
        .post(sim.url("/v2/login/authorization/token"))
        .header("accept", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, ct, body) = parts(resp).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    assert_eq!(body["user_id"], UCC);
    assert_eq!(body["ddpi"], false);
    let token = body["access_token"].as_str().unwrap();
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", token).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_totp_counts_down_attempts_then_locks_the_user() {
    let sim = TestSim::start().await;
    let client = session(true);
    let step1 = open_dialog(&sim, &client).await;
    let (_, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    let otp_token = body["data"]["validateOTPToken"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = wrong_totp_code(sim.clock().now());

    for left in (1..=4).rev() {
        let (status, ct, body) = verify_otp(&sim, &client, &wrong, &otp_token).await;
        assert_eq!((status, ct.as_str()), (400, "application/json"));
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], 1_017_016, "an integer code");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{left} attempts left")), "{msg}");
    }
    let (status, _, body) = verify_otp(&sim, &client, &wrong, &otp_token).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked")
    );

    // Locked: even the right code is refused, and new OTPs too.
    let right = totp_code(sim.clock().now());
    let (status, _, body) = verify_otp(&sim, &client, &right, &otp_token).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked")
    );
    let (status, _, _) = generate_otp(&sim, &client, &step1.user_id).await;
    assert_eq!(status, 403);
    assert!(sim.handle.state().is_locked(UCC));

    // Unlocking through the control API lets the user in again.
    let resp = sim
        .post_json(&format!("/sim/users/{UCC}/unlock"), &json!({}))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let (_, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    let otp_token = body["data"]["validateOTPToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = verify_otp(&sim, &client, &right, &otp_token).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_pin_counts_down_attempts() {
    let sim = TestSim::start().await;
    let client = session(true);
    let step1 = open_dialog(&sim, &client).await;
    let (_, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    let otp_token = body["data"]["validateOTPToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = verify_otp(&sim, &client, &totp_code(sim.clock().now()), &otp_token).await;
    assert_eq!(status, 200);
    let (status, _, body) = submit_pin(&sim, &client, CLIENT_ID, "000000").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 1_017_016);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 attempts left")
    );
    let (status, _, _) = submit_pin(&sim, &client, CLIENT_ID, PIN).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn pin_step_without_otp_session_is_refused() {
    let sim = TestSim::start().await;
    let (status, _, body) = submit_pin(&sim, &session(false), CLIENT_ID, PIN).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 1_017_016);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn an_expired_otp_session_answers_1017076() {
    let sim = TestSim::start().await;
    let client = session(true);
    let step1 = open_dialog(&sim, &client).await;
    let (_, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    let otp_token = body["data"]["validateOTPToken"]
        .as_str()
        .unwrap()
        .to_string();
    sim.clock().advance(jiff::SignedDuration::from_mins(16));
    let (status, _, body) =
        verify_otp(&sim, &client, &totp_code(sim.clock().now()), &otp_token).await;
    assert_eq!(status, 400);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], 1_017_076);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session to validate otp has expired")
    );
}

#[tokio::test]
async fn otp_generation_is_limited_per_user_for_ten_minutes() {
    let mut config = config();
    config.otp_generate_limit = 2;
    let sim = TestSim::start_with(config).await;
    let client = session(true);
    let step1 = open_dialog(&sim, &client).await;
    let started = sim.clock().now();
    for _ in 0..2 {
        let (status, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    assert_eq!(status, 400);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], 1_017_069);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("maximum number of times you can generate an OTP")
            && msg.contains("try again after 10 mins"),
        "{msg}"
    );
    assert_eq!(sim.handle.state().counters().otp_limited, 1);
    sim.clock()
        .set(started + jiff::SignedDuration::from_secs(599));
    let (status, _, _) = generate_otp(&sim, &client, &step1.user_id).await;
    assert_eq!(status, 400, "still limited at 9:59");
    sim.clock()
        .set(started + jiff::SignedDuration::from_secs(600));
    let (status, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    assert_eq!(status, 200, "free again at 10:00: {body}");
}

#[tokio::test]
async fn login_errors_can_come_with_http_200() {
    let mut config = config();
    config.login_errors_as_200 = true;
    let sim = TestSim::start_with(config).await;
    let client = session(true);
    let step1 = open_dialog(&sim, &client).await;
    let (_, _, body) = generate_otp(&sim, &client, &step1.user_id).await;
    let otp_token = body["data"]["validateOTPToken"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = wrong_totp_code(sim.clock().now());
    let (status, _, body) = verify_otp(&sim, &client, &wrong, &otp_token).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attempts left")
    );
}

#[tokio::test]
async fn login_blocked_fault_refuses_headless_login() {
    let sim = TestSim::start().await;
    sim.post_json("/sim/faults", &json!({"login_blocked": true}))
        .await;
    let (status, ct, body) = generate_otp(&sim, &session(false), UCC).await;
    assert_eq!((status, ct.as_str()), (403, "application/json"));
    assert_eq!(body["error"]["code"], 1_017_016);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked")
    );
}

#[tokio::test]
async fn login_down_fault_makes_login_service_answer_503() {
    let sim = TestSim::start().await;
    sim.post_json("/sim/faults", &json!({"login_down": true}))
        .await;
    let (status, ct, body) = generate_otp(&sim, &session(false), UCC).await;
    assert_eq!((status, ct.as_str()), (503, "application/json"));
    assert_eq!(body["success"], false);
    let resp = sim
        .http
        .get(sim.url("/v2/login/authorization/dialog"))
        .query(&[("client_id", CLIENT_ID), ("redirect_uri", REDIRECT_URI)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    // Token-protected APIs keep working.
    let token = sim.daily_token();
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", &token).await).await;
    assert_eq!(status, 200);
}
