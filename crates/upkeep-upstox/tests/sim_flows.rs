//! The client against the project's Upstox simulator (upkeep-sim), on loopback.
//! Every test runs its own simulator with a frozen clock that the test moves.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach the helpers here.
#![allow(clippy::unwrap_used)]

use jiff::{SignedDuration, Timestamp, civil};
use upkeep_core::{AccessToken, Secret};
use upkeep_sim::{Credentials, Faults, FaultsPatch, SimClock, SimConfig, SimHandle, TokenKind};
use upkeep_upstox::{
    ErrorClass, Fault, Hosts, TotpLogin, UpstoxClient, UpstoxError, parse_notifier,
};
use url::Url;

/// 2026-02-05 11:30:10 IST: a weekday morning, 10 s into a 30 s TOTP step, outside the
/// funds maintenance window.
fn morning() -> Timestamp {
    "2026-02-05T06:00:10Z".parse().unwrap()
}

struct Env {
    sim: SimHandle,
    client: UpstoxClient,
    creds: Credentials,
}

async fn start_with(config: SimConfig) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = upkeep_sim::spawn_with_clock(config, SimClock::frozen(morning()), listener)
        .await
        .unwrap();
    let base = Url::parse(&sim.base_url()).unwrap();
    let client = UpstoxClient::new(Hosts::all(&base)).unwrap();
    let creds = sim.credentials()[0].clone();
    Env { sim, client, creds }
}

async fn start() -> Env {
    start_with(SimConfig::demo()).await
}

impl Env {
    fn daily_token(&self) -> AccessToken {
        AccessToken::new(
            self.sim
                .state()
                .issue_token(&self.creds.ucc, TokenKind::Daily)
                .unwrap(),
        )
    }

    fn login(&self) -> TotpLogin {
        TotpLogin {
            mobile: self.creds.mobile.clone(),
            pin: Secret::new(self.creds.pin.clone()),
            totp_secret: Secret::new(self.creds.totp_secret.clone()),
            client_id: self.creds.client_id.clone(),
            client_secret: Secret::new(self.creds.client_secret.clone()),
            redirect_uri: self.creds.redirect_uri.clone(),
        }
    }

    fn clock(&self) -> impl Fn() -> Timestamp + use<> {
        let clock = self.sim.clock();
        move || clock.now()
    }

