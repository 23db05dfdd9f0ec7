//! Market Data Feed V3 frames: `upkeep_upstox::feed::decode` (the hand-written zero-copy
//! decoder) on arbitrary bytes, its SDK JSON view, and a differential check against prost
//! decoding the same bytes into the generated `upkeep_proto` types, rendered by the
//! independent `upkeep_proto::sdk_json` (the oracle of `tests/feed_codec.rs`).
//!
//! Where both accept a frame, the two JSON views must be equal. Accepted divergences,
//! both deliberate in the decoder:
//! - the decoder skips a known field sent with an unexpected wire type (as the SDK's upb
//!   runtime does) where prost rejects the message ("invalid wire type");
//! - the decoder refuses frames with more than `MAX_FEEDS` instruments or unknown groups
//!   nested deeper than it accepts, which prost would read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use upkeep_proto::feed as pb;
use upkeep_upstox::feed::{self, FeedDecodeError};

fuzz_target!(|data: &[u8]| {
    let ours = feed::decode(data);
    if let Ok(frame) = &ours {
        let _ = feed::to_sdk_json(frame);
        for (key, f) in &frame.feeds {
            assert!(frame.feed(key).is_some());
            let _ = f.ltpc();
        }
        assert!(frame.feeds.len() <= feed::MAX_FEEDS);
    }
    let theirs = pb::FeedResponse::decode(data);
    match (&ours, &theirs) {
        (Ok(frame), Ok(msg)) => {
            let a = feed::to_sdk_json(frame);
            let b = upkeep_proto::sdk_json::feed_response(msg);
            assert!(a == b, "decoder and prost disagree:\n ours  {a}\n prost {b}");
        }
        (Ok(_), Err(e)) => {
            let why = e.to_string();
            assert!(
                why.contains("invalid wire type"),
                "decoder accepted a frame prost rejects for another reason: {why}"
            );
        }
        (Err(e), Ok(_)) => {
            assert!(
                matches!(e, FeedDecodeError::TooManyFeeds(_) | FeedDecodeError::TooDeep),
                "decoder rejected ({e:?}) a frame prost reads"
            );
        }
        (Err(_), Err(_)) => {}
    }
});
