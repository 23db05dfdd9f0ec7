//! The login-site service calls the upstox-totp client makes (reference 10.1, steps 2-5).
//!
//! Responses are `{"success":true,"data":{...}}`; errors are
//! `{"success":false,"data":null,"error":{"code":<integer>,"message"}}` with 1017xxx
//! codes (public captures: 1017069 OTP limit, 1017076 OTP session expired, 1017016
//! generic; a wrong code says "attempts left"). The HTTP status is 4xx, or 200 with
//! `login_errors_as_200`. Session state travels in the `sim_login` cookie set by the
//! OTP-verify step.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::config::Plan;
use crate::error::{LoginError, login_code, login_success};
use crate::oauth::{ATTEMPT_COOKIE, FactorFailure, USER_TYPE, code_redirect, next_rollover_ms};
use crate::sim::{LOGIN_TTL, LoginSession, OtpChallenge, Sim, Stage, bump, random_token};
use crate::totp;
use crate::util::{cookie, set_cookie, with_query};

/// Cookie carrying the headless login session.
pub(crate) const SESSION_COOKIE: &str = "sim_login";

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, LoginError> {
    serde_json::from_slice::<Envelope<T>>(body)
        .map(|e| e.data)
        .map_err(|e| {
            LoginError::refused(format!(
                "request body must be {{\"data\":{{...}}}} with the documented fields: {e}"
            ))
        })
}

fn blocked(sim: &Sim) -> Result<(), LoginError> {
    if sim.faults().login_blocked {
        return Err(LoginError::new(
            StatusCode::FORBIDDEN,
            login_code::GENERIC,
            "Automated login is blocked for this account. Log in on the Upstox web page instead.",
        ));
    }
    Ok(())
}

fn locked_error() -> LoginError {
    LoginError::new(
        StatusCode::FORBIDDEN,
        login_code::GENERIC,
        "Account locked after too many wrong attempts. 0 attempts left. Reset it in the simulator (POST /sim/users/{ucc}/unlock).",
    )
}

fn factor_error(f: FactorFailure, what: &'static str) -> LoginError {
    match f {
        FactorFailure::Wrong { left } => {
            LoginError::refused(format!("Invalid {what}. You have {left} attempts left."))
        }
        FactorFailure::Locked => locked_error(),
        FactorFailure::Unknown => LoginError::refused("Unknown user."),
    }
}

fn session_error() -> LoginError {
    LoginError::new(
        StatusCode::UNAUTHORIZED,
        login_code::GENERIC,
        "Login session missing or expired. Start again with OTP generate.",
    )
}

fn otp_session_expired() -> LoginError {
    LoginError::new(
        StatusCode::BAD_REQUEST,
        login_code::OTP_SESSION_EXPIRED,
        "The session to validate otp has expired. Please generate a new otp.",
    )
}

fn otp_limit() -> LoginError {
    LoginError::new(
        StatusCode::BAD_REQUEST,
        login_code::OTP_LIMIT,
        "You have exceeded the maximum number of times you can generate an OTP. Please try again after 10 mins.",
    )
}

/// The window the OTP-generation limit counts in.
pub(crate) const OTP_LIMIT_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

fn into_response(sim: &Sim, r: Result<Response, LoginError>) -> Response {
    r.unwrap_or_else(|e| e.respond(sim.login_errors_as_200()))
}

fn split_name(name: &str) -> (String, String) {
    match name.trim().split_once(' ') {
        Some((first, last)) => (first.to_string(), last.trim().to_string()),
        None => (name.trim().to_string(), String::new()),
    }
}

