//! The consumer hub: local consumers of one account's feed, each with its own
//! subscriptions and its own bounded queue.
//!
//! Frames come in as the bytes Upstox sent ([`Hub::publish`]). Each is split at the wire
//! level once ([`upkeep_upstox::feed::split`]); a consumer that wants every instrument
//! of a frame gets the same buffer (a reference count, no copy), one that wants some of
//! them a filtered copy, built once per distinct subset per frame. An entry streamed in a
//! richer mode than a consumer asked for (the upstream streams a key once, in the
//! richest mode wanted) is reshaped for it ([`upkeep_upstox::feed::reshape`]), once per
//! entry and mode per frame; consumers that asked for the streamed mode get the upstream
//! bytes. The hub keeps the last
//! `feeds` entry of every instrument and the last `market_info`: a new consumer gets that
//! `market_info` first, and every `sub` is answered at once with a snapshot of the
//! requested keys from that cache (shaped for the consumer's mode).
//!
//! A consumer's queue holds at most [`HubConfig::queue`] frames. At the limit, the oldest
//! frame that carries only ltpc data is dropped to make room (drop-oldest: a newer
//! price supersedes it); a consumer that has lost [`HubConfig::queue`] frames since its
//! queue was last empty, or whose full queue holds nothing droppable, is closed with the
//! reason. Nothing a consumer does (or fails to do) blocks [`Hub::publish`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::Notify;
use upkeep_upstox::feed::{self, FeedRequest, FeedType, FrameParts, RequestMode, SubscriptionMode};

/// How the hub treats consumers.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames a consumer may have queued (see the module docs).
    pub queue: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { queue: 1024 }
    }
}

/// Where consumers' subscriptions go: the upstream pool, or a test's stand-in.
pub trait UpstreamLink: Send + Sync + 'static {
    /// A subscriber for one new consumer; dropping it releases what it subscribed.
    fn open(&self) -> Box<dyn UpstreamSubscriber>;
}

/// One consumer's subscriptions upstream. Errors are one line, shown to the consumer.
pub trait UpstreamSubscriber: Send + 'static {
    fn subscribe(&self, mode: SubscriptionMode, keys: &[String]) -> Result<(), String>;
    fn change_mode(&self, mode: SubscriptionMode, keys: &[String]) -> Result<(), String>;
    fn unsubscribe(&self, keys: &[String]);
}

/// Which door a consumer came through (for health).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerKind {
    /// Protobuf frames, as Upstox sends them.
    Protobuf,
    /// The SDK's JSON view (`/ws/ticks`).
    Json,
}

/// What a consumer reads next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One `FeedResponse` with only what the consumer subscribed to.
    Frame(Bytes),
    /// A notice about the upstream feed for a JSON consumer (a JSON text frame:
    /// `{"type":"upstream",...}`); protobuf consumers get none.
    Notice(String),
    /// The hub closed the consumer; the reason is for the consumer.
    Closed(String),
}

/// Health of one consumer.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerHealth {
    pub id: u64,
    pub name: String,
    pub kind: ConsumerKind,
    /// Instruments it subscribed to.
    pub keys: usize,
    /// Frames waiting in its queue now (its lag, in frames).
    pub lag: usize,
    /// The longest its queue has been.
    pub max_lag: usize,
    pub delivered: u64,
    /// Frames dropped for it (drop-oldest, ltpc only).
    pub drops: u64,
}

/// Counters of the whole hub.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubHealth {
    /// Frames received from upstream.
    pub frames: u64,
    /// Frames that were not a `FeedResponse` (dropped).
    pub bad_frames: u64,
    /// Instruments with a cached last state.
    pub cached_keys: usize,
    /// Consumers closed for falling behind, since start.
    pub closed_slow: u64,
    pub consumers: Vec<ConsumerHealth>,
}

struct Item {
    data: Bytes,
    /// Only ltpc data: may be dropped for a newer price.
    droppable: bool,
    /// A notice (JSON text in `data`), not a frame.
    notice: bool,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    closed: Option<String>,
    delivered: u64,
    drops: u64,
    /// Drops since the queue was last empty.
    behind: u64,
    max_len: usize,
}

