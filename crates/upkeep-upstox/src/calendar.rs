//! The market calendar: `GET /v2/market/holidays` (the current year),
//! `/v2/market/holidays/{date}`, `/v2/market/timings/{date}` and
//! `/v2/market/status/{exchange}` (reference 11; the official SDK's
//! `MarketHolidaysAndTimingsApi`, which sends no token for holidays and timings).
//!
//! Holidays are read into upkeep-core's [`TradingCalendar`] types as published: the
//! listed closed and open exchanges decide, the holiday type is kept for display only.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Deserialize;
use upkeep_core::AccessToken;
use upkeep_core::calendar::{CalendarDay, Session, TradingCalendar};

use crate::client::UpstoxClient;
use crate::error::UpstoxError;
use crate::hosts::{encode_component, endpoint};

/// One entry of `data[]` in a holidays answer.
#[derive(Debug, Deserialize)]
struct HolidayWire {
    date: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    holiday_type: Option<String>,
    #[serde(default)]
    closed_exchanges: Option<Vec<String>>,
    #[serde(default)]
    open_exchanges: Option<Vec<SessionWire>>,
}

/// `{exchange, start_time, end_time}`, times in epoch milliseconds.
#[derive(Debug, Deserialize)]
struct SessionWire {
    exchange: String,
    start_time: i64,
    end_time: i64,
}

/// `GET /v2/market/status/{exchange}` → `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketStatus {
    pub exchange: String,
    /// As published, e.g. `NORMAL_OPEN`, `NORMAL_CLOSE`.
    pub status: String,
    pub last_updated: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
struct MarketStatusWire {
    exchange: String,
    status: String,
    #[serde(default)]
    last_updated: Option<i64>,
}

fn bad(ep: &'static str, detail: String) -> UpstoxError {
    UpstoxError::Decode {
        endpoint: ep,
        status: 200,
        detail,
    }
}

/// A published date: `YYYY-MM-DD`, possibly followed by a time part.
fn parse_date(ep: &'static str, text: &str) -> Result<Date, UpstoxError> {
    text.get(..10)
        .and_then(|d| d.parse::<Date>().ok())
        .ok_or_else(|| bad(ep, "a calendar date is not YYYY-MM-DD".into()))
}

fn session(ep: &'static str, s: SessionWire) -> Result<Session, UpstoxError> {
    let at = |ms: i64| {
        Timestamp::from_millisecond(ms)
            .map_err(|_| bad(ep, "a session time is not epoch milliseconds".into()))
    };
    let (start, end) = (at(s.start_time)?, at(s.end_time)?);
    if end < start {
        return Err(bad(ep, "a session ends before it starts".into()));
    }
    Ok(Session {
        exchange: s.exchange.trim().to_ascii_uppercase(),
        start,
        end,
    })
}

fn day(ep: &'static str, w: HolidayWire) -> Result<CalendarDay, UpstoxError> {
    Ok(CalendarDay {
        date: parse_date(ep, &w.date)?,
        description: w.description.unwrap_or_default(),
        kind: w.holiday_type.unwrap_or_default(),
        closed: w
            .closed_exchanges
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim().to_ascii_uppercase())
            .collect(),
        open: w
            .open_exchanges
            .unwrap_or_default()
            .into_iter()
            .map(|s| session(ep, s))
            .collect::<Result<_, _>>()?,
    })
}

impl UpstoxClient {
    /// `GET /v2/market/holidays`: the listed dates of the year Upstox serves (its current
    /// year), as published. No token.
    pub async fn market_holidays(&self) -> Result<Vec<CalendarDay>, UpstoxError> {
        const EP: &str = "GET /v2/market/holidays";
        let url = endpoint(&self.config().hosts.api, "v2/market/holidays");
        let wire: Vec<HolidayWire> = self.call(EP, self.http().get(url), None).await?;
        wire.into_iter().map(|w| day(EP, w)).collect()
    }

