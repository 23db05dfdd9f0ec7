//! The market calendar: `GET /v2/market/holidays`, `/v2/market/holidays/{date}`,
//! `/v2/market/timings/{date}` and `/v2/market/status/{exchange}`, and the session of
//! each exchange on each IST date (also used for the feed's `market_info`).
//!
//! Read from the reference (section 11) and the official SDK's
//! `MarketHolidaysAndTimingsApi`: holidays are `data[]` of `{date, description,
//! holiday_type, closed_exchanges[], open_exchanges[{exchange, start_time, end_time}]}` with
//! epoch-millisecond times; a settlement holiday is a trading day; a trading holiday may
//! list open exchanges (a special session); timings are empty on closed days; an invalid
//! date is `UDAPI1088`. The SDK sends no token for holidays and timings (its
//! `auth_settings` is empty) and a bearer token for the market status.
//!
//! For one exchange on one date: listed in `open_exchanges`, it trades those hours;
//! listed in `closed_exchanges`, it is closed; otherwise it keeps its regular hours on
//! Monday to Friday and is closed on weekends.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, success};
use crate::ist;
use crate::sim::Sim;

/// An IST wall time as (hour, minute).
type HourMinute = (i8, i8);

/// The exchanges Upstox lists in the calendar, with their regular hours (IST).
pub const EXCHANGES: [(&str, HourMinute, HourMinute); 8] = [
    ("NSE", (9, 15), (15, 30)),
    ("BSE", (9, 15), (15, 30)),
    ("NFO", (9, 15), (15, 30)),
    ("BFO", (9, 15), (15, 30)),
    ("CDS", (9, 0), (17, 0)),
    ("BCD", (9, 0), (17, 0)),
    ("MCX", (9, 0), (23, 30)),
    ("NSCOM", (9, 0), (23, 30)),
];

fn known(exchange: &str) -> Option<&'static str> {
    EXCHANGES
        .iter()
        .find(|(e, _, _)| e.eq_ignore_ascii_case(exchange))
        .map(|(e, _, _)| *e)
}

fn regular_hours(exchange: &str) -> Option<(Time, Time)> {
    EXCHANGES
        .iter()
        .find(|(e, _, _)| *e == exchange)
        .map(|(_, (sh, sm), (eh, em))| {
            (
                Time::constant(*sh, *sm, 0, 0),
                Time::constant(*eh, *em, 0, 0),
            )
        })
}

/// `holiday_type` as Upstox spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HolidayType {
    TradingHoliday,
    SettlementHoliday,
    SpecialTiming,
}

impl HolidayType {
    fn as_str(self) -> &'static str {
        match self {
            Self::TradingHoliday => "TRADING_HOLIDAY",
            Self::SettlementHoliday => "SETTLEMENT_HOLIDAY",
            Self::SpecialTiming => "SPECIAL_TIMING",
        }
    }
}

/// One exchange's session on a listed date, in IST wall time (`"18:00"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    pub exchange: String,
    pub start: Time,
    pub end: Time,
}

/// One listed date (`[[market_calendar]]` in the simulator config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarEntry {
    pub date: Date,
    #[serde(default)]
    pub description: String,
    pub holiday_type: HolidayType,
    #[serde(default)]
    pub closed_exchanges: Vec<String>,
    #[serde(default)]
    pub open_exchanges: Vec<SessionConfig>,
}

impl CalendarEntry {
    /// Checks exchange names and session times.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for e in &self.closed_exchanges {
            if known(e).is_none() {
                return Err(unknown_exchange(self.date, e));
            }
        }
        for s in &self.open_exchanges {
            if known(&s.exchange).is_none() {
                return Err(unknown_exchange(self.date, &s.exchange));
            }
            if s.start >= s.end {
                return Err(format!(
                    "market_calendar {}: session of {} must start before it ends",
                    self.date, s.exchange
                ));
            }
        }
        Ok(())
    }
}

