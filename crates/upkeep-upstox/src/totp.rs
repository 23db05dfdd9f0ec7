//! The headless TOTP login (reference 10.1): the same six requests the login page
//! makes, in order, with session state in a cookie jar. A fresh HTTP client (and so a
//! fresh jar and request id) is built for every login. Requests are sequential; there
//! is no retry inside: a wrong PIN or TOTP sent twice can lock the account.

use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use rand::Rng as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use totp_rs::{Algorithm, TOTP};
use upkeep_core::Secret;
use url::Url;

use crate::client::{UpstoxClient, read_body};
use crate::error::{LoginStep, UpstoxError};
use crate::hosts::{Hosts, endpoint};
use crate::models::TokenGrant;

/// The redirect URI the login page itself sends in steps 4 and 5 (not the app's).
pub const LOGIN_PAGE_REDIRECT_URI: &str = "https://api-v2.upstox.com/login/authorization/redirect";

const USER_AGENT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36";
const TOTP_STEP_MS: i64 = 30_000;
/// Below this much time left in the current 30 s step, wait for the next step.
const MIN_TOTP_LIFE_MS: i64 = 3_000;
/// How far into the next step to wake up, so the code is computed inside it.
const STEP_WAKE_MARGIN_MS: i64 = 250;
const MAX_REDIRECTS: usize = 10;
/// How many times one call to [`UpstoxClient::totp_login`] runs the login: a refused
/// authorization code (`UDAPI100057`) or an expired OTP session starts it again, at
/// most this many times in all.
pub const MAX_LOGIN_RUNS: usize = 3;

/// What a headless login needs. Every secret is a [`Secret`]; `Debug` redacts them.
#[derive(Debug, Clone)]
pub struct TotpLogin {
    /// The 10-digit mobile number the account logs in with.
    pub mobile: String,
    /// The 6-digit login PIN.
    pub pin: Secret,
    /// The base32 TOTP seed shown when TOTP was enabled on the account.
    pub totp_secret: Secret,
    /// The app's API key.
    pub client_id: String,
    /// The app's API secret.
    pub client_secret: Secret,
    /// The app's registered redirect URI.
    pub redirect_uri: String,
}

/// A TOTP generator for a base32 seed (SHA-1, 6 digits, 30 s: what Upstox uses).
pub struct TotpCode(TOTP);

impl TotpCode {
    /// Reads a base32 seed; spaces, `=` padding and lower case are accepted.
    pub fn from_base32(seed: &Secret) -> Result<Self, UpstoxError> {
        let normalized: String = seed
            .expose()
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = totp_rs::Secret::Encoded(normalized)
            .to_bytes()
            .map_err(|_| UpstoxError::TotpSecret)?;
        if bytes.is_empty() {
            return Err(UpstoxError::TotpSecret);
        }
        Ok(Self(TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes)))
    }

    /// The code for the 30 s step containing `at`.
    pub fn at(&self, at: Timestamp) -> Result<String, UpstoxError> {
        let secs = u64::try_from(at.as_second())
            .map_err(|_| UpstoxError::InvalidInput("the clock reads before 1970".into()))?;
        Ok(self.0.generate(secs))
    }

    /// A code with at least ~3 s of life left: if the current step is about to end,
    /// sleeps (tokio) into the next step and reads the time again from `now`.
    pub async fn fresh(&self, now: &impl Fn() -> Timestamp) -> Result<String, UpstoxError> {
        let t = now();
        let left = TOTP_STEP_MS - t.as_millisecond().rem_euclid(TOTP_STEP_MS);
        if left >= MIN_TOTP_LIFE_MS {
            return self.at(t);
        }
        let wait = u64::try_from(left + STEP_WAKE_MARGIN_MS).unwrap_or(0);
        tracing::debug!(
            wait_ms = wait,
            "TOTP step about to roll over; waiting for the next one"
        );
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // One wait only: if the caller's clock did not move (a frozen test clock), the
        // server's clock did not either, and the current code is the right one.
        self.at(now())
    }
}

impl std::fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpCode([REDACTED])")
    }
}