struct Slot {
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Slot {
    /// Queues a frame; `Err(reason)` when the consumer has to be closed.
    fn push(&self, data: Bytes, droppable: bool, limit: usize) -> Result<(), String> {
        self.push_item(
            Item {
                data,
                droppable,
                notice: false,
            },
            limit,
        )
    }

    fn push_item(&self, item: Item, limit: usize) -> Result<(), String> {
        let mut q = lock(&self.queue);
        if q.closed.is_some() {
            return Ok(());
        }
        if q.items.len() >= limit {
            let oldest_ltpc = q.items.iter().position(|i| i.droppable);
            match oldest_ltpc {
                Some(i) if q.behind < limit as u64 => {
                    q.items.remove(i);
                    q.drops += 1;
                    q.behind += 1;
                    metrics::counter!("upkeep_relay_consumer_drops_total").increment(1);
                }
                Some(_) => {
                    return Err(format!(
                        "too slow: lost {} frames since it last caught up ({limit} frames queued); \
                         read faster or subscribe fewer instruments",
                        q.behind
                    ));
                }
                None => {
                    return Err(format!(
                        "too slow: {limit} frames queued and none can be dropped (full-mode \
                         data); read faster or subscribe fewer instruments"
                    ));
                }
            }
        }
        q.items.push_back(item);
        q.max_len = q.max_len.max(q.items.len());
        drop(q);
        self.notify.notify_one();
        Ok(())
    }

    fn close(&self, reason: String) {
        let mut q = lock(&self.queue);
        if q.closed.is_none() {
            q.closed = Some(reason);
        }
        q.items.clear();
        drop(q);
        self.notify.notify_one();
    }
}

struct Entry {
    slot: Arc<Slot>,
    name: String,
    kind: ConsumerKind,
    wants: HashMap<String, SubscriptionMode>,
    upstream: Box<dyn UpstreamSubscriber>,
}

struct Cached {
    /// The `feeds` field as it came (key, length, entry).
    field: Vec<u8>,
    mode: RequestMode,
    /// The upstream connection it last came from.
    connection: usize,
}

/// An upstream connection that went down and has not come back yet.
struct Gap {
    since: Timestamp,
    cause: String,
    /// Consumers that had a key on that connection.
    consumers: Vec<u64>,
    /// Whether they got the connection's fresh `market_info` yet.
    told_market_info: bool,
}

/// The connection a frame published without one is counted on.
pub const NO_CONNECTION: usize = usize::MAX;

#[derive(Default)]
struct State {
    consumers: HashMap<u64, Entry>,
    cache: HashMap<String, Cached>,
    market_info: Option<Bytes>,
    /// The last `marketInfo`, canonical (sorted JSON): a repeat (each upstream
    /// connection opens with one, its maps in any order) is not passed on.
    market_status: String,
    last_ts: i64,
    /// Upstream connections down now, by index.
    gaps: HashMap<usize, Gap>,
    /// Why the hub was closed ([`Hub::close`]); no consumer is taken after it.
    shut: Option<String>,
    // scratch, reused per frame
    /// Per entry of the frame, what one consumer gets of it (see [`action`]).
    keep: Vec<u8>,
    /// Frames built this frame: (actions, bytes, droppable).
    memo: Vec<(Vec<u8>, Bytes, bool)>,
    /// Entries reshaped this frame: `[entry * TARGETS.len() + target]`.
    shaped: Vec<Option<Vec<u8>>>,
}

/// An entry the consumer does not want.
const SKIP: u8 = 0;
/// An entry the consumer gets as it came.
const AS_IS: u8 = 1;
/// Modes an entry may be reshaped to (`2 + index` in an action); full_d30 is never a
/// target (no mode is richer).
const TARGETS: [SubscriptionMode; 3] = [
    SubscriptionMode::Ltpc,
    SubscriptionMode::OptionGreeks,
    SubscriptionMode::Full,
];

/// What a consumer that wants `want` of a key gets of an entry streamed in `have`:
/// [`SKIP`], [`AS_IS`], or `2 + i` for the entry reshaped to `TARGETS[i]`.
fn action(have: RequestMode, want: Option<&SubscriptionMode>) -> u8 {
    match want {
        None => SKIP,
        Some(w) if feed::needs_reshape(have, *w) => TARGETS
            .iter()
            .position(|t| t == w)
            .map_or(AS_IS, |i| 2 + i as u8),
        Some(_) => AS_IS,
    }
}

/// The `feeds` field reshaped for `want`; as it came if it cannot be read.
fn reshaped(field: &[u8], want: SubscriptionMode) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    if feed::reshape(field, want, &mut out).is_err() {
        out.clear();
        out.extend_from_slice(field);
    }
    out
}

