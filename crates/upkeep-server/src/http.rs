//! The daemon's HTTP surface for the renewal engine: `/healthz`, the notifier webhook
//! and the OAuth login/callback pair. Only this module knows status codes.
//!
//! Access: `/healthz` needs no key; `/auth/upstox/callback` is guarded by its
//! single-use signed `state`; `POST /webhooks/upstox/token` by validating the
//! delivered token (Upstox cannot send a key); `/auth/upstox/login` needs an admin
//! API key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use upkeep_upstox::webhook::{MAX_NOTIFIER_BODY, parse_notifier};

use crate::engine::{Actor, Engine};

/// How many delivered tokens may be checked with Upstox per minute. Upstox signs
/// nothing, so anyone who can reach the webhook can post; the cheap checks (client id,
/// user, decoding, expiry) come first, and this caps the profile calls a flood of
/// plausible-looking forgeries could cause.
const WEBHOOK_CHECKS_PER_MINUTE: usize = 12;

/// A sliding one-minute window of webhook validations (real time).
#[derive(Default)]
struct WebhookBudget(std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>);

impl WebhookBudget {
    fn try_take(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= WEBHOOK_CHECKS_PER_MINUTE {
            return false;
        }
        q.push_back(now);
        true
    }
}

pub fn router(engine: Engine) -> Router {
    let budget = Arc::new(WebhookBudget::default());
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/webhooks/upstox/token",
            post(webhook).layer(DefaultBodyLimit::max(MAX_NOTIFIER_BODY)),
        )
        .route("/auth/upstox/login", get(login))
        .route("/auth/upstox/callback", get(callback))
        .layer(Extension(budget))
        .with_state(engine)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn webhook(
    State(engine): State<Engine>,
    Extension(budget): Extension<Arc<WebhookBudget>>,
    body: Bytes,
) -> Response {
    let reject = |code: &str, message: String| {
        metrics::counter!("upkeep_webhook_rejected_total", "reason" => code.to_owned())
            .increment(1);
        tracing::warn!(reason = code, %message, "notifier webhook rejected");
        error(StatusCode::BAD_REQUEST, code, message)
    };
    let payload = match parse_notifier(&body) {
        Ok(p) => p,
        Err(e) => return reject("bad_payload", e.to_string()),
    };
    let Some(account) = engine
        .account_for_client(&payload.client_id)
        .map(str::to_owned)
    else {
        return reject(
            "unknown_client",
            "the notification is for an app upkeep does not manage".into(),
        );
    };
    if let Some(expected) = engine
        .account_settings(&account)
        .and_then(|s| s.user_id.clone())
        && expected != payload.user_id
    {
        return reject(
            "wrong_user",
            "the notification is for another user than this account's".into(),
        );
    }
    // The token's own `sub` must match the payload's user too.
    match upkeep_core::expiry::inspect(&payload.access_token) {
        Ok(info) if info.claims.sub == payload.user_id => {}
        Ok(_) => {
            return reject(
                "wrong_user",
                "the token belongs to another user than the notification says".into(),
            );
        }
        Err(e) => return reject("bad_token", e.to_string()),
    }
    if !budget.try_take() {
        return reject(
            "rate_limited",
            "too many notifications to check; try again in a minute".into(),
        );
    }
    match engine
        .accept_token(
            &account,
            payload.access_token,
            "token_request",
            Actor::Webhook,
            true,
        )
        .await
    {
        Ok(c) => {
            metrics::counter!("upkeep_webhook_accepted_total").increment(1);
            (
                StatusCode::OK,
                Json(json!({ "status": "accepted", "account": account, "fingerprint": c.fingerprint })),
            )
                .into_response()
        }
        Err(reason) => reject("rejected", reason.to_string()),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    account: Option<String>,
}

/// API key scopes.
pub const SCOPE_ADMIN: &str = "admin";
pub const SCOPE_STATUS_READ: &str = "status:read";
pub const SCOPE_TOKEN_READ: &str = "token:read";
pub const SCOPES: [&str; 3] = [SCOPE_ADMIN, SCOPE_STATUS_READ, SCOPE_TOKEN_READ];

/// What the request's `Authorization: Bearer <key>` proves.
#[derive(Debug, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Key { scope: String },
}

