//! The one abstraction over time. upkeep-core never reads the clock itself: every
//! function takes `now`. The daemon holds an `Arc<dyn Clock>`: the system clock in
//! production, the simulator's controllable clock in tests and the demo.

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;

    /// Re-reads the time from its source when that source is remote (the simulator's
    /// clock followed from another process), so `now` is exact for what comes next; a
    /// no-op for local clocks. The daemon calls it before anything that must agree
    /// with the server's time: computing a TOTP code, judging a refused token.
    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
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
