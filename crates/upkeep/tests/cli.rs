#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup should panic loudly
//! The `upkeep` binary as users and scripts call it: real SQLite files in temp dirs,
//! real key files, exit codes and output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use jiff::{SignedDuration, Timestamp};
use predicates::prelude::*;
use upkeep_core::testing;

/// The CLI runs on the system clock, so fixture tokens are made relative to it.
#[allow(clippy::disallowed_methods)]
fn real_now() -> Timestamp {
    Timestamp::now()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(
            env.path("upkeep.toml"),
            format!(
                r#"
[store]
url = "sqlite://{db}"
key_file = "{key}"

[sinks]
json_file = "{json}"
env_file = "{dotenv}"

[[account]]
id = "main"
env = "live"
renew = ["static"]

[[account]]
id = "paper"
env = "sandbox"
renew = ["static"]
"#,
                db = env.path("upkeep.db").display(),
                key = env.path("upkeep.key").display(),
                json = env.path("upstox_tokens.json").display(),
                dotenv = env.path(".env").display(),
            ),
        )
        .unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        self.cmd_with(&self.path("upkeep.toml"))
    }

    fn cmd_with(&self, config: &Path) -> Command {
        let mut c = Command::cargo_bin("upkeep").unwrap();
        c.current_dir(self.dir.path())
            .arg("--config")
            .arg(config)
            .env_remove("UPKEEP_CONFIG")
            .env_remove("UPKEEP_MASTER_KEY")
            .env_remove("UPSTOX_ACCESS_TOKEN")
            .env("NO_COLOR", "1");
        c
    }
}

fn daily_token_valid_now(sub: &str) -> String {
    // Issued a minute ago: valid until the next 03:30 IST (at least a minute away
    // unless the test runs at 03:29 IST, in which case use an extended token).
    let issued = real_now() - SignedDuration::from_mins(1);
    let t = testing::daily_token(sub, issued);
    let info = upkeep_core::expiry::inspect(&t).unwrap();
    if info.expires_at.duration_since(real_now()) < SignedDuration::from_mins(5) {
        return testing::extended_token(sub, issued).expose().to_owned();
    }
    t.expose().to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn decode_json_reports_the_real_expiry_of_the_supplied_tokens() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["decode", "--json", testing::token_a().expose()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sub"], "2ZCDQ9");
    assert_eq!(v["exp"], 1770328800);
    assert_eq!(v["iat"], 1770250767);
    assert_eq!(v["expires_at"], "2026-02-06T03:30:00+05:30");
    assert_eq!(v["kind"], "daily");
    assert_eq!(v["plus_plan"], true);
    assert_eq!(v["multi_client"], false);

    let out = env
        .cmd()
        .args(["decode", "--json", testing::token_b().expose()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["expires_at"], "2026-03-02T03:30:00+05:30");
    assert_eq!(v["kind"], "sandbox");
}

#[test]
fn decode_of_a_malformed_token_exits_2_with_one_line() {
    let env = Env::new();
    for bad in ["not-a-token", "a.b", "eyJ.@@@.sig", "a.e30.c"] {
        let out = env.cmd().args(["decode", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{bad}: {err}");
        assert!(err.contains("malformed token"), "{err}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn keygen_writes_a_0600_key_and_refuses_to_overwrite_it() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    let key = env.path("upkeep.key");
    assert_eq!(mode(&key), 0o600);
    let before = std::fs::read(&key).unwrap();
    env.cmd().arg("keygen").assert().failure();
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key must not change"
    );
}

#[test]
fn config_check_names_the_broken_key() {
    let env = Env::new();
    std::fs::write(
        env.path("bad.toml"),
        "[[account]]\nid = \"main\"\nrenew = [\"totpp\"]\n",
    )
    .unwrap();
    let out = env
        .cmd_with(&env.path("bad.toml"))
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("renew"), "{err}");
    assert!(err.contains("totpp"), "{err}");

    env.cmd()
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains("account       main (live)"));
}

#[test]
fn imported_token_is_served_to_scripts_and_written_for_legacy_bots() {
    let env = Env::new();
    let token = daily_token_valid_now("2ZCDQ9");
    env.cmd()
        .args(["token", "set", "-"])
        .write_stdin(format!("{token}\n"))
        .assert()
        .success();

    // `upkeep token` prints exactly the token.
    env.cmd()
        .arg("token")
        .assert()
        .success()
        .stdout(format!("{token}\n"));

    // `exec` hands it to a child process.
    env.cmd()
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "printf %s \"$UPSTOX_ACCESS_TOKEN\"",
        ])
        .assert()
        .success()
        .stdout(token.clone());

    // Legacy files: 0600, contain the token.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("upstox_tokens.json")).unwrap()).unwrap();
    assert_eq!(json["access_token"], token.as_str());
    assert!(json["expires_at"].as_str().unwrap().ends_with("+05:30"));
    assert_eq!(mode(&env.path("upstox_tokens.json")), 0o600);
    let dotenv = std::fs::read_to_string(env.path(".env")).unwrap();
    assert!(dotenv.contains(&format!("UPSTOX_ACCESS_TOKEN={token}")));
    assert_eq!(mode(&env.path(".env")), 0o600);

    // The database never holds the token in plain text.
    for name in ["upkeep.db", "upkeep.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(name)) {
            let needle = token.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} contains the token in plain text"
            );
        }
    }

    // Status shows it healthy-ish, in JSON for scripts.
    let out = env.cmd().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let main = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == "main")
        .unwrap();
    assert_eq!(main["valid"], true);
    assert!(main["expires_at"].as_str().unwrap().ends_with("+05:30"));
    let paper = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == "paper")
        .unwrap();
    assert_eq!(paper["state"], "missing");
}

#[test]
fn token_exits_nonzero_when_no_valid_token_exists() {
    let env = Env::new();
    let out = env.cmd().arg("token").output().unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for scripts to misuse"
    );
    assert!(String::from_utf8(out.stderr).unwrap().contains("no token"));

    // An expired token is refused at import, and `token` still fails.
    let expired = testing::token_a();
    let out = env
        .cmd()
        .args(["token", "set", "--account", "main", expired.expose()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("expired"));
    env.cmd().arg("token").assert().failure();
}

