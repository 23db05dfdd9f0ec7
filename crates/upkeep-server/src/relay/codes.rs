//! The single-use feed URLs the relay's authorize door hands out, and the guard against
//! guessed ones.
//!
//! A code is 32 random bytes (64 hex digits), valid [`CODE_TTL`], used once. Guessing
//! one is hopeless, so the guard is about cost and noise, not odds:
//!
//! - A code that is not 64 hex digits is refused before the table is looked at.
//! - A valid code is always honoured: no flood of guesses can lock out the client that
//!   holds one, and a refused guess never removes or ages a real code.
//! - Failed attempts are counted per window ([`CodeGuardLimits`]); past the window's cap,
//!   further failures get a prebuilt `429` with `Retry-After` (no formatting, no JSON).
//! - Nothing is logged per attempt: one line when a window first crosses the cap, and
//!   one summary of the failures per `summary_every` (and at shutdown).
//!
//! None of it reaches the account's upstream feed: a refused attempt starts no pool
//! and calls nothing at Upstox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

use crate::http::tally::RefusalTally;

/// How long a single-use socket URL stays valid.
pub const CODE_TTL: SignedDuration = SignedDuration::from_secs(60);
/// Most single-use URLs outstanding (older ones are forgotten first).
const MAX_CODES: usize = 1024;

/// How many failed code attempts the feed door takes per window before it refuses the
/// rest with `429` until the window ends.
#[derive(Debug, Clone, Copy)]
pub struct CodeGuardLimits {
    pub window: Duration,
    pub failures_per_window: u32,
    /// How often the failures are logged (one summary line).
    pub summary_every: Duration,
}

impl Default for CodeGuardLimits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            failures_per_window: 50,
            summary_every: Duration::from_secs(60),
        }
    }
}

/// What became of a code presented at the feed door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// A code handed out, unused and unexpired: its account (the code is now used).
    Valid(String),
    /// Not a code this relay handed out, used, or expired.
    Refused,
    /// Refused, and the window's failure cap is reached: try again after this long.
    Throttled(Duration),
}

#[derive(Default)]
struct Failures {
    window_start: Option<Instant>,
    in_window: u32,
}

/// The outstanding codes and the failed-attempt counters. Cheap to clone.
#[derive(Clone)]
pub struct Codes {
    limits: CodeGuardLimits,
    table: Arc<Mutex<HashMap<String, (String, Timestamp)>>>,
    failures: Arc<Mutex<Failures>>,
    /// Failures since the last summary.
    tally: Arc<RefusalTally>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Codes {
    pub fn new(limits: CodeGuardLimits) -> Self {
        Self {
            limits,
            table: Arc::default(),
            failures: Arc::default(),
            tally: Arc::new(RefusalTally::new(
                "relay",
                "feed socket attempts with an unknown, used or expired code",
            )),
        }
    }

    /// A new single-use code for `account`, valid from `now` for [`CODE_TTL`].
    pub fn issue(&self, account: &str, now: Timestamp) -> String {
        let code = hex32(rand::random());
        let mut codes = lock(&self.table);
        codes.retain(|_, (_, exp)| *exp > now);
        if codes.len() >= MAX_CODES
            && let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(k, _)| k.clone())
        {
            codes.remove(&oldest);
        }
        codes.insert(code.clone(), (account.to_owned(), now + CODE_TTL));
        code
    }

    /// Redeems `code` at `now`.
    pub fn redeem(&self, code: &str, now: Timestamp) -> CodeCheck {
        let well_formed = code.len() == 64 && code.bytes().all(|b| b.is_ascii_hexdigit());
        if well_formed {
            let taken = lock(&self.table).remove(code);
            if let Some((account, exp)) = taken
                && exp > now
            {
                return CodeCheck::Valid(account);
            }
        }
        self.failed()
    }

    fn failed(&self) -> CodeCheck {
        let now = Instant::now();
        let mut f = lock(&self.failures);
        let start = *f.window_start.get_or_insert(now);
        let (start, crossed) = if now.duration_since(start) >= self.limits.window {
            f.window_start = Some(now);
            f.in_window = 0;
            (now, false)
        } else {
            (start, f.in_window == self.limits.failures_per_window)
        };
        f.in_window = f.in_window.saturating_add(1);
        if f.in_window > self.limits.failures_per_window {
            drop(f);
            self.tally.count("throttled");
            metrics::counter!("upkeep_relay_code_refusals_total", "outcome" => "throttled")
                .increment(1);
            if crossed {
                tracing::warn!(
                    cap = self.limits.failures_per_window,
                    window_s = self.limits.window.as_secs_f64(),
                    "relay: the feed socket URL is being tried with unknown codes faster than \
                     the cap; refusing the rest of the window with 429 (valid codes still work)"
                );
            }
            let retry = self.limits.window.saturating_sub(now.duration_since(start));
            return CodeCheck::Throttled(retry.max(Duration::from_secs(1)));
        }
        drop(f);
        self.tally.count("refused");
        metrics::counter!("upkeep_relay_code_refusals_total", "outcome" => "refused").increment(1);
        CodeCheck::Refused
    }

    /// Logs the failures since the last summary as one line (nothing when there were
    /// none).
    pub fn flush_summary(&self) {
        self.tally.flush();
    }

    /// Logs a summary every `summary_every` until `stop`, and a last one then.
    pub async fn summary_loop(self, stop: tokio_util::sync::CancellationToken) {
        self.tally.run(self.limits.summary_every, stop).await;
    }
}

fn hex32(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        "2026-02-10T04:30:00Z".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_guesses_is_throttled_per_window_and_never_takes_a_real_code() {
        let codes = Codes::new(CodeGuardLimits {
            window: Duration::from_secs(10),
            failures_per_window: 5,
            summary_every: Duration::from_secs(60),
        });
        let real = codes.issue("main", at());
        let guesses: Vec<CodeCheck> = (0..8u32)
            .map(|i| codes.redeem(&format!("{i:064x}"), at()))
            .collect();
        assert!(
            guesses[..5].iter().all(|g| *g == CodeCheck::Refused),
            "{guesses:?}"
        );
        assert!(
            guesses[5..]
                .iter()
                .all(|g| matches!(g, CodeCheck::Throttled(d) if *d <= Duration::from_secs(10))),
            "{guesses:?}"
        );
        // Malformed ones count too, without a look at the table.
        assert!(matches!(codes.redeem("zz", at()), CodeCheck::Throttled(_)));
        // The real code still works in the middle of the flood, once.
        assert_eq!(codes.redeem(&real, at()), CodeCheck::Valid("main".into()));
        assert!(matches!(codes.redeem(&real, at()), CodeCheck::Throttled(_)));
        // A new window starts counting afresh.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(codes.redeem(&real, at()), CodeCheck::Refused);
        // An expired code is refused.
        let late = codes.issue("main", at());
        assert_eq!(codes.redeem(&late, at() + CODE_TTL), CodeCheck::Refused);
    }
}
