//! Market Data Feed V3: authorize, the direct URL's redirect, and the WebSocket feed.
//!
//! An independent encoder: frames are built with the generated protobuf types of
//! `upkeep-proto` only (no code from upkeep-upstox or upkeep-core).
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /v3/feed/market-data-feed/authorize` | Bearer token; 200 `{"status":"success","data":{"authorized_redirect_uri":URL,"authorizedRedirectUri":URL}}`; 401 `UDAPI100050` otherwise |
//! | `GET /v3/feed/market-data-feed` | Bearer token; 302 `Location: URL` (also for a WebSocket upgrade request: clients follow it) |
//! | `GET /market-data-feeder/v3/upstox-developer-api/feeds?requestId=&code=` | WebSocket upgrade; unknown code 401, used or stale code 403, over the plan's connection limit 403 |
//!
//! `URL` is `{base_ws_url}/market-data-feeder/v3/upstox-developer-api/feeds?requestId=..&code=..`
//! with a single-use code.
//!
//! On the socket: the first frame is `market_info`; requests are JSON in binary frames
//! (`sub` [default mode ltpc], `change_mode`, `unsub`; modes ltpc / full / option_greeks /
//! full_d30, the last for Upstox Plus only); each accepted `sub` / `change_mode` is answered
//! by a snapshot of its keys (`initial_feed`, or `live_feed` by setting); then a `live_feed` frame of every subscribed
//! key every `tick_interval`, from a deterministic price walk; with nothing subscribed,
//! WebSocket pings instead. Faults: `drop` ends connections without a close frame (and
//! cuts new ones right after the upgrade); `quiet` keeps them open with pings only;
//! `stall` keeps them open and silent (no data, no pings). A socket is bound to the
//! token that opened it: once that token no longer authenticates (revoked, superseded
//! by `revoke_previous_tokens`, expired at 03:30 IST) the socket is closed with 1008
//! at its next tick (UNCONFIRMED: Upstox's behaviour is undocumented).
//!
//! Choices the reference leaves open (UNCONFIRMED): an over-limit connection is refused at
//! the handshake with 403 (not accepted then closed); the 403 bodies use the gateway's error
//! envelope with simulator-made codes `SIM_FEED_CODE_USED` / `SIM_FEED_CONNECTION_LIMIT`
//! (Upstox documents none), so a client never mistakes them for an invalid token; connections are counted live per
//! user (2 normal, 5 plus); key limits are per connection; a request that breaks a rule
//! (full_d30 without Plus, a key limit, an unknown mode) is ignored whole, with no reply;
//! text frames are ignored; the snapshot is typed as [`FeedHost::snapshot_type`] says
//! (Upstox has sent `initial_feed` and `live_feed`); codes expire after [`CODE_TTL`] of
//! simulator time; segment status is the host's ([`FeedHost::segment_status`]: the calendar's) with the
//! session times in `market.rs` (exchange hours; the exact Upstox values per phase are
//! unconfirmed).

mod market;
mod session;

/// A segment's status at `seconds` into the IST day of a regular trading day.
pub(crate) fn segment_status_at(segment: &str, seconds: i64) -> pb::MarketStatus {
    market::segment_status(segment, seconds)
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use upkeep_proto::feed as pb;

/// What the feed needs from the simulator core.
pub trait FeedHost: Clone + Send + Sync + 'static {
    /// The simulator's clock (never the system clock).
    fn now(&self) -> jiff::Timestamp;
    /// Checks a bearer access token the way the REST API does.
    fn authenticate(&self, bearer: &str) -> Result<FeedUser, FeedAuthError>;
    /// The feed faults currently injected.
    fn faults(&self) -> FeedFaults;
    /// How often the feed emits a tick.
    fn tick_interval(&self) -> Duration;
    /// `ws://host:port` under which the simulator is reachable.
    fn base_ws_url(&self) -> String;
    /// The `type` of the snapshot that answers a subscription.
    fn snapshot_type(&self) -> crate::config::SnapshotType {
        crate::config::SnapshotType::InitialFeed
    }
    /// The status of feed segment `segment` at `now`. By default: the segment's
    /// session phases on Monday to Friday, `NORMAL_CLOSE` on weekends.
    fn segment_status(&self, segment: &str, now: jiff::Timestamp) -> pb::MarketStatus {
        if market::weekend(now) {
            pb::MarketStatus::NormalClose
        } else {
            market::segment_status(segment, crate::ist::seconds_of_ist_day(now))
        }
    }
    /// Counts a feed event (the simulator's `/sim/state` counters).
    fn feed_event(&self, _event: FeedEvent) {}
}