impl UpstoxClient {
    /// Logs in without a browser (reference 10.1) and returns the exchanged token.
    /// `now` is the caller's clock (the daemon's clock may be the simulator's); it
    /// decides which TOTP code is sent.
    ///
    /// Errors: a wrong PIN/TOTP or a blocked account is `ErrorClass::Fatal`; do not
    /// retry those automatically. A refused authorization code (`UDAPI100057`: used or
    /// expired, codes live minutes) or an expired OTP session starts the whole login
    /// again, up to [`MAX_LOGIN_RUNS`] runs; the last error is returned after that.
    pub async fn totp_login(
        &self,
        login: &TotpLogin,
        now: impl Fn() -> Timestamp,
    ) -> Result<TokenGrant, UpstoxError> {
        let mut run = 1;
        loop {
            match self.totp_login_once(login, &now).await {
                Err(e) if run < MAX_LOGIN_RUNS && e.restarts_login() => {
                    tracing::warn!(run, error = %e, "TOTP login: starting the login again");
                    run += 1;
                }
                result => return result,
            }
        }
    }

    async fn totp_login_once(
        &self,
        login: &TotpLogin,
        now: &impl Fn() -> Timestamp,
    ) -> Result<TokenGrant, UpstoxError> {
        // Validate everything before the first request.
        let totp = TotpCode::from_base32(&login.totp_secret)?;
        for (what, empty) in [
            ("mobile number", login.mobile.trim().is_empty()),
            ("PIN", login.pin.is_empty()),
            ("client id", login.client_id.trim().is_empty()),
            ("client secret", login.client_secret.is_empty()),
            ("redirect URI", login.redirect_uri.trim().is_empty()),
        ] {
            if empty {
                return Err(UpstoxError::InvalidInput(format!(
                    "the {what} for the TOTP login is empty; set it in the account's config"
                )));
            }
        }

        let session = LoginSession::new(self, login)?;
        tracing::debug!(request_id = %session.request_id, "TOTP login: starting");

        let dialog = self.authorize_url(&login.client_id, &login.redirect_uri, "");
        let landing = session.dialog(dialog).await?;
        let otp_token = session
            .otp_generate(login.mobile.trim(), &landing.user_id)
            .await?;
        let code = totp.fresh(now).await?;
        session.totp_verify(&code, &otp_token).await?;
        session.pin(&landing.client_id, &login.pin).await?;
        let auth_code = session.authorize(&landing.client_id).await?;
        drop(session); // step 6 runs with no login headers and no cookies

        tracing::debug!("TOTP login: exchanging the authorization code");
        self.exchange_code(
            &auth_code,
            login.client_id.trim(),
            &login.client_secret,
            login.redirect_uri.trim(),
        )
        .await
    }
}

/// What step 1 reads from the login page URL.
#[derive(Debug)]
struct Landing {
    user_id: String,
    client_id: String,
}

/// One login's HTTP state: a cookie jar, the browser-like headers, one request id.
struct LoginSession {
    http: reqwest::Client,
    hosts: Hosts,
    request_id: String,
}

impl LoginSession {
    fn new(client: &UpstoxClient, login: &TotpLogin) -> Result<Self, UpstoxError> {
        let config = client.config();
        let hosts = config.hosts.clone();
        let request_id = new_request_id();
        let headers = login_headers(&hosts, &request_id, &device_id(login))?;
        let policy_hosts = hosts.clone();
        // Follow redirects only within the login site: a redirect elsewhere (the app's
        // redirect URI) is read, not fetched.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if policy_hosts.may_follow(attempt.url()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .cookie_store(true)
            .default_headers(headers)
            .redirect(policy)
            .build()
            .map_err(|e| UpstoxError::Client(e.without_url().to_string()))?;
        Ok(Self {
            http,
            hosts,
            request_id,
        })
    }