struct Shared {
    state: Mutex<State>,
    config: HubConfig,
    link: Box<dyn UpstreamLink>,
    next_id: AtomicU64,
    frames: AtomicU64,
    bad_frames: AtomicU64,
    closed_slow: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is complete before anything can panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The hub of one account's feed (a cheap handle; clones share it).
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(config: HubConfig, link: impl UpstreamLink) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                config,
                link: Box::new(link),
                next_id: AtomicU64::new(1),
                frames: AtomicU64::new(0),
                bad_frames: AtomicU64::new(0),
                closed_slow: AtomicU64::new(0),
            }),
        }
    }

    /// A new consumer; it gets the last `market_info` (if any) first.
    pub fn connect(&self, name: impl Into<String>, kind: ConsumerKind) -> Consumer {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
        });
        let upstream = self.shared.link.open();
        let mut st = lock(&self.shared.state);
        if let Some(why) = &st.shut {
            slot.close(why.clone());
            return Consumer {
                id,
                slot,
                hub: self.clone(),
            };
        }
        if let Some(mi) = &st.market_info {
            let _ = slot.push(mi.clone(), false, self.shared.config.queue);
        }
        st.consumers.insert(
            id,
            Entry {
                slot: Arc::clone(&slot),
                name: name.into(),
                kind,
                wants: HashMap::new(),
                upstream,
            },
        );
        drop(st);
        metrics::gauge!("upkeep_relay_consumers").increment(1.0);
        Consumer {
            id,
            slot,
            hub: self.clone(),
        }
    }

    /// One frame from upstream, as Upstox sent it. Never waits for a consumer.
    pub fn publish(&self, frame: Bytes) {
        self.publish_from(NO_CONNECTION, frame);
    }

    /// One frame from upstream connection `connection`, as Upstox sent it.
    pub fn publish_from(&self, connection: usize, frame: Bytes) {
        self.shared.frames.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("upkeep_relay_frames_total").increment(1);
        let parts = match feed::split(&frame) {
            Ok(p) => p,
            Err(e) => {
                self.shared.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "relay: dropped a frame that is not a FeedResponse");
                return;
            }
        };
        let limit = self.shared.config.queue;
        let mut guard = lock(&self.shared.state);
        let st = &mut *guard;
        if parts.current_ts != 0 {
            st.last_ts = parts.current_ts;
        }
        for p in &parts.feeds {
            match st.cache.get_mut(p.key) {
                Some(c) => {
                    c.field.clear();
                    c.field.extend_from_slice(p.field);
                    c.mode = p.mode;
                    c.connection = connection;
                }
                None => {
                    st.cache.insert(
                        p.key.to_owned(),
                        Cached {
                            field: p.field.to_vec(),
                            mode: p.mode,
                            connection,
                        },
                    );
                }
            }
        }
        let mut closing = Vec::new();
        if parts.has_market_info {
            st.market_info = Some(frame.clone());
            let status = canonical_market_info(&frame);
            let changed = st.market_status != status;
            if changed {
                st.market_status = status;
            }
            // A changed status goes to everyone, whatever they subscribed; after a gap,
            // the reconnected socket's market_info goes to those it left without data
            // (as their own reconnect to Upstox would have begun).
            let after_gap = st
                .gaps
                .get_mut(&connection)
                .filter(|g| !g.told_market_info)
                .map(|g| {
                    g.told_market_info = true;
                    g.consumers.clone()
                })
                .unwrap_or_default();
            for (id, e) in st
                .consumers
                .iter()
                .filter(|(id, _)| changed || after_gap.contains(id))
            {
                if let Err(why) = e.slot.push(frame.clone(), false, limit) {
                    closing.push((*id, why));
                }
            }
        } else if !parts.feeds.is_empty() {
            st.memo.clear();
            st.shaped.clear();
            let State {
                consumers,
                keep,
                memo,
                shaped,
                ..
            } = st;
            for (id, e) in consumers.iter() {
                keep.clear();
                keep.extend(
                    parts
                        .feeds
                        .iter()
                        .map(|p| action(p.mode, e.wants.get(p.key))),
                );
                if keep.iter().all(|a| *a == SKIP) {
                    continue;
                }
                let (data, droppable) = if keep.iter().all(|a| *a == AS_IS) {
                    let droppable = parts.feeds.iter().all(|p| p.mode == RequestMode::Ltpc);
                    (frame.clone(), droppable)
                } else if let Some((_, b, d)) = memo.iter().find(|(m, _, _)| m == keep) {
                    (b.clone(), *d)
                } else {
                    let (b, d) = assemble(&parts, keep, shaped, frame.len());
                    memo.push((keep.clone(), b.clone(), d));
                    (b, d)
                };
                if let Err(why) = e.slot.push(data, droppable, limit) {
                    closing.push((*id, why));
                }
            }
        }
        self.close_slow(st, closing);
    }

    /// Upstream connection `connection` lost its socket at `at`: the consumers with a key
    /// on it are told (JSON consumers get a notice; see [`Hub::upstream_up`]).
    pub fn upstream_down(&self, connection: usize, cause: &str, reason: &str, at: Timestamp) {
        let mut guard = lock(&self.shared.state);
        let st = &mut *guard;
        if st.gaps.contains_key(&connection) {
            return;
        }
        let mut affected: Vec<u64> = st
            .consumers
            .iter()
            .filter(|(_, e)| {
                e.wants.keys().any(|k| {
                    st.cache
                        .get(k.as_str())
                        .is_some_and(|c| c.connection == connection)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        affected.sort_unstable();
        let notice = serde_json::json!({
            "type": "upstream",
            "state": "down",
            "connection": connection,
            "cause": cause,
            "reason": reason,
            "since": at.to_string(),
        })
        .to_string();
        self.notify_json(st, &affected, &notice);
        st.gaps.insert(
            connection,
            Gap {
                since: at,
                cause: cause.to_owned(),
                consumers: affected,
                told_market_info: false,
            },
        );
    }

    /// Upstream connection `connection` is streaming again (its keys resubscribed), or
    /// is no longer needed (its keys moved to other connections): JSON consumers told
    /// of its gap get `{"type":"upstream","state":"up",...,"gap_ms"}`.
    /// Protobuf consumers got the reconnected socket's `market_info` already, and its
    /// snapshot of their keys follows, as after a reconnect of their own.
    pub fn upstream_up(&self, connection: usize, at: Timestamp) {
        let mut guard = lock(&self.shared.state);
        let st = &mut *guard;
        let Some(gap) = st.gaps.remove(&connection) else {
            return;
        };
        let gap_ms = (at - gap.since)
            .total(jiff::Unit::Millisecond)
            .map_or(0, |ms| ms.max(0.0) as u64);
        let notice = serde_json::json!({
            "type": "upstream",
            "state": "up",
            "connection": connection,
            "cause": gap.cause,
            "since": gap.since.to_string(),
            "gap_ms": gap_ms,
        })
        .to_string();
        self.notify_json(st, &gap.consumers, &notice);
    }

    fn notify_json(&self, st: &mut State, ids: &[u64], notice: &str) {
        let limit = self.shared.config.queue;
        let data = Bytes::copy_from_slice(notice.as_bytes());
        let mut closing = Vec::new();
        for id in ids {
            let Some(e) = st
                .consumers
                .get(id)
                .filter(|e| e.kind == ConsumerKind::Json)
            else {
                continue;
            };
            let item = Item {
                data: data.clone(),
                droppable: false,
                notice: true,
            };
            if let Err(why) = e.slot.push_item(item, limit) {
                closing.push((*id, why));
            }
        }
        self.close_slow(st, closing);
    }

    fn close_slow(&self, st: &mut State, closing: Vec<(u64, String)>) {
        for (id, why) in closing {
            if let Some(e) = st.consumers.remove(&id) {
                tracing::info!(consumer = %e.name, reason = %why, "relay: closing a slow consumer");
                self.shared.closed_slow.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("upkeep_relay_consumers_closed_total", "reason" => "slow")
                    .increment(1);
                metrics::gauge!("upkeep_relay_consumers").decrement(1.0);
                e.slot.close(why);
                // `e.upstream` drops here: its keys are released upstream.
            }
        }
    }

    /// Closes every consumer with `reason` (each reads it after what was already
    /// queued is dropped) and takes no new ones; their keys are released upstream.
    pub fn close(&self, reason: &str) {
        let gone: Vec<Entry> = {
            let mut st = lock(&self.shared.state);
            st.shut = Some(reason.to_owned());
            st.consumers.drain().map(|(_, e)| e).collect()
        };
        for e in &gone {
            e.slot.close(reason.to_owned());
        }
        metrics::gauge!("upkeep_relay_consumers").decrement(gone.len() as f64);
        // `gone` (and their upstream subscribers) drop outside the lock.
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).shut.is_some()
    }

    /// Health of the hub and of every consumer.
    pub fn health(&self) -> HubHealth {
        let st = lock(&self.shared.state);
        let mut consumers: Vec<ConsumerHealth> = st
            .consumers
            .iter()
            .map(|(id, e)| {
                let q = lock(&e.slot.queue);
                ConsumerHealth {
                    id: *id,
                    name: e.name.clone(),
                    kind: e.kind,
                    keys: e.wants.len(),
                    lag: q.items.len(),
                    max_lag: q.max_len,
                    delivered: q.delivered,
                    drops: q.drops,
                }
            })
            .collect();
        consumers.sort_by_key(|c| c.id);
        HubHealth {
            frames: self.shared.frames.load(Ordering::Relaxed),
            bad_frames: self.shared.bad_frames.load(Ordering::Relaxed),
            cached_keys: st.cache.len(),
            closed_slow: self.shared.closed_slow.load(Ordering::Relaxed),
            consumers,
        }
    }

    /// The cached last state of up to `max` instruments that some consumer subscribes
    /// now (the first by key), as one snapshot `FeedResponse`; `None` while the cache
    /// holds none of them. For a viewer (the dashboard): it subscribes nothing.
    pub fn latest(&self, max: usize) -> Option<Bytes> {
        let st = lock(&self.shared.state);
        let mut keys: Vec<&str> = st
            .consumers
            .values()
            .flat_map(|e| e.wants.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let fields: Vec<&[u8]> = keys
            .iter()
            .filter_map(|k| st.cache.get(*k))
            .take(max)
            .map(|c| c.field.as_slice())
            .collect();
        if fields.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len()).sum::<usize>() + 16);
        feed::write_snapshot(FeedType::LiveFeed, st.last_ts, fields, &mut out);
        Some(Bytes::from(out))
    }

    fn request(&self, id: u64, req: &FeedRequest) -> Result<(), String> {
        let limit = self.shared.config.queue;
        let mut guard = lock(&self.shared.state);
        let st = &mut *guard;
        let Some(e) = st.consumers.get_mut(&id) else {
            return Err("this consumer was closed".into());
        };
        let keys = req.instrument_keys();
        match (req.method(), req.mode()) {
            (feed::FeedMethod::Sub, mode) => {
                let mode = mode.unwrap_or(SubscriptionMode::Ltpc);
                e.upstream.subscribe(mode, keys)?;
                for k in keys {
                    e.wants.insert(k.clone(), mode);
                }
            }
            (feed::FeedMethod::ChangeMode, Some(mode)) => {
                // Only keys the consumer has change (as Upstox does).
                let mine: Vec<String> = keys
                    .iter()
                    .filter(|k| e.wants.contains_key(*k))
                    .cloned()
                    .collect();
                e.upstream.change_mode(mode, &mine)?;
                for k in &mine {
                    e.wants.insert(k.clone(), mode);
                }
            }
            (feed::FeedMethod::ChangeMode, None) => {
                return Err("change_mode needs a mode".into());
            }
            (feed::FeedMethod::Unsub, _) => {
                e.upstream.unsubscribe(keys);
                for k in keys {
                    e.wants.remove(k);
                }
                return Ok(());
            }
        }
        // The snapshot of what it just asked for, from the cache, before any newer tick.
        // Each entry shaped for the mode this consumer wants of it.
        let mut fields: Vec<std::borrow::Cow<'_, [u8]>> = Vec::new();
        let mut droppable = true;
        for k in keys {
            let (Some(c), Some(want)) = (st.cache.get(k.as_str()), e.wants.get(k)) else {
                continue;
            };
            if feed::needs_reshape(c.mode, *want) {
                fields.push(reshaped(&c.field, *want).into());
                droppable &= *want == SubscriptionMode::Ltpc;
            } else {
                fields.push(c.field.as_slice().into());
                droppable &= c.mode == RequestMode::Ltpc;
            }
        }
        if !fields.is_empty() {
            let mut out = Vec::with_capacity(fields.iter().map(|f| f.len()).sum::<usize>() + 16);
            feed::write_snapshot(
                FeedType::InitialFeed,
                st.last_ts,
                fields.iter().map(|f| f.as_ref()),
                &mut out,
            );
            if let Err(why) = e.slot.push(Bytes::from(out), droppable, limit) {
                e.slot.close(why.clone());
                st.consumers.remove(&id);
                return Err(why);
            }
        }
        Ok(())
    }

    fn disconnect(&self, id: u64) {
        let removed = lock(&self.shared.state).consumers.remove(&id);
        if removed.is_some() {
            metrics::gauge!("upkeep_relay_consumers").decrement(1.0);
        }
        // `removed` (and its upstream subscriber) drops outside the lock.
        drop(removed);
    }
}

/// The frame's `marketInfo` as sorted JSON, whatever order its maps came in.
fn canonical_market_info(frame: &[u8]) -> String {
    match feed::decode(frame) {
        Ok(f) => {
            let only = feed::FeedFrame {
                market_info: f.market_info,
                ..Default::default()
            };
            feed::SdkJsonWriter::new().render(&only).to_owned()
        }
        Err(_) => String::new(),
    }
}

/// The frame with the entries `keep` asks for, each as it came or reshaped (built once
/// per entry and target per frame, in `shaped`); and whether they all are ltpc data.
fn assemble(
    parts: &FrameParts<'_>,
    keep: &[u8],
    shaped: &mut Vec<Option<Vec<u8>>>,
    size: usize,
) -> (Bytes, bool) {
    let mut out = Vec::with_capacity(size);
    parts.write_others(&mut out);
    let mut droppable = true;
    for (i, (p, a)) in parts.feeds.iter().zip(keep).enumerate() {
        match *a {
            SKIP => {}
            AS_IS => {
                droppable &= p.mode == RequestMode::Ltpc;
                out.extend_from_slice(p.field);
            }
            a => {
                let t = usize::from(a - 2);
                let want = TARGETS[t];
                droppable &= want == SubscriptionMode::Ltpc;
                let at = i * TARGETS.len() + t;
                if shaped.len() <= at {
                    shaped.resize(parts.feeds.len() * TARGETS.len(), None);
                }
                let field = shaped[at].get_or_insert_with(|| reshaped(p.field, want));
                out.extend_from_slice(field);
            }
        }
    }
    (Bytes::from(out), droppable)
}

/// One local consumer. Dropping it unsubscribes everything it asked for.
pub struct Consumer {
    id: u64,
    slot: Arc<Slot>,
    hub: Hub,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("id", &self.id).finish()
    }
}

impl Consumer {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A client's `sub` / `unsub` / `change_mode` request, as it sent it.
    pub fn request_bytes(&self, bytes: &[u8]) -> Result<(), String> {
        let req = FeedRequest::parse(bytes).map_err(|e| e.to_string())?;
        self.request(&req)
    }

    /// Applies a request: upstream first (it may refuse), then this consumer's filter;
    /// a `sub` or `change_mode` queues a snapshot of the keys from the cache.
    pub fn request(&self, req: &FeedRequest) -> Result<(), String> {
        self.hub.request(self.id, req)
    }

    /// The next frame, or why the hub closed this consumer.
    pub async fn next(&self) -> Delivery {
        loop {
            if let Some(d) = self.try_next() {
                return d;
            }
            self.slot.notify.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_next(&self) -> Option<Delivery> {
        let mut q = lock(&self.slot.queue);
        if let Some(item) = q.items.pop_front() {
            q.delivered += 1;
            if q.items.is_empty() {
                q.behind = 0;
            }
            if item.notice {
                let text = String::from_utf8_lossy(&item.data).into_owned();
                return Some(Delivery::Notice(text));
            }
            return Some(Delivery::Frame(item.data));
        }
        q.closed.clone().map(Delivery::Closed)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}
