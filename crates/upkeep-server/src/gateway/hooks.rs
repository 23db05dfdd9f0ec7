//! Where the shared rate budget and the cached fallback meet the gateway's request
//! path. Each is called by `proxy::handle`:
//!
//! 1. [`before_upstream`]: after the key, the account and the token are known, before
//!    anything goes upstream (and again before a replay after a renewal): the budget
//!    gives a permit, or upkeep answers 429 with `Retry-After`.
//! 2. [`upstream_failed`]: upstream could not be reached, timed out, answered 5xx, or
//!    there is no valid token: a covered market-data GET gets its cached answer (stale,
//!    marked so), or a 503 saying the cached one is too old.
//! 3. [`after_upstream`]: the response that goes back to the client (status and
//!    headers known, body still streaming): an upstream 429 backs the user off, and a
//!    good answer of a covered GET is kept as its body streams through.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use futures_util::FutureExt as _;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt as _;
use upkeep_upstox::RetryAfter;
use upkeep_upstox::gateway::Endpoint;
use upkeep_upstox::limits::api_of;

use super::Gateway;
use super::budget::{Permit, Rejected};
use super::cache::{self, CacheKey, Fallback, StaleCache};
use super::proxy::refusal;

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

/// A request's place in its user's budget: held until its answer's head is back (the
/// call ends there, as far as Upstox's windows go).
pub(super) struct Admission {
    permit: Option<Permit>,
}

/// Why the upstream answer could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Unreachable,
    Timeout,
    ServerError(StatusCode),
    NoToken,
}

impl Failure {
    fn describe(self) -> String {
        match self {
            Failure::Unreachable => "it could not be reached".into(),
            Failure::Timeout => "it did not answer in time".into(),
            Failure::ServerError(s) => format!("it answered {s}"),
            Failure::NoToken => "the account has no valid token while it is renewed".into(),
        }
    }
}

/// The Upstox user whose limits a request of `account` draws on when its token names
/// none: the configured `user_id`, else the account itself.
fn configured_user(gw: &Gateway, account: &str) -> String {
    gw.inner
        .engine
        .account_settings(account)
        .and_then(|a| a.user_id.clone())
        .unwrap_or_else(|| format!("account:{account}"))
}

pub(super) async fn before_upstream(
    gw: &Gateway,
    ex: &Exchange<'_>,
) -> Result<Admission, Response> {
    let budget = &gw.inner.budget;
    if !budget.settings().enabled {
        return Ok(Admission { permit: None });
    }
    // The token's user (its `sub`), borrowed: no allocation on the common path.
    let current = gw.inner.engine.current(ex.account);
    let user: Cow<'_, str> = match current.as_ref().and_then(|c| c.user_id.as_deref()) {
        Some(u) => Cow::Borrowed(u),
        None => Cow::Owned(configured_user(gw, ex.account)),
    };
    let api = api_of(ex.path);
    match budget.acquire(&user, &api).await {
        Ok(permit) => Ok(Admission {
            permit: Some(permit),
        }),
        Err(r) => Err(too_many_requests(r)),
    }
}

