//! The relay's doors (HTTP layer: the only relay module that knows status codes).
//!
//! - `GET /upstox/v3/feed/market-data-feed/authorize` (`token:read` or `admin`): answers
//!   like Upstox, with a single-use socket URL of this relay (valid 60 s; guessed codes
//!   are counted and capped, see [`super::codes`]).
//! - `GET /upstox/v3/feed/market-data-feed`: the websocket; with an upkeep key
//!   (`Authorization: Bearer`) or the URL's single-use `code`. Requests and frames as
//!   with Upstox: JSON `sub` / `unsub` / `change_mode`, protobuf `FeedResponse` frames.
//! - `GET /ws/ticks?keys=K1,K2&mode=ltpc`: the same feed as JSON text frames (the SDK's
//!   dict shape); more requests may be sent as JSON text. Upstream gaps come as
//!   `{"type":"upstream","state":"down"|"up",...}` text frames.
//! - `GET /api/v1/feed` (`status:read`, or the dashboard's session): upstream
//!   connections and local consumers.
//! - `GET /api/v1/feed/live` (`token:read`, or the dashboard's session): server-sent
//!   events, one `feed` event a second: the same health plus the latest ticks of up to
//!   [`LIVE_TICKS`] subscribed instruments per account, read from the relay's cache (a
//!   viewer subscribes nothing and starts no relay).
//!
//! `?account=ID` picks the account (default: the first live one).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::SinkExt as _;
use serde::Deserialize;
use upkeep_upstox::feed::{self, FeedRequest, SdkJsonWriter, SubscriptionMode};

use super::codes::{CodeCheck, Codes};
use super::hub::{ConsumerKind, Delivery, Hub};
use super::local::Relay;
use super::upstream::RelayError;
use crate::api::keys::{KeyCache, Scope};
use crate::api::require_session_or_key;
use crate::http::error;

/// Websocket close code for a consumer closed for falling behind ("try again later").
const CLOSE_SLOW: u16 = 1013;
/// Websocket close code for a consumer whose account's relay stopped ("going away").
const CLOSE_GONE: u16 = 1001;
/// Instruments per account in a `/api/v1/feed/live` event.
pub const LIVE_TICKS: usize = 12;

#[derive(Clone)]
pub struct RelayState {
    pub relay: Relay,
    pub keys: KeyCache,
    /// The dashboard's sessions (they may read `/api/v1/feed`).
    pub sessions: crate::dashboard::Sessions,
    codes: Codes,
}

impl RelayState {
    /// The doors' state; inside a tokio runtime, starts the summary of refused codes
    /// (it ends with the engine).
    pub fn new(relay: Relay, keys: KeyCache, sessions: crate::dashboard::Sessions) -> Self {
        let engine = relay.engine();
        let codes = Codes::new(engine.settings().relay.code_guard);
        if tokio::runtime::Handle::try_current().is_ok() {
            let (c, stop) = (codes.clone(), engine.shutdown_token());
            engine.spawn_supervised("relay code summary", None, move || {
                c.clone().summary_loop(stop.clone())
            });
        }
        Self {
            relay,
            keys,
            sessions,
            codes,
        }
    }
}

/// The relay's routes.
pub fn router(state: RelayState) -> Router {
    Router::new()
        .route("/upstox/v3/feed/market-data-feed/authorize", get(authorize))
        .route("/upstox/v3/feed/market-data-feed", get(feed_socket))
        .route("/ws/ticks", get(ticks_socket))
        .route("/api/v1/feed", get(feed_health))
        .route("/api/v1/feed/live", get(feed_live))
        .with_state(state)
}

