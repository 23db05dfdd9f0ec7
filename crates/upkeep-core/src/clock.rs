//! The one abstraction over time. upkeep-core never reads the clock itself: every
//! function takes `now`. The daemon holds an `Arc<dyn Clock>`: the system clock in
//! production, the simulator's controllable clock in tests and the demo.

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;
}

/// A clock fixed at one instant, settable by hand (tests).
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<jiff::Timestamp>);

impl ManualClock {
    pub fn new(at: jiff::Timestamp) -> Self {
        Self(std::sync::Mutex::new(at))
    }
    pub fn set(&self, at: jiff::Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
    pub fn advance(&self, by: jiff::SignedDuration) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.checked_add(by).unwrap_or(*g);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
