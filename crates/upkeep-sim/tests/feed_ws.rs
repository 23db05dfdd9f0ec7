//! The simulator's Market Data Feed V3 over real loopback sockets, with a tiny FeedHost
//! (the simulator's own host abstraction) standing in for the simulator core.
//!
//! Every test runs on a paused tokio clock (current-thread runtime): the feed's ticks and
//! idle pings are `tokio::time` intervals, so a long tick interval costs no wall time, and
//! tokio advances virtual time only when every task (client and server alike, sharing the
//! runtime over loopback) is idle. Assertions are about order and content only.
//!
//! Both ends of every socket set TCP_NODELAY. Without it Nagle's algorithm holds a small
//! write in the kernel until the peer's delayed ACK, a real-time kernel timer (~40 ms); the
//! runtime sees no I/O meanwhile, so virtual time runs ahead and the frame "never" arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (TEAM-BRIEF)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt as _;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use upkeep_proto::feed as pb;
use upkeep_sim::feed::{FeedAuthError, FeedEvent, FeedFaults, FeedHost, FeedUser, feed_router};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const NORMAL: &str = "token-normal";
const PLUS: &str = "token-plus";
const EXPIRED: &str = "token-expired";
/// The feed's tick (and idle ping) interval: long, since time is virtual.
const TICK: Duration = Duration::from_secs(1);
/// Guards against hangs. Virtual time: a hang jumps straight to it, so it fails fast.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct TestHost {
    base_ws: Arc<Mutex<String>>,
    faults: Arc<Mutex<FeedFaults>>,
    /// Tokens revoked since the start.
    revoked: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<FeedEvent>>>,
    start: tokio::time::Instant,
}

impl FeedHost for TestHost {
    fn now(&self) -> jiff::Timestamp {
        let base = jiff::Timestamp::from_millisecond(1_764_732_600_000).unwrap();
        base + self.start.elapsed()
    }

    fn authenticate(&self, bearer: &str) -> Result<FeedUser, FeedAuthError> {
        if self.revoked.lock().unwrap().iter().any(|t| t == bearer) {
            return Err(FeedAuthError::Invalid);
        }
        match bearer {
            NORMAL => Ok(FeedUser {
                ucc: "AB1234".into(),
                plus: false,
            }),
            PLUS => Ok(FeedUser {
                ucc: "PL9999".into(),
                plus: true,
            }),
            EXPIRED => Err(FeedAuthError::Expired),
            _ => Err(FeedAuthError::Invalid),
        }
    }

    fn faults(&self) -> FeedFaults {
        *self.faults.lock().unwrap()
    }

    fn tick_interval(&self) -> Duration {
        TICK
    }

    fn base_ws_url(&self) -> String {
        self.base_ws.lock().unwrap().clone()
    }

    fn feed_event(&self, event: FeedEvent) {
        self.events.lock().unwrap().push(event);
    }
}

struct Feed {
    addr: SocketAddr,
    host: TestHost,
    http: reqwest::Client,
}

