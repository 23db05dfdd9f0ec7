//! The HTTP API: status, renewals and the token for consumer programs, all read from the
//! engine's memory. Every route needs an API key (`Authorization: Bearer <key>`), checked
//! against the in-memory [`keys::KeyCache`]:
//!
//! | route | scope |
//! |---|---|
//! | `GET /api/token/status` (seed-compatible, default account) | `status:read` |
//! | `POST /api/token/force-refresh` | `admin` |
//! | `POST /api/upstox/token/refresh` (the OAuth login link) | `admin` |
//! | `GET /api/v1/accounts`, `GET /api/v1/accounts/{id}` | `status:read` |
//! | `POST /api/v1/accounts/{id}/renew` | `admin` |
//! | `GET /api/v1/accounts/{id}/token` | `token:read` |
//! | `PUT /api/v1/accounts/{id}/token` | `admin` |
//! | `GET /api/v1/scheduler` | `status:read` |
//! | `POST /api/v1/reload` | `admin` |
//! | `GET /api/v1/usage` (the gateway's usage) | `status:read` |
//! | `GET /metrics` | `status:read` |
//!
//! `admin` may do everything; `token:read` also reads status. Errors are
//! `{"error": {"code", "message"}}`; bodies are limited to [`MAX_BODY`].

pub mod keys;
mod metrics_text;
mod token_body;

pub use metrics_text::install_recorder as install_metrics_recorder;
pub use token_body::TokenBody;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use upkeep_core::AccessToken;
use upkeep_core::expiry::format_ist;

use crate::engine::{Actor, Engine, RenewOutcome};
use crate::http::{bearer, error};
use keys::{KeyCache, KeyHolder, Scope};

/// Largest request body the API reads.
pub const MAX_BODY: usize = 16 * 1024;

/// Shared by the API's handlers.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
    pub keys: KeyCache,
    /// The dashboard's sessions (a session acts as `admin`; changes need its CSRF token).
    pub sessions: crate::dashboard::Sessions,
    /// The gateway's usage table (`GET /api/v1/usage`, `/metrics`).
    pub usage: crate::gateway::Usage,
    /// The gateway's rate budget and cached fallback (their counters in `/metrics`).
    pub budget: crate::gateway::budget::Budget,
    pub cache: crate::gateway::cache::StaleCache,
    /// The market-data relay (its connections and consumers in `/metrics`).
    pub relay: crate::relay::Relay,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/token/status", get(seed_status))
        .route("/api/token/force-refresh", post(seed_force_refresh))
        .route("/api/upstox/token/refresh", post(seed_login_link))
        .route("/api/v1/accounts", get(list_accounts))
        .route("/api/v1/accounts/{id}", get(get_account))
        .route("/api/v1/accounts/{id}/renew", post(renew_account))
        .route("/api/v1/accounts/{id}/login-link", post(account_login_link))
        .route("/api/v1/accounts/{id}/token", get(get_token).put(put_token))
        .route("/api/v1/scheduler", get(scheduler))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/events", get(events))
        .route("/api/v1/usage", get(usage))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi_json))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A refusal before a handler does anything: becomes the JSON error response.
pub(crate) struct Refusal(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

/// The caller's key, if it allows `needed`: 401 without a (known) key, 403 with a key
/// of a weaker scope.
pub(crate) fn require(
    state: &ApiState,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<KeyHolder, Refusal> {
    require_session_or_key(&state.keys, &state.sessions, headers, needed)
}

/// The dashboard's signed-in session (a request without a key), or else the caller's
/// key if it allows `needed`. Shared by the API and the relay's read doors.
pub(crate) fn require_session_or_key(
    keys: &keys::KeyCache,
    sessions: &crate::dashboard::Sessions,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<KeyHolder, Refusal> {
    if bearer(headers).is_none() && sessions.csrf_of(headers).is_some() {
        return Ok(KeyHolder {
            name: "dashboard".into(),
            scope: Scope::Admin,
            via_session: true,
        });
    }
    require_key(keys, headers, needed)
}

/// The caller's API key (no dashboard session), if it allows `needed`: 401 without a
/// (known) key, 403 with a key of a weaker scope. Shared by every door that takes keys.
pub(crate) fn require_key(
    keys: &keys::KeyCache,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<KeyHolder, Refusal> {
    let Some(key) = bearer(headers) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "an API key with scope {} is required (Authorization: Bearer <key>; create one \
                 with `upkeep apikey create --scope {}`)",
                needed.as_str(),
                needed.as_str()
            ),
        ));
    };
    let Some(holder) = keys.check(key) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API key is not known or was revoked".into(),
        ));
    };
    if !holder.scope.allows(needed) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this key's scope is {}; this needs {}",
                holder.scope.as_str(),
                needed.as_str()
            ),
        ));
    }
    Ok(holder)
}

