//! The upstream side of the market-data relay: a pool of Market Data Feed V3 connections
//! for one account, shared by many local consumers.
//!
//! ```text
//!  consumers ──subscribe/unsubscribe/change_mode──> FeedPool ──(book: union per key,
//!     ^                                              │          richest mode, refcounted
//!     └──── UpstreamEvent (Frame / Up / Down) <──────┘          per consumer)
//!                                                    │
//!                           connection 0 .. n-1 (n = 2, or 5 on Upstox Plus)
//!                           authorize (current token) -> fresh single-use URL -> socket
//!                           -> market_info -> sub/change_mode/unsub (JSON, binary frames)
//! ```
//!
//! - **Token**: every connect reads the account's *current* token from the
//!   [`TokenSource`] (never one captured at start) and asks for a fresh single-use URL.
//!   A rotation closes each live socket and reconnects at once with the new token
//!   ([`DownCause::Rotation`]). A 401 (or `UDAPI100050`) at authorize or at the
//!   handshake calls the source's `refused` callback once per token (the engine's
//!   reactive renewal) and retries after the backoff or as soon as a new token arrives.
//! - **Limits**: connections from the token's `isPlusPlan` claim (2, or 5 on Plus;
//!   optionally capped by [`UpstreamConfig::max_connections`]); a token on another
//!   plan re-sizes the pool: its keys are spread over the new allowance (on a shrink,
//!   keys that fit nowhere wait, unplaced, for room; see [`PoolHealth::unplaced`]); keys per mode per
//!   connection from reference 7.4 ([`key_limits`]). New keys go to the least-loaded
//!   connection where they fit; a request that fits nowhere is refused whole
//!   ([`SubscribeError::Overflow`]).
//! - **Order**: requests go out only once the socket is open and `market_info` has
//!   arrived; after every reconnect the connection's keys are subscribed again (one
//!   `sub` per mode). The first snapshot may be typed `initial_feed` or `live_feed`:
//!   both are forwarded as they come.
//! - **Liveness**: data frames, pings and pongs all count as life; silence longer than
//!   [`UpstreamConfig::stall_timeout`] is a stall: the socket is dropped and reopened.
//!   Reconnects wait an exponential backoff with jitter between
//!   [`UpstreamConfig::backoff_min`] and [`UpstreamConfig::backoff_max`].
//!
//! Frames are passed on as the bytes Upstox sent ([`UpstreamEvent::Frame`]); decode
//! them with [`crate::feed::decode`]. A key is streamed upstream in the richest mode
//! any consumer wants (ltpc < option_greeks < full < full_d30), so a consumer may see
//! a richer shape than it asked for unless the local side reshapes it
//! ([`crate::feed::reshape`]; [`FeedConsumer::subscriptions`] tells what each consumer
//! asked for).
//!
//! ```no_run
//! # async fn demo(
//! #     client: upkeep_upstox::UpstoxClient,
//! #     clock: std::sync::Arc<dyn upkeep_core::Clock>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use upkeep_upstox::feed::upstream::{FeedPool, TokenSource, UpstreamConfig, UpstreamEvent};
//! use upkeep_upstox::feed::{self, FeedType, SubscriptionMode};
//!
//! // The sender side changes on every token rotation (the daemon feeds it).
//! let (_rotations, current) = tokio::sync::watch::channel(Some(upkeep_core::AccessToken::new("eyJ...")));
//! let tokens = TokenSource::new(current, |_refused| { /* ask for a renewal */ });
//! let pool = FeedPool::start(UpstreamConfig::default(), client, tokens, clock);
//! let mut events = pool.events();
//! let bot = pool.consumer();
//! bot.subscribe(SubscriptionMode::Ltpc, &["NSE_EQ|INE669E01016"])?;
//! while let Ok(event) = events.recv().await {
//!     match event {
//!         UpstreamEvent::Frame { kind: FeedType::MarketInfo, .. } => {}
//!         UpstreamEvent::Frame { data, .. } => {
//!             let frame = feed::decode(&data)?;
//!             println!("{} instruments", frame.feeds.len());
//!         }
//!         UpstreamEvent::Down { reason, .. } => eprintln!("gap: {reason}"),
//!         UpstreamEvent::Up { .. } => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod book;
mod connection;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};
use upkeep_core::{AccessToken, Clock};

