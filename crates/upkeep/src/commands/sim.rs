//! `upkeep sim`: the Upstox simulator as a standalone server.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use upkeep_sim::SimConfig;

use crate::cli::SimArgs;
use crate::commands::UsageError;

pub async fn run(args: SimArgs) -> Result<ExitCode> {
    let mut config = match &args.sim_config {
        Some(path) => SimConfig::from_file(path).map_err(|e| UsageError(e.to_string()))?,
        None => SimConfig::demo(),
    };
    if args.revoke_previous_tokens {
        config.revoke_previous_tokens = true;
    }
    if let Some(app) = config.apps.first_mut() {
        if let Some(uri) = &args.redirect_uri {
            app.redirect_uri = uri.clone();
        }
        if let Some(url) = &args.notifier_url {
            app.notifier_url = Some(url.clone());
        }
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {}: {e}", args.listen)))?;
    let handle = upkeep_sim::spawn(config, listener)
        .await
        .context("cannot start the simulator")?;
    let base = handle.base_url();
    if let Some(path) = &args.credentials_out {
        let creds: Vec<serde_json::Value> = handle
            .credentials()
            .into_iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("base_url".into(), base.clone().into());
                }
                v
            })
            .collect();
        // The first app's credentials at the top level (what a script needs), all of
        // them under "apps".
        let mut out = creds
            .first()
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(o) = out.as_object_mut() {
            o.insert("apps".into(), serde_json::Value::Array(creds.clone()));
        }
        let bytes = serde_json::to_vec_pretty(&out)?;
        upkeep_store::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("upkeep sim listening on {base}");
    println!("  point every [upstox] url at it: api_url = order_url = login_url = \"{base}\"");
    println!(
        "  control API: {base}/sim/state, {base}/sim/clock, {base}/sim/faults (see `upkeep sim --help`)"
    );
    wait_for_signal().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    shutdown_signal().await
}

/// Installs the SIGTERM / SIGINT handlers now (call it first thing, so a stop that
/// arrives while the daemon starts is not the default "terminate at once") and
/// returns the future that resolves on either.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let term = async {
                match term {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match int {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
