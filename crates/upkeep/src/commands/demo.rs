//! `upkeep demo`: the simulator and the daemon in one process, sharing one clock.
//! Gets a token by headless TOTP login, jumps the simulated clock over the 03:30 IST
//! rollover, and shows the renewal happen in the morning window.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use jiff::civil::{Time, Weekday};
use jiff::{SignedDuration, Timestamp};
use sha2::Digest as _;
use upkeep_core::expiry::{format_ist, ist, ist_date};
use upkeep_core::{Clock, Secret};
use upkeep_server::settings::{AccountSettings, DaemonSettings, StrategyKind, TotpSettings};
use upkeep_server::{App, EngineDeps};
use upkeep_sim::{SimClock, SimConfig};
use upkeep_upstox::{Hosts, UpstoxClient};

use crate::cli::DemoArgs;

/// The simulator's clock seen through the daemon's `Clock` trait: moving one moves both.
struct SharedClock(SimClock);

impl Clock for SharedClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

fn say(clock: &SimClock, text: &str) {
    let t = clock.now().to_zoned(ist());
    println!("[sim {}] {text}", t.strftime("%a %Y-%m-%d %H:%M:%S IST"));
}

/// The next Monday-Thursday (so the day after is a trading day too), 10:00 IST.
fn demo_start(real_now: Timestamp) -> Result<Timestamp> {
    let mut d = ist_date(real_now).tomorrow()?;
    while matches!(
        d.weekday(),
        Weekday::Friday | Weekday::Saturday | Weekday::Sunday
    ) {
        d = d.tomorrow()?;
    }
    Ok(d.to_datetime(Time::constant(10, 0, 0, 0))
        .to_zoned(ist())?
        .timestamp())
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let start = demo_start(upkeep_server::SystemClock.now())?;
    let sim_clock = SimClock::new(start, 1.0);
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = upkeep_sim::spawn_with_clock(SimConfig::demo(), sim_clock.clone(), sim_listener)
        .await
        .context("cannot start the simulator")?;
    let creds = sim
        .credentials()
        .into_iter()
        .next()
        .context("the demo simulator has no app")?;
    println!(
        "upkeep demo: simulator at {} (user {}, plan {:?})",
        sim.base_url(),
        creds.ucc,
        creds.plan
    );

    let dir = std::env::temp_dir().join(format!("upkeep-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = upkeep_store::MasterKey::generate();
    let db = dir.join("upkeep.db");
    let store =
        upkeep_store::open_store(&format!("sqlite://{}", db.display()), key.clone()).await?;

    // The key of the demo's own feed consumer (`--keep`): token:read, in this run's
    // throw-away store only.
    let raw: [u8; 32] = rand::random();
    let ticker_key = Secret::new(format!(
        "upk_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    store
        .create_api_key(
            TICKER,
            &sha2::Sha256::digest(ticker_key.expose().as_bytes()).into(),
            "token:read",
            sim_clock.now(),
        )
        .await?;

    let base = url::Url::parse(&sim.base_url())?;
    let upstox = UpstoxClient::new(Hosts::all(&base))?;
    let daemon_listener = if args.keep {
        keep_listener().await?
    } else {
        tokio::net::TcpListener::bind("127.0.0.1:0").await?
    };
    let daemon_addr = daemon_listener.local_addr()?;
    let mut settings = DaemonSettings::new(vec![AccountSettings {
        id: "demo".into(),
        env: "live".into(),
        client_id: creds.client_id.clone(),
        client_secret: Secret::new(creds.client_secret.clone()),
        redirect_uri: creds.redirect_uri.clone(),
        user_id: Some(creds.ucc.clone()),
        strategies: vec![StrategyKind::Totp, StrategyKind::Oauth],
        totp: Some(TotpSettings {
            mobile: creds.mobile.clone(),
            pin: Secret::new(creds.pin.clone()),
            secret: Secret::new(creds.totp_secret.clone()),
        }),
        refresh: None,
        trades_weekends: false,
        trades_holidays: false,
    }]);
    settings.poll = Duration::from_millis(200);
    settings.public_url = format!("http://{daemon_addr}");
    settings.sinks.json_file = Some(dir.join("upstox_tokens.json"));
    let app = App::build(
        EngineDeps {
            settings,
            clock: Arc::new(SharedClock(sim_clock.clone())),
            store,
            upstox,
            alerter: None,
            master_key: key,
        },
        daemon_listener,
    )
    .await?;
    let engine = app.engine().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    println!(
        "upkeep demo: daemon at http://{daemon_addr} (store {})",
        db.display()
    );

    let mut rx = engine.subscribe("demo").context("demo account missing")?;
    say(
        &sim_clock,
        "no token yet: the daemon logs in headlessly (mobile + PIN + TOTP)",
    );
    let first = wait_for_token(&mut rx, None, Duration::from_secs(30)).await?;
    say(
        &sim_clock,
        &format!(
            "got a {} token via {} (fp {}), valid until {}",
            first.kind.as_str(),
            first.source,
            first.fingerprint,
            format_ist(first.expires_at)
        ),
    );

    // Let the renewal finish its bookkeeping (audit) before time moves on.
    while engine.status("demo").is_some_and(|s| s.renewing) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The rollover: valid at 03:29:59, dead at 03:30:00 (the simulator follows Upstox's
    // rule, the daemon knows it from the token's `exp`).
    let rollover = first.expires_at;
    let client = UpstoxClient::new(Hosts::all(&base))?;
    sim_clock.set(rollover - SignedDuration::from_secs(1));
    match client.profile(&first.token).await {
        Ok(p) => say(
            &sim_clock,
            &format!(
                "jumped to the rollover: profile call with the token OK (user {})",
                p.user_id
            ),
        ),
        Err(e) => say(&sim_clock, &format!("profile call failed: {e}")),
    }
    sim_clock.set(rollover);
    match client.profile(&first.token).await {
        Ok(_) => say(&sim_clock, "profile call still OK (unexpected)"),
        Err(e) => say(&sim_clock, &format!("the token died at 03:30: {e}")),
    }
    // The daemon re-reads the clock at least every poll and plans again.
    let plan = wait_for_plan_after(&engine, rollover, Duration::from_secs(10)).await?;
    say(
        &sim_clock,
        &format!(
            "daemon's plan: {} at {} ({})",
            plan.action.as_str(),
            format_ist(plan.at),
            plan.reason
        ),
    );

    // Fast-forward to a few seconds before the planned renewal, inside the 05:30 IST window.
    sim_clock.set(plan.at - SignedDuration::from_secs(3));
    say(&sim_clock, "jumped to just before the planned renewal");
    let renewed =
        wait_for_token(&mut rx, Some(&first.fingerprint), Duration::from_secs(60)).await?;
    say(
        &sim_clock,
        &format!(
            "renewed via {} (fp {}), valid until {}",
            renewed.source,
            renewed.fingerprint,
            format_ist(renewed.expires_at)
        ),
    );
    match client.profile(&renewed.token).await {
        Ok(p) => say(
            &sim_clock,
            &format!("profile call with the new token: OK (user {})", p.user_id),
        ),
        Err(e) => say(
            &sim_clock,
            &format!("profile call with the new token failed: {e}"),
        ),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("\naudit log (newest first):");
    for (_, ev) in engine.store().events(Some("demo"), 10).await? {
        println!(
            "  {}  {:<8} {:<18} {:<10} {}",
            format_ist(ev.at),
            ev.actor,
            ev.kind,
            ev.outcome,
            ev.detail
        );
    }
    println!(
        "\nlegacy token file written to {}",
        dir.join("upstox_tokens.json").display()
    );

    if args.keep {
        println!(
            "\nrunning until Ctrl-C: daemon http://{daemon_addr}, the simulator's clock runs on \
             (move it with POST {}/sim/clock)",
            sim.base_url()
        );
        // A consumer of the relay, so the dashboard's feed card has live ticks to show.
        let ticker = tokio::spawn(run_ticker(daemon_addr, ticker_key));
        println!(
            "relay: `{TICKER}` streams {} through the daemon's relay (the dashboard's \
             Market-data feed card)",
            TICKER_KEYS.join(", ")
        );
        println!("simulator: {}", sim.base_url());
        println!("dashboard: {}", engine.dashboard_link());
        super::sim::wait_for_signal().await;
        ticker.abort();
    }
    let _ = stop_tx.send(());
    let _ = daemon.await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// The demo's feed consumer: its API key's name, and what it subscribes.
const TICKER: &str = "demo-ticker";
const TICKER_KEYS: [&str; 4] = [
    "NSE_EQ|INE002A01018",
    "NSE_EQ|INE669E01016",
    "NSE_EQ|INE848E01016",
    "NSE_INDEX|Nifty 50",
];

/// Reads ticks from the daemon's `/ws/ticks` (as any bot would) until the demo ends;
/// reconnects after a second if the socket ends.
async fn run_ticker(daemon: std::net::SocketAddr, key: Secret) {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let keys: Vec<String> = TICKER_KEYS
        .iter()
        .map(|k| url::form_urlencoded::byte_serialize(k.as_bytes()).collect())
        .collect();
    let url = format!("ws://{daemon}/ws/ticks?mode=ltpc&keys={}", keys.join(","));
    loop {
        let req = url.as_str().into_client_request().ok().and_then(|mut r| {
            let auth = format!("Bearer {}", key.expose()).parse().ok()?;
            r.headers_mut().insert("authorization", auth);
            Some(r)
        });
        let Some(req) = req else { return };
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, _)) => while let Some(Ok(_)) = ws.next().await {},
            Err(e) => tracing::debug!(error = %e, "demo ticker: cannot connect to the relay"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// 127.0.0.1:7878, or the next free port after it (said so), for `--keep`.
async fn keep_listener() -> Result<tokio::net::TcpListener> {
    for port in 7878..7900u16 {
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            if port != 7878 {
                println!("upkeep demo: 127.0.0.1:7878 is taken; the daemon listens on port {port}");
            }
            return Ok(l);
        }
    }
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
}

async fn wait_for_token(
    rx: &mut tokio::sync::watch::Receiver<Option<Arc<upkeep_server::CurrentToken>>>,
    not: Option<&str>,
    limit: Duration,
) -> Result<Arc<upkeep_server::CurrentToken>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(c) = rx.borrow_and_update().clone()
            && Some(c.fingerprint.as_str()) != not
        {
            return Ok(c);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the daemon stopped"),
            Err(_) => bail!(
                "no token within {}s; run with -v to see why",
                limit.as_secs()
            ),
        }
    }
}

/// Waits until the daemon has planned something after `after` (it re-plans within one
/// poll of a clock jump).
async fn wait_for_plan_after(
    engine: &upkeep_server::Engine,
    after: Timestamp,
    limit: Duration,
) -> Result<upkeep_core::plan::Plan> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(p) = engine.status("demo").and_then(|s| s.next)
            && p.at > after
        {
            return Ok(p);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the daemon made no new plan within {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
