//! The seams of the gateway's request path where the shared rate budget and the cached
//! fallback plug in (issue 15). Each is called once per request by `proxy::handle`:
//!
//! 1. [`before_upstream`]: after the key, the account and the token are known, before
//!    anything goes upstream. The budget takes its permit here (or answers 429 with
//!    `Retry-After`); a cache could answer here too.
//! 2. [`upstream_failed`]: upstream could not be reached, timed out, answered 5xx, or
//!    there is no valid token: a cached answer may be served instead of the error.
//! 3. [`after_upstream`]: the response that goes back to the client (status and
//!    headers known, body still streaming): the budget sees an upstream 429, the cache
//!    keeps a good answer.
//!
//! Today they do nothing.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use upkeep_upstox::gateway::Endpoint;

use super::Gateway;

/// What the hooks know about a request (the budget and the cache read all of it).
#[allow(dead_code)]
pub(super) struct Exchange<'a> {
    pub account: &'a str,
    /// The API key's name (never the key).
    pub key: &'a str,
    pub method: &'a Method,
    /// The Upstox path (`/v3/market-quote/ltp`) and raw query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub endpoint: Endpoint,
}

/// What a request is allowed to do before it goes upstream.
pub(super) struct Admission;

/// Why the upstream answer could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Unreachable,
    Timeout,
    ServerError(StatusCode),
    NoToken,
}

pub(super) async fn before_upstream(
    _gw: &Gateway,
    _ex: &Exchange<'_>,
) -> Result<Admission, Response> {
    Ok(Admission)
}

pub(super) fn upstream_failed(
    _gw: &Gateway,
    _ex: &Exchange<'_>,
    _failure: Failure,
) -> Option<Response> {
    None
}

pub(super) fn after_upstream(
    _gw: &Gateway,
    _ex: &Exchange<'_>,
    _admission: Admission,
    response: Response,
) -> Response {
    response
}
