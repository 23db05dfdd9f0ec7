//! One request through the gateway.
//!
//! Order of work, cheapest refusal first: the key (a digest compared in memory), the
//! account (header, the key's default, the daemon's default), the path, the token (from
//! memory), then the budget seam, then upstream. The caller's headers are edited in
//! place (no new map): hop-by-hop headers, `Host` and the account header go, the key in
//! `Authorization` is replaced by the account's `Bearer <token>`, rendered once per
//! token. Bodies stream both ways. Nothing is logged per request above debug.
//!
//! An upstream 401 is read (it is small): `UDAPI100050` on the token that is still
//! current asks the engine for one renewal (concurrent 401s share it: the engine's
//! renewal is single-flight, and a 401 on a token already replaced asks nothing); a GET
//! or HEAD is then replayed once with the new token, anything else gets a structured 401
//! saying the token was renewed and the request may be retried (an order is never sent
//! twice by upkeep). `UDAPI100067` and every other 401 pass through with an upkeep note
//! and no renewal.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use upkeep_upstox::gateway::{
    Unauthorized, classify_unauthorized, endpoint, error_envelope, is_api_path,
};
use zeroize::Zeroizing;

use super::hooks::{self, Exchange, Failure};
use super::upstream::SendError;
use super::{Gateway, RENEWAL_COOLDOWN};
use crate::api::keys::Scope;
use crate::engine::{CurrentToken, RenewOutcome};

/// Upstream bodies of a known length up to this are read whole before they are answered.
pub(super) const MAX_BUFFERED: usize = 256 * 1024;

/// The longest upstream 401 body the gateway reads to classify it.
const MAX_401_BODY: usize = 64 * 1024;

/// The header naming what upkeep's gateway did or refused (`token_renewed`, ...).
pub(super) const UPKEEP_ERROR: HeaderName = HeaderName::from_static("x-upkeep-error");

/// `Bearer <token>` for the upstream `Authorization` header, rendered once per token and
/// marked sensitive; the bytes are zeroized when the last copy goes.
#[derive(Default)]
pub struct BearerHeader(OnceLock<Option<HeaderValue>>);

impl std::fmt::Debug for BearerHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerHeader([REDACTED])")
    }
}

impl Clone for BearerHeader {
    /// A copy renders again (it is only ever cloned with its token, in tests).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl BearerHeader {
    fn value(&self, c: &CurrentToken) -> Option<HeaderValue> {
        self.0
            .get_or_init(|| {
                let token = c.token.expose();
                let mut buf = Zeroizing::new(Vec::with_capacity(7 + token.len()));
                buf.extend_from_slice(b"Bearer ");
                buf.extend_from_slice(token.as_bytes());
                let mut v = HeaderValue::from_maybe_shared(Bytes::from_owner(buf)).ok()?;
                v.set_sensitive(true);
                Some(v)
            })
            .clone()
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1), plus `Host`
/// (upstream's is set from its URL).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers.get(header::CONNECTION) {
        // Names the Connection header lists are hop-by-hop too.
        let names: Vec<HeaderName> = listed
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|n| HeaderName::try_from(n.trim()).ok())
            .collect();
        for n in names {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        if headers.contains_key(h) {
            headers.remove(h);
        }
    }
}

/// An answer upkeep's gateway gives itself: Upstox's error envelope (so clients that
/// read Upstox errors read it) with an `upkeep` member, and `X-Upkeep-Error: <code>`.
pub(super) fn refusal(status: StatusCode, code: &'static str, message: String) -> Response {
    refusal_with(status, code, message, json!({}))
}

fn refusal_with(status: StatusCode, code: &'static str, message: String, extra: Value) -> Response {
    let mut body = error_envelope(&format!("UPKEEP_{}", code.to_ascii_uppercase()), &message);
    let mut upkeep = json!({ "code": code, "message": message });
    if let (Some(u), Value::Object(extra)) = (upkeep.as_object_mut(), extra) {
        u.extend(extra);
    }
    body["upkeep"] = upkeep;
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(UPKEEP_ERROR, HeaderValue::from_static(code));
    r
}

