//! Sliding-window rate limits per token and API group, on the simulator clock.
//!
//! | group    | /second | /minute | /30 minutes |
//! |----------|---------|---------|-------------|
//! | standard | 50      | 500     | 2000        |
//! | order    | 10      | 500     | 2000        |
//!
//! A request is counted only when it is admitted.

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

/// Request history per (token id, group).
#[derive(Debug, Default)]
pub struct RateLimiter {
    history: HashMap<(String, Group), VecDeque<Timestamp>>,
}

impl RateLimiter {
    /// Admits and records the request, or returns false if any window is full.
    pub fn admit(&mut self, token_id: &str, group: Group, now: Timestamp) -> bool {
        if self.history.len() > PRUNE_ABOVE {
            self.prune(now);
        }
        let entries = self
            .history
            .entry((token_id.to_string(), group))
            .or_default();
        // Forget requests older than the longest window, and any "from the future"
        // left behind when the clock was moved back.
        let oldest = now.checked_sub(LONGEST).unwrap_or(Timestamp::MIN);
        entries.retain(|t| *t > oldest && *t <= now);
        for (window, limit) in group.limits() {
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

    #[test]
    fn fifty_first_standard_request_in_a_second_is_refused() {
        let mut rl = RateLimiter::default();
        for _ in 0..50 {
            assert!(rl.admit("a", Group::Standard, t(0)));
        }
        assert!(!rl.admit("a", Group::Standard, t(0)));
        assert!(
            rl.admit("b", Group::Standard, t(0)),
            "other tokens are separate"
        );
        assert!(
            rl.admit("a", Group::Order, t(0)),
            "other groups are separate"
        );
        assert!(
            rl.admit("a", Group::Standard, t(1)),
            "a second later it is allowed"
        );
    }

    #[test]
    fn minute_window_caps_at_500() {
        let mut rl = RateLimiter::default();
        for s in 0..10 {
            for _ in 0..50 {
                assert!(rl.admit("a", Group::Standard, t(s)));
            }
        }
        assert!(!rl.admit("a", Group::Standard, t(30)));
        assert!(rl.admit("a", Group::Standard, t(60)));
    }

    #[test]
    fn orders_allow_ten_per_second() {
        let mut rl = RateLimiter::default();
        for _ in 0..10 {
            assert!(rl.admit("a", Group::Order, t(0)));
        }
        assert!(!rl.admit("a", Group::Order, t(0)));
    }
}
