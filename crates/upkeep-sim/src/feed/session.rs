//! One feed WebSocket: market_info first, then request handling, snapshots and ticks.

use std::collections::BTreeMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use prost::Message as _;
use tokio::time::{Instant, MissedTickBehavior};
use upkeep_proto::feed as pb;

use super::market::{self, Mode};
use super::{FeedEvent, FeedHost, FeedUser, Slot};

/// Per-mode key limits (ref 7.4): `(alone, combined)`. "Alone" applies when only that mode
/// is in use on the connection, "combined" when several are. Counted per connection
/// (UNCONFIRMED whether Upstox counts per connection or per user).
fn limits(mode: Mode) -> (usize, usize) {
    match mode {
        Mode::Ltpc => (5_000, 2_000),
        Mode::OptionGreeks => (3_000, 2_000),
        Mode::Full => (2_000, 1_500),
        Mode::FullD30 => (50, 1_500),
    }
}

/// The keys a connection streams, each in one mode (sorted, so frames are repeatable).
#[derive(Debug, Default, Clone)]
pub(crate) struct Subscriptions {
    keys: BTreeMap<String, Mode>,
}

/// Why a request was ignored (logged; the feed has no JSON replies).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    NotJson,
    UnknownMethod,
    UnknownMode,
    PlusOnly,
    OverLimit(Mode),
}

/// What a request asks the connection to do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Send a snapshot of these keys (in their new modes).
    Snapshot(Vec<String>),
    /// Nothing to send.
    Quiet,
}

impl Subscriptions {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Mode)> {
        self.keys.iter().map(|(k, m)| (k.as_str(), *m))
    }

    fn mode_of(&self, key: &str) -> Option<Mode> {
        self.keys.get(key).copied()
    }

    /// Applies one client request (the JSON of a binary frame). A request that would break
    /// a rule changes nothing (UNCONFIRMED: Upstox's reaction is undocumented).
    pub(crate) fn apply(&mut self, request: &[u8], plus: bool) -> Result<Outcome, Refused> {
        let v: serde_json::Value = serde_json::from_slice(request).map_err(|_| Refused::NotJson)?;
        let data = v.get("data");
        let keys: Vec<String> = data
            .and_then(|d| d.get("instrumentKeys"))
            .and_then(|k| k.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str())
                    .filter(|k| market::valid_key(k))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mode = data.and_then(|d| d.get("mode")).and_then(|m| m.as_str());
        let method = v.get("method").and_then(|m| m.as_str());
        let mut next = self.clone();
        let outcome = match method {
            Some("sub") => {
                let mode = match mode {
                    None => Mode::Ltpc,
                    Some(m) => Mode::parse(m).ok_or(Refused::UnknownMode)?,
                };
                for k in &keys {
                    next.keys.insert(k.clone(), mode);
                }
                Outcome::Snapshot(keys)
            }
            Some("change_mode") => {
                let mode = mode.and_then(Mode::parse).ok_or(Refused::UnknownMode)?;
                // Only keys already subscribed change (UNCONFIRMED).
                let changed: Vec<String> = keys
                    .into_iter()
                    .filter(|k| next.mode_of(k).is_some())
                    .collect();
                for k in &changed {
                    next.keys.insert(k.clone(), mode);
                }
                Outcome::Snapshot(changed)
            }
            Some("unsub") => {
                for k in &keys {
                    next.keys.remove(k);
                }
                Outcome::Quiet
            }
            _ => return Err(Refused::UnknownMethod),
        };
        next.check(plus)?;
        *self = next;
        Ok(match outcome {
            Outcome::Snapshot(keys) if keys.is_empty() => Outcome::Quiet,
            o => o,
        })
    }

    fn check(&self, plus: bool) -> Result<(), Refused> {
        let mut counts: BTreeMap<Mode, usize> = BTreeMap::new();
        for m in self.keys.values() {
            *counts.entry(*m).or_default() += 1;
        }
        if !plus && counts.contains_key(&Mode::FullD30) {
            return Err(Refused::PlusOnly);
        }
        let alone = counts.len() == 1;
        for (mode, n) in &counts {
            let (alone_max, combined_max) = limits(*mode);
            if *n > if alone { alone_max } else { combined_max } {
                return Err(Refused::OverLimit(*mode));
            }
        }
        Ok(())
    }
}

fn binary(msg: &pb::FeedResponse) -> Message {
    Message::Binary(msg.encode_to_vec().into())
}

/// Counts the connection as open for the host while it lives.
struct Counted<S: FeedHost>(S);

impl<S: FeedHost> Drop for Counted<S> {
    fn drop(&mut self) {
        self.0.feed_event(FeedEvent::Closed);
    }
}