#[derive(Deserialize)]
struct FeedQuery {
    account: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct TicksQuery {
    account: Option<String>,
    keys: Option<String>,
    mode: Option<String>,
}

/// Why a request is refused, before it becomes a response.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

impl From<crate::api::Refusal> for Refusal {
    fn from(r: crate::api::Refusal) -> Self {
        Refusal(r.0, r.1, r.2)
    }
}

/// Checks the Bearer key against `needed` (the API's check); the key's name.
fn require(state: &RelayState, headers: &HeaderMap, needed: Scope) -> Result<String, Refusal> {
    let holder = crate::api::require_key(&state.keys, headers, needed)?;
    Ok(holder.name.to_string())
}

fn relay_error(e: &RelayError) -> Refusal {
    let status = match e {
        RelayError::UnknownAccount(_) => StatusCode::NOT_FOUND,
        RelayError::Disabled | RelayError::Sandbox(_) => StatusCode::CONFLICT,
        RelayError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    Refusal(status, "relay", e.to_string())
}

fn hub_for(state: &RelayState, account: Option<&str>) -> Result<(String, Hub), Refusal> {
    let account = state.relay.account(account).map_err(|e| relay_error(&e))?;
    let hub = state.relay.hub(&account).map_err(|e| relay_error(&e))?;
    Ok((account, hub))
}

async fn authorize(
    State(state): State<RelayState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Response {
    if let Err(r) = require(&state, &headers, Scope::TokenRead) {
        return r.into_response();
    }
    let account = match state.relay.account(q.account.as_deref()) {
        Ok(a) => a,
        Err(e) => return relay_error(&e).into_response(),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1");
    let code = state
        .codes
        .issue(&account, state.relay.engine().clock().now());
    let url = format!("ws://{host}/upstox/v3/feed/market-data-feed?code={code}");
    Json(feed::authorize_answer(&url)).into_response()
}

async fn feed_socket(
    State(state): State<RelayState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    // A single-use code from the authorize answer, else a key.
    let (name, account) = if let Some(code) = q.code.as_deref() {
        match state.codes.redeem(code, state.relay.engine().clock().now()) {
            CodeCheck::Valid(account) => ("authorized url".to_owned(), Some(account)),
            CodeCheck::Refused => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this feed URL was already used or has expired; authorize again",
                );
            }
            CodeCheck::Throttled(retry) => return throttled(retry),
        }
    } else {
        match require(&state, &headers, Scope::TokenRead) {
            Ok(name) => (name, q.account),
            Err(r) => return r.into_response(),
        }
    };
    let (account, hub) = match hub_for(&state, account.as_deref()) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let name = format!("{name} ({account}, protobuf)");
    ws.read_buffer_size(CONSUMER_READ_BUFFER)
        .on_upgrade(move |socket| serve(socket, hub, name, ConsumerKind::Protobuf, None))
}

/// The cheap refusal of a guess past the cap: a static body, `Retry-After` in seconds.
fn throttled(retry: std::time::Duration) -> Response {
    const BODY: &str = "{\"error\":{\"code\":\"too_many_requests\",\"message\":\"too many feed \
                        URLs with unknown codes; authorize again later\"}}";
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::RETRY_AFTER,
                HeaderValue::from(retry.as_secs().max(1)),
            ),
        ],
        BODY,
    )
        .into_response()
}

async fn ticks_socket(
    State(state): State<RelayState>,
    headers: HeaderMap,
    Query(q): Query<TicksQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let name = match require(&state, &headers, Scope::TokenRead) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let first = match (q.keys.as_deref(), q.mode.as_deref()) {
        (None, _) => None,
        (Some(keys), mode) => {
            let mode = match mode.map(SubscriptionMode::parse) {
                None => SubscriptionMode::Ltpc,
                Some(Some(m)) => m,
                Some(None) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "mode must be ltpc, full, option_greeks or full_d30",
                    );
                }
            };
            let keys: Vec<String> = keys
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
            Some(FeedRequest::subscribe(mode, keys))
        }
    };
    let (account, hub) = match hub_for(&state, q.account.as_deref()) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let name = format!("{name} ({account}, json)");
    ws.read_buffer_size(CONSUMER_READ_BUFFER)
        .on_upgrade(move |socket| serve(socket, hub, name, ConsumerKind::Json, first))
}