fn unknown_exchange(date: Date, e: &str) -> String {
    let names: Vec<&str> = EXCHANGES.iter().map(|(e, _, _)| *e).collect();
    format!(
        "market_calendar {date}: unknown exchange {e:?}; use one of {}",
        names.join(", ")
    )
}

fn all_closed(date: Date, description: &str) -> CalendarEntry {
    CalendarEntry {
        date,
        description: description.into(),
        holiday_type: HolidayType::TradingHoliday,
        closed_exchanges: EXCHANGES.iter().map(|(e, _, _)| (*e).to_owned()).collect(),
        open_exchanges: Vec::new(),
    }
}

fn session(exchange: &str, start: (i8, i8), end: (i8, i8)) -> SessionConfig {
    SessionConfig {
        exchange: exchange.into(),
        start: Time::constant(start.0, start.1, 0, 0),
        end: Time::constant(end.0, end.1, 0, 0),
    }
}

/// The first `weekday` on or after `d`.
fn first_on_or_after(d: Date, pred: impl Fn(Weekday) -> bool) -> Date {
    let mut d = d;
    for _ in 0..7 {
        if pred(d.weekday()) {
            return d;
        }
        d = d.tomorrow().unwrap_or(d);
    }
    d
}

fn ymd(year: i16, month: i8, day: i8) -> Option<Date> {
    Date::new(year, month, day).ok()
}

/// The default calendar of `year`: national holidays (all closed), a budget-day special
/// session on the first Saturday of February, a settlement holiday on the first weekday
/// of April, and Diwali's evening Muhurat session on the first Friday of November (a
/// trading holiday during the day).
pub fn default_year(year: i16) -> Vec<CalendarEntry> {
    let mut out = Vec::new();
    let mut push = |d: Option<Date>, f: &dyn Fn(Date) -> CalendarEntry| {
        if let Some(d) = d {
            out.push(f(d));
        }
    };
    push(ymd(year, 1, 26), &|d| all_closed(d, "Republic Day"));
    push(
        ymd(year, 2, 1).map(|d| first_on_or_after(d, |w| w == Weekday::Saturday)),
        &|d| CalendarEntry {
            date: d,
            description: "Union Budget (special trading session)".into(),
            holiday_type: HolidayType::TradingHoliday,
            closed_exchanges: vec!["CDS".into(), "BCD".into(), "NSCOM".into()],
            open_exchanges: vec![
                session("NSE", (9, 15), (15, 30)),
                session("BSE", (9, 15), (15, 30)),
                session("NFO", (9, 15), (15, 30)),
                session("BFO", (9, 15), (15, 30)),
                session("MCX", (9, 0), (17, 0)),
            ],
        },
    );
    push(
        ymd(year, 4, 1)
            .map(|d| first_on_or_after(d, |w| !matches!(w, Weekday::Saturday | Weekday::Sunday))),
        &|d| CalendarEntry {
            date: d,
            description: "Annual Bank Closing".into(),
            holiday_type: HolidayType::SettlementHoliday,
            closed_exchanges: Vec::new(),
            open_exchanges: Vec::new(),
        },
    );
    push(ymd(year, 5, 1), &|d| all_closed(d, "Maharashtra Day"));
    push(ymd(year, 8, 15), &|d| all_closed(d, "Independence Day"));
    push(ymd(year, 10, 2), &|d| {
        all_closed(d, "Mahatma Gandhi Jayanti")
    });
    push(
        ymd(year, 11, 1).map(|d| first_on_or_after(d, |w| w == Weekday::Friday)),
        &|d| CalendarEntry {
            date: d,
            description: "Diwali Laxmi Pujan (Muhurat trading)".into(),
            holiday_type: HolidayType::TradingHoliday,
            closed_exchanges: vec!["CDS".into(), "BCD".into(), "NSCOM".into()],
            open_exchanges: vec![
                session("NSE", (18, 0), (19, 0)),
                session("BSE", (18, 0), (19, 0)),
                session("NFO", (18, 0), (19, 0)),
                session("BFO", (18, 0), (19, 0)),
                session("MCX", (18, 0), (23, 30)),
            ],
        },
    );
    push(ymd(year, 12, 25), &|d| all_closed(d, "Christmas"));
    out
}

