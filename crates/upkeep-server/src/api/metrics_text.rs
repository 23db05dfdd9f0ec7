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
        for id in engine.account_ids() {
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
    if let Some(Some(handle)) = RECORDER.get() {
        out.push_str(&handle.render());
    }
    out
}