#[test]
fn token_set_rejects_garbage_and_keeps_the_existing_token() {
    let env = Env::new();
    let token = daily_token_valid_now("2ZCDQ9");
    env.cmd().args(["token", "set", &token]).assert().success();
    let out = env
        .cmd()
        .args(["token", "set", "garbage.token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    env.cmd()
        .arg("token")
        .assert()
        .success()
        .stdout(format!("{token}\n"));
}

#[test]
fn unknown_account_is_a_usage_error_listing_the_configured_ones() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["token", "--account", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("main") && err.contains("paper"), "{err}");
}

#[test]
fn a_wrong_master_key_is_refused_and_the_store_is_untouched() {
    let env = Env::new();
    let token = daily_token_valid_now("2ZCDQ9");
    env.cmd().args(["token", "set", &token]).assert().success();
    let db = env.path("upkeep.db");
    let before = std::fs::read(&db).unwrap();
    let other = "00".repeat(32);
    let out = env
        .cmd()
        .env("UPKEEP_MASTER_KEY", &other)
        .arg("token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap().to_lowercase();
    assert!(err.contains("key"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn backup_then_restore_brings_the_token_back() {
    let env = Env::new();
    let token = daily_token_valid_now("2ZCDQ9");
    env.cmd().args(["token", "set", &token]).assert().success();
    let backups = env.path("backups");
    let out = env
        .cmd()
        .args(["backup", "--dir", backups.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));

    // Without --yes nothing is removed.
    env.cmd()
        .args(["accounts", "remove", "main"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--yes"));
    env.cmd().arg("token").assert().success();
    env.cmd()
        .args(["accounts", "remove", "main", "--yes"])
        .assert()
        .success();
    env.cmd().arg("token").assert().failure();
    env.cmd()
        .args(["restore", file.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "restored 2 account(s), 1 token(s)",
        ));
    env.cmd()
        .arg("token")
        .assert()
        .success()
        .stdout(format!("{token}\n"));
}

#[test]
fn accounts_add_list_remove() {
    let env = Env::new();
    env.cmd()
        .args(["accounts", "add", "scratch", "--env", "sandbox"])
        .assert()
        .success();
    let out = env
        .cmd()
        .args(["accounts", "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"scratch") && ids.contains(&"main"), "{ids:?}");
    // In plain words: where each account comes from and what renews it.
    let text = env.cmd().args(["accounts", "list"]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let config = env.path("upkeep.toml").display().to_string();
    assert!(
        text.lines().any(|l| l.starts_with("main ")
            && l.contains(&format!("configured in {config}, renewed by static"))),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("scratch ")
            && l.contains("only in the store")
            && l.contains("nothing renews it")
            && l.contains("upkeep accounts remove scratch --yes")),
        "{text}"
    );
    env.cmd()
        .args(["accounts", "remove", "scratch", "--yes"])
        .assert()
        .success();
    env.cmd()
        .args(["accounts", "remove", "scratch", "--yes"])
        .assert()
        .code(2);
    env.cmd()
        .args(["accounts", "add", "bad id!"])
        .assert()
        .code(2);
}

#[test]
fn help_explains_the_commands() {
    let env = Env::new();
    let out = env.cmd().arg("--help").output().unwrap();
    assert!(out.status.success(), "--help exits 0");
    let help = String::from_utf8(out.stdout).unwrap();
    // The command list: each command starts a line of the "Commands:" section (words in
    // flag descriptions do not count).
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for cmd in [
        "serve", "demo", "sim", "status", "token", "decode", "login", "renew", "accounts",
        "apikey", "keygen", "config", "exec", "import", "backup", "restore", "ticks",
    ] {
        assert!(
            commands.contains(&cmd),
            "--help lacks the command {cmd}: {commands:?}"
        );
        // And each command's own help works.
        let sub = env.cmd().args([cmd, "--help"]).output().unwrap();
        assert!(sub.status.success(), "{cmd} --help exits 0");
    }
    let sub = env
        .cmd()
        .args(["accounts", "reset-strategy", "--help"])
        .output()
        .unwrap();
    assert!(sub.status.success());
    assert!(String::from_utf8_lossy(&sub.stdout).contains("--strategy"));
    assert!(
        help.contains("03:30 IST"),
        "the overview says what upkeep is for"
    );
}

#[test]
fn import_reads_legacy_token_json_and_streamlit_secrets() {
    let env = Env::new();
    let token = daily_token_valid_now("2ZCDQ9");
    std::fs::write(
        env.path("old_tokens.json"),
        format!(r#"{{"access_token": "{token}", "expires_at": "2099-01-01T03:30:00+05:30", "note": "x"}}"#),
    )
    .unwrap();
    env.cmd()
        .args(["import", env.path("old_tokens.json").to_str().unwrap()])
        .assert()
        .success();
    env.cmd()
        .arg("token")
        .assert()
        .success()
        .stdout(format!("{token}\n"));

    std::fs::write(
        env.path("secrets.toml"),
        "[upstox]\napi_key = \"app-key-1\"\napi_secret = \"app-secret-1\"\nredirect_uri = \"http://127.0.0.1:7878/auth/upstox/callback\"\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .args([
            "import",
            "--account",
            "paper",
            env.path("secrets.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let snippet = String::from_utf8(out.stdout).unwrap();
    assert!(
        snippet.contains("[[account]]") && snippet.contains("client_id = \"app-key-1\""),
        "{snippet}"
    );
    // The printed block is valid configuration.
    let parsed: toml::Table = toml::from_str(&snippet).unwrap();
    assert!(parsed.contains_key("account"));

    let out = env
        .cmd()
        .args(["import", env.path("missing.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verbose_runs_never_print_the_token_to_stderr() {
    let env = Env::new();
    let token = daily_token_valid_now("2ZCDQ9");
    let mut seen = String::new();
    for args in [
        vec!["-vv", "token", "set", token.as_str()],
        vec!["-vv", "status"],
        vec!["-vv", "status", "--json"],
        vec!["-vv", "token"],
        vec!["-vv", "accounts", "list"],
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(!seen.is_empty());
    // The signature part alone must not leak either.
    let sig = token.rsplit('.').next().unwrap();
    assert!(!seen.contains(&token), "stderr contained the token");
    assert!(
        !seen.contains(sig),
        "stderr contained the token's signature"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child on drop so a failing test leaves no process behind.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn serve_against_sim_logs_in_headlessly_and_stops_cleanly_on_sigterm() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    write_serve_config(&env, &c, daemon_port, "", "");
    let config = env.path("serve.toml");
    let mut serve = spawn_serve(&config, true);
    // No token yet: the daemon logs in at once; `upkeep token` then serves it.
    wait_for("a token from the daemon", || {
        env.cmd_with(&config)
            .arg("token")
            .output()
            .unwrap()
            .status
            .success()
    });
    let token =
        String::from_utf8(env.cmd_with(&config).arg("token").output().unwrap().stdout).unwrap();
    let info = upkeep_core::expiry::inspect(&upkeep_core::AccessToken::new(token.trim())).unwrap();
    assert_eq!(info.claims.sub, c["ucc"].as_str().unwrap());
    assert_eq!(info.kind, upkeep_core::expiry::TokenKind::Daily);

    // SIGTERM: a clean exit, and nothing secret in what it logged.
    let pid = serve.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = std::mem::replace(
        &mut serve.0,
        std::process::Command::new("true").spawn().unwrap(),
    )
    .wait_with_output()
    .unwrap();
    assert!(out.status.success(), "serve exited with {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("shutting down"), "{log}");
    for secret in [
        token.trim(),
        c["pin"].as_str().unwrap(),
        c["totp_secret"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    ] {
        assert!(!log.contains(secret), "the daemon's log contains a secret");
    }
}

/// A valid base32 TOTP seed that is not the simulator user's: headless login fails.
const WRONG_TOTP_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A config for `upkeep serve` against the simulator whose credentials are `c`.
fn write_serve_config(
    env: &Env,
    c: &serde_json::Value,
    daemon_port: u16,
    totp_secret: &str,
    extra: &str,
) {
    let base = c["base_url"].as_str().unwrap();
    let secret = if totp_secret.is_empty() {
        c["totp_secret"].as_str().unwrap()
    } else {
        totp_secret
    };
    std::fs::write(
        env.path("serve.toml"),
        format!(
            r#"
[server]
listen = "127.0.0.1:{daemon_port}"
[store]
url = "sqlite://{db}"
key_file = "{key}"
[upstox]
api_url = "{base}"
order_url = "{base}"
login_url = "{base}"
{extra}
[[account]]
id = "main"
client_id = "{client_id}"
client_secret = "{client_secret}"
redirect_uri = "{redirect}"
renew = ["totp", "oauth"]
[account.totp]
mobile = "{mobile}"
pin = "{pin}"
secret = "{secret}"
"#,
            db = env.path("serve.db").display(),
            key = env.path("serve.key").display(),
            client_id = c["client_id"].as_str().unwrap(),
            client_secret = c["client_secret"].as_str().unwrap(),
            redirect = c["redirect_uri"].as_str().unwrap(),
            mobile = c["mobile"].as_str().unwrap(),
            pin = c["pin"].as_str().unwrap(),
        ),
    )
    .unwrap();
}

/// Starts `upkeep serve` with `config` (stderr captured when `capture_stderr`).
fn spawn_serve(config: &Path, capture_stderr: bool) -> Child {
    Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("upkeep"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env_remove("UPKEEP_MASTER_KEY")
            .stderr(if capture_stderr {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .unwrap(),
    )
}

/// Waits until something listens on `port`.
fn wait_for_port(port: u16) {
    wait_for("the daemon's port", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Starts `upkeep sim` and returns it with its credentials.
fn start_sim(env: &Env, daemon_port: u16) -> (Child, serde_json::Value) {
    let creds_path = env.path("creds.json");
    let sim = Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("upkeep"))
            .args(["sim", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--credentials-out")
            .arg(&creds_path)
            .args([
                "--redirect-uri",
                &format!("http://127.0.0.1:{daemon_port}/auth/upstox/callback"),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the simulator's credentials", || creds_path.exists());
    let c = serde_json::from_slice(&std::fs::read(&creds_path).unwrap()).unwrap();
    (sim, c)
}

/// A one-request-at-a-time HTTP receiver collecting POST bodies (an alert webhook).
fn start_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, rx)
}

#[test]
fn serve_sends_the_configured_alert_webhook_when_the_totp_secret_is_wrong() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    let (url, bodies) = start_receiver();
    // A valid base32 seed that is not the user's: the login fails fatally.
    write_serve_config(
        &env,
        &c,
        daemon_port,
        WRONG_TOTP_SEED,
        &format!("[[alert.webhook]]\nurl = \"{url}\"\nformat = \"generic\"\n"),
    );
    let _serve = spawn_serve(&env.path("serve.toml"), false);
    let mut kinds = Vec::new();
    while !kinds.iter().any(|k| k == "manual_action_needed") {
        assert!(
            kinds.len() < 20,
            "no manual_action_needed alert among {kinds:?}"
        );
        let body = bodies
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("an alert within 20 s");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["account"], "main");
        if v["kind"] == "manual_action_needed" {
            // The manual-action alert carries the login link (Upstox dialog via the sim).
            let link = v["link"].as_str().unwrap();
            assert!(link.contains("/v2/login/authorization/dialog"), "{link}");
            assert!(link.contains("state="), "{link}");
        }
        kinds.push(v["kind"].as_str().unwrap().to_owned());
    }
    assert!(kinds.iter().any(|k| k == "renewal_fatal"), "{kinds:?}");
    // The wrong secret was tried once, not hammered (the sim user is not locked).
    let state: serde_json::Value =
        reqwest_get(&format!("{}/sim/state", c["base_url"].as_str().unwrap()));
    let user = &state["users"][0];
    assert_eq!(user["locked"], false, "{user}");
    assert_eq!(
        user["attempts_left"], 4,
        "exactly one wrong attempt: {user}"
    );
}

fn reqwest_get(url: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let u = url.strip_prefix("http://").unwrap();
    let (host, path) = u.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

#[test]
fn demo_renews_after_the_rollover_inside_the_morning_window() {
    let env = Env::new();
    let out = env.cmd().arg("demo").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("got a daily token via totp"), "{text}");
    assert!(text.contains("profile call with the token OK"), "{text}");
    assert!(text.contains("the token died at 03:30"), "{text}");
    let renewed = text
        .lines()
        .find(|l| l.contains("renewed via totp"))
        .unwrap_or_else(|| panic!("no renewal in: {text}"));
    // "[sim Wed 2026-11-25 05:32:45 IST] renewed via totp ..." : inside 05:30-09:00.
    let hhmm = renewed.split_whitespace().nth(3).unwrap();
    assert!(("05:30:00"..="09:00:00").contains(&hhmm), "{renewed}");
    assert!(
        text.contains("profile call with the new token: OK"),
        "{text}"
    );
    // One clock shows: the story's lines carry the simulator's IST time; the engine's
    // log lines (wall-clock timestamps) stay behind -v.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains(" INFO "), "{log}");
}

/// A fresh schema in the local PostgreSQL test database, dropped on drop.
struct PgSchema(String);

impl PgSchema {
    fn new() -> Self {
        let name = format!("upkeep_cli_{}_{}", std::process::id(), free_port());
        psql(&format!("CREATE SCHEMA \"{name}\""));
        Self(name)
    }
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{}",
            self.0
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        psql(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0));
    }
}

fn psql(sql: &str) {
    let ok = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-q",
            "-c",
            sql,
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "psql failed: {sql}");
}

#[test]
fn the_cli_works_the_same_on_a_postgresql_store() {
    let env = Env::new();
    let schema = PgSchema::new();
    let config = std::fs::read_to_string(env.path("upkeep.toml"))
        .unwrap()
        .replace(
            &format!("url = \"sqlite://{}\"", env.path("upkeep.db").display()),
            &format!("url = \"{}\"", schema.url()),
        );
    assert!(config.contains("postgres://"));
    std::fs::write(env.path("pg.toml"), config).unwrap();
    let token = daily_token_valid_now("2ZCDQ9");
    env.cmd_with(&env.path("pg.toml"))
        .args(["token", "set", &token])
        .assert()
        .success();
    env.cmd_with(&env.path("pg.toml"))
        .arg("token")
        .assert()
        .success()
        .stdout(format!("{token}\n"));
    // Sealed at rest in PostgreSQL too.
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-At",
            "-c",
        ])
        .arg(format!("SELECT * FROM \"{}\".tokens", schema.0))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(!dump.is_empty(), "the token row is there");
    assert!(!dump.contains(&token), "the token is stored in plain text");
    // bytea columns print as \x<hex>: look inside them too.
    for field in dump.split(['|', '\n']) {
        if let Some(hex) = field.strip_prefix("\\x") {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "a bytea column holds the token in plain text"
            );
        }
    }
    assert!(!env.path("upkeep.db").exists(), "nothing went to SQLite");
}

#[test]
fn a_corrupt_database_is_a_clear_error_and_is_left_as_it_was() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    let garbage = b"this is not an sqlite database, it is a note someone saved here\n".repeat(100);
    std::fs::write(env.path("upkeep.db"), &garbage).unwrap();
    for args in [vec!["status"], vec!["token"], vec!["serve"]] {
        let out = env.cmd().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("corrupt") || err.contains("not a database"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read(env.path("upkeep.db")).unwrap(), garbage);
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// `upkeep login` (its own process) mints the link; the running daemon redeems it: the
/// signed state works across processes because both hold the master key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_link_from_the_cli_is_redeemed_by_the_running_daemon() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    // A wrong TOTP seed: headless login fails, so the daemon waits for a human.
    write_serve_config(&env, &c, daemon_port, WRONG_TOTP_SEED, "");
    let config = env.path("serve.toml");
    env.cmd_with(&config).arg("keygen").assert().success();
    let _serve = spawn_serve(&config, false);
    wait_for_port(daemon_port);
    env.cmd_with(&config).arg("token").assert().failure();

    let out = env.cmd_with(&config).arg("login").output().unwrap();
    assert!(out.status.success());
    let link = reqwest::Url::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(link.path(), "/v2/login/authorization/dialog");

    // A human follows it: the dialog, the simulator's login page, back to the daemon.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let resp = browser.get(link.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let login_page = link.join(&location(&resp)).unwrap();
    let request_id = login_page
        .query_pairs()
        .find(|(k, _)| k == "request_id")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let code = upkeep_sim::totp::code_at(c["totp_secret"].as_str().unwrap(), real_now()).unwrap();
    let resp = browser
        .post(login_page.join("/sim/login").unwrap())
        .form(&[
            ("request_id", request_id.as_str()),
            ("mobile", c["mobile"].as_str().unwrap()),
            ("totp", code.as_str()),
            ("pin", c["pin"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "the simulator accepts the login");
    let callback = location(&resp);
    assert!(callback.starts_with(&format!(
        "http://127.0.0.1:{daemon_port}/auth/upstox/callback"
    )));
    let resp = browser.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Logged in"));
    env.cmd_with(&config).arg("token").assert().success();

    // The link works once.
    let resp = browser.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[test]
fn renew_from_the_cli_logs_in_headlessly_or_says_what_to_do() {
    let env = Env::new();
    let (_sim, c) = start_sim(&env, free_port());
    write_serve_config(&env, &c, free_port(), "", "");
    let config = env.path("serve.toml");
    let out = env.cmd_with(&config).arg("renew").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("main: renewed with totp"), "{err}");
    env.cmd_with(&config).arg("token").assert().success();

    // With a wrong seed: exit 1, the reason, and the way out.
    write_serve_config(&env, &c, free_port(), WRONG_TOTP_SEED, "");
    let out = env
        .cmd_with(&config)
        .args(["renew", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("renewal failed"), "{err}");
    assert!(err.contains("upkeep login --account main"), "{err}");
}

#[test]
fn api_keys_are_shown_once_stored_as_digests_and_revocable() {
    let env = Env::new();
    let out = env
        .cmd()
        .args([
            "apikey",
            "create",
            "--name",
            "bot1",
            "--scope",
            "token:read",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1, "the key alone on stdout");
    let key = key.trim().to_owned();
    assert!(key.starts_with("upk_") && key.len() >= 40, "{key}");
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("token:read")
    );

    let list = env
        .cmd()
        .args(["apikey", "list", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.contains("bot1") && !listed.contains(&key),
        "{listed}"
    );
    let db = std::fs::read(env.path("upkeep.db")).unwrap();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));

    env.cmd()
        .args(["apikey", "create", "--name", "bot1", "--scope", "admin"])
        .assert()
        .code(2);
    env.cmd()
        .args(["apikey", "create", "--name", "x", "--scope", "root"])
        .assert()
        .code(2);
    env.cmd()
        .args(["apikey", "revoke", "bot1"])
        .assert()
        .success();
    env.cmd()
        .args(["apikey", "revoke", "bot1"])
        .assert()
        .code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_endpoint_needs_an_admin_key() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    write_serve_config(&env, &c, daemon_port, WRONG_TOTP_SEED, "");
    let config = env.path("serve.toml");
    let create = |name: &str, scope: &str| {
        let out = env
            .cmd_with(&config)
            .args(["apikey", "create", "--name", name, "--scope", scope])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let admin = create("ops", "admin");
    let reader = create("bot", "token:read");
    let _serve = spawn_serve(&config, false);
    wait_for_port(daemon_port);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{daemon_port}/auth/upstox/login?account=main");
    let status = |key: Option<&str>| {
        let mut req = http.get(&url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(status(None).await.status(), 401);
    assert_eq!(status(Some("upk_not-a-key")).await.status(), 401);
    assert_eq!(status(Some(&reader)).await.status(), 403);
    let resp = status(Some(&admin)).await;
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert!(location(&resp).contains("/v2/login/authorization/dialog?"));
    assert!(location(&resp).contains("state="));

    env.cmd_with(&config)
        .args(["apikey", "revoke", "ops"])
        .assert()
        .success();
    assert_eq!(status(Some(&admin)).await.status(), 401, "a revoked key");
    // /healthz needs no key.
    let health = http
        .get(format!("http://127.0.0.1:{daemon_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn relative_store_and_key_paths_resolve_against_the_config_files_folder() {
    let env = Env::new();
    let conf_dir = env.path("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let config = conf_dir.join("upkeep.toml");
    std::fs::write(
        &config,
        "[store]\nurl = \"sqlite://upkeep.db\"\nkey_file = \"upkeep.key\"\n\n[[account]]\nid = \"main\"\nrenew = [\"static\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token = daily_token_valid_now("AB1234");
    env.cmd_with(&config)
        .args(["token", "set"])
        .write_stdin(token.clone())
        .assert()
        .success();
    // Created beside the config file, not in the working folder.
    assert!(conf_dir.join("upkeep.db").exists());
    assert!(conf_dir.join("upkeep.key").exists());
    assert!(!env.path("upkeep.db").exists());
    // Run from elsewhere, the same config reads the same store.
    let mut c = Command::cargo_bin("upkeep").unwrap();
    c.current_dir(std::env::temp_dir())
        .arg("--config")
        .arg(&config)
        .env_remove("UPKEEP_MASTER_KEY")
        .arg("token")
        .assert()
        .success()
        .stdout(predicate::str::contains(token));
}

#[test]
fn a_missing_key_beside_an_existing_store_is_an_error_naming_both_and_no_key_is_made() {
    let env = Env::new();
    env.cmd()
        .args(["token", "set", "--account", "main"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .assert()
        .success();
    std::fs::remove_file(env.path("upkeep.key")).unwrap();
    let out = env.cmd().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upkeep.db") && err.contains("upkeep.key"),
        "{err}"
    );
    assert!(!env.path("upkeep.key").exists(), "no new key was created");
}

#[test]
fn import_refuses_an_endless_file_without_reading_it_whole() {
    let env = Env::new();
    let out = env.cmd().args(["import", "/dev/zero"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than 1024 KiB"));
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_not_with_a_panic() {
    let env = Env::new();
    env.cmd()
        .args(["token", "set", "--account", "main"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .assert()
        .success();
    // `upkeep config example | head -c 1`: the reader goes away after one byte.
    let bin = assert_cmd::cargo::cargo_bin("upkeep");
    let mut child = std::process::Command::new(bin)
        .args(["config", "example"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_config_file_with_secrets_that_others_can_read_is_warned_about() {
    let env = Env::new();
    let config = env.path("secret.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\nkey_file = \"{}\"\n[[account]]\nid = \"main\"\nclient_id = \"k\"\nclient_secret = \"s3cr3t\"\nrenew = [\"static\"]\n",
            env.path("upkeep.db").display(),
            env.path("upkeep.key").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env
        .cmd_with(&config)
        .args(["config", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("s3cr3t"));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env
        .cmd_with(&config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("chmod"));
}

/// POSTs JSON and returns the parsed JSON answer.
fn post_json(url: &str, body: &serde_json::Value) -> serde_json::Value {
    use std::io::{Read, Write};
    let u = url.strip_prefix("http://").unwrap();
    let (host, path) = u.split_once('/').unwrap();
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[test]
fn status_and_token_say_so_when_the_daemons_health_check_found_the_token_refused() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    write_serve_config(&env, &c, daemon_port, "", "");
    let config = env.path("serve.toml");
    // A pasted token that nothing renews.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(r#"renew = ["totp", "oauth"]"#, r#"renew = ["static"]"#);
    std::fs::write(&config, text).unwrap();
    let base = c["base_url"].as_str().unwrap();
    let issued = post_json(
        &format!("{base}/sim/tokens"),
        &serde_json::json!({"ucc": c["ucc"], "kind": "daily"}),
    );
    let token = issued["access_token"].as_str().unwrap().to_owned();
    env.cmd_with(&config)
        .args(["token", "set"])
        .write_stdin(token.clone())
        .assert()
        .success();
    env.cmd_with(&config).arg("token").assert().success();

    // Upstox revokes it; the daemon's first health check finds out.
    post_json(
        &format!("{base}/sim/tokens/revoke"),
        &serde_json::json!({"access_token": token}),
    );
    let _serve = spawn_serve(&config, false);
    wait_for("`upkeep token` to refuse the revoked token", || {
        !env.cmd_with(&config)
            .arg("token")
            .output()
            .unwrap()
            .status
            .success()
    });
    let out = env.cmd_with(&config).arg("token").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no token printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains("revoked"), "{err}");

    let out = env
        .cmd_with(&config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "refused");
    assert_eq!(v[0]["valid"], false);
    assert_eq!(v[0]["last_check"]["result"], "refused");
    assert_eq!(v[0]["last_check"]["problem"], "revoked");
}

#[test]
fn a_traced_headless_login_never_logs_the_login_sessions_cookies() {
    let env = Env::new();
    let (_sim, c) = start_sim(&env, free_port());
    write_serve_config(&env, &c, free_port(), "", "");
    let config = env.path("serve.toml");
    let out = env
        .cmd_with(&config)
        .args(["-vv", "renew"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("renewed with totp"), "{err}");
    // The simulator's login service sets a `sim_login` session cookie on the way.
    assert!(!err.contains("sim_login"), "a cookie reached the log");
    assert!(!err.to_ascii_lowercase().contains("set-cookie"), "{err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let env = Env::new();
    let out = env
        .cmd()
        .env_remove("NO_COLOR")
        .args(["-v", "token", "set", "--account", "main"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty(), "-v logs something");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
}

#[test]
fn reset_strategy_clears_a_stored_lockout_latch() {
    let env = Env::new();
    let (_sim, c) = start_sim(&env, free_port());
    write_serve_config(&env, &c, free_port(), WRONG_TOTP_SEED, "");
    let config = env.path("serve.toml");
    // A wrong seed: one attempt, then totp is latched (stored, survives the process).
    let out = env.cmd_with(&config).arg("renew").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = env
        .cmd_with(&config)
        .args(["accounts", "reset-strategy", "--strategy", "totpp"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown strategy is a usage error"
    );
    let out = env
        .cmd_with(&config)
        .args(["accounts", "reset-strategy", "--strategy", "totp"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-enabled totp"));
    let out = env
        .cmd_with(&config)
        .args(["accounts", "reset-strategy"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no strategy was stopped"));
}

#[test]
fn a_sandbox_token_is_not_stored_in_a_live_account_without_force_and_the_other_way_round() {
    let env = Env::new();
    let sandbox = testing::sandbox_token("AB1234", real_now() - SignedDuration::from_mins(1));
    let out = env
        .cmd()
        .args(["token", "set", "--account", "main"])
        .write_stdin(sandbox.expose())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sandbox token") && err.contains("--force"),
        "{err}"
    );
    env.cmd()
        .args(["token", "--account", "main"])
        .assert()
        .failure();
    // Into the sandbox account it goes; a live token there is refused.
    env.cmd()
        .args(["token", "set", "--account", "paper"])
        .write_stdin(sandbox.expose())
        .assert()
        .success();
    env.cmd()
        .args(["token", "set", "--account", "paper"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .assert()
        .code(2);
    // --force is the operator's explicit choice.
    env.cmd()
        .args(["token", "set", "--account", "main", "--force"])
        .write_stdin(sandbox.expose())
        .assert()
        .success();
}

#[test]
fn restore_refuses_while_a_daemon_answers_unless_forced() {
    let env = Env::new();
    env.cmd()
        .args(["token", "set", "--account", "main"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .assert()
        .success();
    let backups = env.path("backups");
    let out = env
        .cmd()
        .args(["backup", "--dir", backups.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Something answers /healthz on the configured address: a daemon.
    let port = free_port();
    let config = env.path("with-daemon.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(env.path("upkeep.toml"))
            .unwrap()
            .replace(
                "[store]",
                &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[store]"),
            ),
    )
    .unwrap();
    let _daemon = spawn_serve(&config, false);
    wait_for_port(port);
    env.cmd_with(&config)
        .args(["restore", &file])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("stop it first"));
    env.cmd_with(&config)
        .args(["restore", &file, "--force"])
        .assert()
        .success();
}

#[test]
fn a_daemon_following_the_sims_clock_renews_within_seconds_when_the_sim_jumps_over_the_rollover() {
    // `upkeep sim` and `upkeep serve` as separate processes: the daemon follows the
    // simulator's clock, so moving it over 03:30 IST and into the morning window makes
    // the daemon renew at once, with TOTP codes computed on the simulator's clock (no
    // wrong code spent). On the wall clock it would stay "healthy" on the old token.
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    let base = c["base_url"].as_str().unwrap().to_owned();
    post_json(
        &format!("{base}/sim/clock"),
        &serde_json::json!({"jump_to_ist": "2026-12-08T10:00:00"}),
    );
    let sink = env.path("follow_tokens.json");
    let extra = format!(
        "follow_sim_clock = true\n[sinks]\njson_file = \"{}\"",
        sink.display()
    );
    write_serve_config(&env, &c, daemon_port, "", &extra);
    let mut serve = spawn_serve(&env.path("serve.toml"), true);
    let read_sink = || -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(&sink).ok()?).ok()
    };
    wait_for("the first token in the sink", || read_sink().is_some());
    let first = read_sink().unwrap();
    // Minted on the simulator's day, not today's: it dies at 03:30 IST on 9 December.
    assert!(
        first["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-09T03:30:00"),
        "{first}"
    );

    post_json(
        &format!("{base}/sim/clock"),
        &serde_json::json!({"jump_to_ist": "2026-12-09T05:45:00"}),
    );
    // Within seconds of real time (the follower re-reads the clock every second).
    let mut renewed = None;
    for _ in 0..300 {
        if let Some(v) = read_sink()
            && v["access_token"] != first["access_token"]
        {
            renewed = Some(v);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Some(renewed) = renewed else {
        let _ = serve.0.kill();
        let out = std::mem::replace(
            &mut serve.0,
            std::process::Command::new("true").spawn().unwrap(),
        )
        .wait_with_output()
        .unwrap();
        panic!(
            "no renewal after the simulator's clock jumped; the daemon logged:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert!(
        renewed["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-10T03:30:00"),
        "{renewed}"
    );
    let state = reqwest_get(&format!("{base}/sim/state"));
    assert_eq!(state["counters"]["failed_logins"], 0, "{state}");
    assert_eq!(state["counters"]["logins"], 2, "{state}");
}

#[test]
fn follow_sim_clock_is_refused_for_a_real_upstox_host() {
    let env = Env::new();
    let text = std::fs::read_to_string(env.path("upkeep.toml")).unwrap();
    std::fs::write(
        env.path("real.toml"),
        format!("{text}\n[upstox]\nfollow_sim_clock = true\n"),
    )
    .unwrap();
    env.cmd_with(&env.path("real.toml"))
        .args(["config", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "upstox.follow_sim_clock: is on while upstox.api_url is Upstox itself",
        ));
    env.cmd()
        .args(["serve", "--follow-sim-clock", "--listen", "127.0.0.1:0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("upstox.follow_sim_clock"));
}

#[test]
fn one_shot_commands_print_no_info_log_lines_without_verbose() {
    // `token set`, `renew`, `import` print their result; the info lines of the engine
    // behind them (with their wall-clock timestamps) stay behind -v.
    let env = Env::new();
    let out = env
        .cmd()
        .args(["-v", "token", "set", "--account", "main"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(" INFO "));
    // A newer token, without -v.
    let other = testing::daily_token("AB1234", real_now());
    let out = env
        .cmd()
        .args(["token", "set", "--account", "main"])
        .write_stdin(other.expose())
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("stored a daily token"), "{err}");
    assert!(!err.contains("INFO"), "{err}");
    let out = env
        .cmd()
        .args(["renew", "--account", "main"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("INFO"), "{err}");
}

#[test]
fn config_check_lists_alerts_and_sinks_and_refuses_the_examples_placeholders() {
    let env = Env::new();
    let out = env.cmd().args(["config", "check"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("alerts        none: nobody is told when a renewal fails"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sinks         json file {}",
            env.path("upstox_tokens.json").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "relay         on: stall after 30s, backoff 1s to 1m, plan's upstream connections, ticks not stored"
        ),
        "{text}"
    );

    // The unedited example: every placeholder named, the check fails, serve refuses.
    let example = env
        .cmd()
        .args(["config", "example"])
        .output()
        .unwrap()
        .stdout;
    std::fs::write(env.path("example.toml"), example).unwrap();
    let out = env
        .cmd_with(&env.path("example.toml"))
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("alerts        webhook to hooks.example.com (generic)"),
        "{text}"
    );
    assert!(
        text.contains(r#"placeholder   account "main".totp.pin: is the example's placeholder (value not shown)"#),
        "{text}"
    );
    assert!(!text.contains("123456"), "a secret shown: {text}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("9 value(s) are still the placeholders of `upkeep config example`"),
        "{err}"
    );
    env.cmd_with(&env.path("example.toml"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "placeholders of `upkeep config example`",
        ));
}

#[test]
fn serve_with_no_accounts_says_there_is_nothing_to_renew() {
    let env = Env::new();
    std::fs::write(
        env.path("empty.toml"),
        format!(
            "[store]\nurl = \"sqlite://{}\"\nkey_file = \"{}\"\n[server]\nlisten = \"127.0.0.1:{}\"\n",
            env.path("empty.db").display(),
            env.path("empty.key").display(),
            free_port()
        ),
    )
    .unwrap();
    let mut serve = Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("upkeep"))
            .arg("--config")
            .arg(env.path("empty.toml"))
            .arg("serve")
            .env_remove("UPSTOX_ACCESS_TOKEN")
            .env_remove("UPKEEP_MASTER_KEY")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(serve.0.stderr.take().unwrap());
    let mut seen = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("upkeep serving on") {
            break;
        }
    }
    assert!(
        seen.contains("no account is configured, so there is nothing to renew; add an [[account]]"),
        "{seen}"
    );
}

#[test]
fn sim_config_refuses_a_bad_fidelity_setting_naming_it() {
    let env = Env::new();
    let path = env.path("sim.toml");
    std::fs::write(
        &path,
        "auth_code_ttl_secs = 0\nrevoke_previous_tokens = true\nfeed_snapshot_type = \"live_feed\"\n",
    )
    .unwrap();
    env.cmd()
        .args(["sim", "--listen", "127.0.0.1:0", "--sim-config"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("auth_code_ttl_secs"));
    std::fs::write(&path, "feed_snapshot_type = \"first_feed\"\n").unwrap();
    env.cmd()
        .args(["sim", "--listen", "127.0.0.1:0", "--sim-config"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("feed_snapshot_type")
                .or(predicate::str::contains("first_feed")),
        );
}

/// `upkeep serve` against the simulator (TOTP renewal), waiting until it has a token.
fn serve_with_token(env: &Env) -> (Child, Child, serde_json::Value, PathBuf, u16) {
    let daemon_port = free_port();
    let (sim, c) = start_sim(env, daemon_port);
    write_serve_config(env, &c, daemon_port, "", "");
    let config = env.path("serve.toml");
    let serve = spawn_serve(&config, false);
    wait_for("a token from the daemon", || {
        env.cmd_with(&config)
            .arg("token")
            .output()
            .unwrap()
            .status
            .success()
    });
    (sim, serve, c, config, daemon_port)
}

#[test]
fn status_token_and_exec_ask_the_running_daemon_with_a_local_credential() {
    let env = Env::new();
    let (_sim, mut serve, _c, config, port) = serve_with_token(&env);
    // The daemon wrote its local credential beside the master key, for this user only.
    let credential = env.path("serve.daemon.key");
    assert_eq!(mode(&credential), 0o600);

    let out = env
        .cmd_with(&config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("no daemon"),
        "the daemon answers"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["from"], "daemon");
    assert_eq!(v[0]["state"], "healthy");
    assert_eq!(v[0]["valid"], true);
    assert_eq!(v[0]["source"], "totp");
    // What only the daemon knows: the plan it follows.
    // (Which action depends on the day the test runs: weekends plan differently.)
    assert!(v[0]["next_action"]["action"].is_string(), "{v}");
    assert!(v[0]["next_action"]["reason"].is_string(), "{v}");
    assert_eq!(v[0]["disabled_strategies"], serde_json::json!([]));

    let out = env.cmd_with(&config).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("(as the daemon on 127.0.0.1:{port} sees it)")),
        "{text}"
    );
    assert!(text.contains("main: next: "), "{text}");

    let token =
        String::from_utf8(env.cmd_with(&config).arg("token").output().unwrap().stdout).unwrap();
    env.cmd_with(&config)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "printf %s \"$UPSTOX_ACCESS_TOKEN\"",
        ])
        .assert()
        .success()
        .stdout(token.trim().to_owned());

    // The credential is no stored API key, and its name cannot be taken by one.
    env.cmd_with(&config)
        .args(["apikey", "list"])
        .assert()
        .success()
        .stdout("(no API keys)\n");
    env.cmd_with(&config)
        .args([
            "apikey",
            "create",
            "--name",
            "local-cli",
            "--scope",
            "admin",
        ])
        .assert()
        .code(2);

    // Stopped, the daemon takes its credential away; the CLI says it reads the store.
    let pid = serve.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    serve.0.wait().unwrap();
    assert!(!credential.exists(), "the credential outlived the daemon");
    let out = env
        .cmd_with(&config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("no daemon running").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains("reading the store"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["from"], "store");
    assert_eq!(v[0]["valid"], true);
    env.cmd_with(&config).arg("token").assert().success();
}

#[test]
fn a_local_credential_others_can_read_or_naming_a_foreign_address_is_refused() {
    let env = Env::new();
    let credential = env.path("upkeep.daemon.key");
    let write = |address: &str, mode: u32| {
        std::fs::write(
            &credential,
            serde_json::json!({"address": address, "pid": std::process::id(), "key": "upkl_x"})
                .to_string(),
        )
        .unwrap();
        std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("127.0.0.1:9", 0o644);
    env.cmd()
        .arg("status")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "refusing to read the local credential",
        ));
    // Not loopback and not [server] listen: the key is not sent there.
    write("192.0.2.1:7878", 0o600);
    env.cmd()
        .arg("token")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not sending the credential there"));
}

/// `upkeep status --json` of the first account, with where it came from on stderr.
fn status_json(env: &Env, config: &Path) -> serde_json::Value {
    let out = env
        .cmd_with(config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn renew_asks_the_daemon_which_re_enables_the_stopped_strategy_and_renews_at_once() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    let base = c["base_url"].as_str().unwrap().to_owned();
    // Upstox blocks headless logins: the daemon's TOTP login fails on the credentials
    // and the strategy is stopped (never retried blindly).
    post_json(
        &format!("{base}/sim/faults"),
        &serde_json::json!({"login_blocked": true}),
    );
    write_serve_config(&env, &c, daemon_port, "", "");
    let config = env.path("serve.toml");
    let _serve = spawn_serve(&config, false);
    wait_for("the daemon to stop the totp strategy", || {
        env.path("serve.daemon.key").exists()
            && status_json(&env, &config)["disabled_strategies"] == serde_json::json!(["totp"])
    });

    // The operator fixes it at Upstox and runs the command the alert prescribes.
    post_json(
        &format!("{base}/sim/faults"),
        &serde_json::json!({"login_blocked": false}),
    );
    let out = env
        .cmd_with(&config)
        .args(["renew", "--account", "main"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("main: renewed by the daemon with totp"),
        "{err}"
    );
    // The daemon itself renewed: its strategy is enabled again and it holds the token
    // now, not after its next pass.
    let s = status_json(&env, &config);
    assert_eq!(s["from"], "daemon");
    assert_eq!(s["disabled_strategies"], serde_json::json!([]), "{s}");
    assert_eq!(s["valid"], true, "{s}");
    assert_eq!(s["source"], "totp", "{s}");
    let fp = err
        .split("fingerprint ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap();
    assert_eq!(s["fingerprint"], fp, "{s}");
}

/// The account ids the running daemon supervises (`upkeep status --json`).
fn daemon_accounts(env: &Env, config: &Path) -> Vec<String> {
    let out = env
        .cmd_with(config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .inspect(|r| assert_eq!(r["from"], "daemon", "{r}"))
        .map(|r| r["account"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn reload_and_sighup_apply_a_valid_config_without_a_restart_and_refuse_an_invalid_one() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    write_serve_config(&env, &c, daemon_port, "", "");
    let config = env.path("serve.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let mut serve = spawn_serve(&config, true);
    wait_for("a token from the daemon", || {
        env.cmd_with(&config)
            .arg("token")
            .output()
            .unwrap()
            .status
            .success()
    });
    let pid = serve.0.id().to_string();
    // The daemon's log, line by line, as it comes.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = serve.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for_log = |what: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line with `{what}`"));
            if line.contains(what) {
                return line;
            }
        }
    };

    // A second account added to the file: `upkeep reload` makes the daemon supervise it.
    let paper = format!(
        "{original}\n[[account]]\nid = \"paper\"\nenv = \"sandbox\"\nrenew = [\"static\"]\n"
    );
    std::fs::write(&config, &paper).unwrap();
    let out = env.cmd_with(&config).arg("reload").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("added paper"), "{err}");
    assert_eq!(daemon_accounts(&env, &config), ["main", "paper"]);

    // Another file with the same store and key, for asking the daemon while serve.toml
    // is broken.
    let probe = env.path("probe.toml");
    std::fs::write(&probe, &paper).unwrap();

    // An invalid config: exit 1 with the reason; the daemon keeps both accounts.
    std::fs::write(
        &config,
        format!("{paper}\n[[alert.webhook]]\nurl = \"not a url\"\nformat = \"generic\"\n"),
    )
    .unwrap();
    let out = env.cmd_with(&config).arg("reload").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not reloaded"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(daemon_accounts(&env, &probe), ["main", "paper"]);

    // SIGHUP with a file that does not even parse: refused, logged, nothing changes.
    std::fs::write(
        &config,
        format!("{paper}\n[[account]]\nid = \"x\"\nrenew = [\"totpp\"]\n"),
    )
    .unwrap();
    let hup = || {
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    hup();
    let refused = wait_for_log("reload refused");
    assert!(refused.contains("totpp"), "{refused}");
    assert_eq!(daemon_accounts(&env, &probe), ["main", "paper"]);
    // SIGHUP with the account removed again: the daemon stops supervising it.
    std::fs::write(&config, &original).unwrap();
    hup();
    let reloaded = wait_for_log("configuration reloaded");
    assert!(reloaded.contains("paper"), "{reloaded}");
    assert_eq!(daemon_accounts(&env, &config), ["main"]);
    env.cmd_with(&config).arg("token").assert().success();

    // Still the same process, stopping cleanly.
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(serve.0.wait().unwrap().success());
}

#[test]
fn with_follow_sim_clock_the_cli_judges_tokens_on_the_simulators_clock() {
    // No daemon: `upkeep token` reads the store, and with follow_sim_clock it asks the
    // simulator what time it is. A token valid on the wall clock is dead once the
    // simulator's clock has passed the next 03:30 IST.
    let env = Env::new();
    let (_sim, c) = start_sim(&env, free_port());
    let base = c["base_url"].as_str().unwrap().to_owned();
    let text = std::fs::read_to_string(env.path("upkeep.toml")).unwrap();
    std::fs::write(
        env.path("follow.toml"),
        format!("{text}\n[upstox]\napi_url = \"{base}\"\nfollow_sim_clock = true\n"),
    )
    .unwrap();
    let config = env.path("follow.toml");
    env.cmd_with(&config)
        .args(["token", "set", "--account", "main"])
        .write_stdin(daily_token_valid_now("AB1234"))
        .assert()
        .success();
    env.cmd_with(&config).args(["token"]).assert().success();
    let later = (real_now() + SignedDuration::from_hours(48))
        .to_zoned(upkeep_core::expiry::ist())
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string();
    post_json(
        &format!("{base}/sim/clock"),
        &serde_json::json!({ "jump_to_ist": later }),
    );
    let out = env.cmd_with(&config).args(["token"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The store was left as it was: on the wall clock the token still works.
    env.cmd().args(["token"]).assert().success();
}

#[test]
fn an_invalid_listen_port_is_named_as_such_not_blamed_on_another_upkeep() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:99999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on 127.0.0.1:99999: not an address:port"),
        "{err}"
    );
    assert!(!err.contains("another upkeep"), "{err}");
}

#[test]
fn calendar_prints_the_days_it_plans_by_and_where_they_came_from() {
    // `upkeep sim` serves its default calendar for the simulator clock's year; the CLI
    // reads it from the daemon's configured Upstox host, on the simulator's clock.
    let env = Env::new();
    let (_sim, c) = start_sim(&env, free_port());
    let base = c["base_url"].as_str().unwrap().to_owned();
    post_json(
        &format!("{base}/sim/clock"),
        &serde_json::json!({"jump_to_ist": "2026-11-02T10:00:00"}),
    );
    write_serve_config(
        &env,
        &c,
        free_port(),
        "",
        "follow_sim_clock = true\n[renewal]\nholidays = [\"2026-11-24\"]",
    );
    let config = env.path("serve.toml");
    let run = |args: &[&str]| {
        let out = env
            .cmd_with(&config)
            .arg("calendar")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (out, _) = run(&[]);
    assert!(
        out.starts_with("trading calendar 2026 for NSE: upstox, fetched 2026-11-02T10:00:00"),
        "{out}"
    );
    for line in [
        "2026-01-26  Mon  closed",
        "2026-02-07  Sat  trading  NSE 09:15-15:30",
        "2026-04-01  Wed  trading",
        "2026-11-06  Fri  trading  NSE 18:00-19:00",
        "2026-11-24  Tue  closed",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(out.contains("[renewal] holidays"), "{out}");

    // Upstox's calendar unreachable: the copy the first run stored.
    post_json(
        &format!("{base}/sim/faults"),
        &serde_json::json!({"calendar_down": true}),
    );
    let (out, err) = run(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "stored");
    assert_eq!(v["year"], 2026);
    let budget = v["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == "2026-02-07")
        .unwrap();
    assert_eq!(budget["trading"], true);
    assert!(err.contains("was not fetched"), "{err}");
    // A year nobody has: the weekdays.
    let (out, _) = run(&["--year", "2031"]);
    assert!(
        out.starts_with("trading calendar 2031 for NSE: weekdays fallback"),
        "{out}"
    );
}

#[test]
fn ticks_export_prints_the_stored_ticks_of_a_period_as_csv() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    // Stored by the relay's writer in the daemon; written here straight to the store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let key = upkeep_store::key::read_key_file(&env.path("upkeep.key")).unwrap();
        let url = format!("sqlite://{}", env.path("upkeep.db").display());
        let store = upkeep_store::open_store(&url, key).await.unwrap();
        // 2026-02-10 09:15:00.250 IST and one second later; another instrument between.
        let t0 = 1_770_695_100_250;
        let tick =
            |instrument: &str, ltt_ms: i64, ltp: f64, depth: bool| upkeep_store::TickRecord {
                account: "main".into(),
                instrument: instrument.into(),
                ltt_ms,
                ltp,
                ltq: 75,
                volume: depth.then_some(1200),
                oi: None,
                bid_price: depth.then_some(219.3),
                bid_qty: depth.then_some(10),
                ask_price: depth.then_some(219.4),
                ask_qty: depth.then_some(20),
                received_ms: ltt_ms + 5,
            };
        store
            .record_ticks(
                &[
                    tick("NSE_EQ|INE669E01016", t0, 219.3, false),
                    tick("NSE_INDEX|Nifty 50", t0 + 500, 24_100.5, false),
                    tick("NSE_EQ|INE669E01016", t0 + 1_000, 219.35, true),
                    tick("NSE_EQ|INE669E01016", t0 + 3_600_000, 220.0, false),
                ],
                &[],
            )
            .await
            .unwrap();
        store.close().await;
    });
    let out = env
        .cmd()
        .args([
            "ticks",
            "export",
            "--from",
            "2026-02-10T09:15",
            "--to",
            "2026-02-10T10:00:00+05:30",
            "--instrument",
            "NSE_EQ|INE669E01016",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "instrument,ltt,ltp,ltq,volume,oi,bid_price,bid_qty,ask_price,ask_qty\n\
         NSE_EQ|INE669E01016,2026-02-10T09:15:00.250+05:30,219.3,75,,,,,,\n\
         NSE_EQ|INE669E01016,2026-02-10T09:15:01.250+05:30,219.35,75,1200,,219.3,10,219.4,20\n"
    );
    let out = env
        .cmd()
        .args([
            "ticks",
            "export",
            "--from",
            "tomorrow",
            "--to",
            "2026-02-11",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--from") && err.contains("is not a time"),
        "{err}"
    );
}

#[test]
fn feed_watch_prints_live_ticks_through_the_running_daemon() {
    let env = Env::new();
    let daemon_port = free_port();
    let (_sim, c) = start_sim(&env, daemon_port);
    let base = c["base_url"].as_str().unwrap().to_owned();
    post_json(
        &format!("{base}/sim/clock"),
        &serde_json::json!({"jump_to_ist": "2026-12-08T10:00:00"}),
    );
    let sink = env.path("feed_tokens.json");
    let extra = format!(
        "follow_sim_clock = true\n[sinks]\njson_file = \"{}\"",
        sink.display()
    );
    write_serve_config(&env, &c, daemon_port, "", &extra);
    let _serve = spawn_serve(&env.path("serve.toml"), false);
    wait_for("the daemon's first token", || sink.exists());
    let mut watch = Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("upkeep"))
            .arg("--config")
            .arg(env.path("serve.toml"))
            .args(["feed", "watch", "NSE_EQ|INE669E01016", "--mode", "full"])
            .env_remove("UPKEEP_MASTER_KEY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = watch.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("NSE_EQ|INE669E01016") && !l.contains("snapshot"))
    {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no live tick printed; got {lines:?}"),
        }
    }
    assert!(lines[0].starts_with("market: "), "{lines:?}");
    let tick = lines
        .iter()
        .rev()
        .find(|l| l.contains("NSE_EQ|INE669E01016"))
        .unwrap();
    // "HH:MM:SS.mmm  KEY  price  qty N  +x.xx%"
    assert!(
        tick.as_bytes()[2] == b':' && tick.contains(" qty "),
        "{tick}"
    );
}
