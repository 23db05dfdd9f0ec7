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
    ///
    /// `again`: for a bodiless GET, HEAD or OPTIONS, the same headers without
    /// `Authorization` (copied only if needed): the request is sent once more on a new
    /// connection when its reused one closes before any answer.
    pub async fn send(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Body,
        again: Option<&HeaderMap>,
    ) -> Result<Response<Body>, SendError> {
        let origin = match upstream_of(path) {
            Upstream::Api => &self.api,
            Upstream::Order => &self.order,
        };
        let exchange = self.exchange(origin, method, path, query, headers, body, again);
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        origin: &Arc<Origin>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        mut headers: HeaderMap,
        body: Body,
        again: Option<&HeaderMap>,
    ) -> Result<Response<Body>, SendError> {
        if let Some(tx) = origin.h2_sender() {
            let uri = origin.uri(true, path, query)?;
            return self.send_h2(tx, request(method, uri, headers, body)).await;
        }
        headers.insert(header::HOST, origin.authority.clone());
        let uri = origin.uri(false, path, query)?;
        // A reused connection first; if the request could not even be written on it
        // (closed under us), once more on a new one. A safe request without a body is
        // also sent again when the reused connection closed before any answer (the
        // upstream dropped it as it went idle): nothing was done upstream that a second
        // try could repeat. Anything else (an order) is never sent twice.
        let req;

        if let Some(mut h1) = origin.take_idle().await {
            let again = again
                .filter(|_| replayable(method, &body))
                .map(|h| (h, headers.get(header::AUTHORIZATION).cloned()));
            match send_h1(&mut h1, request(method, uri, headers, body)).await {
                Ok(resp) => return self.finish_h1(origin, h1, resp).await,
                Err(Unsent(Some(back))) => req = back,
                Err(Unsent(None)) => match again {
                    Some((h, auth)) => {
                        let mut headers = h.clone();
                        headers.insert(header::HOST, origin.authority.clone());
                        if let Some(auth) = auth {
                            headers.insert(header::AUTHORIZATION, auth);
                        }
                        let uri = origin.uri(false, path, query)?;
                        req = request(method, uri, headers, Body::empty());
                    }
                    None => return Err(SendError::Unreachable),
                },
            }
        } else {
            req = request(method, uri, headers, body);
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

/// Whether a request may be sent again after a connection closed under it: a safe
/// method and no body.
fn replayable(method: &Method, body: &Body) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && http_body::Body::size_hint(body).exact() == Some(0)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{StatusCode, Version};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// How the test upstream behaves.
    #[derive(Clone, Copy)]
    struct Upstream {
        /// `Some(alpn)`: TLS with a self-signed certificate for `localhost`, offering
        /// these protocols.
        tls: Option<&'static [&'static [u8]]>,
        /// Bytes in each answer's body.
        body: usize,
        /// The connection is dropped without an answer when its n-th request arrives.
        drop_request: Option<usize>,
    }

    struct Running {
        url: Url,
        accepts: Arc<AtomicUsize>,
        /// Requests that reached the upstream, answered or not.
        requests: Arc<AtomicUsize>,
        cert: Option<rustls::pki_types::CertificateDer<'static>>,
    }

    /// Serves one accepted connection (HTTP/2 when `h2`), counting its requests.
    async fn serve<Io>(io: Io, h2: bool, how: Upstream, requests: Arc<AtomicUsize>)
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let served = Arc::new(AtomicUsize::new(0));
        let svc = service_fn(move |req: Request<Incoming>| {
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            requests.fetch_add(1, Ordering::SeqCst);
            let version = format!("{:?}", req.version());
            let target = req.uri().to_string();
            async move {
                if how.drop_request == Some(n) {
                    // hyper closes the connection without an answer.
                    return Err("dropped");
                }
                let mut resp = Response::new(Body::from(vec![b'x'; how.body]));
                resp.headers_mut()
                    .insert("x-version", HeaderValue::from_str(&version).expect("hv"));
                resp.headers_mut()
                    .insert("x-target", HeaderValue::from_str(&target).expect("hv"));
                Ok(resp)
            }
        });
        let io = TokioIo::new(io);
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        }
    }

    /// A real HTTP server on 127.0.0.1 that answers every request with its HTTP
    /// version in `x-version` and a body of `body` bytes, counting accepted sockets.
    async fn upstream(how: Upstream) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let (acceptor, cert) = match how.tls {
            None => (None, None),
            Some(alpn) => {
                let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                    .expect("self-signed certificate");
                let cert = ck.cert.der().clone();
                let key =
                    rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.clone()], key)
                    .expect("server certificate");
                config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                (
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                    Some(cert),
                )
            }
        };
        let requests = Arc::new(AtomicUsize::new(0));
        let (counter, all) = (accepts.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let requests = all.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(tcp, false, how, requests).await,
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else { return };
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(tls, h2, how, requests).await;
                        }
                    }
                });
            }
        });
        let scheme = if how.tls.is_some() { "https" } else { "http" };
        let host = if how.tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        Running {
            url: Url::parse(&format!("{scheme}://{host}:{port}/")).expect("url"),
            accepts,
            requests,
            cert,
        }
    }

    fn client(up: &Running, trust: bool) -> UpstreamClient {
        let roots = match (&up.cert, trust) {
            (Some(cert), true) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(cert.clone()).expect("root");
                Some(roots)
            }
            _ => None,
        };
        UpstreamClient::new(&up.url, &up.url, options(roots)).expect("client")
    }

    fn options(roots: Option<rustls::RootCertStore>) -> Options {
        Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_idle: 8,
            max_buffered: 64 * 1024,
            roots,
        }
    }

    async fn get(client: &UpstreamClient) -> Result<(Response<Body>, Bytes), SendError> {
        let resp = client
            .send(
                &Method::GET,
                "/v2/user/profile",
                None,
                HeaderMap::new(),
                Body::empty(),
                Some(&HeaderMap::new()),
            )
            .await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Ok((Response::from_parts(parts, Body::empty()), bytes))
    }

    fn version(resp: &Response<Body>) -> &str {
        resp.headers()
            .get("x-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn an_https_upstream_whose_certificate_is_not_trusted_is_refused() {
        let up = upstream(Upstream {
            tls: Some(&[b"http/1.1"]),
            body: 10,
            drop_request: None,
        })
        .await;
        // Default roots: the web PKI, which does not know the self-signed certificate.
        let refused = get(&client(&up, false)).await;
        assert_eq!(refused.err(), Some(SendError::Unreachable));
    }

    #[tokio::test]
    async fn an_https_upstream_offering_h2_gets_one_multiplexed_connection() {
        let up = upstream(Upstream {
            tls: Some(&[b"h2", b"http/1.1"]),
            body: 10,
            drop_request: None,
        })
        .await;
        let client = client(&up, true);
        let calls = (0..5).map(|_| get(&client));
        for r in futures_util::future::join_all(calls).await {
            let (resp, body) = r.expect("answered");
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(version(&resp), format!("{:?}", Version::HTTP_2));
            assert_eq!(body.len(), 10);
        }
        // A second round still on the one connection.
        get(&client).await.expect("answered");
        // The first concurrent round may open a few before the h2 connection is known;
        // after that every call shares it.
        let opened = up.accepts.load(Ordering::SeqCst);
        get(&client).await.expect("answered");
        assert_eq!(up.accepts.load(Ordering::SeqCst), opened);
    }

    #[tokio::test]
    async fn an_https_upstream_without_h2_keeps_one_http11_connection_for_sequential_calls() {
        let up = upstream(Upstream {
            tls: Some(&[b"http/1.1"]),
            body: 10,
            drop_request: None,
        })
        .await;
        let client = client(&up, true);
        for _ in 0..3 {
            let (resp, _) = get(&client).await.expect("answered");
            assert_eq!(version(&resp), format!("{:?}", Version::HTTP_11));
        }
        assert_eq!(up.accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_large_answer_streams_and_its_connection_is_reused_after() {
        let up = upstream(Upstream {
            tls: None,
            body: 256 * 1024,
            drop_request: None,
        })
        .await;
        let client = client(&up, false);
        for _ in 0..3 {
            let (resp, body) = get(&client).await.expect("answered");
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(body.len(), 256 * 1024);
            // The streaming task hands the connection back once the body is read.
            tokio::task::yield_now().await;
        }
        assert_eq!(up.accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_get_whose_reused_connection_closes_without_an_answer_is_sent_again_on_a_new_one() {
        // Each connection's second request is dropped unanswered, as by an upstream
        // closing a keep-alive connection just as the request went out.
        let up = upstream(Upstream {
            tls: None,
            body: 10,
            drop_request: Some(2),
        })
        .await;
        let client = client(&up, false);
        for _ in 0..4 {
            let (resp, _) = get(&client).await.expect("answered on a fresh connection");
            assert_eq!(resp.status(), StatusCode::OK);
        }
        // Calls 2..4 each lost their reused connection and went again on a new one.
        assert_eq!(up.accepts.load(Ordering::SeqCst), 4);
        assert_eq!(up.requests.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn each_path_goes_to_its_host_under_the_base_urls_prefix_with_the_raw_query() {
        let api = upstream(Upstream {
            tls: None,
            body: 1,
            drop_request: None,
        })
        .await;
        let order = upstream(Upstream {
            tls: None,
            body: 1,
            drop_request: None,
        })
        .await;
        let api_base = api.url.join("up/").expect("base");
        let client = UpstreamClient::new(&api_base, &order.url, options(None)).expect("client");
        let query = Some("instrument_key=NSE_EQ%7CINE848E01016");
        let ltp = client
            .send(
                &Method::GET,
                "/v3/market-quote/ltp",
                query,
                HeaderMap::new(),
                Body::empty(),
                None,
            )
            .await
            .expect("ltp answered");
        assert_eq!(
            ltp.headers()["x-target"],
            "/up/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016"
        );
        let place = client
            .send(
                &Method::POST,
                "/v2/order/place",
                None,
                HeaderMap::new(),
                Body::from("{}"),
                None,
            )
            .await
            .expect("order answered");
        assert_eq!(place.headers()["x-target"], "/v2/order/place");
        assert_eq!(api.requests.load(Ordering::SeqCst), 1);
        assert_eq!(order.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_order_whose_reused_connection_closes_without_an_answer_is_not_sent_again() {
        let up = upstream(Upstream {
            tls: None,
            body: 10,
            drop_request: Some(2),
        })
        .await;
        let client = client(&up, false);
        // Reading the order book goes to the API host; placing one to the order host:
        // open the order host's connection with a first order.
        let first = client
            .send(
                &Method::POST,
                "/v2/order/place",
                None,
                HeaderMap::new(),
                Body::from("{}"),
                None,
            )
            .await
            .expect("first order answered");
        assert_eq!(first.status(), StatusCode::OK);
        // The order reached the upstream, which closed without answering: it may have
        // been placed, so it is not placed a second time.
        let order = client
            .send(
                &Method::POST,
                "/v2/order/place",
                None,
                HeaderMap::new(),
                Body::from("{}"),
                None,
            )
            .await;
        assert_eq!(order.err(), Some(SendError::Unreachable));
        assert_eq!(
            up.requests.load(Ordering::SeqCst),
            2,
            "the order went out once"
        );
        assert_eq!(up.accepts.load(Ordering::SeqCst), 1);
    }
}
