//! The feed codec against the golden frames (serialized by the official SDK's generated
//! classes), against prost on generated messages, and against garbage.

#![allow(clippy::unwrap_used)] // tests and benches may unwrap (TEAM-BRIEF)

use std::path::PathBuf;

use proptest::prelude::*;
use prost::Message;
use upkeep_proto::feed as pb;
use upkeep_upstox::feed::{
    self, FeedData, FeedDecodeError, FeedRequest, FeedType, FullFeed, MarketStatus, RequestMode,
    SubscriptionMode,
};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/feed")
}

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
    assert_eq!(out.len(), 7, "expected the seven golden frames");
    out
}

/// serde_json's default float parser can be one ulp off on long literals such as Python's
/// `26031.850000000002`. Printing our value (shortest round-trip digits, like Python's
/// repr) and parsing it with the same parser as the fixture compares the digits exactly.
fn normalized(v: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

fn frame_json(bytes: &[u8]) -> serde_json::Value {
    feed::to_sdk_json(&feed::decode(bytes).unwrap())
}

#[test]
fn every_golden_frame_decodes_to_the_sdk_dict_exactly() {
    for (name, bin, want) in golden_frames() {
        let frame = feed::decode(&bin).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            normalized(&feed::to_sdk_json(&frame)),
            want,
            "{name}: JSON view differs from the SDK's dict"
        );
    }
}

#[test]
fn decoder_agrees_with_prost_on_every_golden_frame() {
    for (name, bin, _) in golden_frames() {
        let msg = pb::FeedResponse::decode(bin.as_slice()).unwrap();
        assert_eq!(
            frame_json(&bin),
            upkeep_proto::sdk_json::feed_response(&msg),
            "{name}"
        );
    }
}

#[test]
fn full_frame_reads_ten_options_with_depth_greeks_and_ohlc() {
    let bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
    let frame = feed::decode(&bin).unwrap();
    assert_eq!(frame.kind, FeedType::LiveFeed);
    assert_eq!(frame.current_ts, 1_740_729_566_039);
    assert_eq!(frame.feeds.len(), 10);
    let f = frame.feed("NSE_FO|45459").unwrap();
    assert_eq!(f.request_mode, RequestMode::FullD5);
    assert_eq!(f.ltpc().unwrap().ltp, 228.3);
    let Some(FeedData::Full(Some(FullFeed::Market(m)))) = &f.data else {
        panic!("not marketFF: {f:?}")
    };
    let depth = &m.market_level.as_ref().unwrap().bid_ask_quote;
    assert_eq!(depth.len(), 5);
    assert_eq!((depth[0].bid_q, depth[0].bid_p), (100, 219.0));
    assert_eq!((depth[4].ask_q, depth[4].ask_p), (94, 219.7));
    assert_eq!(m.option_greeks.unwrap().vega, 4.2);
    let candles = &m.market_ohlc.as_ref().unwrap().ohlc;
    assert_eq!(candles[0].interval, "1d");
    assert_eq!((candles[0].vol, candles[0].ts), (8031, 1_764_738_180_000));
    assert_eq!((m.vtt, m.tbq, m.tsq), (945_518, 5000.0, 4000.0));
}

#[test]
fn instrument_keys_borrow_from_the_frame_bytes() {
    let bin = std::fs::read(fixtures_dir().join("initial_ltpc.bin")).unwrap();
    let frame = feed::decode(&bin).unwrap();
    let range = bin.as_ptr_range();
    for (key, _) in &frame.feeds {
        assert!(range.contains(&key.as_ptr()), "{key} was copied");
    }
    assert_eq!(frame.kind, FeedType::InitialFeed);
}

#[test]
fn market_info_frame_reads_segment_cas_and_preopen_status() {
    let bin = std::fs::read(fixtures_dir().join("market_info.bin")).unwrap();
    let frame = feed::decode(&bin).unwrap();
    assert_eq!(frame.kind, FeedType::MarketInfo);
    let mi = frame.market_info.unwrap();
    assert!(
        mi.segment_status
            .contains(&("NSE_FO", MarketStatus::NormalOpen))
    );
    assert!(
        mi.segment_status
            .contains(&("BSE_EQ", MarketStatus::PreOpenEnd))
    );
    assert_eq!(mi.cas_market_status[0].0, "NSE_EQ");
    assert_eq!(mi.cas_market_status[0].1.status, "CAS_CLOSED");
    assert_eq!(
        mi.pre_open_session_status[0].1.updated_time,
        1_764_732_000_000
    );
}

