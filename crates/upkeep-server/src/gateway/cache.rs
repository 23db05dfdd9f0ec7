//! The cached fallback: the last good answer of each configured market-data GET
//! (quotes, OHLC, historical candles), per account, path and canonical query. When
//! Upstox fails (5xx, a timeout, no connection, or no valid token while a renewal is
//! pending) the gateway serves the cached answer with `X-Upkeep-Stale: <age seconds>`
//! and `Warning: 110 - "Response is Stale"`, up to `max_age`; beyond it, a 503 that
//! says so.
//!
//! Memory is bounded by entry count and total body bytes (the least recently stored
//! go first). With `store = true` answers are also written to the store (at most one
//! write per query every [`PERSIST_EVERY`], in the background), and a query missing
//! from memory is looked up there, so a restart keeps them. Ages come from the daemon's [`Clock`], so a test moves the simulator's
//! clock instead of waiting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};
use upkeep_core::Clock;
use upkeep_core::config::gateway_budget::StaleCacheConfig;
use upkeep_store::{CachedAnswerRecord, TokenStore};

/// Header carrying the age, in whole seconds, of a cached answer.
pub const STALE_HEADER: &str = "x-upkeep-stale";
/// RFC 7234's warning for a stale answer.
pub const STALE_WARNING: &str = "110 - \"Response is Stale\"";

/// A query's answer is written to the store at most this often.
pub const PERSIST_EVERY: SignedDuration = SignedDuration::from_secs(10);

/// What is cached: one account's GET of one path with one query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub account: String,
    pub path: String,
    /// The query in canonical form (see [`canonical_query`]).
    pub query: String,
}

impl CacheKey {
    pub fn new(account: &str, path: &str, raw_query: Option<&str>) -> Self {
        Self {
            account: account.to_owned(),
            path: path.to_owned(),
            query: canonical_query(raw_query.unwrap_or("")),
        }
    }

    fn weight(&self) -> usize {
        self.account.len() + self.path.len() + self.query.len()
    }
}

/// The query with its parameters percent-decoded, sorted by name (the order of
/// repeated names kept) and encoded one way, so `a=1&b=NSE_EQ%7CX` and
/// `b=NSE_EQ|X&a=1` are the same query.
pub fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(raw.len());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, k);
        out.push('=');
        encode_into(&mut out, v);
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A good answer as kept: status, content type, body and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub stored_at: Timestamp,
}

/// What the cache offers when upstream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// A cached answer within `max_age`.
    Stale {
        answer: Arc<CachedAnswer>,
        age_secs: u64,
    },
    /// The cached answer is older than `max_age`.
    TooOld { age_secs: u64 },
    /// Nothing cached for this query.
    Miss,
}

/// Counters since start, and what is held now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    /// Answers stored (or refreshed).
    pub stored: u64,
    /// Stale answers served.
    pub stale_served: u64,
    /// Failures answered 503 because the cached answer was too old.
    pub too_old: u64,
    /// Failures with nothing cached.
    pub misses: u64,
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    stale_served: AtomicU64,
    too_old: AtomicU64,
    misses: AtomicU64,
}

struct Entry {
    seq: u64,
    answer: Arc<CachedAnswer>,
    /// When this query's answer last went to the store.
    persisted_at: Option<Timestamp>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<CacheKey, Entry>,
    /// Store order: the oldest sequence number is evicted first.
    order: BTreeMap<u64, CacheKey>,
    next_seq: u64,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &CacheKey) -> Option<Entry> {
        let old = self.by_key.remove(key)?;
        self.order.remove(&old.seq);
        self.bytes = self
            .bytes
            .saturating_sub(old.answer.body.len() + key.weight());
        Some(old)
    }

    /// Inserts within the bounds, evicting the oldest; false if it cannot fit at all.
    fn insert(&mut self, s: &StaleCacheConfig, key: CacheKey, entry: Entry) -> bool {
        let weight = entry.answer.body.len() + key.weight();
        if entry.answer.body.len() > s.max_body_bytes || s.max_entries == 0 || weight > s.max_bytes
        {
            return false;
        }
        while self.by_key.len() >= s.max_entries || self.bytes + weight > s.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.bytes += weight;
        self.by_key.insert(key, Entry { seq, ..entry });
        true
    }
}

