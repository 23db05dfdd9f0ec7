//! The generic OAuth 2 token service (`POST /sim/oauth2/token`, RFC 6749 section 6).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::civil;
use serde_json::{Value, json};
use upkeep_sim::{AppConfig, Claims, SimError};

use crate::*;

/// Mints a refresh token for `client_id` through the control API.
async fn mint(sim: &TestSim, client_id: &str) -> String {
    let (status, _, body) = parts(
        sim.post_json("/sim/refresh-tokens", &json!({"client_id": client_id}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], client_id);
    body["refresh_token"].as_str().unwrap().to_owned()
}

/// Posts a form to the token service.
async fn post_form(sim: &TestSim, form: &[(&str, &str)]) -> reqwest::Response {
    sim.http
        .post(sim.url("/sim/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A refresh grant with the test app's credentials.
async fn refresh(sim: &TestSim, refresh_token: &str) -> (u16, Value) {
    refresh_as(sim, refresh_token, CLIENT_ID, CLIENT_SECRET).await
}

async fn refresh_as(
    sim: &TestSim,
    refresh_token: &str,
    client_id: &str,
    secret: &str,
) -> (u16, Value) {
    let (status, ct, body) = parts(
        post_form(
            sim,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
                ("client_secret", secret),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(ct, "application/json");
    (status, body)
}

fn claims(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_error: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn refresh_grant_issues_a_daily_upstox_token_and_a_rotated_refresh_token() {
    let sim = TestSim::start().await; // 2026-02-05 10:00 IST, frozen
    let rt0 = mint(&sim, CLIENT_ID).await;
    let resp = post_form(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt0.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let (status, _, body) = parts(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    // Daily: dies at the next 03:30 IST, 17.5 hours away.
    assert_eq!(body["expires_in"], 17 * 3600 + 1800);
    let access = body["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c.sub, UCC);
    assert_eq!(c.exp, ist(2026, 2, 6, 3, 30, 0).as_second());
    let (status, _, profile) = parts(sim.get_with("/v2/user/profile", access).await).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["data"]["user_id"], UCC);

    let rt1 = body["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt0);
    let (status, again) = refresh(&sim, rt1).await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["refresh_token"], body["refresh_token"]);
    assert_ne!(again["access_token"], body["access_token"]);
    let counters = sim.handle.state().counters();
    assert_eq!(
        (counters.oauth2_requests, counters.oauth2_grants),
        (2, 2),
        "{counters:?}"
    );
}

#[tokio::test]
async fn a_used_refresh_token_is_refused_but_its_successor_still_works() {
    let sim = TestSim::start().await;
    let rt0 = mint(&sim, CLIENT_ID).await;
    let (status, first) = refresh(&sim, &rt0).await;
    assert_eq!(status, 200, "{first}");

    let (status, replay) = refresh(&sim, &rt0).await;
    assert_error(status, &replay, 400, "invalid_grant");

    let rt1 = first["refresh_token"].as_str().unwrap();
    let (status, next) = refresh(&sim, rt1).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(sim.handle.state().counters().oauth2_refused, 1);
}

#[tokio::test]
async fn wrong_client_credentials_are_invalid_client_and_do_not_use_up_the_token() {
    let sim = TestSim::start().await;
    let rt0 = mint(&sim, CLIENT_ID).await;
    let resp = post_form(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt0.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", "not-the-secret"),
        ],
    )
    .await;
    assert!(resp.headers().get("www-authenticate").is_some());
    let (status, _, body) = parts(resp).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, body) = refresh_as(&sim, &rt0, "no-such-client", CLIENT_SECRET).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, _, body) = parts(
        post_form(
            &sim,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt0.as_str()),
            ],
        )
        .await,
    )
    .await;
    assert_error(status, &body, 401, "invalid_client");

    let (status, ok) = refresh(&sim, &rt0).await;
    assert_eq!(status, 200, "{ok}");
}

#[tokio::test]
async fn client_credentials_in_http_basic_are_accepted() {
    let sim = TestSim::start().await;
    let rt0 = mint(&sim, CLIENT_ID).await;
    let basic = STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt0.as_str()),
    ];
    let resp = sim
        .http
        .post(sim.url("/sim/oauth2/token"))
        .header("Authorization", format!("Basic {basic}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let (status, _, body) = parts(resp).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_refresh_token_of_another_app_is_invalid_grant() {
    let sim = TestSim::start().await;
    let other = "0c9d5e11-2222-4c3b-9a1f-000000000002";
    sim.handle
        .state()
        .add_app(AppConfig {
            client_id: other.into(),
            client_secret: "other-secret".into(),
            redirect_uri: REDIRECT_URI.into(),
            notifier_url: None,
            user: UCC.into(),
        })
        .unwrap();
    let theirs = sim.handle.state().issue_refresh_token(other).unwrap();
    let (status, body) = refresh(&sim, &theirs).await;
    assert_error(status, &body, 400, "invalid_grant");
    let (status, body) = refresh_as(&sim, &theirs, other, "other-secret").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_and_revoked_refresh_tokens_are_invalid_grant() {
    let sim = TestSim::start().await;
    let (status, body) = refresh(&sim, "rt_never_issued").await;
    assert_error(status, &body, 400, "invalid_grant");

    let rt0 = mint(&sim, CLIENT_ID).await;
    let (status, _, revoked) = parts(
        sim.post_json("/sim/refresh-tokens/revoke", &json!({"refresh_token": rt0}))
            .await,
    )
    .await;
    assert_eq!((status, &revoked["revoked"]), (200, &json!(true)));
    let (status, body) = refresh(&sim, &rt0).await;
    assert_error(status, &body, 400, "invalid_grant");
    assert!(!sim.handle.state().revoke_refresh_token(&rt0));
}

#[tokio::test]
async fn malformed_token_requests_get_rfc6749_errors() {
    let sim = TestSim::start().await;
    let rt0 = mint(&sim, CLIENT_ID).await;
    let creds = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    type Form<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Form, u16, &str)> = vec![
        (
            vec![("refresh_token", rt0.as_str()), creds[0], creds[1]],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", "abc"),
                creds[0],
                creds[1],
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "refresh_token"), creds[0], creds[1]],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt0.as_str()),
                ("refresh_token", "rt_other"),
                creds[0],
                creds[1],
            ],
            400,
            "invalid_request",
        ),
    ];
    for (form, want_status, want_error) in cases {
        let (status, _, body) = parts(post_form(&sim, &form).await).await;
        assert_error(status, &body, want_status, want_error);
    }
    // None of that used the refresh token up.
    let (status, body) = refresh(&sim, &rt0).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn injected_errors_answer_5xx_and_leave_the_refresh_token_usable() {
    let sim = TestSim::start().await;
    let rt0 = mint(&sim, CLIENT_ID).await;
    sim.post_json("/sim/faults", &json!({"error_rate": 1.0}))
        .await;
    let (status, body) = refresh(&sim, &rt0).await;
    assert_error(status, &body, 500, "server_error");
    assert_eq!(sim.handle.state().counters().injected_errors, 1);

    sim.post_json(
        "/sim/faults",
        &json!({"error_rate": 0.0, "login_down": true}),
    )
    .await;
    let (status, body) = refresh(&sim, &rt0).await;
    assert_eq!(
        status, 200,
        "login_down is Upstox's login, not this service: {body}"
    );
}

#[tokio::test]
async fn after_the_rollover_a_refresh_gives_a_token_for_the_new_day() {
    let sim = TestSim::start().await;
    let rt0 = mint(&sim, CLIENT_ID).await;
    sim.clock()
        .jump_to_ist(civil::date(2026, 2, 6).at(3, 0, 0, 0));
    let (status, before) = refresh(&sim, &rt0).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["expires_in"], 1800);
    let old_access = before["access_token"].as_str().unwrap().to_owned();

    sim.clock()
        .jump_to_ist(civil::date(2026, 2, 6).at(5, 30, 0, 0));
    assert_invalid_token(sim.get_with("/v2/user/profile", &old_access).await).await;
    let (status, after) = refresh(&sim, before["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["expires_in"], 22 * 3600);
    let access = after["access_token"].as_str().unwrap();
    assert_eq!(claims(access).exp, ist(2026, 2, 7, 3, 30, 0).as_second());
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", access).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn refresh_tokens_are_minted_only_for_known_apps() {
    let sim = TestSim::start().await;
    let (status, _, body) = parts(
        sim.post_json("/sim/refresh-tokens", &json!({"client_id": "nope"}))
            .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());
    assert!(matches!(
        sim.handle.state().issue_refresh_token("nope"),
        Err(SimError::UnknownApp(_))
    ));
}
