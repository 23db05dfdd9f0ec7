//! Errors from talking to Upstox, and the classification the renewal engine acts on.
//!
//! `Display` is one line saying what went wrong and what to do. It never contains a
//! token, secret, PIN or code: server messages are scrubbed before they are kept, and
//! transport errors are stored without their URL.

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use jiff::Timestamp;

use crate::envelope::{self, ErrorDetail};

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retrying this request will not help and may lock the account: bad credentials,
    /// wrong PIN/TOTP ("attempts left"), lockout, inactive client (`UDAPI100073`), no
    /// active segments (`UDAPI100058`), wrong client id / secret / redirect URI
    /// (`UDAPI100068`, `UDAPI100016`, `UDAPI100069`, `UDAPI100070`), a bad, used or
    /// expired authorization code (`UDAPI100057`: a new login may work, see
    /// [`UpstoxError::restarts_login`]), or a response this crate cannot read.
    Fatal,
    /// Network trouble, timeouts, 5xx, rate limiting (429, `UDAPI10005`): retry with backoff.
    Transient,
    /// The access token is expired, revoked or from another environment
    /// (401 `UDAPI100050`): get a new token.
    TokenInvalid,
    /// The token is valid but may not call this API: an extended token on a
    /// disallowed API (`UDAPI100067`), or an IP/permission restriction.
    NotPermitted,
    /// The service is in its daily window (funds 423 between 00:00 and 05:30 IST,
    /// `UDAPI100072`, `UDAPI100074`): retry after the window.
    Maintenance,
}

impl ErrorClass {
    fn advice(self) -> &'static str {
        match self {
            ErrorClass::Fatal => {
                "check the credentials and the app settings; retrying will not help"
            }
            ErrorClass::Transient => "retry later",
            ErrorClass::TokenInvalid => "log in again to get a new access token",
            ErrorClass::NotPermitted => {
                "this token may not call this API; use a daily access token or a registered IP"
            }
            ErrorClass::Maintenance => {
                "the service is in its daily maintenance window; retry after 05:30 IST"
            }
        }
    }
}

/// Whose move it is after an error, for a caller that keeps trying on its own (the
/// renewal engine). Finer than [`ErrorClass::Fatal`]: only a credential or
/// configuration fault should stop a strategy until a human acts, because only those
/// get worse by retrying (a wrong PIN or TOTP retried locks the Upstox account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The user's credentials were refused: wrong PIN or TOTP, lockout, a refresh
    /// token the provider no longer accepts. Never retry blindly.
    Credential,
    /// The app or upkeep's configuration is wrong: client id/secret, redirect URI,
    /// inactive app, a TOTP seed that is not base32. A human must change a setting.
    Configuration,
    /// Upstox refused this attempt for a reason retrying now will not fix but a later
    /// attempt may (a token refused, a refused authorization code once the login's
    /// restarts are used up, a login page that went somewhere unexpected, an answer
    /// this client cannot read).
    Refusal,
    /// Network, 5xx, rate limits (`UDAPI10005`, `UDAPI100099`), the maintenance window,
    /// the login service's OTP limit (with a `Retry-After` of its 10 minutes): retry
    /// after the wait.
    Transient,
}

/// The longest wait a `Retry-After` header can ask for. The header is network input: an
/// absurd value (`Retry-After: 9223372036854775807`, a date in year 9999) would otherwise
/// overflow the caller's `now + delay`. Upstox's longest documented pause (the nightly
/// maintenance window) is under 6 hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The value of a `Retry-After` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Delay(Duration),
    /// `Retry-After: <HTTP-date>`.
    At(Timestamp),
}

impl RetryAfter {
    /// Parses a header value; `None` for anything that is neither form. A delay is
    /// capped at [`MAX_RETRY_AFTER`].
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(RetryAfter::Delay(
                Duration::from_secs(secs).min(MAX_RETRY_AFTER),
            ));
        }
        jiff::fmt::rfc2822::parse(value)
            .ok()
            .map(|z| RetryAfter::At(z.timestamp()))
    }

    /// How long to wait, counted from `now` (zero if the date is already past), at most
    /// [`MAX_RETRY_AFTER`].
    pub fn delay_from(self, now: Timestamp) -> Duration {
        let delay = match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(at) => {
                let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            }
        };
        delay.min(MAX_RETRY_AFTER)
    }
}

