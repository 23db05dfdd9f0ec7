//! The trading calendar: per IST date, which exchanges are closed and which hold a
//! session (and when). A neutral type: the Upstox client fills it from
//! `/v2/market/holidays`, the store keeps it, the plan reads it.
//!
//! Whether an exchange is open on a date is decided from the listed exchanges, never
//! from the holiday type: a settlement holiday is a normal trading day, and a trading
//! holiday may still list an exchange as open (a Saturday or Sunday special session,
//! Muhurat trading in the evening). For one exchange on one date:
//!
//! 1. listed in `open` (with its session times): open;
//! 2. listed in `closed`: closed;
//! 3. otherwise: open on Monday–Friday, closed on Saturday and Sunday.
//!
//! An account trades on a date when any of its exchanges is open.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The exchanges that matter when none are configured.
pub const DEFAULT_EXCHANGES: &[&str] = &["NSE"];

/// One exchange's session on a listed date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub exchange: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One listed date of the calendar (a holiday, settlement holiday or special session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarDay {
    pub date: Date,
    pub description: String,
    /// As published (`TRADING_HOLIDAY`, `SETTLEMENT_HOLIDAY`, `SPECIAL_TIMING`, ...);
    /// for display only, never for deciding.
    pub kind: String,
    pub closed: Vec<String>,
    pub open: Vec<Session>,
}

/// The listed dates of one or more whole years. Dates of a covered year that are not
/// listed follow the weekday rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingCalendar {
    /// The years this calendar speaks for.
    pub years: Vec<i16>,
    pub days: BTreeMap<Date, CalendarDay>,
}

/// What the calendar says about one date for a set of exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayStatus {
    /// At least one of the exchanges trades; `special` holds the sessions listed for
    /// that date (a weekend or holiday session, or unusual hours).
    Open { special: Vec<Session> },
    /// None of the exchanges trades.
    Closed,
}

fn is_weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

fn matches(exchanges: &[String], name: &str) -> bool {
    exchanges.iter().any(|e| e.eq_ignore_ascii_case(name))
}

impl TradingCalendar {
    /// A calendar for `years` from its listed dates (later duplicates replace earlier).
    pub fn new(years: impl IntoIterator<Item = i16>, days: Vec<CalendarDay>) -> Self {
        let mut years: Vec<i16> = years.into_iter().collect();
        years.sort_unstable();
        years.dedup();
        Self {
            years,
            days: days.into_iter().map(|d| (d.date, d)).collect(),
        }
    }

    /// Whether this calendar speaks for date `d` (its year is covered).
    pub fn covers(&self, d: Date) -> bool {
        self.years.contains(&d.year())
    }

    /// Adds (or replaces) the listed dates of the years in `other`.
    pub fn merge(&mut self, other: TradingCalendar) {
        for y in &other.years {
            self.days.retain(|d, _| d.year() != *y);
        }
        self.years.extend(other.years);
        self.years.sort_unstable();
        self.years.dedup();
        self.days.extend(other.days);
    }

    /// Whether exchange `exchange` is open on `d` (see the module docs). Dates outside
    /// the covered years follow the weekday rule.
    pub fn exchange_open(&self, exchange: &str, d: Date) -> bool {
        match self.days.get(&d) {
            Some(day)
                if day
                    .open
                    .iter()
                    .any(|s| s.exchange.eq_ignore_ascii_case(exchange)) =>
            {
                true
            }
            Some(day) if day.closed.iter().any(|c| c.eq_ignore_ascii_case(exchange)) => false,
            _ => !is_weekend(d),
        }
    }

    /// Whether any of `exchanges` is open on `d`, and the special sessions listed for
    /// them that day. `None` when the calendar does not cover `d`.
    pub fn status(&self, exchanges: &[String], d: Date) -> Option<DayStatus> {
        if !self.covers(d) {
            return None;
        }
        let open = exchanges.iter().any(|e| self.exchange_open(e, d));
        if !open {
            return Some(DayStatus::Closed);
        }
        let special = self
            .days
            .get(&d)
            .map(|day| {
                day.open
                    .iter()
                    .filter(|s| matches(exchanges, &s.exchange))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Some(DayStatus::Open { special })
    }

    /// Whether any of `exchanges` is open on `d`; `None` when `d` is not covered.
    pub fn is_open(&self, exchanges: &[String], d: Date) -> Option<bool> {
        self.status(exchanges, d)
            .map(|s| matches!(s, DayStatus::Open { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::ist_timestamp;
    use jiff::civil::{Time, date};

    fn session(ex: &str, d: Date, h: i8, end_h: i8) -> Session {
        Session {
            exchange: ex.into(),
            start: ist_timestamp(d, Time::constant(h, 0, 0, 0)).unwrap(),
            end: ist_timestamp(d, Time::constant(end_h, 0, 0, 0)).unwrap(),
        }
    }

    fn nse() -> Vec<String> {
        vec!["NSE".into()]
    }

    #[test]
    fn open_is_decided_from_listed_exchanges_not_the_holiday_type() {
        let settlement = date(2026, 12, 1); // Tue
        let saturday = date(2026, 12, 5);
        let closed_friday = date(2026, 12, 4);
        let cal = TradingCalendar::new(
            [2026],
            vec![
                CalendarDay {
                    date: settlement,
                    description: "Settlement".into(),
                    kind: "SETTLEMENT_HOLIDAY".into(),
                    closed: vec![],
                    open: vec![],
                },
                CalendarDay {
                    date: saturday,
                    description: "Special session".into(),
                    kind: "TRADING_HOLIDAY".into(),
                    closed: vec!["MCX".into()],
                    open: vec![session("NSE", saturday, 9, 15)],
                },
                CalendarDay {
                    date: closed_friday,
                    description: "Holiday".into(),
                    kind: "TRADING_HOLIDAY".into(),
                    closed: vec!["NSE".into(), "BSE".into()],
                    open: vec![session("MCX", closed_friday, 17, 23)],
                },
            ],
        );
        assert_eq!(cal.is_open(&nse(), settlement), Some(true));
        assert_eq!(cal.is_open(&nse(), saturday), Some(true));
        assert_eq!(cal.is_open(&nse(), closed_friday), Some(false));
        assert_eq!(cal.is_open(&["MCX".into()], closed_friday), Some(true));
        assert_eq!(cal.is_open(&["mcx".into()], saturday), Some(false));
        assert_eq!(cal.is_open(&nse(), date(2026, 12, 6)), Some(false));
        assert_eq!(cal.is_open(&nse(), date(2027, 1, 4)), None);
        assert_eq!(
            cal.status(&nse(), saturday),
            Some(DayStatus::Open {
                special: vec![session("NSE", saturday, 9, 15)]
            })
        );
    }

    #[test]
    fn merge_replaces_a_year() {
        let d1 = date(2026, 3, 3);
        let d2 = date(2026, 3, 4);
        let day = |d| CalendarDay {
            date: d,
            description: String::new(),
            kind: "TRADING_HOLIDAY".into(),
            closed: vec!["NSE".into()],
            open: vec![],
        };
        let mut cal = TradingCalendar::new([2026], vec![day(d1)]);
        cal.merge(TradingCalendar::new([2026, 2027], vec![day(d2)]));
        assert_eq!(cal.years, vec![2026, 2027]);
        assert_eq!(cal.is_open(&nse(), d1), Some(true));
        assert_eq!(cal.is_open(&nse(), d2), Some(false));
    }
}
