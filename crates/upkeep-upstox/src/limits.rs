//! Upstox's published rate limits, as data, and which limit an API path falls under.
//!
//! Upstox enforces its limits **per user and per API** (reference §5.3, §11): every token
//! of one user shares them, and each standard API has its own counters, while the order
//! placement APIs (place, modify, cancel, multi-order, GTT) are counted together. Since
//! the exchange circular of 5 May 2025:
//!
//! | group | /second | /minute | /30 minutes |
//! |---|---|---|---|
//! | order placement (regular algo) | 10 | 500 | 2000 |
//! | order placement (SEBI-registered algo) | 50 | 500 | 2000 |
//! | other standard APIs | 50 | 500 | 2000 |
//! | payout standard | 10 | 500 | 2000 |
//! | payout restricted | – | 10 | 300 |
//! | apply IPO | 1 | 10 | 300 |
//!
//! The reference names no paths for the payout and IPO APIs; [`crate::gateway::endpoint`]
//! guesses them from `/payout`, `/payin` and `/ipo` in the path.

use std::borrow::Cow;
use std::time::Duration;

/// A limit group of the published table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiGroup {
    /// Order placement, modification and cancellation (all counted together).
    Order,
    /// Every other standard API (profile, funds, quotes, holdings, candles, ...).
    Standard,
    /// Payout standard access (get payouts, modes, payins).
    PayoutStandard,
    /// Payout requests, modifications and cancellations.
    PayoutRestricted,
    /// Apply for an IPO.
    Ipo,
}

impl ApiGroup {
    /// Every group, in table order.
    pub const ALL: [ApiGroup; 5] = [
        ApiGroup::Order,
        ApiGroup::Standard,
        ApiGroup::PayoutStandard,
        ApiGroup::PayoutRestricted,
        ApiGroup::Ipo,
    ];

    /// The name used in configuration and metrics (`order`, `standard`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ApiGroup::Order => "order",
            ApiGroup::Standard => "standard",
            ApiGroup::PayoutStandard => "payout_standard",
            ApiGroup::PayoutRestricted => "payout_restricted",
            ApiGroup::Ipo => "ipo",
        }
    }

    /// The group called `name` (see [`ApiGroup::name`]).
    pub fn from_name(name: &str) -> Option<ApiGroup> {
        ApiGroup::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The published limits of this group (regular algo for orders).
    pub fn published(self) -> RateLimits {
        match self {
            ApiGroup::Order => RateLimits::new(Some(10), Some(500), Some(2000)),
            ApiGroup::Standard => RateLimits::new(Some(50), Some(500), Some(2000)),
            ApiGroup::PayoutStandard => RateLimits::new(Some(10), Some(500), Some(2000)),
            ApiGroup::PayoutRestricted => RateLimits::new(None, Some(10), Some(300)),
            ApiGroup::Ipo => RateLimits::new(Some(1), Some(10), Some(300)),
        }
    }
}

/// The order placement limits of a SEBI-registered algo (a user may configure these).
pub const REGISTERED_ALGO_ORDER: RateLimits = RateLimits::new(Some(50), Some(500), Some(2000));

/// How many calls a window admits, for the three published windows (`None` = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_30_minutes: Option<u32>,
}

/// One second, one minute, thirty minutes: the published windows.
pub const WINDOWS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(60),
    Duration::from_secs(30 * 60),
];

impl RateLimits {
    pub const fn new(
        per_second: Option<u32>,
        per_minute: Option<u32>,
        per_30_minutes: Option<u32>,
    ) -> Self {
        Self {
            per_second,
            per_minute,
            per_30_minutes,
        }
    }

    /// The (window, limit) pairs that are set, shortest window first.
    pub fn windows(&self) -> impl Iterator<Item = (Duration, u32)> + '_ {
        WINDOWS
            .into_iter()
            .zip([self.per_second, self.per_minute, self.per_30_minutes])
            .filter_map(|(w, l)| l.map(|l| (w, l)))
    }
}

/// What Upstox counts a call against: its group and the API within it (all order
/// placement calls share one API, `orders`; a standard API is its path up to the first
/// parameter, e.g. `/v3/historical-candle/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKey {
    pub group: ApiGroup,
    /// Borrowed for every known API, so building a key costs no allocation.
    pub api: Cow<'static, str>,
}