/// An error response from Upstox (or from an OAuth 2 token endpoint): the HTTP status,
/// the error code and message from the body, and `Retry-After` if present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Which call failed, e.g. `GET /v2/user/profile` (no host, no query).
    pub endpoint: &'static str,
    /// The HTTP status (a login-service `{"success":false}` can come with 200).
    pub status: u16,
    /// `UDAPI…` code, login-service code, or OAuth 2 `error`.
    pub code: Option<String>,
    /// The server's message, scrubbed of anything token-like and shortened.
    pub message: Option<String>,
    pub retry_after: Option<RetryAfter>,
    /// Whether the request carried an access token (`Authorization: Bearer`). A bare
    /// 401/403 means "bad token" then, and "bad credentials" otherwise.
    pub bearer: bool,
    /// The value the server refused (`invalid_value`), e.g. the unknown instrument key
    /// of an LTP call (`UDAPI1087`), scrubbed.
    pub invalid_value: Option<String>,
    /// The body was the login service's `{"success":false,"error":{..}}` (any HTTP
    /// status, 200 included): its message decides, see [`ApiError::login_refusal`].
    pub login_service: bool,
}

/// What a login-service refusal (`{"success":false,"error":{"code","message"}}`) means.
/// Upstox publishes neither the codes (seen: integers in the 1017xxx range) nor the
/// HTTP status (possibly 200), so the message decides, with the few codes seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Too many OTPs were generated (1017069, "... try again after 10 mins"): a long
    /// wait, not a credential fault and not a tight retry.
    OtpLimit,
    /// The session that validates the OTP expired (1017076): start the login again.
    SessionExpired,
    /// A wrong TOTP or PIN ("... attempts left"): never retried (lockout).
    WrongFactor,
}

/// How long Upstox asks a client to wait after the OTP-generation limit when its
/// message names no duration ("try again after 10 mins").
pub const OTP_LIMIT_WAIT: Duration = Duration::from_secs(10 * 60);

impl ApiError {
    /// Builds the error for a response: reads the body in any Upstox error shape (or
    /// none) and the `Retry-After` header. Exposed so a proxy in front of Upstox can
    /// classify the responses it forwards.
    pub fn from_response(
        endpoint: &'static str,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        bearer: bool,
    ) -> Self {
        let detail = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| envelope::error_detail(&v))
            .unwrap_or_default();
        Self::from_detail(endpoint, status, headers, detail, bearer)
    }

    pub(crate) fn from_detail(
        endpoint: &'static str,
        status: u16,
        headers: &HeaderMap,
        detail: ErrorDetail,
        bearer: bool,
    ) -> Self {
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(RetryAfter::parse);
        let mut e = Self {
            endpoint,
            status,
            code: detail.code,
            message: detail.message,
            retry_after,
            bearer,
            invalid_value: detail.invalid_value,
            login_service: detail.login_service,
        };
        if e.retry_after.is_none() && e.login_refusal() == Some(LoginRefusal::OtpLimit) {
            let wait = e
                .message
                .as_deref()
                .and_then(minutes_named)
                .unwrap_or(OTP_LIMIT_WAIT);
            e.retry_after = Some(RetryAfter::Delay(wait.min(MAX_RETRY_AFTER)));
        }
        e
    }

    /// What a login-service refusal means, read from its message and code; `None` for
    /// other bodies and for refusals none of the known kinds.
    pub fn login_refusal(&self) -> Option<LoginRefusal> {
        if !self.login_service {
            return None;
        }
        let message = self.message.as_deref().unwrap_or("").to_ascii_lowercase();
        let code = self.code.as_deref().unwrap_or("").trim();
        if message.contains("attempts left") || message.contains("attempts remaining") {
            return Some(LoginRefusal::WrongFactor);
        }
        if code == "1017069"
            || message.contains("maximum number of times")
            || (message.contains("otp") && message.contains("try again after"))
        {
            return Some(LoginRefusal::OtpLimit);
        }
        if code == "1017076" || (message.contains("session") && message.contains("expired")) {
            return Some(LoginRefusal::SessionExpired);
        }
        None
    }

    /// The classification: a login-service message decides first, then a known error
    /// code, then the HTTP status.
    pub fn class(&self) -> ErrorClass {
        match self.login_refusal() {
            Some(LoginRefusal::OtpLimit | LoginRefusal::SessionExpired) => {
                return ErrorClass::Transient;
            }
            Some(LoginRefusal::WrongFactor) => return ErrorClass::Fatal,
            None => {}
        }
        if let Some(class) = self.code.as_deref().and_then(class_of_code) {
            return class;
        }
        match self.status {
            423 => ErrorClass::Maintenance,
            408 | 425 | 429 => ErrorClass::Transient,
            500..=599 => ErrorClass::Transient,
            401 if self.bearer => ErrorClass::TokenInvalid,
            403 if self.bearer => ErrorClass::NotPermitted,
            _ => ErrorClass::Fatal,
        }
    }
}

