//! `GET /metrics`: Prometheus text, in cert-manager's spirit. Per-account gauges are
//! computed from the engine's memory at scrape time (never stale, nothing to forget);
//! counters and histograms (renewals, webhook rejections, alerts, task restarts) come
//! from the process's `metrics` recorder, installed by [`install_recorder`].

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::Engine;
use crate::relay::ConsumerHealth;
use upkeep_upstox::feed::upstream::ConnectionHealth;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (`None` if another
/// recorder was installed first: then only the gauges are rendered here).
pub fn install_recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn render(engine: &Engine) -> String {
    let now = engine.clock().now();
    let mut out = String::new();
    let gauges: [(&str, &str); 5] = [
        (
            "upkeep_token_expiration_timestamp_seconds",
            "When the account's current token expires (unix seconds).",
        ),
        (
            "upkeep_token_ready",
            "1 if the account has a token that is valid now and not refused by Upstox.",
        ),
        (
            "upkeep_token_api_validated",
            "1 if the last health check's call with the token succeeded, 0 if Upstox refused it, -1 if not checked yet.",
        ),
        (
            "upkeep_supervisor_up",
            "1 while the account's supervisor task runs.",
        ),
        (
            "upkeep_account_conditions",
            "Open conditions of the account (store or file writes failing).",
        ),
    ];
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for id in &engine.account_ids() {
            let status = engine.status(id).unwrap_or_default();
            let current = engine.current(id);
            let value = match i {
                0 => match &current {
                    Some(c) => c.expires_at.as_second() as f64,
                    None => continue,
                },
                1 => f64::from(u8::from(
                    current.as_ref().is_some_and(|c| c.is_valid_at(now))
                        && status.api_validated != Some(false),
                )),
                2 => match status.api_validated {
                    Some(true) => 1.0,
                    Some(false) => 0.0,
                    None => -1.0,
                },
                3 => f64::from(u8::from(status.supervisor_alive)),
                _ => status.conditions.len() as f64,
            };
            let _ = writeln!(out, "{name}{{account=\"{}\"}} {value}", label(id));
        }
    }
    process_metrics(&mut out);
    if let Some(Some(handle)) = RECORDER.get() {
        out.push_str(&handle.render());
    }
    out
}

