//! The live dashboard: one page, embedded in the binary (plain HTML, CSS and JS; no
//! build step), fed by the API and its server-sent events.
//!
//! Who may see it: the page itself needs no key (it holds no data). Its data comes from
//! the API, which accepts either an API key or this module's **session cookie**:
//! - a single-use sign-in link from `upkeep dashboard-link` (`GET /dashboard/signin?token=`),
//!   or an admin API key posted to `POST /dashboard/signin`, starts a session;
//! - the cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, 12 hours; the server keeps
//!   only a SHA-256 digest of it;
//! - a session acts with the `admin` scope; requests that change something must also
//!   carry `X-CSRF-Token` (the session's token, from `GET /dashboard/session`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::api::keys::{KeyCache, Scope};
use crate::engine::Engine;
use crate::http::error;

/// The session cookie's name.
pub const COOKIE: &str = "upkeep_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions at once (the oldest is dropped beyond it).
const MAX_SESSIONS: usize = 256;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

struct Session {
    expires: Instant,
    csrf: String,
}

/// Live dashboard sessions, by the SHA-256 digest of their cookie.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<[u8; 32], Session>>>);

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(v: &str) -> [u8; 32] {
    Sha256::digest(v.as_bytes()).into()
}

impl Sessions {
    /// Starts a session; returns (cookie value, CSRF token).
    fn start(&self) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&id),
            Session {
                expires: now + SESSION_TTL,
                csrf: csrf.clone(),
            },
        );
        (id, csrf)
    }

    /// The CSRF token of the session the request's cookie names, if it is live.
    pub fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(&digest(id))?;
        (s.expires > Instant::now()).then(|| s.csrf.clone())
    }

    fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&digest(id));
        }
    }
}

/// A request's cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request authenticated by its session cookie carries the session's CSRF
/// token in `X-CSRF-Token` (compared in constant time).
pub fn csrf_ok(sessions: &Sessions, headers: &HeaderMap) -> bool {
    let Some(expected) = sessions.csrf_of(headers) else {
        return false;
    };
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|got| bool::from(got.as_bytes().ct_eq(expected.as_bytes())))
}

#[derive(Clone)]
struct DashState {
    engine: Engine,
    keys: KeyCache,
    sessions: Sessions,
}

/// The dashboard's routes.
pub fn router(engine: Engine, keys: KeyCache, sessions: Sessions) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/dashboard/signin", get(signin_link).post(signin_key))
        .route("/dashboard/signout", post(signout))
        .route("/dashboard/session", get(session))
        .with_state(DashState {
            engine,
            keys,
            sessions,
        })
}

fn with_security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn page() -> Response {
    with_security_headers(Html(PAGE).into_response())
}

async fn script() -> Response {
    with_security_headers(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
            .into_response(),
    )
}

async fn style() -> Response {
    with_security_headers(
        ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response(),
    )
}

fn session_cookie(id: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("upkeep_session=; Path=/; Max-Age=0"))
}

fn signed_in(sessions: &Sessions) -> Response {
    let (id, _csrf) = sessions.start();
    let mut resp = Redirect::to("/dashboard").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&id, SESSION_TTL.as_secs()),
    );
    resp
}

#[derive(Deserialize)]
struct LinkQuery {
    token: Option<String>,
}

/// `GET /dashboard/signin?token=...`: the single-use link from `upkeep dashboard-link`.
async fn signin_link(State(s): State<DashState>, Query(q): Query<LinkQuery>) -> Response {
    let Some(token) = q.token.filter(|t| !t.is_empty() && t.len() < 512) else {
        return Redirect::to("/dashboard").into_response();
    };
    match s.engine.redeem_signin(&token) {
        Ok(()) => signed_in(&s.sessions),
        Err(e) => error(
            StatusCode::UNAUTHORIZED,
            "signin_refused",
            format!("{e} (make a new one with `upkeep dashboard-link`)"),
        ),
    }
}

#[derive(Deserialize)]
struct KeyForm {
    key: String,
}

/// `POST /dashboard/signin` with an admin API key (form field `key`).
async fn signin_key(State(s): State<DashState>, Form(f): Form<KeyForm>) -> Response {
    match s.keys.check(f.key.trim()) {
        Some(holder) if holder.scope == Scope::Admin => signed_in(&s.sessions),
        Some(_) => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the dashboard needs an admin key",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API key is not known or was revoked",
        ),
    }
}

async fn signout(State(s): State<DashState>, headers: HeaderMap) -> Response {
    if !csrf_ok(&s.sessions, &headers) {
        return error(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong X-CSRF-Token",
        );
    }
    s.sessions.end(&headers);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    resp
}

/// The session's CSRF token (and that the browser is signed in).
async fn session(State(s): State<DashState>, headers: HeaderMap) -> Response {
    match s.sessions.csrf_of(&headers) {
        Some(csrf) => {
            let mut resp = Json(json!({ "signed_in": true, "csrf": csrf })).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        None => error(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in"),
    }
}
