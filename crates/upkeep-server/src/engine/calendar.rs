//! The trading calendar the plan renews by: fetched from Upstox at start, again every
//! day at 00:05 IST (which also catches the turn of the year), kept in the store per
//! year. When Upstox cannot be reached: the stored copy, then the weekdays (with the
//! config `holidays`, which always apply); a warning is logged once per outage, not
//! every retry.
//!
//! Supervisors wait (at most [`FIRST_FETCH_WAIT`]) for the first attempt to resolve
//! before they plan, so a daemon started on a special-session Saturday does not first
//! plan by the weekdays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use upkeep_core::calendar::{CalendarDay, TradingCalendar};
use upkeep_core::expiry::{format_ist, ist_date, ist_timestamp};
use upkeep_store::{StoredCalendar, TokenStore};
use upkeep_upstox::UpstoxClient;

use super::Engine;

/// The longest a supervisor waits for the first calendar fetch before planning anyway.
pub const FIRST_FETCH_WAIT: Duration = Duration::from_secs(20);
/// When the calendar is refreshed each day (IST).
pub const DAILY_REFRESH: Time = Time::constant(0, 5, 0, 0);
/// How soon a failed fetch is tried again (simulated/engine time).
pub const RETRY_AFTER_FAILURE: SignedDuration = SignedDuration::from_hours(1);

/// Where the calendar the plan uses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarSource {
    /// Fetched from Upstox by this process.
    Upstox,
    /// Upstox unreachable: the copy kept in the store by an earlier fetch.
    Stored,
    /// Neither: Monday to Friday (and the config `holidays`).
    Weekdays,
}

impl CalendarSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstox => "upstox",
            Self::Stored => "stored",
            Self::Weekdays => "weekdays",
        }
    }
}

/// The calendar in use and where it came from.
#[derive(Debug, Clone)]
pub struct CalendarView {
    /// `None` with [`CalendarSource::Weekdays`].
    pub calendar: Option<Arc<TradingCalendar>>,
    pub source: CalendarSource,
    /// When the calendar in use was fetched from Upstox (by this or an earlier run).
    pub fetched_at: Option<Timestamp>,
    /// Why the last fetch failed (one line), if it did.
    pub error: Option<String>,
}

impl CalendarView {
    fn weekdays() -> Self {
        Self {
            calendar: None,
            source: CalendarSource::Weekdays,
            fetched_at: None,
            error: None,
        }
    }
}

/// The engine's calendar state.
pub(crate) struct CalendarKeeper {
    view: Mutex<CalendarView>,
    /// True once the first fetch attempt has resolved (either way).
    ready: watch::Sender<bool>,
    /// Set while an outage has been warned about.
    warned: AtomicBool,
    /// Warnings logged (one per outage).
    warnings: AtomicU64,
    /// Fetch attempts completed.
    attempts: AtomicU64,
}

impl CalendarKeeper {
    pub(crate) fn new(initial: CalendarView) -> Self {
        Self {
            view: Mutex::new(initial),
            ready: watch::channel(false).0,
            warned: AtomicBool::new(false),
            warnings: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        }
    }
}

/// The years the daemon keeps: the current IST year and the next.
fn years_around(now: Timestamp) -> [i16; 2] {
    let y = ist_date(now).year();
    [y, y.saturating_add(1)]
}

/// The calendar for `years` (the first one decides the source): fetched from Upstox
/// (and kept in the store), else the stored copies, else none (weekdays). Upstox
/// serves its current year; another year is taken from its answer only when listed.
pub async fn resolve_calendar(
    upstox: &UpstoxClient,
    store: &dyn TokenStore,
    years: &[i16],
    now: Timestamp,
) -> CalendarView {
    let Some(&main_year) = years.first() else {
        return CalendarView::weekdays();
    };
    let (fetched, error) = match upstox.market_holidays().await {
        Ok(days) => {
            let fetched_years: Vec<i16> = years
                .iter()
                .copied()
                .filter(|y| days.iter().any(|d| d.date.year() == *y))
                .collect();
            let error = (!fetched_years.contains(&main_year))
                .then(|| format!("Upstox's market holidays list no date of {main_year}"));
            let days: Vec<CalendarDay> = days
                .into_iter()
                .filter(|d| fetched_years.contains(&d.date.year()))
                .collect();
            (Some(TradingCalendar::new(fetched_years, days)), error)
        }
        Err(e) => (None, Some(super::short_error(&e))),
    };
    let mut calendar = TradingCalendar::default();
    let mut fetched_at = None;
    let mut source = CalendarSource::Weekdays;
    if let Some(f) = fetched {
        for &y in &f.years {
            let one = TradingCalendar::new(
                [y],
                f.days
                    .values()
                    .filter(|d| d.date.year() == y)
                    .cloned()
                    .collect(),
            );
            let stored = StoredCalendar {
                year: y,
                calendar: one,
                fetched_at: now,
            };
            if let Err(e) = store.put_calendar(&stored).await {
                tracing::warn!(year = y, error = %e, "could not keep the trading calendar in the store");
            }
        }
        if f.years.contains(&main_year) {
            source = CalendarSource::Upstox;
            fetched_at = Some(now);
        }
        calendar.merge(f);
    }
    for &y in years {
        if calendar.years.contains(&y) {
            continue;
        }
        match store.calendar(y).await {
            Ok(Some(stored)) => {
                if y == main_year {
                    source = CalendarSource::Stored;
                    fetched_at = Some(stored.fetched_at);
                }
                calendar.merge(stored.calendar);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(year = y, error = %e, "could not read the stored trading calendar");
            }
        }
    }
    CalendarView {
        calendar: (!calendar.years.is_empty()).then(|| Arc::new(calendar)),
        source,
        fetched_at,
        error,
    }
}