/// "after 10 mins" / "after 1 minute" in a message, as a duration.
fn minutes_named(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("after")? + "after".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let after_digits = rest.trim_start()[digits.len()..].trim_start();
    if !after_digits.starts_with("min") {
        return None;
    }
    let minutes: u64 = digits.parse().ok()?;
    Some(Duration::from_secs(minutes.saturating_mul(60)))
}

/// The class a known error code implies, whatever the HTTP status.
fn class_of_code(code: &str) -> Option<ErrorClass> {
    let code = code.trim().to_ascii_uppercase();
    Some(match code.as_str() {
        "UDAPI100050" => ErrorClass::TokenInvalid,
        "UDAPI100067" => ErrorClass::NotPermitted,
        "UDAPI100072" | "UDAPI100074" => ErrorClass::Maintenance,
        // rate limits and "something went wrong"
        "UDAPI10005" | "UDAPI100099" | "UDAPI100500" => ErrorClass::Transient,
        // inactive client, no active segments, wrong client/redirect, invalid
        // credentials, a bad/used/expired code (that code will not work again),
        // missing login parameters
        "UDAPI100073" | "UDAPI100058" | "UDAPI100068" | "UDAPI100016" | "UDAPI100057"
        | "UDAPI100069" | "UDAPI100070" | "UDAPI1017" | "UDAPI1018" | "UDAPI1022" | "UDAPI1023"
        | "UDAPI1024" | "UDAPI100015" => ErrorClass::Fatal,
        // OAuth 2 (RFC 6749 5.2)
        "INVALID_GRANT"
        | "INVALID_CLIENT"
        | "UNAUTHORIZED_CLIENT"
        | "UNSUPPORTED_GRANT_TYPE"
        | "INVALID_SCOPE"
        | "INVALID_REQUEST" => ErrorClass::Fatal,
        "TEMPORARILY_UNAVAILABLE" | "SERVER_ERROR" => ErrorClass::Transient,
        _ => return None,
    })
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upstox {} answered HTTP {}", self.endpoint, self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, " ({message}")?;
            if let Some(value) = &self.invalid_value {
                write!(f, ": {value}")?;
            }
            f.write_str(")")?;
        } else if let Some(value) = &self.invalid_value {
            write!(f, " (invalid value {value})")?;
        }
        write!(f, "; {}", self.advice())
    }
}

impl ApiError {
    /// What to do, for the codes that name a setting, else the class's advice.
    fn advice(&self) -> &'static str {
        if self.login_refusal() == Some(LoginRefusal::OtpLimit) {
            return "Upstox limits OTP requests; wait before logging in again";
        }
        let code = self
            .code
            .as_deref()
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        match code.as_str() {
            "UDAPI100057" => {
                "the authorization code is wrong, used or expired (codes live minutes); log in again"
            }
            "UDAPI100069" => {
                "set the account's client_id and client_secret to the app's API key and secret"
            }
            "UDAPI100070" => {
                "set the account's redirect_uri to the app's registered redirect URL exactly"
            }
            _ => self.class().advice(),
        }
    }
}

/// Why a transport-level failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkErrorKind {
    Connect,
    Timeout,
    Other,
}

impl fmt::Display for NetworkErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkErrorKind::Connect => "connection failed",
            NetworkErrorKind::Timeout => "timed out",
            NetworkErrorKind::Other => "transport error",
        })
    }
}