/// The cached fallback. Cheap to clone (shared).
#[derive(Clone)]
pub struct StaleCache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: StaleCacheConfig,
    clock: Arc<dyn Clock>,
    entries: Mutex<Entries>,
    counters: Counters,
    store: Option<Arc<dyn TokenStore>>,
}

impl std::fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleCache")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl StaleCache {
    pub fn new(settings: StaleCacheConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                clock,
                entries: Mutex::new(Entries::default()),
                counters: Counters::default(),
                store: None,
            }),
        }
    }

    /// The same cache, also kept in `store` when the settings say `store = true`.
    pub fn with_store(
        settings: StaleCacheConfig,
        clock: Arc<dyn Clock>,
        store: Arc<dyn TokenStore>,
    ) -> Self {
        let keep = settings.store;
        let mut c = Self::new(settings, clock);
        if let Some(inner) = Arc::get_mut(&mut c.inner)
            && keep
        {
            inner.store = Some(store);
        }
        c
    }

    pub fn settings(&self) -> &StaleCacheConfig {
        &self.inner.settings
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a `method` call of `path` (no query) keeps its last good answer: a GET
    /// under one of the configured prefixes.
    pub fn covers(&self, method: &str, path: &str) -> bool {
        method == "GET"
            && self
                .inner
                .settings
                .paths
                .iter()
                .any(|p| path.starts_with(p.as_str()))
    }

    /// Keeps `body` as the last good answer for `key` (call it for 2xx answers of
    /// covered requests). Too large a body is not kept, and drops an older one.
    pub fn remember(&self, key: CacheKey, status: u16, content_type: Option<&str>, body: Bytes) {
        let now = self.inner.clock.now();
        let answer = Arc::new(CachedAnswer {
            status,
            content_type: content_type.map(str::to_owned),
            body,
            stored_at: now,
        });
        let persist = {
            let mut e = self.entries();
            let persisted_at = e.remove(&key).and_then(|old| old.persisted_at);
            let due = self.inner.store.is_some()
                && persisted_at.is_none_or(|t| now.duration_since(t) >= PERSIST_EVERY);
            let entry = Entry {
                seq: 0,
                answer: answer.clone(),
                persisted_at: if due { Some(now) } else { persisted_at },
            };
            if !e.insert(&self.inner.settings, key.clone(), entry) {
                return;
            }
            due
        };
        self.inner.counters.stored.fetch_add(1, Ordering::Relaxed);
        if let (true, Some(store)) = (persist, self.inner.store.clone()) {
            let record = CachedAnswerRecord {
                account: key.account,
                path: key.path,
                query: key.query,
                status: answer.status,
                content_type: answer.content_type.clone(),
                body: answer.body.to_vec(),
                stored_at: answer.stored_at,
            };
            tokio::spawn(async move {
                if let Err(e) = store.put_cached_answer(&record).await {
                    tracing::warn!(account = %record.account, path = %record.path, error = %e, "could not keep a cached gateway answer in the store");
                }
            });
        }
    }

    /// What to answer for `key` now that upstream failed.
    pub async fn fallback(&self, key: &CacheKey) -> Fallback {
        let c = &self.inner.counters;
        let held = self.entries().by_key.get(key).map(|e| e.answer.clone());
        let found = match held {
            Some(a) => Some(a),
            None => self.load_from_store(key).await,
        };
        let Some(answer) = found else {
            c.misses.fetch_add(1, Ordering::Relaxed);
            return Fallback::Miss;
        };
        let age = self
            .inner
            .clock
            .now()
            .duration_since(answer.stored_at)
            .max(SignedDuration::ZERO);
        let age_secs = u64::try_from(age.as_secs()).unwrap_or(0);
        if age > self.inner.settings.max_age {
            c.too_old.fetch_add(1, Ordering::Relaxed);
            return Fallback::TooOld { age_secs };
        }
        c.stale_served.fetch_add(1, Ordering::Relaxed);
        Fallback::Stale { answer, age_secs }
    }

    /// The store's answer for `key`, also put back in memory.
    async fn load_from_store(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        let store = self.inner.store.as_ref()?;
        let record = match store
            .cached_answer(&key.account, &key.path, &key.query)
            .await
        {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!(account = %key.account, path = %key.path, error = %e, "could not read a cached gateway answer from the store");
                return None;
            }
        };
        let answer = Arc::new(CachedAnswer {
            status: record.status,
            content_type: record.content_type,
            body: Bytes::from(record.body),
            stored_at: record.stored_at,
        });
        let entry = Entry {
            seq: 0,
            answer: answer.clone(),
            persisted_at: Some(record.stored_at),
        };
        let mut e = self.entries();
        if !e.by_key.contains_key(key) {
            e.insert(&self.inner.settings, key.clone(), entry);
        }
        Some(answer)
    }

    /// Appends the cache's counters to `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.stats();
        for (name, kind, help, v) in [
            (
                "upkeep_gateway_stale_served_total",
                "counter",
                "Cached answers served because Upstox failed.",
                s.stale_served,
            ),
            (
                "upkeep_gateway_stale_too_old_total",
                "counter",
                "Upstox failures answered 503 because the cached answer was older than gateway.cache.max_age.",
                s.too_old,
            ),
            (
                "upkeep_gateway_cache_stored_total",
                "counter",
                "Good market-data answers kept for the fallback.",
                s.stored,
            ),
            (
                "upkeep_gateway_cache_entries",
                "gauge",
                "Answers held in memory for the fallback.",
                s.entries,
            ),
            (
                "upkeep_gateway_cache_bytes",
                "gauge",
                "Bytes held in memory for the fallback.",
                s.bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (entries, bytes) = {
            let e = self.entries();
            (e.by_key.len(), e.bytes)
        };
        CacheStats {
            entries: u64::try_from(entries).unwrap_or(u64::MAX),
            bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
            stored: g(&c.stored),
            stale_served: g(&c.stale_served),
            too_old: g(&c.too_old),
            misses: g(&c.misses),
        }
    }
}

