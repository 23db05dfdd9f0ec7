//! `upkeep feed watch`: live ticks from the running daemon's relay (`/ws/ticks`).

use std::process::ExitCode;

use anyhow::{Result, bail};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::FeedCommand;
use crate::commands::UsageError;
use crate::{context, daemon};

const MODES: [&str; 4] = ["ltpc", "full", "option_greeks", "full_d30"];

pub async fn run(path: Option<&std::path::Path>, command: FeedCommand) -> Result<ExitCode> {
    let FeedCommand::Watch {
        keys,
        mode,
        account,
    } = command;
    if !MODES.contains(&mode.as_str()) {
        return Err(UsageError(format!(
            "--mode {mode:?} is not a feed mode; use {}",
            MODES.join(", ")
        ))
        .into());
    }
    if let Some(bad) = keys.iter().find(|k| !k.contains('|') || k.contains(',')) {
        return Err(UsageError(format!(
            "{bad:?} is not an instrument key; use SEGMENT|IDENTIFIER, e.g. NSE_EQ|INE669E01016"
        ))
        .into());
    }
    let loaded = context::load_config(path)?;
    let d = match daemon::find(&loaded.config).await? {
        daemon::Found::Running(d) => d,
        daemon::Found::NotRunning(why) => {
            bail!("{why}: start it with `upkeep serve`; the feed comes through the daemon")
        }
    };
    let mut query = format!(
        "/ws/ticks?mode={mode}&keys={}",
        keys.iter().map(|k| encode(k)).collect::<Vec<_>>().join(",")
    );
    if let Some(a) = &account {
        query.push_str("&account=");
        query.push_str(&encode(a));
    }
    let mut ws = d.websocket(&query).await?;
    eprintln!(
        "watching {} through the daemon on {} (Ctrl-C stops)",
        keys.join(", "),
        d.address()
    );
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                for line in lines(&v) {
                    println!("{line}");
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                bail!("the daemon closed the feed: {why}");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("the feed from the daemon broke: {e}"),
            None => bail!("the daemon closed the feed"),
        }
    }
}

/// Percent-encodes a query value (instrument keys hold `|` and spaces).
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What one JSON frame says, one line per instrument (or the market status, or an error).
fn lines(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v["type"].as_str() {
        Some("error") => out.push(format!(
            "error: {}",
            v["message"].as_str().unwrap_or("(no message)")
        )),
        Some("market_info") => {
            if let Some(m) = v["marketInfo"]["segmentStatus"].as_object() {
                let s: Vec<String> = m
                    .iter()
                    .map(|(k, s)| format!("{k} {}", s.as_str().unwrap_or("?")))
                    .collect();
                out.push(format!("market: {}", s.join(", ")));
            }
        }
        Some("upstream") => {
            let conn = v["connection"].as_u64().unwrap_or(0);
            let cause = v["cause"].as_str().unwrap_or("?");
            if v["state"] == "up" {
                let secs = v["gap_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                out.push(format!(
                    "upstream connection {conn} is back after a {secs:.1} s gap ({cause})"
                ));
            } else {
                out.push(format!(
                    "upstream connection {conn} is down ({cause}): {}",
                    v["reason"].as_str().unwrap_or("")
                ));
            }
        }
        _ => {}
    }
    let snapshot = v.get("type").is_none();
    if let Some(feeds) = v["feeds"].as_object() {
        for (key, f) in feeds {
            let l = ltpc(f);
            let ltp = l["ltp"].as_f64().unwrap_or(0.0);
            let cp = l["cp"].as_f64().unwrap_or(0.0);
            let ltq = l["ltq"].as_str().unwrap_or("0");
            let when = l["ltt"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .map_or_else(|| "--:--:--.---".to_owned(), ist_time);
            let change = if cp != 0.0 {
                format!("{:+.2}%", (ltp - cp) / cp * 100.0)
            } else {
                String::new()
            };
            out.push(format!(
                "{when}  {key:<24} {ltp:>12.2}  qty {ltq:>6}  {change}{}",
                if snapshot { "  (snapshot)" } else { "" }
            ));
        }
    }
    out
}

/// The last-trade block, whatever the mode.
fn ltpc(f: &Value) -> &Value {
    for p in [
        &f["ltpc"],
        &f["fullFeed"]["marketFF"]["ltpc"],
        &f["fullFeed"]["indexFF"]["ltpc"],
        &f["firstLevelWithGreeks"]["ltpc"],
    ] {
        if p.is_object() {
            return p;
        }
    }
    &Value::Null
}

/// Epoch milliseconds as an IST time of day with milliseconds.
fn ist_time(ms: i64) -> String {
    let offset = jiff::tz::Offset::from_seconds(upkeep_core::expiry::IST_OFFSET_SECONDS);
    match (jiff::Timestamp::from_millisecond(ms), offset) {
        (Ok(t), Ok(ist)) => ist.to_datetime(t).strftime("%H:%M:%S%.3f").to_string(),
        _ => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mode_tick_prints_time_key_price_quantity_and_change() {
        let v: Value = serde_json::from_str(
            r#"{"type":"live_feed","feeds":{"NSE_EQ|INE669E01016":{"fullFeed":{"marketFF":{"ltpc":{"ltp":10.5,"ltt":"1740729552723","ltq":"75","cp":10.0}}},"requestMode":"full_d5"}}}"#,
        )
        .unwrap();
        let l = lines(&v);
        assert_eq!(l.len(), 1);
        assert!(
            l[0].starts_with("13:29:12.723  NSE_EQ|INE669E01016"),
            "{}",
            l[0]
        );
        assert!(
            l[0].contains("10.50") && l[0].contains("qty     75") && l[0].ends_with("+5.00%"),
            "{}",
            l[0]
        );
    }

    #[test]
    fn errors_and_market_status_are_printed_too() {
        let e: Value =
            serde_json::json!({"type": "error", "message": "mode full_d30 needs Upstox Plus"});
        assert_eq!(lines(&e), vec!["error: mode full_d30 needs Upstox Plus"]);
        let m: Value = serde_json::json!({"type": "market_info", "marketInfo": {"segmentStatus": {"NSE_EQ": "NORMAL_OPEN"}}});
        assert_eq!(lines(&m), vec!["market: NSE_EQ NORMAL_OPEN"]);
    }

    #[test]
    fn upstream_gaps_are_printed() {
        let down = serde_json::json!({"type": "upstream", "state": "down", "connection": 1,
            "cause": "stall", "reason": "no data, ping or pong for 30 s"});
        assert_eq!(
            lines(&down),
            vec!["upstream connection 1 is down (stall): no data, ping or pong for 30 s"]
        );
        let up = serde_json::json!({"type": "upstream", "state": "up", "connection": 1,
            "cause": "stall", "gap_ms": 31_500});
        assert_eq!(
            lines(&up),
            vec!["upstream connection 1 is back after a 31.5 s gap (stall)"]
        );
    }
}