/// The simulator's calendar: configured entries over the default years.
#[derive(Debug, Clone, Default)]
pub struct MarketCalendar {
    configured: BTreeMap<Date, CalendarEntry>,
    default: bool,
}

/// One exchange's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExchangeDay {
    Closed,
    Regular(Time, Time),
    Listed(Time, Time),
}

impl MarketCalendar {
    /// `entries` win over `holidays` (all exchanges closed) on the same date; with
    /// `default`, the default calendar covers the clock's year and the next.
    pub fn new(entries: &[CalendarEntry], holidays: &[Date], default: bool) -> Self {
        let mut configured: BTreeMap<Date, CalendarEntry> = holidays
            .iter()
            .map(|d| (*d, all_closed(*d, "Holiday")))
            .collect();
        for e in entries {
            configured.insert(e.date, e.clone());
        }
        Self {
            configured,
            default,
        }
    }

    /// The listed dates of `year`, seen from `now` (default years: now's and the next).
    pub(crate) fn year(&self, year: i16, now: Timestamp) -> Vec<CalendarEntry> {
        let mut days: BTreeMap<Date, CalendarEntry> = BTreeMap::new();
        let this = ist::to_ist(now).year();
        if self.default && (year == this || Some(year) == this.checked_add(1)) {
            days.extend(default_year(year).into_iter().map(|e| (e.date, e)));
        }
        days.extend(
            self.configured
                .range(Date::new(year, 1, 1).unwrap_or(Date::MIN)..)
                .take_while(|(d, _)| d.year() == year)
                .map(|(d, e)| (*d, e.clone())),
        );
        days.into_values().collect()
    }

    /// The listed entry of `date`, if any.
    pub(crate) fn entry(&self, date: Date, now: Timestamp) -> Option<CalendarEntry> {
        self.year(date.year(), now)
            .into_iter()
            .find(|e| e.date == date)
    }

    /// `exchange`'s session on `date` (see the module docs).
    pub(crate) fn exchange_day(&self, exchange: &str, date: Date, now: Timestamp) -> ExchangeDay {
        let entry = self.entry(date, now);
        if let Some(e) = &entry {
            if let Some(s) = e.open_exchanges.iter().find(|s| s.exchange == exchange) {
                return ExchangeDay::Listed(s.start, s.end);
            }
            if e.closed_exchanges.iter().any(|c| c == exchange) {
                return ExchangeDay::Closed;
            }
        }
        match (date.weekday(), regular_hours(exchange)) {
            (Weekday::Saturday | Weekday::Sunday, _) | (_, None) => ExchangeDay::Closed,
            (_, Some((s, e))) => ExchangeDay::Regular(s, e),
        }
    }
}

fn ms(date: Date, t: Time) -> i64 {
    ist::from_ist(date.to_datetime(t)).as_millisecond()
}

fn session_json(exchange: &str, date: Date, start: Time, end: Time) -> Value {
    json!({"exchange": exchange, "start_time": ms(date, start), "end_time": ms(date, end)})
}

fn entry_json(e: &CalendarEntry) -> Value {
    json!({
        "date": e.date.to_string(),
        "description": e.description,
        "holiday_type": e.holiday_type.as_str(),
        "closed_exchanges": e.closed_exchanges,
        "open_exchanges": e
            .open_exchanges
            .iter()
            .map(|s| session_json(&s.exchange, e.date, s.start, s.end))
            .collect::<Vec<_>>(),
    })
}