/// The steps of the headless TOTP login (reference 10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    Dialog,
    OtpGenerate,
    TotpVerify,
    Pin,
    Authorize,
    Exchange,
}

impl fmt::Display for LoginStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoginStep::Dialog => "step 1 (authorization dialog)",
            LoginStep::OtpGenerate => "step 2 (OTP generate)",
            LoginStep::TotpVerify => "step 3 (TOTP verify)",
            LoginStep::Pin => "step 4 (PIN)",
            LoginStep::Authorize => "step 5 (OAuth approval)",
            LoginStep::Exchange => "step 6 (code exchange)",
        })
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum UpstoxError {
    /// Upstox answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// No usable answer: connection refused, DNS, TLS, timeout.
    #[error(
        "could not reach Upstox for {endpoint} ({kind}: {detail}); check the network and the configured host, then retry"
    )]
    Network {
        endpoint: &'static str,
        kind: NetworkErrorKind,
        detail: String,
    },
    /// A success status with a body this crate cannot read.
    #[error(
        "unexpected response from Upstox {endpoint} (HTTP {status}: {detail}); the API may have changed, upgrade upkeep"
    )]
    Decode {
        endpoint: &'static str,
        status: u16,
        detail: String,
    },
    /// The TOTP login went somewhere the reference does not describe.
    #[error("TOTP login failed at {step}: {detail}")]
    Login { step: LoginStep, detail: String },
    /// The TOTP seed is not base32.
    #[error(
        "the TOTP secret is not valid base32; copy the key shown when TOTP was enabled on the Upstox account"
    )]
    TotpSecret,
    /// The caller asked for something this client will not send.
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// The HTTP client could not be built (TLS backend, bad header value).
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

impl UpstoxError {
    /// What the caller should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            UpstoxError::Api(e) => e.class(),
            UpstoxError::Network { .. } => ErrorClass::Transient,
            UpstoxError::Decode { status, .. } if *status >= 500 => ErrorClass::Transient,
            UpstoxError::Decode { .. }
            | UpstoxError::Login { .. }
            | UpstoxError::TotpSecret
            | UpstoxError::InvalidInput(_)
            | UpstoxError::Client(_) => ErrorClass::Fatal,
        }
    }

    /// Whose move it is: see [`Fault`].
    pub fn fault(&self) -> Fault {
        match self.class() {
            ErrorClass::Transient | ErrorClass::Maintenance => return Fault::Transient,
            ErrorClass::TokenInvalid | ErrorClass::NotPermitted => return Fault::Refusal,
            ErrorClass::Fatal => {}
        }
        match self {
            UpstoxError::Api(e) => {
                let code = e.code.as_deref().unwrap_or_default().to_ascii_uppercase();
                match code.as_str() {
                    "INVALID_GRANT" => Fault::Credential,
                    // A bad, used or expired authorization code: the login is worth
                    // starting again; nothing is wrong with the credentials.
                    "UDAPI100057" => Fault::Refusal,
                    "UDAPI100016"
                    | "UDAPI100069"
                    | "UDAPI100070"
                    | "UDAPI100068"
                    | "UDAPI100073"
                    | "UDAPI1017"
                    | "UDAPI1018"
                    | "UDAPI1022"
                    | "UDAPI1023"
                    | "UDAPI1024"
                    | "UDAPI100015"
                    | "INVALID_CLIENT"
                    | "UNAUTHORIZED_CLIENT"
                    | "UNSUPPORTED_GRANT_TYPE"
                    | "INVALID_SCOPE"
                    | "INVALID_REQUEST" => Fault::Configuration,
                    "UDAPI100058" => Fault::Refusal,
                    // The login service's own steps (OTP, TOTP, PIN) refuse credentials.
                    _ if e.endpoint.contains("/login/open/") => Fault::Credential,
                    _ if !e.bearer && matches!(e.status, 401 | 403) => Fault::Credential,
                    _ => Fault::Refusal,
                }
            }
            UpstoxError::Login { step, .. } => match step {
                LoginStep::TotpVerify | LoginStep::Pin => Fault::Credential,
                LoginStep::Exchange => Fault::Configuration,
                LoginStep::Dialog | LoginStep::OtpGenerate | LoginStep::Authorize => Fault::Refusal,
            },
            UpstoxError::TotpSecret | UpstoxError::InvalidInput(_) | UpstoxError::Client(_) => {
                Fault::Configuration
            }
            UpstoxError::Decode { .. } | UpstoxError::Network { .. } => Fault::Refusal,
        }
    }

    /// Whether starting the login again may succeed where this attempt failed: the
    /// authorization code was refused as bad, used or expired (`UDAPI100057`), or the
    /// login service's OTP session expired (1017076).
    pub fn restarts_login(&self) -> bool {
        match self {
            UpstoxError::Api(e) => {
                e.code
                    .as_deref()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("UDAPI100057"))
                    || e.login_refusal() == Some(LoginRefusal::SessionExpired)
            }
            _ => false,
        }
    }

    /// The value the server named as invalid (`invalid_value`), e.g. an LTP call's
    /// unknown instrument key.
    pub fn invalid_value(&self) -> Option<&str> {
        match self {
            UpstoxError::Api(e) => e.invalid_value.as_deref(),
            _ => None,
        }
    }

    /// The `Retry-After` the server sent, if any.
    pub fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            UpstoxError::Api(e) => e.retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the error came with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstoxError::Api(e) => Some(e.status),
            UpstoxError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Upstox / login-service / OAuth 2 error code, when the body had one.
    pub fn code(&self) -> Option<&str> {
        match self {
            UpstoxError::Api(e) => e.code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn network(endpoint: &'static str, err: reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            NetworkErrorKind::Timeout
        } else if err.is_connect() {
            NetworkErrorKind::Connect
        } else {
            NetworkErrorKind::Other
        };
        // Without the URL: queries may carry client ids or state.
        let err = err.without_url();
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        UpstoxError::Network {
            endpoint,
            kind,
            detail: envelope::scrub(&detail),
        }
    }

    pub(crate) fn decode(endpoint: &'static str, status: u16, e: &serde_json::Error) -> Self {
        UpstoxError::Decode {
            endpoint,
            status,
            detail: envelope::json_error_detail(e),
        }
    }
}

