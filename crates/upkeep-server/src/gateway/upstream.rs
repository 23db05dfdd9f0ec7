//! The gateway's upstream client: HTTP/1.1 connections owned by the request that uses
//! them, HTTP/2 where the upstream offers it.
//!
//! A general-purpose client (reqwest, hyper-util's pool) runs every connection in a task
//! of its own and hands each request and response across a channel: two task wake-ups
//! and several allocations per call, which on a proxy's hot path cost more than the
//! proxying. Here an idle HTTP/1.1 connection waits in a short stack per upstream; a
//! request takes one, drives it itself (in the task that serves the caller's
//! connection) until the answer's body is read, and puts it back. Only an answer too
//! large to hold (or of unknown length) hands its connection to a task that streams the
//! body and returns the connection when it is done.
//!
//! - `https` upstreams: rustls, certificates verified against the web PKI roots; ALPN
//!   offers `h2` and `http/1.1`: an upstream that picks `h2` gets one multiplexed
//!   connection shared by every request (its own task), reopened when it closes.
//! - An idle connection the upstream closed is noticed when it is taken (its state is
//!   polled) and thrown away; a request that could not be written on a reused
//!   connection is sent again on a new one (it never reached upstream). Idle
//!   connections older than [`MAX_IDLE_AGE`] are not reused.
//! - Timeouts: connect (TCP and TLS) and the whole exchange (until the body is read).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use upkeep_upstox::gateway::{Upstream, upstream_of};
use url::Url;

/// An idle HTTP/1.1 connection older than this is closed rather than reused (servers
/// commonly drop keep-alive connections after a minute).
const MAX_IDLE_AGE: Duration = Duration::from_secs(50);

/// Why an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendError {
    /// Connect, TLS, write or read failed, or the connection closed early.
    Unreachable,
    /// The connect or the exchange took longer than its timeout.
    Timeout,
}

