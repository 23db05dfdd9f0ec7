//! End-to-end tests of the simulator over HTTP (loopback only, frozen simulator clock).

// Test helpers may unwrap like the tests themselves (clippy only exempts #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod calendar;
mod control;
mod feed;
mod oauth;
mod oauth2;
mod rest;
mod token_request;
mod totp_login;

use jiff::{Timestamp, civil};
use reqwest::redirect::Policy;
use serde_json::Value;
use upkeep_sim::{AppConfig, Plan, SimClock, SimConfig, SimHandle, UserConfig};

pub const UCC: &str = "2ZCDQ9";
pub const MOBILE: &str = "9876543210";
pub const PIN: &str = "482913";
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
pub const CLIENT_ID: &str = "615b1297-d443-3b39-ba19-1927fbcdddc7";
pub const CLIENT_SECRET: &str = "s3cr3tvalue";
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";

/// The exact 401 body Upstox sends for a bad token.
pub const INVALID_TOKEN_BODY: &str = r#"{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null,"error_code":"UDAPI100050","property_path":null,"invalid_value":null}]}"#;

pub fn ist(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Timestamp {
    upkeep_sim::ist::from_ist(civil::date(y, mo, d).at(h, mi, s, 0))
}

pub fn config() -> SimConfig {
    SimConfig {
        users: vec![UserConfig {
            ucc: UCC.into(),
            name: "Asha Rao".into(),
            email: "asha@example.com".into(),
            mobile: MOBILE.into(),
            pin: PIN.into(),
            totp_secret: TOTP_SECRET.into(),
            plan: Plan::Plus,
        }],
        apps: vec![AppConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uri: REDIRECT_URI.into(),
            notifier_url: None,
            user: UCC.into(),
        }],
        ..SimConfig::default()
    }
}

pub struct TestSim {
    pub handle: SimHandle,
    /// Does not follow redirects; keeps cookies.
    pub http: reqwest::Client,
}

impl TestSim {
    /// A simulator frozen at 2026-02-05 10:00:00 IST.
    pub async fn start() -> TestSim {
        TestSim::start_with(config()).await
    }

    pub async fn start_with(config: SimConfig) -> TestSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = SimClock::frozen(ist(2026, 2, 5, 10, 0, 0));
        let handle = upkeep_sim::spawn_with_clock(config, clock, listener)
            .await
            .unwrap();
        TestSim {
            handle,
            http: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    pub fn clock(&self) -> SimClock {
        self.handle.clock()
    }

    pub fn daily_token(&self) -> String {
        self.handle
            .state()
            .issue_token(UCC, upkeep_sim::TokenKind::Daily)
            .unwrap()
    }

    pub async fn get_with(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap()
}

/// The TOTP code an authenticator app would show at `at`.
pub fn totp_code(at: Timestamp) -> String {
    let seed = totp_rs::Secret::Encoded(TOTP_SECRET.into())
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, seed)
        .generate(u64::try_from(at.as_second()).unwrap())
}

/// A code that is wrong for the steps around `at`.
pub fn wrong_totp_code(at: Timestamp) -> String {
    let right: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|d| totp_code(Timestamp::from_second(at.as_second() + d).unwrap()))
        .collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !right.contains(c))
        .unwrap()
}

/// Status, Content-Type and JSON body.
pub async fn parts(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ct, body)
}

/// The `error_code` of an Upstox error envelope.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["error_code"].as_str().unwrap_or("<none>")
}

/// Asserts a 401 with the exact UDAPI100050 body and content type.
pub async fn assert_invalid_token(resp: reqwest::Response) {
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(resp.text().await.unwrap(), INVALID_TOKEN_BODY);
}
