//! `upkeep calendar [--year Y] [--json]`: the trading days and special sessions the plan
//! renews by, and where the calendar came from.

use std::process::ExitCode;

use anyhow::Result;
use jiff::civil::Date;
use serde_json::json;
use upkeep_core::calendar::{DayStatus, Session};
use upkeep_core::expiry::{format_ist, ist_date, ist_datetime};
use upkeep_server::{CalendarSource, resolve_calendar};

use super::UsageError;
use crate::context;

fn hm(t: jiff::Timestamp) -> String {
    ist_datetime(t).strftime("%H:%M").to_string()
}

fn sessions_text(sessions: &[Session]) -> String {
    sessions
        .iter()
        .map(|s| format!("{} {}-{}", s.exchange, hm(s.start), hm(s.end)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(
    path: Option<&std::path::Path>,
    year: Option<i16>,
    as_json: bool,
) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let (clock, _follower) = context::clock(&loaded.config).await?;
    let now = clock.now();
    let year = year.unwrap_or_else(|| ist_date(now).year());
    let (Ok(first), Ok(last)) = (Date::new(year, 1, 1), Date::new(year, 12, 31)) else {
        return Err(UsageError(format!("--year {year} is not a calendar year")).into());
    };
    if !(2000..=2200).contains(&year) {
        return Err(UsageError(format!("--year {year}: use a year between 2000 and 2200")).into());
    }
    let key = context::master_key(&loaded)?;
    let store = context::open_store(&loaded, key).await?;
    let upstox = context::upstox_client(&loaded.config)?;
    let view = resolve_calendar(&upstox, store.as_ref(), &[year], now).await;
    store.close().await;

    let mut policy = loaded.config.to_policy();
    policy.calendar = view.calendar.clone();
    let exchanges = policy.exchanges.clone();
    let mut trading_days = 0u32;
    let mut d = first;
    while d <= last {
        if policy.is_trading_day(d) {
            trading_days += 1;
        }
        match d.tomorrow() {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    // The dates that differ from a plain weekday: listed by the calendar, or in the
    // config's holidays.
    let mut dates: Vec<Date> = view
        .calendar
        .as_ref()
        .map(|c| {
            c.days
                .keys()
                .filter(|d| d.year() == year)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    dates.extend(policy.holidays.iter().filter(|d| d.year() == year));
    dates.sort_unstable();
    dates.dedup();

    let source = match view.source {
        CalendarSource::Upstox => "upstox".to_owned(),
        CalendarSource::Stored => "stored copy".to_owned(),
        CalendarSource::Weekdays => "weekdays fallback".to_owned(),
    };
    let rows: Vec<_> = dates
        .iter()
        .map(|d| {
            let listed = view.calendar.as_ref().and_then(|c| c.days.get(d));
            let special = match view
                .calendar
                .as_ref()
                .and_then(|c| c.status(&exchanges, *d))
            {
                Some(DayStatus::Open { special }) => special,
                _ => Vec::new(),
            };
            let config_holiday = policy.holidays.contains(d);
            (
                *d,
                policy.is_trading_day(*d),
                special,
                listed,
                config_holiday,
            )
        })
        .collect();

    if as_json {
        let days: Vec<_> = rows
            .iter()
            .map(|(d, trading, special, listed, config_holiday)| {
                json!({
                    "date": d.to_string(),
                    "weekday": d.strftime("%a").to_string(),
                    "trading": trading,
                    "sessions": special.iter().map(|s| json!({
                        "exchange": s.exchange,
                        "start": format_ist(s.start),
                        "end": format_ist(s.end),
                    })).collect::<Vec<_>>(),
                    "description": listed.map(|l| l.description.clone()),
                    "holiday_type": listed.map(|l| l.kind.clone()),
                    "config_holiday": config_holiday,
                })
            })
            .collect();
        let out = json!({
            "year": year,
            "exchanges": exchanges,
            "source": view.source.as_str(),
            "fetched_at": view.fetched_at.map(format_ist),
            "error": view.error,
            "trading_days": trading_days,
            "days": days,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let fetched = view
            .fetched_at
            .map(|t| format!(", fetched {}", format_ist(t)))
            .unwrap_or_default();
        println!(
            "trading calendar {year} for {}: {source}{fetched}",
            exchanges.join(", ")
        );
        println!(
            "{trading_days} trading days: Monday to Friday, except the closed days below, plus the sessions listed"
        );
        for (d, trading, special, listed, config_holiday) in &rows {
            let what = if *trading { "trading" } else { "closed" };
            let mut notes = Vec::new();
            if let Some(l) = listed {
                notes.push(if l.kind.is_empty() {
                    l.description.clone()
                } else {
                    format!("{} ({})", l.description, l.kind)
                });
            }
            if *config_holiday {
                notes.push("[renewal] holidays".to_owned());
            }
            println!(
                "{d}  {}  {what:<8} {:<22} {}",
                d.strftime("%a"),
                sessions_text(special),
                notes.join("; ")
            );
        }
    }
    if let Some(e) = &view.error {
        let by = match view.source {
            CalendarSource::Stored => "the stored copy",
            _ => "the weekdays and [renewal] holidays",
        };
        eprintln!("upkeep: Upstox's calendar for {year} was not fetched ({e}); showing {by}");
    }
    Ok(ExitCode::SUCCESS)
}
