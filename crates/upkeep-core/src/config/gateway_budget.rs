//! `[gateway.budget]` and `[gateway.cache]`: the gateway's shared rate budget and its
//! cached fallback for market data.
//!
//! ```toml
//! [gateway.budget]
//! enabled = true            # false: no budget (e.g. to benchmark the proxy alone)
//! queue_max = 64            # requests waiting for a slot, per user; more get a 429
//! queue_wait_ms = 1000      # the longest a request waits for a slot
//! max_backoff = "60s"       # cap on an upstream 429's Retry-After
//! [gateway.budget.rate_limits.order]   # override a group's published limits
//! per_second = 50                      # (a SEBI-registered algo)
//!
//! [gateway.cache]
//! paths = ["/v2/market-quote/", "/v3/market-quote/", "/v2/historical-candle/", "/v3/historical-candle/"]
//! max_age = "15m"           # older cached answers are not served (503 instead)
//! max_entries = 10000
//! max_bytes = 67108864      # all cached bodies together (the oldest go first)
//! max_body_bytes = 1048576  # larger answers are not cached
//! store = false             # also keep them in the store (survives a restart)
//! ```

use jiff::SignedDuration;
use serde::Deserialize;

use super::{Collector, ConfigError, de_duration};

/// `[gateway.budget]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Off: requests go upstream without the budget (Upstox may then answer 429).
    pub enabled: bool,
    /// Requests of one user that may wait for a slot at once; beyond it, 429 at once.
    pub queue_max: usize,
    /// The longest a request waits for a slot before upkeep answers 429.
    pub queue_wait_ms: u64,
    /// An upstream 429 stops the user's requests for its `Retry-After` (1 s when
    /// absent), at most this long.
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: SignedDuration,
    /// Overrides of the published limits, per group.
    pub rate_limits: RateLimitOverrides,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_max: 64,
            queue_wait_ms: 1000,
            max_backoff: SignedDuration::from_secs(60),
            rate_limits: RateLimitOverrides::default(),
        }
    }
}

/// `[gateway.budget.rate_limits.<group>]`: the groups of Upstox's table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitOverrides {
    pub order: Option<WindowLimits>,
    pub standard: Option<WindowLimits>,
    pub payout_standard: Option<WindowLimits>,
    pub payout_restricted: Option<WindowLimits>,
    pub ipo: Option<WindowLimits>,
}

impl RateLimitOverrides {
    /// (group name, override) for every group set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &WindowLimits)> {
        [
            ("order", &self.order),
            ("standard", &self.standard),
            ("payout_standard", &self.payout_standard),
            ("payout_restricted", &self.payout_restricted),
            ("ipo", &self.ipo),
        ]
        .into_iter()
        .filter_map(|(n, o)| o.as_ref().map(|o| (n, o)))
    }
}

/// A group's limits per window; a window left out keeps its published value, `0`
/// removes that window's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowLimits {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_30_minutes: Option<u32>,
}

/// `[gateway.cache]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaleCacheConfig {
    /// Path prefixes of the GETs whose last good answer is kept (empty = no cache).
    pub paths: Vec<String>,
    /// A cached answer older than this is not served; the client gets a 503.
    #[serde(deserialize_with = "de_duration")]
    pub max_age: SignedDuration,
    /// Cached answers kept in memory, all accounts together (the oldest go first).
    pub max_entries: usize,
    /// All cached bodies together, in memory (the oldest go first).
    pub max_bytes: usize,
    /// Answers larger than this are not cached.
    pub max_body_bytes: usize,
    /// Also keep the answers in the store, so a restart keeps them.
    pub store: bool,
}

impl Default for StaleCacheConfig {
    fn default() -> Self {
        Self {
            paths: [
                "/v2/market-quote/",
                "/v3/market-quote/",
                "/v2/historical-candle/",
                "/v3/historical-candle/",
            ]
            .map(String::from)
            .to_vec(),
            max_age: SignedDuration::from_mins(15),
            max_entries: 10_000,
            max_bytes: 64 << 20,
            max_body_bytes: 1 << 20,
            store: false,
        }
    }
}

