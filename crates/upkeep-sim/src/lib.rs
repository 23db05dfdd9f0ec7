//! upkeep-sim: a local Upstox for tests and demos.
//!
//! A second, independent reading of the Upstox reference (it shares no code
//! with upkeep-core or upkeep-upstox): OAuth dialog + code exchange, the
//! headless TOTP login sequence, the v3 access-token request with its notifier
//! webhook, logout, profile, funds (with the 00:00–05:30 IST 423 window), LTP
//! quotes, orders, per-token rate limits, a movable clock, fault injection and
//! a control API under `/sim/...`. The market-data feed lives in [`feed`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), upkeep_sim::SimError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = upkeep_sim::spawn(upkeep_sim::SimConfig::demo(), listener).await?;
//! let creds = &sim.credentials()[0];
//! let token = sim.state().issue_token(&creds.ucc, upkeep_sim::TokenKind::Daily)?;
//! println!("{} {token}", sim.base_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Routes (all on one listener):
//!
//! | route | notes |
//! |---|---|
//! | `GET /v2/login/authorization/dialog` | `client_id`, `redirect_uri`, `state`; `response_type` optional. 302 to `/sim/login?...&user_id=&client_id=&user_type=` |
//! | `GET/POST /sim/login` | HTML login page (mobile + TOTP + PIN, or the "Approve" shortcut when `login_shortcut`); 302 to `redirect_uri?code=&state=` |
//! | `POST /v2/login/authorization/token` | form body (URL-encoded or not); single-use codes living `auth_code_ttl_secs` (2 min); `UDAPI100057` bad/used/expired code, `UDAPI100069` bad client, `UDAPI100070` bad redirect URI |
//! | `POST /login/open/v6/auth/1fa/otp/generate` | headless login step 2; `otp_generate_limit` per user per 10 min, then `1017069` |
//! | `POST /login/open/v4/auth/1fa/otp-totp/verify` | step 3, sets the `sim_login` cookie |
//! | `POST /login/open/v3/auth/2fa` | step 4 (base64 PIN) |
//! | `POST /login/v2/oauth/authorize` | step 5, `data.redirectUri` carries the code |
//! | `POST /v3/login/auth/token/request/{client_id}` | access-token request; webhook on approval |
//! | `DELETE /v2/logout` | revokes the token |
//! | `GET /v2/user/profile` | daily tokens only |
//! | `GET /v2/user/get-funds-and-margin`, `GET /v3/user/get-funds-and-margin` | 423 UDAPI100072 00:00–05:30 IST |
//! | `GET /v2/market-quote/ltp`, `GET /v3/market-quote/ltp` | ≤ 500 keys; one unknown key fails the call with 400 `UDAPI1087` naming it in `invalidValue` |
//! | `POST /v2/order/place`, `POST /v3/order/place`, `DELETE /v2/order/cancel`, `DELETE /v3/order/cancel` | 423 UDAPI100074 00:00–05:30 IST |
//! | `GET /v2/market/holidays`, `GET /v2/market/holidays/{date}`, `GET /v2/market/timings/{date}` | the market calendar (no token, as the SDK sends none): the clock year's listed dates, one date's entry, each open exchange's session (empty on closed days); invalid date 400 `UDAPI1088` |
//! | `GET /v2/market/status/{exchange}` | bearer token; `{exchange, status, last_updated}` from the calendar and the sim clock |
//! | `POST /sim/oauth2/token` | a generic OAuth 2 token service in front of Upstox: refresh grant (RFC 6749 §6), rotating refresh tokens, RFC 6749 §5.2 errors |
//! | `/sim/...` | control API, see [`control`](crate#control-api) below and the README |
//!
//! # Control API
//!
//! See the table in `crates/upkeep-sim/README.md` (also in the `control` module).

mod clock;
mod config;
mod control;
mod error;
mod faults;
pub mod feed;
mod headless;
pub mod instruments;
pub mod ist;
mod jwt;
pub mod market_calendar;
mod oauth;
mod oauth2;
mod ratelimit;
mod rest;
mod sim;
mod token_request;
pub mod totp;
mod util;

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clock::SimClock;
pub use config::{AppConfig, ConfigError, Plan, SimConfig, SnapshotType, UserConfig};
pub use jwt::{Claims, TokenKind};
pub use market_calendar::{CalendarEntry, HolidayType, SessionConfig};
pub use ratelimit::Group as RateLimitGroup;
pub use sim::{
    Approval, Counters, Credentials, Faults, FaultsPatch, PendingTokenRequest, Sim, SimError,
};