/// The cached answer, marked stale: its status, content type and body, with
/// `X-Upkeep-Stale: <age>` and `Warning: 110`.
pub fn stale_response(answer: &CachedAnswer, age_secs: u64) -> Response {
    let mut r = Response::new(Body::from(answer.body.clone()));
    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    if let Some(ct) = answer
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(STALE_HEADER, HeaderValue::from(age_secs));
    h.insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Upstream failed and the cached answer is too old (or there is none): a 503 in
/// Upstox's error envelope, so SDK clients read it like any Upstox error.
pub fn unavailable_response(why: &str, fallback: &Fallback, max_age: SignedDuration) -> Response {
    let detail = match fallback {
        Fallback::TooOld { age_secs } => format!(
            "; the last good answer is {age_secs} s old, older than the {} s allowed (gateway.cache.max_age)",
            max_age.as_secs()
        ),
        Fallback::Miss => "; no earlier answer to this query is cached".to_string(),
        Fallback::Stale { .. } => String::new(),
    };
    let message = format!("Upstox is unavailable ({why}){detail}");
    let code = "UPKEEP_UPSTREAM_UNAVAILABLE";
    let body = serde_json::json!({
        "status": "error",
        "errors": [{
            "errorCode": code, "message": message, "propertyPath": null, "invalidValue": null,
            "error_code": code, "property_path": null, "invalid_value": null,
        }],
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Fallback::TooOld { age_secs } = fallback {
        r.headers_mut()
            .insert(STALE_HEADER, HeaderValue::from(*age_secs));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use upkeep_core::clock::ManualClock;

    const LTP: &str = "/v3/market-quote/ltp";

    fn t0() -> Timestamp {
        Timestamp::from_second(1_780_000_000).unwrap()
    }

    fn cache(settings: StaleCacheConfig) -> (StaleCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(t0()));
        (StaleCache::new(settings, clock.clone()), clock)
    }

    fn key(account: &str, q: &str) -> CacheKey {
        CacheKey::new(account, LTP, Some(q))
    }

    fn body(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    #[test]
    fn the_same_query_in_another_order_or_encoding_is_the_same_key() {
        assert_eq!(
            canonical_query("instrument_key=NSE_EQ%7CINE848E01016,NSE_EQ|INE669E01016&x=1"),
            canonical_query("x=1&instrument_key=NSE_EQ|INE848E01016,NSE_EQ%7cINE669E01016")
        );
        assert_ne!(canonical_query("a=1"), canonical_query("a=2"));
        assert_eq!(canonical_query(""), "");
        assert_eq!(
            canonical_query("a=%zz"),
            "a=%25zz",
            "a bad escape is kept as text"
        );
    }

    #[test]
    fn only_gets_under_the_configured_prefixes_are_covered() {
        let (c, _) = cache(StaleCacheConfig::default());
        assert!(c.covers("GET", LTP));
        assert!(c.covers("GET", "/v2/market-quote/quotes"));
        assert!(c.covers("GET", "/v3/historical-candle/NSE_EQ|X/days/1/2026-01-01"));
        assert!(!c.covers("POST", LTP));
        assert!(!c.covers("GET", "/v2/user/profile"));
        assert!(!c.covers("GET", "/v2/order/retrieve-all"));
    }

    #[tokio::test]
    async fn a_failure_gets_the_last_good_answer_with_its_age() {
        let (c, clock) = cache(StaleCacheConfig::default());
        c.remember(
            key("main", "k=1"),
            200,
            Some("application/json"),
            body("old"),
        );
        c.remember(
            key("main", "k=1"),
            200,
            Some("application/json"),
            body("new"),
        );
        clock.advance(SignedDuration::from_secs(42));
        match c.fallback(&key("main", "k=1")).await {
            Fallback::Stale { answer, age_secs } => {
                assert_eq!(answer.body, body("new"));
                assert_eq!(age_secs, 42);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.stats().stale_served, 1);
        assert_eq!(c.stats().entries, 1);
    }

    #[tokio::test]
    async fn answers_are_kept_per_account() {
        let (c, _) = cache(StaleCacheConfig::default());
        c.remember(key("main", "k=1"), 200, None, body("main's"));
        assert_eq!(c.fallback(&key("other", "k=1")).await, Fallback::Miss);
        assert_eq!(c.fallback(&key("main", "k=2")).await, Fallback::Miss);
        assert_eq!(c.stats().misses, 2);
    }

    #[tokio::test]
    async fn an_answer_older_than_max_age_is_not_served() {
        let (c, clock) = cache(StaleCacheConfig {
            max_age: SignedDuration::from_mins(5),
            ..StaleCacheConfig::default()
        });
        c.remember(key("main", "k=1"), 200, None, body("x"));
        clock.advance(SignedDuration::from_secs(300));
        assert!(matches!(
            c.fallback(&key("main", "k=1")).await,
            Fallback::Stale { age_secs: 300, .. }
        ));
        clock.advance(SignedDuration::from_secs(1));
        assert_eq!(
            c.fallback(&key("main", "k=1")).await,
            Fallback::TooOld { age_secs: 301 }
        );
        assert_eq!(c.stats().too_old, 1);
    }

    #[tokio::test]
    async fn the_oldest_answers_go_first_when_full() {
        let (c, _) = cache(StaleCacheConfig {
            max_entries: 2,
            ..StaleCacheConfig::default()
        });
        c.remember(key("main", "k=1"), 200, None, body("1"));
        c.remember(key("main", "k=2"), 200, None, body("2"));
        c.remember(key("main", "k=1"), 200, None, body("1 again"));
        c.remember(key("main", "k=3"), 200, None, body("3"));
        assert_eq!(c.fallback(&key("main", "k=2")).await, Fallback::Miss);
        assert!(matches!(
            c.fallback(&key("main", "k=1")).await,
            Fallback::Stale { .. }
        ));
        assert_eq!(c.stats().entries, 2);
    }

    #[tokio::test]
    async fn memory_is_bounded_by_bytes_and_large_answers_are_not_kept() {
        let (c, _) = cache(StaleCacheConfig {
            max_bytes: 100,
            max_body_bytes: 60,
            ..StaleCacheConfig::default()
        });
        c.remember(key("a", "k=1"), 200, None, Bytes::from(vec![b'x'; 40]));
        c.remember(key("a", "k=2"), 200, None, Bytes::from(vec![b'x'; 40]));
        assert_eq!(c.stats().entries, 1, "two would pass 100 bytes with keys");
        assert!(c.stats().bytes <= 100);
        c.remember(key("a", "k=2"), 200, None, Bytes::from(vec![b'x'; 61]));
        assert_eq!(
            c.fallback(&key("a", "k=2")).await,
            Fallback::Miss,
            "too large"
        );
    }

    #[tokio::test]
    async fn a_clock_moved_back_gives_age_zero_not_a_panic() {
        let (c, clock) = cache(StaleCacheConfig::default());
        c.remember(key("main", "k=1"), 200, None, body("x"));
        clock.advance(SignedDuration::from_secs(-3600));
        assert!(matches!(
            c.fallback(&key("main", "k=1")).await,
            Fallback::Stale { age_secs: 0, .. }
        ));
    }

    #[test]
    fn the_stale_answer_carries_its_age_and_the_warning() {
        let a = CachedAnswer {
            status: 200,
            content_type: Some("application/json".into()),
            body: body("{}"),
            stored_at: t0(),
        };
        let r = stale_response(&a, 17);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[STALE_HEADER], "17");
        assert_eq!(r.headers()[header::WARNING], STALE_WARNING);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn metrics_count_stale_answers_served() {
        let (c, _) = cache(StaleCacheConfig::default());
        c.remember(key("main", "k=1"), 200, None, body("x"));
        let _ = c.fallback(&key("main", "k=1")).await;
        let mut text = String::new();
        c.render_metrics(&mut text);
        assert!(
            text.contains("upkeep_gateway_stale_served_total 1\n"),
            "{text}"
        );
        assert!(text.contains("upkeep_gateway_cache_entries 1\n"), "{text}");
    }

    #[tokio::test]
    async fn too_old_is_a_clear_503_in_the_upstox_envelope() {
        let r = unavailable_response(
            "HTTP 500",
            &Fallback::TooOld { age_secs: 901 },
            SignedDuration::from_mins(15),
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let b = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errors"][0]["errorCode"], "UPKEEP_UPSTREAM_UNAVAILABLE");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("901 s old") && msg.contains("900 s"), "{msg}");
    }

    #[tokio::test]
    async fn with_store_answers_survive_a_restart_and_stay_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("upkeep.db").display());
        let store = upkeep_store::open_store(&url, upkeep_store::MasterKey::generate())
            .await
            .unwrap();
        store.upsert_account("main", "live", t0()).await.unwrap();
        let settings = StaleCacheConfig {
            store: true,
            ..StaleCacheConfig::default()
        };
        let clock = Arc::new(ManualClock::new(t0()));
        let first = StaleCache::with_store(settings.clone(), clock.clone(), store.clone());
        first.remember(
            key("main", "k=1"),
            200,
            Some("application/json"),
            body("kept"),
        );
        // The write happens in the background; wait for it without a timer.
        while store
            .cached_answer("main", LTP, "k=1")
            .await
            .unwrap()
            .is_none()
        {
            tokio::task::yield_now().await;
        }
        clock.advance(SignedDuration::from_secs(30));
        let second = StaleCache::with_store(settings, clock, store.clone());
        match second.fallback(&key("main", "k=1")).await {
            Fallback::Stale { answer, age_secs } => {
                assert_eq!(answer.body, body("kept"));
                assert_eq!(age_secs, 30);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(second.fallback(&key("other", "k=1")).await, Fallback::Miss);
        store.close().await;
    }
}