/// The user a feed connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedUser {
    pub ucc: String,
    pub plus: bool,
}

/// Feed faults: `drop` closes connections abruptly; `quiet` keeps them open with
/// WebSocket pings only (a quiet market, not a dead socket); `stall` keeps them open
/// with nothing at all (no data, no pings: a dead socket).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedFaults {
    pub drop: bool,
    pub quiet: bool,
    pub stall: bool,
}

/// Something that happened on the feed, for the host's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// A WebSocket was accepted (`open` connections of the host go up).
    Opened,
    /// A WebSocket ended (`open` connections go down).
    Closed,
    /// A handshake was refused for the connection limit.
    RefusedLimit,
    /// A socket was closed with 1008 because its token no longer authenticates.
    TokenClosed,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedAuthError {
    Invalid,
    Expired,
}

/// How long an authorized URL's code stays usable, in simulator time (UNCONFIRMED).
pub const CODE_TTL: Duration = Duration::from_secs(600);

/// Simultaneous feed connections per user (ref 7.4).
const MAX_CONNECTIONS_NORMAL: usize = 2;
const MAX_CONNECTIONS_PLUS: usize = 5;

/// Path of the authorized WebSocket URL.
const FEEDS_PATH: &str = "/market-data-feeder/v3/upstox-developer-api/feeds";

/// The feed routes; the simulator merges them into its router.
pub fn feed_router<S: FeedHost>(host: S) -> Router {
    let state = FeedState {
        host,
        registry: Arc::new(Registry::default()),
    };
    Router::new()
        .route("/v3/feed/market-data-feed/authorize", get(authorize::<S>))
        .route("/v3/feed/market-data-feed", get(direct::<S>))
        .route(FEEDS_PATH, get(feeds::<S>))
        .with_state(state)
}

#[derive(Clone)]
struct FeedState<S> {
    host: S,
    registry: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    codes: Mutex<HashMap<String, Code>>,
    connections: Arc<Mutex<HashMap<String, usize>>>,
}

struct Code {
    user: FeedUser,
    token: String,
    issued_ms: i64,
    used: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps half-written; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One live connection of a user; the count drops when this does.
pub(crate) struct Slot {
    connections: Arc<Mutex<HashMap<String, usize>>>,
    ucc: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut conns = lock(&self.connections);
        if let Some(n) = conns.get_mut(&self.ucc) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                conns.remove(&self.ucc);
            }
        }
    }
}

impl Registry {
    /// A fresh single-use authorized URL for `user`.
    fn authorized_url(
        &self,
        base_ws_url: &str,
        user: FeedUser,
        token: &str,
        now_ms: i64,
    ) -> String {
        let code = uuid::Uuid::new_v4().to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        let ttl_ms = CODE_TTL.as_millis() as i64;
        let mut codes = lock(&self.codes);
        // Forget codes long past use, so the map stays small.
        codes.retain(|_, c| now_ms - c.issued_ms < 6 * ttl_ms);
        codes.insert(
            code.clone(),
            Code {
                user,
                token: token.to_owned(),
                issued_ms: now_ms,
                used: false,
            },
        );
        format!(
            "{}{FEEDS_PATH}?requestId={request_id}&code={code}",
            base_ws_url.trim_end_matches('/')
        )
    }