async fn not_found() -> Response {
    error::ApiError::new(StatusCode::NOT_FOUND, "UDAPI100060", "Resource not Found").into_response()
}

/// The whole simulator as an axum router (Upstox routes, `/sim/...` control, feed).
pub fn router(sim: Sim) -> Router {
    let upstox = Router::new()
        .route("/v2/login/authorization/dialog", get(oauth::dialog))
        .route(
            "/sim/login",
            get(oauth::login_form).post(oauth::login_submit),
        )
        .route("/v2/login/authorization/token", post(oauth::token))
        .route(
            "/login/open/v6/auth/1fa/otp/generate",
            post(headless::otp_generate),
        )
        .route(
            "/login/open/v4/auth/1fa/otp-totp/verify",
            post(headless::otp_verify),
        )
        .route("/login/open/v3/auth/2fa", post(headless::two_fa))
        .route("/login/v2/oauth/authorize", post(headless::authorize))
        .route(
            "/v3/login/auth/token/request/{client_id}",
            post(token_request::request),
        )
        .route("/v2/logout", delete(rest::logout))
        .route("/v2/user/profile", get(rest::profile))
        .route("/v2/user/get-funds-and-margin", get(rest::funds_v2))
        .route("/v3/user/get-funds-and-margin", get(rest::funds_v3))
        .route("/v2/market-quote/ltp", get(rest::ltp_v2))
        .route("/v3/market-quote/ltp", get(rest::ltp_v3))
        .route("/v2/order/place", post(rest::place_v2))
        .route("/v3/order/place", post(rest::place_v3))
        .route("/v2/order/cancel", delete(rest::cancel_v2))
        .route("/v3/order/cancel", delete(rest::cancel_v3))
        .route("/v2/market/holidays", get(market_calendar::holidays))
        .route("/v2/market/holidays/{date}", get(market_calendar::holiday))
        .route("/v2/market/timings/{date}", get(market_calendar::timings))
        .route("/v2/market/status/{exchange}", get(market_calendar::status))
        .route("/sim/oauth2/token", post(oauth2::token))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            faults::inject,
        ))
        .with_state(sim.clone());
    let control = control::router().with_state(sim.clone());
    upstox
        .merge(control)
        .merge(feed::feed_router(sim))
        .fallback(not_found)
}

/// A running simulator. Dropping it stops the server too.
pub struct SimHandle {
    /// Where the simulator listens.
    pub addr: SocketAddr,
    sim: Sim,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.sim.base_url().to_string()
    }

    /// The simulator clock.
    pub fn clock(&self) -> SimClock {
        self.sim.clock()
    }

    /// Credentials of every app and its user.
    pub fn credentials(&self) -> Vec<Credentials> {
        self.sim.credentials()
    }

    /// Direct control of the simulator state.
    pub fn state(&self) -> Sim {
        self.sim.clone()
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Open connections (e.g. feed websockets) get a moment to finish, then are cut.
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves a simulator built from `config` on `listener` (bind `127.0.0.1:0` in tests).
pub async fn spawn(config: SimConfig, listener: TcpListener) -> Result<SimHandle, SimError> {
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let sim = Sim::new(config, format!("http://{host}"))?;
    Ok(serve(sim, listener, addr))
}

/// Like [`spawn`] but with a clock of your own (e.g. [`SimClock::frozen`]).
pub async fn spawn_with_clock(
    config: SimConfig,
    clock: SimClock,
    listener: TcpListener,
) -> Result<SimHandle, SimError> {
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let sim = Sim::with_clock(config, format!("http://{host}"), clock)?;
    Ok(serve(sim, listener, addr))
}

fn serve(sim: Sim, listener: TcpListener, addr: SocketAddr) -> SimHandle {
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(sim.clone());
    let task = tokio::spawn(async move {
        // Feed ticks are small frames: without TCP_NODELAY, Nagle's algorithm holds them
        // back until the peer's delayed ACK (~40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("simulator server stopped: {e}");
        }
    });
    SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task: Some(task),
    }
}