#[test]
fn preopen_frame_reads_iep_wrapper_and_negative_imbalance() {
    let bin = std::fs::read(fixtures_dir().join("live_full_preopen_cas.bin")).unwrap();
    let frame = feed::decode(&bin).unwrap();
    let f = frame.feed("NSE_EQ|INE002A01018").unwrap();
    assert_eq!(f.ltpc().unwrap().iep, Some(1501.5));
    let Some(FeedData::Full(Some(FullFeed::Market(m)))) = &f.data else {
        panic!("not marketFF")
    };
    assert_eq!((m.iiq_total, m.iiq_m, m.ieq), (-4250, -1200, 182_340));
    assert!(m.cas_eligible);
}

#[test]
fn every_truncation_of_a_golden_frame_is_an_error_or_a_shorter_frame() {
    for (name, bin, _) in golden_frames() {
        for cut in 0..bin.len() {
            // Cutting between top-level fields leaves a valid (shorter) message; anywhere
            // else it must be an error. Either way: no panic, and the same verdict as prost.
            let ours = feed::decode(&bin[..cut]);
            let theirs = pb::FeedResponse::decode(&bin[..cut]);
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{name} cut at {cut}");
        }
    }
}

#[test]
fn known_field_with_unexpected_wire_type_is_skipped_like_upb() {
    // currentTs (field 3) sent as fixed64 instead of varint, then type=live_feed.
    let bytes = [0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x01];
    let frame = feed::decode(&bytes).unwrap();
    assert_eq!(frame.current_ts, 0);
    assert_eq!(frame.kind, FeedType::LiveFeed);
}

#[test]
fn unknown_fields_and_groups_are_skipped() {
    // field 9 varint, field 10 group containing field 1 varint, field 11 fixed32, then type.
    let bytes = [
        0x48, 0x05, 0x53, 0x08, 0x01, 0x54, 0x5d, 0, 0, 0, 0, 0x08, 0x02,
    ];
    assert_eq!(feed::decode(&bytes).unwrap().kind, FeedType::MarketInfo);
}

#[test]
fn malformed_frames_are_named_errors() {
    assert_eq!(feed::decode(&[0x08]), Err(FeedDecodeError::Truncated));
    assert_eq!(
        feed::decode(&[0x12, 0x05, 0x0a]),
        Err(FeedDecodeError::Truncated)
    );
    assert_eq!(
        feed::decode(&[0x0f]),
        Err(FeedDecodeError::InvalidWireType(7))
    );
    assert_eq!(
        feed::decode(&[0x00, 0x00]),
        Err(FeedDecodeError::InvalidTag)
    );
    assert_eq!(feed::decode(&[0x0c]), Err(FeedDecodeError::UnbalancedGroup));
    assert_eq!(
        feed::decode(
            &[0x08; 12]
                .iter()
                .copied()
                .map(|b| b | 0x80)
                .collect::<Vec<_>>()
        ),
        Err(FeedDecodeError::BadVarint)
    );
    // feeds entry whose key is not UTF-8
    assert_eq!(
        feed::decode(&[0x12, 0x03, 0x0a, 0x01, 0xff]),
        Err(FeedDecodeError::InvalidUtf8)
    );
}

#[test]
fn frame_with_more_instruments_than_any_subscription_is_refused() {
    // 2 bytes on the wire (an empty feeds entry) would become a few hundred in memory.
    let at_limit = [0x12u8, 0x00].repeat(feed::MAX_FEEDS);
    assert_eq!(
        feed::decode(&at_limit).unwrap().feeds.len(),
        feed::MAX_FEEDS
    );
    let over = [0x12u8, 0x00].repeat(feed::MAX_FEEDS + 1);
    assert_eq!(
        feed::decode(&over),
        Err(FeedDecodeError::TooManyFeeds(feed::MAX_FEEDS + 1))
    );
}

