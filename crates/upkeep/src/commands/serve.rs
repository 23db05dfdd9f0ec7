//! `upkeep serve`: the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use upkeep_core::Clock as _;
use upkeep_server::App;
use upkeep_server::alerts::{AlertPolicy, Alerter, EmailTarget, WebhookFormat, WebhookTarget};

use crate::cli::ServeArgs;
use crate::commands::{UsageError, seed_initial_tokens, sim::shutdown_signal};
use crate::{context, daemon};

pub async fn run(path: Option<&Path>, args: ServeArgs) -> Result<ExitCode> {
    // First: a SIGTERM during start-up then stops the daemon cleanly too, and a SIGHUP
    // (reload) does not kill it.
    let stop = shutdown_signal();
    let hangups = hangup_signal();
    let mut loaded = context::load_config(path)?;
    if args.follow_sim_clock && !loaded.config.upstox.follow_sim_clock {
        loaded.config.upstox.follow_sim_clock = true;
        loaded
            .config
            .validate()
            .map_err(|e| UsageError(format!("--follow-sim-clock: {e}")))?;
    }
    let config = &loaded.config;
    let placeholders = config.placeholders();
    if !placeholders.is_empty() {
        // Placeholder credentials would spend Upstox's login attempts and lock the user.
        return Err(UsageError(format!(
            "the configuration still holds the placeholders of `upkeep config example` ({}); \
             `upkeep config check` lists them",
            placeholders.len()
        ))
        .into());
    }
    if config.accounts.is_empty() {
        eprintln!(
            "upkeep: warning: no account is configured, so there is nothing to renew; add an \
             [[account]] to {} (see `upkeep config example`) or set UPSTOX_ACCESS_TOKEN",
            loaded
                .path
                .as_ref()
                .map_or_else(|| "upkeep.toml".to_owned(), |p| p.display().to_string())
        );
    }
    let listen = match &args.listen {
        Some(l) => l.clone(),
        None => config.server.listen.to_string(),
    };
    let (clock, follower) = context::clock(config).await?;
    if let Some(f) = &follower {
        let now = upkeep_core::expiry::format_ist(f.now());
        eprintln!(
            "upkeep: following the simulator's clock at {} (now {now})",
            config.upstox.api_url
        );
        tracing::info!(api_url = %config.upstox.api_url, %now, "following the simulator's clock");
    }
    let alerter = alerter(config, clock.clone())?;
    let reloader = reloader(path, &loaded, clock.clone());
    let deps = context::engine_deps(&loaded, clock, alerter).await?;
    let listener = bind(&listen).await?;
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
    {
        eprintln!(
            "upkeep: warning: listening on {addr}, not loopback: tokens and API keys cross the \
             network in clear unless TLS terminates in front of upkeep"
        );
        tracing::warn!(%addr, "listening on a non-loopback address");
    }
    remove_crash_leftovers(config);
    let addr = listener.local_addr()?;
    // The CLI's way in (status, token, renew, reload): a key only this user can read,
    // valid while this daemon runs.
    let (credential, digest) =
        daemon::LocalCredential::create(&daemon::credential_path(config), addr)?;
    let app = App::build(deps, listener)
        .await
        .context("cannot start the daemon")?
        .with_local_key(digest);
    seed_initial_tokens(&loaded, app.engine()).await;
    app.engine().set_reloader(reloader);
    if let Some(mut hangups) = hangups {
        let engine = app.engine().clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                // An invalid configuration is logged by the engine and the running one kept.
                let _ = engine.reload().await;
            }
        });
    }
    tracing::info!(%addr, accounts = app.engine().account_ids().len(), store = %config.store.redacted_url(), credential = %credential.path().display(), "upkeep serving");
    eprintln!("upkeep serving on http://{addr} (healthz: http://{addr}/healthz)");
    let following = follower.map(|f| tokio::spawn(async move { f.follow().await }));
    let result = app.run_until_stopped(stop).await;
    if let Some(task) = following {
        task.abort();
    }
    credential.remove();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP, handled from now on (its default would end the process).
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).ok()
}

