//! The REST client: profile, funds, quotes, logout, the OAuth code exchange, the v3
//! access-token request, the dialog URL, and a generic OAuth 2 refresh grant.

use std::time::Duration;

use http::HeaderMap;
use reqwest::{RequestBuilder, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use upkeep_core::{AccessToken, Secret};
use url::Url;

use crate::envelope;
use crate::error::{ApiError, UpstoxError};
use crate::hosts::{Hosts, encode_component, endpoint};
use crate::models::{
    Funds, LtpQuotes, Profile, RefreshGrant, TokenGrant, TokenRequestAck, TokenRequestAckWire,
    epoch_ms_string,
};

/// Most instrument keys one LTP call may carry (reference 4.3).
pub const MAX_LTP_KEYS: usize = 500;

const API_VERSION: &str = "2.0";
const APPLICATION_JSON: &str = "application/json";

/// How the client is built. `Default`: the real hosts, connect timeout 5 s, request
/// timeout 15 s.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub hosts: Hosts,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            hosts: Hosts::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            user_agent: concat!("upkeep/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl ClientConfig {
    /// The default configuration with other hosts (tests point them at the simulator).
    pub fn with_hosts(hosts: Hosts) -> Self {
        Self {
            hosts,
            ..Self::default()
        }
    }
}

/// A client for the Upstox REST API. Cheap to clone (one connection pool). Holds no
/// token: each call takes the token it should use.
#[derive(Debug, Clone)]
pub struct UpstoxClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl UpstoxClient {
    /// A client for `hosts` with the default timeouts.
    pub fn new(hosts: Hosts) -> Result<Self, UpstoxError> {
        Self::with_config(ClientConfig::with_hosts(hosts))
    }

