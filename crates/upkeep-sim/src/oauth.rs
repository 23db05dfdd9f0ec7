//! OAuth authorization-code flow: dialog, HTML login page, token exchange,
//! plus the pieces the headless (TOTP) login shares with it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;

use crate::error::{ApiError, json_response};
use crate::jwt::TokenKind;
use crate::sim::{AuthCode, LOGIN_TTL, LoginAttempt, Sim, State as SimState, bump, random_token};
use crate::util::{html_escape, parse_form, set_cookie, with_query};
use crate::{ist, totp};

/// Cookie carrying the login attempt started by the dialog.
pub(crate) const ATTEMPT_COOKIE: &str = "sim_auth";
/// Value of `user_type` everywhere.
pub(crate) const USER_TYPE: &str = "individual";

/// Why a credential check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FactorFailure {
    /// Wrong value; `left` attempts remain.
    Wrong { left: u32 },
    /// The user is locked (now or already).
    Locked,
    /// No such user.
    Unknown,
}

impl Sim {
    /// Records the outcome of a TOTP/PIN check, counting down attempts and locking at zero.
    pub(crate) fn record_factor(
        &self,
        st: &mut SimState,
        ucc: &str,
        ok: bool,
    ) -> Result<(), FactorFailure> {
        let user = st.users.get_mut(ucc).ok_or(FactorFailure::Unknown)?;
        if user.locked() {
            return Err(FactorFailure::Locked);
        }
        if ok {
            return Ok(());
        }
        bump(&self.counters_raw().failed_logins);
        user.attempts_left = user.attempts_left.saturating_sub(1);
        if user.locked() {
            tracing::info!(ucc, "user locked after too many wrong TOTP/PIN entries");
            Err(FactorFailure::Locked)
        } else {
            Err(FactorFailure::Wrong {
                left: user.attempts_left,
            })
        }
    }

    /// Marks a full login as done: attempts reset, login counted.
    pub(crate) fn login_succeeded(&self, st: &mut SimState, ucc: &str) {
        let max = self.login_attempts();
        if let Some(u) = st.users.get_mut(ucc) {
            u.attempts_left = max;
        }
    }

    /// Issues a single-use authorization code.
    pub(crate) fn issue_code(
        &self,
        st: &mut SimState,
        client_id: &str,
        redirect_uri: &str,
        ucc: &str,
    ) -> String {
        let now = self.now();
        st.codes.retain(|_, c| now < c.expires_at);
        let code = loop {
            let c = random_token(6);
            if !st.codes.contains_key(&c) {
                break c;
            }
        };
        // The `expired_codes` fault: this code is dead on arrival.
        let expires_at = if st.faults.expired_codes > 0 {
            st.faults.expired_codes -= 1;
            now
        } else {
            now.checked_add(self.inner.code_ttl)
                .unwrap_or(Timestamp::MAX)
        };
        st.codes.insert(
            code.clone(),
            AuthCode {
                client_id: client_id.to_string(),
                redirect_uri: redirect_uri.to_string(),
                ucc: ucc.to_string(),
                expires_at,
            },
        );
        bump(&self.counters_raw().logins);
        code
    }

    /// A live login attempt.
    pub(crate) fn attempt(&self, id: &str) -> Option<LoginAttempt> {
        let now = self.now();
        let st = self.lock();
        st.attempts.get(id).filter(|a| now < a.expires_at).cloned()
    }
}

/// `redirect_uri?code=..&state=..`.
pub(crate) fn code_redirect(redirect_uri: &str, code: &str, state: Option<&str>) -> String {
    match state {
        Some(s) => with_query(redirect_uri, &[("code", code), ("state", s)]),
        None => with_query(redirect_uri, &[("code", code)]),
    }
}

fn non_empty<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `GET /v2/login/authorization/dialog`
pub(crate) async fn dialog(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(client_id) = non_empty(&q, "client_id") else {
        return ApiError::bad_request("UDAPI1017", "API Key is required").into_response();
    };
    let Some(redirect_uri) = non_empty(&q, "redirect_uri") else {
        return ApiError::bad_request("UDAPI1018", "Redirect URI is required").into_response();
    };
    if let Some(rt) = q.get("response_type")
        && rt != "code"
    {
        return ApiError::invalid_credentials(StatusCode::BAD_REQUEST).into_response();
    }
    let state = q.get("state").cloned();
    let now = sim.now();
    let (attempt_id, owner) = {
        let mut st = sim.lock();
        let Some(app) = st
            .apps
            .get(client_id)
            .filter(|a| a.redirect_uri == redirect_uri)
            .cloned()
        else {
            return ApiError::bad_request(
                "UDAPI100068",
                "Check your 'client_id' and 'redirect_uri'; one or both are incorrect.",
            )
            .into_response();
        };
        st.attempts.retain(|_, a| now < a.expires_at);
        let id = random_token(24);
        st.attempts.insert(
            id.clone(),
            LoginAttempt {
                client_id: client_id.to_string(),
                redirect_uri: redirect_uri.to_string(),
                state: state.clone(),
                expires_at: now.checked_add(LOGIN_TTL).unwrap_or(Timestamp::MAX),
            },
        );
        (id, app.user)
    };
    let mut pairs = vec![
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("response_type", "code"),
        ("user_id", owner.as_str()),
        ("user_type", USER_TYPE),
        ("request_id", attempt_id.as_str()),
    ];
    if let Some(s) = state.as_deref() {
        pairs.push(("state", s));
    }
    let location = with_query(&format!("{}/sim/login", sim.base_url()), &pairs);
    let mut resp = redirect(&location);
    set_cookie(&mut resp, ATTEMPT_COOKIE, &attempt_id);
    resp
}