/// [`require`] for a request that changes something: a dashboard session must also
/// send its CSRF token (`X-CSRF-Token`).
fn require_change(
    state: &ApiState,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<KeyHolder, Refusal> {
    let holder = require(state, headers, needed)?;
    if holder.via_session && !crate::dashboard::csrf_ok(&state.sessions, headers) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong X-CSRF-Token for this session".into(),
        ));
    }
    Ok(holder)
}

fn unknown_account(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_account",
        format!("no account `{id}` is configured"),
    )
}

/// Everything the daemon knows about an account, without the token.
pub(crate) fn account_json(engine: &Engine, id: &str) -> Option<Value> {
    let settings = engine.account_settings(id)?;
    let status = engine.status(id).unwrap_or_default();
    let now = engine.clock().now();
    let current = engine.current(id);
    let refused = status.api_validated == Some(false);
    let valid = current.as_ref().is_some_and(|c| c.is_valid_at(now)) && !refused;
    let state = match (&current, refused) {
        (None, _) => "missing",
        (Some(_), true) => "refused",
        (Some(c), false) => {
            upkeep_core::state::TokenState::at(c.expires_at, now, &engine.settings().thresholds)
                .as_str()
        }
    };
    let token = current.as_ref().map(|c| {
        json!({
            "kind": c.kind.as_str(),
            "expires_at": format_ist(c.expires_at),
            "seconds_left": c.expires_at.duration_since(now).as_secs().max(0),
            "source": c.source,
            "fingerprint": c.fingerprint,
            "stored_at": format_ist(c.stored_at),
        })
    });
    Some(json!({
        "account": id,
        "env": settings.env,
        "strategies": settings.strategies.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "state": state,
        "valid": valid,
        "token": token,
        "api_validated": status.api_validated,
        "last_check": status.last_check.map(|t| json!({
            "at": format_ist(t),
            "problem": status.last_check_problem,
        })),
        "next_action": status.next.as_ref().map(|p| json!({
            "action": p.action.as_str(),
            "at": format_ist(p.at),
            "deadline": p.deadline.map(format_ist),
            "reason": p.reason,
        })),
        "renewing": status.renewing,
        "last_renewal": status.last_renewal.as_ref().map(|(at, strategy, result)| json!({
            "at": format_ist(*at),
            "strategy": strategy,
            "result": result,
        })),
        "disabled_strategies": status.disabled,
        "conditions": status.conditions,
        "supervisor_alive": status.supervisor_alive,
    }))
}

fn default_account(engine: &Engine) -> Result<String, Refusal> {
    engine.default_account().ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            "no_account",
            "no account is configured".into(),
        )
    })
}

/// Seed-compatible: `{"valid", "time_remaining_hours", "expiry_time", "api_validated"}`
/// for the default account, plus the v1 fields.
#[utoipa::path(get, path = "/api/token/status", tag = "upkeep", summary = "The default account's token status (seed-compatible: valid, time_remaining_hours, expiry_time, api_validated, and the v1 account fields)", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "status"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn seed_status(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    let id = match default_account(&state.engine) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let Some(mut v) = account_json(&state.engine, &id) else {
        return unknown_account(&id);
    };
    let now = state.engine.clock().now();
    let current = state.engine.current(&id);
    let hours = current
        .as_ref()
        .map(|c| (c.expires_at.duration_since(now).as_secs_f64() / 3600.0).max(0.0))
        .unwrap_or(0.0);
    v["time_remaining_hours"] = json!((hours * 100.0).round() / 100.0);
    v["expiry_time"] = json!(current.map(|c| format_ist(c.expires_at)));
    v["kind"] = v["token"]["kind"].clone();
    Json(v).into_response()
}

