//! The relay's local side in the daemon, against the simulator: consumers on the
//! Upstox-shaped socket (`/upstox/v3/feed/market-data-feed`, protobuf) and on `/ws/ticks`
//! (JSON), sharing the account's upstream connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use futures_util::{SinkExt, StreamExt};
use jiff::civil::{Weekday, date};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use upkeep_server::DaemonSettings;
use upkeep_sim::{FaultsPatch, Plan};
use upkeep_upstox::feed::{self, FeedRequest, FeedType, SubscriptionMode};

use common::{Captured, PATIENCE, Setup, TestApp, eventually_async, ist, spawn_app};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOKEN: &str = "upk_token_key_for_relay_tests_000000000000";
const STATUS: &str = "upk_status_key_for_relay_tests_00000000000";

const INFY: &str = "NSE_EQ|INE009A01021";
const TATA: &str = "NSE_EQ|INE669E01016";
const RELI: &str = "NSE_EQ|INE002A01018";
const NIFTY: &str = "NSE_INDEX|Nifty 50";

async fn app(queue: usize, tick_ms: u64) -> TestApp {
    app_with(queue, tick_ms, |_| {}).await
}

async fn app_with(
    queue: usize,
    tick_ms: u64,
    extra: impl FnOnce(&mut DaemonSettings) + Send + 'static,
) -> TestApp {
    let tue = date(2026, 2, 10);
    assert_eq!(tue.weekday(), Weekday::Tuesday);
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .sim(move |c| {
                c.feed_tick_interval_ms = tick_ms;
                c.users[0].plan = Plan::Normal;
            })
            .settings(move |s| s.relay.consumer_queue = queue)
            .settings(extra),
    )
    .await;
    h.wait_for_renewal(None).await;
    for (name, key, scope) in [
        ("bot", TOKEN, "token:read"),
        ("grafana", STATUS, "status:read"),
    ] {
        h.engine
            .store()
            .create_api_key(
                name,
                &Sha256::digest(key.as_bytes()).into(),
                scope,
                h.clock.now(),
            )
            .await
            .unwrap();
    }
    eventually_async("the keys loaded", || async {
        (feed_health(&h).await.is_some()).then_some(())
    })
    .await;
    h
}

async fn feed_health(h: &TestApp) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/feed", h.daemon_url))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return None;
    }
    Some(r.json().await.unwrap())
}

fn ws_url(h: &TestApp, path: &str) -> String {
    format!("{}{path}", h.daemon_url.replacen("http", "ws", 1))
}

async fn connect(h: &TestApp, path: &str, key: Option<&str>) -> Result<Ws, WsError> {
    let mut req = ws_url(h, path).into_client_request().unwrap();
    if let Some(key) = key {
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn protobuf_consumer(h: &TestApp) -> Ws {
    connect(h, "/upstox/v3/feed/market-data-feed", Some(TOKEN))
        .await
        .unwrap()
}

async fn send(ws: &mut Ws, req: FeedRequest) {
    ws.send(Message::Binary(req.to_bytes().into()))
        .await
        .unwrap();
}

/// Reads protobuf frames until one of type live_feed holds `want`; returns the keys seen
/// in live frames on the way.
async fn live_keys_until(ws: &mut Ws, want: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let f = feed::decode(&b).unwrap();
                    if f.kind == FeedType::LiveFeed {
                        seen.extend(f.feeds.iter().map(|(k, _)| (*k).to_owned()));
                        if f.feed(want).is_some() {
                            return;
                        }
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("no tick for the key");
    seen
}

#[tokio::test]
async fn three_consumers_share_two_upstream_connections_and_each_gets_only_its_keys() {
    let h = app(1024, 50).await;
    let mut a = protobuf_consumer(&h).await;
    let mut b = protobuf_consumer(&h).await;
    let mut c = protobuf_consumer(&h).await;
    send(
        &mut a,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    send(
        &mut b,
        FeedRequest::subscribe(SubscriptionMode::Full, [RELI, NIFTY]),
    )
    .await;
    send(
        &mut c,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA, INFY]),
    )
    .await;
    // The first frame of every consumer is market_info once the upstream has one.
    for _ in 0..3 {
        assert_eq!(
            live_keys_until(&mut a, TATA).await,
            BTreeSet::from([TATA.to_owned()])
        );
    }
    let b_seen = live_keys_until(&mut b, NIFTY).await;
    assert!(b_seen.is_subset(&BTreeSet::from([RELI.to_owned(), NIFTY.to_owned()])));
    let c_seen = live_keys_until(&mut c, INFY).await;
    assert!(c_seen.is_subset(&BTreeSet::from([TATA.to_owned(), INFY.to_owned()])));
    let counters = h.counters();
    assert!(
        counters.feed_connections_open == 2 && counters.feed_connections_peak == 2,
        "a normal plan allows 2 feed connections: {counters:?}"
    );
    let health = feed_health(&h).await.unwrap();
    let acct = &health["accounts"][0];
    assert_eq!(acct["local"]["consumers"].as_array().unwrap().len(), 3);
    assert_eq!(acct["upstream"]["keys"], 4);
}

#[tokio::test]
async fn a_request_larger_than_the_sockets_read_buffer_is_read_whole_and_served() {
    // The doors read in 4 KiB pieces (tungstenite zeroes its read buffer before each
    // read); a request several times that size must still arrive whole.
    let h = app(1024, 50).await;
    let mut ws = protobuf_consumer(&h).await;
    let mut req: Value =
        serde_json::from_slice(&FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]).to_bytes())
            .unwrap();
    req["guid"] = Value::String("g".repeat(20_000));
    let bytes = serde_json::to_vec(&req).unwrap();
    assert!(bytes.len() > 16 * 1024);
    ws.send(Message::Binary(bytes.into())).await.unwrap();
    live_keys_until(&mut ws, TATA).await;
}