    /// A client built from `config`. TLS (rustls) verification is always on.
    pub fn with_config(config: ClientConfig) -> Result<Self, UpstoxError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            // REST calls never redirect; a redirect would only leak the bearer elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstoxError::Client(e.without_url().to_string()))?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn hosts(&self) -> &Hosts {
        &self.config.hosts
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET /v2/user/profile`: who the token belongs to. The cheap "is this token
    /// still valid" probe.
    pub async fn profile(&self, token: &AccessToken) -> Result<Profile, UpstoxError> {
        const EP: &str = "GET /v2/user/profile";
        let url = endpoint(&self.config.hosts.api, "v2/user/profile");
        let req = self.http.get(url).header("Api-Version", API_VERSION);
        self.call(EP, req, Some(token)).await
    }

    /// `GET /v2/user/get-funds-and-margin`. Answers 423 (class `Maintenance`) between
    /// 00:00 and 05:30 IST.
    pub async fn funds(&self, token: &AccessToken) -> Result<Funds, UpstoxError> {
        const EP: &str = "GET /v2/user/get-funds-and-margin";
        let url = endpoint(&self.config.hosts.api, "v2/user/get-funds-and-margin");
        let req = self.http.get(url).header("Api-Version", API_VERSION);
        self.call(EP, req, Some(token)).await
    }

    /// `GET /v3/market-quote/ltp` for 1 to 500 instrument keys (`NSE_EQ|INE848E01016`).
    pub async fn ltp_v3(
        &self,
        token: &AccessToken,
        instrument_keys: &[&str],
    ) -> Result<LtpQuotes, UpstoxError> {
        const EP: &str = "GET /v3/market-quote/ltp";
        if instrument_keys.is_empty() || instrument_keys.len() > MAX_LTP_KEYS {
            return Err(UpstoxError::InvalidInput(format!(
                "LTP takes 1 to {MAX_LTP_KEYS} instrument keys, got {}",
                instrument_keys.len()
            )));
        }
        if let Some(bad) = instrument_keys
            .iter()
            .find(|k| k.trim().is_empty() || k.contains(','))
        {
            return Err(UpstoxError::InvalidInput(format!(
                "instrument key {:?} is empty or contains a comma",
                envelope::scrub(bad)
            )));
        }
        let mut url = endpoint(&self.config.hosts.api, "v3/market-quote/ltp");
        let keys: Vec<String> = instrument_keys
            .iter()
            .map(|k| encode_component(k))
            .collect();
        url.set_query(Some(&format!("instrument_key={}", keys.join(","))));
        self.call(EP, self.http.get(url), Some(token)).await
    }

    /// `GET /v3/feed/market-data-feed/authorize`: a fresh single-use WebSocket URL for
    /// the Market Data Feed V3 (reference 7.1). Either key spelling of the answer is
    /// read; anything but a `ws`/`wss` URL is refused.
    pub async fn feed_authorize(&self, token: &AccessToken) -> Result<Url, UpstoxError> {
        const EP: &str = "GET /v3/feed/market-data-feed/authorize";
        let url = endpoint(&self.config.hosts.api, "v3/feed/market-data-feed/authorize");
        let (status, data) = self.call_raw(EP, self.http.get(url), Some(token)).await?;
        let raw = ["authorized_redirect_uri", "authorizedRedirectUri"]
            .iter()
            .find_map(|k| data.get(*k).and_then(Value::as_str))
            .ok_or_else(|| UpstoxError::Decode {
                endpoint: EP,
                status,
                detail: "no authorized_redirect_uri in the answer".into(),
            })?;
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => Ok(u),
            _ => Err(UpstoxError::Decode {
                endpoint: EP,
                status,
                detail: "authorized_redirect_uri is not a ws:// or wss:// URL".into(),
            }),
        }
    }

    /// `DELETE /v2/logout`: invalidates the token.
    pub async fn logout(&self, token: &AccessToken) -> Result<(), UpstoxError> {
        const EP: &str = "DELETE /v2/logout";
        let url = endpoint(&self.config.hosts.api, "v2/logout");
        let req = self.http.delete(url).header("Api-Version", API_VERSION);
        let (status, data) = self.call_raw(EP, req, Some(token)).await?;
        match data {
            Value::Bool(true) => Ok(()),
            _ => Err(UpstoxError::Decode {
                endpoint: EP,
                status,
                detail: "logout did not answer data=true".into(),
            }),
        }
    }

    /// The authorization dialog URL to send a user's browser to (reference 1.1).
    pub fn authorize_url(&self, client_id: &str, redirect_uri: &str, state: &str) -> Url {
        let mut url = endpoint(&self.config.hosts.api, "v2/login/authorization/dialog");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", client_id);
            q.append_pair("redirect_uri", redirect_uri);
            if !state.is_empty() {
                q.append_pair("state", state);
            }
        }
        url
    }

    /// `POST /v2/login/authorization/token`: trades a single-use authorization code
    /// for an access token (reference 1.2). The code is spent even if this fails.
    pub async fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        client_secret: &Secret,
        redirect_uri: &str,
    ) -> Result<TokenGrant, UpstoxError> {
        const EP: &str = "POST /v2/login/authorization/token";
        if code.is_empty() || client_id.is_empty() || client_secret.is_empty() {
            return Err(UpstoxError::InvalidInput(
                "code, client id and client secret must all be non-empty".into(),
            ));
        }
        let url = endpoint(&self.config.hosts.api, "v2/login/authorization/token");
        let form = [
            ("code", code),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("redirect_uri", redirect_uri),
            ("grant_type", "authorization_code"),
        ];
        let req = self
            .http
            .post(url)
            .header("Api-Version", API_VERSION)
            .form(&form);
        let grant: TokenGrant = self.call(EP, req, None).await?;
        tracing::info!(
            endpoint = EP,
            user_id = %grant.user_id,
            token_fp = %grant.access_token.fingerprint(),
            extended = grant.extended_token.is_some(),
            "exchanged authorization code"
        );
        Ok(grant)
    }

    /// `POST /v3/login/auth/token/request/{client_id}`: asks Upstox to notify the user,
    /// who approves in the app; the token then arrives on the notifier webhook
    /// (reference 3).
    pub async fn request_access_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<TokenRequestAck, UpstoxError> {
        const EP: &str = "POST /v3/login/auth/token/request/{client_id}";
        if client_id.is_empty() || client_secret.is_empty() {
            return Err(UpstoxError::InvalidInput(
                "client id and client secret must be non-empty".into(),
            ));
        }
        let mut url = endpoint(&self.config.hosts.api, "v3/login/auth/token/request");
        url.path_segments_mut()
            .map_err(|()| UpstoxError::InvalidInput("the API host cannot take a path".into()))?
            .push(client_id);
        let body = serde_json::json!({ "client_secret": client_secret.expose() });
        let req = self.http.post(url).json(&body);
        let (status, data) = self.call_raw(EP, req, None).await?;
        let wire: TokenRequestAckWire =
            serde_json::from_value(data).map_err(|e| UpstoxError::decode(EP, status, &e))?;
        let expiry = match &wire.authorization_expiry {
            Value::String(s) => epoch_ms_string(s),
            Value::Number(n) => n
                .as_i64()
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()),
            _ => None,
        }
        .ok_or_else(|| UpstoxError::Decode {
            endpoint: EP,
            status,
            detail: "authorization_expiry is not epoch milliseconds".into(),
        })?;
        Ok(TokenRequestAck {
            authorization_expiry: expiry,
            notifier_url: wire.notifier_url.filter(|u| !u.is_empty()),
        })
    }

    /// A standard OAuth 2 refresh grant (RFC 6749 section 6) against any provider's
    /// token endpoint, for providers that have refresh tokens (Upstox has none). The
    /// client authenticates with `client_id`/`client_secret` in the form body.
    pub async fn oauth2_refresh(
        &self,
        token_url: &Url,
        client_id: &str,
        client_secret: &Secret,
        refresh_token: &Secret,
    ) -> Result<RefreshGrant, UpstoxError> {
        const EP: &str = "POST <oauth2 token endpoint>";
        if refresh_token.is_empty() {
            return Err(UpstoxError::InvalidInput(
                "the refresh token is empty".into(),
            ));
        }
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", client_id),
        ];
        if !client_secret.is_empty() {
            form.push(("client_secret", client_secret.expose()));
        }
        let req = self.http.post(token_url.clone()).form(&form);
        self.call(EP, req, None).await
    }

    /// Sends, checks the status and envelope, and decodes `data` into `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        ep: &'static str,
        req: RequestBuilder,
        bearer: Option<&AccessToken>,
    ) -> Result<T, UpstoxError> {
        let (status, data) = self.call_raw(ep, req, bearer).await?;
        serde_json::from_value(data).map_err(|e| UpstoxError::decode(ep, status, &e))
    }

    /// Sends and returns the success payload (`data`, or the flat body).
    async fn call_raw(
        &self,
        ep: &'static str,
        req: RequestBuilder,
        bearer: Option<&AccessToken>,
    ) -> Result<(u16, Value), UpstoxError> {
        let mut req = req.header(header::ACCEPT, APPLICATION_JSON);
        if let Some(token) = bearer {
            req = req.bearer_auth(token.expose());
        }
        let resp = req.send().await.map_err(|e| {
            tracing::debug!(
                endpoint = ep,
                token_fp = fingerprint(bearer),
                "request failed"
            );
            count_request(ep, None);
            UpstoxError::network(ep, e)
        })?;
        let status = resp.status().as_u16();
        count_request(ep, Some(status));
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| UpstoxError::network(ep, e))?;
        tracing::debug!(
            endpoint = ep,
            status,
            token_fp = fingerprint(bearer),
            "upstox answered"
        );
        read_body(ep, status, &headers, &body, bearer.is_some())
    }
}