/// A stable numeric profile id derived from the UCC (FNV-1a).
fn profile_id(ucc: &str) -> u64 {
    let hash = ucc.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    1_000_000 + hash % 9_000_000
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtpGenerate {
    mobile_number: String,
    #[serde(default)]
    user_id: Option<String>,
}

/// `POST /login/open/v6/auth/1fa/otp/generate`
pub(crate) async fn otp_generate(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    into_response(&sim, otp_generate_inner(&sim, &headers, &body))
}

fn otp_generate_inner(sim: &Sim, headers: &HeaderMap, body: &[u8]) -> Result<Response, LoginError> {
    blocked(sim)?;
    let req: OtpGenerate = parse(body)?;
    let now = sim.now();
    let mut st = sim.lock();
    let user = st
        .users
        .values()
        .find(|u| u.config.mobile == req.mobile_number.trim())
        .cloned()
        .ok_or_else(|| LoginError::refused("No Upstox account with this mobile number."))?;
    if let Some(id) = req.user_id.as_deref().filter(|s| !s.is_empty())
        && id != user.config.ucc
    {
        return Err(LoginError::refused(
            "userId does not belong to this mobile number.",
        ));
    }
    if user.locked() {
        return Err(locked_error());
    }
    // The OTP-generation limit, per user, over the last 10 minutes of the sim clock.
    let window_start = now.checked_sub(OTP_LIMIT_WINDOW).unwrap_or(Timestamp::MIN);
    let limit = sim.otp_limit();
    let history = st.otp_history.entry(user.config.ucc.clone()).or_default();
    history.retain(|t| *t > window_start && *t <= now);
    if history.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
        bump(&sim.counters_raw().otp_limited);
        return Err(otp_limit());
    }
    history.push(now);
    let attempt_id = cookie(headers, ATTEMPT_COOKIE).filter(|id| st.attempts.contains_key(id));
    st.otps.retain(|_, c| now < c.expires_at);
    let token = uuid::Uuid::new_v4().to_string();
    st.otps.insert(
        token.clone(),
        OtpChallenge {
            ucc: user.config.ucc.clone(),
            attempt_id,
            expires_at: now.checked_add(LOGIN_TTL).unwrap_or(Timestamp::MAX),
        },
    );
    drop(st);
    bump(&sim.counters_raw().otp_requests);
    let mobile = &user.config.mobile;
    let tail = &mobile[mobile.len().saturating_sub(4)..];
    Ok(login_success(json!({
        "message": format!("OTP sent to mobile number ******{tail}"),
        "validateOTPToken": token,
        "nextRequestInterval": 30,
        "userType": USER_TYPE,
        "isTotpEnabled": true,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtpVerify {
    otp: String,
    validate_otp_token: String,
}

/// `POST /login/open/v4/auth/1fa/otp-totp/verify`
pub(crate) async fn otp_verify(State(sim): State<Sim>, body: Bytes) -> Response {
    into_response(&sim, otp_verify_inner(&sim, &body))
}

fn otp_verify_inner(sim: &Sim, body: &[u8]) -> Result<Response, LoginError> {
    blocked(sim)?;
    let req: OtpVerify = parse(body)?;
    let now = sim.now();
    let mut st = sim.lock();
    let challenge = st
        .otps
        .get(&req.validate_otp_token)
        .filter(|c| now < c.expires_at)
        .cloned()
        .ok_or_else(otp_session_expired)?;
    let user = st
        .users
        .get(&challenge.ucc)
        .map(|u| u.config.clone())
        .ok_or_else(|| LoginError::refused("Unknown user."))?;
    let ok = totp::verify(&user.totp_secret, req.otp.trim(), now);
    sim.record_factor(&mut st, &user.ucc, ok)
        .map_err(|f| factor_error(f, "OTP"))?;
    st.otps.remove(&req.validate_otp_token);
    st.sessions.retain(|_, s| now < s.expires_at);
    let session_id = random_token(32);
    st.sessions.insert(
        session_id.clone(),
        LoginSession {
            ucc: user.ucc.clone(),
            attempt_id: challenge.attempt_id,
            stage: Stage::OtpVerified,
            client_id: None,
            expires_at: now.checked_add(LOGIN_TTL).unwrap_or(Timestamp::MAX),
        },
    );
    drop(st);
    let (first, last) = split_name(&user.name);
    let mut resp = login_success(json!({
        "message": "OTP verified successfully",
        "userType": USER_TYPE,
        "userProfile": {
            "profileId": profile_id(&user.ucc),
            "userId": user.ucc,
            "firstName": first,
            "lastName": last,
            "avatarUrl": null,
        },
        "isSecretPinSet": true,
    }));
    set_cookie(&mut resp, SESSION_COOKIE, &session_id);
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwoFa {
    #[serde(rename = "twoFAMethod")]
    two_fa_method: String,
    input_text: String,
}

/// `POST /login/open/v3/auth/2fa?client_id=..&redirect_uri=..`
pub(crate) async fn two_fa(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    into_response(&sim, two_fa_inner(&sim, &headers, &q, &body))
}

fn two_fa_inner(
    sim: &Sim,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, LoginError> {
    blocked(sim)?;
    let req: TwoFa = parse(body)?;
    if req.two_fa_method != "SECRET_PIN" {
        return Err(LoginError::refused("twoFAMethod must be SECRET_PIN."));
    }
    let client_id = q
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| LoginError::refused("client_id is required."))?;
    let session_id = cookie(headers, SESSION_COOKIE).ok_or_else(session_error)?;
    let now = sim.now();
    let mut st = sim.lock();
    let session = st
        .sessions
        .get(&session_id)
        .filter(|s| now < s.expires_at)
        .cloned()
        .ok_or_else(session_error)?;
    if session.stage != Stage::OtpVerified {
        return Err(LoginError::refused(
            "The PIN was already verified in this session; continue with authorize.",
        ));
    }
    let app = st
        .apps
        .get(client_id)
        .cloned()
        .ok_or_else(|| LoginError::refused("Unknown client_id."))?;
    if app.user != session.ucc {
        return Err(LoginError::new(
            StatusCode::FORBIDDEN,
            login_code::GENERIC,
            "This app belongs to another Upstox account.",
        ));
    }
    if let Some(a) = session
        .attempt_id
        .as_ref()
        .and_then(|id| st.attempts.get(id))
        && a.client_id != *client_id
    {
        return Err(LoginError::refused(
            "client_id differs from the one the login started with.",
        ));
    }
    let user = st
        .users
        .get(&session.ucc)
        .map(|u| u.config.clone())
        .ok_or_else(|| LoginError::refused("Unknown user."))?;
    let text = req.input_text.trim();
    let decoded = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let ok = decoded.as_deref() == Some(user.pin.as_str());
    sim.record_factor(&mut st, &user.ucc, ok)
        .map_err(|f| factor_error(f, "PIN"))?;
    sim.login_succeeded(&mut st, &user.ucc);
    if let Some(s) = st.sessions.get_mut(&session_id) {
        s.stage = Stage::PinVerified;
        s.client_id = Some(client_id.clone());
    }
    drop(st);
    let plus = user.plan == Plan::Plus;
    Ok(login_success(json!({
        "redirectUri": null,
        "userType": USER_TYPE,
        "customerStatus": "ACTIVE",
        "appStatus": "ACTIVE",
        "refreshTokenExpiry": next_rollover_ms(now),
        "isPlusPlanFastWebsocketEnabled": plus,
        "isNewRefreshTokenCreated": false,
        "isExternalClientOAuthApp": true,
    })))
}

#[derive(Deserialize)]
struct Approve {
    #[serde(rename = "userOAuthApproval")]
    user_o_auth_approval: bool,
}

/// `POST /login/v2/oauth/authorize?client_id=..&redirect_uri=..&requestId=..&response_type=code`
pub(crate) async fn authorize(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    into_response(&sim, authorize_inner(&sim, &headers, &q, &body))
}

fn authorize_inner(
    sim: &Sim,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, LoginError> {
    blocked(sim)?;
    let req: Approve = parse(body)?;
    let session_id = cookie(headers, SESSION_COOKIE).ok_or_else(session_error)?;
    let now = sim.now();
    let mut st = sim.lock();
    let session = st
        .sessions
        .get(&session_id)
        .filter(|s| now < s.expires_at)
        .cloned()
        .ok_or_else(session_error)?;
    if session.stage != Stage::PinVerified {
        return Err(LoginError::refused(
            "Verify the PIN (2fa) before authorizing.",
        ));
    }
    let client_id = session.client_id.clone().unwrap_or_default();
    if q.get("client_id") != Some(&client_id) {
        return Err(LoginError::refused(
            "client_id differs from the one the PIN was verified for.",
        ));
    }
    let app = st
        .apps
        .get(&client_id)
        .cloned()
        .ok_or_else(|| LoginError::refused("Unknown client_id."))?;
    st.sessions.remove(&session_id);
    let attempt = session
        .attempt_id
        .as_ref()
        .and_then(|id| st.attempts.remove(id))
        .filter(|a| a.client_id == client_id);
    let state = attempt.as_ref().and_then(|a| a.state.clone());
    if !req.user_o_auth_approval {
        let mut pairs = vec![("error", "access_denied")];
        if let Some(s) = state.as_deref() {
            pairs.push(("state", s));
        }
        return Ok(login_success(json!({
            "redirectUri": with_query(&app.redirect_uri, &pairs),
            "isApproved": false,
        })));
    }
    let code = sim.issue_code(&mut st, &client_id, &app.redirect_uri, &session.ucc);
    drop(st);
    Ok(login_success(json!({
        "redirectUri": code_redirect(&app.redirect_uri, &code, state.as_deref()),
        "isApproved": true,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_field_name_matches_client() {
        let a: Approve = parse(br#"{"data":{"userOAuthApproval":true}}"#).unwrap();
        assert!(a.user_o_auth_approval);
    }
}
