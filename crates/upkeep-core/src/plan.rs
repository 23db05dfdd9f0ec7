//! The renewal plan: given `now`, an account and a policy, what should happen next and
//! when. A pure function; the daemon's renewer sleeps until [`Plan::at`] and acts.
//!
//! # Reasoning
//!
//! A daily Upstox token dies at the first 03:30 IST after it was made, whatever the
//! hour it was made. So renewing "shortly before expiry" is pointless: a token made at
//! 03:00 dies at 03:30 too. The useful moment is *after* the rollover, on the IST date
//! the token dies, inside a morning window (default 05:30–09:00 IST: the funds and order
//! services are in maintenance until 05:30, and markets open at 09:15).
//!
//! - **Daily token, account can renew:** renew on the IST date the token dies (or the
//!   next trading day, if that date is a weekend or holiday the account does not trade
//!   on) at `window_start` + a deterministic jitter. The jitter spreads many accounts
//!   over the window; it comes from the account's `jitter_seed` and the date, so a
//!   restart does not move the time, and it never pushes past `deadline`.
//! - **No token stored:** renew now (if a strategy exists). Whatever the hour: the user
//!   has nothing, and something that lasts until 03:30 beats nothing.
//! - **Expired token, account can renew:**
//!   - today is a trading day and `now >= window_start`: renew now (even after the
//!     deadline; a late token is better than none);
//!   - `now` is before today's `window_start` (between midnight and the window, which
//!     includes the stretch between the 03:30 rollover and the window): renew at today's
//!     window start. Before 03:30 a new token would die at 03:30 anyway;
//!   - today is not a trading day: renew at the next trading day's window start. So a
//!     token that dies early on Saturday stays dead until Monday morning for an account
//!     that does not trade weekends. (A *missing* token is still renewed at once.)
//! - **Extended, sandbox or unknown token, or an account with no renewing strategy:**
//!   upkeep cannot make a new one. Warn `warn_ahead` (default 3 days) before expiry, or
//!   now if that is already past; once expired, a human is needed.
//!
//! The effective window is clamped to 03:30..=21:30 IST (see [`EARLIEST_RENEWAL`] and
//! [`LATEST_RENEWAL`]), so a scheduled renewal of a daily token never falls in the six
//! hours before a rollover, whatever the policy says. Config validation rejects such
//! windows with a message; the clamp is the backstop.

use crate::calendar::{DEFAULT_EXCHANGES, TradingCalendar};
use crate::expiry::{
    TokenInfo, TokenKind, format_duration, format_ist, ist_date, ist_datetime, ist_timestamp,
};
use jiff::civil::{Date, Time, Weekday};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A renewal window may not open before the 03:30 IST rollover: a token made earlier
/// dies at 03:30.
pub const EARLIEST_RENEWAL: Time = Time::constant(3, 30, 0, 0);
/// A renewal window may not close after 21:30 IST: a token made later lives under 6 hours.
pub const LATEST_RENEWAL: Time = Time::constant(21, 30, 0, 0);
/// How far ahead to look for a trading day before giving up.
const MAX_DAYS_AHEAD: i32 = 400;

/// When and how an account may be renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Start of the daily renewal window, IST (default 05:30).
    pub window_start: Time,
    /// Latest scheduled renewal time, IST (default 09:00).
    pub deadline: Time,
    /// Upper bound of the per-account jitter added to `window_start` (default 10 min).
    pub max_jitter: SignedDuration,
    /// How long before a non-renewable token expires to start warning (default 3 days).
    pub warn_ahead: SignedDuration,
    /// Exchange holidays (IST dates).
    pub holidays: Vec<Date>,
    /// Renew on Saturdays and Sundays too (default false).
    pub trade_weekends: bool,
    /// Renew on holidays too (default false).
    pub trade_holidays: bool,
    /// The exchanges whose trading days count (default `["NSE"]`).
    pub exchanges: Vec<String>,
    /// The published trading calendar, when known. For the dates it covers it decides
    /// which days are trading days (a weekend special session is one, a closed weekday
    /// is not); `holidays` still override to closed. Other dates follow the weekdays.
    pub calendar: Option<Arc<TradingCalendar>>,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            window_start: Time::constant(5, 30, 0, 0),
            deadline: Time::constant(9, 0, 0, 0),
            max_jitter: SignedDuration::from_mins(10),
            warn_ahead: SignedDuration::from_hours(72),
            holidays: Vec::new(),
            trade_weekends: false,
            trade_holidays: false,
            exchanges: DEFAULT_EXCHANGES.iter().map(|e| (*e).to_owned()).collect(),
            calendar: None,
        }
    }
}