    /// Step 1: the dialog, following redirects to the login page, whose URL carries
    /// `user_id`, `client_id` and `user_type`.
    async fn dialog(&self, url: Url) -> Result<Landing, UpstoxError> {
        const EP: &str = "GET /v2/login/authorization/dialog";
        let resp = self.http.get(url).send().await.map_err(|e| {
            crate::client::count_request(EP, None);
            UpstoxError::network(EP, e)
        })?;
        let status = resp.status();
        crate::client::count_request(EP, Some(status.as_u16()));
        let headers = resp.headers().clone();
        let landed = if status.is_redirection() {
            location(&headers, resp.url())
        } else {
            Some(resp.url().clone())
        };
        let is_json = is_json(&headers);
        let body = resp
            .bytes()
            .await
            .map_err(|e| UpstoxError::network(EP, e))?;
        tracing::debug!(
            endpoint = EP,
            status = status.as_u16(),
            "TOTP login: step 1 answered"
        );
        if !(status.is_success() || status.is_redirection()) || is_json {
            // A JSON answer here is an error (UDAPI100068 and friends), whatever the status.
            let err =
                crate::error::ApiError::from_response(EP, status.as_u16(), &headers, &body, false);
            return Err(err.into());
        }
        let landed = landed.ok_or_else(|| UpstoxError::Login {
            step: LoginStep::Dialog,
            detail: "the dialog redirected without a usable Location".into(),
        })?;
        let query = |key: &str| {
            landed
                .query_pairs()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| v.into_owned())
        };
        match (query("user_id"), query("client_id"), query("user_type")) {
            (Some(user_id), Some(client_id), Some(_user_type)) => {
                Ok(Landing { user_id, client_id })
            }
            _ => Err(UpstoxError::Login {
                step: LoginStep::Dialog,
                detail: "the dialog did not land on the login page (no user_id, client_id and \
                         user_type in its URL); check the client id and redirect URI"
                    .into(),
            }),
        }
    }

    /// Step 2: ask for an OTP; returns the `validateOTPToken` step 3 needs.
    async fn otp_generate(&self, mobile: &str, user_id: &str) -> Result<String, UpstoxError> {
        const EP: &str = "POST /login/open/v6/auth/1fa/otp/generate";
        let url = endpoint(&self.hosts.login, "login/open/v6/auth/1fa/otp/generate");
        let body = json!({ "data": { "mobileNumber": mobile, "userId": user_id } });
        let data = self.post(EP, url, &body).await?;
        if data.get("isTotpEnabled").and_then(Value::as_bool) == Some(false) {
            return Err(UpstoxError::Login {
                step: LoginStep::OtpGenerate,
                detail: "TOTP is not enabled on this Upstox account; enable it in the Upstox app \
                         and use the key it shows"
                    .into(),
            });
        }
        ["validateOTPToken", "validateOtpToken"]
            .iter()
            .find_map(|k| data.get(*k).and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| UpstoxError::Login {
                step: LoginStep::OtpGenerate,
                detail: "the answer had no validateOTPToken".into(),
            })
    }

    /// Step 3: send the TOTP code.
    async fn totp_verify(&self, code: &str, otp_token: &str) -> Result<(), UpstoxError> {
        const EP: &str = "POST /login/open/v4/auth/1fa/otp-totp/verify";
        let url = endpoint(&self.hosts.login, "login/open/v4/auth/1fa/otp-totp/verify");
        let body = json!({ "data": { "otp": code, "validateOtpToken": otp_token } });
        self.post(EP, url, &body).await.map(drop)
    }

    /// Step 4: the second factor, the PIN, base64-encoded once.
    async fn pin(&self, client_id: &str, pin: &Secret) -> Result<(), UpstoxError> {
        const EP: &str = "POST /login/open/v3/auth/2fa";
        let mut url = endpoint(&self.hosts.login, "login/open/v3/auth/2fa");
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", LOGIN_PAGE_REDIRECT_URI);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pin.expose().as_bytes());
        let body = json!({ "data": { "twoFAMethod": "SECRET_PIN", "inputText": encoded } });
        self.post(EP, url, &body).await.map(drop)
    }

    /// Step 5: approve the app; the authorization code is in `data.redirectUri`.
    async fn authorize(&self, client_id: &str) -> Result<String, UpstoxError> {
        const EP: &str = "POST /login/v2/oauth/authorize";
        let mut url = endpoint(&self.hosts.login, "login/v2/oauth/authorize");
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", LOGIN_PAGE_REDIRECT_URI)
            .append_pair("requestId", &self.request_id)
            .append_pair("response_type", "code");
        let body = json!({ "data": { "userOAuthApproval": true } });
        let resp = self.send(EP, url, &body).await?;
        let redirect = match resp {
            Answer::Redirect(to) => Some(to),
            Answer::Json(data) => data
                .get("redirectUri")
                .or_else(|| data.get("redirect_uri"))
                .and_then(Value::as_str)
                .and_then(|s| Url::parse(s).ok()),
        };
        redirect
            .as_ref()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, v)| k == "code" && !v.is_empty())
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| UpstoxError::Login {
                step: LoginStep::Authorize,
                detail: "the approval answer had no redirectUri with a code; approve the app once \
                         in a browser, then retry"
                    .into(),
            })
    }

    /// POSTs JSON and returns the success payload; a redirect away from the known
    /// hosts is an error here.
    async fn post(&self, ep: &'static str, url: Url, body: &Value) -> Result<Value, UpstoxError> {
        match self.send(ep, url, body).await? {
            Answer::Json(data) => Ok(data),
            Answer::Redirect(_) => Err(UpstoxError::Decode {
                endpoint: ep,
                status: 302,
                detail: "redirected away from the login service".into(),
            }),
        }
    }

    async fn send(&self, ep: &'static str, url: Url, body: &Value) -> Result<Answer, UpstoxError> {
        let resp = self.http.post(url).json(body).send().await.map_err(|e| {
            crate::client::count_request(ep, None);
            UpstoxError::network(ep, e)
        })?;
        let status = resp.status().as_u16();
        crate::client::count_request(ep, Some(status));
        let headers = resp.headers().clone();
        tracing::debug!(endpoint = ep, status, "TOTP login: step answered");
        if resp.status().is_redirection()
            && let Some(to) = location(&headers, resp.url())
        {
            return Ok(Answer::Redirect(to));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| UpstoxError::network(ep, e))?;
        read_body(ep, status, &headers, &body, false).map(|(_, data)| Answer::Json(data))
    }
}

