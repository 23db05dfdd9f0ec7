//! Control API under `/sim/...` (JSON in, JSON out; errors are `{"error": "..."}`).
//!
//! | method + path | body | answer |
//! |---|---|---|
//! | `GET /sim/clock` | | `{now, now_ist, epoch_ms, speed, next_rollover}` |
//! | `POST /sim/clock` | one or more of `{"set": rfc3339}`, `{"jump_to_ist": "2026-11-24T03:29:50"}`, `{"advance_secs": n}`, `{"speed": f}` (applied in that order) | like GET |
//! | `POST /sim/users` | a user object (see config) | `{ucc}`; replaces a user with the same ucc |
//! | `POST /sim/users/{ucc}/unlock` | | `{ucc, locked: false}` |
//! | `POST /sim/apps` | an app object (see config) | `{client_id}`; replaces an app with the same id |
//! | `POST /sim/tokens` | `{"ucc", "kind": "daily"\|"extended"\|"sandbox"}` (kind defaults to daily) | `{access_token, kind, expires_at}` |
//! | `POST /sim/tokens/revoke` | `{"access_token"}` | `{revoked: bool}` |
//! | `POST /sim/refresh-tokens` | `{"client_id"}` | `{refresh_token, client_id}` for `POST /sim/oauth2/token`; 404 unknown app |
//! | `POST /sim/refresh-tokens/revoke` | `{"refresh_token"}` | `{revoked: bool}` |
//! | `GET /sim/token-requests` | | list of pending requests |
//! | `POST /sim/token-requests/{client_id}/approve` | | `{client_id, user_id, access_token, expires_at, webhook_status, webhook_error}` after the webhook call |
//! | `POST /sim/token-requests/{client_id}/reject` | | `{rejected: true}` |
//! | `GET /sim/faults` | | current faults |
//! | `POST /sim/faults` | any subset of `{latency_ms, error_rate, login_down, login_blocked, feed_drop, feed_quiet, feed_stall, expired_codes}` | all faults after the update |
//! | `GET /sim/state` | | `{now, counters, faults, users, apps, pending_token_requests, rate_limits}` |
//! | `GET /sim/credentials` | | the same list `--credentials-out` writes |

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp, civil};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{AppConfig, UserConfig};
use crate::error::json_response;
use crate::ist;
use crate::jwt::TokenKind;
use crate::sim::{FaultsPatch, Sim, SimError};

struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        json_response(self.0, &json!({"error": self.1}))
    }
}

impl From<SimError> for ControlError {
    fn from(e: SimError) -> Self {
        let status = match &e {
            SimError::UnknownUser(_) | SimError::UnknownApp(_) | SimError::NoPendingRequest(_) => {
                StatusCode::NOT_FOUND
            }
            SimError::RequestLapsed(_) => StatusCode::GONE,
            SimError::Io(_) | SimError::Http(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ControlError(status, e.to_string())
    }
}

type Reply = Result<Response, ControlError>;

fn ok(v: Value) -> Reply {
    Ok(json_response(StatusCode::OK, &v))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| {
        ControlError(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}; see the /sim API table in the upkeep-sim README"),
        )
    })
}

fn reply(r: Reply) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The `/sim/...` control routes.
pub(crate) fn router() -> Router<Sim> {
    Router::new()
        .route("/sim/clock", get(clock_get).post(clock_post))
        .route("/sim/users", post(users_post))
        .route("/sim/users/{ucc}/unlock", post(users_unlock))
        .route("/sim/apps", post(apps_post))
        .route("/sim/tokens", post(tokens_post))
        .route("/sim/tokens/revoke", post(tokens_revoke))
        .route("/sim/refresh-tokens", post(refresh_tokens_post))
        .route("/sim/refresh-tokens/revoke", post(refresh_tokens_revoke))
        .route("/sim/token-requests", get(requests_get))
        .route(
            "/sim/token-requests/{client_id}/approve",
            post(requests_approve),
        )
        .route(
            "/sim/token-requests/{client_id}/reject",
            post(requests_reject),
        )
        .route("/sim/faults", get(faults_get).post(faults_post))
        .route("/sim/state", get(state_get))
        .route("/sim/credentials", get(credentials_get))
}

fn clock_json(sim: &Sim) -> Value {
    let now = sim.now();
    json!({
        "now": now.to_string(),
        "now_ist": ist::ist_rfc3339(now),
        "epoch_ms": now.as_millisecond(),
        "speed": sim.clock().speed(),
        "next_rollover": ist::next_rollover_after(now).to_string(),
    })
}