impl RenewalPolicy {
    /// Whether the account trades (and so wants a token) on IST date `d`.
    ///
    /// A date in `holidays` is closed (unless `trade_holidays`). Otherwise, on a date the
    /// calendar covers, the day is a trading day when one of `exchanges` is open (a
    /// Saturday special session counts; a settlement holiday is a normal day); a closed
    /// weekend counts with `trade_weekends`, a closed weekday with `trade_holidays`.
    /// Dates the calendar does not cover: Monday to Friday.
    pub fn is_trading_day(&self, d: Date) -> bool {
        let weekend = matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday);
        if self.holidays.contains(&d) && !self.trade_holidays {
            return false;
        }
        match self
            .calendar
            .as_ref()
            .and_then(|c| c.is_open(&self.exchanges, d))
        {
            Some(true) => true,
            Some(false) if weekend => self.trade_weekends,
            Some(false) => self.trade_holidays,
            None => self.trade_weekends || !weekend,
        }
    }

    /// The first trading day on or after `from` (`None` if none within 400 days).
    pub fn next_trading_day(&self, from: Date) -> Option<Date> {
        let mut d = from;
        for _ in 0..MAX_DAYS_AHEAD {
            if self.is_trading_day(d) {
                return Some(d);
            }
            d = d.tomorrow().ok()?;
        }
        None
    }

    /// The effective window `(start, deadline)` as IST times of day, clamped to
    /// [`EARLIEST_RENEWAL`]..=[`LATEST_RENEWAL`] with `deadline >= start`.
    pub fn effective_window(&self) -> (Time, Time) {
        let start = self.window_start.clamp(EARLIEST_RENEWAL, LATEST_RENEWAL);
        let deadline = self.deadline.clamp(start, LATEST_RENEWAL);
        (start, deadline)
    }

    /// The renewal window on IST date `d`, as instants.
    pub fn window_on(&self, d: Date) -> Option<(Timestamp, Timestamp)> {
        let (start, deadline) = self.effective_window();
        Some((ist_timestamp(d, start)?, ist_timestamp(d, deadline)?))
    }

    /// The jittered renewal time on IST date `d`: `window_start` plus a deterministic
    /// jitter in `0..=min(max_jitter, deadline - window_start)`, whole seconds.
    pub fn renew_time_on(&self, d: Date, jitter_seed: u64) -> Option<Timestamp> {
        let (start, deadline) = self.window_on(d)?;
        let room = deadline.duration_since(start).min(self.max_jitter);
        let span = u64::try_from(room.as_secs()).unwrap_or(0);
        let jitter = if span == 0 {
            0
        } else {
            let day = u64::from(d.year().unsigned_abs()) * 10_000
                + u64::from(d.month().unsigned_abs()) * 100
                + u64::from(d.day().unsigned_abs());
            splitmix64(jitter_seed ^ splitmix64(day)) % (span + 1)
        };
        start
            .checked_add(SignedDuration::from_secs(
                i64::try_from(jitter).unwrap_or(0),
            ))
            .ok()
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable jitter seed for an account id (same on every run and machine).
pub fn jitter_seed(account_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(account_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// What the planner needs to know about the current token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSummary {
    pub expires_at: Timestamp,
    pub kind: TokenKind,
}

impl From<&TokenInfo> for TokenSummary {
    fn from(info: &TokenInfo) -> Self {
        Self {
            expires_at: info.expires_at,
            kind: info.kind,
        }
    }
}

/// What the planner needs to know about an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountView {
    /// The current token, if any is stored.
    pub token: Option<TokenSummary>,
    /// The account has a strategy that can make a new daily token (totp,
    /// token_request, oauth, refresh_token). `static` alone cannot.
    pub can_renew_daily: bool,
    /// Spreads renewals of different accounts over the window; see [`jitter_seed`].
    pub jitter_seed: u64,
}

/// The next thing to do for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Renew immediately (`at == now`).
    RenewNow,
    /// Renew at `at`.
    RenewAt,
    /// At `at`, warn that the token will expire and cannot be renewed automatically.
    WarnExpiry,
    /// Nothing can be scheduled (no trading day found, or times out of range): keep
    /// watching and plan again at `at`.
    Monitor,
    /// The token is gone and upkeep cannot make one: a human must act.
    ManualNeeded,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RenewNow => "renew_now",
            Self::RenewAt => "renew_at",
            Self::WarnExpiry => "warn_expiry",
            Self::Monitor => "monitor",
            Self::ManualNeeded => "manual_needed",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plan: do `action` at `at`. `deadline` is when a renewal counts as late (the end
/// of that day's window) or, for warnings, when the token dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub action: Action,
    pub at: Timestamp,
    pub deadline: Option<Timestamp>,
    /// One human sentence explaining the choice (no secrets).
    pub reason: String,
}

/// Decide what to do next for `account` at `now`. See the module docs for the rules.
pub fn plan(now: Timestamp, account: &AccountView, policy: &RenewalPolicy) -> Plan {
    let Some(token) = account.token else {
        return if account.can_renew_daily {
            Plan {
                action: Action::RenewNow,
                at: now,
                deadline: None,
                reason: "no token stored; renewing now".into(),
            }
        } else {
            Plan {
                action: Action::ManualNeeded,
                at: now,
                deadline: None,
                reason: "no token stored and no renewal strategy configured; paste a token \
                         or add a strategy to `renew`"
                    .into(),
            }
        };
    };
    let expired = now >= token.expires_at;
    match (account.can_renew_daily, expired) {
        (true, false) if token.kind == TokenKind::Daily => {
            plan_alive_daily(now, token, account.jitter_seed, policy)
        }
        (true, true) => plan_expired_renewable(now, token, policy, account.jitter_seed),
        (_, false) => plan_warn(now, token, account.can_renew_daily, policy),
        (false, true) => Plan {
            action: Action::ManualNeeded,
            at: now,
            deadline: None,
            reason: format!(
                "{} token expired at {} and upkeep cannot renew it; {}",
                token.kind,
                format_ist(token.expires_at),
                manual_fix(token.kind, false)
            ),
        },
    }
}

/// A live daily token on an account that can renew: renew in the window on the IST date
/// the token dies, or the next trading day.
fn plan_alive_daily(
    now: Timestamp,
    token: TokenSummary,
    seed: u64,
    policy: &RenewalPolicy,
) -> Plan {
    let dies_on = ist_date(token.expires_at);
    let Some(day) = policy.next_trading_day(dies_on) else {
        return no_trading_day(now);
    };
    let (Some(at), Some((_, deadline))) = (policy.renew_time_on(day, seed), policy.window_on(day))
    else {
        return out_of_range(now);
    };
    let skipped = if day == dies_on {
        String::new()
    } else {
        format!(
            " ({} is not a trading day for this account)",
            describe_day(dies_on)
        )
    };
    if at <= now {
        // Only reachable when exp is later in the day than the window (a token that
        // breaks the daily rule): its renewal time has come while it still lives.
        return Plan {
            action: Action::RenewNow,
            at: now,
            deadline: (now <= deadline).then_some(deadline),
            reason: format!(
                "daily token dies at {}, after today's renewal time; renewing now",
                format_ist(token.expires_at)
            ),
        };
    }
    Plan {
        action: Action::RenewAt,
        at,
        deadline: Some(deadline),
        reason: format!(
            "daily token dies at {}; renewing at {} in the morning window of {}{skipped}",
            format_ist(token.expires_at),
            format_ist(at),
            describe_day(day),
        ),
    }
}

/// An expired token on an account that can renew.
fn plan_expired_renewable(
    now: Timestamp,
    token: TokenSummary,
    policy: &RenewalPolicy,
    seed: u64,
) -> Plan {
    let today = ist_date(now);
    let expired = format!(
        "{} token expired at {}",
        token.kind,
        format_ist(token.expires_at)
    );
    if policy.is_trading_day(today) {
        let Some((_, deadline)) = policy.window_on(today) else {
            return out_of_range(now);
        };
        // Every daily token dies at 03:30, before the window: the jitter applies here
        // too, so accounts (and upkeep installations) do not all log in at 05:30:00.
        let Some(start) = policy.renew_time_on(today, seed) else {
            return out_of_range(now);
        };
        if now >= start {
            let late = if now > deadline {
                format!(
                    " (past today's {} IST deadline)",
                    crate::expiry::format_hm(policy.effective_window().1)
                )
            } else {
                String::new()
            };
            return Plan {
                action: Action::RenewNow,
                at: now,
                deadline: (now <= deadline).then_some(deadline),
                reason: format!("{expired}; renewing now{late}"),
            };
        }
        let why = if ist_datetime(now).time() < EARLIEST_RENEWAL {
            "a token made before 03:30 IST would die at 03:30"
        } else {
            "the renewal window has not opened yet"
        };
        return Plan {
            action: Action::RenewAt,
            at: start,
            deadline: Some(deadline),
            reason: format!(
                "{expired}; {why}, renewing at window start {}",
                format_ist(start)
            ),
        };
    }
    let next = today
        .tomorrow()
        .ok()
        .and_then(|d| policy.next_trading_day(d));
    let Some(day) = next else {
        return no_trading_day(now);
    };
    let (Some(start), Some((_, deadline))) =
        (policy.renew_time_on(day, seed), policy.window_on(day))
    else {
        return out_of_range(now);
    };
    Plan {
        action: Action::RenewAt,
        at: start,
        deadline: Some(deadline),
        reason: format!(
            "{expired}; today ({}) is not a trading day for this account, renewing at window \
             start {}",
            describe_day(today),
            format_ist(start)
        ),
    }
}

/// A live token upkeep will not renew: warn `warn_ahead` before it dies.
fn plan_warn(now: Timestamp, token: TokenSummary, can_renew: bool, policy: &RenewalPolicy) -> Plan {
    let warn_at = token
        .expires_at
        .checked_sub(policy.warn_ahead)
        .unwrap_or(now)
        .max(now);
    let left = token.expires_at.duration_since(now);
    Plan {
        action: Action::WarnExpiry,
        at: warn_at,
        deadline: Some(token.expires_at),
        reason: format!(
            "{} token expires at {} (in {}) and upkeep cannot renew it; {}",
            token.kind,
            format_ist(token.expires_at),
            format_duration(left),
            manual_fix(token.kind, can_renew)
        ),
    }
}

fn manual_fix(kind: TokenKind, can_renew: bool) -> &'static str {
    match kind {
        TokenKind::Sandbox => "generate a new sandbox token on the Upstox Developer Apps page",
        TokenKind::Extended => {
            "generate a new extended or analytics token on the Upstox Developer Apps page"
        }
        TokenKind::Daily if !can_renew => {
            "paste a fresh token or add a strategy (totp, token_request, oauth) to `renew`"
        }
        _ => "replace it with a fresh token before then",
    }
}

