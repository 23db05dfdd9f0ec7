//! Loading what every command needs: the configuration (file + environment), the
//! master key, the store, and the daemon settings derived from the configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use upkeep_core::config::{Config, Strategy};
use upkeep_server::settings::{
    AccountSettings, DaemonSettings, RefreshSettings, SinkSettings, TotpSettings,
};
use upkeep_store::{KeyOrigin, MasterKey, TokenStore};
use upkeep_upstox::{Hosts, UpstoxClient};

use crate::commands::UsageError;

/// The loaded configuration and where it came from.
pub struct Loaded {
    pub config: Config,
    /// The file read, if any.
    pub path: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

/// The process environment as a map (config loading never reads the environment itself).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// `--config FILE`, else `$UPKEEP_CONFIG`, else `./upkeep.toml` if it exists, else
/// defaults + environment only.
pub fn load_config(explicit: Option<&Path>) -> Result<Loaded> {
    let env = process_env();
    let (path, required) = match explicit {
        Some(p) => (Some(p.to_path_buf()), true),
        None => match env.get("UPKEEP_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => (Some(PathBuf::from(p)), true),
            None => {
                let p = PathBuf::from("upkeep.toml");
                (p.exists().then_some(p), false)
            }
        },
    };
    let text = match &path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(UsageError(format!(
                    "cannot read config file {}: {e}; pass --config FILE or create it (`upkeep config example > upkeep.toml`)",
                    p.display()
                ))
                .into());
            }
        },
        None => None,
    };
    let mut config = Config::from_sources(text.as_deref(), &env).map_err(|e| {
        let origin = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "environment".into());
        UsageError(format!("invalid configuration ({origin}): {e}"))
    })?;
    let path = path.filter(|_| text.is_some());
    if let Some(p) = &path {
        // Relative paths mean "next to the config file", wherever the command runs.
        let file = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        if let Some(dir) = file.parent() {
            config.resolve_relative_paths(dir);
        }
        warn_if_readable_by_others(p, &config);
    }
    Ok(Loaded { config, path, env })
}