fn outcome_response(id: &str, outcome: RenewOutcome) -> Response {
    match outcome {
        RenewOutcome::Renewed {
            strategy,
            fingerprint,
        } => Json(json!({
            "status": "renewed",
            "account": id,
            "strategy": strategy,
            "fingerprint": fingerprint,
        }))
        .into_response(),
        RenewOutcome::AlreadyRotated => {
            Json(json!({"status": "already_rotated", "account": id})).into_response()
        }
        RenewOutcome::Busy => error(
            StatusCode::CONFLICT,
            "busy",
            "another upkeep process is renewing this account right now",
        ),
        RenewOutcome::Failed { reason } => error(
            StatusCode::BAD_GATEWAY,
            "renewal_failed",
            format!("every renewal strategy failed: {reason}"),
        ),
        RenewOutcome::Cancelled => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "upkeep is shutting down",
        ),
    }
}

#[utoipa::path(post, path = "/api/token/force-refresh", tag = "upkeep", summary = "Renew the default account's token now (single-flight with the daemon's own renewals)", description = "Scope: admin.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "renewed"), (status = 409, description = "another process is renewing"), (status = 502, description = "every strategy failed"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn seed_force_refresh(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require_change(&state, &headers, Scope::Admin) {
        return r.into_response();
    }
    let id = match default_account(&state.engine) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    outcome_response(&id, state.engine.renew(&id, Actor::Api).await)
}

#[utoipa::path(post, path = "/api/upstox/token/refresh", tag = "upkeep", summary = "Start the browser OAuth flow for the default account: returns login_url", description = "Scope: admin.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "the login link"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn seed_login_link(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require_change(&state, &headers, Scope::Admin) {
        return r.into_response();
    }
    let id = match default_account(&state.engine) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match state.engine.login_link(&id) {
        Some(url) => Json(json!({"account": id, "login_url": url})).into_response(),
        None => unknown_account(&id),
    }
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/login-link", tag = "upkeep", summary = "The Upstox login link (single-use state) for an account", description = "Scope: admin.", security(("api_key" = []), ("dashboard_session" = [])), params(("id" = String, Path, description = "The account id (as configured)")), responses((status = 200, description = "the login link"), (status = 404, description = "unknown account"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn account_login_link(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = require_change(&state, &headers, Scope::Admin) {
        return r.into_response();
    }
    match state.engine.login_link(&id) {
        Some(url) => Json(json!({"account": id, "login_url": url})).into_response(),
        None => unknown_account(&id),
    }
}

#[utoipa::path(get, path = "/api/v1/accounts", tag = "upkeep", summary = "Every account: state, token (never the token itself), checks, plan, conditions", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "the accounts"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn list_accounts(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    let accounts: Vec<Value> = state
        .engine
        .account_ids()
        .iter()
        .filter_map(|id| account_json(&state.engine, id))
        .collect();
    Json(json!({ "accounts": accounts })).into_response()
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "upkeep", summary = "One account, as in the list", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), params(("id" = String, Path, description = "The account id (as configured)")), responses((status = 200, description = "the account"), (status = 404, description = "unknown account"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn get_account(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    match account_json(&state.engine, &id) {
        Some(v) => Json(v).into_response(),
        None => unknown_account(&id),
    }
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/renew", tag = "upkeep", summary = "Renew an account now (single-flight; re-enables strategies stopped by a fault)", description = "Scope: admin.", security(("api_key" = []), ("dashboard_session" = [])), params(("id" = String, Path, description = "The account id (as configured)")), responses((status = 200, description = "renewed"), (status = 404, description = "unknown account"), (status = 409, description = "another process is renewing"), (status = 502, description = "every strategy failed"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn renew_account(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let holder = match require_change(&state, &headers, Scope::Admin) {
        Ok(h) => h,
        Err(r) => return r.into_response(),
    };
    if state.engine.account_settings(&id).is_none() {
        return unknown_account(&id);
    }
    // `upkeep renew` on the host comes with the local credential: audited as the CLI.
    let actor = if &*holder.name == keys::LOCAL_KEY_NAME {
        Actor::Cli
    } else {
        Actor::Api
    };
    outcome_response(&id, state.engine.renew(&id, actor).await)
}

/// The current valid token, for consumer programs. 409 when there is none (missing,
/// expired, or refused by Upstox at the last health check).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/token", tag = "upkeep", summary = "The current valid access token, for consumer programs", description = "Scope: token:read.", security(("api_key" = []), ("dashboard_session" = [])), params(("id" = String, Path, description = "The account id (as configured)")), responses((status = 200, description = "the token (Cache-Control: no-store)"), (status = 404, description = "unknown account"), (status = 409, description = "no valid token: missing, expired or refused by Upstox (the reason in the error)"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn get_token(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    // The whole request, for its headers: borrowed, where a `HeaderMap` extractor
    // would copy them.
    req: Request,
) -> Response {
    let holder = match require(&state, req.headers(), Scope::TokenRead) {
        Ok(h) => h,
        Err(r) => return r.into_response(),
    };
    let Some((current, refused)) = state.engine.token_for_reading(&id) else {
        return unknown_account(&id);
    };
    let now = state.engine.clock().now();
    match current {
        Some(c) if c.is_valid_at(now) && !refused => {
            tracing::debug!(account = %id, key = %holder.name, token_fp = %c.fingerprint, "token read");
            let seconds_left = c.expires_at.duration_since(now).as_secs();
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    // A token is a credential: never cached on the way.
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                c.api_body.answer(&id, &c, seconds_left),
            )
                .into_response()
        }
        Some(_) if refused => {
            // Off the hot path: the status copy only when explaining a refusal.
            let status = state.engine.status(&id).unwrap_or_default();
            error(
                StatusCode::CONFLICT,
                "token_refused",
                format!(
                    "Upstox refused account `{id}`'s token at the health check at {} ({}); a \
                     renewal is due (POST /api/v1/accounts/{id}/renew)",
                    status
                        .last_check
                        .map(format_ist)
                        .unwrap_or_else(|| "?".into()),
                    status.last_check_problem.as_deref().unwrap_or("refused"),
                ),
            )
        }
        Some(c) => error(
            StatusCode::CONFLICT,
            "token_expired",
            format!(
                "account `{id}`'s token expired at {}; a renewal is due",
                format_ist(c.expires_at)
            ),
        ),
        None => error(
            StatusCode::CONFLICT,
            "no_token",
            format!("account `{id}` has no token yet"),
        ),
    }
}

