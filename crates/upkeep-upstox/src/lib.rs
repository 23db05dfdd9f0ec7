//! # upkeep-upstox
//!
//! The only crate that knows Upstox hosts, paths and JSON.
//!
//! - [`UpstoxClient`]: REST calls (profile, funds, LTP, logout), the OAuth code
//!   exchange, the v3 access-token request, the dialog URL, a generic OAuth 2 refresh,
//!   and the headless TOTP login ([`totp`]).
//! - The market calendar (`market_calendar`, `market_holiday`, `market_timings`,
//!   `market_status` on [`UpstoxClient`]), read into upkeep-core's `TradingCalendar`.
//! - [`webhook`]: parsing the notifier webhook that delivers an approved token.
//! - [`error`]: [`UpstoxError`] and its [`ErrorClass`] (what the renewal engine does next).
//! - [`limits`]: Upstox's published rate limits per API group, and a path's group.
//! - [`Hosts`]: every host is overridable, so tests point them all at the simulator.
//!
//! Secrets stay [`upkeep_core::Secret`] / [`upkeep_core::AccessToken`] until they go on
//! the wire; logs carry token fingerprints only.

mod calendar;
mod client;
mod envelope;
pub mod error;
pub mod gateway;
mod hosts;
pub mod limits;
mod models;
pub mod totp;
pub mod webhook;

pub use calendar::MarketStatus;
pub use client::{ClientConfig, MAX_LTP_KEYS, UpstoxClient};
pub use error::{
    ApiError, ErrorClass, Fault, LoginRefusal, LoginStep, MAX_RETRY_AFTER, NetworkErrorKind,
    OTP_LIMIT_WAIT, RetryAfter, UpstoxError,
};
pub use hosts::Hosts;
pub use limits::{ApiGroup, ApiKey, RateLimits, api_of};
pub use models::{
    Funds, LtpQuote, LtpQuotes, Profile, RefreshGrant, SegmentFunds, TokenGrant, TokenRequestAck,
};
pub use totp::{TotpCode, TotpLogin};
pub use webhook::{NotifierPayload, WebhookError, parse_notifier};
pub mod feed;

/// Crate-internal parsers, exposed for the fuzz targets in `fuzz/` (feature `fuzzing`).
/// Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use http::HeaderMap;
    use serde_json::Value;

    use crate::UpstoxError;

    /// What every REST call does with a response: the status and envelope check that
    /// yields the success payload (`data`, or the flat body) or a typed error.
    pub fn read_body(
        ep: &'static str,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        bearer: bool,
    ) -> Result<(u16, Value), UpstoxError> {
        crate::client::read_body(ep, status, headers, body, bearer)
    }

    /// The scrubbing applied to every server-supplied message before it is kept.
    pub fn scrub(text: &str) -> String {
        crate::envelope::scrub(text)
    }

    /// The detail a typed decode failure (`UpstoxError::Decode`) carries.
    pub fn json_error_detail(e: &serde_json::Error) -> String {
        crate::envelope::json_error_detail(e)
    }
}