    fn take_slot(&self, user: &FeedUser) -> Option<Slot> {
        let max = if user.plus {
            MAX_CONNECTIONS_PLUS
        } else {
            MAX_CONNECTIONS_NORMAL
        };
        let mut conns = lock(&self.connections);
        let n = conns.entry(user.ucc.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            connections: Arc::clone(&self.connections),
            ucc: user.ucc.clone(),
        })
    }
}

/// The gateway's error envelope (shared with the REST routes, so the feed's 401 is
/// byte-for-byte the REST one).
fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    crate::error::ApiError::new(status, code, message).into_response()
}

fn invalid_token() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UDAPI100050",
        "Invalid token used to access API",
    )
}

/// The user behind `Authorization: Bearer <token>`; `None` means the gateway's 401
/// ([`invalid_token`]), for missing, malformed, invalid and expired tokens alike.
fn bearer_user<S: FeedHost>(host: &S, headers: &HeaderMap) -> Option<(FeedUser, String)> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())?;
    // Expired and invalid tokens get the same answer from the gateway.
    host.authenticate(token).ok().map(|u| (u, token.to_owned()))
}

async fn authorize<S: FeedHost>(State(st): State<FeedState<S>>, headers: HeaderMap) -> Response {
    let Some((user, token)) = bearer_user(&st.host, &headers) else {
        return invalid_token();
    };
    let url = st.registry.authorized_url(
        &st.host.base_ws_url(),
        user,
        &token,
        st.host.now().as_millisecond(),
    );
    crate::error::json_response(
        StatusCode::OK,
        &serde_json::json!({
            "status": "success",
            "data": {"authorized_redirect_uri": url, "authorizedRedirectUri": url},
        }),
    )
}

/// The SDK's `wss://api.upstox.com/v3/feed/market-data-feed` with a Bearer header: a 302
/// to a fresh authorized URL, whether or not the request asks for an upgrade.
async fn direct<S: FeedHost>(State(st): State<FeedState<S>>, headers: HeaderMap) -> Response {
    let Some((user, token)) = bearer_user(&st.host, &headers) else {
        return invalid_token();
    };
    let url = st.registry.authorized_url(
        &st.host.base_ws_url(),
        user,
        &token,
        st.host.now().as_millisecond(),
    );
    match HeaderValue::from_str(&url) {
        Ok(location) => {
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UDAPI100500",
            "Something went wrong... please contact us",
        ),
    }
}

async fn feeds<S: FeedHost>(
    State(st): State<FeedState<S>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let now_ms = st.host.now().as_millisecond();
    let user = {
        let mut codes = lock(&st.registry.codes);
        let Some(entry) = query.get("code").and_then(|c| codes.get_mut(c)) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "UDAPI100050",
                "Invalid token used to access API",
            );
        };
        if entry.used || now_ms - entry.issued_ms > CODE_TTL.as_millis() as i64 {
            return error(
                StatusCode::FORBIDDEN,
                "SIM_FEED_CODE_USED",
                "This authorized URL was already used or has expired; authorize again",
            );
        }
        // Not a WebSocket request: refuse without burning the code.
        let ws = match upgrade {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        // Any real attempt burns the code, even one refused below.
        entry.used = true;
        (entry.user.clone(), entry.token.clone(), ws)
    };
    let (user, token, ws) = user;
    let Some(slot) = st.registry.take_slot(&user) else {
        st.host.feed_event(FeedEvent::RefusedLimit);
        return error(
            StatusCode::FORBIDDEN,
            "SIM_FEED_CONNECTION_LIMIT",
            "Too many market data feed connections for this user; close one and retry",
        );
    };
    let host = st.host.clone();
    ws.on_upgrade(move |socket| session::run(socket, host, user, token, slot))
}