    /// The calendar of `year` from `GET /v2/market/holidays`, or `None` when Upstox
    /// serves another year (it serves only its current one) or lists no date at all.
    pub async fn market_calendar(&self, year: i16) -> Result<Option<TradingCalendar>, UpstoxError> {
        let days = self.market_holidays().await?;
        let of_year: Vec<CalendarDay> =
            days.into_iter().filter(|d| d.date.year() == year).collect();
        if of_year.is_empty() {
            return Ok(None);
        }
        Ok(Some(TradingCalendar::new([year], of_year)))
    }

    /// `GET /v2/market/holidays/{date}`: that date's entry, `None` when it is not listed.
    pub async fn market_holiday(&self, date: Date) -> Result<Option<CalendarDay>, UpstoxError> {
        const EP: &str = "GET /v2/market/holidays/{date}";
        let url = endpoint(
            &self.config().hosts.api,
            &format!("v2/market/holidays/{date}"),
        );
        let wire: Vec<HolidayWire> = self.call(EP, self.http().get(url), None).await?;
        let mut days = wire
            .into_iter()
            .map(|w| day(EP, w))
            .collect::<Result<Vec<_>, _>>()?;
        days.retain(|d| d.date == date);
        Ok(days.pop())
    }

    /// `GET /v2/market/timings/{date}`: each exchange's session that day; empty when
    /// every exchange is closed.
    pub async fn market_timings(&self, date: Date) -> Result<Vec<Session>, UpstoxError> {
        const EP: &str = "GET /v2/market/timings/{date}";
        let url = endpoint(
            &self.config().hosts.api,
            &format!("v2/market/timings/{date}"),
        );
        let wire: Vec<SessionWire> = self.call(EP, self.http().get(url), None).await?;
        wire.into_iter().map(|s| session(EP, s)).collect()
    }

    /// `GET /v2/market/status/{exchange}` (needs a token).
    pub async fn market_status(
        &self,
        token: &AccessToken,
        exchange: &str,
    ) -> Result<MarketStatus, UpstoxError> {
        const EP: &str = "GET /v2/market/status/{exchange}";
        if exchange.is_empty() || !exchange.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(UpstoxError::InvalidInput(format!(
                "exchange {:?} must be letters and digits, e.g. NSE",
                crate::envelope::scrub(exchange)
            )));
        }
        let url = endpoint(
            &self.config().hosts.api,
            &format!("v2/market/status/{}", encode_component(exchange)),
        );
        let wire: MarketStatusWire = self.call(EP, self.http().get(url), Some(token)).await?;
        Ok(MarketStatus {
            exchange: wire.exchange,
            status: wire.status,
            last_updated: wire
                .last_updated
                .and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_shape_parses_with_exchanges_normalised() {
        let w: HolidayWire = serde_json::from_str(
            r#"{"date":"2024-01-22","description":"Special Holiday","holiday_type":"TRADING_HOLIDAY",
                "closed_exchanges":["NSE","nfo"],"open_exchanges":[{"exchange":"MCX","start_time":1705933800000,"end_time":1705962600000}]}"#,
        )
        .unwrap();
        let d = day("t", w).unwrap();
        assert_eq!(d.date, jiff::civil::date(2024, 1, 22));
        assert_eq!(d.closed, vec!["NSE".to_owned(), "NFO".to_owned()]);
        assert_eq!(d.open[0].exchange, "MCX");
        assert_eq!(d.open[0].start.as_millisecond(), 1_705_933_800_000);
    }

    #[test]
    fn nulls_are_empty_and_bad_dates_or_times_are_decode_errors() {
        let w: HolidayWire = serde_json::from_str(
            r#"{"date":"2026-04-01T00:00:00","description":null,"holiday_type":"SETTLEMENT_HOLIDAY","closed_exchanges":null,"open_exchanges":null}"#,
        )
        .unwrap();
        let d = day("t", w).unwrap();
        assert!(d.closed.is_empty() && d.open.is_empty());
        let w: HolidayWire = serde_json::from_str(r#"{"date":"01-04-2026"}"#).unwrap();
        assert!(matches!(day("t", w), Err(UpstoxError::Decode { .. })));
        let s = SessionWire {
            exchange: "NSE".into(),
            start_time: 2,
            end_time: 1,
        };
        assert!(matches!(session("t", s), Err(UpstoxError::Decode { .. })));
    }
}