enum Answer {
    Json(Value),
    Redirect(Url),
}

fn location(headers: &HeaderMap, base: &Url) -> Option<Url> {
    let raw = headers.get(header::LOCATION)?.to_str().ok()?;
    base.join(raw).ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            ct == "application/json" || ct.ends_with("+json")
        })
        .unwrap_or(false)
}

/// `WPRO-` and 10 random alphanumerics, fixed for one login.
fn new_request_id() -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..10)
        .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
        .collect();
    format!("WPRO-{tail}")
}

/// A stable 20-character device id per (client id, mobile), so repeated logins look
/// like the same browser rather than a new device each day.
fn device_id(login: &TotpLogin) -> String {
    let digest = Sha256::new()
        .chain_update(b"upkeep-device\0")
        .chain_update(login.client_id.trim().as_bytes())
        .chain_update(b"\0")
        .chain_update(login.mobile.trim().as_bytes())
        .finalize();
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

fn login_headers(hosts: &Hosts, request_id: &str, device: &str) -> Result<HeaderMap, UpstoxError> {
    let origin = hosts.login_page.origin().ascii_serialization();
    let device_details = format!(
        "platform=WEB|osName=Mac OS/10.15.7|osVersion=Chrome/140.0.0.0|appVersion=4.0.0|\
         modelName=Chrome|manufacturer=Apple|uuid={device}|userAgent=Upstox 3.0 {USER_AGENT}"
    );
    let pairs: [(&str, &str); 14] = [
        ("accept", "*/*"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("content-type", "application/json"),
        ("origin", &origin),
        ("referer", &origin),
        ("user-agent", USER_AGENT),
        ("x-device-details", &device_details),
        ("x-request-id", request_id),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"140\", \"Not=A?Brand\";v=\"24\", \"Google Chrome\";v=\"140\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"macOS\""),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-site"),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let value = HeaderValue::from_str(value)
            .map_err(|_| UpstoxError::Client(format!("header {name} has an invalid value")))?;
        headers.insert(header::HeaderName::from_static(name), value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B seed "12345678901234567890" in base32.
    const RFC_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn code() -> TotpCode {
        TotpCode::from_base32(&Secret::new(RFC_SEED)).unwrap()
    }

    #[test]
    fn totp_matches_rfc_6238_sha1_vectors() {
        // RFC 6238 B: T=59 -> 94287082 (8 digits); 6 digits are the last six.
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        assert_eq!(code().at(at(59)).unwrap(), "287082");
        assert_eq!(code().at(at(1_111_111_109)).unwrap(), "081804");
        assert_eq!(code().at(at(1_234_567_890)).unwrap(), "005924");
    }

    #[test]
    fn totp_seed_accepts_spaces_padding_and_lower_case() {
        let spaced =
            TotpCode::from_base32(&Secret::new("gezd gnbv gy3t qojq gezd gnbv gy3t qojq=="))
                .unwrap();
        let t = Timestamp::from_second(59).unwrap();
        assert_eq!(spaced.at(t).unwrap(), code().at(t).unwrap());
    }

    #[test]
    fn totp_seed_that_is_not_base32_is_rejected() {
        for bad in ["", "not base32 at all!", "0189"] {
            let err = TotpCode::from_base32(&Secret::new(bad)).unwrap_err();
            assert!(matches!(err, UpstoxError::TotpSecret), "{bad:?}: {err}");
        }
    }

    fn clock_from(start: Timestamp) -> impl Fn() -> Timestamp {
        let began = tokio::time::Instant::now();
        move || {
            let elapsed = tokio::time::Instant::now() - began;
            start + jiff::SignedDuration::try_from(elapsed).unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn totp_waits_for_the_next_step_when_the_code_is_about_to_roll_over() {
        // 28.5 s into a step: only 1.5 s left.
        let start = Timestamp::from_millisecond(1_770_250_770_000 - 1_500).unwrap();
        let now = clock_from(start);
        let began = tokio::time::Instant::now();
        let sent = code().fresh(&now).await.unwrap();
        let next_step = Timestamp::from_millisecond(1_770_250_770_000).unwrap();
        assert_eq!(sent, code().at(next_step).unwrap());
        assert_ne!(sent, code().at(start).unwrap());
        assert!(tokio::time::Instant::now() > began, "it waited");
    }

    #[tokio::test(start_paused = true)]
    async fn totp_does_not_wait_when_the_code_has_life_left() {
        let start = Timestamp::from_millisecond(1_770_250_770_000 + 5_000).unwrap();
        let now = clock_from(start);
        let began = tokio::time::Instant::now();
        assert_eq!(code().fresh(&now).await.unwrap(), code().at(start).unwrap());
        assert_eq!(tokio::time::Instant::now(), began, "no wait");
    }

    #[tokio::test(start_paused = true)]
    async fn totp_with_a_frozen_clock_sends_the_current_code_after_one_wait() {
        let start = Timestamp::from_millisecond(1_770_250_770_000 - 1_000).unwrap();
        let sent = code().fresh(&|| start).await.unwrap();
        assert_eq!(sent, code().at(start).unwrap());
    }

    #[test]
    fn request_id_has_the_login_page_shape() {
        let id = new_request_id();
        assert!(id.starts_with("WPRO-"));
        assert_eq!(id.len(), 15);
        assert!(id[5..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn login_headers_carry_the_login_page_origin() {
        let h =
            login_headers(&Hosts::default(), "WPRO-abcdefghij", "0123456789abcdef0123").unwrap();
        assert_eq!(h["origin"], "https://login.upstox.com");
        assert_eq!(h["referer"], "https://login.upstox.com");
        assert_eq!(h["x-request-id"], "WPRO-abcdefghij");
        assert!(
            h["x-device-details"]
                .to_str()
                .unwrap()
                .contains("uuid=0123456789abcdef0123|")
        );
    }

    #[test]
    fn login_debug_redacts_every_secret() {
        let login = TotpLogin {
            mobile: "9999999999".into(),
            pin: Secret::new("918273"),
            totp_secret: Secret::new(RFC_SEED),
            client_id: "cid".into(),
            client_secret: Secret::new("s3cr3t-value"),
            redirect_uri: "http://127.0.0.1/cb".into(),
        };
        let shown = format!("{login:?}");
        for secret in ["918273", RFC_SEED, "s3cr3t-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