/// Whether a path has a `.` or `..` segment (plain or percent-encoded): refused, so a
/// path cannot climb out of a host's base path.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| {
        [".", "..", "%2e", "%2e%2e", ".%2e", "%2e."]
            .iter()
            .any(|d| s.eq_ignore_ascii_case(d))
    })
}

pub(super) async fn handle(State(gw): State<Gateway>, req: Request) -> Response {
    let started = tokio::time::Instant::now();
    let inner = &gw.inner;
    let (parts, body) = req.into_parts();
    let axum::http::request::Parts {
        method,
        uri,
        mut headers,
        ..
    } = parts;

    // 1. The key: a digest compared in memory (the same check as every door's).
    let holder = match crate::api::require_key(&inner.keys, &headers, Scope::TokenRead) {
        Ok(holder) => holder,
        Err(crate::api::Refusal(status, code, message)) => return refusal(status, code, message),
    };

    // 2. The account.
    let named = headers.remove(&inner.account_header);
    let account: Cow<'_, str> = match &named {
        Some(v) => match v.to_str() {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_account",
                    format!("the {} header is not text", inner.account_header),
                );
            }
        },
        None => match inner.default_accounts.get(&*holder.name) {
            Some(a) => Cow::Borrowed(a.as_str()),
            None => match inner.engine.default_account() {
                Some(a) => Cow::Owned(a),
                None => {
                    return refusal(
                        StatusCode::NOT_FOUND,
                        "no_account",
                        "no account is configured".into(),
                    );
                }
            },
        },
    };

    // 3. The path.
    let path = uri.path().strip_prefix("/upstox").unwrap_or("/");
    if has_dot_segment(path) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "a path with . or .. segments is refused".into(),
        );
    }
    if !is_api_path(path) {
        return refusal(
            StatusCode::NOT_FOUND,
            "not_an_api_path",
            "only Upstox API paths (/upstox/v2/..., /upstox/v3/...) are forwarded".into(),
        );
    }
    let ex = Exchange {
        account: &account,
        key: &holder.name,
        method: &method,
        path,
        query: uri.query(),
        endpoint: endpoint(path),
    };

    // 4. The token, from memory.
    let Some(current) = inner.engine.current(&account) else {
        if inner.engine.account_settings(&account).is_none() {
            return refusal(
                StatusCode::NOT_FOUND,
                "unknown_account",
                format!(
                    "no account `{account}` is configured (pick one with the {} header)",
                    inner.account_header
                ),
            );
        }
        let r = match hooks::upstream_failed(&gw, &ex, Failure::NoToken).await {
            Some(r) => r,
            None => refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_token",
                format!("account `{account}` has no token yet; upkeep is getting one"),
            ),
        };
        return finish(&gw, &ex, started, r);
    };

    // 5. The budget (and anything else that must come before upstream).
    let admission = match hooks::before_upstream(&gw, &ex).await {
        Ok(a) => a,
        Err(r) => return finish(&gw, &ex, started, r),
    };

    // 6. Upstream.
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let replayable =
        matches!(method, Method::GET | Method::HEAD) && http_body::Body::is_end_stream(&body);
    let replay_headers = replayable.then(|| headers.clone());
    let body = if http_body::Body::is_end_stream(&body) {
        Body::empty()
    } else if http_body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n <= MAX_BUFFERED as u64)
    {
        // Small (an order): read whole, so the caller's connection stays reusable.
        match body.collect().await {
            Ok(b) => Body::from(b.to_bytes()),
            Err(_) => {
                let r = refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "the request body could not be read".into(),
                );
                return finish(&gw, &ex, started, r);
            }
        }
    } else {
        body
    };
    let first = send(&gw, &ex, headers, &current, body, replay_headers.as_ref()).await;
    let response = match first {
        Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
            on_unauthorized(&gw, &ex, r, &current, replay_headers).await
        }
        other => upstream_response(&gw, &ex, other).await,
    };
    let response = hooks::after_upstream(&gw, &ex, admission, response);
    finish(&gw, &ex, started, response)
}