impl From<ApiError> for UpstoxError {
    fn from(e: ApiError) -> Self {
        UpstoxError::Api(e)
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    fn api(endpoint: &'static str, status: u16, code: Option<&str>, bearer: bool) -> UpstoxError {
        UpstoxError::Api(ApiError {
            endpoint,
            status,
            code: code.map(str::to_owned),
            message: None,
            retry_after: None,
            bearer,
            invalid_value: None,
            login_service: false,
        })
    }

    #[test]
    fn only_credential_and_configuration_faults_are_told_apart_from_passing_refusals() {
        let pin = "POST /login/open/v3/auth/2fa";
        let exchange = "POST /v2/login/authorization/token";
        let cases = [
            (api(pin, 400, Some("INVALID_PIN"), false), Fault::Credential),
            (
                api(pin, 403, Some("ACCOUNT_LOCKED"), false),
                Fault::Credential,
            ),
            (
                api("POST /oauth2/token", 400, Some("invalid_grant"), false),
                Fault::Credential,
            ),
            (
                api(exchange, 401, Some("UDAPI100016"), false),
                Fault::Configuration,
            ),
            (
                api(exchange, 400, Some("UDAPI100068"), false),
                Fault::Configuration,
            ),
            (
                api(exchange, 400, Some("UDAPI100069"), false),
                Fault::Configuration,
            ),
            (
                api(exchange, 400, Some("UDAPI100070"), false),
                Fault::Configuration,
            ),
            (
                api(exchange, 400, Some("UDAPI100057"), false),
                Fault::Refusal,
            ),
            (
                api(exchange, 400, Some("UDAPI100073"), false),
                Fault::Configuration,
            ),
            (
                api("GET /v2/user/profile", 401, Some("UDAPI100050"), true),
                Fault::Refusal,
            ),
            (
                api(exchange, 400, Some("UDAPI100058"), false),
                Fault::Refusal,
            ),
            (api(exchange, 503, None, false), Fault::Transient),
            (
                api(exchange, 429, Some("UDAPI10005"), false),
                Fault::Transient,
            ),
            (UpstoxError::TotpSecret, Fault::Configuration),
            (
                UpstoxError::Login {
                    step: LoginStep::Pin,
                    detail: String::new(),
                },
                Fault::Credential,
            ),
            (
                UpstoxError::Login {
                    step: LoginStep::Dialog,
                    detail: String::new(),
                },
                Fault::Refusal,
            ),
            (
                UpstoxError::Network {
                    endpoint: exchange,
                    kind: NetworkErrorKind::Timeout,
                    detail: String::new(),
                },
                Fault::Transient,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.fault(), want, "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, body: &str, bearer: bool) -> ApiError {
        ApiError::from_response(
            "GET /v2/user/profile",
            status,
            &HeaderMap::new(),
            body.as_bytes(),
            bearer,
        )
    }

    fn err_body(code: &str) -> String {
        format!(
            r#"{{"status":"error","errors":[{{"errorCode":"{code}","message":"m","propertyPath":null,"invalidValue":null,"error_code":"{code}","property_path":null,"invalid_value":null}}]}}"#
        )
    }

    #[test]
    fn classifies_documented_errors_for_the_renewal_engine() {
        use ErrorClass::*;
        let cases: &[(u16, String, bool, ErrorClass)] = &[
            (401, err_body("UDAPI100050"), true, TokenInvalid),
            (401, err_body("UDAPI100067"), true, NotPermitted),
            (429, err_body("UDAPI10005"), true, Transient),
            (429, String::new(), true, Transient),
            (423, String::new(), true, Maintenance),
            (423, err_body("UDAPI100072"), true, Maintenance),
            (400, err_body("UDAPI100074"), true, Maintenance),
            (500, err_body("UDAPI100500"), true, Transient),
            (502, "<html>bad gateway</html>".into(), true, Transient),
            (503, String::new(), false, Transient),
            (400, err_body("UDAPI100073"), false, Fatal),
            (400, err_body("UDAPI100058"), false, Fatal),
            (400, err_body("UDAPI100068"), false, Fatal),
            (401, err_body("UDAPI100016"), false, Fatal),
            (400, err_body("UDAPI1024"), false, Fatal),
            // a bare 401 is "bad token" with a bearer, "bad credentials" without
            (401, String::new(), true, TokenInvalid),
            (401, String::new(), false, Fatal),
            (403, String::new(), true, NotPermitted),
            // login service: wrong TOTP / PIN
            (
                400,
                r#"{"success":false,"error":{"code":"1017062","message":"Invalid OTP"}}"#.into(),
                false,
                Fatal,
            ),
            // OAuth 2
            (400, r#"{"error":"invalid_grant"}"#.into(), false, Fatal),
            (
                503,
                r#"{"error":"temporarily_unavailable"}"#.into(),
                false,
                Transient,
            ),
        ];
        for (status, body, bearer, want) in cases {
            assert_eq!(
                api(*status, body, *bearer).class(),
                *want,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn login_service_refusals_are_read_from_the_message_whatever_the_status_or_code_type() {
        let pin = "POST /login/open/v3/auth/2fa";
        let otp = "POST /login/open/v6/auth/1fa/otp/generate";
        let read = |ep: &'static str, status: u16, body: &str| {
            UpstoxError::from(ApiError::from_response(
                ep,
                status,
                &HeaderMap::new(),
                body.as_bytes(),
                false,
            ))
        };
        let limit = r#"{"success":false,"error":{"code":1017069,"message":"You have exceeded the maximum number of times you can generate an OTP. Please try again after 10 mins."}}"#;
        for status in [200, 400, 429, 500] {
            let e = read(otp, status, limit);
            assert_eq!(e.fault(), Fault::Transient, "{status}: {e}");
            assert_eq!(
                e.retry_after(),
                Some(RetryAfter::Delay(Duration::from_secs(600))),
                "{status}"
            );
        }
        // A string code and another duration in the message.
        let e = read(
            otp,
            200,
            r#"{"success":false,"error":{"code":"1017069","message":"try again after 3 mins to generate an OTP"}}"#,
        );
        assert_eq!(
            e.retry_after(),
            Some(RetryAfter::Delay(Duration::from_secs(180)))
        );
        // A wrong TOTP, whatever the status.
        for status in [200, 400, 500] {
            let e = read(
                "POST /login/open/v4/auth/1fa/otp-totp/verify",
                status,
                r#"{"success":false,"error":{"code":1017016,"message":"Invalid OTP. You have 2 attempts left."}}"#,
            );
            assert_eq!(e.fault(), Fault::Credential, "{status}: {e}");
            assert!(!e.restarts_login());
        }
        // The OTP session expired: start again.
        let e = read(
            pin,
            200,
            r#"{"success":false,"error":{"code":1017076,"message":"session to validate otp has expired"}}"#,
        );
        assert_eq!(e.fault(), Fault::Transient);
        assert!(e.restarts_login());
        // The generic code on the PIN step with HTTP 200: a credential fault.
        let e = read(
            pin,
            200,
            r#"{"success":false,"error":{"code":1017016,"message":"Something about your PIN"}}"#,
        );
        assert_eq!(e.fault(), Fault::Credential, "{e}");
        // A login service that is down stays transient.
        let e = read(
            otp,
            503,
            r#"{"success":false,"error":{"code":1017016,"message":"temporarily unavailable"}}"#,
        );
        assert_eq!(e.fault(), Fault::Transient);
    }

    #[test]
    fn keeps_status_code_and_message() {
        let e = UpstoxError::from(api(401, &err_body("UDAPI100050"), true));
        assert_eq!(e.status(), Some(401));
        assert_eq!(e.code(), Some("UDAPI100050"));
        let shown = e.to_string();
        assert!(
            shown.contains("UDAPI100050") && shown.contains("HTTP 401"),
            "{shown}"
        );
        assert!(shown.contains("log in again"), "{shown}");
    }

    #[test]
    fn display_never_contains_an_echoed_token() {
        let token = "eyJ0eXAiOiJKV1QiLCJrZXlfaWQiOiJza192MS4wIiwiYWxnIjoiSFMyNTYifQ.eyJzdWIiOiIyWkNEUTkifQ.c2ln";
        let body = format!(
            r#"{{"status":"error","errors":[{{"error_code":"UDAPI100050","message":"token {token} is invalid"}}]}}"#
        );
        let shown = UpstoxError::from(api(401, &body, true)).to_string();
        assert!(!shown.contains("eyJ0eXAi"), "{shown}");
        assert!(!shown.contains(".c2ln"), "{shown}");
    }

    #[test]
    fn reads_retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        let e = UpstoxError::from(ApiError::from_response("GET /x", 429, &headers, b"", true));
        assert_eq!(
            e.retry_after(),
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );

        let at = RetryAfter::parse("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let now: Timestamp = "2015-10-21T07:27:30Z".parse().unwrap();
        assert_eq!(at.delay_from(now), Duration::from_secs(30));
        assert_eq!(RetryAfter::parse("soon"), None);
    }

    #[test]
    fn an_absurd_retry_after_is_capped_so_adding_it_to_now_cannot_overflow() {
        let now: Timestamp = "2026-02-05T06:00:00Z".parse().unwrap();
        let huge = RetryAfter::parse("9223372036854775807").unwrap();
        let far = RetryAfter::parse("Wed, 01 Jan 9000 00:00:00 GMT").unwrap();
        for r in [huge, far] {
            let d = r.delay_from(now);
            assert_eq!(d, MAX_RETRY_AFTER, "{r:?}");
            // What a caller does with it: now + delay, later, must not overflow.
            let later = now + jiff::SignedDuration::from_hours(24 * 365);
            let wait = jiff::SignedDuration::try_from(d).unwrap();
            assert!(later.checked_add(wait).is_ok());
        }
        assert_eq!(
            RetryAfter::parse("120").unwrap().delay_from(now),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn transport_and_shape_errors_are_classified() {
        let e = UpstoxError::Network {
            endpoint: "GET /x",
            kind: NetworkErrorKind::Timeout,
            detail: "t".into(),
        };
        assert_eq!(e.class(), ErrorClass::Transient);
        let bad = serde_json::from_str::<u8>("{").unwrap_err();
        assert_eq!(
            UpstoxError::decode("GET /x", 200, &bad).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            UpstoxError::decode("GET /x", 502, &bad).class(),
            ErrorClass::Transient
        );
    }
}
