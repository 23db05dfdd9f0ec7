//! Relay fan-out through the real websocket doors (bench/relay-fanout.sh `ws` mode runs
//! it). In one process: the simulator, streaming `KEYS` (20) ltpc instruments every
//! millisecond on each of the account's two upstream connections (2 x 1,000 frames/s x
//! 10 instruments = 20,000 ticks/s), and the daemon itself (`App::build` on a SQLite
//! store with a seeded token and a `token:read` key, its real HTTP server and relay
//! routes). `N` websocket clients (tokio-tungstenite) connect to one door, each
//! subscribing to every key:
//!
//! - `proto`: `/upstox/v3/feed/market-data-feed`, speaking what the official SDK speaks
//!   (binary `sub` request, protobuf `FeedResponse` frames); it connects with the Bearer
//!   key rather than through the authorize step's single-use URL;
//! - `json`: `/ws/ticks?keys=...&mode=ltpc` (JSON text frames in the SDK's dict shape).
//!
//! Added latency, per delivered frame: from the frame's arrival at the relay to the
//! client's websocket having read it (`ws.next()` returned). The arrival is the
//! `received` instant of the pool's `UpstreamEvent::Frame` (taken by the upstream
//! connection as its socket read returned, before the pool's broadcast, the relay's
//! pump, the hub, the consumer's door task and the local websocket). A second receiver
//! of that broadcast (the account's `FeedPool::events()`, got from `App::relay()`: the
//! pool the doors use), on its own OS thread (`bench-recorder`), files each stamp by a
//! fingerprint of the frame, computed the same way on the client's side:
//!
//! - proto: a hash of the frame's bytes (a consumer that wants all of a frame's
//!   instruments gets the upstream buffer verbatim);
//! - json: a hash of (`currentTs`, the frame's first instrument key in sorted order, that
//!   instrument's `ltp`), read from the upstream protobuf by the recorder and from the
//!   JSON text (keys sorted, as `MessageToDict` writes them) by the client.
//!
//! A client looks its frame up as it reads it; one read before the recorder filed the
//! stamp is matched after the run (`latency_samples_matched_after_run`), so the
//! recorder's own delay changes no figure. Frames without a stamp (snapshots the hub
//! makes, `market_info`) are counted but not timed. Both instants are
//! `tokio::time::Instant` (monotonic, same process; no runtime here pauses its clock).
//! RSS includes the samples (4 B each).
//!
//! Also reported: ticks/s the relay received, frames delivered, drops and consumers
//! closed (the hub's counters, read from `GET /api/v1/feed`; sockets that ended), the
//! process's CPU and RSS, and the CPU of the benchmark's own threads (the clients run on
//! their own 2-thread runtime, `bench-client`, plus `bench-recorder`):
//! `daemon_and_sim_cpu_percent` is the process minus those (simulator included; run with 1 consumer for the baseline).
//!
//!     cargo run --release -p upkeep-server --example relay_fanout_ws -- [proto|json] [CONSUMERS] [SECONDS] [KEYS]

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fanout;

use fanout::{SimTime, cpu_seconds, rss_mib};

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use upkeep_core::expiry::inspect;
use upkeep_core::{AccessToken, Secret};
use upkeep_server::settings::{AccountSettings, DaemonSettings, StrategyKind, TotpSettings};
use upkeep_server::{App, EngineDeps};
use upkeep_sim::TokenKind;
use upkeep_store::{MasterKey, NewToken};
use upkeep_upstox::feed::upstream::UpstreamEvent;
use upkeep_upstox::feed::{self, FeedRequest, FeedType, SubscriptionMode};
use upkeep_upstox::{Hosts, UpstoxClient};

const ACCOUNT: &str = "main";
const TOKEN_KEY: &str = "upk_bench_token_read_key_00000000000000000";
const STATUS_KEY: &str = "upk_bench_status_read_key_0000000000000000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    Proto,
    Json,
}

/// Arrival stamps by fingerprint, all of the run's (2,000 frames/s: small).
#[derive(Default)]
struct Arrivals(HashMap<u64, Instant>);

