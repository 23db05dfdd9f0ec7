//! Sliding-window rate limits per user and API, on the simulator clock (Upstox: "per
//! API, per user"): every token of one user shares a bucket per API; each standard API
//! (by path) has its own; the order APIs (place, cancel, ...) share one.
//!
//! | group    | /second | /minute | /30 minutes |
//! |----------|---------|---------|-------------|
//! | standard | 50      | 500     | 2000        |
//! | order    | 10      | 500     | 2000        |
//!
//! The token endpoints (code exchange, token request) may get a per-app limit per
//! minute (`token_api_limit_per_minute`; unpublished). A request is counted only when
//! it is admitted.

use std::collections::{HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};

/// Which limit table applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Profile, funds, quotes, logout and other standard APIs.
    Standard,
    /// Order place / modify / cancel.
    Order,
}

impl Group {
    fn limits(self) -> [(SignedDuration, usize); 3] {
        let per_second = match self {
            Group::Standard => 50,
            Group::Order => 10,
        };
        [
            (SignedDuration::from_secs(1), per_second),
            (SignedDuration::from_secs(60), 500),
            (SignedDuration::from_secs(30 * 60), 2000),
        ]
    }
}

const LONGEST: SignedDuration = SignedDuration::from_secs(30 * 60);
const PRUNE_ABOVE: usize = 10_000;

/// The bucket every order API shares.
pub const ORDERS: &str = "orders";

/// Request history per bucket: (user, API) or (app, token endpoints).
#[derive(Debug, Default)]
pub struct RateLimiter {
    history: HashMap<(String, String), VecDeque<Timestamp>>,
}

impl RateLimiter {
    /// Admits and records a call of `api` by user `ucc`, or returns false if any
    /// window of the group's table is full.
    pub fn admit(&mut self, ucc: &str, api: &str, group: Group, now: Timestamp) -> bool {
        self.admit_in(ucc, api, &group.limits(), now)
    }

    /// Admits and records a call of a token endpoint by app `client_id`, at most
    /// `per_minute` a minute.
    pub fn admit_token_api(&mut self, client_id: &str, per_minute: u32, now: Timestamp) -> bool {
        let limit = usize::try_from(per_minute).unwrap_or(usize::MAX);
        self.admit_in(
            client_id,
            "token endpoints",
            &[(SignedDuration::from_secs(60), limit)],
            now,
        )
    }

    fn admit_in(
        &mut self,
        who: &str,
        api: &str,
        limits: &[(SignedDuration, usize)],
        now: Timestamp,
    ) -> bool {
        if self.history.len() > PRUNE_ABOVE {
            self.prune(now);
        }
        let entries = self
            .history
            .entry((who.to_string(), api.to_string()))
            .or_default();
        // Forget requests older than the longest window, and any "from the future"
        // left behind when the clock was moved back.
        let oldest = now.checked_sub(LONGEST).unwrap_or(Timestamp::MIN);
        entries.retain(|t| *t > oldest && *t <= now);
        for &(window, limit) in limits {
            let start = now.checked_sub(window).unwrap_or(Timestamp::MIN);
            let in_window = entries.iter().rev().take_while(|t| **t > start).count();
            if in_window >= limit {
                return false;
            }
        }
        entries.push_back(now);
        true
    }

    fn prune(&mut self, now: Timestamp) {
        let oldest = now.checked_sub(LONGEST).unwrap_or(Timestamp::MIN);
        self.history
            .retain(|_, v| v.back().is_some_and(|t| *t > oldest && *t <= now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_770_000_000 + s).unwrap()
    }

    const PROFILE: &str = "/v2/user/profile";

    #[test]
    fn fifty_first_standard_request_in_a_second_is_refused() {
        let mut rl = RateLimiter::default();
        for _ in 0..50 {
            assert!(rl.admit("a", PROFILE, Group::Standard, t(0)));
        }
        assert!(!rl.admit("a", PROFILE, Group::Standard, t(0)));
        assert!(
            rl.admit("b", PROFILE, Group::Standard, t(0)),
            "other users are separate"
        );
        assert!(
            rl.admit("a", "/v3/market-quote/ltp", Group::Standard, t(0)),
            "other APIs are separate"
        );
        assert!(
            rl.admit("a", ORDERS, Group::Order, t(0)),
            "other groups are separate"
        );
        assert!(
            rl.admit("a", PROFILE, Group::Standard, t(1)),
            "a second later it is allowed"
        );
    }

    #[test]
    fn minute_window_caps_at_500() {
        let mut rl = RateLimiter::default();
        for s in 0..10 {
            for _ in 0..50 {
                assert!(rl.admit("a", PROFILE, Group::Standard, t(s)));
            }
        }
        assert!(!rl.admit("a", PROFILE, Group::Standard, t(30)));
        assert!(rl.admit("a", PROFILE, Group::Standard, t(60)));
    }

    #[test]
    fn orders_allow_ten_per_second() {
        let mut rl = RateLimiter::default();
        for _ in 0..10 {
            assert!(rl.admit("a", ORDERS, Group::Order, t(0)));
        }
        assert!(!rl.admit("a", ORDERS, Group::Order, t(0)));
    }

    #[test]
    fn token_endpoints_count_per_app_per_minute() {
        let mut rl = RateLimiter::default();
        for _ in 0..3 {
            assert!(rl.admit_token_api("app", 3, t(0)));
        }
        assert!(!rl.admit_token_api("app", 3, t(59)));
        assert!(rl.admit_token_api("other", 3, t(59)));
        assert!(rl.admit_token_api("app", 3, t(60)));
    }
}
