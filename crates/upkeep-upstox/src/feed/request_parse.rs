//! Reading a client's request (what the SDK sends to Upstox), for the relay that stands in
//! for the feed: `{"guid", "method": "sub"|"unsub"|"change_mode", "data": {"mode",
//! "instrumentKeys"}}`. `sub` without a mode means `ltpc` (reference 7.3).

use serde::Deserialize;

use super::{FeedRequest, SubscriptionMode};

/// Largest request accepted (bytes); 5,000 keys of ~30 bytes fit.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Why a client's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestParseError {
    #[error(
        "feed request is larger than {MAX_REQUEST_BYTES} bytes; split the keys over several requests"
    )]
    TooLarge,
    #[error(
        "feed request is not the JSON Upstox expects ({0}); send {{\"guid\",\"method\",\"data\":{{\"mode\",\"instrumentKeys\"}}}}"
    )]
    Malformed(String),
    #[error("feed request method {0:?} is unknown; use sub, unsub or change_mode")]
    UnknownMethod(String),
    #[error("feed request mode {0:?} is unknown; use ltpc, full, option_greeks or full_d30")]
    UnknownMode(String),
    #[error("feed request {0} needs a mode")]
    MissingMode(&'static str),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    guid: Option<String>,
    method: String,
    #[serde(default)]
    data: RawData,
}

#[derive(Deserialize, Default)]
struct RawData {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, rename = "instrumentKeys")]
    instrument_keys: Vec<String>,
}

impl FeedRequest {
    /// Reads a request as a client sends it (text or binary frame, UTF-8 JSON).
    pub fn parse(bytes: &[u8]) -> Result<Self, RequestParseError> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(RequestParseError::TooLarge);
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| {
            // serde's message names the field or position, never echoes the input at length.
            let mut m = e.to_string();
            m.truncate(160);
            RequestParseError::Malformed(m)
        })?;
        let mode = match raw.data.mode.as_deref() {
            None => None,
            Some(m) => Some(
                SubscriptionMode::parse(m)
                    .ok_or_else(|| RequestParseError::UnknownMode(m.chars().take(32).collect()))?,
            ),
        };
        let keys = raw.data.instrument_keys;
        let req = match raw.method.as_str() {
            "sub" => FeedRequest::subscribe(mode.unwrap_or(SubscriptionMode::Ltpc), keys),
            "change_mode" => FeedRequest::change_mode(
                mode.ok_or(RequestParseError::MissingMode("change_mode"))?,
                keys,
            ),
            "unsub" => FeedRequest::unsubscribe(keys),
            other => {
                return Err(RequestParseError::UnknownMethod(
                    other.chars().take(32).collect(),
                ));
            }
        };
        Ok(match raw.guid {
            Some(g) => req.with_guid(g),
            None => req,
        })
    }
}

/// The body of Upstox's answer to `GET /v3/feed/market-data-feed/authorize` for a
/// single-use socket URL, with both spellings of the key (docs: `authorized_redirect_uri`;
/// the SDK's model: `authorizedRedirectUri`), for a relay that stands in for Upstox.
pub fn authorize_answer(url: &str) -> serde_json::Value {
    serde_json::json!({
        "status": "success",
        "data": {
            "authorized_redirect_uri": url,
            "authorizedRedirectUri": url,
        }
    })
}