/// Reads and fully validates the configuration again for a reload (`upkeep reload`,
/// SIGHUP): the same file and environment as at start. Parts that need a restart are
/// warned about when they changed.
fn reloader(
    path: Option<&Path>,
    started: &context::Loaded,
    clock: Arc<dyn upkeep_core::Clock>,
) -> upkeep_server::Reloader {
    let path = path.map(Path::to_path_buf);
    let before = started.config.clone();
    Arc::new(move || {
        let loaded = context::load_config(path.as_deref()).map_err(|e| format!("{e:#}"))?;
        let c = &loaded.config;
        let alerter = alerter(c, clock.clone()).map_err(|e| format!("{e:#}"))?;
        context::upstox_client(c).map_err(|e| format!("{e:#}"))?;
        let restart_needed = [
            ("[server] listen", c.server.listen != before.server.listen),
            (
                "[store] url",
                c.store.url.expose() != before.store.url.expose(),
            ),
            (
                "[store] key_file",
                c.store.key_file != before.store.key_file,
            ),
            (
                "[upstox]",
                c.upstox.api_url != before.upstox.api_url
                    || c.upstox.order_url != before.upstox.order_url
                    || c.upstox.login_url != before.upstox.login_url,
            ),
            ("[gateway]", c.gateway != before.gateway),
            ("[relay]", c.relay != before.relay),
        ];
        for (what, changed) in restart_needed {
            if changed {
                tracing::warn!("{what} changed: it takes effect after a restart, not a reload");
            }
        }
        Ok((context::daemon_settings(c), alerter))
    })
}

/// Binds the listener with a deep accept queue (a burst of connections waits in the
/// kernel instead of being dropped and retried a second later).
async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    let addr: std::net::SocketAddr = match tokio::net::lookup_host(listen).await {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    }
    .ok_or_else(|| UsageError(format!("cannot listen on {listen}: not an address:port")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        Ok(s)
    })
    .map_err(|e| {
        UsageError(format!(
            "cannot listen on {listen}: {e} (is another upkeep running?)"
        ))
    })?;
    Ok(socket
        .listen(1024)
        .map_err(|e| UsageError(format!("cannot listen on {listen}: {e}")))?)
}

/// Temporary files a crashed write left beside the legacy sinks and backups (they may
/// hold a plaintext token) are removed at start.
fn remove_crash_leftovers(config: &upkeep_core::config::Config) {
    let dirs = [
        config.sinks.json_file.as_deref().and_then(Path::parent),
        config.sinks.env_file.as_deref().and_then(Path::parent),
        config.store.backup_dir.as_deref(),
        config.store.key_file.parent(),
    ];
    for dir in dirs.into_iter().flatten() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match upkeep_store::remove_stale_temp_files(dir) {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(dir = %dir.display(), removed = n, "removed temporary files left by a crash")
            }
            Err(e) => tracing::warn!(error = %e, "cannot clean up temporary files"),
        }
    }
}

pub fn alerter(
    config: &upkeep_core::config::Config,
    clock: Arc<dyn upkeep_core::Clock>,
) -> Result<Option<Alerter>> {
    use upkeep_core::config::WebhookFormat as CfgFormat;
    let a = &config.alert;
    if a.webhook.is_empty() && a.email.is_none() {
        return Ok(None);
    }
    let webhooks = a
        .webhook
        .iter()
        .map(|w| WebhookTarget {
            url: w.url.expose().to_owned(),
            format: match w.format {
                CfgFormat::Generic => WebhookFormat::Generic,
                CfgFormat::Slack => WebhookFormat::Slack,
                CfgFormat::Telegram => WebhookFormat::Telegram,
            },
            chat_id: w.chat_id.clone(),
        })
        .collect();
    let email = a.email.as_ref().map(|e| EmailTarget {
        smtp_url: e.smtp_url.clone(),
        username: e.username.clone(),
        password: e.password.clone(),
        from: e.from.clone(),
        to: e.to.clone(),
        // A local relay on loopback may speak plain SMTP; anything else must use TLS.
        starttls: !is_loopback_url(&e.smtp_url),
    });
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .context("cannot build the HTTP client for alerts")?;
    let alerter = Alerter::new(webhooks, email, AlertPolicy::default(), clock, http)
        .map_err(|e| UsageError(format!("alert configuration: {e}")))?;
    Ok(Some(alerter))
}

fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]")
}
