//! The daemon's HTTP surface for the renewal engine: `/healthz`, the notifier webhook
//! and the OAuth login/callback pair. Only the HTTP modules know status codes.
//!
//! Access: `/healthz` needs no key; `/auth/upstox/callback` is guarded by its
//! single-use signed `state`; `POST /webhooks/upstox/token` by validating the
//! delivered token (Upstox cannot send a key); `/auth/upstox/login` needs an admin
//! API key.
//!
//! - [`webhook`]: the notifier webhook (cheap checks first, a bounded validation
//!   queue, rejections summarised);
//! - `oauth`: login link and callback;
//! - [`serve`]: the listener (connection cap, header-read and idle timeouts, a
//!   shutdown deadline).

mod oauth;
pub mod serve;
pub mod tally;
pub mod webhook;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use upkeep_upstox::webhook::MAX_NOTIFIER_BODY;

use crate::engine::Engine;

/// The routes of the renewal engine's doors. Starts the webhook's validation worker
/// and its rejection summary (both stop with the engine).
pub fn router(engine: Engine) -> Router {
    let gate = webhook::Gate::start(engine.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/webhooks/upstox/token",
            post(webhook::receive)
                .layer(DefaultBodyLimit::max(MAX_NOTIFIER_BODY))
                .with_state(gate),
        )
        .route("/auth/upstox/login", get(oauth::login))
        .route("/auth/upstox/callback", get(oauth::callback))
        .with_state(engine)
}

/// The JSON error body every endpoint uses: `{"error": {"code", "message"}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready: the store answers, every account's supervisor runs, and every account has a
/// valid token or is renewing. Without a key only the verdict (`{"ready": bool}`,
/// 200 or 503); with a `status:read` or `admin` key, per account why.
async fn readyz(State(engine): State<Engine>, headers: HeaderMap) -> Response {
    let store_ok = engine.store().health().await.is_ok();
    let now = engine.clock().now();
    let mut ready = store_ok;
    let mut accounts = Vec::new();
    for id in &engine.account_ids() {
        let status = engine.status(id).unwrap_or_default();
        let valid = engine.current(id).is_some_and(|c| c.is_valid_at(now))
            && status.api_validated != Some(false);
        let ok = status.supervisor_alive && (valid || status.renewing);
        ready &= ok;
        accounts.push(json!({
            "account": id,
            "ready": ok,
            "supervisor_alive": status.supervisor_alive,
            "supervisor_restarts": status.supervisor_restarts,
            "token_valid": valid,
            "renewing": status.renewing,
            "conditions": status.conditions,
        }));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let detailed = matches!(
        caller(&engine, &headers).await,
        Ok(Caller::Key { scope }) if scope == SCOPE_STATUS_READ || scope == SCOPE_ADMIN
    );
    if detailed {
        (
            code,
            Json(json!({ "ready": ready, "store": store_ok, "accounts": accounts })),
        )
            .into_response()
    } else {
        (code, Json(json!({ "ready": ready }))).into_response()
    }
}

/// The credentials of `Authorization: <scheme> <credentials>` when the scheme is
/// `Bearer`, matched case-insensitively (RFC 7235).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(rest.trim())
        .filter(|k| !k.is_empty())
}

/// API key scopes.
pub const SCOPE_ADMIN: &str = "admin";
pub const SCOPE_STATUS_READ: &str = "status:read";
pub const SCOPE_TOKEN_READ: &str = "token:read";
pub const SCOPES: [&str; 3] = [SCOPE_ADMIN, SCOPE_STATUS_READ, SCOPE_TOKEN_READ];

/// What the request's `Authorization: Bearer <key>` proves.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    Anonymous,
    Key { scope: String },
}

/// Looks the key up by its SHA-256 digest among the live keys in the store, comparing
/// every digest in constant time.
pub(crate) async fn caller(engine: &Engine, headers: &HeaderMap) -> Result<Caller, Response> {
    let Some(key) = bearer(headers) else {
        return Ok(Caller::Anonymous);
    };
    let digest = Sha256::digest(key.as_bytes());
    let keys = engine.store().api_keys().await.map_err(|e| {
        tracing::error!(error = %e, "cannot read API keys");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot be read right now",
        )
    })?;
    let mut found = None;
    for k in keys.iter().filter(|k| k.revoked_at.is_none()) {
        if bool::from(k.digest.as_slice().ct_eq(digest.as_slice())) {
            found = Some(k.scope.clone());
        }
    }
    Ok(match found {
        Some(scope) => Caller::Key { scope },
        None => Caller::Anonymous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn the_bearer_scheme_is_matched_case_insensitively_and_other_schemes_are_not_keys() {
        assert_eq!(bearer(&auth("Bearer k1")), Some("k1"));
        assert_eq!(bearer(&auth("bearer k1")), Some("k1"));
        assert_eq!(bearer(&auth("BEARER   k1 ")), Some("k1"));
        assert_eq!(bearer(&auth("Basic k1")), None);
        assert_eq!(bearer(&auth("Bearer")), None);
        assert_eq!(bearer(&auth("Bearer   ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
