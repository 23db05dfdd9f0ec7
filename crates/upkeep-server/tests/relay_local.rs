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
use upkeep_sim::Plan;
use upkeep_upstox::feed::{self, FeedRequest, FeedType, SubscriptionMode};

use common::{PATIENCE, Setup, TestApp, eventually_async, ist, spawn_app};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOKEN: &str = "upk_token_key_for_relay_tests_000000000000";
const STATUS: &str = "upk_status_key_for_relay_tests_00000000000";

const INFY: &str = "NSE_EQ|INE009A01021";
const TATA: &str = "NSE_EQ|INE669E01016";
const RELI: &str = "NSE_EQ|INE002A01018";
const NIFTY: &str = "NSE_INDEX|Nifty 50";

async fn app(queue: usize, tick_ms: u64) -> TestApp {
    let tue = date(2026, 2, 10);
    assert_eq!(tue.weekday(), Weekday::Tuesday);
    let h = spawn_app(
        Setup::at(ist(tue, 10, 0, 0))
            .sim(move |c| {
                c.feed_tick_interval_ms = tick_ms;
                c.users[0].plan = Plan::Normal;
            })
            .settings(move |s| s.relay.consumer_queue = queue),
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