/// Runs one connection until the client leaves, a `drop` fault cuts it or its token
/// stops authenticating. `_slot` holds the user's connection count until the end.
pub(crate) async fn run<S: FeedHost>(
    mut socket: WebSocket,
    host: S,
    user: FeedUser,
    token: String,
    _slot: Slot,
) {
    host.feed_event(FeedEvent::Opened);
    let _counted = Counted(host.clone());
    // A `drop` fault: return without a close frame, so the TCP stream just ends.
    if host.faults().drop {
        return;
    }
    let now = host.now();
    let info = market::market_info(now, |segment| host.segment_status(segment, now));
    if socket.send(binary(&info)).await.is_err() {
        return;
    }
    let period = host
        .tick_interval()
        .max(std::time::Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut subs = Subscriptions::default();
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { return };
                let request = match msg {
                    Message::Binary(b) => b,
                    // The docs require binary frames; text requests are ignored (UNCONFIRMED).
                    Message::Text(_) => {
                        tracing::debug!(ucc = %user.ucc, "feed: ignored a text frame");
                        continue;
                    }
                    // Pongs are automatic; a Close is answered by the library, then recv ends.
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
                };
                match subs.apply(&request, user.plus) {
                    Ok(Outcome::Snapshot(keys)) => {
                        let faults = host.faults();
                        if faults.drop {
                            return;
                        }
                        if faults.stall || faults.quiet {
                            continue;
                        }
                        let now_ms = host.now().as_millisecond();
                        let kind = match host.snapshot_type() {
                            crate::config::SnapshotType::InitialFeed => pb::Type::InitialFeed,
                            crate::config::SnapshotType::LiveFeed => pb::Type::LiveFeed,
                        };
                        let snapshot = market::feed_frame(
                            kind,
                            keys.iter().filter_map(|k| subs.mode_of(k).map(|m| (k.as_str(), m))),
                            now_ms,
                        );
                        if socket.send(binary(&snapshot)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Outcome::Quiet) => {}
                    Err(why) => {
                        tracing::warn!(ucc = %user.ucc, ?why, "feed: request ignored");
                    }
                }
            }
            _ = ticker.tick() => {
                let faults = host.faults();
                if faults.drop {
                    return;
                }
                if host.authenticate(&token).is_err() {
                    // The token that opened this socket was revoked, superseded or expired.
                    host.feed_event(FeedEvent::TokenClosed);
                    let frame = CloseFrame {
                        code: close_code::POLICY,
                        reason: "access token is no longer valid".into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                if faults.stall {
                    // A dead socket: open, but nothing on it.
                    continue;
                }
                let msg = if faults.quiet || subs.is_empty() {
                    // Idle (or a quiet market): standard WebSocket pings keep it alive.
                    Message::Ping(Vec::new().into())
                } else {
                    let now_ms = host.now().as_millisecond();
                    binary(&market::feed_frame(pb::Type::LiveFeed, subs.iter(), now_ms))
                };
                if socket.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, mode: Option<&str>, keys: &[&str]) -> Vec<u8> {
        let mut data = serde_json::json!({ "instrumentKeys": keys });
        if let Some(m) = mode {
            data["mode"] = m.into();
        }
        serde_json::json!({"guid": "g", "method": method, "data": data})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn sub_without_mode_means_ltpc() {
        let mut s = Subscriptions::default();
        let out = s.apply(&req("sub", None, &["NSE_EQ|INE1"]), false).unwrap();
        assert_eq!(out, Outcome::Snapshot(vec!["NSE_EQ|INE1".into()]));
        assert_eq!(s.mode_of("NSE_EQ|INE1"), Some(Mode::Ltpc));
    }

    #[test]
    fn full_d30_is_refused_for_normal_plan_and_allowed_for_plus() {
        let mut s = Subscriptions::default();
        let r = s.apply(&req("sub", Some("full_d30"), &["NSE_FO|1"]), false);
        assert_eq!(r, Err(Refused::PlusOnly));
        assert!(s.is_empty());
        assert!(
            s.apply(&req("sub", Some("full_d30"), &["NSE_FO|1"]), true)
                .is_ok()
        );
    }

    #[test]
    fn alone_limit_applies_to_one_mode_and_combined_to_several() {
        let keys: Vec<String> = (0..60).map(|i| format!("NSE_FO|{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut s = Subscriptions::default();
        // 51 keys in full_d30 alone: over its limit of 50.
        let r = s.apply(&req("sub", Some("full_d30"), &refs[..51]), true);
        assert_eq!(r, Err(Refused::OverLimit(Mode::FullD30)));
        assert!(
            s.apply(&req("sub", Some("full_d30"), &refs[..50]), true)
                .is_ok()
        );

        let many: Vec<String> = (0..1_600).map(|i| format!("NSE_EQ|K{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut s = Subscriptions::default();
        assert!(
            s.apply(&req("sub", Some("full"), &many), false).is_ok(),
            "1600 full alone is fine"
        );
        let r = s.apply(&req("sub", Some("ltpc"), &["NSE_EQ|other"]), false);
        assert_eq!(
            r,
            Err(Refused::OverLimit(Mode::Full)),
            "combined full limit is 1500"
        );
    }

    #[test]
    fn change_mode_touches_only_subscribed_keys_and_unsub_removes() {
        let mut s = Subscriptions::default();
        s.apply(&req("sub", Some("ltpc"), &["NSE_FO|1"]), false)
            .unwrap();
        let out = s
            .apply(
                &req("change_mode", Some("full"), &["NSE_FO|1", "NSE_FO|2"]),
                false,
            )
            .unwrap();
        assert_eq!(out, Outcome::Snapshot(vec!["NSE_FO|1".into()]));
        assert_eq!(s.mode_of("NSE_FO|1"), Some(Mode::Full));
        assert_eq!(s.mode_of("NSE_FO|2"), None);
        assert_eq!(
            s.apply(&req("unsub", None, &["NSE_FO|1"]), false),
            Ok(Outcome::Quiet)
        );
        assert!(s.is_empty());
    }

    #[test]
    fn malformed_requests_change_nothing() {
        let mut s = Subscriptions::default();
        assert_eq!(s.apply(b"not json", false), Err(Refused::NotJson));
        assert_eq!(
            s.apply(&req("subscribe", None, &["NSE_FO|1"]), false),
            Err(Refused::UnknownMethod)
        );
        assert_eq!(
            s.apply(&req("sub", Some("option_chain"), &["NSE_FO|1"]), false),
            Err(Refused::UnknownMode)
        );
        assert_eq!(
            s.apply(&req("sub", None, &["BAD"]), false),
            Ok(Outcome::Quiet)
        );
        assert!(s.is_empty());
    }
}
