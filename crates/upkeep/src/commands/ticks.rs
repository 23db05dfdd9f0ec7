//! `upkeep ticks export`: the relay's stored ticks as CSV.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use upkeep_store::TickQuery;

use crate::cli::TicksCommand;
use crate::context;

/// Rows read from the store at a time.
const PAGE: u32 = 10_000;

/// RFC 3339, or an IST date-time / date.
fn parse_time(flag: &str, raw: &str) -> Result<Timestamp> {
    let raw = raw.trim();
    if let Ok(t) = raw.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil = raw.parse::<DateTime>().ok().or_else(|| {
        raw.parse::<Date>()
            .ok()
            .map(|d| d.to_datetime(Time::midnight()))
    });
    civil
        .and_then(|dt| upkeep_core::expiry::ist_timestamp(dt.date(), dt.time()))
        .with_context(|| {
            format!(
                "{flag} {raw:?} is not a time; use 2026-02-10T09:15:00+05:30, 2026-02-10T09:15 (IST) or 2026-02-10"
            )
        })
}

/// One CSV field (RFC 4180 quoting when needed).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `ltt` in IST with milliseconds, e.g. `2026-02-10T09:15:00.250+05:30`.
fn ist_ms(ms: i64) -> String {
    let offset = jiff::tz::Offset::from_seconds(upkeep_core::expiry::IST_OFFSET_SECONDS);
    match (Timestamp::from_millisecond(ms), offset) {
        (Ok(t), Ok(ist)) => format!(
            "{}+05:30",
            ist.to_datetime(t).strftime("%Y-%m-%dT%H:%M:%S%.3f")
        ),
        _ => ms.to_string(),
    }
}

pub async fn run(path: Option<&std::path::Path>, command: TicksCommand) -> Result<ExitCode> {
    let TicksCommand::Export {
        from,
        to,
        instrument,
    } = command;
    let from = parse_time("--from", &from)?;
    let to = parse_time("--to", &to)?;
    if to <= from {
        bail!("--to must be after --from");
    }
    let loaded = context::load_config(path)?;
    let key = context::master_key(&loaded)?;
    let store = context::open_store(&loaded, key).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(
        out,
        "instrument,ltt,ltp,ltq,volume,oi,bid_price,bid_qty,ask_price,ask_qty"
    )?;
    // Page by last-trade time. The rows at the cursor's instant that were already
    // printed come first again (same order: time, then arrival) and are skipped.
    let mut cursor = from.as_millisecond();
    let mut skip = 0usize;
    loop {
        let limit = PAGE.saturating_add(u32::try_from(skip).unwrap_or(u32::MAX));
        let page = store
            .ticks(&TickQuery {
                from_ms: cursor,
                to_ms: to.as_millisecond(),
                instrument: instrument.clone(),
                limit,
            })
            .await?;
        for t in page.iter().skip(skip) {
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                field(&t.instrument),
                ist_ms(t.ltt_ms),
                t.ltp,
                t.ltq,
                opt(t.volume),
                opt(t.oi),
                opt(t.bid_price),
                opt(t.bid_qty),
                opt(t.ask_price),
                opt(t.ask_qty),
            )?;
        }
        if page.len() < limit as usize {
            break;
        }
        let last = page.last().map_or(cursor, |t| t.ltt_ms);
        if last == cursor {
            skip = page.len();
        } else {
            cursor = last;
            skip = page.iter().filter(|t| t.ltt_ms == last).count();
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ist() {
        let a = parse_time("--from", "2026-02-10T09:15:00+05:30").unwrap();
        assert_eq!(a, parse_time("--from", "2026-02-10T09:15").unwrap());
        assert_eq!(
            parse_time("--from", "2026-02-10").unwrap(),
            "2026-02-09T18:30:00Z".parse::<Timestamp>().unwrap()
        );
        let err = parse_time("--to", "yesterday").unwrap_err().to_string();
        assert!(
            err.contains("--to") && err.contains("2026-02-10T09:15"),
            "{err}"
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed_and_times_shown_in_ist() {
        assert_eq!(field("NSE_INDEX|Nifty 50"), "NSE_INDEX|Nifty 50");
        assert_eq!(field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(ist_ms(1_770_695_100_250), "2026-02-10T09:15:00.250+05:30");
    }
}