fn describe_day(d: Date) -> String {
    format!("{d} ({})", weekday_name(d.weekday()))
}

fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

fn no_trading_day(now: Timestamp) -> Plan {
    Plan {
        action: Action::Monitor,
        at: now,
        deadline: None,
        reason: "no trading day in the next 400 days; check [renewal] holidays and \
                 trade_weekends"
            .into(),
    }
}

fn out_of_range(now: Timestamp) -> Plan {
    Plan {
        action: Action::Monitor,
        at: now,
        deadline: None,
        reason: "renewal time is outside the representable calendar; check the token's exp".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::next_rollover_after;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn ist_at(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Timestamp {
        ist_timestamp(date(y, mo, d), Time::constant(h, mi, s, 0)).unwrap()
    }

    fn daily(expires_at: Timestamp) -> AccountView {
        AccountView {
            token: Some(TokenSummary {
                expires_at,
                kind: TokenKind::Daily,
            }),
            can_renew_daily: true,
            jitter_seed: 42,
        }
    }

    fn no_jitter() -> RenewalPolicy {
        RenewalPolicy {
            max_jitter: SignedDuration::ZERO,
            ..RenewalPolicy::default()
        }
    }

    #[test]
    fn renews_after_rollover_not_before() {
        // Token A dies Fri 2026-02-06 03:30 IST.
        let exp = ist_at(2026, 2, 6, 3, 30, 0);
        let p = no_jitter();
        let window = ist_at(2026, 2, 6, 5, 30, 0);
        let deadline = Some(ist_at(2026, 2, 6, 9, 0, 0));
        let cases = [
            (ist_at(2026, 2, 5, 10, 0, 0), Action::RenewAt, window),
            (ist_at(2026, 2, 5, 23, 59, 59), Action::RenewAt, window),
            (ist_at(2026, 2, 6, 3, 29, 59), Action::RenewAt, window),
            (ist_at(2026, 2, 6, 3, 30, 0), Action::RenewAt, window),
            (ist_at(2026, 2, 6, 3, 30, 1), Action::RenewAt, window),
            (ist_at(2026, 2, 6, 5, 29, 59), Action::RenewAt, window),
        ];
        for (now, action, at) in cases {
            let got = plan(now, &daily(exp), &p);
            assert_eq!(
                (got.action, got.at, got.deadline),
                (action, at, deadline),
                "now {}",
                format_ist(now)
            );
        }
        let at_window = ist_at(2026, 2, 6, 5, 30, 0);
        let got = plan(at_window, &daily(exp), &p);
        assert_eq!((got.action, got.at), (Action::RenewNow, at_window));
    }

    #[test]
    fn expired_daily_tokens_of_different_accounts_renew_at_spread_times_in_the_window() {
        // Every daily token dies at 03:30, before the window: the plan made after the
        // rollover must still spread accounts over the jitter, inside the window.
        let exp = ist_at(2026, 2, 6, 3, 30, 0);
        let now = ist_at(2026, 2, 6, 3, 30, 1);
        let p = RenewalPolicy::default();
        let start = ist_at(2026, 2, 6, 5, 30, 0);
        let mut times = std::collections::BTreeSet::new();
        for seed in 0..20u64 {
            let view = AccountView {
                jitter_seed: seed,
                ..daily(exp)
            };
            let got = plan(now, &view, &p);
            assert_eq!(got.action, Action::RenewAt);
            assert!(
                got.at >= start && got.at <= start + p.max_jitter,
                "{}",
                format_ist(got.at)
            );
            // Once that time comes, it is renewed now.
            assert_eq!(plan(got.at, &view, &p).action, Action::RenewNow);
            times.insert(got.at);
        }
        assert!(times.len() > 10, "jitter should spread accounts: {times:?}");
    }

    #[test]
    fn expired_token_after_deadline_is_renewed_now_without_deadline() {
        let exp = ist_at(2026, 2, 6, 3, 30, 0);
        let now = ist_at(2026, 2, 6, 14, 0, 0);
        let got = plan(now, &daily(exp), &RenewalPolicy::default());
        assert_eq!(got.action, Action::RenewNow);
        assert_eq!(got.at, now);
        assert_eq!(got.deadline, None);
        assert!(
            got.reason.contains("past today's 09:00 IST deadline"),
            "{}",
            got.reason
        );
    }

    #[test]
    fn expired_token_before_0330_waits_for_the_window() {
        // Expired Wed 03:30 and never renewed (daemon was down); now Thu 01:00 IST.
        let exp = ist_at(2026, 2, 4, 3, 30, 0);
        let now = ist_at(2026, 2, 5, 1, 0, 0);
        let got = plan(now, &daily(exp), &no_jitter());
        assert_eq!(got.action, Action::RenewAt);
        assert_eq!(got.at, ist_at(2026, 2, 5, 5, 30, 0));
        assert!(got.reason.contains("would die at 03:30"), "{}", got.reason);
    }

    #[test]
    fn weekend_expiry_waits_for_monday() {
        // Fri 2026-02-06 token dies Sat 2026-02-07 03:30.
        let exp = ist_at(2026, 2, 7, 3, 30, 0);
        let monday = ist_at(2026, 2, 9, 5, 30, 0);
        for now in [
            ist_at(2026, 2, 6, 10, 0, 0), // alive, Friday
            ist_at(2026, 2, 7, 3, 30, 0), // just expired, Saturday
            ist_at(2026, 2, 8, 12, 0, 0), // Sunday noon
        ] {
            let got = plan(now, &daily(exp), &no_jitter());
            assert_eq!(
                (got.action, got.at),
                (Action::RenewAt, monday),
                "now {}",
                format_ist(now)
            );
        }
        let alive = plan(ist_at(2026, 2, 6, 10, 0, 0), &daily(exp), &no_jitter());
        assert!(
            alive
                .reason
                .contains("2026-02-07 (Sat) is not a trading day"),
            "{}",
            alive.reason
        );
    }

    #[test]
    fn weekend_trading_accounts_renew_on_saturday() {
        let exp = ist_at(2026, 2, 7, 3, 30, 0);
        let p = RenewalPolicy {
            trade_weekends: true,
            ..no_jitter()
        };
        let got = plan(ist_at(2026, 2, 6, 10, 0, 0), &daily(exp), &p);
        assert_eq!(got.at, ist_at(2026, 2, 7, 5, 30, 0));
    }

    #[test]
    fn missing_token_is_renewed_now_even_on_a_weekend_night() {
        let now = ist_at(2026, 2, 7, 2, 0, 0);
        let view = AccountView {
            token: None,
            can_renew_daily: true,
            jitter_seed: 1,
        };
        let got = plan(now, &view, &RenewalPolicy::default());
        assert_eq!((got.action, got.at), (Action::RenewNow, now));
        let manual = plan(
            now,
            &AccountView {
                can_renew_daily: false,
                ..view
            },
            &RenewalPolicy::default(),
        );
        assert_eq!(manual.action, Action::ManualNeeded);
    }

    #[test]
    fn holidays_month_and_year_ends_move_the_renewal_day() {
        let holiday = RenewalPolicy {
            holidays: vec![date(2026, 11, 24), date(2027, 1, 1)],
            ..no_jitter()
        };
        let weekends = RenewalPolicy {
            trade_weekends: true,
            ..no_jitter()
        };
        // (issued, policy, expected renewal)
        let cases = [
            // Fri 01-30 evening -> dies Sat 01-31 -> Mon 02-02
            (
                ist_at(2026, 1, 30, 20, 0, 0),
                &holiday,
                ist_at(2026, 2, 2, 5, 30, 0),
            ),
            // month end with weekend trading: Sat 01-31 noon -> dies Sun 02-01
            (
                ist_at(2026, 1, 31, 12, 0, 0),
                &weekends,
                ist_at(2026, 2, 1, 5, 30, 0),
            ),
            // Sat 02-28 -> dies Sun 03-01
            (
                ist_at(2026, 2, 28, 12, 0, 0),
                &weekends,
                ist_at(2026, 3, 1, 5, 30, 0),
            ),
            (
                ist_at(2026, 2, 28, 12, 0, 0),
                &holiday,
                ist_at(2026, 3, 2, 5, 30, 0),
            ),
            // holiday Tue 11-24 -> Wed 11-25
            (
                ist_at(2026, 11, 23, 9, 0, 0),
                &holiday,
                ist_at(2026, 11, 25, 5, 30, 0),
            ),
            // year end: Thu 12-31 -> dies Fri 2027-01-01 (a holiday here) -> Mon 01-04
            (
                ist_at(2026, 12, 31, 12, 0, 0),
                &holiday,
                ist_at(2027, 1, 4, 5, 30, 0),
            ),
            (
                ist_at(2026, 12, 31, 12, 0, 0),
                &weekends,
                ist_at(2027, 1, 1, 5, 30, 0),
            ),
        ];
        for (issued, policy, want) in cases {
            let exp = next_rollover_after(issued);
            let got = plan(issued, &daily(exp), policy);
            assert_eq!(
                (got.action, got.at),
                (Action::RenewAt, want),
                "issued {}",
                format_ist(issued)
            );
        }
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_never_past_deadline() {
        let p = RenewalPolicy::default();
        let d = date(2026, 2, 6);
        let start = ist_at(2026, 2, 6, 5, 30, 0);
        let a = p.renew_time_on(d, 7).unwrap();
        assert_eq!(a, p.renew_time_on(d, 7).unwrap());
        let times: std::collections::BTreeSet<_> = (0..50)
            .map(|seed| p.renew_time_on(d, seed).unwrap())
            .collect();
        assert!(times.len() > 10, "seeds should spread renewals");
        for t in &times {
            assert!(*t >= start && *t <= start + SignedDuration::from_mins(10));
        }
        let narrow = RenewalPolicy {
            deadline: Time::constant(5, 32, 0, 0),
            ..RenewalPolicy::default()
        };
        for seed in 0..200 {
            let t = narrow.renew_time_on(d, seed).unwrap();
            assert!(t <= ist_at(2026, 2, 6, 5, 32, 0));
        }
    }

    #[test]
    fn non_renewable_tokens_warn_ahead_then_need_a_human() {
        // Token B: sandbox, dies 2026-03-02 03:30 IST.
        let exp = ist_at(2026, 3, 2, 3, 30, 0);
        let view = AccountView {
            token: Some(TokenSummary {
                expires_at: exp,
                kind: TokenKind::Sandbox,
            }),
            can_renew_daily: false,
            jitter_seed: 0,
        };
        let p = RenewalPolicy::default();
        let early = plan(ist_at(2026, 2, 10, 12, 0, 0), &view, &p);
        assert_eq!(early.action, Action::WarnExpiry);
        assert_eq!(early.at, ist_at(2026, 2, 27, 3, 30, 0));
        assert_eq!(early.deadline, Some(exp));
        assert!(early.reason.contains("sandbox token"), "{}", early.reason);

        let late_now = ist_at(2026, 2, 28, 12, 0, 0);
        let late = plan(late_now, &view, &p);
        assert_eq!((late.action, late.at), (Action::WarnExpiry, late_now));

        let dead = plan(exp, &view, &p);
        assert_eq!(dead.action, Action::ManualNeeded);
        assert!(dead.reason.contains("Developer Apps"), "{}", dead.reason);
    }

    #[test]
    fn extended_token_is_not_renewed_even_with_a_strategy() {
        let exp = ist_at(2027, 3, 12, 10, 0, 0);
        let view = AccountView {
            token: Some(TokenSummary {
                expires_at: exp,
                kind: TokenKind::Extended,
            }),
            can_renew_daily: true,
            jitter_seed: 0,
        };
        let got = plan(
            ist_at(2026, 3, 12, 10, 0, 0),
            &view,
            &RenewalPolicy::default(),
        );
        assert_eq!(got.action, Action::WarnExpiry);
        assert_eq!(got.at, ist_at(2027, 3, 9, 10, 0, 0));
    }

    #[test]
    fn daily_token_without_strategy_warns_now() {
        let exp = ist_at(2026, 2, 6, 3, 30, 0);
        let now = ist_at(2026, 2, 5, 10, 0, 0);
        let view = AccountView {
            can_renew_daily: false,
            ..daily(exp)
        };
        let got = plan(now, &view, &RenewalPolicy::default());
        assert_eq!((got.action, got.at), (Action::WarnExpiry, now));
    }

    #[test]
    fn window_set_before_rollover_is_clamped_to_0330() {
        let p = RenewalPolicy {
            window_start: Time::constant(1, 0, 0, 0),
            deadline: Time::constant(2, 0, 0, 0),
            ..no_jitter()
        };
        assert_eq!(p.effective_window(), (EARLIEST_RENEWAL, EARLIEST_RENEWAL));
        let exp = ist_at(2026, 2, 6, 3, 30, 0);
        let got = plan(ist_at(2026, 2, 5, 10, 0, 0), &daily(exp), &p);
        assert_eq!(got.at, exp, "renews at the rollover, not before it");
    }

    #[test]
    fn action_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&Action::ManualNeeded).unwrap(),
            r#""manual_needed""#
        );
        assert_eq!(Action::RenewAt.to_string(), "renew_at");
    }

    #[test]
    fn jitter_seed_is_stable_per_account() {
        assert_eq!(jitter_seed("main"), jitter_seed("main"));
        assert_ne!(jitter_seed("main"), jitter_seed("alt"));
    }

    fn any_policy() -> impl Strategy<Value = RenewalPolicy> {
        (
            0i64..(24 * 60),
            0i64..(24 * 60),
            0i64..7200,
            proptest::collection::vec(0i32..60, 0..10),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(ws, dl, jitter, holidays, tw, th)| {
                let t = |m: i64| {
                    Time::midnight()
                        .checked_add(SignedDuration::from_mins(m))
                        .unwrap()
                };
                RenewalPolicy {
                    window_start: t(ws),
                    deadline: t(dl),
                    max_jitter: SignedDuration::from_secs(jitter),
                    warn_ahead: SignedDuration::from_hours(72),
                    holidays: holidays
                        .into_iter()
                        .map(|o| {
                            date(2026, 1, 1)
                                .checked_add(jiff::Span::new().days(o * 7))
                                .unwrap()
                        })
                        .collect(),
                    trade_weekends: tw,
                    trade_holidays: th,
                    ..RenewalPolicy::default()
                }
            })
    }

    fn any_instant() -> impl Strategy<Value = Timestamp> {
        // 2026-01-01 .. 2027-06-01
        (1_767_225_600i64..1_780_272_000).prop_map(|s| Timestamp::from_second(s).unwrap())
    }

    fn in_forbidden_zone(at: Timestamp) -> bool {
        let r = next_rollover_after(at);
        at > r - SignedDuration::from_hours(6)
    }

    fn assert_in_window(p: &Plan, policy: &RenewalPolicy) -> Result<(), TestCaseError> {
        let dt = ist_datetime(p.at);
        let (start, deadline) = policy.effective_window();
        prop_assert!(dt.time() >= start && dt.time() <= deadline, "{:?}", p);
        prop_assert!(policy.is_trading_day(dt.date()), "{:?}", p);
        Ok(())
    }

    proptest! {
        #[test]
        fn live_daily_token_renewal_is_in_window_on_trading_day_never_before_rollover(
            issued in any_instant(),
            frac in 0.0f64..1.0,
            seed in any::<u64>(),
            policy in any_policy(),
        ) {
            let exp = next_rollover_after(issued);
            let life = exp.duration_since(issued).as_secs();
            let now = issued + SignedDuration::from_secs((life as f64 * frac) as i64);
            prop_assume!(now < exp);
            let view = AccountView { jitter_seed: seed, ..daily(exp) };
            let p = plan(now, &view, &policy);
            prop_assert_eq!(p.action, Action::RenewAt);
            prop_assert!(p.at > now);
            prop_assert!(p.at >= exp, "renewal {} before the token dies {}", p.at, exp);
            prop_assert!(!in_forbidden_zone(p.at), "{:?}", p);
            assert_in_window(&p, &policy)?;
            prop_assert!(p.deadline.is_some_and(|d| d >= p.at));
        }

        #[test]
        fn expired_daily_token_is_renewed_now_only_in_or_after_a_trading_window(
            exp in any_instant(),
            after in 0i64..(5 * 86_400),
            seed in any::<u64>(),
            policy in any_policy(),
        ) {
            let exp = next_rollover_after(exp);
            let now = exp + SignedDuration::from_secs(after);
            let p = plan(now, &AccountView { jitter_seed: seed, ..daily(exp) }, &policy);
            match p.action {
                Action::RenewNow => {
                    prop_assert_eq!(p.at, now);
                    let dt = ist_datetime(now);
                    prop_assert!(policy.is_trading_day(dt.date()));
                    prop_assert!(dt.time() >= policy.effective_window().0);
                }
                Action::RenewAt => {
                    prop_assert!(p.at > now);
                    prop_assert!(!in_forbidden_zone(p.at), "{:?}", p);
                    assert_in_window(&p, &policy)?;
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn plan_never_schedules_in_the_past(
            now in any_instant(),
            exp in any_instant(),
            kind in prop_oneof![Just(TokenKind::Daily), Just(TokenKind::Extended), Just(TokenKind::Sandbox), Just(TokenKind::Unknown)],
            has_token in any::<bool>(),
            can_renew in any::<bool>(),
            seed in any::<u64>(),
            policy in any_policy(),
        ) {
            let view = AccountView {
                token: has_token.then_some(TokenSummary { expires_at: exp, kind }),
                can_renew_daily: can_renew,
                jitter_seed: seed,
            };
            let p = plan(now, &view, &policy);
            prop_assert!(p.at >= now);
            prop_assert!(!p.reason.is_empty());
        }
    }

    /// The week of Mon 2026-11-30: Tue a settlement holiday (a trading day), Fri closed
    /// for NSE (MCX open in the evening), Sat an NSE special session.
    fn week_calendar() -> Arc<TradingCalendar> {
        use crate::calendar::{CalendarDay, Session};
        let sat = date(2026, 12, 5);
        let fri = date(2026, 12, 4);
        Arc::new(TradingCalendar::new(
            [2026],
            vec![
                CalendarDay {
                    date: date(2026, 12, 1),
                    description: "Settlement holiday".into(),
                    kind: "SETTLEMENT_HOLIDAY".into(),
                    closed: vec![],
                    open: vec![],
                },
                CalendarDay {
                    date: fri,
                    description: "Closed Friday".into(),
                    kind: "TRADING_HOLIDAY".into(),
                    closed: vec!["NSE".into(), "BSE".into(), "NFO".into()],
                    open: vec![Session {
                        exchange: "MCX".into(),
                        start: ist_at(2026, 12, 4, 17, 0, 0),
                        end: ist_at(2026, 12, 4, 23, 30, 0),
                    }],
                },
                CalendarDay {
                    date: sat,
                    description: "Special session".into(),
                    kind: "TRADING_HOLIDAY".into(),
                    closed: vec!["MCX".into()],
                    open: vec![Session {
                        exchange: "NSE".into(),
                        start: ist_at(2026, 12, 5, 9, 15, 0),
                        end: ist_at(2026, 12, 5, 15, 30, 0),
                    }],
                },
            ],
        ))
    }

    fn with_calendar() -> RenewalPolicy {
        RenewalPolicy {
            calendar: Some(week_calendar()),
            ..no_jitter()
        }
    }

    #[test]
    fn the_calendar_week_settlement_holiday_saturday_session_and_closed_friday() {
        let p = with_calendar();
        let days: Vec<bool> = (0..7)
            .map(|i| {
                p.is_trading_day(
                    date(2026, 11, 30)
                        .checked_add(jiff::Span::new().days(i))
                        .unwrap(),
                )
            })
            .collect();
        // Mon, Tue (settlement), Wed, Thu, Fri (closed), Sat (session), Sun.
        assert_eq!(days, [true, true, true, true, false, true, false]);

        // A token dying on the settlement holiday is renewed that morning.
        let got = plan(
            ist_at(2026, 11, 30, 12, 0, 0),
            &daily(ist_at(2026, 12, 1, 3, 30, 0)),
            &p,
        );
        assert_eq!(
            (got.action, got.at),
            (Action::RenewAt, ist_at(2026, 12, 1, 5, 30, 0))
        );

        // A token dying on the closed Friday: around the rollover, the renewal is set for
        // the Saturday session's morning, never for Friday or Monday.
        let sat_window = ist_at(2026, 12, 5, 5, 30, 0);
        let sat_deadline = Some(ist_at(2026, 12, 5, 9, 0, 0));
        let exp = ist_at(2026, 12, 4, 3, 30, 0);
        for now in [
            ist_at(2026, 12, 4, 3, 29, 59),
            ist_at(2026, 12, 4, 3, 30, 0),
            ist_at(2026, 12, 4, 3, 30, 1),
        ] {
            let got = plan(now, &daily(exp), &p);
            assert_eq!(
                (got.action, got.at, got.deadline),
                (Action::RenewAt, sat_window, sat_deadline),
                "now {}: {}",
                format_ist(now),
                got.reason
            );
        }
        // The token made on Friday dies Saturday 03:30 and is renewed Saturday morning.
        let exp = ist_at(2026, 12, 5, 3, 30, 0);
        for now in [
            ist_at(2026, 12, 5, 3, 29, 59),
            ist_at(2026, 12, 5, 3, 30, 0),
            ist_at(2026, 12, 5, 3, 30, 1),
        ] {
            let got = plan(now, &daily(exp), &p);
            assert_eq!(
                (got.action, got.at),
                (Action::RenewAt, sat_window),
                "now {}",
                format_ist(now)
            );
        }
        // The Saturday token dies Sunday 03:30: Sunday is closed, so Monday.
        let exp = ist_at(2026, 12, 6, 3, 30, 0);
        for now in [
            ist_at(2026, 12, 6, 3, 29, 59),
            ist_at(2026, 12, 6, 3, 30, 0),
            ist_at(2026, 12, 6, 3, 30, 1),
        ] {
            let got = plan(now, &daily(exp), &p);
            assert_eq!(
                (got.action, got.at),
                (Action::RenewAt, ist_at(2026, 12, 7, 5, 30, 0)),
                "now {}",
                format_ist(now)
            );
        }
    }

    #[test]
    fn config_holidays_override_the_calendar_and_exchanges_choose_the_days() {
        // The Saturday session listed in the config holidays: closed after all.
        let p = RenewalPolicy {
            holidays: vec![date(2026, 12, 5)],
            ..with_calendar()
        };
        let got = plan(
            ist_at(2026, 12, 4, 3, 30, 0),
            &daily(ist_at(2026, 12, 4, 3, 30, 0)),
            &p,
        );
        assert_eq!(got.at, ist_at(2026, 12, 7, 5, 30, 0));
        // An MCX-only account trades the closed Friday (evening session), not the Saturday.
        let p = RenewalPolicy {
            exchanges: vec!["MCX".into()],
            ..with_calendar()
        };
        assert!(p.is_trading_day(date(2026, 12, 4)));
        assert!(!p.is_trading_day(date(2026, 12, 5)));
        // Without a calendar: weekdays only.
        let p = no_jitter();
        assert!(p.is_trading_day(date(2026, 12, 4)));
        assert!(!p.is_trading_day(date(2026, 12, 5)));
        // Years the calendar does not cover: weekdays only.
        let p = with_calendar();
        assert!(p.is_trading_day(date(2027, 12, 3)));
        assert!(!p.is_trading_day(date(2027, 12, 4)));
    }
}