    /// Drives the dialog and the simulator's login page ("Approve" shortcut) like a
    /// browser would, stopping at the redirect to the app: returns that URL.
    async fn browser_approves(&self, state: &str) -> Url {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        let dialog =
            self.client
                .authorize_url(&self.creds.client_id, &self.creds.redirect_uri, state);
        let resp = browser.get(dialog.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 302, "dialog redirects to the login page");
        let login_page = dialog.join(location(&resp)).unwrap();
        let request_id = login_page
            .query_pairs()
            .find(|(k, _)| k == "request_id")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let resp = browser
            .post(login_page.join("/sim/login").unwrap())
            .form(&[("request_id", request_id.as_str()), ("approve", "1")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "approval redirects to the app");
        Url::parse(location(&resp)).unwrap()
    }
}

fn location(resp: &reqwest::Response) -> &str {
    resp.headers()[reqwest::header::LOCATION].to_str().unwrap()
}

fn query(url: &Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn oauth_code_exchange_yields_a_token_the_api_accepts() {
    let env = start().await;
    let back = env.browser_approves("st-42").await;
    assert!(back.as_str().starts_with(&env.creds.redirect_uri));
    assert_eq!(query(&back, "state").as_deref(), Some("st-42"));
    let code = query(&back, "code").unwrap();

    let grant = env
        .client
        .exchange_code(
            &code,
            &env.creds.client_id,
            &Secret::new(env.creds.client_secret.clone()),
            &env.creds.redirect_uri,
        )
        .await
        .unwrap();
    assert_eq!(grant.user_id, env.creds.ucc);
    assert!(grant.is_active);
    assert!(grant.extended_token.is_some());

    let profile = env.client.profile(&grant.access_token).await.unwrap();
    assert_eq!(profile.user_id, env.creds.ucc);
}

#[tokio::test]
async fn authorization_code_cannot_be_exchanged_twice() {
    let env = start().await;
    let code = query(&env.browser_approves("s").await, "code").unwrap();
    let secret = Secret::new(env.creds.client_secret.clone());
    let exchange = || {
        env.client.exchange_code(
            &code,
            &env.creds.client_id,
            &secret,
            &env.creds.redirect_uri,
        )
    };
    exchange().await.unwrap();
    let err = exchange().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert_eq!(err.code(), Some("UDAPI100057"));
    // Not the credentials: the strategy is not disabled, a new login may work.
    assert_eq!(err.fault(), Fault::Refusal, "{err}");
    assert!(err.restarts_login());
    assert!(err.to_string().contains("log in again"), "{err}");
}

#[tokio::test]
async fn exchange_with_a_wrong_client_secret_is_fatal_and_never_shows_the_secret() {
    let env = start().await;
    let code = query(&env.browser_approves("s").await, "code").unwrap();
    let err = env
        .client
        .exchange_code(
            &code,
            &env.creds.client_id,
            &Secret::new("wrong-secret-value"),
            &env.creds.redirect_uri,
        )
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert_eq!(err.code(), Some("UDAPI100069"));
    assert_eq!(err.fault(), Fault::Configuration);
    let shown = err.to_string();
    assert!(!shown.contains("wrong-secret-value"));
    assert!(
        shown.contains("client_id") && shown.contains("client_secret"),
        "names the config keys to fix: {shown}"
    );
}

#[tokio::test]
async fn exchange_with_another_redirect_uri_is_a_configuration_fault_naming_redirect_uri() {
    let env = start().await;
    let code = query(&env.browser_approves("s").await, "code").unwrap();
    let err = env
        .client
        .exchange_code(
            &code,
            &env.creds.client_id,
            &Secret::new(env.creds.client_secret.clone()),
            "http://127.0.0.1:9/elsewhere",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UDAPI100070"));
    assert_eq!(err.fault(), Fault::Configuration);
    assert!(err.to_string().contains("redirect_uri"), "{err}");
}

#[tokio::test]
async fn totp_login_whose_code_expired_starts_again_and_succeeds() {
    let env = start().await;
    env.sim
        .state()
        .patch_faults(FaultsPatch {
            expired_codes: Some(1),
            ..FaultsPatch::default()
        })
        .unwrap();
    let grant = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap();
    env.client.profile(&grant.access_token).await.unwrap();
    let c = env.sim.state().counters();
    assert_eq!((c.logins, c.token_exchanges), (2, 1), "one login run more");
    assert_eq!(c.failed_logins, 0);
}

#[tokio::test]
async fn totp_login_restarts_a_bounded_number_of_times_and_is_not_a_credential_fault() {
    let env = start().await;
    env.sim
        .state()
        .patch_faults(FaultsPatch {
            expired_codes: Some(100),
            ..FaultsPatch::default()
        })
        .unwrap();
    let err = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UDAPI100057"));
    assert_eq!(err.fault(), Fault::Refusal, "{err}");
    let c = env.sim.state().counters();
    assert_eq!(c.logins as usize, upkeep_upstox::totp::MAX_LOGIN_RUNS);
    assert_eq!(c.token_exchanges, 0);
}

#[tokio::test]
async fn totp_login_end_to_end_returns_a_token_the_api_accepts() {
    let env = start().await;
    let grant = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap();
    assert_eq!(grant.user_id, env.creds.ucc);
    let profile = env.client.profile(&grant.access_token).await.unwrap();
    assert_eq!(profile.user_id, env.creds.ucc);
    let counters = env.sim.state().counters();
    assert_eq!((counters.logins, counters.token_exchanges), (1, 1));
    assert_eq!(counters.failed_logins, 0);
}

#[tokio::test]
async fn totp_login_twice_in_a_row_works_with_a_fresh_session_each_time() {
    let env = start().await;
    let first = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap();
    env.sim.clock().advance(SignedDuration::from_secs(60));
    let second = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap();
    assert_ne!(first.access_token, second.access_token);
    env.client.profile(&second.access_token).await.unwrap();
}

#[tokio::test]
async fn totp_login_with_a_wrong_totp_secret_is_fatal_and_not_retried() {
    let env = start().await;
    let mut login = env.login();
    // valid base32, wrong seed
    login.totp_secret = Secret::new("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    let err = env
        .client
        .totp_login(&login, env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    let counters = env.sim.state().counters();
    assert_eq!(counters.failed_logins, 1, "exactly one wrong code was sent");
    assert_eq!(counters.otp_requests, 1, "no second attempt");
    assert_eq!(counters.token_exchanges, 0);
}

#[tokio::test]
async fn totp_login_with_a_wrong_pin_is_fatal() {
    let env = start().await;
    let mut login = env.login();
    login.pin = Secret::new("000000-not-the-pin");
    let err = env
        .client
        .totp_login(&login, env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert!(!err.to_string().contains("000000-not-the-pin"));
    assert_eq!(env.sim.state().counters().failed_logins, 1);
}

#[tokio::test]
async fn totp_login_with_a_seed_that_is_not_base32_sends_nothing() {
    let env = start().await;
    let mut login = env.login();
    login.totp_secret = Secret::new("this is not base32!");
    let err = env
        .client
        .totp_login(&login, env.clock())
        .await
        .unwrap_err();
    assert!(matches!(err, UpstoxError::TotpSecret), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert_eq!(env.sim.state().counters().otp_requests, 0);
}

#[tokio::test]
async fn totp_login_with_a_wrong_redirect_uri_is_fatal_at_the_dialog() {
    let env = start().await;
    let mut login = env.login();
    login.redirect_uri = "http://127.0.0.1:9/not-registered".into();
    let err = env
        .client
        .totp_login(&login, env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert_eq!(err.code(), Some("UDAPI100068"));
}

#[tokio::test]
async fn totp_login_while_the_login_service_is_down_is_transient() {
    let env = start().await;
    env.sim
        .state()
        .set_faults(Faults {
            login_down: true,
            ..Faults::default()
        })
        .unwrap();
    let err = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(err.status(), Some(503));
}

#[tokio::test]
async fn totp_login_refused_for_automation_is_fatal() {
    let env = start().await;
    env.sim
        .state()
        .set_faults(Faults {
            login_blocked: true,
            ..Faults::default()
        })
        .unwrap();
    let err = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert_eq!(
        err.code(),
        Some("1017016"),
        "the integer code, read as text"
    );
    assert_eq!(err.fault(), Fault::Credential);
}

#[tokio::test]
async fn totp_login_over_the_otp_limit_is_a_ten_minute_transient_wait() {
    let mut config = SimConfig::demo();
    config.otp_generate_limit = 1;
    let env = start_with(config).await;
    env.client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap();
    let err = env
        .client
        .totp_login(&env.login(), env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("1017069"));
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(err.fault(), Fault::Transient);
    assert_eq!(
        err.retry_after(),
        Some(upkeep_upstox::RetryAfter::Delay(
            std::time::Duration::from_secs(600)
        ))
    );
    assert_eq!(env.sim.state().counters().otp_limited, 1, "asked once");
}

#[tokio::test]
async fn a_wrong_totp_answered_with_http_200_is_still_a_credential_fault() {
    let mut config = SimConfig::demo();
    config.login_errors_as_200 = true;
    let env = start_with(config).await;
    let mut login = env.login();
    login.totp_secret = Secret::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    let err = env
        .client
        .totp_login(&login, env.clock())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(200));
    assert_eq!(err.fault(), Fault::Credential, "{err}");
    assert_eq!(env.sim.state().counters().failed_logins, 1, "not retried");
}

#[tokio::test]
async fn profile_after_the_0330_ist_rollover_is_token_invalid() {
    let env = start().await;
    let token = env.daily_token();
    env.client.profile(&token).await.unwrap();
    env.sim
        .clock()
        .jump_to_ist(civil::date(2026, 2, 6).at(3, 30, 1, 0));
    let err = env.client.profile(&token).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::TokenInvalid, "{err}");
    assert_eq!((err.status(), err.code()), (Some(401), Some("UDAPI100050")));
}

#[tokio::test]
async fn rate_limited_calls_are_transient() {
    let env = start().await;
    let token = env.daily_token();
    // The clock is frozen, so all of these fall in one second: 50 are admitted.
    for _ in 0..50 {
        env.client.profile(&token).await.unwrap();
    }
    let err = env.client.profile(&token).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!((err.status(), err.code()), (Some(429), Some("UDAPI10005")));
}

#[tokio::test]
async fn two_bots_with_their_own_tokens_share_one_users_rate_limit() {
    let env = start().await;
    // Two programs of one Upstox user, each with its own token (and client).
    let bot_a = env.daily_token();
    let bot_b = env.daily_token();
    let base = Url::parse(&env.sim.base_url()).unwrap();
    let other_client = UpstoxClient::new(Hosts::all(&base)).unwrap();
    for _ in 0..30 {
        env.client.profile(&bot_a).await.unwrap();
    }
    for _ in 0..20 {
        other_client.profile(&bot_b).await.unwrap();
    }
    // Bot B made only 20 calls, yet its 21st is refused: the bucket is the user's.
    let err = other_client.profile(&bot_b).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("UDAPI10005")));
    assert_eq!(err.class(), ErrorClass::Transient);
    // Quotes are another API with another bucket.
    env.client
        .ltp_v3(&bot_b, &["NSE_EQ|INE848E01016"])
        .await
        .unwrap();
}

#[tokio::test]
async fn the_token_api_limit_is_transient() {
    let mut config = SimConfig::demo();
    config.token_api_limit_per_minute = Some(1);
    let env = start_with(config).await;
    let secret = Secret::new(env.creds.client_secret.clone());
    let first = env
        .client
        .exchange_code(
            "nosuch",
            &env.creds.client_id,
            &secret,
            &env.creds.redirect_uri,
        )
        .await
        .unwrap_err();
    assert_eq!(first.code(), Some("UDAPI100057"));
    let err = env
        .client
        .exchange_code(
            "nosuch",
            &env.creds.client_id,
            &secret,
            &env.creds.redirect_uri,
        )
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("UDAPI100099")));
    assert_eq!(err.fault(), Fault::Transient);
}

#[tokio::test]
async fn injected_server_errors_are_transient() {
    let env = start().await;
    let token = env.daily_token();
    env.sim
        .state()
        .set_faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let err = env.client.profile(&token).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(err.status(), Some(500));
}

#[tokio::test]
async fn funds_at_0400_ist_is_maintenance_and_works_after_0530() {
    let env = start().await;
    env.sim
        .clock()
        .jump_to_ist(civil::date(2026, 2, 6).at(4, 0, 0, 0));
    let token = env.daily_token(); // issued after the rollover, valid until tomorrow 03:30
    let err = env.client.funds(&token).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Maintenance, "{err}");
    assert_eq!(err.status(), Some(423));

    env.sim
        .clock()
        .jump_to_ist(civil::date(2026, 2, 6).at(5, 30, 1, 0));
    let funds = env.client.funds(&token).await.unwrap();
    assert!(funds.equity.is_some());
}

#[tokio::test]
async fn ltp_with_one_unknown_key_fails_whole_and_names_the_key() {
    let env = start().await;
    let token = env.daily_token();
    let err = env
        .client
        .ltp_v3(&token, &["NSE_EQ|INE848E01016", "NSE_EQ|INE000X00000"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("UDAPI1087"));
    assert_eq!(err.invalid_value(), Some("NSE_EQ|INE000X00000"));
    assert_eq!(
        err.class(),
        ErrorClass::Fatal,
        "retrying the same keys will not help"
    );
    let shown = err.to_string();
    assert!(shown.contains("NSE_EQ|INE000X00000"), "{shown}");
    // Without the bad key the same call works.
    let quotes = env
        .client
        .ltp_v3(&token, &["NSE_EQ|INE848E01016"])
        .await
        .unwrap();
    assert_eq!(quotes.len(), 1);
}

#[tokio::test]
async fn extended_token_may_read_quotes_but_not_the_profile() {
    let env = start().await;
    let extended = AccessToken::new(
        env.sim
            .state()
            .issue_token(&env.creds.ucc, TokenKind::Extended)
            .unwrap(),
    );
    let err = env.client.profile(&extended).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotPermitted, "{err}");
    assert_eq!(err.code(), Some("UDAPI100067"));

    let quotes = env
        .client
        .ltp_v3(&extended, &["NSE_EQ|INE848E01016", "NSE_INDEX|Nifty 50"])
        .await
        .unwrap();
    let keys: Vec<&str> = quotes
        .values()
        .map(|q| q.instrument_token.as_str())
        .collect();
    assert!(keys.contains(&"NSE_EQ|INE848E01016"), "{keys:?}");
    assert!(keys.contains(&"NSE_INDEX|Nifty 50"), "{keys:?}");
    assert!(quotes.values().all(|q| q.last_price > 0.0));
}

#[tokio::test]
async fn logout_invalidates_the_token() {
    let env = start().await;
    let token = env.daily_token();
    env.client.logout(&token).await.unwrap();
    let err = env.client.profile(&token).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::TokenInvalid, "{err}");
}