/// How the client is set up.
pub(super) struct Options {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per upstream.
    pub max_idle: usize,
    /// Answers of a known length up to this are read whole before they are returned;
    /// larger or unsized ones stream.
    pub max_buffered: usize,
    /// Trusted roots for `https` upstreams (default: the web PKI roots).
    pub roots: Option<rustls::RootCertStore>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub(super) enum BuildError {
    #[error("upstream URL {0} has no host")]
    NoHost(String),
    #[error("upstream URL {0}: only http and https are supported")]
    Scheme(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The gateway's upstream client (one per gateway; shared).
pub(super) struct UpstreamClient {
    api: Arc<Origin>,
    order: Arc<Origin>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_idle: usize,
    max_buffered: usize,
}

/// One upstream (`scheme://host:port[/prefix]`).
struct Origin {
    host: String,
    port: u16,
    /// The `Host` header, rendered once.
    authority: HeaderValue,
    /// `scheme://host:port`, for HTTP/2's absolute request URIs.
    absolute: String,
    /// The base URL's path without its trailing slash (usually empty).
    prefix: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    idle: Mutex<Vec<H1>>,
    /// The upstream's HTTP/2 connection, once ALPN picked `h2`.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
}

type Io = TokioIo<Stream>;

/// An HTTP/1.1 connection and its sender. Nobody polls it while it is idle.
struct H1 {
    tx: http1::SendRequest<Body>,
    conn: Pin<Box<http1::Connection<Io, Body>>>,
    idle_since: Instant,
}

impl UpstreamClient {
    pub fn new(api: &Url, order: &Url, options: Options) -> Result<Self, BuildError> {
        let tls = if api.scheme() == "https" || order.scheme() == "https" {
            Some(tls_config(options.roots)?)
        } else {
            None
        };
        Ok(Self {
            api: Arc::new(Origin::new(api, tls.as_ref())?),
            order: Arc::new(Origin::new(order, tls.as_ref())?),
            connect_timeout: options.connect_timeout,
            request_timeout: options.request_timeout,
            max_idle: options.max_idle,
            max_buffered: options.max_buffered,
        })
    }

    /// Sends `method path?query` with `headers` (hop-by-hop ones already dropped, the
    /// upstream's `Authorization` in place) to the upstream that serves `path`. The
    /// answer's body is whole when its length was known and at most `max_buffered`.
    pub async fn send(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response<Body>, SendError> {
        let origin = match upstream_of(path) {
            Upstream::Api => &self.api,
            Upstream::Order => &self.order,
        };
        let exchange = self.exchange(origin, method, path, query, headers, body);
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout),
        }
    }

    async fn exchange(
        &self,
        origin: &Arc<Origin>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        mut headers: HeaderMap,
        body: Body,
    ) -> Result<Response<Body>, SendError> {
        if let Some(tx) = origin.h2_sender() {
            let uri = origin.uri(true, path, query)?;
            return self.send_h2(tx, request(method, uri, headers, body)).await;
        }
        headers.insert(header::HOST, origin.authority.clone());
        let uri = origin.uri(false, path, query)?;
        let mut req = request(method, uri, headers, body);
        // A reused connection first; if the request could not even be written on it
        // (closed under us), once more on a new one.
        if let Some(mut h1) = origin.take_idle().await {
            match send_h1(&mut h1, req).await {
                Ok(resp) => return self.finish_h1(origin, h1, resp).await,
                Err(Unsent(Some(back))) => req = back,
                Err(Unsent(None)) => return Err(SendError::Unreachable),
            }
        }
        match self.connect(origin).await? {
            Fresh::H1(mut h1) => match send_h1(&mut h1, req).await {
                Ok(resp) => self.finish_h1(origin, h1, resp).await,
                Err(_) => Err(SendError::Unreachable),
            },
            Fresh::H2(tx) => {
                // ALPN picked h2: HTTP/2 wants the absolute URI and no Host header.
                let (mut parts, body) = req.into_parts();
                parts.headers.remove(header::HOST);
                parts.uri = origin.uri(true, path, query)?;
                self.send_h2(tx, Request::from_parts(parts, body)).await
            }
        }
    }

    /// Reads a small answer's body on the connection (which then goes back to the idle
    /// stack), or hands the connection to a task that streams a large one.
    async fn finish_h1(
        &self,
        origin: &Arc<Origin>,
        mut h1: H1,
        resp: Response<Incoming>,
    ) -> Result<Response<Body>, SendError> {
        let (parts, body) = resp.into_parts();
        if self.is_small(&parts.headers, &body) {
            let collected = drive(&mut h1, body.collect()).await;
            let bytes = match collected {
                Some(Ok(c)) => c.to_bytes(),
                _ => return Err(SendError::Unreachable),
            };
            origin.put_idle(h1, self.max_idle).await;
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        }
        // Streamed: a task drives the connection while the caller reads the body and
        // returns it to the stack when the body is done.
        let origin = origin.clone();
        let max_idle = self.max_idle;
        tokio::spawn(async move {
            if wait_reusable(&mut h1).await {
                origin.put_idle(h1, max_idle).await;
            }
        });
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    async fn send_h2(
        &self,
        mut tx: http2::SendRequest<Body>,
        req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        let resp = tx.send_request(req).await.map_err(|e| {
            tracing::debug!(error = %e, "gateway: upstream (h2) failed");
            SendError::Unreachable
        })?;
        let (parts, body) = resp.into_parts();
        if self.is_small(&parts.headers, &body) {
            let bytes = body
                .collect()
                .await
                .map_err(|_| SendError::Unreachable)?
                .to_bytes();
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        }
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    fn is_small(&self, headers: &HeaderMap, body: &Incoming) -> bool {
        let exact = http_body::Body::size_hint(body).exact().or_else(|| {
            headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        exact.is_some_and(|n| n <= self.max_buffered as u64)
    }

    async fn connect(&self, origin: &Origin) -> Result<Fresh, SendError> {
        let connecting = async {
            let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, host = %origin.host, "gateway: connect failed");
                    SendError::Unreachable
                })?;
            let _ = tcp.set_nodelay(true);
            let stream = match &origin.tls {
                None => Stream::Plain(tcp),
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                        tracing::debug!(error = %e, host = %origin.host, "gateway: TLS failed");
                        SendError::Unreachable
                    })?;
                    Stream::Tls(Box::new(tls))
                }
            };
            Ok::<_, SendError>(stream)
        };
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| SendError::Timeout)??;
        if stream.is_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|_| SendError::Unreachable)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "gateway: upstream h2 connection ended");
                }
            });
            *lock(&origin.h2) = Some(tx.clone());
            return Ok(Fresh::H2(tx));
        }
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| SendError::Unreachable)?;
        Ok(Fresh::H1(H1 {
            tx,
            conn: Box::pin(conn),
            idle_since: Instant::now(),
        }))
    }
}