/// One consumer's socket: frames out as they are queued for it, requests in.
async fn serve(
    mut socket: WebSocket,
    hub: Hub,
    name: String,
    kind: ConsumerKind,
    first: Option<FeedRequest>,
) {
    let consumer = hub.connect(name.clone(), kind);
    let mut writer = SdkJsonWriter::new();
    if let Some(req) = first
        && let Err(why) = consumer.request(&req)
    {
        let _ = socket.send(Message::Text(error_text(&why).into())).await;
    }
    loop {
        tokio::select! {
            d = consumer.next() => {
                // This delivery and whatever else is queued already (up to a batch) go
                // out in one write: a consumer that fell a little behind catches up
                // with one syscall instead of one per frame.
                let mut flow = deliver(&mut socket, &hub, kind, &mut writer, d).await;
                let mut batch = 1;
                while flow == Flow::Go && batch < WRITE_BATCH {
                    let Some(d) = consumer.try_next() else { break };
                    flow = deliver(&mut socket, &hub, kind, &mut writer, d).await;
                    batch += 1;
                }
                if flow == Flow::Stop || socket.flush().await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => answer(&mut socket, &consumer, &b, kind).await,
                Some(Ok(Message::Text(t))) => answer(&mut socket, &consumer, t.as_bytes(), kind).await,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    tracing::debug!(consumer = %name, "relay: consumer left");
}

/// The read buffer of a consumer's socket. tungstenite zeroes its whole read buffer
/// (128 KiB by default) before every read attempt, and a consumer's task tries a read
/// each time it wakes to write a frame: at 100 consumers that memset was the largest
/// single cost of the fan-out. Consumers send only small requests; a larger one is read
/// in several pieces.
const CONSUMER_READ_BUFFER: usize = 4 * 1024;

/// Deliveries written before one flush, at most.
const WRITE_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// Queues one delivery on the socket (written at the next flush); a close is sent at
/// once and stops the consumer, as does a socket that cannot take more.
async fn deliver(
    socket: &mut WebSocket,
    hub: &Hub,
    kind: ConsumerKind,
    writer: &mut SdkJsonWriter,
    d: Delivery,
) -> Flow {
    let msg = match d {
        Delivery::Frame(bytes) => match kind {
            ConsumerKind::Protobuf => Message::Binary(bytes),
            ConsumerKind::Json => match feed::decode(&bytes) {
                Ok(frame) => Message::Text(writer.render(&frame).into()),
                Err(_) => return Flow::Go,
            },
        },
        Delivery::Notice(text) => Message::Text(text.into()),
        Delivery::Closed(why) => {
            let code = if hub.is_closed() {
                CLOSE_GONE
            } else {
                CLOSE_SLOW
            };
            let mut reason = why;
            truncate_at_char(&mut reason, 120);
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
            return Flow::Stop;
        }
    };
    match socket.feed(msg).await {
        Ok(()) => Flow::Go,
        Err(_) => Flow::Stop,
    }
}

async fn answer(
    socket: &mut WebSocket,
    consumer: &super::hub::Consumer,
    req: &[u8],
    kind: ConsumerKind,
) {
    if let Err(why) = consumer.request_bytes(req) {
        tracing::info!(consumer = consumer.id(), reason = %why, "relay: refused a consumer's request");
        // Upstox answers requests with nothing; a JSON consumer is told why.
        if kind == ConsumerKind::Json {
            let _ = socket.send(Message::Text(error_text(&why).into())).await;
        }
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary (a close frame's reason
/// is at most 123 bytes).
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn error_text(why: &str) -> String {
    serde_json::json!({ "type": "error", "message": why }).to_string()
}

async fn feed_health(State(state): State<RelayState>, headers: HeaderMap) -> Response {
    if let Err(r) =
        require_session_or_key(&state.keys, &state.sessions, &headers, Scope::StatusRead)
    {
        return r.into_response();
    }
    Json(serde_json::json!({ "accounts": state.relay.health() })).into_response()
}

/// One `feed` event: every started relay's health and its latest ticks.
fn live_event(relay: &Relay) -> serde_json::Value {
    let accounts: Vec<serde_json::Value> = relay
        .health()
        .into_iter()
        .map(|a| {
            let latest = relay.latest(&a.account, LIVE_TICKS);
            let ticks: Vec<serde_json::Value> = latest
                .as_deref()
                .and_then(|b| feed::decode(b).ok())
                .map(|f| {
                    f.feeds
                        .iter()
                        .filter_map(|(key, fd)| {
                            let l = fd.ltpc()?;
                            Some(serde_json::json!({
                                "key": key,
                                "mode": fd.request_mode.name(),
                                "ltp": l.ltp,
                                "cp": l.cp,
                                "ltq": l.ltq,
                                "ltt": l.ltt,
                            }))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut v = serde_json::to_value(&a).unwrap_or_default();
            v["ticks"] = serde_json::Value::Array(ticks);
            v
        })
        .collect();
    serde_json::json!({ "accounts": accounts })
}

async fn feed_live(State(state): State<RelayState>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    if let Err(r) = require_session_or_key(&state.keys, &state.sessions, &headers, Scope::TokenRead)
    {
        return r.into_response();
    }
    let relay = state.relay.clone();
    let stop = relay.engine().shutdown_token();
    let tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let stream =
        futures_util::stream::unfold((relay, stop, tick), |(relay, stop, mut tick)| async move {
            tokio::select! {
                _ = stop.cancelled() => None,
                _ = tick.tick() => {
                    let event = Event::default().event("feed").data(live_event(&relay).to_string());
                    Some((Ok::<_, std::convert::Infallible>(event), (relay, stop, tick)))
                }
            }
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}