/// A series family: name, type, help, and its value for one item.
type Series<T, V> = (&'static str, &'static str, &'static str, fn(&T) -> V);

/// Every upstream connection and every local consumer of each account whose relay has
/// started, read from the relay's memory at scrape time. A consumer's series are there
/// while it is connected and gone once it leaves, so label values stay bounded by the
/// connections in use (at most 5 per account) and the consumers connected now.
/// `consumer` is the consumer's name (its API key's name, account and kind), `id` tells
/// apart two consumers of the same name.
pub(crate) fn render_relay(relay: &crate::relay::Relay, out: &mut String) {
    use upkeep_upstox::feed::upstream::ConnectionState as S;
    const STATES: [(S, &str); 7] = [
        (S::Idle, "idle"),
        (S::NoToken, "no_token"),
        (S::Connecting, "connecting"),
        (S::Opening, "opening"),
        (S::Live, "live"),
        (S::Backoff, "backoff"),
        (S::Stopped, "stopped"),
    ];
    let health = relay.health();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    // Per account (these were gauges set every second; read here, a removed account's
    // series go with it).
    let per_account: [Series<crate::relay::AccountFeedHealth, f64>; 5] = [
        (
            "upkeep_relay_upstream_connections_live",
            "gauge",
            "Upstream feed connections of the account that are live.",
            |a| {
                a.upstream
                    .connections
                    .iter()
                    .filter(|c| c.state == S::Live)
                    .count() as f64
            },
        ),
        (
            "upkeep_relay_upstream_keys",
            "gauge",
            "Distinct instrument keys the account streams upstream.",
            |a| a.upstream.keys as f64,
        ),
        (
            "upkeep_relay_upstream_reconnects",
            "gauge",
            "Reconnects of the account's upstream feed connections since its relay started.",
            |a| {
                a.upstream
                    .connections
                    .iter()
                    .map(|c| c.reconnects)
                    .sum::<u64>() as f64
            },
        ),
        (
            "upkeep_relay_local_consumers",
            "gauge",
            "Local consumers of the account's relay.",
            |a| a.local.consumers.len() as f64,
        ),
        (
            "upkeep_relay_consumer_max_lag_frames",
            "gauge",
            "The largest queue of the account's consumers now, in frames.",
            |a| a.local.consumers.iter().map(|c| c.lag).max().unwrap_or(0) as f64,
        ),
    ];
    for (name, kind, help, value) in per_account {
        head(out, name, kind, help);
        for a in &health {
            let _ = writeln!(
                out,
                "{name}{{account=\"{}\"}} {}",
                label(&a.account),
                value(a)
            );
        }
    }
    let connections = || {
        health.iter().flat_map(|a| {
            a.upstream.connections.iter().map(move |c| {
                (
                    format!(
                        "account=\"{}\",connection=\"{}\"",
                        label(&a.account),
                        c.index
                    ),
                    c,
                )
            })
        })
    };
    head(
        out,
        "upkeep_relay_connection_state",
        "gauge",
        "1 for the state an upstream feed connection is in, 0 for the others.",
    );
    for (l, c) in connections() {
        for (s, name) in STATES {
            let v = u8::from(c.state == s);
            let _ = writeln!(
                out,
                "upkeep_relay_connection_state{{{l},state=\"{name}\"}} {v}"
            );
        }
    }
    head(
        out,
        "upkeep_relay_connection_keys",
        "gauge",
        "Instrument keys an upstream feed connection streams, per mode.",
    );
    for (l, c) in connections() {
        for (mode, n) in c.keys.iter() {
            let _ = writeln!(
                out,
                "upkeep_relay_connection_keys{{{l},mode=\"{}\"}} {n}",
                mode.as_str()
            );
        }
    }
    let per_connection: [Series<ConnectionHealth, Option<f64>>; 4] = [
        (
            "upkeep_relay_connection_messages_total",
            "counter",
            "Frames, pings and pongs an upstream feed connection received.",
            |c| Some(c.messages as f64),
        ),
        (
            "upkeep_relay_connection_frames_total",
            "counter",
            "Data frames an upstream feed connection received.",
            |c| Some(c.frames as f64),
        ),
        (
            "upkeep_relay_connection_reconnects_total",
            "counter",
            "Sockets an upstream feed connection opened after its first.",
            |c| Some(c.reconnects as f64),
        ),
        (
            "upkeep_relay_connection_last_message_timestamp_seconds",
            "gauge",
            "When an upstream feed connection last received anything (unix seconds).",
            |c| {
                c.last_message_at
                    .map(|t| t.as_millisecond() as f64 / 1000.0)
            },
        ),
    ];
    for (name, kind, help, value) in per_connection {
        head(out, name, kind, help);
        for (l, c) in connections() {
            if let Some(v) = value(c) {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
    }
    let per_consumer: [Series<ConsumerHealth, u64>; 3] = [
        (
            "upkeep_relay_consumer_lag_frames",
            "gauge",
            "Frames waiting in a local consumer's queue.",
            |c| c.lag as u64,
        ),
        (
            "upkeep_relay_consumer_dropped_frames_total",
            "counter",
            "Frames dropped for a local consumer that fell behind (ltpc only).",
            |c| c.drops,
        ),
        (
            "upkeep_relay_consumer_delivered_frames_total",
            "counter",
            "Frames a local consumer has taken from its queue.",
            |c| c.delivered,
        ),
    ];
    for (name, kind, help, value) in per_consumer {
        head(out, name, kind, help);
        for a in &health {
            for c in &a.local.consumers {
                let _ = writeln!(
                    out,
                    "{name}{{account=\"{}\",consumer=\"{}\",id=\"{}\"}} {}",
                    label(&a.account),
                    label(&c.name),
                    c.id,
                    value(c)
                );
            }
        }
    }
}

/// The usual process gauges, read from `/proc/self` (Linux; nothing elsewhere).
fn process_metrics(out: &mut String) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes."
        );
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {}", kb * 1024);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Number of open file descriptors."
        );
        let _ = writeln!(out, "# TYPE process_open_fds gauge");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    if let Some(limit) = crate::http::serve::open_file_limit() {
        let _ = writeln!(
            out,
            "# HELP process_max_fds Maximum number of open file descriptors."
        );
        let _ = writeln!(out, "# TYPE process_max_fds gauge");
        let _ = writeln!(out, "process_max_fds {limit}");
    }
    // utime + stime, fields 14 and 15 of /proc/self/stat, in clock ticks (USER_HZ is
    // 100 on Linux).
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(u), Some(s)) = (
            fields.get(11).and_then(|v| v.parse::<f64>().ok()),
            fields.get(12).and_then(|v| v.parse::<f64>().ok()),
        ) {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
            );
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(out, "process_cpu_seconds_total {}", (u + s) / 100.0);
        }
    }
}
