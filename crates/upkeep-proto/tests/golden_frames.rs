//! The golden frames were serialized by the official SDK's own generated classes, so they
//! check our `.proto` (written from the field table) against Upstox's schema.

#![allow(clippy::unwrap_used)] // tests and benches may unwrap (TEAM-BRIEF)

use std::path::PathBuf;

use prost::Message;
use upkeep_proto::feed::{FeedResponse, RequestMode, Type, feed, full_feed};
use upkeep_proto::sdk_json;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/feed")
}

/// Every `(name, frame bytes, SDK JSON)` in the fixture folder.
fn golden_frames() -> Vec<(String, Vec<u8>, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bin = std::fs::read(&path).unwrap();
        let json = std::fs::read_to_string(path.with_extension("json")).unwrap();
        out.push((name, bin, serde_json::from_str(&json).unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 7, "expected the seven golden frames");
    out
}

#[test]
fn every_golden_frame_decodes_to_the_sdk_json_exactly() {
    for (name, bin, want) in golden_frames() {
        let msg = FeedResponse::decode(bin.as_slice())
            .unwrap_or_else(|e| panic!("{name}: prost could not decode: {e}"));
        let got = sdk_json::feed_response(&msg);
        assert_eq!(got, want, "{name}: JSON view differs from the SDK's dict");
    }
}

#[test]
fn golden_frames_survive_a_prost_round_trip() {
    for (name, bin, _) in golden_frames() {
        let msg = FeedResponse::decode(bin.as_slice()).unwrap();
        let again = FeedResponse::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(msg, again, "{name}");
    }
}

#[test]
fn full_frame_carries_ten_options_with_five_levels_and_greeks() {
    let bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
    assert_eq!(bin.len(), 3299);
    let msg = FeedResponse::decode(bin.as_slice()).unwrap();
    assert_eq!(msg.r#type(), Type::LiveFeed);
    assert_eq!(msg.feeds.len(), 10);
    let f = &msg.feeds["NSE_FO|45450"];
    assert_eq!(f.request_mode(), RequestMode::FullD5);
    let Some(feed::FeedUnion::FullFeed(ff)) = &f.feed_union else {
        panic!("not a fullFeed")
    };
    let Some(full_feed::FullFeedUnion::MarketFf(m)) = &ff.full_feed_union else {
        panic!("not a marketFF")
    };
    assert_eq!(m.market_level.as_ref().unwrap().bid_ask_quote.len(), 5);
    assert_eq!(m.option_greeks.as_ref().unwrap().theta, -3.1);
    assert_eq!(m.ltpc.as_ref().unwrap().ltq, 75);
}

#[test]
fn preopen_frame_reads_the_cas_fields_and_the_iep_wrapper() {
    let bin = std::fs::read(fixtures_dir().join("live_full_preopen_cas.bin")).unwrap();
    let msg = FeedResponse::decode(bin.as_slice()).unwrap();
    let Some(feed::FeedUnion::FullFeed(ff)) = &msg.feeds["NSE_EQ|INE002A01018"].feed_union else {
        panic!("not a fullFeed")
    };
    let Some(full_feed::FullFeedUnion::MarketFf(m)) = &ff.full_feed_union else {
        panic!("not a marketFF")
    };
    assert_eq!(m.ltpc.as_ref().unwrap().iep, Some(1501.5));
    assert_eq!((m.iiq_total, m.iiq_m, m.ieq), (-4250, -1200, 182_340));
    assert!(m.cas_eligible);
}

#[test]
fn json_view_follows_message_to_dict_defaults() {
    // Defaults vanish; a present but empty message stays as {}; wrapper 0.0 is kept.
    let msg = FeedResponse {
        r#type: Type::InitialFeed as i32,
        current_ts: 0,
        feeds: [(
            "NSE_EQ|X".to_owned(),
            upkeep_proto::feed::Feed {
                request_mode: 0,
                feed_union: Some(feed::FeedUnion::Ltpc(upkeep_proto::feed::Ltpc {
                    ltp: f64::NAN,
                    ltq: -5,
                    iep: Some(0.0),
                    ..Default::default()
                })),
            },
        )]
        .into(),
        market_info: None,
    };
    let got = sdk_json::feed_response(&msg);
    assert_eq!(
        got,
        serde_json::json!({"feeds": {"NSE_EQ|X": {"ltpc": {"ltp": "NaN", "ltq": "-5", "iep": 0.0}}}})
    );
}

#[test]
fn unknown_enum_numbers_stay_numbers_in_json() {
    let msg = FeedResponse {
        r#type: 9,
        ..Default::default()
    };
    assert_eq!(
        sdk_json::feed_response(&msg),
        serde_json::json!({"type": 9})
    );
}