fn parse_date(text: &str) -> Result<Date, ApiError> {
    // Strictly YYYY-MM-DD, as the docs spell dates.
    let ok_shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    ok_shape
        .then(|| text.parse::<Date>().ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request("UDAPI1088", "Invalid date").with_invalid_value(text.to_owned())
        })
}

/// `GET /v2/market/holidays`: the listed dates of the simulator clock's year (IST).
pub(crate) async fn holidays(State(sim): State<Sim>) -> Response {
    let now = sim.now();
    let year = ist::to_ist(now).year();
    let data: Vec<Value> = sim
        .calendar()
        .year(year, now)
        .iter()
        .map(entry_json)
        .collect();
    success(json!(data))
}

/// `GET /v2/market/holidays/{date}`: that date's entry, or an empty list.
pub(crate) async fn holiday(State(sim): State<Sim>, Path(date): Path<String>) -> Response {
    match parse_date(&date) {
        Ok(d) => {
            let data: Vec<Value> = sim
                .calendar()
                .entry(d, sim.now())
                .iter()
                .map(entry_json)
                .collect();
            success(json!(data))
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /v2/market/timings/{date}`: each open exchange's session; empty on closed days.
pub(crate) async fn timings(State(sim): State<Sim>, Path(date): Path<String>) -> Response {
    let d = match parse_date(&date) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let now = sim.now();
    let cal = sim.calendar();
    let data: Vec<Value> = EXCHANGES
        .iter()
        .filter_map(|(e, _, _)| match cal.exchange_day(e, d, now) {
            ExchangeDay::Closed => None,
            ExchangeDay::Regular(s, end) | ExchangeDay::Listed(s, end) => {
                Some(session_json(e, d, s, end))
            }
        })
        .collect();
    success(json!(data))
}

/// The feed segment an exchange's status is read from.
fn segment_of(exchange: &str) -> &'static str {
    match exchange {
        "NSE" => "NSE_EQ",
        "BSE" => "BSE_EQ",
        "NFO" => "NSE_FO",
        "BFO" => "BSE_FO",
        "CDS" => "NCD_FO",
        "BCD" => "BCD_FO",
        "MCX" => "MCX_FO",
        _ => "NSE_COM",
    }
}

/// The exchange a feed segment belongs to.
pub(crate) fn exchange_of(segment: &str) -> &'static str {
    match segment {
        "NSE_EQ" | "NSE_INDEX" => "NSE",
        "BSE_EQ" | "BSE_INDEX" => "BSE",
        "NSE_FO" => "NFO",
        "BSE_FO" => "BFO",
        "NCD_FO" => "CDS",
        "BCD_FO" => "BCD",
        "MCX_FO" | "MCX_INDEX" => "MCX",
        _ => "NSCOM",
    }
}

impl Sim {
    /// The status of feed segment `segment` at `now`, from the calendar: closed days
    /// `NORMAL_CLOSE`; a listed session open inside its hours; regular days by the
    /// segment's phases.
    pub(crate) fn segment_status(
        &self,
        segment: &str,
        now: Timestamp,
    ) -> upkeep_proto::feed::MarketStatus {
        use upkeep_proto::feed::MarketStatus as S;
        let local = ist::to_ist(now);
        match self
            .calendar()
            .exchange_day(exchange_of(segment), local.date(), now)
        {
            ExchangeDay::Closed => S::NormalClose,
            ExchangeDay::Listed(s, e) if regular_hours(exchange_of(segment)) != Some((s, e)) => {
                if (s..e).contains(&local.time()) {
                    S::NormalOpen
                } else {
                    S::NormalClose
                }
            }
            ExchangeDay::Listed(..) | ExchangeDay::Regular(..) => {
                crate::feed::segment_status_at(segment, ist::seconds_of_ist_day(now))
            }
        }
    }
}

/// `GET /v2/market/status/{exchange}` (bearer token): `{exchange, status, last_updated}`.
pub(crate) async fn status(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(exchange): Path<String>,
) -> Response {
    if let Err(e) = crate::rest::authorize_market(&sim, &headers, "/v2/market/status") {
        return e.into_response();
    }
    let Some(exchange) = known(&exchange) else {
        return ApiError::bad_request("UDAPI100036", "Invalid input: unknown exchange")
            .with_invalid_value(exchange)
            .into_response();
    };
    let now = sim.now();
    let status = sim.segment_status(segment_of(exchange), now);
    success(json!({
        "exchange": exchange,
        "status": status.as_str_name(),
        "last_updated": now.as_millisecond(),
    }))
}

/// 503 for the calendar routes under the `calendar_down` fault.
pub(crate) fn down() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UDAPI100500",
        "Something went wrong... please contact us",
    )
    .into_response()
}

/// True for the calendar routes.
pub(crate) fn is_calendar_path(path: &str) -> bool {
    path == "/v2/market/holidays"
        || path.starts_with("/v2/market/holidays/")
        || path.starts_with("/v2/market/timings/")
        || path.starts_with("/v2/market/status/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn at(d: Date) -> Timestamp {
        ist::from_ist(d.at(12, 0, 0, 0))
    }

    #[test]
    fn the_default_year_holds_a_saturday_session_a_settlement_holiday_and_muhurat() {
        let days = default_year(2026);
        let budget = days
            .iter()
            .find(|e| e.description.starts_with("Union Budget"))
            .unwrap();
        assert_eq!(budget.date, date(2026, 2, 7));
        assert_eq!(budget.date.weekday(), Weekday::Saturday);
        let settlement = days
            .iter()
            .find(|e| e.holiday_type == HolidayType::SettlementHoliday)
            .unwrap();
        assert_eq!(settlement.date, date(2026, 4, 1));
        let muhurat = days
            .iter()
            .find(|e| e.description.contains("Muhurat"))
            .unwrap();
        assert_eq!(muhurat.date, date(2026, 11, 6));
        for e in &days {
            e.validate().unwrap();
        }
    }

    #[test]
    fn exchange_days_follow_the_listed_exchanges_not_the_type() {
        let cal = MarketCalendar::new(&[], &[date(2026, 3, 3)], true);
        let now = at(date(2026, 1, 5));
        let nine15 = Time::constant(9, 15, 0, 0);
        let half3 = Time::constant(15, 30, 0, 0);
        // Settlement holiday: regular hours.
        assert_eq!(
            cal.exchange_day("NSE", date(2026, 4, 1), now),
            ExchangeDay::Regular(nine15, half3)
        );
        // Budget Saturday: listed session; CDS closed.
        assert_eq!(
            cal.exchange_day("NSE", date(2026, 2, 7), now),
            ExchangeDay::Listed(nine15, half3)
        );
        assert_eq!(
            cal.exchange_day("CDS", date(2026, 2, 7), now),
            ExchangeDay::Closed
        );
        // The market_holidays shorthand closes every exchange.
        assert_eq!(
            cal.exchange_day("MCX", date(2026, 3, 3), now),
            ExchangeDay::Closed
        );
        // An ordinary Sunday.
        assert_eq!(
            cal.exchange_day("NSE", date(2026, 1, 4), now),
            ExchangeDay::Closed
        );
        // The default covers this year and the next only.
        assert!(!cal.year(2027, now).is_empty());
        assert!(cal.year(2028, now).is_empty());
        assert!(
            MarketCalendar::new(&[], &[], false)
                .year(2026, now)
                .is_empty()
        );
    }

    #[test]
    fn dates_must_be_year_month_day() {
        assert!(parse_date("2026-02-07").is_ok());
        for bad in ["2026-2-7", "2026-02-30", "07-02-2026", "", "2026-02-07x"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        // 2026-02-07 09:15 IST = 03:45 UTC.
        assert_eq!(
            ms(date(2026, 2, 7), Time::constant(9, 15, 0, 0)),
            "2026-02-07T03:45:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_millisecond()
        );
    }
}