#[test]
fn repeated_map_key_keeps_the_last_entry_like_protobuf() {
    let entry = |ltp: f64| pb::Feed {
        request_mode: 0,
        feed_union: Some(pb::feed::FeedUnion::Ltpc(pb::Ltpc {
            ltp,
            ..Default::default()
        })),
    };
    let one = |ltp| {
        pb::FeedResponse {
            feeds: [("NSE_EQ|A".to_owned(), entry(ltp))].into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let bytes = [one(1.0), one(2.0)].concat();
    let frame = feed::decode(&bytes).unwrap();
    assert_eq!(frame.feed("NSE_EQ|A").unwrap().ltpc().unwrap().ltp, 2.0);
    assert_eq!(
        feed::to_sdk_json(&frame),
        serde_json::json!({"feeds": {"NSE_EQ|A": {"ltpc": {"ltp": 2.0}}}})
    );
}

#[test]
fn thirty_level_depth_spills_past_the_inline_five() {
    let quotes: Vec<pb::Quote> = (0..30)
        .map(|i| pb::Quote {
            bid_q: i + 1,
            bid_p: 100.0 - i as f64,
            ask_q: i + 2,
            ask_p: 101.0 + i as f64,
        })
        .collect();
    let msg = pb::FeedResponse {
        r#type: 1,
        feeds: [(
            "NSE_FO|1".to_owned(),
            pb::Feed {
                request_mode: 3,
                feed_union: Some(pb::feed::FeedUnion::FullFeed(pb::FullFeed {
                    full_feed_union: Some(pb::full_feed::FullFeedUnion::MarketFf(
                        pb::MarketFullFeed {
                            market_level: Some(pb::MarketLevel {
                                bid_ask_quote: quotes.clone(),
                            }),
                            ..Default::default()
                        },
                    )),
                })),
            },
        )]
        .into(),
        ..Default::default()
    };
    let bytes = msg.encode_to_vec();
    let frame = feed::decode(&bytes).unwrap();
    let f = frame.feed("NSE_FO|1").unwrap();
    assert_eq!(f.request_mode, RequestMode::FullD30);
    let Some(FeedData::Full(Some(FullFeed::Market(m)))) = &f.data else {
        panic!("not marketFF")
    };
    let depth = &m.market_level.as_ref().unwrap().bid_ask_quote;
    assert_eq!(depth.len(), 30);
    assert_eq!(depth[29].ask_p, 130.0);
    assert_eq!(depth[0].bid_q, 1);
}

#[test]
fn sub_request_is_the_sdk_json_with_mode_and_keys() {
    let req = FeedRequest::subscribe(
        SubscriptionMode::Full,
        ["NSE_INDEX|Nifty Bank", "NSE_FO|45450"],
    )
    .with_guid("13syxu852ztodyqncwt0");
    assert_eq!(
        String::from_utf8(req.to_bytes()).unwrap(),
        r#"{"guid":"13syxu852ztodyqncwt0","method":"sub","data":{"mode":"full","instrumentKeys":["NSE_INDEX|Nifty Bank","NSE_FO|45450"]}}"#
    );
}

#[test]
fn change_mode_and_unsub_requests_follow_the_sdk() {
    let change = FeedRequest::change_mode(SubscriptionMode::OptionGreeks, ["NSE_FO|1"]);
    let v: serde_json::Value = serde_json::from_slice(&change.to_bytes()).unwrap();
    assert_eq!(v["method"], "change_mode");
    assert_eq!(v["data"]["mode"], "option_greeks");
    let unsub = FeedRequest::unsubscribe(vec!["NSE_FO|1".to_owned()]);
    let v: serde_json::Value = serde_json::from_slice(&unsub.to_bytes()).unwrap();
    assert_eq!(v["method"], "unsub");
    assert!(
        v["data"].get("mode").is_none(),
        "unsub carries no mode: {v}"
    );
    assert_eq!(v["data"]["instrumentKeys"], serde_json::json!(["NSE_FO|1"]));
}

#[test]
fn request_guid_is_a_fresh_uuid_v4() {
    let a = FeedRequest::subscribe(SubscriptionMode::Ltpc, ["NSE_EQ|X"]);
    let b = FeedRequest::subscribe(SubscriptionMode::Ltpc, ["NSE_EQ|X"]);
    assert_ne!(a.guid(), b.guid());
    let g = a.guid();
    assert_eq!(g.len(), 36);
    assert_eq!(&g[14..15], "4");
    assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"), "{g}");
}

#[test]
fn request_keys_are_json_escaped() {
    let req = FeedRequest::unsubscribe([r#"NSE_EQ|we"ird\"#]).with_guid("g");
    let v: serde_json::Value = serde_json::from_slice(&req.to_bytes()).unwrap();
    assert_eq!(v["data"]["instrumentKeys"][0], r#"NSE_EQ|we"ird\"#);
}

#[test]
fn subscription_modes_map_to_response_modes() {
    for (mode, s, rm) in [
        (SubscriptionMode::Ltpc, "ltpc", RequestMode::Ltpc),
        (SubscriptionMode::Full, "full", RequestMode::FullD5),
        (
            SubscriptionMode::OptionGreeks,
            "option_greeks",
            RequestMode::OptionGreeks,
        ),
        (SubscriptionMode::FullD30, "full_d30", RequestMode::FullD30),
    ] {
        assert_eq!(mode.as_str(), s);
        assert_eq!(SubscriptionMode::parse(s), Some(mode));
        assert_eq!(mode.response_mode(), rm);
    }
    assert_eq!(SubscriptionMode::parse("full_d5"), None);
}

// ---- generated messages: the decoder must agree with prost, field for field ----

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
        1 => Just(0.0),
        1 => any::<f64>(),
    ]
}

fn any_i64() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0i64..2_000_000_000_000, 1 => Just(0i64), 1 => any::<i64>()]
}

fn any_ltpc() -> BoxedStrategy<pb::Ltpc> {
    (
        any_f64(),
        any_i64(),
        any_i64(),
        any_f64(),
        proptest::option::of(any_f64()),
    )
        .prop_map(|(ltp, ltt, ltq, cp, iep)| pb::Ltpc {
            ltp,
            ltt,
            ltq,
            cp,
            iep,
        })
        .boxed()
}

fn any_quote() -> BoxedStrategy<pb::Quote> {
    (any_i64(), any_f64(), any_i64(), any_f64())
        .prop_map(|(bid_q, bid_p, ask_q, ask_p)| pb::Quote {
            bid_q,
            bid_p,
            ask_q,
            ask_p,
        })
        .boxed()
}

fn any_greeks() -> BoxedStrategy<pb::OptionGreeks> {
    (any_f64(), any_f64(), any_f64(), any_f64(), any_f64())
        .prop_map(|(delta, theta, gamma, vega, rho)| pb::OptionGreeks {
            delta,
            theta,
            gamma,
            vega,
            rho,
        })
        .boxed()
}

fn any_ohlc() -> BoxedStrategy<pb::MarketOhlc> {
    proptest::collection::vec(
        (
            "(1d|I1|I30|)",
            any_f64(),
            any_f64(),
            any_f64(),
            any_f64(),
            any_i64(),
            any_i64(),
        )
            .prop_map(|(interval, open, high, low, close, vol, ts)| pb::Ohlc {
                interval,
                open,
                high,
                low,
                close,
                vol,
                ts,
            }),
        0..4,
    )
    .prop_map(|ohlc| pb::MarketOhlc { ohlc })
    .boxed()
}

fn any_market_ff() -> BoxedStrategy<pb::MarketFullFeed> {
    (
        (
            proptest::option::of(any_ltpc()),
            proptest::option::of(proptest::collection::vec(any_quote(), 0..32)),
            proptest::option::of(any_greeks()),
            proptest::option::of(any_ohlc()),
        ),
        (
            any_f64(),
            any_i64(),
            any_f64(),
            any_f64(),
            any_f64(),
            any_f64(),
        ),
        (
            any_f64(),
            any_f64(),
            any_i64(),
            any_i64(),
            any_i64(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (ltpc, depth, greeks, ohlc),
                (atp, vtt, oi, iv, tbq, tsq),
                (iep, rp, ieq, iiq_total, iiq_m, cas),
            )| {
                pb::MarketFullFeed {
                    ltpc,
                    market_level: depth.map(|bid_ask_quote| pb::MarketLevel { bid_ask_quote }),
                    option_greeks: greeks,
                    market_ohlc: ohlc,
                    atp,
                    vtt,
                    oi,
                    iv,
                    tbq,
                    tsq,
                    iep,
                    rp,
                    ieq,
                    iiq_total,
                    iiq_m,
                    cas_eligible: cas,
                }
            },
        )
        .boxed()
}

fn any_feed() -> BoxedStrategy<pb::Feed> {
    use pb::feed::FeedUnion;
    use pb::full_feed::FullFeedUnion;
    let union = prop_oneof![
        Just(None),
        any_ltpc().prop_map(|l| Some(FeedUnion::Ltpc(l))),
        any_market_ff().prop_map(|m| Some(FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: Some(FullFeedUnion::MarketFf(m))
        }))),
        (
            proptest::option::of(any_ltpc()),
            proptest::option::of(any_ohlc())
        )
            .prop_map(
                |(ltpc, market_ohlc)| Some(FeedUnion::FullFeed(pb::FullFeed {
                    full_feed_union: Some(FullFeedUnion::IndexFf(pb::IndexFullFeed {
                        ltpc,
                        market_ohlc
                    }))
                }))
            ),
        Just(Some(FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: None
        }))),
        (
            proptest::option::of(any_ltpc()),
            proptest::option::of(any_quote()),
            proptest::option::of(any_greeks()),
            any_i64(),
            any_f64(),
            any_f64()
        )
            .prop_map(|(ltpc, first_depth, option_greeks, vtt, oi, iv)| Some(
                FeedUnion::FirstLevelWithGreeks(pb::FirstLevelWithGreeks {
                    ltpc,
                    first_depth,
                    option_greeks,
                    vtt,
                    oi,
                    iv
                })
            )),
    ];
    (union, -1i32..6)
        .prop_map(|(feed_union, request_mode)| pb::Feed {
            request_mode,
            feed_union,
        })
        .boxed()
}