#[tokio::test]
async fn token_request_ack_carries_the_next_0330_ist_and_the_notifier_url() {
    let env = start().await;
    let ack = env
        .client
        .request_access_token(
            &env.creds.client_id,
            &Secret::new(env.creds.client_secret.clone()),
        )
        .await
        .unwrap();
    // 2026-02-05 11:30 IST -> the window closes 2026-02-06 03:30 IST.
    assert_eq!(
        ack.authorization_expiry,
        "2026-02-05T22:00:00Z".parse().unwrap()
    );
    assert_eq!(
        ack.notifier_url.as_deref(),
        Some("http://127.0.0.1:8400/upstox/notifier")
    );
    assert_eq!(env.sim.state().pending_token_requests().len(), 1);
}

#[tokio::test]
async fn token_request_with_a_wrong_secret_is_fatal() {
    let env = start().await;
    let err = env
        .client
        .request_access_token(&env.creds.client_id, &Secret::new("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
}

#[tokio::test]
async fn approved_token_request_delivers_a_webhook_that_parses_into_a_working_token() {
    // Our side: a notifier endpoint that hands the raw body to the test.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notifier_url = format!("http://{}/notifier", receiver.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/notifier",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body.to_vec()).await;
                "ok"
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(receiver, app).await });

    let mut config = SimConfig::demo();
    config.apps[0].notifier_url = Some(notifier_url.clone());
    let env = start_with(config).await;
    let ack = env
        .client
        .request_access_token(
            &env.creds.client_id,
            &Secret::new(env.creds.client_secret.clone()),
        )
        .await
        .unwrap();
    assert_eq!(ack.notifier_url.as_deref(), Some(notifier_url.as_str()));

    let approval = env
        .sim
        .state()
        .approve_token_request(&env.creds.client_id)
        .await
        .unwrap();
    assert_eq!(approval.webhook_status, Some(200));
    let body = rx.recv().await.unwrap();
    let payload = parse_notifier(&body).unwrap();
    assert_eq!(payload.client_id, env.creds.client_id);
    assert_eq!(payload.user_id, env.creds.ucc);
    assert_eq!(payload.access_token.expose(), approval.access_token);
    assert_eq!(payload.issued_at, morning());
    assert_eq!(payload.expires_at, "2026-02-05T22:00:00Z".parse().unwrap());

    let profile = env.client.profile(&payload.access_token).await.unwrap();
    assert_eq!(profile.user_id, env.creds.ucc);
    server.abort();
}

