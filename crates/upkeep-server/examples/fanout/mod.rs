//! What both relay fan-out benchmarks (`relay_fanout`, `relay_fanout_ws`) share: the
//! simulator streaming at 1 ms ticks on a market morning, its clock as the daemon's,
//! and the process's CPU time and RSS from /proc.

use upkeep_core::Clock;
use upkeep_sim::{Plan, SimClock, SimConfig, SimHandle};

/// The simulator's clock as a [`Clock`].
pub struct SimTime(pub SimClock);

impl Clock for SimTime {
    fn now(&self) -> jiff::Timestamp {
        self.0.now()
    }
}

/// The simulator on a Monday at 10:00 IST (the market open), running at real speed, its
/// one user on the normal plan (two feed connections), a feed tick every millisecond and
/// no rate limits. Returns the simulator, its clock and the start.
pub async fn market_open_sim() -> (SimHandle, SimClock, jiff::Timestamp) {
    let start: jiff::Timestamp = "2026-11-23T04:30:00Z".parse().unwrap();
    let clock = SimClock::new(start, 1.0);
    let mut config = SimConfig::demo();
    config.users[0].plan = Plan::Normal;
    config.feed_tick_interval_ms = 1;
    config.rate_limits = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = upkeep_sim::spawn_with_clock(config, clock.clone(), listener)
        .await
        .unwrap();
    (sim, clock, start)
}

/// utime + stime of the process, or of its threads whose name starts with `prefix`, in
/// seconds (clock ticks of 100/s).
pub fn cpu_seconds(prefix: Option<&str>) -> f64 {
    let ticks = |stat: &str| {
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (t(11) + t(12)) / 100.0
    };
    match prefix {
        None => ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()),
        Some(prefix) => std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| {
                s.split_once('(')
                    .is_some_and(|(_, rest)| rest.starts_with(prefix))
            })
            .map(|s| ticks(&s))
            .sum(),
    }
}

/// The process's resident set, MiB.
pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