fn any_status_map() -> BoxedStrategy<std::collections::HashMap<String, pb::StatusInfo>> {
    proptest::collection::hash_map(
        "[A-Z_]{0,8}",
        ("[A-Z_]{0,10}", any_i64()).prop_map(|(status, updated_time)| pb::StatusInfo {
            status,
            updated_time,
        }),
        0..3,
    )
    .boxed()
}

fn any_response() -> BoxedStrategy<pb::FeedResponse> {
    let market_info = proptest::option::of(
        (
            proptest::collection::hash_map("[A-Z_]{0,9}", -1i32..7, 0..5),
            any_status_map(),
            any_status_map(),
        )
            .prop_map(
                |(segment_status, cas_market_status, pre_open_session_status)| pb::MarketInfo {
                    segment_status,
                    cas_market_status,
                    pre_open_session_status,
                },
            ),
    );
    (
        -1i32..4,
        proptest::collection::hash_map("[A-Z_]{3,9}\\|[A-Za-z0-9 ]{0,12}", any_feed(), 0..6),
        any_i64(),
        market_info,
    )
        .prop_map(
            |(r#type, feeds, current_ts, market_info)| pb::FeedResponse {
                r#type,
                feeds,
                current_ts,
                market_info,
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoder_matches_prost_on_generated_messages(msg in any_response()) {
        // The reference is prost's reading of the same bytes (prost's encoder drops -0.0).
        let bytes = msg.encode_to_vec();
        let theirs = pb::FeedResponse::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(frame_json(&bytes), upkeep_proto::sdk_json::feed_response(&theirs));
    }

    #[test]
    fn concatenated_messages_merge_like_prost(a in any_response(), b in any_response()) {
        // Protobuf: the concatenation of two encodings parses as their merge.
        let bytes = [a.encode_to_vec(), b.encode_to_vec()].concat();
        let merged = pb::FeedResponse::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(frame_json(&bytes), upkeep_proto::sdk_json::feed_response(&merged));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(frame) = feed::decode(&bytes) {
            let _ = feed::to_sdk_json(&frame);
        }
    }

    #[test]
    fn mutated_golden_frames_never_panic(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut frames = golden_frames();
        let mut bytes = frames.swap_remove(which).1;
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(frame) = feed::decode(&bytes) {
            let _ = feed::to_sdk_json(&frame);
        }
    }
}

// ---- the JSON text writer: byte for byte what serde_json writes for to_sdk_json ----

fn old_text(bytes: &[u8]) -> String {
    serde_json::to_string(&frame_json(bytes)).unwrap()
}

#[test]
fn json_writer_is_byte_identical_to_the_value_path_on_every_golden_frame() {
    let mut w = feed::SdkJsonWriter::new();
    for (name, bin, want) in golden_frames() {
        let frame = feed::decode(&bin).unwrap();
        let text = w.render(&frame).to_owned();
        assert_eq!(text, old_text(&bin), "{name}");
        // and it still is the SDK's dict
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            normalized(&want),
            "{name}"
        );
    }
}

#[test]
fn json_writer_filter_keeps_only_the_wanted_instruments() {
    let bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
    let frame = feed::decode(&bin).unwrap();
    let mut w = feed::SdkJsonWriter::new();
    let (text, kept) = w.render_filtered(&frame, |k| k == "NSE_FO|45459");
    assert_eq!(kept, 1);
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut want = frame_json(&bin);
    want["feeds"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "NSE_FO|45459");
    assert_eq!(v, want);
    let (text, kept) = w.render_filtered(&frame, |_| false);
    assert_eq!(kept, 0);
    assert_eq!(text, r#"{"currentTs":"1740729566039","type":"live_feed"}"#);
}

#[test]
fn json_writer_escapes_keys_like_serde_json() {
    let msg = pb::FeedResponse {
        feeds: [(
            "NSE_EQ|a\"b\\c\u{1}\n\u{7f}é".to_owned(),
            pb::Feed::default(),
        )]
        .into(),
        ..Default::default()
    };
    let bytes = msg.encode_to_vec();
    let frame = feed::decode(&bytes).unwrap();
    assert_eq!(feed::SdkJsonWriter::new().render(&frame), old_text(&bytes));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_writer_matches_the_value_path_on_generated_messages(
        a in any_response(),
        b in any_response(),
    ) {
        // The concatenation repeats map keys, so "last one wins" is exercised too.
        let bytes = [a.encode_to_vec(), b.encode_to_vec()].concat();
        let frame = feed::decode(&bytes).unwrap();
        let mut w = feed::SdkJsonWriter::new();
        prop_assert_eq!(w.render(&frame), old_text(&bytes));
    }
}

// ---- wire-level split / filter / snapshot (the relay's fan-out) ----

#[test]
fn filtered_frame_decodes_to_the_same_frame_with_only_the_kept_instruments() {
    for (name, bin, _) in golden_frames() {
        let parts = feed::split(&bin).unwrap();
        let whole = feed::decode(&bin).unwrap();
        assert_eq!(parts.feeds.len(), whole.feeds.len(), "{name}");
        assert_eq!(parts.kind, whole.kind, "{name}");
        assert_eq!(parts.current_ts, whole.current_ts, "{name}");
        assert_eq!(parts.has_market_info, whole.market_info.is_some(), "{name}");
        for (p, (k, f)) in parts.feeds.iter().zip(&whole.feeds) {
            assert_eq!((p.key, p.mode), (*k, f.request_mode), "{name}");
        }
        // every other instrument
        let mut out = Vec::new();
        parts.write_filtered(|i, _| i % 2 == 0, &mut out);
        let got = feed::decode(&out).unwrap();
        let mut want = whole.clone();
        want.feeds = whole.feeds.iter().step_by(2).cloned().collect();
        assert_eq!(feed::to_sdk_json(&got), feed::to_sdk_json(&want), "{name}");
    }
}

#[test]
fn snapshot_frame_carries_the_kept_entries_with_type_and_time() {
    let bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
    let parts = feed::split(&bin).unwrap();
    let mut out = Vec::new();
    feed::write_snapshot(
        FeedType::InitialFeed,
        42,
        parts.feeds.iter().take(3).map(|p| p.field),
        &mut out,
    );
    let snap = feed::decode(&out).unwrap();
    assert_eq!(snap.kind, FeedType::InitialFeed);
    assert_eq!(snap.current_ts, 42);
    assert_eq!(snap.feeds.len(), 3);
    assert_eq!(
        snap.feeds[0],
        feed::decode(&bin).unwrap().feeds[0],
        "entry bytes kept as they came"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn split_and_rejoin_keeps_every_generated_message(msg in any_response()) {
        let bytes = msg.encode_to_vec();
        let parts = feed::split(&bytes).unwrap();
        let mut out = Vec::new();
        parts.write_filtered(|_, _| true, &mut out);
        prop_assert_eq!(frame_json(&out), frame_json(&bytes));
    }

    #[test]
    fn split_never_panics_on_mutated_frames(cut in 0usize..3299, byte in any::<u8>()) {
        let mut bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
        if let Some(b) = bin.get_mut(cut) { *b = byte; }
        let _ = feed::split(&bin);
    }
}

// ---- reshaping a richer entry for a consumer that asked for less ----

/// What Upstox sends for `src` (streamed in its `request_mode`) in mode `want`: the
/// reading of the field table this test holds the wire-level reshaper to.
fn shaped_as(src: &pb::Feed, want: SubscriptionMode) -> pb::Feed {
    use pb::feed::FeedUnion;
    use pb::full_feed::FullFeedUnion;
    let rank = |m: i32| match m {
        0 => Some(0),
        2 => Some(1),
        1 => Some(2),
        3 => Some(3),
        _ => None,
    };
    let want_mode = want.response_mode().number();
    let richer = matches!((rank(src.request_mode), rank(want_mode)), (Some(h), Some(w)) if h > w);
    if !richer {
        return src.clone();
    }
    let market = match &src.feed_union {
        Some(FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: Some(FullFeedUnion::MarketFf(m)),
        })) => Some(m),
        _ => None,
    };
    let index = match &src.feed_union {
        Some(FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: Some(FullFeedUnion::IndexFf(i)),
        })) => Some(i),
        _ => None,
    };
    let union = match want {
        SubscriptionMode::Ltpc => {
            let ltpc = match &src.feed_union {
                Some(FeedUnion::Ltpc(l)) => Some(*l),
                Some(FeedUnion::FirstLevelWithGreeks(g)) => g.ltpc,
                _ => market.and_then(|m| m.ltpc).or(index.and_then(|i| i.ltpc)),
            };
            FeedUnion::Ltpc(ltpc.unwrap_or_default())
        }
        SubscriptionMode::OptionGreeks if market.is_some() => {
            let m = market.unwrap();
            FeedUnion::FirstLevelWithGreeks(pb::FirstLevelWithGreeks {
                ltpc: m.ltpc,
                first_depth: m
                    .market_level
                    .as_ref()
                    .and_then(|l| l.bid_ask_quote.first().copied()),
                option_greeks: m.option_greeks,
                vtt: m.vtt,
                oi: m.oi,
                iv: m.iv,
            })
        }
        SubscriptionMode::OptionGreeks if index.is_some() => {
            FeedUnion::FirstLevelWithGreeks(pb::FirstLevelWithGreeks {
                ltpc: index.unwrap().ltpc,
                ..Default::default()
            })
        }
        SubscriptionMode::Full if market.is_some() => {
            let mut m = market.unwrap().clone();
            if let Some(l) = m.market_level.as_mut() {
                l.bid_ask_quote.truncate(5);
            }
            FeedUnion::FullFeed(pb::FullFeed {
                full_feed_union: Some(FullFeedUnion::MarketFf(m)),
            })
        }
        SubscriptionMode::Full if index.is_some() => FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: Some(FullFeedUnion::IndexFf(index.unwrap().clone())),
        }),
        _ => return src.clone(),
    };
    pb::Feed {
        request_mode: want_mode,
        feed_union: Some(union),
    }
}

