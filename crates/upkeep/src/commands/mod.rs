//! One function per command. Errors are `anyhow` with context; a [`UsageError`]
//! (bad input: malformed token, broken config, unknown account) exits with code 2.

mod calendar;
mod demo;
mod feed;
mod serve;
mod sim;
mod ticks;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use serde_json::json;
use upkeep_core::expiry::{format_duration, format_ist, inspect};
use upkeep_core::state::TokenState;
use upkeep_core::{AccessToken, Clock};
use upkeep_server::{Actor, Engine, RenewOutcome, SystemClock};

use crate::cli::{AccountsCommand, ApikeyCommand, Cli, Command, ConfigCommand, TokenCommand};
use crate::context::{self, Loaded};
use crate::daemon;
use crate::output;

/// Bad input from the user: exit code 2 and one line on stderr.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<UsageError>()) {
        2
    } else {
        1
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Decode(args) => decode(&args.token, args.json),
        Command::Sim(args) => sim::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Serve(args) => serve::run(config_path, args).await,
        Command::Keygen(args) => {
            let loaded = context::load_config(config_path)?;
            let path = args.out.unwrap_or(loaded.config.store.key_file.clone());
            let key =
                upkeep_store::create_key_file(&path).map_err(|e| UsageError(e.to_string()))?;
            eprintln!(
                "created master key {} (key id {}, mode 0600). Back it up somewhere safe: the store cannot be read without it.",
                path.display(),
                key.key_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command } => match command {
            ConfigCommand::Example => {
                print!("{}", upkeep_core::config::example_toml());
                Ok(ExitCode::SUCCESS)
            }
            ConfigCommand::Check => config_check(config_path),
        },
        Command::Status(args) => status(config_path, args.json).await,
        Command::Token(args) => match args.command {
            None => print_token(config_path, args.account.as_deref()).await,
            Some(TokenCommand::Set {
                token,
                account,
                verify,
                force,
            }) => token_set(config_path, token, account.or(args.account), verify, force).await,
        },
        Command::Exec(args) => exec(config_path, args.account.as_deref(), &args.command).await,
        Command::Login(args) => login(config_path, args.account.as_deref()).await,
        Command::DashboardLink => dashboard_link(config_path).await,
        Command::Renew(args) => renew(config_path, args.account.as_deref(), args.all).await,
        Command::Reload => reload(config_path).await,
        Command::Calendar(args) => calendar::run(config_path, args.year, args.json).await,
        Command::Accounts { command } => accounts(config_path, command).await,
        Command::Feed { command } => feed::run(config_path, command).await,
        Command::Ticks { command } => ticks::run(config_path, command).await,
        Command::Apikey { command } => apikey(config_path, command).await,
        Command::Import(args) => import(config_path, &args.file, args.account.as_deref()).await,
        Command::Backup(args) => {
            let loaded = context::load_config(config_path)?;
            let dir = args
                .dir
                .or(loaded.config.store.backup_dir.clone())
                .ok_or_else(|| {
                    UsageError(
                        "no backup directory: pass --dir DIR or set [store] backup_dir".into(),
                    )
                })?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let key = context::master_key(&loaded)?;
            let store = context::open_store(&loaded, key.clone()).await?;
            let path =
                upkeep_store::backup_to_dir(store.as_ref(), &key, &dir, SystemClock.now()).await?;
            store.close().await;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore(args) => {
            let loaded = context::load_config(config_path)?;
            if !args.force && daemon_answers(&loaded.config).await {
                return Err(UsageError(format!(
                    "an upkeep daemon answers on {}: it keeps its tokens in memory and would not \
                     see the restored ones; stop it first (or pass --force and restart it after)",
                    loaded.config.server.listen
                ))
                .into());
            }
            let key = context::master_key(&loaded)?;
            let store = context::open_store(&loaded, key.clone()).await?;
            let stats = upkeep_store::restore_from_file(store.as_ref(), &key, &args.file)
                .await
                .with_context(|| format!("cannot restore from {}", args.file.display()))?;
            store.close().await;
            eprintln!(
                "restored {} account(s), {} token(s), {} secret(s) and {} audit event(s) from {}",
                stats.accounts,
                stats.tokens,
                stats.secrets,
                stats.events,
                args.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_token_arg(arg: Option<&str>) -> Result<AccessToken> {
    let text = match arg {
        Some(t) if t != "-" => t.to_owned(),
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("paste the access token, then press Enter and Ctrl-D:");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the token from stdin")?;
            s
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(UsageError("no token given".into()).into());
    }
    Ok(AccessToken::new(text))
}

fn decode(arg: &str, as_json: bool) -> Result<ExitCode> {
    let token = read_token_arg(Some(arg))?;
    let info = inspect(&token).map_err(|e| UsageError(format!("malformed token: {e}")))?;
    let now = SystemClock.now();
    let c = &info.claims;
    if as_json {
        let v = json!({
            "sub": c.sub,
            "jti": c.jti,
            "iss": c.iss,
            "iat": c.iat,
            "exp": c.exp,
            "issued_at": info.issued_at.map(format_ist),
            "expires_at": format_ist(info.expires_at),
            "kind": info.kind.as_str(),
            "plus_plan": c.is_plus_plan,
            "multi_client": c.is_multi_client,
            "expired": now >= info.expires_at,
            "mismatch": info.mismatch,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("user (sub)    {}", c.sub);
        if let Some(t) = info.issued_at {
            println!("issued at     {}", format_ist(t));
        }
        println!("expires at    {}", format_ist(info.expires_at));
        println!("kind          {}", info.kind.as_str());
        println!("plus plan     {}", c.is_plus_plan);
        println!("multi client  {}", c.is_multi_client);
        let left = info.expires_at.duration_since(now);
        if left.is_positive() {
            println!("time left     {}", format_duration(left));
        } else {
            println!("time left     expired");
        }
        if let Some(m) = &info.mismatch {
            println!("WARNING       {m}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn config_check(path: Option<&std::path::Path>) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let c = &loaded.config;
    println!(
        "config        {}",
        loaded
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none: defaults + environment)".into())
    );
    println!("listen        {}", c.server.listen);
    println!("public url    {}", c.server.public_url);
    println!("store         {}", c.store.redacted_url());
    println!("key file      {}", c.store.key_file.display());
    println!("upstox api    {}", c.upstox.api_url);
    println!(
        "window        {} - {} IST",
        c.renewal.window_start, c.renewal.deadline
    );
    for a in &c.accounts {
        let strategies: Vec<&str> = a.renew.iter().map(|s| s.as_str()).collect();
        println!(
            "account       {} ({}) renew = [{}]",
            a.id,
            a.env.as_str(),
            strategies.join(", ")
        );
    }
    if c.accounts.is_empty() {
        println!("account       (none configured: nothing to renew)");
    }
    for line in alert_lines(c) {
        println!("alerts        {line}");
    }
    for line in sink_lines(c) {
        println!("sinks         {line}");
    }
    let r = &c.relay;
    if r.enabled {
        println!(
            "relay         on: stall after {}, backoff {} to {}, {} upstream connections, ticks {}",
            upkeep_core::config::format_config_duration(r.stall_timeout),
            upkeep_core::config::format_config_duration(r.backoff_min),
            upkeep_core::config::format_config_duration(r.backoff_max),
            if r.max_connections == 0 {
                "plan's".to_owned()
            } else {
                format!("at most {}", r.max_connections)
            },
            if r.persist_ticks {
                "stored"
            } else {
                "not stored"
            },
        );
    } else {
        println!("relay         off");
    }
    let placeholders = c.placeholders();
    for p in &placeholders {
        println!("placeholder   {p}");
    }
    if !placeholders.is_empty() {
        return Err(UsageError(format!(
            "{} value(s) are still the placeholders of `upkeep config example` (listed above); \
             replace them with your own",
            placeholders.len()
        ))
        .into());
    }
    println!("OK");
    Ok(ExitCode::SUCCESS)
}

/// Where alerts go, one line per target (URL hosts only: webhook URLs carry tokens).
pub(crate) fn alert_lines(c: &upkeep_core::config::Config) -> Vec<String> {
    let mut out: Vec<String> = c
        .alert
        .webhook
        .iter()
        .map(|w| {
            let host = url::Url::parse(w.url.expose())
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            format!("webhook to {host} ({:?})", w.format).to_lowercase()
        })
        .collect();
    if let Some(e) = &c.alert.email {
        out.push(format!("email to {} via {}", e.to.join(", "), e.smtp_url));
    }
    if out.is_empty() {
        out.push(
            "none: nobody is told when a renewal fails (add [[alert.webhook]] or [alert.email])"
                .into(),
        );
    }
    out
}

/// The legacy files rewritten after each token change.
pub(crate) fn sink_lines(c: &upkeep_core::config::Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &c.sinks.json_file {
        out.push(format!("json file {}", p.display()));
    }
    if let Some(p) = &c.sinks.env_file {
        out.push(format!("env file {}", p.display()));
    }
    if out.is_empty() {
        out.push("none: bots read the token from `upkeep token` or the HTTP API".into());
    }
    out
}

/// Opens config, key, store, and builds an engine (supervisors not started).
async fn engine_for(loaded: &Loaded) -> Result<Engine> {
    // The machine's clock, or the simulator's with [upstox] follow_sim_clock (one read;
    // a one-shot command extrapolates from it at the simulator's speed).
    let (clock, _follower) = context::clock(&loaded.config).await?;
    let engine = Engine::new(context::engine_deps(loaded, clock, None).await?).await?;
    seed_initial_tokens(loaded, &engine).await;
    Ok(engine)
}

/// Tokens given in the configuration (`UPSTOX_ACCESS_TOKEN`, `access_token = ...`)
/// are imported when the store has no valid token for that account.
pub(crate) async fn seed_initial_tokens(loaded: &Loaded, engine: &Engine) {
    let now = engine.clock().now();
    for a in &loaded.config.accounts {
        let Some(token) = a.initial_token() else {
            continue;
        };
        if engine.current(&a.id).is_some_and(|c| c.is_valid_at(now)) {
            continue;
        }
        match engine
            .accept_token(&a.id, token.clone(), "config", Actor::Startup, false)
            .await
        {
            Ok(c) => {
                tracing::info!(account = %a.id, token_fp = %c.fingerprint, "imported the token from the configuration")
            }
            Err(e) => {
                tracing::warn!(account = %a.id, reason = %e, "the token from the configuration was not imported")
            }
        }
    }
}

/// The running daemon, if one answers with this configuration's local credential;
/// otherwise `None` after one line on stderr saying the store is read instead.
async fn ask_daemon(loaded: &Loaded) -> Result<Option<daemon::DaemonClient>> {
    Ok(daemon::find(&loaded.config).await?.or_say())
}

/// One account as `upkeep status --json` shows it, from what the daemon knows.
fn row_from_daemon(a: &serde_json::Value) -> serde_json::Value {
    let t = &a["token"];
    let check = &a["last_check"];
    let result = match a["api_validated"].as_bool() {
        Some(true) => "accepted",
        Some(false) => "refused",
        None => "inconclusive",
    };
    json!({
        "account": a["account"],
        "env": a["env"],
        "kind": t["kind"],
        "expires_at": t["expires_at"],
        "seconds_left": t["seconds_left"],
        "state": a["state"],
        "valid": a["valid"],
        "last_check": if check.is_null() { serde_json::Value::Null } else {
            json!({"at": check["at"], "result": result, "problem": check["problem"]})
        },
        "conditions": a["conditions"],
        "source": t["source"],
        "fingerprint": t["fingerprint"],
        "next_action": a["next_action"],
        "disabled_strategies": a["disabled_strategies"],
        "renewing": a["renewing"],
        "from": "daemon",
    })
}

/// The same, from the store (no daemon running): the audit log's last health-check
/// verdict and open conditions, the latches, and the plan computed now.
async fn rows_from_store(loaded: &Loaded) -> Result<Vec<serde_json::Value>> {
    let engine = engine_for(loaded).await?;
    let now = engine.clock().now();
    let thresholds = &engine.settings().thresholds;
    let mut rows = Vec::new();
    for a in &loaded.config.accounts {
        let t = engine.current(&a.id);
        let t = t.as_ref();
        let recorded = engine.recorded_view(&a.id).await;
        let refused = recorded.last_check.as_ref().is_some_and(|c| c.refused);
        let status = engine.status(&a.id).unwrap_or_default();
        let next = engine.plan_now(&a.id);
        rows.push(json!({
            "account": a.id,
            "env": a.env.as_str(),
            "kind": t.map(|t| t.kind.as_str()),
            "expires_at": t.map(|t| format_ist(t.expires_at)),
            "seconds_left": t.map(|t| t.expires_at.duration_since(now).as_secs().max(0)),
            "state": if refused { "refused" } else { t.map(|t| TokenState::at(t.expires_at, now, thresholds).as_str()).unwrap_or("missing") },
            "valid": t.is_some_and(|t| t.is_valid_at(now)) && !refused,
            "last_check": recorded.last_check.as_ref().map(|c| json!({
                "at": format_ist(c.at),
                "result": if c.refused { "refused" } else { "accepted" },
                "problem": c.problem,
            })),
            "conditions": recorded.conditions,
            "source": t.map(|t| t.source.clone()),
            "fingerprint": t.map(|t| t.fingerprint.clone()),
            "next_action": next.map(|p| json!({
                "action": p.action.as_str(),
                "at": format_ist(p.at),
                "deadline": p.deadline.map(format_ist),
                "reason": p.reason,
            })),
            "disabled_strategies": status.disabled,
            "renewing": false,
            "from": "store",
        }));
    }
    engine.store().close().await;
    Ok(rows)
}

async fn status(path: Option<&std::path::Path>, as_json: bool) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let daemon = ask_daemon(&loaded).await?;
    let rows: Vec<serde_json::Value> = match &daemon {
        Some(d) => d.get("/api/v1/accounts").await?["accounts"]
            .as_array()
            .map(|a| a.iter().map(row_from_daemon).collect())
            .unwrap_or_default(),
        None => rows_from_store(&loaded).await?,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let colour = output::colour_enabled();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    println!(
        "{:<12} {:<8} {:<9} {:<26} {:<12} STATE",
        "ACCOUNT", "ENV", "KIND", "EXPIRES (IST)", "LEFT"
    );
    for r in &rows {
        let left = r["seconds_left"]
            .as_i64()
            .filter(|s| *s > 0)
            .map(|s| format_duration(jiff::SignedDuration::from_secs(s)))
            .unwrap_or_else(|| "-".into());
        let state = match r["state"].as_str().unwrap_or_default() {
            "refused" => "REFUSED by Upstox".to_owned(),
            "missing" => "no token".to_owned(),
            "healthy" => output::state_label(TokenState::Healthy, colour),
            "warning" => output::state_label(TokenState::Warning, colour),
            "critical" => output::state_label(TokenState::Critical, colour),
            "expired" => output::state_label(TokenState::Expired, colour),
            other => other.to_owned(),
        };
        println!(
            "{:<12} {:<8} {:<9} {:<26} {:<12} {}",
            text(&r["account"]),
            text(&r["env"]),
            text(&r["kind"]),
            text(&r["expires_at"]),
            left,
            state
        );
    }
    if rows.is_empty() {
        println!("(no accounts configured)");
    }
    for r in &rows {
        let id = text(&r["account"]);
        let check = &r["last_check"];
        if !check.is_null() {
            let problem = check["problem"].as_str();
            match check["result"].as_str() {
                Some("refused") => println!(
                    "{id}: the health check at {} found the token refused by Upstox ({}); run `upkeep renew --account {id}`",
                    text(&check["at"]),
                    problem.unwrap_or("refused"),
                ),
                Some("accepted") => {
                    println!("{id}: last health check {}: accepted", text(&check["at"]))
                }
                _ => println!(
                    "{id}: last health check {}: {}",
                    text(&check["at"]),
                    problem.unwrap_or("inconclusive")
                ),
            }
        }
        if let Some(next) = r["next_action"].as_object() {
            println!(
                "{id}: next: {} at {} ({})",
                next.get("action").and_then(|v| v.as_str()).unwrap_or("-"),
                next.get("at").and_then(|v| v.as_str()).unwrap_or("-"),
                next.get("reason").and_then(|v| v.as_str()).unwrap_or(""),
            );
        }
        let disabled: Vec<&str> = r["disabled_strategies"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        if !disabled.is_empty() {
            println!(
                "{id}: disabled after a credential or configuration fault: {}; fix it, then `upkeep renew --account {id}`",
                disabled.join(", ")
            );
        }
        if let Some(conditions) = r["conditions"].as_object() {
            for (name, detail) in conditions {
                println!(
                    "{id}: condition {name}: {}",
                    detail.as_str().unwrap_or_default()
                );
            }
        }
    }
    match &daemon {
        Some(d) => println!("(as the daemon on {} sees it)", d.address()),
        None => println!("(from the store: no daemon running)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Why there is no valid token, with what to do, as one line.
fn no_valid_token(id: &str, why: String) -> anyhow::Error {
    anyhow::anyhow!("{why}; run `upkeep renew --account {id}` or `upkeep login --account {id}`")
}

async fn valid_token(loaded: &Loaded, account: Option<&str>) -> Result<AccessToken> {
    let id = context::pick_account(&loaded.config, account)?;
    if let Some(d) = ask_daemon(loaded).await? {
        return match d.get(&format!("/api/v1/accounts/{id}/token")).await {
            Ok(v) => v["access_token"]
                .as_str()
                .map(AccessToken::new)
                .ok_or_else(|| anyhow::anyhow!("the daemon's answer holds no access_token")),
            Err(e) => match daemon::api_error(&e) {
                Some(a) if a.status == 404 => Err(UsageError(format!(
                    "the running daemon has no account `{id}` (changed upkeep.toml? run `upkeep reload`)"
                ))
                .into()),
                Some(a) if a.status == 409 => {
                    let why = a.message.split("; a renewal is due").next().unwrap_or(&a.message);
                    Err(no_valid_token(&id, why.to_owned()))
                }
                _ => Err(e),
            },
        };
    }
    let engine = engine_for(loaded).await?;
    let now = engine.clock().now();
    let current = engine.current(&id);
    let recorded = engine.recorded_view(&id).await;
    engine.store().close().await;
    if let Some(check) = recorded.last_check.filter(|c| c.refused) {
        return Err(no_valid_token(
            &id,
            format!(
                "Upstox refused the token of account `{id}` at a health check at {} ({})",
                format_ist(check.at),
                check.problem.as_deref().unwrap_or("refused")
            ),
        ));
    }
    match current {
        Some(c) if c.is_valid_at(now) => Ok(c.token.clone()),
        Some(c) => Err(no_valid_token(
            &id,
            format!(
                "the token of account `{id}` expired at {}",
                format_ist(c.expires_at)
            ),
        )),
        None => bail!(
            "account `{id}` has no token yet; run `upkeep renew --account {id}` or import one with `upkeep token set`"
        ),
    }
}

async fn print_token(path: Option<&std::path::Path>, account: Option<&str>) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let token = valid_token(&loaded, account).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(token.expose().as_bytes())?;
    out.write_all(b"\n")?;
    Ok(ExitCode::SUCCESS)
}

async fn token_set(
    path: Option<&std::path::Path>,
    token: Option<String>,
    account: Option<String>,
    verify: bool,
    force: bool,
) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let id = context::pick_account(&loaded.config, account.as_deref())?;
    let token = read_token_arg(token.as_deref())?;
    // Malformed input is a usage error (exit 2) before anything is opened.
    let info = inspect(&token).map_err(|e| UsageError(format!("malformed token: {e}")))?;
    // A sandbox token only works on the sandbox APIs: in a live account every bot would
    // get 401s (and the other way round).
    let sandbox_token = info.kind == upkeep_core::expiry::TokenKind::Sandbox;
    let sandbox_account = loaded
        .config
        .account(&id)
        .is_some_and(|a| a.env == upkeep_core::config::UpstoxEnv::Sandbox);
    if sandbox_token != sandbox_account && !force {
        return Err(UsageError(format!(
            "this is a {} token and account `{id}` is {}; store it in an account with env = \
             \"{}\" (or pass --force)",
            if sandbox_token { "sandbox" } else { "live" },
            if sandbox_account { "sandbox" } else { "live" },
            if sandbox_token { "sandbox" } else { "live" },
        ))
        .into());
    }
    let engine = engine_for(&loaded).await?;
    let result = engine
        .accept_token(&id, token, "import", Actor::Cli, verify)
        .await;
    engine.store().close().await;
    match result {
        Ok(c) => {
            eprintln!(
                "stored a {} token for account `{id}` (user {}), valid until {} (fingerprint {})",
                c.kind.as_str(),
                info.claims.sub,
                format_ist(c.expires_at),
                c.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => Err(UsageError(format!("token not stored: {reason}")).into()),
    }
}

async fn exec(
    path: Option<&std::path::Path>,
    account: Option<&str>,
    command: &[String],
) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let token = valid_token(&loaded, account).await?;
    let Some((program, args)) = command.split_first() else {
        return Err(UsageError("no command given: upkeep exec -- CMD [ARGS...]".into()).into());
    };
    let status = std::process::Command::new(program)
        .args(args)
        .env("UPSTOX_ACCESS_TOKEN", token.expose())
        .status()
        .map_err(|e| UsageError(format!("cannot run `{program}`: {e}")))?;
    drop(token);
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

async fn dashboard_link(path: Option<&std::path::Path>) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let engine = engine_for(&loaded).await?;
    let link = engine.dashboard_link();
    engine.store().close().await;
    println!("{link}");
    eprintln!(
        "Open this link in a browser to sign in to the dashboard of the daemon at {}; it works once, for 10 minutes.",
        loaded.config.server.public_url
    );
    Ok(ExitCode::SUCCESS)
}

async fn login(path: Option<&std::path::Path>, account: Option<&str>) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let id = context::pick_account(&loaded.config, account)?;
    let engine = engine_for(&loaded).await?;
    let link = engine
        .login_link(&id)
        .ok_or_else(|| UsageError(format!("no account `{id}`")))?;
    engine.store().close().await;
    println!("{link}");
    eprintln!(
        "Open this link (it works from a phone too) and log in with Upstox; `upkeep serve` must be running to receive the callback at {}/auth/upstox/callback. The link works once, for 30 minutes.",
        loaded.config.server.public_url
    );
    if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        let _ = std::process::Command::new("xdg-open")
            .arg(&link)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    Ok(ExitCode::SUCCESS)
}

async fn renew(
    path: Option<&std::path::Path>,
    account: Option<&str>,
    all: bool,
) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let ids: Vec<String> = if all {
        loaded
            .config
            .accounts
            .iter()
            .map(|a| a.id.clone())
            .collect()
    } else {
        vec![context::pick_account(&loaded.config, account)?]
    };
    if let Some(d) = ask_daemon(&loaded).await? {
        return renew_via_daemon(&d, &ids).await;
    }
    let engine = engine_for(&loaded).await?;
    let mut failed = false;
    for id in ids {
        let started: Timestamp = engine.clock().now();
        let spinner = spinner(format!("renewing {id}"));
        let outcome = engine.renew_now(&id, Actor::Cli).await;
        spinner.abort();
        let secs = engine.clock().now().duration_since(started).as_secs();
        eprint!("\r\x1b[K");
        match outcome {
            RenewOutcome::Renewed {
                strategy,
                fingerprint,
            } => {
                let until = engine
                    .current(&id)
                    .map(|c| format_ist(c.expires_at))
                    .unwrap_or_default();
                eprintln!(
                    "{id}: renewed with {strategy} in {secs}s (fingerprint {fingerprint}), valid until {until}"
                );
            }
            RenewOutcome::Busy => {
                failed = true;
                eprintln!("{id}: another upkeep process is renewing this account right now");
            }
            RenewOutcome::Failed { reason } => {
                failed = true;
                eprintln!("{id}: renewal failed: {reason}");
                eprintln!("{id}: log in by hand with `upkeep login --account {id}`");
            }
            other => {
                failed = true;
                eprintln!("{id}: {other:?}");
            }
        }
    }
    engine.store().close().await;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `upkeep renew` with a daemon running: the daemon renews (sharing the flight with its
/// own triggers and re-enabling strategies a fault stopped) and answers with the outcome.
async fn renew_via_daemon(d: &daemon::DaemonClient, ids: &[String]) -> Result<ExitCode> {
    let mut failed = false;
    for id in ids {
        let spinner = spinner(format!("the daemon on {} is renewing {id}", d.address()));
        let result = d.post(&format!("/api/v1/accounts/{id}/renew")).await;
        spinner.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
        match result {
            Ok(v) if v["status"] == "renewed" => {
                let until = d
                    .get(&format!("/api/v1/accounts/{id}"))
                    .await
                    .ok()
                    .and_then(|a| a["token"]["expires_at"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                eprintln!(
                    "{id}: renewed by the daemon with {} (fingerprint {}), valid until {until}",
                    v["strategy"].as_str().unwrap_or("?"),
                    v["fingerprint"].as_str().unwrap_or("?"),
                );
            }
            Ok(v) => eprintln!("{id}: {}", v["status"].as_str().unwrap_or("done")),
            Err(e) => {
                failed = true;
                match daemon::api_error(&e) {
                    Some(a) if a.status == 404 => eprintln!(
                        "{id}: the running daemon has no such account (changed upkeep.toml? run `upkeep reload`)"
                    ),
                    Some(a) if a.status == 409 => eprintln!("{id}: {}", a.message),
                    Some(a) => {
                        eprintln!("{id}: renewal failed: {}", a.message);
                        eprintln!("{id}: log in by hand with `upkeep login --account {id}`");
                    }
                    None => return Err(e),
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `upkeep reload`: the running daemon re-reads its configuration.
async fn reload(path: Option<&std::path::Path>) -> Result<ExitCode> {
    // An invalid file would be refused by the daemon too: say why, exit 1, leave it be.
    let loaded = context::load_config(path).map_err(|e| {
        anyhow::anyhow!("{e:#}; not reloaded: the daemon keeps its running configuration")
    })?;
    let found = daemon::find(&loaded.config).await?;
    let d = match found {
        daemon::Found::Running(d) => d,
        daemon::Found::NotRunning(why) => bail!("{why}: nothing to reload"),
    };
    match d.post("/api/v1/reload").await {
        Ok(v) => {
            let list = |k: &str| {
                let ids: Vec<&str> = v[k]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            };
            eprintln!(
                "the daemon on {} reloaded its configuration: added {}, removed {}, changed {}",
                d.address(),
                list("added"),
                list("removed"),
                list("changed")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match daemon::api_error(&e) {
            Some(a) => bail!(
                "not reloaded: {}; the daemon keeps its running configuration",
                a.message
            ),
            None => Err(e),
        },
    }
}

/// A progress indicator on stderr (only on a terminal).
fn spinner(label: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let frames = ['|', '/', '-', '\\'];
        let started = tokio::time::Instant::now();
        for i in 0usize.. {
            eprint!(
                "\r{} {label}... {}s",
                frames[i % frames.len()],
                started.elapsed().as_secs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        }
    })
}

async fn accounts(path: Option<&std::path::Path>, command: AccountsCommand) -> Result<ExitCode> {
    let loaded = context::load_config(path)?;
    let key = context::master_key(&loaded)?;
    let store = context::open_store(&loaded, key).await?;
    let now = SystemClock.now();
    let result = match command {
        AccountsCommand::List { json: as_json } => {
            let stored = store.list_accounts().await?;
            let mut rows = Vec::new();
            for a in &loaded.config.accounts {
                rows.push(json!({"id": a.id, "env": a.env.as_str(), "configured": true, "in_store": stored.iter().any(|s| s.id == a.id),
                    "renew": a.renew.iter().map(|s| s.as_str()).collect::<Vec<_>>()}));
            }
            for s in &stored {
                if loaded.config.account(&s.id).is_none() {
                    rows.push(json!({"id": s.id, "env": s.env, "configured": false, "in_store": true, "renew": []}));
                }
            }
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let file = loaded
                    .path
                    .as_ref()
                    .map_or_else(|| "the environment".to_owned(), |p| p.display().to_string());
                for r in &rows {
                    let id = r["id"].as_str().unwrap_or("");
                    let configured = r["configured"].as_bool() == Some(true);
                    let stored = r["in_store"].as_bool() == Some(true);
                    let renew: Vec<&str> = r["renew"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                        .unwrap_or_default();
                    let words = match (configured, stored) {
                        (true, true) => format!(
                            "configured in {file}, renewed by {}; its tokens are in the store",
                            renew.join(", ")
                        ),
                        (true, false) => format!(
                            "configured in {file}, renewed by {}; no token stored yet",
                            renew.join(", ")
                        ),
                        _ => format!(
                            "only in the store (not in {file}, so nothing renews it); \
                             `upkeep accounts remove {id} --yes` deletes it"
                        ),
                    };
                    println!("{id:<12} {:<8} {words}", r["env"].as_str().unwrap_or(""));
                }
                if rows.is_empty() {
                    println!("(no accounts)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Add { id, env } => {
            if !matches!(env.as_str(), "live" | "sandbox") {
                return Err(
                    UsageError(format!("--env must be live or sandbox, not `{env}`")).into(),
                );
            }
            if id.trim().is_empty()
                || id
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Err(UsageError("account ids use letters, digits, - and _".into()).into());
            }
            store.upsert_account(&id, &env, now).await?;
            eprintln!(
                "account `{id}` ({env}) is in the store; configure its strategies under [[account]] in upkeep.toml"
            );
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::ResetStrategy { account, strategy } => {
            let id = context::pick_account(&loaded.config, account.as_deref())?;
            let kinds: Vec<upkeep_core::config::Strategy> = match strategy.as_deref() {
                Some(name) => vec![
                    name.parse::<upkeep_core::config::Strategy>()
                        .map_err(UsageError)?,
                ],
                None => upkeep_core::config::Strategy::ALL.to_vec(),
            };
            let mut cleared = Vec::new();
            for kind in kinds {
                if store
                    .delete_secret(&id, &upkeep_server::engine::latch_name(kind))
                    .await?
                {
                    cleared.push(kind.as_str());
                }
            }
            if cleared.is_empty() {
                eprintln!("account `{id}`: no strategy was stopped");
            } else {
                eprintln!(
                    "account `{id}`: re-enabled {} (a running daemon notices within its poll interval)",
                    cleared.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Remove { id, yes } => {
            if !yes {
                store.close().await;
                return Err(UsageError(format!(
                    "this deletes account `{id}`'s tokens and secrets{}; run again with --yes to do it",
                    if loaded.config.account(&id).is_some() {
                        " (it is still configured: a running daemon would lose its token)"
                    } else {
                        ""
                    }
                ))
                .into());
            }
            if store.remove_account(&id).await? {
                eprintln!("removed account `{id}` and its tokens (audit events are kept)");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(UsageError(format!("no account `{id}` in the store")).into())
            }
        }
    };
    store.close().await;
    result
}

async fn import(
    path: Option<&std::path::Path>,
    file: &std::path::Path,
    account: Option<&str>,
) -> Result<ExitCode> {
    use upkeep_core::config::import;
    let loaded = context::load_config(path)?;
    let text = read_small_file(file, IMPORT_MAX_BYTES)?;
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let (token, snippet) = if is_json {
        let t = import::tokens_json(&text).map_err(|e| UsageError(e.to_string()))?;
        (Some(t.access_token), None)
    } else {
        let a = import::streamlit_secrets(&text).map_err(|e| UsageError(e.to_string()))?;
        let token = a.access_token.clone();
        let id = account.unwrap_or("main").to_owned();
        (token, Some(account_snippet(&a.into_account(&id))))
    };
    if let Some(snippet) = snippet {
        println!("{snippet}");
        eprintln!(
            "append the [[account]] block above to your upkeep.toml (it holds secrets: keep the file 0600)"
        );
    }
    if let Some(token) = token {
        let id = context::pick_account(&loaded.config, account)?;
        let engine = engine_for(&loaded).await?;
        let result = engine
            .accept_token(&id, token, "import", Actor::Cli, false)
            .await;
        engine.store().close().await;
        match result {
            Ok(c) => eprintln!(
                "stored the {} token from {} for account `{id}`, valid until {}",
                c.kind.as_str(),
                file.display(),
                format_ist(c.expires_at)
            ),
            Err(reason) => eprintln!("the token in {} was not stored: {reason}", file.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether something answers `GET /healthz` like an upkeep daemon on the configured
/// listen address (a short timeout: no daemon is the usual case).
async fn daemon_answers(config: &upkeep_core::config::Config) -> bool {
    let url = format!("http://{}/healthz", config.server.listen);
    let Ok(client) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    match client.get(url).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// The largest file `upkeep import` reads (the legacy files are a few hundred bytes).
const IMPORT_MAX_BYTES: u64 = 1024 * 1024;

/// Reads a text file of at most `max` bytes; a bigger one (or an endless one, like
/// `/dev/zero`) is refused after reading `max + 1` bytes, not loaded whole.
fn read_small_file(file: &std::path::Path, max: u64) -> Result<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    if bytes.len() as u64 > max {
        return Err(UsageError(format!(
            "{} is larger than {} KiB; that is not a token file or secrets.toml",
            file.display(),
            max / 1024
        ))
        .into());
    }
    String::from_utf8(bytes)
        .map_err(|_| UsageError(format!("{} is not UTF-8 text", file.display())).into())
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An `[[account]]` block for upkeep.toml (the user asked for it: secrets included).
fn account_snippet(a: &upkeep_core::config::AccountConfig) -> String {
    let mut s = String::from("[[account]]\n");
    s.push_str(&format!("id = {}\n", toml_str(&a.id)));
    s.push_str(&format!("env = {}\n", toml_str(a.env.as_str())));
    if let Some(v) = &a.client_id {
        s.push_str(&format!("client_id = {}\n", toml_str(v)));
    }
    if let Some(v) = &a.client_secret {
        s.push_str(&format!("client_secret = {}\n", toml_str(v.expose())));
    }
    if let Some(v) = &a.redirect_uri {
        s.push_str(&format!("redirect_uri = {}\n", toml_str(v)));
    }
    let renew: Vec<String> = a.renew.iter().map(|r| toml_str(r.as_str())).collect();
    s.push_str(&format!("renew = [{}]\n", renew.join(", ")));
    if let Some(t) = &a.totp {
        s.push_str("[account.totp]\n");
        s.push_str(&format!("mobile = {}\n", toml_str(&t.mobile)));
        s.push_str(&format!("pin = {}\n", toml_str(t.pin.expose())));
        s.push_str(&format!("secret = {}\n", toml_str(t.secret.expose())));
    }
    s
}

async fn apikey(path: Option<&std::path::Path>, command: ApikeyCommand) -> Result<ExitCode> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let loaded = context::load_config(path)?;
    let key = context::master_key(&loaded)?;
    let store = context::open_store(&loaded, key).await?;
    let now = SystemClock.now();
    let result = match command {
        ApikeyCommand::Create { name, scope } => {
            if name.trim().is_empty() || name.len() > 64 {
                return Err(UsageError("--name must be 1 to 64 characters".into()).into());
            }
            if name == upkeep_server::api::keys::LOCAL_KEY_NAME {
                return Err(UsageError(format!(
                    "`{name}` names the daemon's local credential; choose another name"
                ))
                .into());
            }
            // 256 random bits: a fast digest is the right check for keys like these.
            let raw: [u8; 32] = rand::random();
            let secret = upkeep_core::Secret::new(format!(
                "upk_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
            ));
            let digest: [u8; 32] = sha2::Sha256::digest(secret.expose().as_bytes()).into();
            store
                .create_api_key(&name, &digest, &scope, now)
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            println!("{}", secret.expose());
            eprintln!(
                "created API key `{name}` with scope {scope}; it is shown only now (use it as `Authorization: Bearer <key>`)"
            );
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCommand::List { json: as_json } => {
            let keys = store.api_keys().await?;
            if as_json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"name": k.name, "scope": k.scope, "created_at": format_ist(k.created_at),
                               "revoked_at": k.revoked_at.map(format_ist)})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in &keys {
                    println!(
                        "{:<20} {:<12} created {}{}",
                        k.name,
                        k.scope,
                        format_ist(k.created_at),
                        k.revoked_at
                            .map(|t| format!(", revoked {}", format_ist(t)))
                            .unwrap_or_default()
                    );
                }
                if keys.is_empty() {
                    println!("(no API keys)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCommand::Revoke { name } => {
            if store.revoke_api_key(&name, now).await? {
                eprintln!("revoked API key `{name}`");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(UsageError(format!("no live API key named `{name}`")).into())
            }
        }
    };
    store.close().await;
    result
}
