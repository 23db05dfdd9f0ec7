//! Fault injection for the Upstox-facing routes and the OAuth 2 token service (not for
//! `/sim/...` control or the feed). `login_down` leaves the OAuth 2 token service alone.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::error::{ApiError, LoginError, login_code};
use crate::oauth2::OAuth2Error;
use crate::sim::{Sim, bump};

/// True for the routes that make up "the login service".
fn is_login_path(path: &str) -> bool {
    path.starts_with("/login/")
        || path == "/v2/login/authorization/dialog"
        || path == "/v2/login/authorization/token"
        || path == "/sim/login"
        || path.starts_with("/v3/login/auth/token/request/")
}

/// Applies latency, `login_down` (503) and `error_rate` (500 UDAPI100500).
pub(crate) async fn inject(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let faults = sim.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
    }
    let path = req.uri().path();
    let login_service = path.starts_with("/login/");
    if faults.login_down && is_login_path(path) {
        bump(&sim.counters_raw().injected_errors);
        return if login_service {
            LoginError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                login_code::GENERIC,
                "Login service is temporarily unavailable. Please try again later.",
            )
            .into_response()
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UDAPI100500",
                "Login service is temporarily unavailable. Please try again later.",
            )
            .into_response()
        };
    }
    if faults.calendar_down && crate::market_calendar::is_calendar_path(path) {
        bump(&sim.counters_raw().injected_errors);
        return crate::market_calendar::down();
    }
    if faults.error_rate > 0.0 && rand::thread_rng().gen_bool(faults.error_rate.clamp(0.0, 1.0)) {
        bump(&sim.counters_raw().injected_errors);
        return if path.starts_with("/sim/oauth2/") {
            OAuth2Error::server_error().into_response()
        } else if login_service {
            LoginError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                login_code::GENERIC,
                "Something went wrong... please contact us",
            )
            .into_response()
        } else {
            ApiError::internal().into_response()
        };
    }
    next.run(req).await
}