/// Looks the key up by its SHA-256 digest among the live keys in the store, comparing
/// every digest in constant time.
async fn caller(engine: &Engine, headers: &HeaderMap) -> Result<Caller, Response> {
    let Some(key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Ok(Caller::Anonymous);
    };
    let digest = Sha256::digest(key.trim().as_bytes());
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

async fn login(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    match caller(&engine, &headers).await {
        Err(response) => return response,
        Ok(Caller::Anonymous) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an admin API key is required (Authorization: Bearer <key>; create one with \
                 `upkeep apikey create --scope admin`), or run `upkeep login` on the host",
            );
        }
        Ok(Caller::Key { scope }) if scope != SCOPE_ADMIN => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key's scope is {scope}; starting a login needs an admin key"),
            );
        }
        Ok(Caller::Key { .. }) => {}
    }
    let account = q
        .account
        .or_else(|| engine.default_account().map(str::to_owned))
        .unwrap_or_default();
    match engine.login_link(&account) {
        Some(link) => Redirect::to(&link).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_account",
            format!("no account `{account}` is configured"),
        ),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn page(status: StatusCode, ok: bool, title: &str, body: &str) -> Response {
    let colour = if ok { "#137333" } else { "#b3261e" };
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\"><title>upkeep: {title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
h1{{color:{colour};font-size:1.6rem}}</style></head><body><h1>{title}</h1><p>{body}</p></body></html>",
        title = html_escape(title),
        body = html_escape(body),
    );
    (status, Html(html)).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn callback(State(engine): State<Engine>, Query(q): Query<CallbackQuery>) -> Response {
    let now = engine.clock().now();
    let Some(state) = q.state.filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            false,
            "Login link incomplete",
            "The callback has no state. Start again from the link upkeep sent you.",
        );
    };
    let account = match engine.states().redeem(&state, now) {
        Ok(a) => a,
        Err(e) => {
            return page(
                StatusCode::BAD_REQUEST,
                false,
                "Login not accepted",
                &e.to_string(),
            );
        }
    };
    if let Some(err) = q.error {
        return page(
            StatusCode::BAD_REQUEST,
            false,
            "Login cancelled",
            &format!(
                "Upstox reported: {}",
                err.chars().take(100).collect::<String>()
            ),
        );
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            false,
            "Login incomplete",
            "Upstox sent no authorization code. Start again.",
        );
    };
    let Some(settings) = engine.account_settings(&account).cloned() else {
        return page(
            StatusCode::NOT_FOUND,
            false,
            "Unknown account",
            "This account is no longer configured.",
        );
    };
    let grant = match engine
        .upstox()
        .exchange_code(
            &code,
            &settings.client_id,
            &settings.client_secret,
            &settings.redirect_uri,
        )
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(account = %account, error = %e, "OAuth code exchange failed");
            return page(
                StatusCode::BAD_GATEWAY,
                false,
                "Upstox refused the login",
                &format!("{e}. Start again from a fresh link."),
            );
        }
    };
    match engine
        .accept_token(&account, grant.access_token, "oauth", Actor::OAuth, false)
        .await
    {
        Ok(c) => page(
            StatusCode::OK,
            true,
            "Logged in",
            &format!(
                "Account {account} has a fresh token, valid until {}. You can close this page.",
                upkeep_core::expiry::format_ist(c.expires_at)
            ),
        ),
        Err(reason) => page(
            StatusCode::BAD_REQUEST,
            false,
            "Token not accepted",
            &reason.to_string(),
        ),
    }
}