use book::Book;
pub use book::key_limits;

use super::{FeedType, SubscriptionMode};
use crate::UpstoxClient;

/// Feed connections Upstox allows per user (reference 7.4).
pub const CONNECTIONS_NORMAL: usize = 2;
/// Feed connections Upstox allows per user on Upstox Plus.
pub const CONNECTIONS_PLUS: usize = 5;

/// How the pool behaves. `Default`: stall after 30 s of silence (Upstox pings idle
/// sockets well within that), backoff 1 s .. 60 s, an event queue of 4,096.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Silence (no data, no ping, no pong) after which a socket counts as stalled.
    pub stall_timeout: Duration,
    /// First reconnect delay (before jitter).
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Capacity of the event broadcast ([`FeedPool::events`]); a receiver further
    /// behind than this loses the oldest events (`RecvError::Lagged`).
    pub event_queue: usize,
    /// Use at most this many connections (never more than the plan allows).
    pub max_connections: Option<usize>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            event_queue: 4_096,
            max_connections: None,
        }
    }
}

/// Where the pool gets the account's current token, and whom it tells when Upstox
/// refuses one.
#[derive(Clone)]
pub struct TokenSource {
    rx: watch::Receiver<Option<AccessToken>>,
    refused: Arc<dyn Fn(AccessToken) + Send + Sync>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").finish_non_exhaustive()
    }
}

impl TokenSource {
    /// `rx` holds the current token and changes on every rotation; `refused` is called
    /// (once per token) when Upstox answers 401 for it: ask for a renewal there. It must
    /// not block (spawn if it has to wait).
    pub fn new(
        rx: watch::Receiver<Option<AccessToken>>,
        refused: impl Fn(AccessToken) + Send + Sync + 'static,
    ) -> Self {
        Self {
            rx,
            refused: Arc::new(refused),
        }
    }

    /// The current token, if any.
    pub fn current(&self) -> Option<AccessToken> {
        self.rx.borrow().clone()
    }

    /// Whether the current token is on Upstox Plus (its `isPlusPlan` claim); `false`
    /// without a token or when the claims cannot be read.
    fn plus(&self) -> bool {
        self.current()
            .and_then(|t| upkeep_core::decode_claims(t.expose()).ok())
            .is_some_and(|c| c.is_plus_plan)
    }
}

/// Identifies one consumer of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ConsumerId(pub u64);

/// Why a subscription was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// `full_d30` on an account without Upstox Plus.
    #[error("mode full_d30 needs Upstox Plus (the account's token has isPlusPlan=false); use full")]
    PlusOnly,
    /// The keys do not fit the plan's connections and per-connection key limits.
    #[error(
        "cannot stream more keys: {mode} allows {limit} keys per connection and all {connections} \
         feed connections this account may use are full ({streamed} keys streamed); unsubscribe \
         some keys first",
        mode = .mode.as_str()
    )]
    Overflow {
        mode: SubscriptionMode,
        connections: usize,
        limit: usize,
        streamed: usize,
    },
    /// An instrument key that is not `SEGMENT|IDENTIFIER`.
    #[error("invalid instrument key {0:?}: expected SEGMENT|IDENTIFIER, e.g. NSE_EQ|INE669E01016")]
    InvalidKey(String),
    /// The pool was shut down.
    #[error("the feed relay is stopped")]
    Stopped,
}

/// Keys per mode (on one connection, or in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeysPerMode {
    pub ltpc: usize,
    pub full: usize,
    pub option_greeks: usize,
    pub full_d30: usize,
}