/// The API a request path is counted against. `path` is the Upstox path without the
/// query (`/v3/market-quote/ltp`); a query, if present, is ignored. The group and the
/// template come from [`crate::gateway::endpoint`]; a path it does not know is counted
/// per path up to its first parameter.
pub fn api_of(path: &str) -> ApiKey {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let ep = crate::gateway::endpoint(path);
    let api = match ep.group {
        ApiGroup::Order => Cow::Borrowed("orders"),
        _ if ep.template != "other" => Cow::Borrowed(ep.template),
        _ => Cow::Owned(api_template(path)),
    };
    ApiKey {
        group: ep.group,
        api,
    }
}

/// The path up to its first parameter segment (a segment with a digit, an instrument
/// key's `|` or `:`, an escape or an upper-case letter), which becomes `*`; the version
/// segment (`v2`, `v3`) is kept. Merging two APIs only makes the budget stricter, never
/// looser, so an unknown shape errs on the safe side.
fn api_template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        out.push('/');
        let version = i == 0 && is_version(seg);
        if !version && is_parameter(seg) {
            out.push('*');
            return out;
        }
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_version(seg: &str) -> bool {
    seg.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_parameter(seg: &str) -> bool {
    seg.bytes()
        .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || matches!(b, b'|' | b':' | b'%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_limits_match_the_table() {
        let std = ApiGroup::Standard.published();
        assert_eq!(
            std.windows().collect::<Vec<_>>(),
            vec![
                (Duration::from_secs(1), 50),
                (Duration::from_secs(60), 500),
                (Duration::from_secs(1800), 2000)
            ]
        );
        assert_eq!(ApiGroup::Order.published().per_second, Some(10));
        assert_eq!(REGISTERED_ALGO_ORDER.per_second, Some(50));
        let restricted = ApiGroup::PayoutRestricted.published();
        assert_eq!(restricted.per_second, None);
        assert_eq!(restricted.windows().count(), 2);
        assert_eq!(ApiGroup::Ipo.published().per_minute, Some(10));
    }

    #[test]
    fn group_names_round_trip() {
        for g in ApiGroup::ALL {
            assert_eq!(ApiGroup::from_name(g.name()), Some(g));
        }
        assert_eq!(ApiGroup::from_name("orders"), None);
    }

    #[test]
    fn every_order_placement_path_shares_one_api() {
        for p in [
            "/v2/order/place",
            "/v3/order/place",
            "/v2/order/modify",
            "/v3/order/modify",
            "/v2/order/cancel",
            "/v3/order/cancel?order_id=1",
            "/v2/order/multi/place",
            "/v3/order/gtt/place",
            "/v2/order/positions/exit",
        ] {
            let k = api_of(p);
            assert_eq!(k.group, ApiGroup::Order, "{p}");
            assert_eq!(k.api, "orders", "{p}");
        }
    }

    #[test]
    fn order_book_reads_are_standard_apis() {
        let k = api_of("/v2/order/retrieve-all");
        assert_eq!(k.group, ApiGroup::Standard);
        assert_eq!(k.api, "/v2/order/retrieve-all");
    }

    #[test]
    fn standard_apis_are_counted_per_path_without_query() {
        let a = api_of("/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016");
        assert_eq!(a.group, ApiGroup::Standard);
        assert_eq!(a.api, "/v3/market-quote/ltp");
        assert_ne!(a, api_of("/v2/market-quote/ltp"));
        assert_ne!(a, api_of("/v2/user/profile"));
    }

    #[test]
    fn path_parameters_collapse_into_one_api() {
        assert_eq!(
            api_of("/v3/historical-candle/NSE_EQ%7CINE848E01016/minutes/1/2025-01-02").api,
            api_of("/v3/historical-candle/NSE_EQ|INE669E01016/days/1/2025-01-02").api,
        );
        assert_eq!(
            api_of("/v2/market/holidays/2026-11-24").api,
            "/v2/market/holidays/{}"
        );
        assert_eq!(api_of("/v2/market/holidays").api, "/v2/market/holidays");
        assert_eq!(api_of("/v9/new-api/NSE_EQ|X/7").api, "/v9/new-api/*");
        assert_eq!(api_of("/v9/new-api/list").api, "/v9/new-api/list");
        assert_eq!(api_of("").api, "/");
    }
}
