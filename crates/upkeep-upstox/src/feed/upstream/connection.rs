//! One upstream connection's task: wait for keys, authorize with the current token,
//! open the single-use URL, wait for `market_info`, subscribe, stream, and start over
//! after a rotation, a stall or a drop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::ProtocolError};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use upkeep_core::AccessToken;

use super::{ConnectionState, DownCause, Shared, UpstreamEvent, lock};
use crate::error::{ApiError, ErrorClass};
use crate::feed::{FeedRequest, FeedType, SubscriptionMode, frame_type};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Keys per request (Upstox documents no cap; one public client uses 500).
const KEYS_PER_REQUEST: usize = 500;

/// How a socket's life ended.
struct End {
    cause: DownCause,
    reason: String,
    /// Whether it had reached `market_info` (then the backoff starts over).
    was_live: bool,
}

/// Why an attempt to open a socket failed.
enum OpenError {
    /// Upstox refused the token (401 / `UDAPI100050`).
    TokenRefused(String),
    Other(String),
}

pub(super) async fn run(shared: Arc<Shared>, index: usize) {
    let mut stop = shared.stop.subscribe();
    let mut tokens = shared.tokens.rx.clone();
    let mut attempt: u32 = 0;
    let mut opened_before = false;
    // The fingerprint of the last token reported as refused (report each token once).
    let mut reported: Option<String> = None;
    // A `Down` was sent and no `Up` has closed it yet.
    let mut gap_open = false;
    loop {
        // 1. Keys to stream?
        if !wait_for_keys(&shared, index, &mut stop, &mut gap_open).await {
            break;
        }
        // 2. A token?
        let token = {
            let t = tokens.borrow_and_update().clone();
            match t {
                Some(t) => t,
                None => {
                    set_state(&shared, index, ConnectionState::NoToken);
                    tokio::select! {
                        () = token_changed(&mut tokens) => continue,
                        _ = stop.changed() => break,
                    }
                }
            }
        };
        // 3. Authorize and open.
        set_state(&shared, index, ConnectionState::Connecting);
        // A handshake that hangs counts as a failed attempt.
        let limit = shared.config.stall_timeout.max(Duration::from_secs(10));
        let ws = tokio::select! {
            r = tokio::time::timeout(limit, open(&shared, &token)) => r.unwrap_or_else(|_| {
                Err(OpenError::Other(format!(
                    "authorize and handshake took longer than {} s",
                    limit.as_secs_f64()
                )))
            }),
            _ = stop.changed() => break,
        };
        let end = match ws {
            Ok(ws) => {
                if opened_before {
                    lock(&shared.slots[index].health).reconnects += 1;
                }
                opened_before = true;
                session(&shared, index, ws, &token, &mut tokens, &mut stop).await
            }
            Err(OpenError::TokenRefused(why)) => {
                let fp = token.fingerprint();
                if reported.as_deref() != Some(fp.as_str()) {
                    tracing::warn!(connection = index, token_fp = %fp, "feed: Upstox refused the token; asking for a renewal");
                    (shared.tokens.refused)(token.clone());
                    reported = Some(fp);
                }
                record_error(&shared, index, &why);
                End {
                    cause: DownCause::Error,
                    reason: why,
                    was_live: false,
                }
            }
            Err(OpenError::Other(why)) => {
                tracing::info!(connection = index, reason = %why, "feed: could not open the socket");
                record_error(&shared, index, &why);
                End {
                    cause: DownCause::Error,
                    reason: why,
                    was_live: false,
                }
            }
        };
        if end.was_live {
            let keys = lock(&shared.book).counts(index).total();
            let _ = shared.events.send(UpstreamEvent::Down {
                connection: index,
                cause: end.cause,
                keys,
                reason: end.reason.clone(),
            });
            gap_open = !matches!(end.cause, DownCause::Unused | DownCause::Stopped);
            attempt = 0;
        }
        match end.cause {
            DownCause::Stopped => break,
            // A new token or no keys: go again at once.
            DownCause::Rotation | DownCause::Unused => continue,
            DownCause::Stall | DownCause::Closed | DownCause::Error => {}
        }
        // 4. Back off (a new token cuts the wait short).
        set_state(&shared, index, ConnectionState::Backoff);
        let delay = backoff(
            shared.config.backoff_min,
            shared.config.backoff_max,
            attempt,
        );
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = token_changed(&mut tokens) => {}
            _ = stop.changed() => break,
        }
    }
    set_state(&shared, index, ConnectionState::Stopped);
}