fn login_page(
    status: StatusCode,
    sim: &Sim,
    request_id: &str,
    app_name: &str,
    error: Option<&str>,
) -> Response {
    let error_html = error
        .map(|e| format!(r#"<p class="error">{}</p>"#, html_escape(e)))
        .unwrap_or_default();
    let shortcut = if sim.login_shortcut() {
        format!(
            r#"<form method="post" action="/sim/login"><input type="hidden" name="request_id" value="{rid}"><input type="hidden" name="approve" value="1"><button type="submit">Approve as app owner (simulator shortcut)</button></form>"#,
            rid = html_escape(request_id)
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Upstox simulator login</title>
<style>body{{font-family:sans-serif;max-width:26em;margin:3em auto}}label{{display:block;margin:.6em 0}}.error{{color:#b00}}</style></head>
<body><h1>Upstox simulator</h1><p>Log in to authorize app <code>{app}</code>.</p>{error_html}
<form method="post" action="/sim/login">
<input type="hidden" name="request_id" value="{rid}">
<label>Mobile number <input name="mobile" inputmode="numeric" autocomplete="username"></label>
<label>TOTP <input name="totp" inputmode="numeric" autocomplete="one-time-code"></label>
<label>PIN <input name="pin" type="password" inputmode="numeric"></label>
<button type="submit">Log in</button></form>
{shortcut}
</body></html>"#,
        app = html_escape(app_name),
        rid = html_escape(request_id),
    );
    (status, Html(body)).into_response()
}

fn expired_page() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html("<!doctype html><html><body><h1>Upstox simulator</h1><p>This login link is unknown or expired. Start again from your app.</p></body></html>"),
    )
        .into_response()
}

/// `GET /sim/login`: the HTML login page the dialog redirects to.
pub(crate) async fn login_form(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let request_id = q.get("request_id").map(String::as_str).unwrap_or("");
    match sim.attempt(request_id) {
        Some(a) => login_page(StatusCode::OK, &sim, request_id, &a.client_id, None),
        None => expired_page(),
    }
}

/// `POST /sim/login`: checks mobile + TOTP + PIN (or the shortcut) and redirects with a code.
pub(crate) async fn login_submit(State(sim): State<Sim>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let request_id = form.get("request_id").cloned().unwrap_or_default();
    let Some(attempt) = sim.attempt(&request_id) else {
        return expired_page();
    };
    let fail = |msg: &str| {
        login_page(
            StatusCode::BAD_REQUEST,
            &sim,
            &request_id,
            &attempt.client_id,
            Some(msg),
        )
    };
    let now = sim.now();
    let mut st = sim.lock();
    let Some(owner) = st.apps.get(&attempt.client_id).map(|a| a.user.clone()) else {
        drop(st);
        return expired_page();
    };
    let shortcut = sim.login_shortcut() && form.contains_key("approve");
    if !shortcut {
        let mobile = form.get("mobile").map(|m| m.trim()).unwrap_or("");
        let Some(user) = st
            .users
            .values()
            .find(|u| u.config.mobile == mobile)
            .cloned()
        else {
            drop(st);
            return fail("No Upstox account with this mobile number.");
        };
        if user.config.ucc != owner {
            drop(st);
            return fail("This app belongs to another Upstox account.");
        }
        let totp_ok = form
            .get("totp")
            .is_some_and(|c| totp::verify(&user.config.totp_secret, c.trim(), now));
        let pin_ok = form.get("pin").is_some_and(|p| *p == user.config.pin);
        match sim.record_factor(&mut st, &owner, totp_ok && pin_ok) {
            Ok(()) => {}
            Err(FactorFailure::Wrong { left }) => {
                drop(st);
                return fail(&format!("Wrong TOTP or PIN. {left} attempts remaining."));
            }
            Err(FactorFailure::Locked) => {
                drop(st);
                return fail(
                    "Account locked after too many wrong attempts. Unlock it with POST /sim/users/{ucc}/unlock.",
                );
            }
            Err(FactorFailure::Unknown) => {
                drop(st);
                return fail("Unknown user.");
            }
        }
    } else if st.users.get(&owner).is_some_and(|u| u.locked()) {
        drop(st);
        return fail(
            "Account locked after too many wrong attempts. Unlock it with POST /sim/users/{ucc}/unlock.",
        );
    }
    st.attempts.remove(&request_id);
    sim.login_succeeded(&mut st, &owner);
    let code = sim.issue_code(&mut st, &attempt.client_id, &attempt.redirect_uri, &owner);
    drop(st);
    redirect(&code_redirect(
        &attempt.redirect_uri,
        &code,
        attempt.state.as_deref(),
    ))
}

/// `POST /v2/login/authorization/token`
pub(crate) async fn token(State(sim): State<Sim>, body: Bytes) -> Response {
    match exchange(&sim, &parse_form(&body)) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

fn exchange(sim: &Sim, form: &HashMap<String, String>) -> Result<serde_json::Value, ApiError> {
    // The gateway's limit comes first: a refused call does not use up the code.
    if !sim.admit_token_api(non_empty(form, "client_id").unwrap_or("")) {
        bump(&sim.counters_raw().rate_limited);
        return Err(ApiError::token_api_rate_limited());
    }
    let now = sim.now();
    let mut st = sim.lock();
    // The code is single-use whether or not the exchange succeeds.
    let code = non_empty(form, "code").and_then(|c| st.codes.remove(c));
    if non_empty(form, "code").is_none() {
        return Err(ApiError::bad_request("UDAPI1022", "Code is required"));
    }
    let Some(client_id) = non_empty(form, "client_id") else {
        return Err(ApiError::bad_request("UDAPI1017", "API Key is required"));
    };
    let Some(secret) = non_empty(form, "client_secret") else {
        return Err(ApiError::bad_request("UDAPI1024", "App Secret is required"));
    };
    let Some(redirect_uri) = non_empty(form, "redirect_uri") else {
        return Err(ApiError::bad_request(
            "UDAPI1018",
            "Redirect URI is required",
        ));
    };
    let Some(grant_type) = non_empty(form, "grant_type") else {
        return Err(ApiError::bad_request("UDAPI1023", "Grant type is required"));
    };
    if grant_type != "authorization_code" {
        return Err(ApiError::invalid_credentials(StatusCode::BAD_REQUEST));
    }
    let Some(app) = st
        .apps
        .get(client_id)
        .filter(|a| a.client_secret == secret)
        .cloned()
    else {
        return Err(ApiError::bad_request(
            "UDAPI100069",
            "Invalid client credentials",
        ));
    };
    if app.redirect_uri != redirect_uri {
        return Err(ApiError::bad_request("UDAPI100070", "Invalid redirect_uri"));
    }
    let Some(code) = code.filter(|c| {
        now < c.expires_at && c.client_id == client_id && c.redirect_uri == redirect_uri
    }) else {
        return Err(ApiError::bad_request("UDAPI100057", "Invalid Auth code"));
    };
    let refresh = form
        .get("refresh_extended_token")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let daily = sim
        .mint(&mut st, &code.ucc, TokenKind::Daily)
        .map_err(|_| ApiError::invalid_credentials(StatusCode::BAD_REQUEST))?;
    let extended = sim
        .extended_for(&mut st, &code.ucc, client_id, refresh)
        .map_err(|_| ApiError::invalid_credentials(StatusCode::BAD_REQUEST))?;
    let user = st
        .users
        .get(&code.ucc)
        .map(|u| u.config.clone())
        .ok_or_else(|| ApiError::invalid_credentials(StatusCode::BAD_REQUEST))?;
    drop(st);
    bump(&sim.counters_raw().token_exchanges);
    let mut v = profile_json(&user);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("access_token".into(), json!(daily.token));
        obj.insert("extended_token".into(), json!(extended));
    }
    Ok(v)
}

/// The profile object shared by the token response and `GET /v2/user/profile`.
pub(crate) fn profile_json(user: &crate::config::UserConfig) -> serde_json::Value {
    json!({
        "email": user.email,
        "exchanges": ["NSE", "NFO", "BSE", "CDS", "BFO", "BCD"],
        "products": ["D", "CO", "I"],
        "broker": "UPSTOX",
        "user_id": user.ucc,
        "user_name": user.name,
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "user_type": USER_TYPE,
        "poa": false,
        "ddpi": false,
        "is_active": true,
    })
}

/// Epoch ms of the next 03:30 IST after `now` (used by several login responses).
pub(crate) fn next_rollover_ms(now: Timestamp) -> i64 {
    ist::next_rollover_after(now).as_millisecond()
}