fn reshaped_by_the_relay(src: &pb::Feed, want: SubscriptionMode) -> pb::Feed {
    let msg = pb::FeedResponse {
        r#type: 1,
        feeds: [("NSE_FO|45450".to_owned(), src.clone())].into(),
        current_ts: 7,
        market_info: None,
    };
    let bytes = msg.encode_to_vec();
    let parts = feed::split(&bytes).unwrap();
    let p = parts.feeds[0];
    let mut field = Vec::new();
    if feed::needs_reshape(p.mode, want) {
        feed::reshape(p.field, want, &mut field).unwrap();
    } else {
        field.extend_from_slice(p.field);
    }
    let mut out = Vec::new();
    feed::write_snapshot(FeedType::LiveFeed, 7, [field.as_slice()], &mut out);
    let mut got = pb::FeedResponse::decode(out.as_slice()).unwrap();
    assert_eq!(got.feeds.len(), 1);
    got.feeds.remove("NSE_FO|45450").unwrap()
}

#[test]
fn a_full_d30_option_reshaped_for_each_poorer_mode_is_that_modes_golden_shape() {
    // The golden full frame's first option, as if streamed in full_d30 with 30 levels.
    let bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
    let golden = pb::FeedResponse::decode(bin.as_slice()).unwrap();
    let (_, mut src) = golden
        .feeds
        .into_iter()
        .min_by(|a, b| a.0.cmp(&b.0))
        .unwrap();
    src.request_mode = 3;
    if let Some(pb::feed::FeedUnion::FullFeed(pb::FullFeed {
        full_feed_union: Some(pb::full_feed::FullFeedUnion::MarketFf(m)),
    })) = src.feed_union.as_mut()
    {
        let level = m.market_level.as_mut().unwrap();
        let five = level.bid_ask_quote.clone();
        while level.bid_ask_quote.len() < 30 {
            level.bid_ask_quote.extend(five.iter().copied());
        }
        level.bid_ask_quote.truncate(30);
    }
    for want in [
        SubscriptionMode::Ltpc,
        SubscriptionMode::OptionGreeks,
        SubscriptionMode::Full,
        SubscriptionMode::FullD30,
    ] {
        let got = reshaped_by_the_relay(&src, want);
        assert_eq!(got, shaped_as(&src, want), "{want:?}");
        let json = upkeep_proto::sdk_json::feed_response(&pb::FeedResponse {
            feeds: [("K|1".to_owned(), got.clone())].into(),
            ..Default::default()
        })["feeds"]["K|1"]
            .clone();
        match want {
            SubscriptionMode::Ltpc => {
                assert!(json.get("requestMode").is_none(), "{json}");
                assert!(json["ltpc"]["ltp"].is_number(), "{json}");
                assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
            }
            SubscriptionMode::OptionGreeks => {
                assert_eq!(json["requestMode"], "option_greeks");
                let g = &json["firstLevelWithGreeks"];
                assert!(g["firstDepth"]["bidP"].is_number(), "{json}");
                assert!(g["optionGreeks"]["delta"].is_number(), "{json}");
            }
            SubscriptionMode::Full => {
                assert_eq!(json["requestMode"], "full_d5");
                let q = &json["fullFeed"]["marketFF"]["marketLevel"]["bidAskQuote"];
                assert_eq!(q.as_array().unwrap().len(), 5, "{json}");
            }
            SubscriptionMode::FullD30 => assert_eq!(got, src),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reshaped_entries_match_the_field_table_on_generated_feeds(
        src in any_feed(),
        mode in 0i32..4,
        want in 0usize..4,
    ) {
        let want = [
            SubscriptionMode::Ltpc,
            SubscriptionMode::OptionGreeks,
            SubscriptionMode::Full,
            SubscriptionMode::FullD30,
        ][want];
        let src = pb::Feed { request_mode: mode, ..src };
        let got = reshaped_by_the_relay(&src, want);
        // Compared as prost's canonical bytes (NaN-safe).
        prop_assert_eq!(got.encode_to_vec(), shaped_as(&src, want).encode_to_vec());
    }

    #[test]
    fn reshape_never_panics_on_mutated_entries(cut in 0usize..400, byte in any::<u8>(), want in 0usize..3) {
        let bin = std::fs::read(fixtures_dir().join("live_full_d5_10.bin")).unwrap();
        let parts = feed::split(&bin).unwrap();
        let mut field = parts.feeds[0].field.to_vec();
        if let Some(b) = field.get_mut(cut) { *b = byte; }
        let want = [SubscriptionMode::Ltpc, SubscriptionMode::OptionGreeks, SubscriptionMode::Full][want];
        let _ = feed::reshape(&field, want, &mut Vec::new());
    }
}

#[test]
fn client_requests_parse_back_from_what_the_sdk_sends() {
    for req in [
        FeedRequest::subscribe(SubscriptionMode::Full, ["NSE_EQ|A", "NSE_FO|1"]),
        FeedRequest::change_mode(SubscriptionMode::OptionGreeks, ["NSE_FO|1"]),
        FeedRequest::unsubscribe(["NSE_EQ|A"]),
    ] {
        assert_eq!(FeedRequest::parse(&req.to_bytes()).unwrap(), req);
    }
    let sub = FeedRequest::parse(
        br#"{"guid":"g","method":"sub","data":{"instrumentKeys":["NSE_EQ|A"]}}"#,
    )
    .unwrap();
    assert_eq!(
        sub.mode(),
        Some(SubscriptionMode::Ltpc),
        "sub defaults to ltpc"
    );
}

#[test]
fn bad_client_requests_are_named_errors() {
    use feed::RequestParseError as E;
    assert!(matches!(
        FeedRequest::parse(b"not json"),
        Err(E::Malformed(_))
    ));
    assert_eq!(
        FeedRequest::parse(br#"{"method":"subscribe","data":{}}"#),
        Err(E::UnknownMethod("subscribe".into()))
    );
    assert_eq!(
        FeedRequest::parse(br#"{"method":"sub","data":{"mode":"full_d5"}}"#),
        Err(E::UnknownMode("full_d5".into()))
    );
    assert_eq!(
        FeedRequest::parse(br#"{"method":"change_mode","data":{"instrumentKeys":["A|B"]}}"#),
        Err(E::MissingMode("change_mode"))
    );
    assert_eq!(
        FeedRequest::parse(&vec![b' '; feed::MAX_REQUEST_BYTES + 1]),
        Err(E::TooLarge)
    );
}