#[derive(Deserialize)]
struct PutToken {
    access_token: String,
}

/// Imports a token, validated like `upkeep token set --verify` (decodes, unexpired, the
/// account's user, accepted by Upstox).
#[utoipa::path(put, path = "/api/v1/accounts/{id}/token", tag = "upkeep", summary = "Import a token ({\"access_token\": ...}), validated like `upkeep token set --verify`", description = "Scope: admin.", security(("api_key" = []), ("dashboard_session" = [])), params(("id" = String, Path, description = "The account id (as configured)")), responses((status = 200, description = "stored"), (status = 400, description = "not JSON"), (status = 404, description = "unknown account"), (status = 413, description = "body over 16 KiB"), (status = 422, description = "refused (the reason in the error)"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn put_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = require_change(&state, &headers, Scope::Admin) {
        return r.into_response();
    }
    if state.engine.account_settings(&id).is_none() {
        return unknown_account(&id);
    }
    let Ok(req) = serde_json::from_slice::<PutToken>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send {\"access_token\": \"...\"} as JSON",
        );
    };
    let token = AccessToken::new(req.access_token);
    match state
        .engine
        .accept_token(&id, token, "import", Actor::Api, true)
        .await
    {
        Ok(c) => Json(json!({
            "status": "stored",
            "account": id,
            "kind": c.kind.as_str(),
            "expires_at": format_ist(c.expires_at),
            "fingerprint": c.fingerprint,
        }))
        .into_response(),
        Err(reason) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "token_refused",
            reason.to_string(),
        ),
    }
}

/// Server-sent events: first a `snapshot` (every account, as `GET /api/v1/accounts`),
/// then every engine event as it happens (`audit` and `alert` events, JSON), and a
/// keep-alive comment every 15 s (well inside the listener's idle timeout). A watcher
/// too slow to keep up gets a `lagged` event with how many it missed, and a fresh
/// snapshot.
#[utoipa::path(get, path = "/api/v1/events", tag = "upkeep", summary = "Server-sent events: a snapshot, then every audit event and alert", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "text/event-stream"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn events(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    let rx = state.engine.events();
    let engine = state.engine.clone();
    let snapshot = |engine: &Engine| {
        let accounts: Vec<Value> = engine
            .account_ids()
            .iter()
            .filter_map(|id| account_json(engine, id))
            .collect();
        Event::default()
            .event("snapshot")
            .data(json!({ "accounts": accounts }).to_string())
    };
    let first = snapshot(&engine);
    let stop = engine.shutdown_token();
    let stream = futures_util::stream::unfold(
        (Some(first), rx, engine, stop),
        move |(pending, mut rx, engine, stop)| async move {
            if let Some(event) = pending {
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (None, rx, engine, stop),
                ));
            }
            let next = tokio::select! {
                _ = stop.cancelled() => return None,
                r = rx.recv() => r,
            };
            match next {
                Ok(e) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    let event = Event::default().event(e.source).data(data);
                    Some((Ok(event), (None, rx, engine, stop)))
                }
                Err(RecvError::Lagged(n)) => {
                    let lagged = Event::default()
                        .event("lagged")
                        .data(json!({ "missed": n }).to_string());
                    let again = snapshot(&engine);
                    Some((Ok(lagged), (Some(again), rx, engine, stop)))
                }
                Err(RecvError::Closed) => None,
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

