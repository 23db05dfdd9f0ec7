//! The feed of the whole simulator: market status from the simulator's clock and
//! calendar, and the snapshot type setting (issue 12, item 7).

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;
use upkeep_proto::feed as pb;
use upkeep_sim::SnapshotType;

use crate::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_feed(sim: &TestSim) -> Ws {
    let token = sim.daily_token();
    let (status, _, body) = parts(
        sim.get_with("/v3/feed/market-data-feed/authorize", &token)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["authorized_redirect_uri"].as_str().unwrap();
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

async fn next_frame(ws: &mut Ws) -> pb::FeedResponse {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("no websocket error");
        match msg {
            Message::Binary(b) => return pb::FeedResponse::decode(b.as_ref()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

async fn status_at(config: SimConfig, at: Timestamp) -> std::collections::HashMap<String, i32> {
    let sim = TestSim::start_with(config).await;
    sim.clock().set(at);
    let mut ws = open_feed(&sim).await;
    let first = next_frame(&mut ws).await;
    assert_eq!(first.r#type(), pb::Type::MarketInfo);
    first.market_info.unwrap().segment_status
}

#[tokio::test]
async fn market_status_follows_the_simulator_clock() {
    use pb::MarketStatus as S;
    // Thursday 2026-02-05.
    for ((h, m, s), eq, fo) in [
        ((9, 7, 59), S::PreOpenStart, S::NormalClose),
        ((9, 14, 59), S::PreOpenEnd, S::NormalClose),
        ((9, 15, 0), S::NormalOpen, S::NormalOpen),
        ((15, 30, 0), S::NormalClose, S::NormalClose),
        ((15, 45, 0), S::ClosingStart, S::NormalClose),
    ] {
        let seg = status_at(config(), ist(2026, 2, 5, h, m, s)).await;
        assert_eq!(seg["NSE_EQ"], eq as i32, "{h}:{m}:{s}");
        assert_eq!(seg["NSE_FO"], fo as i32, "{h}:{m}:{s}");
    }
}

#[tokio::test]
async fn market_status_is_closed_on_weekends_and_configured_holidays() {
    let closed = pb::MarketStatus::NormalClose as i32;
    // Sunday 2026-02-08 at 11:00 IST.
    let seg = status_at(config(), ist(2026, 2, 8, 11, 0, 0)).await;
    assert!(seg.values().all(|s| *s == closed), "{seg:?}");
    // A holiday on a Thursday.
    let mut holiday = config();
    holiday.market_holidays = vec![jiff::civil::date(2026, 2, 5)];
    let seg = status_at(holiday, ist(2026, 2, 5, 11, 0, 0)).await;
    assert!(seg.values().all(|s| *s == closed), "{seg:?}");
    // The same hour of a normal Thursday is open.
    let seg = status_at(config(), ist(2026, 2, 5, 11, 0, 0)).await;
    assert_eq!(seg["NSE_EQ"], pb::MarketStatus::NormalOpen as i32);
}

#[tokio::test]
async fn market_status_follows_the_calendars_special_sessions() {
    use pb::MarketStatus as S;
    // The default calendar's budget day, Saturday 2026-02-07: NSE trades 09:15-15:30,
    // currency derivatives stay closed.
    let seg = status_at(config(), ist(2026, 2, 7, 11, 0, 0)).await;
    assert_eq!(seg["NSE_EQ"], S::NormalOpen as i32, "{seg:?}");
    assert_eq!(seg["NSE_FO"], S::NormalOpen as i32, "{seg:?}");
    assert_eq!(seg["NCD_FO"], S::NormalClose as i32, "{seg:?}");
    // Muhurat trading, Friday 2026-11-06: closed by day, open 18:00-19:00.
    let seg = status_at(config(), ist(2026, 11, 6, 11, 0, 0)).await;
    assert_eq!(seg["NSE_EQ"], S::NormalClose as i32, "{seg:?}");
    let seg = status_at(config(), ist(2026, 11, 6, 18, 30, 0)).await;
    assert_eq!(seg["NSE_EQ"], S::NormalOpen as i32, "{seg:?}");
    assert_eq!(seg["BSE_EQ"], S::NormalOpen as i32, "{seg:?}");
}

#[tokio::test]
async fn the_snapshot_type_is_a_setting() {
    for (setting, want) in [
        (SnapshotType::InitialFeed, pb::Type::InitialFeed),
        (SnapshotType::LiveFeed, pb::Type::LiveFeed),
    ] {
        let mut config = config();
        config.feed_snapshot_type = setting;
        let sim = TestSim::start_with(config).await;
        let mut ws = open_feed(&sim).await;
        next_frame(&mut ws).await; // market_info
        let request = serde_json::json!({
            "guid": "g1",
            "method": "sub",
            "data": {"mode": "ltpc", "instrumentKeys": ["NSE_EQ|INE848E01016"]},
        });
        ws.send(Message::binary(request.to_string().into_bytes()))
            .await
            .unwrap();
        let snapshot = next_frame(&mut ws).await;
        assert_eq!(snapshot.r#type(), want, "{setting:?}");
        assert!(snapshot.feeds.contains_key("NSE_EQ|INE848E01016"));
    }
}