impl KeysPerMode {
    pub(crate) fn add(&mut self, mode: SubscriptionMode, n: usize) {
        match mode {
            SubscriptionMode::Ltpc => self.ltpc += n,
            SubscriptionMode::Full => self.full += n,
            SubscriptionMode::OptionGreeks => self.option_greeks += n,
            SubscriptionMode::FullD30 => self.full_d30 += n,
        }
    }

    /// `(mode, count)` for every mode.
    pub fn iter(&self) -> impl Iterator<Item = (SubscriptionMode, usize)> {
        [
            (SubscriptionMode::Ltpc, self.ltpc),
            (SubscriptionMode::Full, self.full),
            (SubscriptionMode::OptionGreeks, self.option_greeks),
            (SubscriptionMode::FullD30, self.full_d30),
        ]
        .into_iter()
    }

    /// All keys.
    pub fn total(&self) -> usize {
        self.ltpc + self.full + self.option_greeks + self.full_d30
    }
}

/// Why a connection stopped delivering data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownCause {
    /// The account's token rotated: reconnecting at once with the new one.
    Rotation,
    /// No data, ping or pong for longer than the stall timeout.
    Stall,
    /// Upstox closed the socket (or the TCP stream ended).
    Closed,
    /// A read or write failed.
    Error,
    /// No consumer wants a key on this connection any more.
    Unused,
    /// The pool is shutting down.
    Stopped,
}

/// What the pool tells its consumers, in order per connection.
#[derive(Debug, Clone)]
pub enum UpstreamEvent {
    /// One `FeedResponse` as Upstox sent it (decode with [`crate::feed::decode`]).
    /// `market_info` comes first on every (re)connect, then snapshots and ticks.
    Frame {
        connection: usize,
        kind: FeedType,
        data: Bytes,
        /// When it was read from the upstream socket (the runtime's monotonic clock):
        /// what the relay's added latency is measured from
        /// (`crates/upkeep-server/examples/relay_fanout_ws.rs`).
        received: tokio::time::Instant,
    },
    /// The connection is open, `market_info` arrived and its keys were (re)subscribed.
    Up { connection: usize, reconnect: bool },
    /// The connection lost its socket: its `keys` get nothing until the next `Up`. A
    /// connection that has no keys any more when it would reconnect (they moved to other
    /// connections, or no one wants them) ends its gap with a `Down` of cause
    /// [`DownCause::Unused`] instead of an `Up`.
    Down {
        connection: usize,
        cause: DownCause,
        keys: usize,
        reason: String,
    },
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// No keys placed on it: no socket.
    Idle,
    /// Waiting for the account to have a token.
    NoToken,
    /// Authorizing or opening the socket.
    Connecting,
    /// Open, waiting for `market_info`.
    Opening,
    /// Open and streaming.
    Live,
    /// Waiting before the next attempt.
    Backoff,
    /// The pool was shut down.
    Stopped,
}

/// Health of one upstream connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionHealth {
    pub index: usize,
    pub state: ConnectionState,
    /// Keys this connection should stream, per mode.
    pub keys: KeysPerMode,
    /// Frames, pings and pongs received since the pool started.
    pub messages: u64,
    /// Data frames received since the pool started.
    pub frames: u64,
    pub last_message_at: Option<Timestamp>,
    /// Sockets opened after the first.
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    /// When the current socket went live.
    pub live_since: Option<Timestamp>,
}

/// Health of the whole pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolHealth {
    /// Whether the current token is on Upstox Plus (`isPlusPlan`).
    pub plus: bool,
    /// Connections this account may use now.
    pub allowed_connections: usize,
    /// Distinct keys streamed upstream.
    pub keys: usize,
    /// Keys wanted but streamed nowhere: they did not fit when the plan's allowance
    /// shrank (they are placed as soon as room frees).
    pub unplaced: usize,
    pub consumers: usize,
    pub connections: Vec<ConnectionHealth>,
}

struct Slot {
    wake: Notify,
    health: Mutex<ConnectionHealth>,
}