/// Counts a call to Upstox in `upkeep_upstream_requests_total{endpoint, status}`
/// (`status` is the HTTP status, or `error` when no answer came).
pub(crate) fn count_request(ep: &'static str, status: Option<u16>) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    metrics::counter!("upkeep_upstream_requests_total", "endpoint" => ep, "status" => status)
        .increment(1);
}

/// Turns a response into the success payload or a typed error.
pub(crate) fn read_body(
    ep: &'static str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    bearer: bool,
) -> Result<(u16, Value), UpstoxError> {
    if !(200..300).contains(&status) {
        return Err(ApiError::from_response(ep, status, headers, body, bearer).into());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| UpstoxError::decode(ep, status, &e))?;
    match envelope::success_data(value) {
        Ok(data) => Ok((status, data)),
        Err(detail) => Err(ApiError::from_detail(ep, status, headers, detail, bearer).into()),
    }
}

fn fingerprint(token: Option<&AccessToken>) -> String {
    token.map(AccessToken::fingerprint).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    fn client() -> UpstoxClient {
        UpstoxClient::new(Hosts::default()).unwrap()
    }

    #[test]
    fn authorize_url_is_the_documented_dialog() {
        let url = client().authorize_url(
            "615b1297-d443-3b39-ba19-1927fbcdddc7",
            "https://www.trading.tech/login/upstox-v2",
            "st4te",
        );
        assert_eq!(
            url.as_str(),
            "https://api.upstox.com/v2/login/authorization/dialog?response_type=code\
             &client_id=615b1297-d443-3b39-ba19-1927fbcdddc7\
             &redirect_uri=https%3A%2F%2Fwww.trading.tech%2Flogin%2Fupstox-v2&state=st4te"
        );
    }

    #[tokio::test]
    async fn ltp_rejects_more_than_500_keys_without_sending() {
        let keys: Vec<String> = (0..501).map(|i| format!("NSE_FO|{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let err = client()
            .ltp_v3(&AccessToken::new("t"), &refs)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstoxError::InvalidInput(_)), "{err}");
        let err = client()
            .ltp_v3(&AccessToken::new("t"), &[])
            .await
            .unwrap_err();
        assert!(matches!(err, UpstoxError::InvalidInput(_)), "{err}");
    }

    #[test]
    fn error_status_bodies_become_classified_api_errors() {
        let body = br#"{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","error_code":"UDAPI100050"}]}"#;
        let err =
            read_body("GET /v2/user/profile", 401, &HeaderMap::new(), body, true).unwrap_err();
        assert_eq!(err.class(), ErrorClass::TokenInvalid);
        assert_eq!(err.code(), Some("UDAPI100050"));
    }

    #[test]
    fn a_success_status_with_an_error_envelope_is_still_an_error() {
        let body = br#"{"success":false,"error":{"code":"LOCKED","message":"Account blocked"}}"#;
        let err = read_body("POST /x", 200, &HeaderMap::new(), body, false).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(err.to_string().contains("Account blocked"));
    }

    #[test]
    fn html_on_a_success_status_is_a_decode_error() {
        let err = read_body("GET /x", 200, &HeaderMap::new(), b"<html>", true).unwrap_err();
        assert!(matches!(err, UpstoxError::Decode { .. }), "{err}");
    }
}
