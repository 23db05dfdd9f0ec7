//! Command-line interface (clap). Kept free of logic: every command is a function in
//! `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Upstox access tokens die every day at 03:30 IST. upkeep renews them after the rollover
and before the market opens, stores them encrypted, and hands them to your bots.

Quick start:
  upkeep keygen                      create the master key (upkeep.key, mode 0600)
  upkeep config check                validate upkeep.toml (or $UPKEEP_CONFIG)
  upkeep token set < token.txt       import a token you already have
  upkeep status                      how long each account's token has left
  upkeep serve                       run the daemon (renewals, webhook, OAuth callback)
  upkeep exec -- python bot.py       run a bot with UPSTOX_ACCESS_TOKEN set
  upkeep demo                        see it all work against the built-in simulator

Exit codes: 0 ok, 1 failure, 2 bad input (malformed token, bad config, bad arguments).";

const SIM_HELP: &str = "\
One listener serves the Upstox REST, order, login-service and feed paths, so every
[upstox] url of upkeep (and the official SDK's host/order_host) can point at it.
Tokens follow the 03:30 IST rule on the simulator's own clock.

Control API (JSON in and out):
  GET  /sim/clock                          now, now_ist, speed, next_rollover
  POST /sim/clock                          {\"set\": RFC3339} | {\"jump_to_ist\": \"2026-11-24T03:29:50\"}
                                           | {\"advance_secs\": N} | {\"speed\": F}
  POST /sim/users, /sim/apps               add a user (ucc, mobile, pin, totp_secret, plan) / an app
  POST /sim/users/{ucc}/unlock             clear a lockout after wrong TOTP/PIN entries
  POST /sim/tokens                         {\"ucc\", \"kind\": daily|extended|sandbox} -> {access_token}
  POST /sim/tokens/revoke                  {\"access_token\"}
  GET  /sim/token-requests                 pending v3 access-token requests
  POST /sim/token-requests/{client_id}/approve|reject
                                           approve POSTs the token to the app's notifier URL
  POST /sim/refresh-tokens                 {\"client_id\"} -> refresh token for POST /sim/oauth2/token
  GET  /sim/faults, POST /sim/faults       {\"latency_ms\", \"error_rate\", \"login_down\",
                                           \"login_blocked\", \"feed_drop\", \"feed_quiet\",
                                           \"feed_stall\", \"expired_codes\", \"calendar_down\"}
  GET  /sim/state, GET /sim/credentials    counters, users, apps / demo credentials

Market calendar (Upstox paths): GET /v2/market/holidays, /v2/market/holidays/{date},
/v2/market/timings/{date}, /v2/market/status/{exchange}; [[market_calendar]] entries in
the --sim-config file, a default calendar for the clock's year and the next otherwise.

Full reference: crates/upkeep-sim/README.md";

#[derive(Debug, Parser)]
#[command(
    name = "upkeep",
    version,
    about = "Keeps Upstox access tokens alive and hands them to every bot that needs them",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Configuration file. Default: $UPKEEP_CONFIG, then ./upkeep.toml (optional:
    /// without it upkeep runs on defaults and UPSTOX_* environment variables).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace). Logs go to stderr and never contain tokens.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: scheduled renewals, health checks, alerts, the notifier webhook
    /// (POST /webhooks/upstox/token), the OAuth callback, the HTTP API, the Upstox gateway
    /// (/upstox/...) and /healthz. SIGHUP re-reads
    /// the configuration (`upkeep reload`); SIGTERM stops it.
    Serve(ServeArgs),
    /// Start the simulator and the daemon together, jump the simulated clock over the
    /// 03:30 IST rollover and watch the token get renewed. Needs no Upstox account.
    Demo(DemoArgs),
    /// Run the Upstox simulator (a faithful local Upstox for testing bots offline).
    #[command(after_help = SIM_HELP)]
    Sim(SimArgs),
    /// Show each account's token: environment, kind, expiry (IST), time left, state, last
    /// health check, conditions, disabled strategies, next action. Asks the running
    /// daemon (no key needed on its host); without one, reads the store and says so.
    Status(StatusArgs),
    /// Print a valid access token for scripts (exit 1 with the reason if none is valid or
    /// Upstox refused it), or import one. Asks the running daemon, else reads the store.
    Token(TokenArgs),
    /// Decode an access token's claims (no signature check) and its real expiry.
    Decode(DecodeArgs),
    /// Print (and on a desktop open) the Upstox login link for the browser OAuth flow.
    Login(AccountArg),
    /// Print a single-use link (10 minutes) that signs a browser into the running
    /// daemon's dashboard, with no key to paste.
    DashboardLink,
    /// Force a renewal now and wait for its outcome. The running daemon does it
    /// (re-enabling strategies a credential or configuration fault stopped); with no
    /// daemon, this process renews with the non-interactive strategies.
    Renew(RenewArgs),
    /// Make the running daemon re-read its configuration (accounts, strategies, alerts,
    /// token files) without a restart, like SIGHUP. An invalid configuration is refused
    /// (exit 1 with the reason) and the daemon keeps the running one.
    Reload,
    /// Print the trading days and special sessions the plan renews by for a year: the
    /// days the calendar lists (holidays, settlement holidays, special sessions) and the
    /// `[renewal] holidays`, judged for `[renewal] exchanges`, and where the calendar
    /// came from (upstox, the stored copy, or the weekdays fallback).
    Calendar(CalendarArgs),
    /// List, add or remove accounts in the store.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Create, list or revoke API keys (for the daemon's HTTP endpoints that need one).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Create the master key file (mode 0600) that encrypts the store.
    Keygen(KeygenArgs),
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a command with UPSTOX_ACCESS_TOKEN set to a valid token (like aws-vault exec).
    Exec(ExecArgs),
    /// Import what earlier scripts left behind: a `data/upstox_tokens.json` (its token is
    /// stored) or a `.streamlit/secrets.toml` with an `[upstox]` table (its token is
    /// stored and an `[[account]]` block for upkeep.toml is printed).
    Import(ImportArgs),
    /// Write an encrypted backup of the store.
    Backup(BackupArgs),
    /// Restore the store from an encrypted backup (replaces its contents).
    Restore(RestoreArgs),
    /// The running daemon's market-data relay.
    Feed {
        #[command(subcommand)]
        command: FeedCommand,
    },
    /// Market-data ticks the relay stored (`[relay] persist_ticks = true`).
    Ticks {
        #[command(subcommand)]
        command: TicksCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Print live ticks of the given instruments through the running daemon's relay
    /// (`/ws/ticks`): time of the last trade (IST), instrument, last price, quantity and
    /// change from the previous close. Ctrl-C stops.
    Watch {
        /// Instrument keys, e.g. "NSE_EQ|INE669E01016" "NSE_INDEX|Nifty 50".
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Subscription mode: ltpc, full, option_greeks or full_d30.
        #[arg(long, default_value = "ltpc", value_name = "MODE")]
        mode: String,
        /// Account whose feed to use (default: the first live account).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TicksCommand {
    /// Print stored ticks as CSV, oldest first: instrument, ltt (IST, milliseconds),
    /// ltp, ltq, volume, oi, best bid/ask price and quantity (empty when the mode had
    /// none). Times: RFC 3339 (2026-02-10T09:15:00+05:30), or an IST date-time
    /// (2026-02-10T09:15) or date (2026-02-10).
    Export {
        /// First last-trade time included.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// Last-trade times before this (not included).
        #[arg(long, value_name = "TIME")]
        to: String,
        /// Only this instrument key, e.g. "NSE_EQ|INE669E01016".
        #[arg(long, value_name = "KEY")]
        instrument: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address; overrides [server] listen (default 127.0.0.1:7878).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Run on the clock of the `upkeep sim` at [upstox] api_url instead of the
    /// machine's (as [upstox] follow_sim_clock = true): watch a staged rollover.
    #[arg(long)]
    pub follow_sim_clock: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the simulator and the daemon running after the story (daemon on
    /// 127.0.0.1:7878 or the next free port) and print a `dashboard: <URL>` line that
    /// opens the dashboard already signed in, its feed card showing live ticks through
    /// the relay (a demo consumer subscribes 4 instruments); Ctrl-C stops.
    #[arg(long, alias = "keep-running")]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on. Every Upstox host (api, order, login service, feed) is
    /// served on this one listener.
    #[arg(long, default_value = "127.0.0.1:7879", value_name = "ADDR")]
    pub listen: String,
    /// Simulator config (TOML or JSON: users, apps, auto-approve, tick rate, code
    /// lifetime, OTP limit, token-endpoint limit, revoke_previous_tokens, feed snapshot
    /// type, market holidays; see crates/upkeep-sim/README.md). Without it one demo
    /// user and app are created.
    #[arg(long = "sim-config", value_name = "FILE")]
    pub sim_config: Option<PathBuf>,
    /// Redirect URI of the demo app (default http://127.0.0.1:8400/oauth/callback). To
    /// drive `upkeep serve` against the simulator use its callback,
    /// e.g. http://127.0.0.1:7878/auth/upstox/callback.
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
    /// Notifier webhook of the demo app (where approved access-token requests are
    /// POSTed), e.g. http://127.0.0.1:7878/webhooks/upstox/token.
    #[arg(long, value_name = "URL")]
    pub notifier_url: Option<String>,
    /// Write the demo credentials as JSON (ucc, mobile, pin, totp_secret, client_id,
    /// client_secret, redirect_uri, plan, base_url) so a script can configure upkeep.
    #[arg(long, value_name = "FILE")]
    pub credentials_out: Option<PathBuf>,
    /// A new daily token revokes the user's older ones (Upstox publishes neither way;
    /// overrides revoke_previous_tokens of --sim-config).
    #[arg(long)]
    pub revoke_previous_tokens: bool,
}

#[derive(Debug, Args)]
pub struct CalendarArgs {
    /// The year (default: the current one, IST). Upstox publishes its current year only;
    /// other years come from the store or the weekdays.
    #[arg(long, value_name = "YEAR")]
    pub year: Option<i16>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AccountArg {
    /// Account id (default: the first configured account).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TokenArgs {
    /// Account id (default: the first configured account).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    #[command(subcommand)]
    pub command: Option<TokenCommand>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Import a token you already have (pasted, sandbox or extended). Reads stdin when
    /// TOKEN is omitted or `-`, so it never has to appear in your shell history.
    Set {
        /// The token, or `-` for stdin.
        token: Option<String>,
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Also check it with Upstox (a profile call) before storing it.
        #[arg(long)]
        verify: bool,
        /// Store a sandbox token in a live account (or a live token in a sandbox one).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The access token (or `-` to read stdin).
    pub token: String,
    /// JSON output: sub, iat, exp, expires_at (RFC 3339, +05:30), kind, plus_plan, multi_client.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Account id (default: the first configured account).
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub account: Option<String>,
    /// Renew every configured account.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Accounts in the configuration and in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add an account to the store (configure its strategies in upkeep.toml).
    Add {
        id: String,
        /// live or sandbox
        #[arg(long, default_value = "live")]
        env: String,
    },
    /// Remove an account and its tokens from the store (audit events stay).
    Remove {
        id: String,
        /// Really remove it (its tokens and secrets are deleted; audit events stay).
        #[arg(long)]
        yes: bool,
    },
    /// Re-enable strategies stopped by a credential or configuration fault (a wrong PIN
    /// or TOTP, a bad client secret). upkeep never retries those by itself, also not
    /// after a restart; fix the cause first. A running daemon notices within a poll.
    ResetStrategy {
        /// The account (default: the default account).
        #[arg(long)]
        account: Option<String>,
        /// Only this strategy (totp, token_request, oauth, refresh_token).
        #[arg(long)]
        strategy: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (default: [store] key_file, i.e. upkeep.key).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print a summary (no secrets).
    Check,
    /// Print a commented example configuration.
    Example,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Directory for the backup (default: [store] backup_dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file written by `upkeep backup`.
    pub file: PathBuf,
    /// Restore even though a daemon answers on the configured address (it keeps its
    /// tokens in memory and will not see the restored ones until restarted).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// `upstox_tokens.json` or `secrets.toml`.
    pub file: PathBuf,
    /// Account to store the token under (default: the first configured account).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key. The key alone goes to stdout (capture it: it is shown once), the
    /// details to stderr. Only its SHA-256 digest is stored.
    Create {
        /// A name to tell keys apart (never reused).
        #[arg(long)]
        name: String,
        /// admin (everything), status:read (status and metrics) or token:read (the
        /// token, the gateway and the feed relay).
        #[arg(long, value_parser = ["admin", "status:read", "token:read"])]
        scope: String,
    },
    /// List keys (names, scopes, dates; never the keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name.
    Revoke { name: String },
}