async fn spawn_feed() -> Feed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host = TestHost {
        base_ws: Arc::new(Mutex::new(format!("ws://{addr}"))),
        faults: Arc::default(),
        revoked: Arc::default(),
        events: Arc::default(),
        start: tokio::time::Instant::now(),
    };
    let app = feed_router(host.clone());
    let listener = listener.tap_io(|tcp| tcp.set_nodelay(true).unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Feed {
        addr,
        host,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl Feed {
    async fn authorize(&self, token: &str) -> reqwest::Response {
        self.http
            .get(format!(
                "http://{}/v3/feed/market-data-feed/authorize",
                self.addr
            ))
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    async fn authorized_url(&self, token: &str) -> String {
        let resp = self.authorize(token).await;
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        body["data"]["authorized_redirect_uri"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Authorize, connect, and read the market_info frame.
    async fn open(&self, token: &str) -> Ws {
        let url = self.authorized_url(token).await;
        let (mut ws, _) = connect(url.as_str()).await.unwrap();
        let first = next_frame(&mut ws).await;
        assert_eq!(first.r#type(), pb::Type::MarketInfo);
        ws
    }

    fn set_faults(&self, faults: FeedFaults) {
        *self.host.faults.lock().unwrap() = faults;
    }
}

/// A WebSocket handshake with Nagle off (see the module docs).
async fn connect(req: impl IntoClientRequest + Unpin) -> Result<(Ws, WsResponse), WsError> {
    tokio_tungstenite::connect_async_with_config(req, None, true).await
}

fn request(method: &str, mode: Option<&str>, keys: &[&str]) -> Message {
    let mut data = serde_json::json!({ "instrumentKeys": keys });
    if let Some(m) = mode {
        data["mode"] = m.into();
    }
    let body = serde_json::json!({"guid": "0b1c", "method": method, "data": data});
    Message::binary(body.to_string().into_bytes())
}

async fn next_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
        .expect("websocket error")
}

/// The next protobuf frame, skipping pings.
async fn next_frame(ws: &mut Ws) -> pb::FeedResponse {
    loop {
        match next_message(ws).await {
            Message::Binary(b) => return pb::FeedResponse::decode(b.as_ref()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// The next live_feed frame.
async fn next_tick(ws: &mut Ws) -> pb::FeedResponse {
    loop {
        let f = next_frame(ws).await;
        if f.r#type() == pb::Type::LiveFeed {
            return f;
        }
    }
}

fn market_ff(feed: &pb::Feed) -> &pb::MarketFullFeed {
    match &feed.feed_union {
        Some(pb::feed::FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: Some(pb::full_feed::FullFeedUnion::MarketFf(m)),
        })) => m,
        other => panic!("not a marketFF: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn authorize_returns_a_ws_url_in_both_key_spellings() {
    let feed = spawn_feed().await;
    let resp = feed.authorize(NORMAL).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "success");
    let url = body["data"]["authorized_redirect_uri"].as_str().unwrap();
    assert_eq!(body["data"]["authorizedRedirectUri"], url);
    let prefix = format!(
        "ws://{}/market-data-feeder/v3/upstox-developer-api/feeds?requestId=",
        feed.addr
    );
    assert!(url.starts_with(&prefix), "{url}");
    assert!(url.contains("&code="), "{url}");
}

#[tokio::test(start_paused = true)]
async fn authorize_refuses_bad_expired_and_missing_tokens_with_the_gateway_401() {
    let feed = spawn_feed().await;
    let want = serde_json::json!({"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null,"error_code":"UDAPI100050","property_path":null,"invalid_value":null}]});
    for token in ["nonsense", EXPIRED] {
        let resp = feed.authorize(token).await;
        assert_eq!(resp.status(), 401, "{token}");
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), want);
    }
    let resp = feed
        .http
        .get(format!(
            "http://{}/v3/feed/market-data-feed/authorize",
            feed.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(start_paused = true)]
async fn market_info_is_the_first_frame_with_every_segment() {
    let feed = spawn_feed().await;
    let url = feed.authorized_url(NORMAL).await;
    let (mut ws, _) = connect(url.as_str()).await.unwrap();
    let first = next_frame(&mut ws).await;
    assert_eq!(first.r#type(), pb::Type::MarketInfo);
    assert!(first.current_ts >= 1_764_732_600_000);
    let mi = first.market_info.unwrap();
    assert_eq!(mi.segment_status.len(), 11);
    // The host's clock reads Wednesday 09:00 IST: equity is in its pre-open, F&O opens
    // at 09:15, commodities are open.
    assert_eq!(
        mi.segment_status["NSE_EQ"],
        pb::MarketStatus::PreOpenStart as i32
    );
    assert_eq!(
        mi.segment_status["NSE_FO"],
        pb::MarketStatus::NormalClose as i32
    );
    assert_eq!(
        mi.segment_status["MCX_FO"],
        pb::MarketStatus::NormalOpen as i32
    );
}

#[tokio::test(start_paused = true)]
async fn sub_without_mode_gets_an_ltpc_snapshot_then_live_ticks() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request(
        "sub",
        None,
        &["NSE_EQ|INE669E01016", "NSE_INDEX|Nifty 50"],
    ))
    .await
    .unwrap();
    let snap = next_frame(&mut ws).await;
    assert_eq!(snap.r#type(), pb::Type::InitialFeed);
    assert_eq!(snap.feeds.len(), 2);
    for f in snap.feeds.values() {
        assert_eq!(f.request_mode(), pb::RequestMode::Ltpc);
        assert!(matches!(f.feed_union, Some(pb::feed::FeedUnion::Ltpc(_))));
    }
    let tick = next_tick(&mut ws).await;
    let Some(pb::feed::FeedUnion::Ltpc(eq)) = &tick.feeds["NSE_EQ|INE669E01016"].feed_union else {
        panic!("equity not in ltpc")
    };
    assert!(eq.ltp > 0.0 && eq.cp > 0.0 && eq.ltq > 0);
    let Some(pb::feed::FeedUnion::Ltpc(ix)) = &tick.feeds["NSE_INDEX|Nifty 50"].feed_union else {
        panic!("index not in ltpc")
    };
    assert_eq!(ix.ltq, 0, "indices have no traded quantity");
    assert!(tick.current_ts >= snap.current_ts);
}

#[tokio::test(start_paused = true)]
async fn full_mode_streams_five_levels_greeks_ohlc_and_index_full_feed() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request(
        "sub",
        Some("full"),
        &["NSE_FO|45450", "NSE_INDEX|Nifty Bank"],
    ))
    .await
    .unwrap();
    let snap = next_frame(&mut ws).await;
    assert_eq!(snap.r#type(), pb::Type::InitialFeed);
    let tick = next_tick(&mut ws).await;
    let opt = &tick.feeds["NSE_FO|45450"];
    assert_eq!(opt.request_mode(), pb::RequestMode::FullD5);
    let m = market_ff(opt);
    assert_eq!(m.market_level.as_ref().unwrap().bid_ask_quote.len(), 5);
    assert!(m.option_greeks.is_some());
    let ohlc = &m.market_ohlc.as_ref().unwrap().ohlc;
    assert_eq!(ohlc[0].interval, "1d");
    assert!(m.ltpc.is_some() && m.vtt > 0 && m.oi > 0.0);

    let index = &tick.feeds["NSE_INDEX|Nifty Bank"];
    assert_eq!(index.request_mode(), pb::RequestMode::FullD5);
    let Some(pb::feed::FeedUnion::FullFeed(pb::FullFeed {
        full_feed_union: Some(pb::full_feed::FullFeedUnion::IndexFf(ix)),
    })) = &index.feed_union
    else {
        panic!("index not in indexFF: {index:?}")
    };
    assert!(ix.ltpc.is_some() && ix.market_ohlc.is_some());
}

#[tokio::test(start_paused = true)]
async fn option_greeks_mode_streams_first_level_with_greeks() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", Some("option_greeks"), &["NSE_FO|45450"]))
        .await
        .unwrap();
    let tick = next_tick(&mut ws).await;
    let f = &tick.feeds["NSE_FO|45450"];
    assert_eq!(f.request_mode(), pb::RequestMode::OptionGreeks);
    let Some(pb::feed::FeedUnion::FirstLevelWithGreeks(g)) = &f.feed_union else {
        panic!("not firstLevelWithGreeks: {f:?}")
    };
    let depth = g.first_depth.unwrap();
    assert!(depth.bid_p < depth.ask_p);
    assert!(g.option_greeks.is_some() && g.ltpc.is_some());
}

#[tokio::test(start_paused = true)]
async fn change_mode_switches_the_shape_of_later_ticks() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", Some("ltpc"), &["NSE_FO|45450"]))
        .await
        .unwrap();
    next_frame(&mut ws).await; // snapshot
    ws.send(request("change_mode", Some("full"), &["NSE_FO|45450"]))
        .await
        .unwrap();
    // Ticks queued before the change may still be ltpc; the change's snapshot comes next
    // in full, and every tick after it is full.
    loop {
        let f = next_frame(&mut ws).await;
        if f.r#type() == pb::Type::InitialFeed {
            assert_eq!(
                f.feeds["NSE_FO|45450"].request_mode(),
                pb::RequestMode::FullD5
            );
            break;
        }
    }
    let tick = next_tick(&mut ws).await;
    assert_eq!(
        market_ff(&tick.feeds["NSE_FO|45450"])
            .market_level
            .as_ref()
            .unwrap()
            .bid_ask_quote
            .len(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn unsub_stops_ticks_and_the_idle_socket_gets_pings() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", None, &["NSE_EQ|INE669E01016"]))
        .await
        .unwrap();
    next_tick(&mut ws).await;
    ws.send(request("unsub", None, &["NSE_EQ|INE669E01016"]))
        .await
        .unwrap();
    // Ticks already in flight may arrive; once the first ping comes the unsub is done,
    // and from then on only pings arrive.
    loop {
        if let Message::Ping(_) = next_message(&mut ws).await {
            break;
        }
    }
    for _ in 0..3 {
        let m = next_message(&mut ws).await;
        assert!(matches!(m, Message::Ping(_)), "got {m:?} after unsub");
    }
}

#[tokio::test(start_paused = true)]
async fn authorized_code_works_once() {
    let feed = spawn_feed().await;
    let url = feed.authorized_url(NORMAL).await;
    let (ws, _) = connect(url.as_str()).await.unwrap();
    drop(ws);
    match connect(url.as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("second use of the code: {other:?}"),
    }
    let unknown = format!(
        "ws://{}/market-data-feeder/v3/upstox-developer-api/feeds?requestId=x&code=nope",
        feed.addr
    );
    match connect(unknown.as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("unknown code: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn direct_url_redirects_a_websocket_upgrade_with_302_to_a_fresh_code() {
    let feed = spawn_feed().await;
    let mut req = format!("ws://{}/v3/feed/market-data-feed", feed.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {NORMAL}").parse().unwrap());
    req.headers_mut().insert("Accept", "*/*".parse().unwrap());
    let location = match connect(req).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 302);
            resp.headers()["location"].to_str().unwrap().to_owned()
        }
        other => panic!("expected a 302: {other:?}"),
    };
    assert!(location.contains("/market-data-feeder/v3/upstox-developer-api/feeds?requestId="));
    let (mut ws, _) = connect(location.as_str()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await.r#type(), pb::Type::MarketInfo);

    // Without a valid token: the gateway's 401.
    let mut bad = format!("ws://{}/v3/feed/market-data-feed", feed.addr)
        .into_client_request()
        .unwrap();
    bad.headers_mut()
        .insert("Authorization", "Bearer wrong".parse().unwrap());
    match connect(bad).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn normal_plan_gets_two_live_connections_and_plus_five() {
    let feed = spawn_feed().await;
    let a = feed.open(NORMAL).await;
    let _b = feed.open(NORMAL).await;
    let url = feed.authorized_url(NORMAL).await;
    match connect(url.as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("third connection: {other:?}"),
    }
    // Counted live: closing one frees a place.
    let mut a = a;
    a.close(None).await.unwrap();
    while let Some(Ok(_)) = a.next().await {}
    let mut reopened = false;
    for _ in 0..200 {
        let url = feed.authorized_url(NORMAL).await;
        if let Ok((mut ws, _)) = connect(url.as_str()).await {
            assert_eq!(next_frame(&mut ws).await.r#type(), pb::Type::MarketInfo);
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reopened, "closing a connection did not free its place");

    let mut plus = Vec::new();
    for _ in 0..5 {
        plus.push(feed.open(PLUS).await);
    }
    let url = feed.authorized_url(PLUS).await;
    match connect(url.as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("sixth plus connection: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn full_d30_is_ignored_for_normal_plan_and_streams_30_levels_for_plus() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", Some("full_d30"), &["NSE_FO|45450"]))
        .await
        .unwrap();
    ws.send(request("sub", Some("ltpc"), &["NSE_FO|45451"]))
        .await
        .unwrap();
    // The d30 request was refused: the next snapshot is the ltpc one, and ticks carry
    // only the ltpc key.
    let snap = next_frame(&mut ws).await;
    assert_eq!(snap.r#type(), pb::Type::InitialFeed);
    assert_eq!(snap.feeds.keys().collect::<Vec<_>>(), ["NSE_FO|45451"]);
    let tick = next_tick(&mut ws).await;
    assert_eq!(tick.feeds.keys().collect::<Vec<_>>(), ["NSE_FO|45451"]);

    let mut ws = feed.open(PLUS).await;
    ws.send(request("sub", Some("full_d30"), &["NSE_FO|45450"]))
        .await
        .unwrap();
    let tick = next_tick(&mut ws).await;
    let f = &tick.feeds["NSE_FO|45450"];
    assert_eq!(f.request_mode(), pb::RequestMode::FullD30);
    assert_eq!(
        market_ff(f)
            .market_level
            .as_ref()
            .unwrap()
            .bid_ask_quote
            .len(),
        30
    );
}

#[tokio::test(start_paused = true)]
async fn drop_fault_cuts_the_connection_without_a_close_frame() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", None, &["NSE_EQ|INE669E01016"]))
        .await
        .unwrap();
    next_tick(&mut ws).await;
    feed.set_faults(FeedFaults {
        drop: true,
        ..FeedFaults::default()
    });
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => panic!("got a close frame {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn quiet_fault_keeps_the_socket_open_with_pings_only() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", None, &["NSE_EQ|INE669E01016"]))
        .await
        .unwrap();
    next_tick(&mut ws).await;
    feed.set_faults(FeedFaults {
        quiet: true,
        ..FeedFaults::default()
    });
    loop {
        if let Message::Ping(_) = next_message(&mut ws).await {
            break;
        }
    }
    for _ in 0..3 {
        let m = next_message(&mut ws).await;
        assert!(matches!(m, Message::Ping(_)), "quiet feed sent {m:?}");
    }
    feed.set_faults(FeedFaults::default());
    let tick = next_tick(&mut ws).await;
    assert!(
        tick.feeds.contains_key("NSE_EQ|INE669E01016"),
        "ticks resume after the quiet spell"
    );
}

#[tokio::test(start_paused = true)]
async fn stall_fault_keeps_the_socket_open_and_silent() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    ws.send(request("sub", None, &["NSE_EQ|INE669E01016"]))
        .await
        .unwrap();
    next_tick(&mut ws).await;
    feed.set_faults(FeedFaults {
        stall: true,
        ..FeedFaults::default()
    });
    // At most the tick already on its way, then nothing: no data and no pings.
    let _ = tokio::time::timeout(TICK / 2, ws.next()).await;
    let silent = tokio::time::timeout(TICK * 5, ws.next()).await;
    assert!(silent.is_err(), "stalled feed sent {silent:?}");
    feed.set_faults(FeedFaults::default());
    let tick = next_tick(&mut ws).await;
    assert!(tick.feeds.contains_key("NSE_EQ|INE669E01016"));
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_closes_its_sockets_with_1008() {
    let feed = spawn_feed().await;
    let mut ws = feed.open(NORMAL).await;
    let mut other = feed.open(PLUS).await;
    feed.host.revoked.lock().unwrap().push(NORMAL.into());
    loop {
        match next_message(&mut ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Message::Close(None) => panic!("closed without a code"),
            _ => continue,
        }
    }
    // Another user's socket carries on.
    assert!(matches!(next_message(&mut other).await, Message::Ping(_)));
    let events = feed.host.events.lock().unwrap().clone();
    assert!(events.contains(&FeedEvent::TokenClosed), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn connections_and_limit_refusals_are_reported_to_the_host() {
    let feed = spawn_feed().await;
    let _a = feed.open(NORMAL).await;
    let _b = feed.open(NORMAL).await;
    let url = feed.authorized_url(NORMAL).await;
    assert!(connect(url.as_str()).await.is_err());
    let events = feed.host.events.lock().unwrap().clone();
    let count = |e: FeedEvent| events.iter().filter(|x| **x == e).count();
    assert_eq!(count(FeedEvent::Opened), 2);
    assert_eq!(count(FeedEvent::RefusedLimit), 1);
}