/// A config file holding secrets that group or others can read gets a warning.
fn warn_if_readable_by_others(path: &Path, config: &Config) {
    use std::os::unix::fs::PermissionsExt as _;
    let holds_secrets = config.accounts.iter().any(|a| {
        a.client_secret.is_some()
            || a.totp.is_some()
            || a.refresh_token.is_some()
            || a.access_token.is_some()
            || a.sandbox_token.is_some()
    }) || config.store.url.expose().contains('@');
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if holds_secrets && mode & 0o077 != 0 {
        eprintln!(
            "upkeep: warning: {} holds secrets and can be read by other users (mode {mode:o}); \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

/// The master key: `UPKEEP_MASTER_KEY`, else the key file (created on first use,
/// which is said loudly on stderr). A key is only created together with a new store:
/// a missing key file beside an existing database is an error naming both.
pub fn master_key(loaded: &Loaded) -> Result<MasterKey> {
    let key_file = &loaded.config.store.key_file;
    let env_value = loaded
        .env
        .get("UPKEEP_MASTER_KEY")
        .map(String::as_str)
        .filter(|v| !v.is_empty());
    if env_value.is_none()
        && !key_file.exists()
        && let Some(db) = loaded.config.store.sqlite_path()
        && std::fs::metadata(&db).is_ok_and(|m| m.len() > 0)
    {
        return Err(UsageError(format!(
            "the store {} exists but its master key {} is missing; restore the key file (or set \
             UPKEEP_MASTER_KEY). upkeep does not create a new key for an existing store: it \
             could not read it",
            db.display(),
            key_file.display()
        ))
        .into());
    }
    let (key, origin) =
        upkeep_store::load_or_create(key_file, env_value).map_err(|e| UsageError(e.to_string()))?;
    if origin == KeyOrigin::Created {
        eprintln!(
            "upkeep: created a NEW master key at {} (mode 0600). Keep it safe and back it up: \
             without it the store cannot be read.",
            key_file.display()
        );
        tracing::warn!(path = %key_file.display(), "created a new master key");
    }
    Ok(key)
}

/// Opens the store named by `[store] url` with the master key.
pub async fn open_store(loaded: &Loaded, key: MasterKey) -> Result<Arc<dyn TokenStore>> {
    let url = loaded.config.store.url.expose();
    upkeep_store::open_store(url, key).await.with_context(|| {
        format!(
            "cannot open the store {}",
            loaded.config.store.redacted_url()
        )
    })
}

/// Upstox hosts from `[upstox]`, for the account's environment.
pub fn upstox_client(config: &Config) -> Result<UpstoxClient> {
    let parse = |name: &str, v: &str| {
        url::Url::parse(v)
            .map_err(|e| UsageError(format!("upstox.{name}: `{v}` is not a URL ({e})")))
    };
    let u = &config.upstox;
    let mut hosts = Hosts {
        api: parse("api_url", &u.api_url)?,
        order: parse("order_url", &u.order_url)?,
        login: parse("login_url", &u.login_url)?,
        ..Hosts::default()
    };
    if hosts.login != Hosts::default().login {
        // A stand-in login service (the simulator) also serves the login page.
        hosts.login_page = hosts.login.clone();
    }
    Ok(UpstoxClient::new(hosts)?)
}

/// The daemon's settings derived from the configuration.
pub fn daemon_settings(config: &Config) -> DaemonSettings {
    let accounts = config
        .accounts
        .iter()
        .map(|a| AccountSettings {
            id: a.id.clone(),
            env: a.env.as_str().to_owned(),
            client_id: a.client_id.clone().unwrap_or_default(),
            client_secret: a
                .client_secret
                .clone()
                .unwrap_or_else(|| upkeep_core::Secret::new("")),
            redirect_uri: a
                .redirect_uri
                .clone()
                .unwrap_or_else(|| format!("{}/auth/upstox/callback", config.server.public_url)),
            user_id: a.user_id.clone(),
            strategies: if a.renew.is_empty() {
                vec![Strategy::Static]
            } else {
                a.renew.clone()
            },
            totp: a.totp.as_ref().map(|t| TotpSettings {
                mobile: t.mobile.clone(),
                pin: t.pin.clone(),
                secret: t.secret.clone(),
            }),
            refresh: a.refresh_token.as_ref().map(|r| RefreshSettings {
                token_url: r.token_url.clone(),
                refresh_token: Some(r.refresh_token.clone()),
            }),
            trades_weekends: a.trades_weekends,
            trades_holidays: false,
        })
        .collect();
    let mut s = DaemonSettings::new(accounts);
    s.policy = config.to_policy();
    s.thresholds = config.thresholds();
    s.health_interval = config.renewal.health_check_interval;
    s.public_url = config.server.public_url.clone();
    let srv = &config.server;
    let secs = |d: jiff::SignedDuration| std::time::Duration::try_from(d).unwrap_or_default();
    s.http = upkeep_server::http::serve::ServeLimits {
        max_connections: srv.max_connections,
        header_read_timeout: secs(srv.header_read_timeout),
        idle_timeout: secs(srv.idle_timeout),
        shutdown_deadline: secs(srv.shutdown_timeout),
    };
    let gw = &config.gateway;
    s.gateway = upkeep_server::settings::GatewaySettings {
        enabled: gw.enabled,
        account_header: gw.account_header.clone(),
        connect_timeout: secs(gw.connect_timeout),
        request_timeout: secs(gw.request_timeout),
        max_idle_connections: gw.max_idle_connections,
        default_accounts: gw.default_accounts.clone(),
        budget: upkeep_server::gateway::budget::BudgetSettings::from_config(&gw.budget),
        cache: gw.cache.clone(),
    };
    if config.upstox.follow_sim_clock {
        // A jump of the simulator's clock is seen within a second by the follower;
        // supervisors re-read the plan as often so the daemon reacts within seconds.
        s.poll = s.poll.min(std::time::Duration::from_secs(1));
    }
    let relay = &config.relay;
    s.relay = upkeep_server::settings::RelaySettings {
        enabled: relay.enabled,
        upstream: upkeep_upstox::feed::upstream::UpstreamConfig {
            stall_timeout: secs(relay.stall_timeout),
            backoff_min: secs(relay.backoff_min),
            backoff_max: secs(relay.backoff_max),
            event_queue: relay.upstream_queue,
            max_connections: (relay.max_connections > 0).then_some(relay.max_connections),
        },
        consumer_queue: relay.consumer_queue,
        persist_ticks: relay.persist_ticks,
        code_guard: Default::default(),
    };
    s.sinks = SinkSettings {
        json_file: config.sinks.json_file.clone(),
        env_file: config.sinks.env_file.clone(),
        backup_dir: config.store.backup_dir.clone(),
    };
    s
}

/// The clock the daemon and the CLI run on: the machine's, or with
/// `[upstox] follow_sim_clock` the simulator's (read from `{api_url}/sim/clock`; the
/// returned follower must be kept in sync by whoever runs long, see
/// [`upkeep_server::clock::SimFollowClock::follow`]).
pub async fn clock(
    config: &Config,
) -> Result<(
    std::sync::Arc<dyn upkeep_core::Clock>,
    Option<std::sync::Arc<upkeep_server::clock::SimFollowClock>>,
)> {
    if !config.upstox.follow_sim_clock {
        return Ok((std::sync::Arc::new(upkeep_server::SystemClock), None));
    }
    let http = reqwest::Client::builder()
        .build()
        .context("cannot build the HTTP client for the simulator's clock")?;
    let follower = upkeep_server::clock::SimFollowClock::connect(&config.upstox.api_url, http)
        .await
        .map_err(|e| UsageError(format!("upstox.follow_sim_clock: {e}")))?;
    Ok((follower.clone(), Some(follower)))
}

/// Master key, store, Upstox client and daemon settings for an engine on `clock`.
pub async fn engine_deps(
    loaded: &Loaded,
    clock: std::sync::Arc<dyn upkeep_core::Clock>,
    alerter: Option<upkeep_server::alerts::Alerter>,
) -> Result<upkeep_server::EngineDeps> {
    let master_key = master_key(loaded)?;
    let store = open_store(loaded, master_key.clone()).await?;
    Ok(upkeep_server::EngineDeps {
        settings: daemon_settings(&loaded.config),
        clock,
        store,
        upstox: upstox_client(&loaded.config)?,
        alerter,
        master_key,
    })
}

/// Picks `--account ID` or the default account; errors name the configured ones.
pub fn pick_account(config: &Config, requested: Option<&str>) -> Result<String> {
    match requested {
        Some(id) => {
            if config.account(id).is_some() {
                Ok(id.to_owned())
            } else {
                let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
                Err(UsageError(format!(
                    "no account `{id}` in the configuration (configured: {})",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ))
                .into())
            }
        }
        None => config
            .default_account()
            .map(|a| a.id.clone())
            .ok_or_else(|| {
                UsageError(
                    "no account is configured; add an [[account]] to upkeep.toml or set UPSTOX_ACCESS_TOKEN"
                        .into(),
                )
                .into()
            }),
    }
}