/// Seed 000's scheduler status: running, env, each account's next job and its time.
#[utoipa::path(get, path = "/api/v1/scheduler", tag = "upkeep", summary = "Scheduler status: running, each account's next job and its time", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "the scheduler"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn scheduler(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    let jobs: Vec<Value> = state
        .engine
        .account_ids()
        .iter()
        .map(|id| {
            let s = state.engine.status(id).unwrap_or_default();
            let settings = state.engine.account_settings(id);
            json!({
                "account": id,
                "env": settings.map(|a| a.env.clone()),
                "running": s.supervisor_alive,
                "renewing": s.renewing,
                "next_job": s.next.as_ref().map(|p| p.action.as_str()),
                "next_run": s.next.as_ref().map(|p| format_ist(p.at)),
                "reason": s.next.as_ref().map(|p| p.reason.clone()),
            })
        })
        .collect();
    let running = jobs.iter().all(|j| j["running"] == true);
    Json(json!({
        "running": running,
        "now": format_ist(state.engine.clock().now()),
        "jobs": jobs,
    }))
    .into_response()
}

/// Re-reads the daemon's configuration file (like SIGHUP). An invalid configuration is
/// refused and the running one kept.
#[utoipa::path(post, path = "/api/v1/reload", tag = "upkeep", summary = "Reload the configuration (accounts, strategies, alerts, token files) without a restart; an invalid one is refused and the running one kept", description = "Scope: admin.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "reloaded: the accounts added, removed and changed"), (status = 422, description = "the configuration is invalid (the reason in the error); nothing changed"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn reload(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require_change(&state, &headers, Scope::Admin) {
        return r.into_response();
    }
    match state.engine.reload().await {
        Ok(summary) => Json(json!({
            "status": "reloaded",
            "added": summary.added,
            "removed": summary.removed,
            "changed": summary.changed,
        }))
        .into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", e),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "upkeep", summary = "Prometheus text", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "text/plain; version=0.0.4"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = metrics_text::render(&state.engine);
            state.usage.render(&mut text);
            state.budget.render_metrics(&mut text);
            state.cache.render_metrics(&mut text);
            metrics_text::render_relay(&state.relay, &mut text);
            text
        },
    )
        .into_response()
}

/// The gateway's usage since the daemon started, per account, API key (its name) and
/// endpoint template.
#[utoipa::path(get, path = "/api/v1/usage", tag = "upkeep", summary = "Gateway usage per account, API key name and endpoint: requests, errors, latency", description = "Scope: status:read.", security(("api_key" = []), ("dashboard_session" = [])), responses((status = 200, description = "{\"usage\": [{account, api_key, endpoint, requests, errors, latency_ms_avg, latency_ms_max}]}"), (status = 401, description = "no key, or an unknown or revoked key (`{\"error\": {code, message}}`)"), (status = 403, description = "the key's scope is too weak")))]
async fn usage(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    Json(state.usage.to_json()).into_response()
}

/// The API's OpenAPI document (from the handlers' annotations).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "upkeep API", description = "Keeps Upstox access tokens alive; status, renewals and the token for consumer programs. Authenticate with `Authorization: Bearer <API key>` (scopes admin, status:read, token:read) or the dashboard's session cookie."),
    paths(
        seed_status, seed_force_refresh, seed_login_link, list_accounts, get_account,
        renew_account, account_login_link, get_token, put_token, scheduler, reload, events,
        usage, metrics
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "dashboard_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::dashboard::COOKIE))),
        );
    }
}

/// The OpenAPI document as JSON (pretty, stable order), as served and as snapshot.
pub fn openapi_document() -> String {
    use utoipa::OpenApi as _;
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

async fn openapi_json(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&state, &headers, Scope::StatusRead) {
        return r.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
        .into_response()
}