/// Resolves when the token changes; never, once its sender is gone (nothing will
/// rotate any more: the pool carries on with what it has until it is shut down).
async fn token_changed(rx: &mut tokio::sync::watch::Receiver<Option<AccessToken>>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Exponential backoff with "equal jitter": half the step fixed, half random.
fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let step = min
        .saturating_mul(1u32 << attempt.min(16))
        .min(max)
        .max(Duration::from_millis(1));
    let half = step / 2;
    half + half.mul_f64(rand::thread_rng().r#gen::<f64>())
}

/// Waits until connection `index` has keys and may be used; false when the pool stops.
/// A connection that goes idle during a gap (its keys moved to other connections, or no
/// one wants them any more) ends the gap with a `Down` of cause `Unused`: no `Up` will.
async fn wait_for_keys(
    shared: &Shared,
    index: usize,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    gap_open: &mut bool,
) -> bool {
    loop {
        if shared.stopped() {
            return false;
        }
        let notified = shared.slots[index].wake.notified();
        let has_keys = lock(&shared.book)
            .desired(index)
            .is_some_and(|d| !d.is_empty());
        if has_keys {
            return true;
        }
        if std::mem::take(gap_open) {
            let _ = shared.events.send(UpstreamEvent::Down {
                connection: index,
                cause: DownCause::Unused,
                keys: 0,
                reason: "no keys left on this connection (moved to others, or unsubscribed)".into(),
            });
        }
        set_state(shared, index, ConnectionState::Idle);
        tokio::select! {
            _ = notified => {}
            _ = stop.changed() => {}
        }
    }
}

fn set_state(shared: &Shared, index: usize, state: ConnectionState) {
    let mut h = lock(&shared.slots[index].health);
    h.state = state;
    if state != ConnectionState::Live {
        h.live_since = None;
    }
}

fn record_error(shared: &Shared, index: usize, why: &str) {
    let mut h = lock(&shared.slots[index].health);
    h.last_error = Some(why.to_owned());
    h.last_error_at = Some(shared.clock.now());
}

/// The upstream socket's read buffer (see [`open`]).
const UPSTREAM_READ_BUFFER: usize = 32 * 1024;

/// Authorizes with `token` and opens the fresh single-use URL.
async fn open(shared: &Shared, token: &AccessToken) -> Result<Ws, OpenError> {
    let url = shared.client.feed_authorize(token).await.map_err(|e| {
        if e.class() == ErrorClass::TokenInvalid {
            OpenError::TokenRefused(format!("authorize: {e}"))
        } else {
            OpenError::Other(format!("authorize: {e}"))
        }
    })?;
    // The URL carries a single-use code: never log it.
    // tungstenite zeroes its whole read buffer (128 KiB by default) before each read
    // attempt; feed frames are a few KiB, so a smaller one reads them as well for less.
    let config = WebSocketConfig::default().read_buffer_size(UPSTREAM_READ_BUFFER);
    match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            let err = ApiError::from_response(
                "WS market-data-feeder",
                status,
                resp.headers(),
                body,
                true,
            );
            if err.class() == ErrorClass::TokenInvalid {
                return Err(OpenError::TokenRefused(format!("feed handshake: {err}")));
            }
            Err(OpenError::Other(handshake_refusal(status, body)))
        }
        Err(e) => Err(OpenError::Other(format!("feed handshake: {e}"))),
    }
}

