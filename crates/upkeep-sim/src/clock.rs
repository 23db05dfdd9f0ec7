//! The simulator's own clock.
//!
//! `now = anchor + (monotonic time since the anchor was set) × speed`.
//! Everything time-based in the simulator (token `iat`/`exp`, the 423 funds
//! window, approval windows, TOTP steps, rate-limit windows) reads this clock,
//! so tests and demos can move time instead of waiting for it.
//!
//! The system wall clock is read in exactly one place, [`system_now`], and only
//! to pick the starting point when no start time is given. Elapsed time is
//! measured with `tokio::time::Instant`, so a paused tokio runtime also pauses
//! a running `SimClock`.

use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp, civil};
use tokio::time::Instant;

use crate::ist;

/// A movable clock. Cheap to clone; clones share the same time.
#[derive(Clone)]
pub struct SimClock {
    inner: Arc<Mutex<ClockState>>,
}

#[derive(Debug, Clone, Copy)]
struct ClockState {
    /// Simulated time at `anchor_real`.
    anchor_sim: Timestamp,
    /// Monotonic instant at which `anchor_sim` was true.
    anchor_real: Instant,
    /// Simulated seconds per real second (0 = frozen).
    speed: f64,
}

impl ClockState {
    fn now(&self) -> Timestamp {
        if self.speed == 0.0 {
            return self.anchor_sim;
        }
        let real = Instant::now().saturating_duration_since(self.anchor_real);
        let scaled = real.as_secs_f64() * self.speed;
        let delta = SignedDuration::try_from_secs_f64(scaled).unwrap_or(SignedDuration::MAX);
        self.anchor_sim.checked_add(delta).unwrap_or(Timestamp::MAX)
    }
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClock")
            .field("now", &self.now())
            .field("speed", &self.speed())
            .finish()
    }
}

/// The one place the simulator reads the system wall clock.
#[allow(clippy::disallowed_methods)] // the simulator clock's starting point when none is configured
fn system_now() -> Timestamp {
    Timestamp::now()
}

/// Replaces NaN, infinities and negative values by 0 (frozen).
fn sane_speed(speed: f64) -> f64 {
    if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        0.0
    }
}

impl SimClock {
    /// A clock that starts at `start` and runs at `speed` simulated seconds per real second.
    pub fn new(start: Timestamp, speed: f64) -> SimClock {
        SimClock {
            inner: Arc::new(Mutex::new(ClockState {
                anchor_sim: start,
                anchor_real: Instant::now(),
                speed: sane_speed(speed),
            })),
        }
    }

    /// A clock that follows the system wall clock at real speed.
    pub fn system() -> SimClock {
        SimClock::new(system_now(), 1.0)
    }

    /// Starts at `start`, or at the system time if `None`.
    pub fn starting_at(start: Option<Timestamp>, speed: f64) -> SimClock {
        SimClock::new(start.unwrap_or_else(system_now), speed)
    }

    /// A frozen clock (speed 0): time moves only through `set`/`advance`/`jump_to_ist`.
    pub fn frozen(at: Timestamp) -> SimClock {
        SimClock::new(at, 0.0)
    }

    fn with<R>(&self, f: impl FnOnce(&mut ClockState) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// The current simulated time.
    pub fn now(&self) -> Timestamp {
        self.with(|s| s.now())
    }

    /// The current speed factor.
    pub fn speed(&self) -> f64 {
        self.with(|s| s.speed)
    }

    /// Moves the clock to `at`; it keeps running at the same speed from there.
    pub fn set(&self, at: Timestamp) {
        self.with(|s| {
            s.anchor_sim = at;
            s.anchor_real = Instant::now();
        });
    }

    /// Moves the clock by `by` (negative moves it back).
    pub fn advance(&self, by: SignedDuration) {
        self.with(|s| {
            let now = s.now();
            s.anchor_sim = now.checked_add(by).unwrap_or(now);
            s.anchor_real = Instant::now();
        });
    }

    /// Changes the speed factor from now on. NaN, infinite or negative values freeze the clock.
    pub fn set_speed(&self, speed: f64) {
        self.with(|s| {
            s.anchor_sim = s.now();
            s.anchor_real = Instant::now();
            s.speed = sane_speed(speed);
        });
    }

    /// Moves the clock to a wall-clock time in India (IST, +05:30).
    pub fn jump_to_ist(&self, at: civil::DateTime) {
        self.set(ist::from_ist(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_told() {
        let start: Timestamp = "2026-02-05T00:00:00Z".parse().unwrap();
        let clock = SimClock::frozen(start);
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_secs(90));
        assert_eq!(clock.now(), "2026-02-05T00:01:30Z".parse().unwrap());
        clock.jump_to_ist(civil::date(2026, 11, 24).at(3, 29, 50, 0));
        assert_eq!(clock.now(), "2026-11-23T21:59:50Z".parse().unwrap());
    }

    #[test]
    fn invalid_speed_freezes_instead_of_panicking() {
        let clock = SimClock::new(Timestamp::UNIX_EPOCH, 1.0);
        clock.set_speed(f64::NAN);
        assert_eq!(clock.speed(), 0.0);
        clock.set_speed(-3.0);
        assert_eq!(clock.speed(), 0.0);
    }
}