/// Counts the request in the usage table and returns its response.
fn finish(gw: &Gateway, ex: &Exchange<'_>, started: tokio::time::Instant, r: Response) -> Response {
    let error = r.status().as_u16() >= 400;
    gw.inner.usage.record(
        ex.account,
        ex.key,
        ex.endpoint.template,
        error,
        started.elapsed(),
    );
    r
}

/// Sends the request upstream with `current`'s token. `again`: the request's headers
/// (without `Authorization`) when it is a bodiless GET or HEAD the client may send once
/// more if its reused connection closes unanswered (one copy serves that and the
/// replay after a renewal).
async fn send(
    gw: &Gateway,
    ex: &Exchange<'_>,
    mut headers: HeaderMap,
    current: &CurrentToken,
    body: Body,
    again: Option<&HeaderMap>,
) -> Result<Response, Failure> {
    let Some(auth) = current.bearer.value(current) else {
        // A token that is not a valid header value cannot be sent: Upstox would refuse it.
        return Err(Failure::NoToken);
    };
    headers.insert(header::AUTHORIZATION, auth);
    gw.inner
        .client
        .send(ex.method, ex.path, ex.query, headers, body, again)
        .await
        .map_err(|e| match e {
            SendError::Timeout => Failure::Timeout,
            SendError::Unreachable => Failure::Unreachable,
        })
}

/// Upstream's answer as the client's response (hop-by-hop headers dropped), or the
/// failure's (a cached answer when the request is covered). The client has read a
/// body of a known length up to [`MAX_BUFFERED`] whole (so its connection is free
/// again); larger or unsized bodies stream.
async fn upstream_response(
    gw: &Gateway,
    ex: &Exchange<'_>,
    r: Result<Response, Failure>,
) -> Response {
    let mut r = match r {
        Ok(r) => r,
        Err(f) => {
            return match hooks::upstream_failed(gw, ex, f).await {
                Some(cached) => cached,
                None => failure_response(f),
            };
        }
    };
    let status = r.status();
    if status.is_server_error()
        && let Some(cached) = hooks::upstream_failed(gw, ex, Failure::ServerError(status)).await
    {
        return cached;
    }
    strip_hop_by_hop(r.headers_mut());
    r
}

fn failure_response(f: Failure) -> Response {
    match f {
        Failure::Timeout => refusal(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "Upstox did not answer in time".into(),
        ),
        Failure::Unreachable => refusal(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            "Upstox could not be reached".into(),
        ),
        Failure::NoToken => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_token",
            "the account has no usable token yet; upkeep is getting one".into(),
        ),
        Failure::ServerError(s) => refusal(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("Upstox answered {s}"),
        ),
    }
}

