//! The browser OAuth pair: `/auth/upstox/login` (admin key) redirects to the Upstox
//! dialog with a fresh signed `state`; `/auth/upstox/callback` redeems that single-use
//! state, exchanges the code and stores the token.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Caller, SCOPE_ADMIN, caller, error};
use crate::engine::{Actor, Engine};

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    account: Option<String>,
}

pub(super) async fn login(
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
        .or_else(|| engine.default_account())
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
pub(super) struct CallbackQuery {
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

pub(super) async fn callback(
    State(engine): State<Engine>,
    Query(q): Query<CallbackQuery>,
) -> Response {
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
    let Some(settings) = engine.account_settings(&account) else {
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
