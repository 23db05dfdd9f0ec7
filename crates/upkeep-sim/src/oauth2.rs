//! A generic OAuth 2 token service of the kind a user might run in front of Upstox
//! (a token relay that hands out refresh tokens; Upstox itself has none).
//!
//! `POST /sim/oauth2/token` implements the refresh grant of RFC 6749 section 6: form
//! body `grant_type=refresh_token&refresh_token=..&client_id=..&client_secret=..`
//! (or the client in HTTP Basic, section 2.3.1). A good request answers 200
//! `{"access_token", "token_type": "Bearer", "expires_in", "refresh_token"}` with a
//! fresh daily Upstox token for the app's user (minted like every other sim token)
//! and a rotated refresh token: the one presented stops working. Errors follow
//! section 5.2: `{"error", "error_description"}`, 400 (`invalid_request`,
//! `unsupported_grant_type`, `invalid_grant`) or 401 (`invalid_client`). Refresh
//! tokens are minted per app with [`Sim::issue_refresh_token`] or
//! `POST /sim/refresh-tokens`; they do not expire, and replaying a used one is
//! refused without revoking its successor.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::error::json_response;
use crate::jwt::TokenKind;
use crate::sim::{Sim, SimError, bump, random_token};

/// Where a refresh token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshStatus {
    /// Can be exchanged once.
    Active,
    /// Exchanged already (rotated away).
    Used,
    /// Revoked through the control API or [`Sim::revoke_refresh_token`].
    Revoked,
}

/// One refresh token of the token service.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub client_id: String,
    pub status: RefreshStatus,
}

/// An RFC 6749 section 5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuth2Error {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuth2Error {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// 500 `server_error`, for injected faults.
    pub(crate) fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token service failed; try again later",
        )
    }
}