struct Shared {
    book: Mutex<Book>,
    slots: Vec<Slot>,
    events: broadcast::Sender<UpstreamEvent>,
    config: UpstreamConfig,
    client: UpstoxClient,
    tokens: TokenSource,
    clock: Arc<dyn Clock>,
    stop: watch::Sender<bool>,
    next_consumer: AtomicU64,
    consumers: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the book half-written (changes are made on a copy).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections a plan allows, capped by the configuration.
fn allowance(plus: bool, max: Option<usize>) -> usize {
    let plan = if plus {
        CONNECTIONS_PLUS
    } else {
        CONNECTIONS_NORMAL
    };
    max.map_or(plan, |m| m.clamp(1, plan))
}

impl Shared {
    fn wake(&self, touched: &[usize]) {
        for i in touched {
            if let Some(s) = self.slots.get(*i) {
                s.wake.notify_one();
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// The upstream feed of one account: a cheap handle (clones share the pool).
#[derive(Clone)]
pub struct FeedPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FeedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedPool").finish_non_exhaustive()
    }
}

impl FeedPool {
    /// Starts the pool's connection tasks (they stay idle until keys are subscribed and
    /// run until [`FeedPool::shutdown`], also if every handle is dropped). Must be called
    /// inside a tokio runtime. `client` is used for the authorize call only (its hosts
    /// decide where that goes).
    pub fn start(
        config: UpstreamConfig,
        client: UpstoxClient,
        tokens: TokenSource,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let n = config
            .max_connections
            .map_or(CONNECTIONS_PLUS, |m| m.clamp(1, CONNECTIONS_PLUS));
        let (events, _) = broadcast::channel(config.event_queue.max(16));
        let slots = (0..n)
            .map(|index| Slot {
                wake: Notify::new(),
                health: Mutex::new(ConnectionHealth {
                    index,
                    state: ConnectionState::Idle,
                    keys: KeysPerMode::default(),
                    messages: 0,
                    frames: 0,
                    last_message_at: None,
                    reconnects: 0,
                    last_error: None,
                    last_error_at: None,
                    live_since: None,
                }),
            })
            .collect();
        // The allowance of the token at hand (a normal plan's without one); a later
        // token on another plan re-sizes the pool (`follow_plan`).
        let allowed = allowance(tokens.plus(), config.max_connections);
        let shared = Arc::new(Shared {
            book: Mutex::new(Book::new(n, allowed)),
            slots,
            events,
            config,
            client,
            tokens,
            clock,
            stop: watch::channel(false).0,
            next_consumer: AtomicU64::new(1),
            consumers: AtomicU64::new(0),
        });
        for i in 0..n {
            tokio::spawn(connection::run(Arc::clone(&shared), i));
        }
        tokio::spawn(follow_plan(Arc::clone(&shared)));
        Self { shared }
    }

    /// A new consumer. Dropping it releases everything it subscribed.
    pub fn consumer(&self) -> FeedConsumer {
        let id = ConsumerId(self.shared.next_consumer.fetch_add(1, Ordering::Relaxed));
        self.shared.consumers.fetch_add(1, Ordering::Relaxed);
        FeedConsumer {
            id,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every frame and connection event from now on.
    pub fn events(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.shared.events.subscribe()
    }

    /// A snapshot of the pool's health.
    pub fn health(&self) -> PoolHealth {
        let book = lock(&self.shared.book);
        let connections = self
            .shared
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut h = lock(&s.health).clone();
                h.keys = book.counts(i);
                h
            })
            .collect();
        PoolHealth {
            plus: self.shared.tokens.plus(),
            allowed_connections: book.allowed(),
            keys: book.total_keys(),
            unplaced: book.unplaced(),
            consumers: self.shared.consumers.load(Ordering::Relaxed) as usize,
            connections,
        }
    }

    /// Closes every socket and stops the tasks; later subscriptions are refused.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }
}

/// Re-sizes the pool when a new token's plan allows another number of connections
/// (`isPlusPlan`: 2 or 5): the book adopts the allowance and spreads the keys over it;
/// the connections whose keys changed are woken (the others beyond it close, as unused).
/// Without a token (expired) nothing changes: the next token decides.
async fn follow_plan(shared: Arc<Shared>) {
    let mut tokens = shared.tokens.rx.clone();
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            changed = tokens.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
        if tokens.borrow_and_update().is_none() {
            continue;
        }
        let plus = shared.tokens.plus();
        let allowed = allowance(plus, shared.config.max_connections);
        let (from, touched, unplaced) = {
            let mut book = lock(&shared.book);
            let from = book.allowed();
            if from == allowed {
                continue;
            }
            let touched = book.rebalance(allowed);
            (from, touched, book.unplaced())
        };
        tracing::info!(
            plus,
            from,
            to = allowed,
            moved_on = ?touched,
            "feed: the token's plan allows {allowed} feed connections (was {from}); keys spread over them"
        );
        if unplaced > 0 {
            tracing::warn!(
                unplaced,
                "feed: {unplaced} keys fit on none of the {allowed} connections the plan allows \
                 now; they stream again once room frees"
            );
        }
        shared.wake(&touched);
    }
}

/// One local consumer of a [`FeedPool`]. Dropping it unsubscribes what it asked for
/// (keys other consumers still want keep streaming).
pub struct FeedConsumer {
    id: ConsumerId,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FeedConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedConsumer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn check_keys(keys: &[String]) -> Result<(), SubscribeError> {
    for k in keys {
        let ok = k.len() <= 128
            && !k.chars().any(char::is_control)
            && k.split_once('|')
                .is_some_and(|(seg, id)| !seg.is_empty() && !id.trim().is_empty());
        if !ok {
            let shown: String = k.chars().take(64).filter(|c| !c.is_control()).collect();
            return Err(SubscribeError::InvalidKey(shown));
        }
    }
    Ok(())
}

impl FeedConsumer {
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    /// `sub`: streams `keys` in `mode` for this consumer (a key it has changes mode).
    pub fn subscribe<S: AsRef<str>>(
        &self,
        mode: SubscriptionMode,
        keys: &[S],
    ) -> Result<(), SubscribeError> {
        self.apply(keys, |book, keys, allowed, plus| {
            book.subscribe(self.id, mode, keys, allowed, plus)
        })
    }

