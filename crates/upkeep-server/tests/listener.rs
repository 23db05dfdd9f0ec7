//! The daemon's HTTP listener under clients that stall: they must not lock real
//! traffic out, must not stay open for good, and must not hold up a shutdown.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use jiff::civil::date;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{PATIENCE, Setup, TestApp, ist, spawn_app};

async fn app() -> TestApp {
    spawn_app(Setup::at(ist(date(2026, 12, 1), 10, 0, 0)).settings(|s| {
        s.http.max_connections = 100;
        s.http.header_read_timeout = Duration::from_secs(1);
        s.http.idle_timeout = Duration::from_secs(2);
        s.http.shutdown_deadline = Duration::from_secs(1);
    }))
    .await
}

/// Opens `n` connections that each send half a request and then nothing.
async fn stall(h: &TestApp, n: usize) -> Vec<TcpStream> {
    let addr = h.daemon_url.trim_start_matches("http://").to_owned();
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: upkeep\r\nX-Slow: ")
            .await
            .unwrap();
        conns.push(s);
    }
    conns
}

/// Whether the daemon closed the connection (EOF or reset) within [`PATIENCE`].
async fn closed_by_daemon(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing is fine: keep reading to the end.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn stalled_clients_beyond_the_cap_do_not_lock_out_healthz_and_are_closed() {
    let h = app().await;
    let mut stalled = stall(&h, 300).await;
    // Three times the cap is stalled; a real request still gets through.
    let resp = reqwest::get(format!("{}/healthz", h.daemon_url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Every stalled connection is closed by the daemon (evicted at the cap, or by the
    // header-read timeout), none stays open for good.
    for s in &mut stalled {
        assert!(
            closed_by_daemon(s).await,
            "a stalled connection stayed open"
        );
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let h = app().await;
    let addr = h.daemon_url.trim_start_matches("http://").to_owned();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_by_daemon(&mut silent).await);
    // A keep-alive connection that answered a request and went quiet, too.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: upkeep\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_daemon(&mut kept).await);
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_stalled_clients() {
    let mut h = app().await;
    let _stalled = stall(&h, 50).await;
    // The harness gives run_until_stopped 10 s; the deadline here is 1 s.
    h.stop().await.unwrap();
}