impl Arrivals {
    fn insert(&mut self, fp: u64, at: Instant) {
        self.0.insert(fp, at);
    }
    fn get(&self, fp: u64) -> Option<Instant> {
        self.0.get(&fp).copied()
    }
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The JSON door's fingerprint of an upstream protobuf frame.
fn json_fp_of_proto(data: &[u8]) -> Option<u64> {
    let f = feed::decode(data).ok()?;
    let (key, first) = f.feeds.iter().min_by_key(|(k, _)| *k)?;
    let ltp = first.ltpc()?.ltp;
    Some(hash_of((f.current_ts, *key, ltp.to_bits())))
}

/// The same fingerprint, read from the JSON text (no full parse).
fn json_fp_of_text(t: &str) -> Option<u64> {
    let ts_at = t.find("\"currentTs\":")? + "\"currentTs\":".len();
    let ts: i64 = t[ts_at..]
        .trim_start_matches('"')
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let feeds_at = t.find("\"feeds\":{\"")? + "\"feeds\":{\"".len();
    let key = t[feeds_at..].split('"').next()?;
    let ltp_at = feeds_at + t[feeds_at..].find("\"ltp\":")? + "\"ltp\":".len();
    let ltp: f64 = t[ltp_at..]
        .split([',', '}'])
        .next()?
        .trim_matches('"')
        .parse()
        .ok()?;
    Some(hash_of((ts, key, ltp.to_bits())))
}

struct ClientResult {
    lat: Vec<u32>,
    /// Frames read before their stamp was filed: (fingerprint, read at).
    pending: Vec<(u64, Instant)>,
    frames: u64,
    closed: Option<String>,
}

fn micros(read: Instant, arrived: Instant) -> u32 {
    read.saturating_duration_since(arrived)
        .as_micros()
        .try_into()
        .unwrap_or(u32::MAX)
}

async fn client(
    door: Door,
    url: String,
    keys: Vec<String>,
    arrivals: Arc<Mutex<Arrivals>>,
    running: Arc<AtomicBool>,
    ready: Arc<AtomicU64>,
) -> ClientResult {
    let mut out = ClientResult {
        lat: Vec::new(),
        pending: Vec::new(),
        frames: 0,
        closed: None,
    };
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN_KEY}").parse().unwrap(),
    );
    // A small read buffer, as the daemon's doors use: tungstenite zeroes the whole
    // buffer before each read, which at the default 128 KiB would make these clients
    // (on the same two cores as the daemon) far costlier than real ones.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let mut ws = match tokio_tungstenite::connect_async_with_config(req, Some(config), false).await
    {
        Ok((ws, _)) => ws,
        Err(e) => {
            out.closed = Some(format!("connect: {e}"));
            return out;
        }
    };
    if door == Door::Proto {
        let sub = FeedRequest::subscribe(SubscriptionMode::Ltpc, keys);
        if let Err(e) = ws.send(Message::Binary(sub.to_bytes().into())).await {
            out.closed = Some(format!("subscribe: {e}"));
            return out;
        }
    }
    ready.fetch_add(1, Ordering::Relaxed);
    let mut seen = false;
    loop {
        let msg = ws.next().await;
        let now = Instant::now();
        let fp = match msg {
            Some(Ok(Message::Binary(b))) if door == Door::Proto => Some(hash_of(&b[..])),
            Some(Ok(Message::Text(t))) if door == Door::Json => json_fp_of_text(t.as_str()),
            Some(Ok(Message::Close(c))) => {
                out.closed = Some(format!("closed: {c:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                out.closed = Some(format!("error: {e}"));
                break;
            }
            None => {
                out.closed = Some("ended".into());
                break;
            }
        };
        if !running.load(Ordering::Relaxed) {
            if seen {
                break; // the measurement is over
            }
            continue; // still warming up
        }
        seen = true;
        out.frames += 1;
        if let Some(at) = fp.and_then(|fp| arrivals.lock().unwrap().get(fp)) {
            out.lat.push(micros(now, at));
        } else if let Some(fp) = fp {
            // Read before the recorder filed its stamp: matched after the run.
            out.pending.push((fp, now));
        }
    }
    out
}

/// The hub's counters from `GET /api/v1/feed`: (frames, drops, closed_slow).
async fn hub_counters(http: &reqwest::Client, daemon: &str) -> (u64, u64, u64) {
    let Ok(r) = http
        .get(format!("{daemon}/api/v1/feed"))
        .bearer_auth(STATUS_KEY)
        .send()
        .await
    else {
        return (0, 0, 0);
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let local = &v["accounts"][0]["local"];
    let drops = local["consumers"]
        .as_array()
        .map_or(0, |cs| cs.iter().filter_map(|c| c["drops"].as_u64()).sum());
    (
        local["frames"].as_u64().unwrap_or(0),
        drops,
        local["closed_slow"].as_u64().unwrap_or(0),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let door = match args.get(1).map(String::as_str) {
        Some("json") => Door::Json,
        _ => Door::Proto,
    };
    let consumers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
    let n_keys: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(20);

    let (sim, clock, start) = fanout::market_open_sim().await;
    let creds = sim.credentials()[0].clone();
    let base = url::Url::parse(&sim.base_url()).unwrap();

    // The daemon's store: the account with a valid token, and the benchmark's keys.
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("upkeep.db").display());
    let master_key = MasterKey::generate();
    let store = upkeep_store::open_store(&store_url, master_key.clone())
        .await
        .unwrap();
    let token = AccessToken::new(
        sim.state()
            .issue_token(&creds.ucc, TokenKind::Daily)
            .unwrap(),
    );
    let info = inspect(&token).unwrap();
    store.upsert_account(ACCOUNT, "live", start).await.unwrap();
    store
        .put_token(
            ACCOUNT,
            NewToken {
                token,
                issued_at: info.issued_at,
                expires_at: info.expires_at,
                kind: "daily".into(),
                source: "import".into(),
            },
            start,
        )
        .await
        .unwrap();
    for (name, key, scope) in [
        ("bench", TOKEN_KEY, "token:read"),
        ("bench-status", STATUS_KEY, "status:read"),
    ] {
        store
            .create_api_key(name, &Sha256::digest(key.as_bytes()).into(), scope, start)
            .await
            .unwrap();
    }

    let daemon_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon_url = format!("http://{}", daemon_listener.local_addr().unwrap());
    let mut settings = DaemonSettings::new(vec![AccountSettings {
        id: ACCOUNT.into(),
        env: "live".into(),
        client_id: creds.client_id.clone(),
        client_secret: Secret::new(creds.client_secret.clone()),
        redirect_uri: creds.redirect_uri.clone(),
        user_id: Some(creds.ucc.clone()),
        strategies: vec![StrategyKind::Totp],
        totp: Some(TotpSettings {
            mobile: creds.mobile.clone(),
            pin: Secret::new(creds.pin.clone()),
            secret: Secret::new(creds.totp_secret.clone()),
        }),
        refresh: None,
        trades_weekends: false,
        trades_holidays: false,
    }]);
    settings.public_url = daemon_url.clone();
    let app = App::build(
        EngineDeps {
            settings,
            clock: Arc::new(SimTime(clock)),
            store,
            upstox: UpstoxClient::new(Hosts::all(&base)).unwrap(),
            alerter: None,
            master_key,
        },
        daemon_listener,
    )
    .await
    .unwrap();
    let upstreams = app.relay().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    // The recorder: the account's pool (the one the doors' hub is fed from) is started
    // here, before any consumer, so its first frame is already seen.
    let pool = upstreams.pool(ACCOUNT).unwrap();
    let mut events = pool.events();
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let running = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    {
        let (arrivals, running, ticks, lagged) = (
            Arc::clone(&arrivals),
            Arc::clone(&running),
            Arc::clone(&ticks),
            Arc::clone(&lagged),
        );
        std::thread::Builder::new()
            .name("bench-recorder".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    loop {
                        match events.recv().await {
                            Ok(UpstreamEvent::Frame {
                                data,
                                kind,
                                received,
                                ..
                            }) => {
                                let fp = match door {
                                    Door::Proto => Some(hash_of(&data[..])),
                                    Door::Json => json_fp_of_proto(&data),
                                };
                                if let Some(fp) = fp {
                                    arrivals.lock().unwrap().insert(fp, received);
                                }
                                if kind == FeedType::LiveFeed && running.load(Ordering::Relaxed) {
                                    let n = feed::split(&data).map_or(0, |p| p.feeds.len());
                                    ticks.fetch_add(n as u64, Ordering::Relaxed);
                                }
                            }
                            Ok(_) => {}
                            Err(RecvError::Lagged(n)) => {
                                lagged.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(RecvError::Closed) => break,
                        }
                    }
                });
            })
            .unwrap();
    }

    // The clients, on their own runtime (their CPU is counted apart).
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<String> = (0..n_keys).map(|i| format!("NSE_EQ|BENCH{i:04}")).collect();
    let ws_base = daemon_url.replacen("http", "ws", 1);
    let url = match door {
        Door::Proto => format!("{ws_base}/upstox/v3/feed/market-data-feed"),
        Door::Json => format!(
            "{ws_base}/ws/ticks?mode=ltpc&keys={}",
            keys.join(",").replace('|', "%7C")
        ),
    };
    let ready = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        tasks.push(client_rt.spawn(client(
            door,
            url.clone(),
            keys.clone(),
            Arc::clone(&arrivals),
            Arc::clone(&running),
            Arc::clone(&ready),
        )));
    }

    // Warm up until every client is connected and both connections stream, then measure.
    let http = reqwest::Client::new();
    let warm = Instant::now();
    while (ready.load(Ordering::Relaxed) as usize) < consumers
        && warm.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (f0, d0, c0) = hub_counters(&http, &daemon_url).await;
    let (cpu0, bench0, t0) = (
        cpu_seconds(None),
        cpu_seconds(Some("bench-")),
        Instant::now(),
    );
    running.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    running.store(false, Ordering::Relaxed);
    let (cpu1, bench1, elapsed) = (
        cpu_seconds(None),
        cpu_seconds(Some("bench-")),
        t0.elapsed().as_secs_f64(),
    );
    let (f1, d1, c1) = hub_counters(&http, &daemon_url).await;
    let rss = rss_mib();
    // Every client sees the stop with its next frame.
    let mut lat = Vec::new();
    let mut frames = 0u64;
    let mut closed = 0usize;
    let mut late = 0u64;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(r)) => {
                lat.extend(r.lat);
                let a = arrivals.lock().unwrap();
                for (fp, read) in r.pending {
                    if let Some(at) = a.get(fp) {
                        lat.push(micros(read, at));
                        late += 1;
                    }
                }
                frames += r.frames;
                if let Some(why) = r.closed {
                    closed += 1;
                    eprintln!("a consumer ended: {why}");
                }
            }
            _ => closed += 1,
        }
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    client_rt.shutdown_background();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let cpu = (cpu1 - cpu0) / elapsed * 100.0;
    let bench_cpu = (bench1 - bench0) / elapsed * 100.0;
    println!(
        "door={}",
        match door {
            Door::Proto => "proto /upstox/v3/feed/market-data-feed",
            Door::Json => "json /ws/ticks",
        }
    );
    println!("consumers={consumers}");
    println!("seconds={elapsed:.1}");
    println!("upstream_frames_per_s={:.0}", (f1 - f0) as f64 / elapsed);
    println!(
        "upstream_ticks_per_s={:.0}",
        ticks.load(Ordering::Relaxed) as f64 / elapsed
    );
    println!("delivered_frames={frames}");
    println!("drops={}", d1.saturating_sub(d0));
    println!("closed_slow={}", c1.saturating_sub(c0));
    println!("consumers_ended={closed}");
    println!("recorder_lagged={}", lagged.load(Ordering::Relaxed));
    println!("latency_samples={}", lat.len());
    println!("latency_samples_matched_after_run={late}");
    println!("latency_p50_us={}", pct(0.50));
    println!("latency_p99_us={}", pct(0.99));
    println!("latency_max_us={}", lat.last().copied().unwrap_or(0));
    println!("cpu_percent={cpu:.0}");
    println!("bench_clients_cpu_percent={bench_cpu:.0}");
    println!("daemon_and_sim_cpu_percent={:.0}", cpu - bench_cpu);
    println!("rss_mib={rss:.1}");
}