    /// `change_mode`: only keys this consumer already has change.
    pub fn change_mode<S: AsRef<str>>(
        &self,
        mode: SubscriptionMode,
        keys: &[S],
    ) -> Result<(), SubscribeError> {
        self.apply(keys, |book, keys, allowed, plus| {
            book.change_mode(self.id, mode, keys, allowed, plus)
        })
    }

    /// `unsub`: this consumer no longer wants `keys`.
    pub fn unsubscribe<S: AsRef<str>>(&self, keys: &[S]) {
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        let touched = lock(&self.shared.book).unsubscribe(self.id, &keys);
        self.shared.wake(&touched);
    }

    /// What this consumer asked for: key -> mode.
    pub fn subscriptions(&self) -> BTreeMap<String, SubscriptionMode> {
        lock(&self.shared.book).of_consumer(self.id)
    }

    fn apply<S: AsRef<str>>(
        &self,
        keys: &[S],
        op: impl FnOnce(&mut Book, &[String], usize, bool) -> Result<Vec<usize>, SubscribeError>,
    ) -> Result<(), SubscribeError> {
        if self.shared.stopped() {
            return Err(SubscribeError::Stopped);
        }
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        check_keys(&keys)?;
        let plus = self.shared.tokens.plus();
        let mut book = lock(&self.shared.book);
        let allowed = book.allowed();
        let touched = op(&mut book, &keys, allowed, plus)?;
        drop(book);
        self.shared.wake(&touched);
        Ok(())
    }
}

impl Drop for FeedConsumer {
    fn drop(&mut self) {
        let touched = lock(&self.shared.book).release(self.id);
        self.shared.consumers.fetch_sub(1, Ordering::Relaxed);
        self.shared.wake(&touched);
    }
}