#[tokio::test]
async fn one_consumers_unsubscribe_does_not_drop_a_key_another_still_wants() {
    let h = app(1024, 50).await;
    let mut a = protobuf_consumer(&h).await;
    let mut b = protobuf_consumer(&h).await;
    send(
        &mut a,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    send(
        &mut b,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA, RELI]),
    )
    .await;
    live_keys_until(&mut a, TATA).await;
    send(&mut a, FeedRequest::unsubscribe([TATA])).await;
    eventually_async("a's unsubscribe reached the hub", || async {
        feed_health(&h)
            .await
            .filter(|v| v["accounts"][0]["local"]["consumers"][0]["keys"] == 0)
    })
    .await;
    // b still gets TATA, several ticks after the unsubscribe.
    for _ in 0..3 {
        let seen = live_keys_until(&mut b, TATA).await;
        assert!(seen.contains(TATA));
    }
    let health = feed_health(&h).await.unwrap();
    assert_eq!(health["accounts"][0]["upstream"]["keys"], 2);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_a_reason_while_the_others_keep_receiving() {
    // Fast ticks, many full-mode keys and a small queue: a consumer that does not read
    // fills its socket and then its queue within moments.
    let h = app(8, 2).await;
    let keys: Vec<String> = (0..300).map(|i| format!("NSE_FO|{}", 40_000 + i)).collect();
    let mut slow = protobuf_consumer(&h).await;
    send(
        &mut slow,
        FeedRequest::subscribe(SubscriptionMode::Full, keys.clone()),
    )
    .await;
    let mut fast = connect(&h, &format!("/ws/ticks?keys={TATA}"), Some(TOKEN))
        .await
        .unwrap();
    let closed = eventually_async("the slow consumer was closed", || async {
        let v = feed_health(&h).await?;
        (v["accounts"][0]["local"]["closed_slow"] == 1).then_some(())
    });
    tokio::pin!(closed);
    // Keep reading the fast one meanwhile.
    loop {
        tokio::select! {
            _ = &mut closed => break,
            m = fast.next() => assert!(matches!(m, Some(Ok(_))), "the fast consumer's socket ended"),
        }
    }
    // The fast one goes on receiving after the slow one is gone.
    let mut after = 0;
    while after < 3 {
        let Some(Ok(Message::Text(t))) = tokio::time::timeout(PATIENCE, fast.next()).await.unwrap()
        else {
            panic!("the fast consumer's socket ended")
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "live_feed" && v["feeds"][TATA]["ltpc"]["ltp"].is_number() {
            after += 1;
        }
    }
    // The slow one finds the reason at the end of what was already sent.
    let reason = tokio::time::timeout(PATIENCE, async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reason.0, 1013);
    assert!(reason.1.contains("too slow"), "{}", reason.1);
}

#[tokio::test]
async fn authorize_answers_like_upstox_with_a_single_use_url() {
    let h = app(1024, 50).await;
    let r = reqwest::Client::new()
        .get(format!(
            "{}/upstox/v3/feed/market-data-feed/authorize",
            h.daemon_url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "success");
    let url = v["data"]["authorized_redirect_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(v["data"]["authorizedRedirectUri"], url.as_str());
    let path = &url[url.find("/upstox").unwrap()..];
    let mut ws = connect(&h, path, None).await.unwrap();
    send(
        &mut ws,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    live_keys_until(&mut ws, TATA).await;
    // Used once: a second connect is refused, as is one without key or code.
    assert!(matches!(connect(&h, path, None).await, Err(WsError::Http(r)) if r.status() == 401));
    assert!(matches!(
        connect(&h, "/upstox/v3/feed/market-data-feed", None).await,
        Err(WsError::Http(r)) if r.status() == 401
    ));
    // A status:read key may not stream.
    assert!(matches!(
        connect(&h, "/upstox/v3/feed/market-data-feed", Some(STATUS)).await,
        Err(WsError::Http(r)) if r.status() == 403
    ));
}

#[tokio::test]
async fn json_ticks_are_the_sdk_dict_shape_with_int64_as_strings() {
    let h = app(1024, 50).await;
    let mut ws = connect(&h, &format!("/ws/ticks?keys={TATA}&mode=full"), Some(TOKEN))
        .await
        .unwrap();
    let tick = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "live_feed" {
                    return v;
                }
            }
        }
    })
    .await
    .unwrap();
    let ff = &tick["feeds"][TATA]["fullFeed"]["marketFF"];
    assert!(ff["ltpc"]["ltp"].is_number(), "{tick}");
    assert!(ff["ltpc"]["ltt"].is_string(), "int64 as a string: {tick}");
    assert_eq!(tick["feeds"][TATA]["requestMode"], "full_d5");
    // A bad request is answered with the reason, and the socket stays.
    ws.send(Message::Text(r#"{"method":"subscribe"}"#.into()))
        .await
        .unwrap();
    let err = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    return v;
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("unknown"),
        "{err}"
    );
}

#[tokio::test]
async fn the_dashboard_session_reads_the_feed_health_and_a_stranger_does_not() {
    let h = app(1024, 50).await;
    let mut c = protobuf_consumer(&h).await;
    send(
        &mut c,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    live_keys_until(&mut c, TATA).await;
    let url = format!("{}/api/v1/feed", h.daemon_url);
    let stranger = common::browser().get(&url).send().await.unwrap();
    assert_eq!(stranger.status(), 401);
    let b = common::browser();
    let link = h.engine.dashboard_link();
    let path = link.split_once("/dashboard/").unwrap().1;
    let r = b
        .get(format!("{}/dashboard/{path}", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let v: Value = b.get(&url).send().await.unwrap().json().await.unwrap();
    let acct = &v["accounts"][0];
    assert_eq!(acct["account"], "main");
    assert_eq!(acct["local"]["consumers"][0]["keys"], 1);
    assert_eq!(acct["upstream"]["connections"][0]["state"], "live");
}

/// The next `n` entries for `key` (snapshots and live frames), decoded, with the frame's
/// type: `(type, requestMode, shape)` where shape is "ltpc", "full" or "greeks".
async fn shapes_of(
    ws: &mut Ws,
    key: &str,
    n: usize,
) -> Vec<(FeedType, feed::RequestMode, &'static str)> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while out.len() < n {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let f = feed::decode(&b).unwrap();
                    if let Some(e) = f.feed(key) {
                        let shape = match &e.data {
                            Some(feed::FeedData::Ltpc(_)) => "ltpc",
                            Some(feed::FeedData::Full(_)) => "full",
                            Some(feed::FeedData::FirstLevelWithGreeks(g)) => {
                                assert!(
                                    g.first_depth.is_some() && g.option_greeks.is_some(),
                                    "{g:?}"
                                );
                                "greeks"
                            }
                            None => "none",
                        };
                        out.push((f.kind, e.request_mode, shape));
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("too few frames for the key");
    out
}

#[tokio::test]
async fn each_consumer_gets_a_shared_key_in_the_mode_it_asked_for() {
    const OPT: &str = "NSE_FO|45450";
    let h = app(1024, 50).await;
    let mut rich = protobuf_consumer(&h).await;
    send(
        &mut rich,
        FeedRequest::subscribe(SubscriptionMode::Full, [TATA, OPT]),
    )
    .await;
    // Upstream streams both keys in full once the rich consumer sees full frames.
    let first = shapes_of(&mut rich, OPT, 1).await;
    assert_eq!(first[0].2, "full");
    let mut poor = protobuf_consumer(&h).await;
    send(
        &mut poor,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    let mut greeks = connect(&h, "/upstox/v3/feed/market-data-feed", Some(TOKEN))
        .await
        .unwrap();
    send(
        &mut greeks,
        FeedRequest::subscribe(SubscriptionMode::OptionGreeks, [OPT]),
    )
    .await;
    // The snapshot from the relay's cache and the live ticks after it, each shaped as
    // Upstox sends that mode; the full consumer keeps its full frames.
    let poor_seen = shapes_of(&mut poor, TATA, 4).await;
    assert_eq!(poor_seen[0].0, FeedType::InitialFeed, "{poor_seen:?}");
    assert!(
        poor_seen
            .iter()
            .all(|(_, m, s)| *m == feed::RequestMode::Ltpc && *s == "ltpc"),
        "{poor_seen:?}"
    );
    let greeks_seen = shapes_of(&mut greeks, OPT, 4).await;
    assert_eq!(greeks_seen[0].0, FeedType::InitialFeed, "{greeks_seen:?}");
    assert!(
        greeks_seen
            .iter()
            .all(|(_, m, s)| *m == feed::RequestMode::OptionGreeks && *s == "greeks"),
        "{greeks_seen:?}"
    );
    let rich_seen = shapes_of(&mut rich, TATA, 3).await;
    assert!(
        rich_seen
            .iter()
            .all(|(_, m, s)| *m == feed::RequestMode::FullD5 && *s == "full"),
        "{rich_seen:?}"
    );
    // One upstream subscription per key, in the richest mode.
    let health = feed_health(&h).await.unwrap();
    let up = &health["accounts"][0]["upstream"];
    assert_eq!(up["keys"], 2, "{up}");
    let full: u64 = up["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["keys"]["full"].as_u64().unwrap())
        .sum();
    assert_eq!(full, 2, "{up}");
}

/// The next JSON text frame on `ws` that `pick` accepts (others are skipped).
async fn json_until(ws: &mut Ws, mut pick: impl FnMut(&Value) -> bool) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if pick(&v) {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the awaited JSON frame never came")
}

#[tokio::test]
async fn consumers_are_told_of_an_upstream_gap_and_get_market_info_and_a_snapshot_after_it() {
    let h = app_with(1024, 50, |s| {
        s.relay.upstream.backoff_min = std::time::Duration::from_millis(100);
        s.relay.upstream.backoff_max = std::time::Duration::from_millis(300);
    })
    .await;
    let mut json = connect(&h, &format!("/ws/ticks?keys={TATA}"), Some(TOKEN))
        .await
        .unwrap();
    let mut proto = protobuf_consumer(&h).await;
    send(
        &mut proto,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    live_keys_until(&mut proto, TATA).await;
    json_until(&mut json, |v| v["type"] == "live_feed").await;

    // The simulator drops the feed socket (and every new one while the fault lasts).
    let faults = |drop| FaultsPatch {
        feed_drop: Some(drop),
        ..FaultsPatch::default()
    };
    h.sim.state().patch_faults(faults(true)).unwrap();
    let down = json_until(&mut json, |v| v["type"] == "upstream").await;
    assert_eq!(down["state"], "down", "{down}");
    assert_eq!(down["cause"], "closed", "{down}");
    assert!(
        down["reason"]
            .as_str()
            .unwrap()
            .contains("without a close frame"),
        "{down}"
    );
    h.let_daemon_run().await;
    // The gap lasts 7 s on the (frozen) clock the daemon and the simulator share.
    h.clock.advance(jiff::SignedDuration::from_secs(7));
    h.sim.state().patch_faults(faults(false)).unwrap();

    // Back: a fresh market_info, then the up notice with the gap's length, then ticks.
    let mut after = Vec::new();
    let up = json_until(&mut json, |v| {
        after.push(v["type"].as_str().unwrap_or_default().to_owned());
        v["type"] == "upstream"
    })
    .await;
    assert_eq!(up["state"], "up", "{up}");
    assert_eq!(up["since"], down["since"], "{up}");
    assert_eq!(up["gap_ms"], 7_000, "{up}");
    assert!(after.contains(&"market_info".to_owned()), "{after:?}");
    let tick = json_until(&mut json, |v| v["feeds"][TATA]["ltpc"]["ltp"].is_number()).await;
    assert!(
        tick["type"] == "live_feed" || tick.get("type").is_none(),
        "{tick}"
    );

    // The protobuf consumer (no notices on an Upstox-shaped socket): its ticks up to the
    // drop, then market_info again and the reconnected socket's snapshot of its key.
    let resumed = tokio::time::timeout(PATIENCE, async {
        loop {
            let Some(Ok(Message::Binary(b))) = proto.next().await else {
                panic!("the protobuf consumer's socket ended");
            };
            let f = feed::decode(&b).unwrap();
            if f.kind == FeedType::MarketInfo {
                break;
            }
        }
        loop {
            let Some(Ok(Message::Binary(b))) = proto.next().await else {
                panic!("the protobuf consumer's socket ended");
            };
            let f = feed::decode(&b).unwrap();
            if f.feed(TATA).is_some() {
                return f.kind;
            }
        }
    })
    .await
    .expect("no market_info and snapshot after the gap");
    assert!(
        matches!(resumed, FeedType::InitialFeed | FeedType::LiveFeed),
        "{resumed:?}"
    );
    assert!(h.counters().feed_connections_opened >= 2);
}

/// A single-use feed path from the authorize door.
async fn authorized_path(h: &TestApp) -> String {
    let v: Value = reqwest::Client::new()
        .get(format!(
            "{}/upstox/v3/feed/market-data-feed/authorize",
            h.daemon_url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["data"]["authorized_redirect_uri"].as_str().unwrap();
    url[url.find("/upstox").unwrap()..].to_owned()
}

// One thread: the subscriber is this thread's default, and every task runs on it.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_guessed_feed_codes_gets_cheap_refusals_takes_no_real_code_and_logs_summaries() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = app_with(1024, 50, |s| {
        s.relay.code_guard.failures_per_window = 20;
        s.relay.code_guard.window = std::time::Duration::from_secs(3600);
        s.relay.code_guard.summary_every = std::time::Duration::from_secs(1);
    })
    .await;
    let before = authorized_path(&h).await;
    let mut during = String::new();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for i in 0..300u64 {
        if i == 150 {
            during = authorized_path(&h).await;
        }
        // Well-formed guesses, malformed ones, and a real code's neighbour.
        let code = match i % 3 {
            0 => format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            1 => format!("guess-{i}"),
            _ => {
                let real = before.rsplit_once('=').unwrap().1;
                let last = u64::from_str_radix(&real[63..], 16).unwrap();
                format!("{}{:x}", &real[..63], (last + 1 + i % 15) % 16)
            }
        };
        match connect(
            &h,
            &format!("/upstox/v3/feed/market-data-feed?code={code}"),
            None,
        )
        .await
        {
            Err(WsError::Http(r)) => {
                if r.status() == 429 {
                    assert!(r.headers().contains_key("retry-after"), "{r:?}");
                }
                *statuses.entry(r.status().as_u16()).or_default() += 1;
            }
            other => panic!("a guessed code was not refused: {other:?}"),
        }
    }
    assert_eq!(
        statuses,
        [(401, 20), (429, 280)].into(),
        "20 refusals, then the cap"
    );
    // Nothing reached Upstox: no pool started, no feed socket opened.
    assert_eq!(h.counters().feed_connections_opened, 0);
    let health = feed_health(&h).await.unwrap();
    assert!(
        health["accounts"].as_array().unwrap().is_empty(),
        "{health}"
    );
    // Both real URLs, handed out before and during the flood, still work (once).
    for path in [&before, &during] {
        let mut ws = connect(&h, path, None).await.unwrap();
        send(
            &mut ws,
            FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
        )
        .await;
        live_keys_until(&mut ws, TATA).await;
    }
    // The log: summaries whose counts add up to every refusal, not a line per attempt.
    let log = || captured.text();
    let count = |what: &str| -> u64 {
        log()
            .lines()
            .filter(|l| l.contains("feed socket attempts"))
            .filter_map(|l| {
                let rest = &l[l.find(&format!("{what}="))? + what.len() + 1..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    common::eventually("summaries counting every refusal", || {
        (count("refused") == 20 && count("throttled") == 280).then_some(())
    })
    .await;
    let lines = log()
        .lines()
        .filter(|l| l.contains("relay:") && l.contains("code"))
        .count();
    assert!(lines <= 20, "{lines} log lines for 300 guesses:\n{}", log());
    assert!(
        !log().contains(before.rsplit_once('=').unwrap().1),
        "a real code was logged"
    );
}

async fn scrape(h: &TestApp) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", h.daemon_url))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of the series `name{labels}` (labels exactly as rendered), if present.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_show_each_upstream_connection_and_each_consumer_until_it_leaves() {
    let h = app(1024, 50).await;
    let mut ws = connect(&h, &format!("/ws/ticks?keys={TATA},{INFY}"), Some(TOKEN))
        .await
        .unwrap();
    // Wait for ticks on the consumer's socket: the relay is live for it.
    for _ in 0..3 {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await
                    && serde_json::from_str::<Value>(&t).unwrap()["type"] == "live_feed"
                {
                    return;
                }
            }
        })
        .await
        .unwrap();
    }
    let text = scrape(&h).await;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let conn = r#"account="main",connection="0""#;
    assert_eq!(
        series(
            &text,
            &format!("upkeep_relay_connection_state{{{conn},state=\"live\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            &format!("upkeep_relay_connection_state{{{conn},state=\"backoff\"}}")
        ),
        Some(0.0)
    );
    // Both keys in ltpc on one connection or spread over two: 2 in all, none in full.
    let keys = |mode: &str| -> f64 {
        (0..5)
            .filter_map(|i| {
                series(
                    &text,
                    &format!(
                        "upkeep_relay_connection_keys{{account=\"main\",connection=\"{i}\",mode=\"{mode}\"}}"
                    ),
                )
            })
            .sum()
    };
    assert_eq!(keys("ltpc"), 2.0, "{text}");
    assert_eq!(
        series(&text, r#"upkeep_relay_upstream_keys{account="main"}"#),
        Some(2.0)
    );
    assert_eq!(
        series(&text, r#"upkeep_relay_local_consumers{account="main"}"#),
        Some(1.0)
    );
    assert_eq!(keys("full"), 0.0);
    assert!(
        series(
            &text,
            &format!("upkeep_relay_connection_messages_total{{{conn}}}")
        )
        .unwrap()
            >= 3.0
    );
    assert_eq!(
        series(
            &text,
            &format!("upkeep_relay_connection_reconnects_total{{{conn}}}")
        ),
        Some(0.0)
    );
    // The consumer, by its key's name and id, with what it has taken so far.
    let consumer = text
        .lines()
        .find(|l| l.starts_with("upkeep_relay_consumer_delivered_frames_total{"))
        .unwrap_or_else(|| panic!("no consumer series: {text}"));
    assert!(
        consumer.contains(r#"consumer="bot (main, json)""#),
        "{consumer}"
    );
    let labels = &consumer[consumer.find('{').unwrap()..=consumer.find('}').unwrap()];
    let delivered: f64 = consumer.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(delivered >= 3.0, "{consumer}");
    assert!(series(&text, &format!("upkeep_relay_consumer_lag_frames{labels}")).is_some());
    assert_eq!(
        series(
            &text,
            &format!("upkeep_relay_consumer_dropped_frames_total{labels}")
        ),
        Some(0.0)
    );
    // Once it leaves, its series go (the connections' stay).
    ws.close(None).await.unwrap();
    drop(ws);
    let text = eventually_async("the consumer's series are gone", || async {
        let text = scrape(&h).await;
        (!text.contains("consumer=\"bot")).then_some(text)
    })
    .await;
    assert!(text.contains("upkeep_relay_connection_state{"), "{text}");
}

/// The next `feed` event's data on a server-sent events response.
async fn next_feed_event(r: &mut reqwest::Response, buf: &mut String) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if block.lines().any(|l| l == "event: feed")
                    && let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                {
                    return serde_json::from_str(data).unwrap();
                }
            }
            let chunk = r.chunk().await.unwrap().expect("the stream ended");
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("no feed event")
}

#[tokio::test]
async fn the_live_feed_shows_the_dashboard_ticks_as_they_change_and_subscribes_nothing() {
    let h = app(1024, 50).await;
    let url = format!("{}/api/v1/feed/live", h.daemon_url);
    assert_eq!(
        common::browser().get(&url).send().await.unwrap().status(),
        401
    );
    let status_key = reqwest::Client::new()
        .get(&url)
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap();
    assert_eq!(status_key.status(), 403, "ticks need token:read");
    let b = common::browser();
    let link = h.engine.dashboard_link();
    let path = link.split_once("/dashboard/").unwrap().1;
    let r = b
        .get(format!("{}/dashboard/{path}", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let mut live = b.get(&url).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let mut buf = String::new();
    // Watching starts no relay.
    let first = next_feed_event(&mut live, &mut buf).await;
    assert_eq!(first["accounts"], serde_json::json!([]), "{first}");
    // A bot subscribes: its instrument's ticks reach the viewer, and keep changing.
    let mut c = protobuf_consumer(&h).await;
    send(
        &mut c,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    let reader = tokio::spawn(async move { while c.next().await.is_some() {} });
    // The simulator's clock is frozen: move it on after each tick seen.
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        if seen.len() == 3 {
            break;
        }
        let v = next_feed_event(&mut live, &mut buf).await;
        let Some(acct) = v["accounts"].as_array().and_then(|a| a.first()) else {
            continue;
        };
        assert_eq!(acct["account"], "main");
        if let Some(t) = acct["ticks"].as_array().and_then(|t| t.first()) {
            assert_eq!(t["key"], TATA, "{v}");
            assert!(t["ltp"].as_f64().unwrap() > 0.0, "{v}");
            if seen.insert(t["ltt"].as_i64().unwrap()) {
                h.clock.advance(jiff::SignedDuration::from_secs(1));
            }
        }
        // The viewer is no consumer and wants no key.
        assert_eq!(acct["upstream"]["keys"], 1, "{v}");
        assert_eq!(acct["local"]["consumers"].as_array().unwrap().len(), 1);
    }
    assert_eq!(seen.len(), 3, "the viewer saw the tick change: {seen:?}");
    reader.abort();
}

#[tokio::test]
async fn a_reload_that_removes_the_account_stops_its_upstream_sockets_and_closes_its_consumers() {
    let h = app(1024, 50).await;
    let mut c = protobuf_consumer(&h).await;
    send(
        &mut c,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    live_keys_until(&mut c, TATA).await;
    let mut json = connect(&h, &format!("/ws/ticks?keys={INFY}"), Some(TOKEN))
        .await
        .unwrap();
    assert!(h.counters().feed_connections_open >= 1);

    let before = (*h.engine.settings()).clone();
    let mut without = before.clone();
    without.accounts.clear();
    let summary = h.engine.apply_settings(without, None).await.unwrap();
    assert_eq!(summary.removed, ["main"]);

    // Each consumer is told why, whatever door it came through.
    for ws in [&mut c, &mut json] {
        let (code, reason) = tokio::time::timeout(PATIENCE, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(Some(f)))) => {
                        return (u16::from(f.code), f.reason.to_string());
                    }
                    Some(Ok(_)) => {}
                    other => panic!("no close frame: {other:?}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(code, 1001);
        assert!(
            reason.contains("`main` was removed from the configuration"),
            "{reason}"
        );
    }
    // Its upstream sockets close at the simulator, and the relay forgets it.
    eventually_async("the account's upstream sockets closed", || async {
        (h.counters().feed_connections_open == 0).then_some(())
    })
    .await;
    let health = feed_health(&h).await.unwrap();
    assert_eq!(health["accounts"], serde_json::json!([]), "{health}");
    let text = scrape(&h).await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("upkeep_relay_") && l.contains("account=\"main\"")),
        "{text}"
    );
    assert!(matches!(
        connect(&h, "/upstox/v3/feed/market-data-feed?account=main", Some(TOKEN)).await,
        Err(WsError::Http(r)) if r.status() == 404
    ));

    // Added back, it gets a fresh relay.
    h.engine.apply_settings(before, None).await.unwrap();
    let mut again = protobuf_consumer(&h).await;
    send(
        &mut again,
        FeedRequest::subscribe(SubscriptionMode::Ltpc, [TATA]),
    )
    .await;
    live_keys_until(&mut again, TATA).await;
}
