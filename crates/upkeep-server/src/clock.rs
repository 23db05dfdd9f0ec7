//! Clocks the daemon can run on. Production uses [`SystemClock`]; tests and the demo
//! hand in the simulator's clock (wrapped by the caller) so moving the simulator's
//! time moves the daemon's too.

use upkeep_core::Clock;

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the daemon reads wall time; everything else asks the Clock.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}