// ---- the market calendar ----

fn nse() -> Vec<String> {
    vec!["NSE".into()]
}

#[tokio::test]
async fn the_years_calendar_decides_by_listed_exchanges_not_the_holiday_type() {
    // The simulator's default calendar for 2026 (the clock's year).
    let env = start().await;
    let cal = env.client.market_calendar(2026).await.unwrap().unwrap();
    assert_eq!(cal.years, vec![2026]);
    // Budget-day Saturday session (a TRADING_HOLIDAY listing NSE open).
    let budget = civil::date(2026, 2, 7);
    assert_eq!(cal.days[&budget].kind, "TRADING_HOLIDAY");
    assert_eq!(cal.is_open(&nse(), budget), Some(true));
    assert_eq!(cal.is_open(&["CDS".into()], budget), Some(false));
    // A settlement holiday is a trading day.
    assert_eq!(cal.is_open(&nse(), civil::date(2026, 4, 1)), Some(true));
    // Republic Day (a Monday) is closed.
    assert_eq!(cal.is_open(&nse(), civil::date(2026, 1, 26)), Some(false));
    // Upstox serves only its current year: asking for another gives nothing.
    assert_eq!(env.client.market_calendar(2027).await.unwrap(), None);
}

#[tokio::test]
async fn one_date_timings_and_status_parse_into_sessions() {
    let env = start().await;
    let muhurat = civil::date(2026, 11, 6);
    let day = env.client.market_holiday(muhurat).await.unwrap().unwrap();
    let nse_session = day.open.iter().find(|s| s.exchange == "NSE").unwrap();
    let ist = |h, m| {
        upkeep_core::expiry::ist_timestamp(muhurat, civil::Time::constant(h, m, 0, 0)).unwrap()
    };
    assert_eq!(nse_session.start, ist(18, 0));
    assert_eq!(nse_session.end, ist(19, 0));
    assert_eq!(
        env.client
            .market_holiday(civil::date(2026, 2, 5))
            .await
            .unwrap(),
        None
    );
    // Timings: regular day all exchanges; a Sunday none.
    let timings = env
        .client
        .market_timings(civil::date(2026, 2, 5))
        .await
        .unwrap();
    assert!(timings.iter().any(|s| s.exchange == "NSE"));
    assert!(
        env.client
            .market_timings(civil::date(2026, 2, 8))
            .await
            .unwrap()
            .is_empty()
    );
    let status = env
        .client
        .market_status(&env.daily_token(), "NSE")
        .await
        .unwrap();
    assert_eq!(status.exchange, "NSE");
    assert_eq!(status.status, "NORMAL_OPEN");
    assert_eq!(status.last_updated, Some(morning()));
    let err = env
        .client
        .market_status(&env.daily_token(), "../x")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstoxError::InvalidInput(_)), "{err}");
}

#[tokio::test]
async fn calendar_errors_are_classified_like_other_calls() {
    let env = start().await;
    env.sim
        .state()
        .patch_faults(FaultsPatch {
            calendar_down: Some(true),
            ..FaultsPatch::default()
        })
        .unwrap();
    let err = env.client.market_calendar(2026).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(err.code(), Some("UDAPI100500"));
    env.sim.state().set_faults(Faults::default()).unwrap();
    // An expired token on the status call.
    let token = env.daily_token();
    env.sim.clock().set("2026-02-06T00:00:00Z".parse().unwrap());
    let err = env.client.market_status(&token, "NSE").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::TokenInvalid, "{err}");
    // The simulator gone: a network error, transient.
    let base = Url::parse(&env.sim.base_url()).unwrap();
    env.sim.shutdown().await;
    let err = UpstoxClient::new(Hosts::all(&base))
        .unwrap()
        .market_calendar(2026)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}
