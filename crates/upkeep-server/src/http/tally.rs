//! Refusals at a door strangers can reach, counted by reason and logged as one summary
//! line per interval, never a line per attempt (the notifier webhook, the relay's feed
//! codes).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Counts since the last summary, by reason.
pub struct RefusalTally {
    /// Who refused (`notifier webhook`), the line's prefix.
    door: &'static str,
    /// What was refused (`deliveries rejected`).
    what: &'static str,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl RefusalTally {
    pub fn new(door: &'static str, what: &'static str) -> Self {
        Self {
            door,
            what,
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, BTreeMap<&'static str, u64>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one refusal for the next summary.
    pub fn count(&self, reason: &'static str) {
        *self.counts().entry(reason).or_default() += 1;
    }

    /// Logs the refusals since the last summary as one line (nothing when there were
    /// none): `<door>: <total> <what> since the last summary (<reason>=<n>, ...)`.
    pub fn flush(&self) {
        let counts = std::mem::take(&mut *self.counts());
        if counts.is_empty() {
            return;
        }
        let total: u64 = counts.values().sum();
        let by_reason = counts
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            "{}: {total} {} since the last summary ({by_reason})",
            self.door,
            self.what
        );
    }

    /// Logs a summary every `every` until `stop`, and a last one then.
    pub async fn run(&self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.flush(),
            }
        }
        self.flush();
    }
}
