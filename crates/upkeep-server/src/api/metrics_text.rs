//! `GET /metrics`: Prometheus text, in cert-manager's spirit. Per-account gauges are
//! computed from the engine's memory at scrape time (never stale, nothing to forget);
//! counters and histograms (renewals, webhook rejections, alerts, task restarts) come
//! from the process's `metrics` recorder, installed by [`install_recorder`].

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::Engine;

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