async fn clock_get(State(sim): State<Sim>) -> Response {
    json_response(StatusCode::OK, &clock_json(&sim))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockCommand {
    set: Option<Timestamp>,
    jump_to_ist: Option<civil::DateTime>,
    advance_secs: Option<f64>,
    speed: Option<f64>,
}

async fn clock_post(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let cmd: ClockCommand = parse(&body)?;
        if cmd.set.is_none()
            && cmd.jump_to_ist.is_none()
            && cmd.advance_secs.is_none()
            && cmd.speed.is_none()
        {
            return Err(ControlError(
                StatusCode::BAD_REQUEST,
                "give one of set, jump_to_ist, advance_secs or speed".into(),
            ));
        }
        let advance = cmd
            .advance_secs
            .map(|s| {
                SignedDuration::try_from_secs_f64(s).map_err(|_| {
                    ControlError(
                        StatusCode::BAD_REQUEST,
                        "advance_secs is out of range".into(),
                    )
                })
            })
            .transpose()?;
        if let Some(s) = cmd.speed
            && !(s.is_finite() && s >= 0.0)
        {
            return Err(ControlError(
                StatusCode::BAD_REQUEST,
                "speed must be a finite number >= 0 (0 freezes the clock)".into(),
            ));
        }
        let clock = sim.clock();
        if let Some(t) = cmd.set {
            clock.set(t);
        }
        if let Some(dt) = cmd.jump_to_ist {
            clock.jump_to_ist(dt);
        }
        if let Some(d) = advance {
            clock.advance(d);
        }
        if let Some(s) = cmd.speed {
            clock.set_speed(s);
        }
        ok(clock_json(&sim))
    })())
}

async fn users_post(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let user: UserConfig = parse(&body)?;
        let ucc = user.ucc.clone();
        sim.add_user(user)?;
        ok(json!({"ucc": ucc}))
    })())
}

async fn users_unlock(State(sim): State<Sim>, Path(ucc): Path<String>) -> Response {
    reply((|| {
        sim.unlock_user(&ucc)?;
        ok(json!({"ucc": ucc, "locked": false}))
    })())
}

async fn apps_post(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let app: AppConfig = parse(&body)?;
        let id = app.client_id.clone();
        sim.add_app(app)?;
        ok(json!({"client_id": id}))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenCommand {
    ucc: String,
    #[serde(default = "daily")]
    kind: TokenKind,
}

fn daily() -> TokenKind {
    TokenKind::Daily
}

async fn tokens_post(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let cmd: TokenCommand = parse(&body)?;
        let rec = {
            let mut st = sim.lock();
            sim.mint(&mut st, &cmd.ucc, cmd.kind)?
        };
        ok(json!({
            "access_token": rec.token,
            "kind": cmd.kind,
            "expires_at": rec.expires_at.to_string(),
        }))
    })())
}

#[derive(Deserialize)]
struct RevokeCommand {
    access_token: String,
}

async fn tokens_revoke(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let cmd: RevokeCommand = parse(&body)?;
        ok(json!({"revoked": sim.revoke(&cmd.access_token)}))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshTokenCommand {
    client_id: String,
}

async fn refresh_tokens_post(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let cmd: RefreshTokenCommand = parse(&body)?;
        let token = sim.issue_refresh_token(&cmd.client_id)?;
        ok(json!({"refresh_token": token, "client_id": cmd.client_id}))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRevokeCommand {
    refresh_token: String,
}

async fn refresh_tokens_revoke(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let cmd: RefreshRevokeCommand = parse(&body)?;
        ok(json!({"revoked": sim.revoke_refresh_token(&cmd.refresh_token)}))
    })())
}

async fn requests_get(State(sim): State<Sim>) -> Response {
    json_response(StatusCode::OK, &json!(sim.pending_token_requests()))
}

async fn requests_approve(State(sim): State<Sim>, Path(client_id): Path<String>) -> Response {
    match sim.approve_token_request(&client_id).await {
        Ok(a) => json_response(StatusCode::OK, &json!(a)),
        Err(e) => ControlError::from(e).into_response(),
    }
}

async fn requests_reject(State(sim): State<Sim>, Path(client_id): Path<String>) -> Response {
    reply((|| {
        sim.reject_token_request(&client_id)?;
        ok(json!({"rejected": true}))
    })())
}

async fn faults_get(State(sim): State<Sim>) -> Response {
    json_response(StatusCode::OK, &json!(sim.faults()))
}

async fn faults_post(State(sim): State<Sim>, body: Bytes) -> Response {
    reply((|| {
        let patch: FaultsPatch = parse(&body)?;
        let f = sim.patch_faults(patch)?;
        ok(json!(f))
    })())
}

async fn state_get(State(sim): State<Sim>) -> Response {
    let (users, apps) = {
        let st = sim.lock();
        let users: Vec<Value> = st
            .users
            .values()
            .map(|u| {
                json!({
                    "ucc": u.config.ucc,
                    "plan": u.config.plan,
                    "locked": u.locked(),
                    "attempts_left": u.attempts_left,
                })
            })
            .collect();
        let apps: Vec<Value> = st
            .apps
            .values()
            .map(|a| {
                json!({
                    "client_id": a.client_id,
                    "user": a.user,
                    "redirect_uri": a.redirect_uri,
                    "notifier_url": a.notifier_url,
                })
            })
            .collect();
        (users, apps)
    };
    json_response(
        StatusCode::OK,
        &json!({
            "now": sim.now().to_string(),
            "counters": sim.counters(),
            "faults": sim.faults(),
            "users": users,
            "apps": apps,
            "pending_token_requests": sim.pending_token_requests().len(),
            "rate_limits": sim.rate_limits_enabled(),
        }),
    )
}

async fn credentials_get(State(sim): State<Sim>) -> Response {
    json_response(StatusCode::OK, &json!(sim.credentials()))
}
