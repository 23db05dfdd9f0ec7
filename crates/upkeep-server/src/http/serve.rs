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
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

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

/// `Conn::signal` bits.
const KILL: u8 = 1;
const FINISH: u8 = 2;

/// One open connection, as the accept loop, the sweeper and the connection's own task
/// see it. Nothing here reads a clock or takes a lock per request.
#[derive(Default)]
struct Conn {
    /// Requests being answered on it now.
    busy: AtomicUsize,
    /// When bytes last moved, by the [`Coarse`] clock.
    last_active: AtomicU64,
    /// [`KILL`]: dropped at once (evicted, idle, or past the shutdown deadline);
    /// [`FINISH`]: asked to finish (shutdown).
    signal: AtomicU8,
    /// The connection's task, woken when `signal` changes.
    waker: AtomicWaker,
}

impl Conn {
    fn send(&self, bit: u8) {
        self.signal.fetch_or(bit, Ordering::Release);
        self.waker.wake();
    }
    fn killed(&self) -> bool {
        self.signal.load(Ordering::Acquire) & KILL != 0
    }
}

/// Milliseconds since the listener's epoch, as of the last accept or sweep: what a
/// read or write records instead of reading the clock. Behind the real time by at most
/// one [`sweep_every`].
#[derive(Clone)]
struct Coarse(Arc<AtomicU64>);

impl Coarse {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn advance(&self, to: u64) {
        self.0.fetch_max(to, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Conns {
    map: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Signalled whenever a connection closes.
    closed: Notify,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection that has been idle longest (no request in flight).
    /// Returns false when every connection is busy.
    fn evict_idlest(&self) -> bool {
        let map = self.lock();
        let victim = map
            .values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0 && !c.killed())
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.send(KILL);
                true
            }
            None => false,
        }
    }

    /// Closes the connections with no request in flight and no bytes moved for
    /// `quiet` ms (at `now`, ms since the epoch).
    fn sweep(&self, now: u64, quiet: u64) {
        for c in self.lock().values() {
            if c.busy.load(Ordering::Relaxed) == 0
                && now.saturating_sub(c.last_active.load(Ordering::Relaxed)) >= quiet
            {
                c.send(KILL);
            }
        }
    }

    fn send_all(&self, bit: u8) -> usize {
        let map = self.lock();
        for c in map.values() {
            c.send(bit);
        }
        map.len()
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the sweeper advances the [`Coarse`] clock and looks for idle
/// connections: a fraction of the idle timeout. A connection's activity is recorded up
/// to this much early, so the sweeper waits for `idle` plus this much on the coarse
/// clock: a quiet connection is closed between `idle` and `idle + 2 × this` after its
/// last byte, never before.
fn sweep_every(idle: Duration) -> Duration {
    (idle / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
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
    // One task watches every connection's idleness (not a timer per connection).
    let coarse = Coarse(Arc::new(AtomicU64::new(0)));
    let _sweeper = AbortOnDrop(tokio::spawn({
        let (conns, coarse) = (conns.clone(), coarse.clone());
        let every = sweep_every(limits.idle_timeout);
        let quiet = u64::try_from((limits.idle_timeout + every).as_millis()).unwrap_or(u64::MAX);
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = millis_since(epoch);
                coarse.advance(now);
                conns.sweep(now, quiet);
            }
        }
    }));
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
                _ = &mut shutdown => return drain(tasks, &conns, limits).await,
                _ = closed => {}
                Some(_) = tasks.join_next() => {}
            }
        }
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => return drain(tasks, &conns, limits).await,
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
        let now = millis_since(epoch);
        coarse.advance(now);
        let conn = Arc::new(Conn::default());
        conn.last_active.store(now, Ordering::Relaxed);
        let task = ConnTask {
            conn: conn.clone(),
            coarse: coarse.clone(),
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
async fn drain(mut tasks: JoinSet<()>, conns: &Conns, limits: ServeLimits) -> io::Result<()> {
    conns.send_all(FINISH);
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_deadline, all_done)
        .await
        .is_err()
    {
        let left = conns.send_all(KILL);
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
    conn: Arc<Conn>,
    coarse: Coarse,
    limits: ServeLimits,
}

/// Decrements the in-flight count when a request's future ends (or is dropped).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnTask {
    async fn run(self, stream: TcpStream, router: Router) {
        let io = TokioIo::new(Activity {
            inner: stream,
            conn: self.conn.clone(),
            coarse: self.coarse.clone(),
        });
        let conn = self.conn.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            conn.busy.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(conn.clone());
            let router = router.clone();
            async move {
                let response = tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        });
        let http = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(http);
        let mut asked_to_finish = false;
        std::future::poll_fn(|cx| {
            self.conn.waker.register(cx.waker());
            let signal = self.conn.signal.load(Ordering::Acquire);
            if signal & KILL != 0 {
                return Poll::Ready(());
            }
            if signal & FINISH != 0 && !asked_to_finish {
                http.as_mut().graceful_shutdown();
                asked_to_finish = true;
            }
            http.as_mut().poll(cx).map(|r| {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            })
        })
        .await;
    }
}

/// A stream that records when bytes last moved (by the [`Coarse`] clock: no clock
/// read per request).
struct Activity {
    inner: TcpStream,
    conn: Arc<Conn>,
    coarse: Coarse,
}

impl Activity {
    fn touch(&self) {
        let now = self.coarse.now();
        if self.conn.last_active.load(Ordering::Relaxed) != now {
            self.conn.last_active.store(now, Ordering::Relaxed);
        }
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
