//! Access Token Request v3: `POST /v3/login/auth/token/request/{client_id}`.
//!
//! The request waits for approval (control API, `Sim::approve_token_request`, or
//! `auto_approve_token_requests`) until the next 03:30 IST. On approval the
//! simulator POSTs the notifier payload to the app's `notifier_url`; on
//! rejection nothing is sent.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiError, success};
use crate::ist;
use crate::sim::{PendingTokenRequest, Sim, bump};

/// `POST /v3/login/auth/token/request/{client_id}` with `{"client_secret": "..."}`.
pub(crate) async fn request(
    State(sim): State<Sim>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    if !sim.admit_token_api(&client_id) {
        bump(&sim.counters_raw().rate_limited);
        return ApiError::token_api_rate_limited().into_response();
    }
    let secret = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("client_secret")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        return ApiError::bad_request("UDAPI1024", "App Secret is required").into_response();
    };
    let now = sim.now();
    let pending = {
        let mut st = sim.lock();
        let Some(app) = st
            .apps
            .get(&client_id)
            .filter(|a| a.client_secret == secret)
            .cloned()
        else {
            return ApiError::invalid_credentials(StatusCode::UNAUTHORIZED).into_response();
        };
        let Some(notifier_url) = app.notifier_url.clone() else {
            return ApiError::bad_request(
                "UDAPI100036",
                "Invalid input: set a Notifier Webhook Endpoint on the app before requesting a token",
            )
            .into_response();
        };
        let pending = PendingTokenRequest {
            client_id: client_id.clone(),
            user_id: app.user.clone(),
            notifier_url,
            requested_at: now,
            authorization_expiry: ist::next_rollover_after(now),
        };
        st.token_requests.insert(client_id.clone(), pending.clone());
        pending
    };
    bump(&sim.counters_raw().token_requests);
    if sim.auto_approve() {
        let sim2 = sim.clone();
        tokio::spawn(async move {
            if let Err(e) = sim2.approve_token_request(&client_id).await {
                tracing::warn!("auto-approve failed: {e}");
            }
        });
    }
    success(json!({
        "authorization_expiry": ist::epoch_ms_string(pending.authorization_expiry),
        "notifier_url": pending.notifier_url,
    }))
}