/// A handshake refusal that is not about the token, in one line: status, the error
/// code when it looks like one, the scrubbed message, and what it likely means.
fn handshake_refusal(status: u16, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let first = v.get("errors").and_then(|e| e.get(0));
    let code = first
        .and_then(|e| e.get("errorCode").or_else(|| e.get("error_code")))
        .and_then(|c| c.as_str())
        .filter(|c| {
            c.len() <= 40
                && c.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
    let message = first
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map(crate::envelope::scrub);
    let hint = match status {
        403 => {
            "the user's feed connections may all be in use (2, or 5 on Upstox Plus; another \
             program may hold them), or the URL was already used; retrying with backoff"
        }
        429 => "rate limited; retrying with backoff",
        _ => "retrying with backoff",
    };
    let mut out = format!("feed handshake refused: HTTP {status}");
    if let Some(c) = code {
        out.push(' ');
        out.push_str(c);
    }
    if let Some(m) = message {
        out.push_str(&format!(" ({m})"));
    }
    out.push_str("; ");
    out.push_str(hint);
    out
}

/// Runs one open socket until it ends.
async fn session(
    shared: &Shared,
    index: usize,
    mut ws: Ws,
    token: &AccessToken,
    tokens: &mut tokio::sync::watch::Receiver<Option<AccessToken>>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    set_state(shared, index, ConnectionState::Opening);
    let timeout = shared.config.stall_timeout;
    let stall = tokio::time::sleep(timeout);
    tokio::pin!(stall);
    let mut live = false;
    // What this socket streams now (empty until market_info).
    let mut sent: BTreeMap<String, SubscriptionMode> = BTreeMap::new();
    let slot = &shared.slots[index];
    let end = |cause, reason: String, live| End {
        cause,
        reason,
        was_live: live,
    };
    loop {
        let notified = slot.wake.notified();
        tokio::select! {
            msg = ws.next() => {
                let received = Instant::now();
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) | None => {
                        let why = "Upstox ended the feed socket without a close frame".to_owned();
                        record_error(shared, index, &why);
                        return end(DownCause::Closed, why, live);
                    }
                    Some(Err(e)) => {
                        let why = format!("feed socket error: {e}");
                        record_error(shared, index, &why);
                        return end(DownCause::Error, why, live);
                    }
                };
                stall.as_mut().reset(Instant::now() + timeout);
                let now = shared.clock.now();
                {
                    let mut h = lock(&slot.health);
                    h.messages += 1;
                    h.last_message_at = Some(now);
                    if matches!(msg, Message::Binary(_)) {
                        h.frames += 1;
                    }
                }
                match msg {
                    Message::Binary(data) => {
                        let kind = match frame_type(&data) {
                            Ok(k) => k,
                            Err(e) => {
                                tracing::debug!(connection = index, error = %e, "feed: dropped a malformed frame");
                                continue;
                            }
                        };
                        let first = !live && kind == FeedType::MarketInfo;
                        // Nothing but market_info is expected before it; pass it all on.
                        let _ = shared.events.send(UpstreamEvent::Frame { connection: index, kind, data, received });
                        if first {
                            live = true;
                            {
                                let mut h = lock(&slot.health);
                                h.state = super::ConnectionState::Live;
                                h.live_since = Some(now);
                            }
                            let reconnect = lock(&slot.health).reconnects > 0;
                            if let Err(why) = sync(shared, index, &mut ws, &mut sent).await {
                                record_error(shared, index, &why);
                                return end(DownCause::Error, why, live);
                            }
                            let _ = shared.events.send(UpstreamEvent::Up { connection: index, reconnect });
                        }
                    }
                    Message::Close(frame) => {
                        let why = close_reason(frame.as_ref());
                        record_error(shared, index, &why);
                        return end(DownCause::Closed, why, live);
                    }
                    // Pings are answered by the library; pings and pongs are life.
                    Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_) => {}
                }
            }
            _ = notified, if live => {
                if lock(&shared.book).desired(index).is_none_or(|d| d.is_empty()) {
                    close(&mut ws, CloseCode::Normal, "no keys left").await;
                    return end(DownCause::Unused, "no consumer wants a key on this connection".into(), live);
                }
                if let Err(why) = sync(shared, index, &mut ws, &mut sent).await {
                    record_error(shared, index, &why);
                    return end(DownCause::Error, why, live);
                }
            }
            () = token_changed(tokens) => {
                let rotated = tokens
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|t| t.expose() != token.expose());
                if rotated {
                    close(&mut ws, CloseCode::Normal, "token rotated").await;
                    return end(DownCause::Rotation, "the account's token rotated; reconnecting with the new one".into(), live);
                }
            }
            () = &mut stall => {
                let why = format!("no data, ping or pong for {} s: the feed socket stalled", timeout.as_secs_f64());
                record_error(shared, index, &why);
                return end(DownCause::Stall, why, live);
            }
            _ = stop.changed() => {
                close(&mut ws, CloseCode::Normal, "shutting down").await;
                return end(DownCause::Stopped, "the relay is stopping".into(), live);
            }
        }
    }
}

fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.code == CloseCode::Policy => format!(
            "Upstox closed the feed socket (1008 policy: {}); the token may have been revoked or rotated",
            crate::envelope::scrub(&f.reason)
        ),
        Some(f) => format!(
            "Upstox closed the feed socket ({}: {})",
            u16::from(f.code),
            crate::envelope::scrub(&f.reason)
        ),
        None => "Upstox closed the feed socket".to_owned(),
    }
}

async fn close(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // Best effort, and never long: a dead peer must not hold up a reconnect.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

/// Sends what it takes to turn `sent` into the connection's desired keys: `unsub` for
/// keys no longer wanted, `sub` for new keys and `change_mode` for keys whose mode
/// changed (one request per mode, at most [`KEYS_PER_REQUEST`] keys each).
async fn sync(
    shared: &Shared,
    index: usize,
    ws: &mut Ws,
    sent: &mut BTreeMap<String, SubscriptionMode>,
) -> Result<(), String> {
    let desired = lock(&shared.book)
        .desired(index)
        .cloned()
        .unwrap_or_default();
    let gone: Vec<&String> = sent.keys().filter(|k| !desired.contains_key(*k)).collect();
    let mut requests = Vec::new();
    for chunk in gone.chunks(KEYS_PER_REQUEST) {
        requests.push(FeedRequest::unsubscribe(chunk.iter().map(|k| k.as_str())));
    }
    for mode in [
        SubscriptionMode::Ltpc,
        SubscriptionMode::OptionGreeks,
        SubscriptionMode::Full,
        SubscriptionMode::FullD30,
    ] {
        let new: Vec<&str> = desired
            .iter()
            .filter(|(k, m)| **m == mode && !sent.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect();
        let changed: Vec<&str> = desired
            .iter()
            .filter(|(k, m)| **m == mode && sent.get(*k).is_some_and(|old| *old != mode))
            .map(|(k, _)| k.as_str())
            .collect();
        for chunk in new.chunks(KEYS_PER_REQUEST) {
            requests.push(FeedRequest::subscribe(mode, chunk.iter().copied()));
        }
        for chunk in changed.chunks(KEYS_PER_REQUEST) {
            requests.push(FeedRequest::change_mode(mode, chunk.iter().copied()));
        }
    }
    for r in requests {
        // Binary, not text: Upstox ignores text frames.
        ws.send(Message::Binary(r.to_bytes().into()))
            .await
            .map_err(|e| format!("feed socket error while subscribing: {e}"))?;
    }
    *sent = desired;
    Ok(())
}
