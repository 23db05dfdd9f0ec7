//! The daemon's HTTP listener, built for a door strangers may reach:
//!
//! - **header-read timeout**: a request whose headers have not fully arrived within
//!   [`ServeLimits::header_read_timeout`] is dropped (slowloris);
//! - **idle timeout**: a connection with no request in flight and no bytes moving for
//!   [`ServeLimits::idle_timeout`] is closed (also one that never sends anything);
//! - **connection cap**: at most [`ServeLimits::max_connections`], and never more than
//!   the process's open-file limit minus a reserve kept for the daemon's own work (the
//!   store, calls to Upstox, alert channels). At the cap, the connection idle longest is
//!   closed to make room, so stalled clients cannot lock real traffic out;
//! - **shutdown deadline**: on shutdown, connections are asked to finish; whatever is
//!   still open after [`ServeLimits::shutdown_deadline`] is dropped.
//!
//! HTTP/1.1 with upgrades (websockets) on hyper; every connection gets `TCP_NODELAY`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Descriptors kept free for the daemon's own work when the cap is derived from the
/// open-file limit.
pub const FD_RESERVE: usize = 64;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_deadline: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

impl ServeLimits {
    /// The cap actually applied: the configured one, lowered to fit the open-file
    /// limit with [`FD_RESERVE`] descriptors to spare.
    pub fn effective_cap(&self) -> usize {
        let cap = self.max_connections.max(1);
        match open_file_limit() {
            Some(limit) => cap.min(limit.saturating_sub(FD_RESERVE).max(1)),
            None => cap,
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process (Linux: from `/proc/self/limits`).
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return None;
    }
    soft.parse().ok()
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests being answered on it now.
    busy: Arc<AtomicUsize>,
    /// Milliseconds since `epoch` when bytes last moved.
    last_active: Arc<AtomicU64>,
    /// Dropped at once when cancelled (evicted, idle, or past the shutdown deadline).
    kill: CancellationToken,
}

#[derive(Default)]
struct Conns {
    map: Mutex<HashMap<u64, Conn>>,
    /// Signalled whenever a connection closes.
    closed: Notify,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection that has been idle longest (no request in flight).
    /// Returns false when every connection is busy.
    fn evict_idlest(&self) -> bool {
        let map = self.lock();
        let victim = map
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0 && !c.kill.is_cancelled())
            .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed));
        match victim {
            Some((_, c)) => {
                c.kill.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, asks
/// open connections to finish, and drops what is left after the deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let cap = limits.effective_cap();
    tracing::debug!(cap, "HTTP connection cap");
    let epoch = Instant::now();
    let conns = Arc::new(Conns::default());
    let draining = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    let mut accept_errors_logged = 0u32;
    tokio::pin!(shutdown);
    loop {
        // At the cap: make room by closing the idlest connection, or wait for one to
        // close (every connection is answering a request).
        while conns.lock().len() >= cap {
            let closed = conns.closed.notified();
            if !conns.evict_idlest() {
                tracing::warn!(cap, "connection cap reached with every connection busy");
            }
            tokio::select! {
                _ = &mut shutdown => return drain(tasks, &conns, &draining, limits).await,
                _ = closed => {}
                Some(_) = tasks.join_next() => {}
            }
        }
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => return drain(tasks, &conns, &draining, limits).await,
            Some(_) = tasks.join_next() => continue,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors or a transient accept error: back off briefly;
                    // log the first few, not one line per attempt.
                    if accept_errors_logged < 5 {
                        accept_errors_logged += 1;
                        tracing::warn!(error = %e, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        accept_errors_logged = 0;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        next_id += 1;
        let id = next_id;
        let conn = Conn {
            busy: Arc::new(AtomicUsize::new(0)),
            last_active: Arc::new(AtomicU64::new(millis_since(epoch))),
            kill: CancellationToken::new(),
        };
        let task = ConnTask {
            busy: conn.busy.clone(),
            last_active: conn.last_active.clone(),
            kill: conn.kill.clone(),
            draining: draining.clone(),
            epoch,
            limits,
        };
        conns.lock().insert(id, conn);
        let conns = conns.clone();
        let router = router.clone();
        tasks.spawn(async move {
            task.run(stream, router).await;
            conns.lock().remove(&id);
            conns.closed.notify_waiters();
        });
    }
}

/// Stops accepting; asks every connection to finish; drops the rest at the deadline.
async fn drain(
    mut tasks: JoinSet<()>,
    conns: &Conns,
    draining: &CancellationToken,
    limits: ServeLimits,
) -> io::Result<()> {
    draining.cancel();
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_deadline, all_done)
        .await
        .is_err()
    {
        let left = {
            let map = conns.lock();
            for c in map.values() {
                c.kill.cancel();
            }
            map.len()
        };
        tracing::warn!(
            connections = left,
            "shutdown deadline passed; dropping the connections still open"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

struct ConnTask {
    busy: Arc<AtomicUsize>,
    last_active: Arc<AtomicU64>,
    kill: CancellationToken,
    draining: CancellationToken,
    epoch: Instant,
    limits: ServeLimits,
}

/// Decrements the in-flight count when a request's future ends (or is dropped).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnTask {
    async fn run(self, stream: TcpStream, router: Router) {
        let io = TokioIo::new(Activity {
            inner: stream,
            last_active: self.last_active.clone(),
            epoch: self.epoch,
        });
        let busy = self.busy.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            busy.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(busy.clone());
            let router = router.clone();
            async move {
                let response = tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        let idle = self.limits.idle_timeout;
        let check_every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut tick = tokio::time::interval(check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut asked_to_finish = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.kill.cancelled() => return,
                _ = self.draining.cancelled(), if !asked_to_finish => {
                    conn.as_mut().graceful_shutdown();
                    asked_to_finish = true;
                }
                _ = tick.tick() => {
                    let quiet = millis_since(self.epoch)
                        .saturating_sub(self.last_active.load(Ordering::Relaxed));
                    if self.busy.load(Ordering::Relaxed) == 0
                        && Duration::from_millis(quiet) >= idle
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// A stream that records when bytes last moved.
struct Activity {
    inner: TcpStream,
    last_active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        self.last_active
            .store(millis_since(self.epoch), Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
