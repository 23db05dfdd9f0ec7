//! Token health as a user sees it: healthy, warning, critical, expired.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How close a token is to expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// More than `warning_below` left.
    Healthy,
    /// Between `critical_below` and `warning_below` left (both inclusive of the upper end).
    Warning,
    /// Less than `critical_below` left.
    Critical,
    /// `now >= expires_at`: valid at 03:29:59, expired at 03:30:00.
    Expired,
}

/// Where the state boundaries lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Below this much time left the token is `Warning` (default 3h).
    pub warning_below: SignedDuration,
    /// Below this much time left the token is `Critical` (default 1h).
    pub critical_below: SignedDuration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warning_below: SignedDuration::from_hours(3),
            critical_below: SignedDuration::from_hours(1),
        }
    }
}

impl TokenState {
    /// The state at `now` of a token expiring at `expires_at`.
    ///
    /// More than 3h left: healthy; 1h..=3h: warning; under 1h: critical; at or after
    /// `expires_at`: expired.
    pub fn at(expires_at: Timestamp, now: Timestamp, thresholds: &Thresholds) -> Self {
        let left = expires_at.duration_since(now);
        if left <= SignedDuration::ZERO {
            Self::Expired
        } else if left < thresholds.critical_below {
            Self::Critical
        } else if left <= thresholds.warning_below {
            Self::Warning
        } else {
            Self::Healthy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Expired => "expired",
        }
    }

    /// True for `Healthy`, `Warning` and `Critical`: the token still works.
    pub fn is_usable(self) -> bool {
        self != Self::Expired
    }
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::ist_timestamp;
    use jiff::civil::{Time, date};

    #[test]
    fn state_boundaries_around_expiry() {
        let exp = ist_timestamp(date(2026, 2, 6), Time::constant(3, 30, 0, 0)).unwrap();
        let t = Thresholds::default();
        let before = |secs: i64| exp - SignedDuration::from_secs(secs);
        let cases = [
            (before(4 * 3600), TokenState::Healthy),
            (before(3 * 3600 + 1), TokenState::Healthy),
            (before(3 * 3600), TokenState::Warning),
            (before(2 * 3600), TokenState::Warning),
            (before(3600), TokenState::Warning),
            (before(3599), TokenState::Critical),
            // valid at 03:29:59, expired at 03:30:00
            (before(1), TokenState::Critical),
            (exp, TokenState::Expired),
            (exp + SignedDuration::from_secs(1), TokenState::Expired),
        ];
        for (now, want) in cases {
            assert_eq!(
                TokenState::at(exp, now, &t),
                want,
                "{} before",
                exp.duration_since(now)
            );
        }
    }

    #[test]
    fn custom_thresholds_move_the_boundaries() {
        let exp = Timestamp::from_second(1_770_328_800).unwrap();
        let t = Thresholds {
            warning_below: SignedDuration::from_hours(12),
            critical_below: SignedDuration::from_hours(6),
        };
        let now = exp - SignedDuration::from_hours(8);
        assert_eq!(TokenState::at(exp, now, &t), TokenState::Warning);
        assert_eq!(
            TokenState::at(exp, now, &Thresholds::default()),
            TokenState::Healthy
        );
    }

    #[test]
    fn serializes_as_snake_case() {
        assert_eq!(
            serde_json::to_string(&TokenState::Expired).unwrap(),
            r#""expired""#
        );
        assert_eq!(TokenState::Warning.to_string(), "warning");
        assert!(!TokenState::Expired.is_usable());
        assert!(TokenState::Critical.is_usable());
    }
}
