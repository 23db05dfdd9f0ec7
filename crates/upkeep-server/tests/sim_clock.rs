#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
//! `[upstox] follow_sim_clock`: the daemon's clock follows a simulator running in
//! another process (here: on a real socket, read over HTTP like the daemon does).

use jiff::{SignedDuration, Timestamp};
use upkeep_core::Clock;
use upkeep_server::clock::SimFollowClock;
use upkeep_sim::{SimClock, SimConfig};

async fn sim_at(start: Timestamp, speed: f64) -> (upkeep_sim::SimHandle, SimClock) {
    let clock = SimClock::new(start, speed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = upkeep_sim::spawn_with_clock(SimConfig::demo(), clock.clone(), listener)
        .await
        .unwrap();
    (sim, clock)
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_followed_clock_reads_the_simulators_time_and_sees_a_jump_on_the_next_sync() {
    // Frozen simulator (speed 0), so the readings are exact.
    let (sim, clock) = sim_at(ts("2026-12-08T22:29:59Z"), 0.0).await; // 03:59:59 IST
    let follow = SimFollowClock::connect(&sim.base_url(), reqwest::Client::new())
        .await
        .unwrap();
    assert_eq!(follow.now(), ts("2026-12-08T22:29:59Z"));

    // 03:29:59 IST on the next day, then over the rollover.
    clock.set(ts("2026-12-09T21:59:59Z"));
    assert_eq!(
        follow.now(),
        ts("2026-12-08T22:29:59Z"),
        "not before a sync"
    );
    let r = follow.sync().await.unwrap();
    assert_eq!(r.now, ts("2026-12-09T21:59:59Z"));
    assert_eq!(
        r.moved,
        SignedDuration::from_hours(23) + SignedDuration::from_mins(30)
    );
    assert_eq!(follow.now(), ts("2026-12-09T21:59:59Z"));
    // Clock::sync (what the engine calls before a TOTP login) re-reads it too.
    clock.set(ts("2026-12-09T22:00:01Z")); // 03:30:01 IST
    Clock::sync(follow.as_ref()).await;
    assert_eq!(follow.now(), ts("2026-12-09T22:00:01Z"));
}

#[tokio::test]
async fn the_followed_clock_runs_at_the_simulators_speed_between_reads() {
    let (sim, _clock) = sim_at(ts("2026-12-08T22:29:59Z"), 3600.0).await;
    let follow = SimFollowClock::connect(&sim.base_url(), reqwest::Client::new())
        .await
        .unwrap();
    let a = follow.now();
    // An hour of simulated time per real second: a few real milliseconds move it by
    // seconds. Polled, not slept for a fixed time.
    let mut moved = SignedDuration::ZERO;
    for _ in 0..200 {
        tokio::task::yield_now().await;
        moved = follow.now().duration_since(a);
        if moved >= SignedDuration::from_secs(10) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(moved >= SignedDuration::from_secs(10), "moved only {moved}");
}

#[tokio::test]
async fn a_host_that_is_not_a_simulator_is_a_clear_error() {
    // Nothing listens here.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let err = SimFollowClock::connect(&url, reqwest::Client::new())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read the simulator's clock at {url}/sim/clock: "
        )),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}