enum Fresh {
    H1(H1),
    H2(http2::SendRequest<Body>),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn request(method: &Method, uri: Uri, headers: HeaderMap, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

impl Origin {
    fn new(url: &Url, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Self, BuildError> {
        let host = url
            .host_str()
            .ok_or_else(|| BuildError::NoHost(url.to_string()))?
            .to_owned();
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(BuildError::Scheme(url.to_string())),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| BuildError::Scheme(url.to_string()))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let absolute = format!("{}://{authority}", url.scheme());
        let authority = HeaderValue::try_from(authority.as_str())
            .map_err(|_| BuildError::NoHost(url.to_string()))?;
        // A bare IPv6 host comes with brackets; connecting and TLS names want it without.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match (https, tls) {
            (true, Some(config)) => {
                let name = rustls::pki_types::ServerName::try_from(bare.clone())
                    .map_err(|e| BuildError::Tls(format!("{host}: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(config.clone()), name))
            }
            _ => None,
        };
        Ok(Self {
            host: bare,
            port,
            authority,
            absolute,
            prefix: url.path().trim_end_matches('/').to_owned(),
            tls,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        })
    }

    /// The request URI: origin-form for HTTP/1.1, absolute for HTTP/2.
    fn uri(&self, absolute: bool, path: &str, query: Option<&str>) -> Result<Uri, SendError> {
        let base = if absolute { self.absolute.as_str() } else { "" };
        let len = base.len() + self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1);
        let mut s = String::with_capacity(len);
        s.push_str(base);
        s.push_str(&self.prefix);
        s.push_str(path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        Uri::from_maybe_shared(Bytes::from(s)).map_err(|_| SendError::Unreachable)
    }

    fn h2_sender(&self) -> Option<http2::SendRequest<Body>> {
        let mut slot = lock(&self.h2);
        match slot.as_ref() {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn take_idle(&self) -> Option<H1> {
        loop {
            let mut h1 = lock(&self.idle).pop()?;
            if h1.idle_since.elapsed() > MAX_IDLE_AGE {
                continue;
            }
            if ready_now(&mut h1).await {
                return Some(h1);
            }
        }
    }

    async fn put_idle(&self, mut h1: H1, max_idle: usize) {
        if !ready_now(&mut h1).await {
            return;
        }
        h1.idle_since = Instant::now();
        let mut idle = lock(&self.idle);
        if idle.len() < max_idle {
            idle.push(h1);
        }
    }
}

/// A request that never reached upstream, given back when it can be sent again.
struct Unsent(Option<Request<Body>>);

/// Sends `req` on `h1`, driving the connection until the answer's head is back.
async fn send_h1(h1: &mut H1, req: Request<Body>) -> Result<Response<Incoming>, Unsent> {
    let sending = h1.tx.try_send_request(req);
    match drive(h1, sending).await {
        Some(Ok(resp)) => Ok(resp),
        Some(Err(mut e)) => {
            tracing::debug!(error = %e.error(), "gateway: upstream failed");
            Err(Unsent(e.take_message()))
        }
        None => Err(Unsent(None)),
    }
}

/// Polls `fut` and `h1`'s connection together until `fut` is done; `None` when the
/// connection ended first.
async fn drive<F: Future>(h1: &mut H1, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let conn = &mut h1.conn;
    let mut ended = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if ended {
            return Poll::Ready(None);
        }
        match conn.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                ended = true;
                // The connection's end may have settled `fut` (with an error).
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => Poll::Ready(Some(v)),
                    Poll::Pending => Poll::Ready(None),
                }
            }
        }
    })
    .await
}

/// Whether `h1` is open and ready for a request, after giving its connection one poll
/// (which reads a close, and finishes the bookkeeping of the last exchange).
async fn ready_now(h1: &mut H1) -> bool {
    let conn = &mut h1.conn;
    let tx = &mut h1.tx;
    std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Ready(matches!(tx.poll_ready(cx), Poll::Ready(Ok(()))))
    })
    .await
}

/// Drives `h1` until its current exchange is over: `true` when it can be reused.
async fn wait_reusable(h1: &mut H1) -> bool {
    let conn = &mut h1.conn;
    let tx = &mut h1.tx;
    std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        match tx.poll_ready(cx) {
            Poll::Ready(r) => Poll::Ready(r.is_ok()),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn tls_config(
    roots: Option<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, BuildError> {
    let roots = roots.unwrap_or_else(|| rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A plain or TLS upstream socket.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn is_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