impl IntoResponse for OAuth2Error {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = json_response(
            self.status,
            &json!({"error": self.error, "error_description": self.description}),
        );
        no_store(&mut resp);
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"upkeep-sim\""),
            );
        }
        resp
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 section 5.1).
fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Parses the form body strictly: a repeated parameter is an error (RFC 6749 section
/// 3.2); parameters with an empty value count as absent (section 3.1).
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuth2Error> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.contains_key(k.as_ref()) {
            return Err(OAuth2Error::invalid_request(format!(
                "parameter {k} is given more than once"
            )));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

/// One form-urlencoded value, decoded.
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The client from `Authorization: Basic` (RFC 6749 section 2.3.1), if that header is used.
fn basic_client(headers: &HeaderMap) -> Option<Result<(String, String), OAuth2Error>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let bad = || OAuth2Error::invalid_client("the Authorization header is not valid HTTP Basic");
    let parsed = (|| {
        let text = value.to_str().ok()?.trim();
        let (scheme, b64) = text.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        Some((form_decode(id), form_decode(secret)))
    })();
    Some(parsed.ok_or_else(bad))
}

impl Sim {
    /// Mints a refresh token for the app `client_id` (as a token relay would after the
    /// app's first login). It can be exchanged once at `POST /sim/oauth2/token`.
    pub fn issue_refresh_token(&self, client_id: &str) -> Result<String, SimError> {
        let mut st = self.lock();
        if !st.apps.contains_key(client_id) {
            return Err(SimError::UnknownApp(client_id.to_string()));
        }
        let token = new_refresh_token();
        st.refresh_tokens.insert(
            token.clone(),
            RefreshRecord {
                client_id: client_id.to_string(),
                status: RefreshStatus::Active,
            },
        );
        Ok(token)
    }

    /// Revokes a refresh token. False if the sim never issued it or it is no longer active.
    pub fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        let mut st = self.lock();
        match st.refresh_tokens.get_mut(refresh_token) {
            Some(r) if r.status == RefreshStatus::Active => {
                r.status = RefreshStatus::Revoked;
                true
            }
            _ => false,
        }
    }

    /// The refresh grant: checks the client and the refresh token, mints a daily
    /// access token for the app's user and rotates the refresh token, all under one lock.
    fn refresh_grant(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<serde_json::Value, OAuth2Error> {
        let form = parse_form(body)?;
        let Some(grant_type) = form.get("grant_type") else {
            return Err(OAuth2Error::invalid_request("grant_type is required"));
        };
        if grant_type != "refresh_token" {
            return Err(OAuth2Error::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "this token service only supports grant_type=refresh_token",
            ));
        }
        let in_body = form.contains_key("client_id") || form.contains_key("client_secret");
        let (client_id, secret) = match basic_client(headers) {
            Some(_) if in_body => {
                return Err(OAuth2Error::invalid_request(
                    "send the client credentials either in the body or in HTTP Basic, not both",
                ));
            }
            Some(basic) => basic?,
            None => match (form.get("client_id"), form.get("client_secret")) {
                (Some(id), Some(secret)) => (id.clone(), secret.clone()),
                _ => {
                    return Err(OAuth2Error::invalid_client(
                        "client authentication is required: client_id and client_secret",
                    ));
                }
            },
        };
        let Some(presented) = form.get("refresh_token") else {
            return Err(OAuth2Error::invalid_request("refresh_token is required"));
        };
        let now = self.now();
        let mut st = self.lock();
        let Some(user) = st
            .apps
            .get(&client_id)
            .filter(|a| a.client_secret == secret)
            .map(|a| a.user.clone())
        else {
            return Err(OAuth2Error::invalid_client(
                "unknown client or wrong client secret",
            ));
        };
        match st.refresh_tokens.get(presented) {
            None => return Err(OAuth2Error::invalid_grant("unknown refresh token")),
            Some(r) if r.client_id != client_id => {
                return Err(OAuth2Error::invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            Some(r) if r.status == RefreshStatus::Used => {
                return Err(OAuth2Error::invalid_grant(
                    "the refresh token was already used; refresh tokens rotate, use the one from the last answer",
                ));
            }
            Some(r) if r.status == RefreshStatus::Revoked => {
                return Err(OAuth2Error::invalid_grant("the refresh token was revoked"));
            }
            Some(_) => {}
        }
        let record = self
            .mint(&mut st, &user, TokenKind::Daily)
            .map_err(|e| OAuth2Error::invalid_grant(format!("cannot issue a token: {e}")))?;
        if let Some(r) = st.refresh_tokens.get_mut(presented) {
            r.status = RefreshStatus::Used;
        }
        let rotated = new_refresh_token();
        st.refresh_tokens.insert(
            rotated.clone(),
            RefreshRecord {
                client_id,
                status: RefreshStatus::Active,
            },
        );
        drop(st);
        let expires_in = record
            .expires_at
            .as_second()
            .saturating_sub(now.as_second())
            .max(0);
        Ok(json!({
            "access_token": record.token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_token": rotated,
        }))
    }
}

fn new_refresh_token() -> String {
    format!("rt_{}", random_token(40))
}

/// `POST /sim/oauth2/token`.
pub(crate) async fn token(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let counters = sim.counters_raw();
    bump(&counters.oauth2_requests);
    match sim.refresh_grant(&headers, &body) {
        Ok(v) => {
            bump(&counters.oauth2_grants);
            let mut resp = json_response(StatusCode::OK, &v);
            no_store(&mut resp);
            resp
        }
        Err(e) => {
            bump(&counters.oauth2_refused);
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_ignored() {
        let err = parse_form(b"grant_type=refresh_token&grant_type=password").unwrap_err();
        assert_eq!(err.error, "invalid_request");
        let form = parse_form(b"grant_type=refresh_token&scope=").unwrap();
        assert!(!form.contains_key("scope"));
    }

    #[test]
    fn basic_client_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let b64 = STANDARD.encode("my%20app:s%3Acret+x");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        let (id, secret) = basic_client(&headers).unwrap().unwrap();
        assert_eq!((id.as_str(), secret.as_str()), ("my app", "s:cret x"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(
            basic_client(&headers).unwrap().unwrap_err().error,
            "invalid_client"
        );
    }
}