/// Checks both sections on their own; `prefix` is where they sit (`gateway`).
pub fn check(
    budget: &BudgetConfig,
    cache: &StaleCacheConfig,
    prefix: &str,
) -> Result<(), ConfigError> {
    let mut c = Collector(Vec::new());
    validate(budget, cache, prefix, &mut c);
    c.finish()
}

/// Checks both sections into the whole configuration's collector.
pub(super) fn validate(
    budget: &BudgetConfig,
    cache: &StaleCacheConfig,
    prefix: &str,
    c: &mut Collector,
) {
    if budget.queue_wait_ms > 60_000 {
        c.push(
            format!("{prefix}.budget.queue_wait_ms"),
            format!(
                "{} ms is too long for a client to wait; use at most 60000",
                budget.queue_wait_ms
            ),
        );
    }
    if budget.max_backoff.is_negative() || budget.max_backoff > SignedDuration::from_mins(30) {
        c.push(
            format!("{prefix}.budget.max_backoff"),
            "must be between 0s and 30m",
        );
    }
    for path in &cache.paths {
        if !path.starts_with('/') {
            c.push(
                format!("{prefix}.cache.paths"),
                format!("\"{path}\" is not a path prefix; use e.g. /v3/market-quote/"),
            );
        }
    }
    if !cache.max_age.is_positive() {
        c.push(
            format!("{prefix}.cache.max_age"),
            "must be positive, e.g. 15m",
        );
    }
    if cache.max_entries == 0 && !cache.paths.is_empty() {
        c.push(
            format!("{prefix}.cache.max_entries"),
            "must be at least 1 (or set paths = [] to turn the cache off)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        #[serde(default)]
        budget: BudgetConfig,
        #[serde(default)]
        cache: StaleCacheConfig,
    }

    fn parse(text: &str) -> Result<Wrapper, toml::de::Error> {
        toml::from_str(text)
    }

    fn problems(w: &Wrapper) -> Vec<String> {
        let mut c = Collector(Vec::new());
        validate(&w.budget, &w.cache, "gateway", &mut c);
        c.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_cache_quotes_and_candles_and_queue_briefly() {
        let w = parse("").unwrap();
        assert_eq!(w.budget.queue_max, 64);
        assert_eq!(w.budget.queue_wait_ms, 1000);
        assert_eq!(w.budget.rate_limits.iter().count(), 0);
        assert!(w.cache.paths.iter().any(|p| p == "/v3/market-quote/"));
        assert!(!w.cache.store);
        assert!(problems(&w).is_empty());
    }

    #[test]
    fn a_group_override_keeps_the_windows_it_does_not_name() {
        let w = parse(
            "[budget]\nqueue_max = 8\n[budget.rate_limits.order]\nper_second = 50\n[cache]\nmax_age = \"2m\"\nstore = true\n",
        )
        .unwrap();
        assert_eq!(w.budget.queue_max, 8);
        let o: Vec<_> = w.budget.rate_limits.iter().collect();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].0, "order");
        assert_eq!(o[0].1.per_second, Some(50));
        assert_eq!(o[0].1.per_minute, None);
        assert_eq!(w.cache.max_age, SignedDuration::from_mins(2));
        assert!(w.cache.store);
    }

    #[test]
    fn an_unknown_group_or_key_is_refused() {
        assert!(parse("[budget.rate_limits.orders]\nper_second = 5\n").is_err());
        assert!(parse("[budget]\nqueue_wait = 5\n").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let w = parse(
            "[budget]\nqueue_wait_ms = 600000\n[cache]\npaths = [\"v3/market-quote\"]\nmax_age = \"0\"\n",
        )
        .unwrap();
        let p = problems(&w);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("gateway.budget.queue_wait_ms:"), "{p:?}");
        assert!(p[1].starts_with("gateway.cache.paths:"), "{p:?}");
        assert!(p[2].starts_with("gateway.cache.max_age:"), "{p:?}");
    }
}