/// upkeep's 429: the budget of this user and API is spent for now.
fn too_many_requests(r: Rejected) -> Response {
    let why = match r.reason {
        super::budget::RejectReason::QueueFull => {
            "too many requests of this Upstox user are already waiting"
        }
        super::budget::RejectReason::WaitTooLong => {
            "this Upstox user's rate limit for this API is used up for now"
        }
        super::budget::RejectReason::BackedOff => {
            "Upstox answered 429 for this user; upkeep holds its requests back"
        }
    };
    let secs = r.retry_after_secs();
    let mut resp = refusal(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_budget",
        format!("{why}; retry after {secs} s (upkeep's shared rate budget, gateway.budget)"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

pub(super) async fn upstream_failed(
    gw: &Gateway,
    ex: &Exchange<'_>,
    failure: Failure,
) -> Option<Response> {
    let cache = &gw.inner.cache;
    if !cache.covers(ex.method.as_str(), ex.path) {
        return None;
    }
    let key = CacheKey::new(ex.account, ex.path, ex.query);
    match cache.fallback(&key).await {
        Fallback::Stale { answer, age_secs } => {
            tracing::debug!(
                account = ex.account,
                path = ex.path,
                age_secs,
                "gateway: serving a stale answer"
            );
            Some(cache::stale_response(&answer, age_secs))
        }
        f @ Fallback::TooOld { .. } => Some(cache::unavailable_response(
            &failure.describe(),
            &f,
            cache.settings().max_age,
        )),
        Fallback::Miss => None,
    }
}

pub(super) fn after_upstream(
    gw: &Gateway,
    ex: &Exchange<'_>,
    admission: Admission,
    response: Response,
) -> Response {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS
        && response.headers().get(super::proxy::UPKEEP_ERROR).is_none()
    {
        let now = gw.inner.engine.clock().now();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(RetryAfter::parse)
            .map(|r| r.delay_from(now));
        if let Some(p) = &admission.permit {
            p.upstream_refused(retry_after);
        }
    }
    drop(admission);
    let cache = &gw.inner.cache;
    if status.is_success()
        && response.headers().get(cache::STALE_HEADER).is_none()
        && cache.covers(ex.method.as_str(), ex.path)
    {
        let key = CacheKey::new(ex.account, ex.path, ex.query);
        return keep_while_streaming(cache.clone(), key, response);
    }
    response
}

/// The response, its body copied aside as it streams; at its end (if whole and not too
/// large) it becomes the query's last good answer.
fn keep_while_streaming(cache: StaleCache, key: CacheKey, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let limit = cache.settings().max_body_bytes;
    let content_type = || {
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    };
    // The upstream client read a small answer whole: keep those bytes as they are (no
    // copy) instead of copying them aside as they stream. Anything else read here is
    // handed to the copy below as its first piece.
    let mut body = body;
    let mut first = None;
    if let Some(n) = body.size_hint().exact().filter(|n| *n <= limit as u64) {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.len() as u64 == n => {
                    cache.remember(key, parts.status.as_u16(), content_type(), data.clone());
                    return Response::from_parts(parts, Body::from(data));
                }
                Ok(data) => first = Some(Ok(Frame::data(data))),
                Err(frame) => first = Some(Ok(frame)),
            },
            Some(Some(Err(e))) => first = Some(Err(e)),
            // Not ready (nothing taken), or already at its end: the copy polls it.
            Some(None) | None => {}
        }
    }
    let content_type = content_type().map(str::to_owned);
    let tee = Tee {
        first,
        inner: body,
        copy: Vec::new(),
        limit,
        keep: Some(Keep {
            cache,
            key,
            status: parts.status.as_u16(),
            content_type,
        }),
    };
    Response::from_parts(parts, Body::new(tee))
}

struct Keep {
    cache: StaleCache,
    key: CacheKey,
    status: u16,
    content_type: Option<String>,
}

struct Tee {
    /// A piece already read from `inner` before the copy began, passed on first.
    first: Option<Result<Frame<Bytes>, axum::Error>>,
    inner: Body,
    copy: Vec<u8>,
    limit: usize,
    /// `None` once the copy was given up (too large, an error) or handed over.
    keep: Option<Keep>,
}

impl Tee {
    /// The whole body went through: keep it.
    fn finish(&mut self) {
        if let Some(k) = self.keep.take() {
            let body = Bytes::from(std::mem::take(&mut self.copy));
            k.cache
                .remember(k.key, k.status, k.content_type.as_deref(), body);
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = match this.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.copy.len() + data.len() > this.limit {
                        this.keep = None;
                        this.copy = Vec::new();
                    } else if this.keep.is_some() {
                        this.copy.extend_from_slice(data);
                    }
                }
                // hyper stops polling a body that says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.keep = None,
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let first = match &self.first {
            Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => 0,
        };
        let inner = self.inner.size_hint();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + first);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use jiff::Timestamp;
    use upkeep_core::clock::ManualClock;

    use super::*;

    const LTP: &str = "/v3/market-quote/ltp";

    fn cache() -> StaleCache {
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_second(1_780_000_000).unwrap(),
        ));
        StaleCache::new(Default::default(), clock)
    }

    fn key() -> CacheKey {
        CacheKey::new("main", LTP, Some("instrument_key=NSE_EQ%7CINE848E01016"))
    }

    fn ok(body: Body) -> Response {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::OK;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    async fn read(r: Response) -> Bytes {
        r.into_body().collect().await.expect("body").to_bytes()
    }

    /// Two pieces, with the exact length declared.
    struct TwoPieces(Vec<Bytes>);

    impl http_body::Body for TwoPieces {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            let this = self.get_mut();
            if this.0.is_empty() {
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(Frame::data(this.0.remove(0)))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
        }
    }

    #[tokio::test]
    async fn a_whole_answer_is_kept_as_it_is_and_reaches_the_client_unchanged() {
        let cache = cache();
        let r = keep_while_streaming(cache.clone(), key(), ok(Body::from(r#"{"ltp":1}"#)));
        assert_eq!(read(r).await, r#"{"ltp":1}"#);
        match cache.fallback(&key()).await {
            Fallback::Stale { answer, .. } => {
                assert_eq!(answer.body, r#"{"ltp":1}"#);
                assert_eq!(answer.content_type.as_deref(), Some("application/json"));
            }
            other => panic!("not kept: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_in_pieces_reaches_the_client_whole_in_order_and_is_kept() {
        let cache = cache();
        let pieces = TwoPieces(vec![
            Bytes::from_static(b"{\"ltp\":"),
            Bytes::from_static(b"2}"),
        ]);
        let r = keep_while_streaming(cache.clone(), key(), ok(Body::new(pieces)));
        assert_eq!(read(r).await, r#"{"ltp":2}"#);
        match cache.fallback(&key()).await {
            Fallback::Stale { answer, .. } => assert_eq!(answer.body, r#"{"ltp":2}"#),
            other => panic!("not kept: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_streamed_answer_of_unknown_length_is_kept_at_its_end() {
        let cache = cache();
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"ltp\":")),
            Ok(Bytes::from_static(b"3}")),
        ]);
        let r = keep_while_streaming(cache.clone(), key(), ok(Body::from_stream(stream)));
        assert_eq!(read(r).await, r#"{"ltp":3}"#);
        assert!(matches!(
            cache.fallback(&key()).await,
            Fallback::Stale { .. }
        ));
    }
}
