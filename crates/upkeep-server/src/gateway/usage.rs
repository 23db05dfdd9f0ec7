//! Gateway usage per account, API key (its name, never the key) and endpoint template:
//! requests, errors (status >= 400, or no answer from upstream) and latency up to the
//! response head, as a histogram. Counted with atomics behind a read lock: a request
//! takes no write lock once its row exists.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

/// Histogram bucket bounds, in microseconds.
const BUCKETS_US: [u64; 11] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
];

#[derive(Default)]
struct Cell {
    requests: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
    max_micros: AtomicU64,
    /// Counts per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

type ByEndpoint = HashMap<&'static str, Arc<Cell>>;
type ByKey = HashMap<String, ByEndpoint>;

/// The usage table (cheap to clone; one per daemon).
#[derive(Clone, Default)]
pub struct Usage {
    rows: Arc<RwLock<HashMap<String, ByKey>>>,
}

impl Usage {
    fn cell(&self, account: &str, key: &str, endpoint: &'static str) -> Arc<Cell> {
        {
            let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = rows
                .get(account)
                .and_then(|k| k.get(key))
                .and_then(|e| e.get(endpoint))
            {
                return c.clone();
            }
        }
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        rows.entry(account.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .entry(endpoint)
            .or_default()
            .clone()
    }

    /// Counts one request.
    pub fn record(
        &self,
        account: &str,
        key: &str,
        endpoint: &'static str,
        error: bool,
        took: Duration,
    ) {
        let c = self.cell(account, key, endpoint);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        c.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.micros.fetch_add(us, Ordering::Relaxed);
        c.max_micros.fetch_max(us, Ordering::Relaxed);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Every row, sorted by account, key, endpoint.
    fn snapshot(&self) -> Vec<(String, String, &'static str, Arc<Cell>)> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = rows
            .iter()
            .flat_map(|(a, keys)| {
                keys.iter().flat_map(move |(k, eps)| {
                    eps.iter()
                        .map(move |(e, c)| (a.clone(), k.clone(), *e, c.clone()))
                })
            })
            .collect();
        out.sort_by(|x, y| (&x.0, &x.1, x.2).cmp(&(&y.0, &y.1, y.2)));
        out
    }

    /// `GET /api/v1/usage`'s body.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .snapshot()
            .into_iter()
            .map(|(account, key, endpoint, c)| {
                let n = c.requests.load(Ordering::Relaxed);
                let us = c.micros.load(Ordering::Relaxed);
                json!({
                    "account": account,
                    "api_key": key,
                    "endpoint": endpoint,
                    "requests": n,
                    "errors": c.errors.load(Ordering::Relaxed),
                    "latency_ms_avg": if n == 0 { 0.0 } else { (us as f64 / n as f64 / 10.0).round() / 100.0 },
                    "latency_ms_max": (c.max_micros.load(Ordering::Relaxed) as f64 / 10.0).round() / 100.0,
                })
            })
            .collect();
        json!({ "usage": rows })
    }

    /// The Prometheus lines (`upkeep_gateway_*`), appended to `/metrics`.
    pub(crate) fn render(&self, out: &mut String) {
        let rows = self.snapshot();
        let label = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            out,
            "# HELP upkeep_gateway_requests_total Requests through the gateway per account, API key and endpoint."
        );
        let _ = writeln!(out, "# TYPE upkeep_gateway_requests_total counter");
        for (a, k, e, c) in &rows {
            let _ = writeln!(
                out,
                "upkeep_gateway_requests_total{{account=\"{}\",api_key=\"{}\",endpoint=\"{}\"}} {}",
                label(a),
                label(k),
                label(e),
                c.requests.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP upkeep_gateway_errors_total Gateway requests answered with a status >= 400 or not answered by upstream."
        );
        let _ = writeln!(out, "# TYPE upkeep_gateway_errors_total counter");
        for (a, k, e, c) in &rows {
            let _ = writeln!(
                out,
                "upkeep_gateway_errors_total{{account=\"{}\",api_key=\"{}\",endpoint=\"{}\"}} {}",
                label(a),
                label(k),
                label(e),
                c.errors.load(Ordering::Relaxed)
            );
        }
        let name = "upkeep_gateway_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Gateway latency up to the response head, per account, API key and endpoint."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (a, k, e, c) in &rows {
            let labels = format!(
                "account=\"{}\",api_key=\"{}\",endpoint=\"{}\"",
                label(a),
                label(k),
                label(e)
            );
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_US.iter().enumerate() {
                cumulative += c.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            cumulative += c.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {}",
                c.micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_per_account_key_and_endpoint_with_errors_and_a_histogram() {
        let u = Usage::default();
        u.record(
            "main",
            "bot",
            "/v3/market-quote/ltp",
            false,
            Duration::from_millis(2),
        );
        u.record(
            "main",
            "bot",
            "/v3/market-quote/ltp",
            true,
            Duration::from_millis(30),
        );
        u.record(
            "main",
            "ops",
            "/v2/user/profile",
            false,
            Duration::from_micros(500),
        );
        let v = u.to_json();
        let rows = v["usage"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["api_key"], "bot");
        assert_eq!(rows[0]["requests"], 2);
        assert_eq!(rows[0]["errors"], 1);
        assert_eq!(rows[0]["latency_ms_max"], 30.0);
        let mut text = String::new();
        u.render(&mut text);
        assert!(text.contains(
            "upkeep_gateway_requests_total{account=\"main\",api_key=\"bot\",endpoint=\"/v3/market-quote/ltp\"} 2"
        ));
        assert!(text.contains(
            "upkeep_gateway_request_duration_seconds_bucket{account=\"main\",api_key=\"bot\",endpoint=\"/v3/market-quote/ltp\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains(
            "upkeep_gateway_request_duration_seconds_count{account=\"main\",api_key=\"ops\",endpoint=\"/v2/user/profile\"} 1"
        ));
    }
}
