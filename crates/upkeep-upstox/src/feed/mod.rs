//! Market Data Feed V3 codec: a fast zero-copy decoder of the server's protobuf
//! `FeedResponse` frames, the SDK's JSON view of them, and the client's JSON requests.
//!
//! ```
//! use upkeep_upstox::feed::{self, FeedRequest, SubscriptionMode};
//!
//! let req = FeedRequest::subscribe(SubscriptionMode::Full, ["NSE_INDEX|Nifty 50"]).with_guid("g1");
//! assert_eq!(
//!     String::from_utf8(req.to_bytes()).unwrap(),
//!     r#"{"guid":"g1","method":"sub","data":{"mode":"full","instrumentKeys":["NSE_INDEX|Nifty 50"]}}"#
//! );
//! let frame = feed::decode(&[0x08, 0x01, 0x18, 0x05]).unwrap(); // type=live_feed, currentTs=5
//! assert_eq!(frame.kind, feed::FeedType::LiveFeed);
//! assert_eq!(feed::to_sdk_json(&frame), serde_json::json!({"type": "live_feed", "currentTs": "5"}));
//! ```
//!
//! The decoder is hand-written over the wire format (no prost types, no per-field
//! allocation): on the 3,299-byte ten-option full-mode frame it runs several times faster
//! than prost into the generated types (see `benches/feed_decode.rs`).

mod decode;
mod json;
mod json_text;
mod parts;
mod request;
mod request_parse;
mod reshape;
mod types;
pub mod upstream;
mod wire;

pub use decode::{MAX_FEEDS, decode, frame_type};
pub use json::to_sdk_json;
pub use json_text::SdkJsonWriter;
pub use parts::{FeedPart, FrameParts, split, write_snapshot};
pub use request::{FeedMethod, FeedRequest, SubscriptionMode};
pub use request_parse::{MAX_REQUEST_BYTES, RequestParseError, authorize_answer};
pub use reshape::{needs_reshape, reshape};
pub use types::*;

/// Why a feed frame could not be decoded. The frame is not a well-formed `FeedResponse`:
/// drop it (and, if it keeps happening, reconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedDecodeError {
    /// A length or fixed-size value runs past the end of its message.
    #[error("feed frame is truncated: a field runs past the end of its message; drop the frame")]
    Truncated,
    /// A varint longer than 10 bytes, or overflowing 64 bits.
    #[error("feed frame has a malformed varint; drop the frame")]
    BadVarint,
    /// Field number 0 or a key beyond 32 bits.
    #[error("feed frame has an invalid field key; it is not a FeedResponse")]
    InvalidTag,
    /// Wire type 6 or 7.
    #[error("feed frame uses unknown protobuf wire type {0}; it is not a FeedResponse")]
    InvalidWireType(u8),
    /// An end-group key without its start, or with another field number.
    #[error("feed frame has an unbalanced group; it is not a FeedResponse")]
    UnbalancedGroup,
    /// Groups nested deeper than the decoder accepts.
    #[error("feed frame nests groups too deeply; drop the frame")]
    TooDeep,
    /// More instruments than [`MAX_FEEDS`] in one frame.
    #[error(
        "feed frame carries {0} instruments, more than the {MAX_FEEDS} any subscription allows; drop the frame"
    )]
    TooManyFeeds(usize),
    /// A `string` field (instrument key, interval, status) is not UTF-8.
    #[error("feed frame has a string field that is not UTF-8; drop the frame")]
    InvalidUtf8,
}