/// Reads a 401 from upstream and decides: renew once and replay a GET, tell a POST it
/// may retry, or pass the refusal through with an upkeep note.
async fn on_unauthorized(
    gw: &Gateway,
    ex: &Exchange<'_>,
    r: Response,
    used: &CurrentToken,
    replay_headers: Option<HeaderMap>,
) -> Response {
    let inner = &gw.inner;
    let status = r.status();
    let mut headers = r.headers().clone();
    strip_hop_by_hop(&mut headers);
    let body = read_capped(r).await;
    let mut pass_through = |code: &'static str, message: String| {
        let mut v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| error_envelope("", ""));
        if !v.is_object() {
            v = error_envelope("", "");
        }
        v["upkeep"] = json!({ "code": code, "message": message });
        headers.remove(header::CONTENT_LENGTH);
        let mut resp = (status, axum::Json(v)).into_response();
        for (k, val) in headers.iter() {
            if k != header::CONTENT_TYPE {
                resp.headers_mut().append(k.clone(), val.clone());
            }
        }
        resp.headers_mut()
            .insert(UPKEEP_ERROR, HeaderValue::from_static(code));
        resp
    };
    match classify_unauthorized(&body) {
        Unauthorized::ExtendedTokenNotAllowed => {
            return pass_through(
                "extended_token_not_allowed",
                format!(
                    "account `{}` holds an extended token, which this Upstox API does not \
                     accept; upkeep did not renew (a renewal would not help)",
                    ex.account
                ),
            );
        }
        Unauthorized::Other(code) => {
            return pass_through(
                "upstream_unauthorized",
                format!(
                    "Upstox refused this request ({}) for a reason a new token does not fix \
                     (permissions, static IP, app settings); upkeep did not renew",
                    code.as_deref().unwrap_or("no error code")
                ),
            );
        }
        Unauthorized::TokenInvalid => {}
    }

    // The token is invalid. Renew it once, unless it is already replaced or its renewal
    // just failed.
    let now = inner.engine.clock().now();
    let cooling = {
        let failed = inner
            .failed_renewals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failed
            .get(ex.account)
            .is_some_and(|(fp, at)| *fp == used.fingerprint && now < *at + RENEWAL_COOLDOWN)
    };
    let outcome = if cooling {
        None
    } else {
        Some(
            inner
                .engine
                .report_unauthorized(ex.account, &used.fingerprint)
                .await,
        )
    };
    let fresh = inner
        .engine
        .current(ex.account)
        .filter(|c| c.fingerprint != used.fingerprint);
    let Some(fresh) = fresh else {
        if let Some(RenewOutcome::Failed { .. } | RenewOutcome::Busy) = &outcome {
            inner
                .failed_renewals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ex.account.to_owned(), (used.fingerprint.clone(), now));
        }
        let why = match outcome {
            None => "its renewal failed moments ago".to_owned(),
            Some(RenewOutcome::Failed { reason }) => format!("the renewal failed: {reason}"),
            Some(RenewOutcome::Busy) => "another upkeep process is renewing it".to_owned(),
            Some(RenewOutcome::Cancelled) => "upkeep is shutting down".to_owned(),
            Some(_) => "no new token is available".to_owned(),
        };
        if let Some(cached) = hooks::upstream_failed(gw, ex, Failure::NoToken).await {
            return cached;
        }
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "token_invalid",
            format!(
                "Upstox refused account `{}`'s token (UDAPI100050) and {why}",
                ex.account
            ),
        );
    };
    match replay_headers {
        Some(h) => {
            // The replay is a second call against the user's budget (the caller's
            // admission covers the first, and reads the replay's answer).
            let replay = match hooks::before_upstream(gw, ex).await {
                Ok(a) => a,
                Err(r) => return r,
            };
            let again = send(gw, ex, h, &fresh, Body::empty(), None).await;
            drop(replay);
            upstream_response(gw, ex, again).await
        }
        None => refusal_with(
            StatusCode::UNAUTHORIZED,
            "token_renewed",
            format!(
                "Upstox refused account `{}`'s token (UDAPI100050); upkeep renewed it. This \
                 request was not replayed (it may not be idempotent); retry it",
                ex.account
            ),
            json!({ "retry": true, "account": ex.account }),
        ),
    }
}

/// Reads at most [`MAX_401_BODY`] of a small upstream error body.
async fn read_capped(r: Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = r.into_body();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                let room = MAX_401_BODY.saturating_sub(out.len());
                out.extend_from_slice(&data[..data.len().min(room)]);
                if out.len() >= MAX_401_BODY {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_plain_or_encoded_are_found() {
        assert!(has_dot_segment("/v2/../sim/clock"));
        assert!(has_dot_segment("/v2/%2E%2e/x"));
        assert!(has_dot_segment("/./v2"));
        assert!(!has_dot_segment("/v2/user/profile"));
        assert!(!has_dot_segment(
            "/v2/historical-candle/NSE_EQ%7CX/day/2026-11-30"
        ));
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_lists_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Private".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }
}
