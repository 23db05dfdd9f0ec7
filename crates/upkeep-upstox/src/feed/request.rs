//! Client -> server requests: JSON sent in a BINARY WebSocket frame.
//!
//! `{"guid":"<uuid>","method":"sub","data":{"mode":"full","instrumentKeys":["NSE_INDEX|Nifty 50"]}}`
//! (`unsub` carries no `mode`, as the official SDK sends it).

use serde_json::{Map, Value};

use super::types::RequestMode;

/// A subscription mode as requests spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionMode {
    /// `ltpc`: last price, time, quantity, close (the server's default for `sub`).
    Ltpc,
    /// `full`: LTPC, 5 depth levels, greeks, OHLC; answered as `requestMode` `full_d5`.
    Full,
    /// `option_greeks`: greeks plus first-level depth.
    OptionGreeks,
    /// `full_d30`: like full with 30 levels (Upstox Plus only).
    FullD30,
}

impl SubscriptionMode {
    /// The request spelling: `"ltpc"`, `"full"`, `"option_greeks"`, `"full_d30"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ltpc => "ltpc",
            Self::Full => "full",
            Self::OptionGreeks => "option_greeks",
            Self::FullD30 => "full_d30",
        }
    }

    /// Parses the request spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ltpc" => Some(Self::Ltpc),
            "full" => Some(Self::Full),
            "option_greeks" => Some(Self::OptionGreeks),
            "full_d30" => Some(Self::FullD30),
            _ => None,
        }
    }

    /// The `requestMode` the server reports for keys subscribed in this mode.
    pub fn response_mode(self) -> RequestMode {
        match self {
            Self::Ltpc => RequestMode::Ltpc,
            Self::Full => RequestMode::FullD5,
            Self::OptionGreeks => RequestMode::OptionGreeks,
            Self::FullD30 => RequestMode::FullD30,
        }
    }
}

/// `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedMethod {
    /// `sub`.
    Sub,
    /// `change_mode`.
    ChangeMode,
    /// `unsub`.
    Unsub,
}

impl FeedMethod {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sub => "sub",
            Self::ChangeMode => "change_mode",
            Self::Unsub => "unsub",
        }
    }
}

/// One subscription request. Build it, then send [`FeedRequest::to_bytes`] as a binary frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRequest {
    guid: String,
    method: FeedMethod,
    mode: Option<SubscriptionMode>,
    instrument_keys: Vec<String>,
}

impl FeedRequest {
    /// `sub`: start streaming `keys` in `mode`.
    pub fn subscribe<I, S>(mode: SubscriptionMode, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(FeedMethod::Sub, Some(mode), keys)
    }

    /// `change_mode`: switch already subscribed `keys` to `mode`.
    pub fn change_mode<I, S>(mode: SubscriptionMode, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(FeedMethod::ChangeMode, Some(mode), keys)
    }

    /// `unsub`: stop streaming `keys` (no mode, as the SDK sends it).
    pub fn unsubscribe<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(FeedMethod::Unsub, None, keys)
    }

    fn new<I, S>(method: FeedMethod, mode: Option<SubscriptionMode>, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            guid: random_guid(),
            method,
            mode,
            instrument_keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    /// Replaces the random request id (a UUID v4 by default).
    pub fn with_guid(mut self, guid: impl Into<String>) -> Self {
        self.guid = guid.into();
        self
    }

    /// The request id.
    pub fn guid(&self) -> &str {
        &self.guid
    }

    /// The method.
    pub fn method(&self) -> FeedMethod {
        self.method
    }

    /// The mode (`None` for `unsub`).
    pub fn mode(&self) -> Option<SubscriptionMode> {
        self.mode
    }

    /// The instrument keys.
    pub fn instrument_keys(&self) -> &[String] {
        &self.instrument_keys
    }

    /// The request as a JSON value.
    pub fn to_json(&self) -> Value {
        let mut data = Map::new();
        if let Some(mode) = self.mode {
            data.insert("mode".into(), Value::String(mode.as_str().into()));
        }
        data.insert(
            "instrumentKeys".into(),
            Value::Array(
                self.instrument_keys
                    .iter()
                    .map(|k| Value::String(k.clone()))
                    .collect(),
            ),
        );
        let mut o = Map::new();
        o.insert("guid".into(), Value::String(self.guid.clone()));
        o.insert("method".into(), Value::String(self.method.as_str().into()));
        o.insert("data".into(), Value::Object(data));
        Value::Object(o)
    }

    /// The UTF-8 JSON bytes to send in a BINARY WebSocket frame (the server wants binary,
    /// not text). Keys come in the SDK's order: `guid`, `method`, `data` (`mode`,
    /// `instrumentKeys`).
    pub fn to_bytes(&self) -> Vec<u8> {
        // serde_json's Display for a string value escapes it and cannot fail.
        let quoted = |s: &str| Value::String(s.to_owned()).to_string();
        let mut out = String::with_capacity(64 + self.instrument_keys.len() * 24);
        out.push_str("{\"guid\":");
        out.push_str(&quoted(&self.guid));
        out.push_str(",\"method\":\"");
        out.push_str(self.method.as_str());
        out.push_str("\",\"data\":{");
        if let Some(mode) = self.mode {
            out.push_str("\"mode\":\"");
            out.push_str(mode.as_str());
            out.push_str("\",");
        }
        out.push_str("\"instrumentKeys\":[");
        for (i, key) in self.instrument_keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&quoted(key));
        }
        out.push_str("]}}");
        out.into_bytes()
    }
}

/// A random UUID v4 string, as the SDK's `str(uuid.uuid4())`.
fn random_guid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
