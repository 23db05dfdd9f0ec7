//! Relay fan-out benchmark (bench/relay-fanout.sh runs it): the simulator streams
//! `KEYS` (20) ltpc instruments every millisecond on each of the account's two upstream
//! connections (2 x 1,000 frames/s x 10 instruments = 20,000 ticks/s), the upstream
//! pool receives them, and the relay's hub fans every frame out to `N` consumers that
//! each subscribed to all keys. Measured per delivered frame: the time from the frame's
//! arrival at the relay (the pool's event) to the consumer task taking it off its queue
//! (the added latency of the hub; the local websocket write is not included). Also:
//! frames and drops per consumer, process CPU time and RSS (simulator included; run with
//! 1 consumer for the baseline).
//!
//!     cargo run --release -p upkeep-server --example relay_fanout -- [CONSUMERS] [SECONDS] [KEYS]

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fanout;

use fanout::{SimTime, cpu_seconds, rss_mib};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use upkeep_core::AccessToken;
use upkeep_server::relay::{
    ConsumerKind, Delivery, Hub, HubConfig, UpstreamLink, UpstreamSubscriber,
};
use upkeep_sim::TokenKind;
use upkeep_upstox::feed::upstream::{FeedPool, TokenSource, UpstreamConfig, UpstreamEvent};
use upkeep_upstox::feed::{FeedRequest, SubscriptionMode};
use upkeep_upstox::{Hosts, UpstoxClient};

struct Link(FeedPool);
impl UpstreamLink for Link {
    fn open(&self) -> Box<dyn UpstreamSubscriber> {
        Box::new(self.0.consumer())
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let consumers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    // Instruments, spread over the two connections (20: 2 x 10 per 1 ms frame).
    let n_keys: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20);

    let (sim, clock, _) = fanout::market_open_sim().await;
    let ucc = sim.credentials()[0].ucc.clone();
    let base = url::Url::parse(&sim.base_url()).unwrap();
    let client = UpstoxClient::new(Hosts::all(&base)).unwrap();
    let token = AccessToken::new(sim.state().issue_token(&ucc, TokenKind::Daily).unwrap());
    let (_tx, rx) = watch::channel(Some(token));
    let pool = FeedPool::start(
        UpstreamConfig {
            event_queue: 65_536,
            ..UpstreamConfig::default()
        },
        client,
        TokenSource::new(rx, |_| {}),
        Arc::new(SimTime(clock)),
    );
    let hub = Hub::new(HubConfig { queue: 1024 }, Link(pool.clone()));

    // Arrival time of every frame, by its buffer's address (consumers that want every
    // instrument of a frame get that very buffer).
    let arrivals: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let mut events = pool.events();
    {
        let (hub, arrivals) = (hub.clone(), Arc::clone(&arrivals));
        tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                if let UpstreamEvent::Frame { data, .. } = ev {
                    {
                        let mut a = arrivals.lock().unwrap();
                        if a.len() > 200_000 {
                            a.clear();
                        }
                        a.insert(data.as_ptr() as usize, Instant::now());
                    }
                    hub.publish(data);
                }
            }
        });
    }

    let keys: Vec<String> = (0..n_keys).map(|i| format!("NSE_EQ|BENCH{i:04}")).collect();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..consumers {
        let c = hub.connect(format!("bench {i}"), ConsumerKind::Protobuf);
        c.request(&FeedRequest::subscribe(
            SubscriptionMode::Ltpc,
            keys.clone(),
        ))
        .unwrap();
        let (arrivals, running) = (Arc::clone(&arrivals), Arc::clone(&running));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(200_000);
            let mut frames = 0u64;
            let mut ticks = 0u64;
            loop {
                match c.next().await {
                    Delivery::Frame(b) => {
                        let now = Instant::now();
                        if !running.load(std::sync::atomic::Ordering::Relaxed) {
                            if frames > 0 {
                                break; // the measurement is over
                            }
                            continue; // still warming up
                        }
                        frames += 1;
                        ticks += upkeep_upstox::feed::split(&b).map_or(0, |p| p.feeds.len()) as u64;
                        if let Some(t) = arrivals.lock().unwrap().get(&(b.as_ptr() as usize)) {
                            lat.push(now.duration_since(*t).as_micros() as u64);
                        }
                    }
                    Delivery::Notice(_) => {}
                    Delivery::Closed(why) => {
                        eprintln!("consumer {i} closed: {why}");
                        break;
                    }
                }
            }
            (lat, frames, ticks)
        }));
    }

    // Warm up until both connections stream, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h0 = hub.health();
    let (cpu0, t0) = (cpu_seconds(None), Instant::now());
    running.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let (cpu1, elapsed) = (cpu_seconds(None), t0.elapsed().as_secs_f64());
    let h1 = hub.health();
    let rss = rss_mib();
    // Every consumer sees the stop with its next frame.
    let mut lat = Vec::new();
    let mut frames = 0u64;
    let mut ticks = 0u64;
    for t in tasks {
        if let Ok(Ok((l, f, k))) = tokio::time::timeout(Duration::from_secs(5), t).await {
            lat.extend(l);
            frames += f;
            ticks += k;
        }
    }
    pool.shutdown();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let upstream_frames = h1.frames - h0.frames;
    let drops: u64 = h1.consumers.iter().map(|c| c.drops).sum();
    if std::env::var_os("RELAY_FANOUT_DEBUG").is_some() {
        eprintln!("{h1:#?}");
        eprintln!("{:#?}", pool.health());
    }
    println!("consumers={consumers}");
    println!("seconds={elapsed:.1}");
    println!(
        "upstream_frames_per_s={:.0}",
        upstream_frames as f64 / elapsed
    );
    println!(
        "upstream_ticks_per_s={:.0}",
        ticks as f64 / elapsed / consumers.max(1) as f64
    );
    println!("delivered_frames={frames}");
    println!("drops={drops}");
    println!("closed_slow={}", h1.closed_slow);
    println!("latency_samples={}", lat.len());
    println!("latency_p50_us={}", pct(0.50));
    println!("latency_p99_us={}", pct(0.99));
    println!("latency_max_us={}", lat.last().copied().unwrap_or(0));
    println!("cpu_percent={:.0}", (cpu1 - cpu0) / elapsed * 100.0);
    println!("rss_mib={rss:.1}");
}