/// The next 00:05 IST strictly after `now`.
fn next_daily_refresh(now: Timestamp) -> Timestamp {
    let today = ist_date(now);
    let at = |d: Date| ist_timestamp(d, DAILY_REFRESH).unwrap_or(Timestamp::MAX);
    let t = at(today);
    if t > now {
        t
    } else {
        today.tomorrow().map_or(Timestamp::MAX, at)
    }
}

impl Engine {
    /// The trading calendar in use and its source.
    pub fn calendar_view(&self) -> CalendarView {
        self.inner
            .calendar
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetch attempts completed and outage warnings logged so far (for tests).
    pub fn calendar_counts(&self) -> (u64, u64) {
        let c = &self.inner.calendar;
        (
            c.attempts.load(Ordering::Relaxed),
            c.warnings.load(Ordering::Relaxed),
        )
    }

    /// The calendar the plan uses now (`None`: weekdays).
    pub(super) fn current_calendar(&self) -> Option<Arc<TradingCalendar>> {
        self.calendar_view().calendar
    }

    /// The stored calendar of the current and next year, read at start so that the plan
    /// has it before the first fetch.
    pub(super) async fn stored_calendar(store: &dyn TokenStore, now: Timestamp) -> CalendarView {
        let mut calendar = TradingCalendar::default();
        let mut view = CalendarView::weekdays();
        for (i, y) in years_around(now).into_iter().enumerate() {
            if let Ok(Some(stored)) = store.calendar(y).await {
                if i == 0 {
                    view.source = CalendarSource::Stored;
                    view.fetched_at = Some(stored.fetched_at);
                }
                calendar.merge(stored.calendar);
            }
        }
        if !calendar.years.is_empty() {
            view.calendar = Some(Arc::new(calendar));
        }
        view
    }

    /// Fetches the calendar once and swaps it in; logs one warning per outage.
    pub async fn refresh_calendar(&self) -> CalendarView {
        let now = self.inner.clock.now();
        let view = resolve_calendar(
            &self.inner.upstox,
            self.inner.store.as_ref(),
            &years_around(now),
            now,
        )
        .await;
        let keeper = &self.inner.calendar;
        match &view.error {
            Some(error) => {
                if !keeper.warned.swap(true, Ordering::Relaxed) {
                    keeper.warnings.fetch_add(1, Ordering::Relaxed);
                    let by = match (view.source, view.fetched_at) {
                        (CalendarSource::Stored, Some(at)) => {
                            format!("the stored copy fetched {}", format_ist(at))
                        }
                        _ => "weekdays and [renewal] holidays".to_owned(),
                    };
                    tracing::warn!(
                        error = %error,
                        "the trading calendar could not be fetched from Upstox; planning by {by} until it can (retried hourly)"
                    );
                }
            }
            None => {
                if keeper.warned.swap(false, Ordering::Relaxed) {
                    tracing::info!("the trading calendar was fetched from Upstox again");
                }
            }
        }
        *keeper.view.lock().unwrap_or_else(|e| e.into_inner()) = view.clone();
        keeper.attempts.fetch_add(1, Ordering::Relaxed);
        keeper.ready.send_replace(true);
        view
    }

    /// Waits until the first fetch attempt has resolved, at most [`FIRST_FETCH_WAIT`].
    pub(super) async fn wait_for_calendar(&self) {
        let mut rx = self.inner.calendar.ready.subscribe();
        let waited = tokio::time::timeout(FIRST_FETCH_WAIT, rx.wait_for(|ready| *ready)).await;
        if waited.is_err() {
            tracing::warn!(
                "the trading calendar's first fetch is still running after {}s; planning by what is known",
                FIRST_FETCH_WAIT.as_secs()
            );
        }
    }

    /// The calendar task: fetch now, then every day at 00:05 IST (hourly while failing).
    pub(super) async fn calendar_loop(self) {
        loop {
            let view = self.refresh_calendar().await;
            let now = self.inner.clock.now();
            let mut next = next_daily_refresh(now);
            if view.error.is_some() {
                next = next.min(now + RETRY_AFTER_FAILURE);
            }
            if !self.sleep_until(next).await {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn the_daily_refresh_is_the_next_0005_ist() {
        let at = |d, h, m| ist_timestamp(d, Time::constant(h, m, 0, 0)).unwrap();
        assert_eq!(
            next_daily_refresh(at(date(2026, 12, 31), 23, 0)),
            at(date(2027, 1, 1), 0, 5)
        );
        assert_eq!(
            next_daily_refresh(at(date(2026, 12, 1), 0, 4)),
            at(date(2026, 12, 1), 0, 5)
        );
        assert_eq!(
            next_daily_refresh(at(date(2026, 12, 1), 0, 5)),
            at(date(2026, 12, 2), 0, 5)
        );
        assert_eq!(years_around(at(date(2026, 12, 31), 23, 0)), [2026, 2027]);
    }
}
