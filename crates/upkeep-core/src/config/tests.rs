use super::Strategy;
use super::*;
use crate::testing::token_a;
use jiff::civil::date;
use proptest::prelude::{prop_assert_eq, proptest};

/// Environment variables for one case.
type Vars<'a> = Vec<(&'a str, &'a str)>;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: Option<&str>, vars: &[(&str, &str)]) -> Config {
    Config::from_sources(text, &env(vars)).unwrap()
}

fn err(text: &str, vars: &[(&str, &str)]) -> String {
    Config::from_sources(Some(text), &env(vars))
        .unwrap_err()
        .to_string()
}

const TOTP_ACCOUNT: &str = r#"
[[account]]
id = "main"
client_id = "key"
client_secret = "app-secret-value"
redirect_uri = "http://127.0.0.1:7878/auth/upstox/callback"
renew = ["totp"]
[account.totp]
mobile = "9876543210"
pin = "482916"
secret = "JBSWY3DPEHPK3PXP"
"#;

#[test]
fn example_config_parses_and_validates() {
    let c = load(Some(example_toml()), &[]);
    assert_eq!(c.server.listen, "127.0.0.1:7878".parse().unwrap());
    assert_eq!(c.server.public_url, "http://127.0.0.1:7878");
    assert_eq!(c.store.backend(), Some(StoreBackend::Sqlite));
    assert_eq!(c.store.backup_dir, None);
    assert_eq!(c.sinks, SinksConfig::default());
    let a = c.default_account().unwrap();
    assert_eq!(a.id, "main");
    assert_eq!(
        a.renew,
        vec![Strategy::Totp, Strategy::TokenRequest, Strategy::Oauth]
    );
    assert!(a.can_renew_daily());
    assert_eq!(a.totp.as_ref().unwrap().pin.expose(), "123456");
    let p = c.to_policy();
    assert_eq!(
        p,
        RenewalPolicy {
            holidays: vec![date(2026, 11, 24)],
            ..RenewalPolicy::default()
        }
    );
    assert_eq!(c.thresholds(), Thresholds::default());
    assert_eq!(
        c.renewal.health_check_interval,
        SignedDuration::from_mins(30)
    );
    assert_eq!(c.alert.webhook.len(), 1);
    assert_eq!(c.alert.email.as_ref().unwrap().to, vec!["you@example.com"]);
    assert_eq!(c.gateway, GatewayConfig::default());
}

#[test]
fn gateway_default_accounts_name_configured_accounts_and_the_header_is_a_header_name() {
    let ok = load(
        Some(&format!(
            "{TOTP_ACCOUNT}\n[gateway.default_accounts]\nbot = \"main\"\n"
        )),
        &[],
    );
    assert_eq!(ok.gateway.default_accounts["bot"], "main");
    let e = err(
        &format!("{TOTP_ACCOUNT}\n[gateway.default_accounts]\nbot = \"other\"\n"),
        &[],
    );
    assert!(e.contains("gateway.default_accounts.bot"), "{e}");
    assert!(e.contains("\"other\", which is not configured"), "{e}");
    let e = err(
        &format!("{TOTP_ACCOUNT}\n[gateway]\naccount_header = \"X Account\"\n"),
        &[],
    );
    assert!(e.contains("gateway.account_header"), "{e}");
    let e = err(
        &format!("{TOTP_ACCOUNT}\n[gateway]\naccount_header = \"Authorization\"\n"),
        &[],
    );
    assert!(e.contains("standard header"), "{e}");
    let e = err(
        &format!("{TOTP_ACCOUNT}\n[gateway]\nrequest_timeout = \"0s\"\n"),
        &[],
    );
    assert!(e.contains("gateway.request_timeout"), "{e}");
}

#[test]
fn gateway_budget_and_cache_keys_are_read_and_checked_with_the_whole_config() {
    let ok = load(
        Some(&format!(
            "{TOTP_ACCOUNT}\n[gateway.budget]\nqueue_max = 8\nqueue_wait_ms = 250\n\
             [gateway.budget.rate_limits.order]\nper_second = 50\n\
             [gateway.cache]\nmax_age = \"2m\"\nstore = true\n"
        )),
        &[],
    );
    assert_eq!(ok.gateway.budget.queue_max, 8);
    assert_eq!(ok.gateway.budget.queue_wait_ms, 250);
    assert_eq!(
        ok.gateway.budget.rate_limits.order.unwrap().per_second,
        Some(50)
    );
    assert_eq!(ok.gateway.cache.max_age, SignedDuration::from_mins(2));
    assert!(ok.gateway.cache.store);
    let e = err(
        &format!("{TOTP_ACCOUNT}\n[gateway.cache]\npaths = [\"market-quote\"]\n"),
        &[],
    );
    assert!(e.contains("gateway.cache.paths"), "{e}");
    let e = err(
        &format!("{TOTP_ACCOUNT}\n[gateway.budget.rate_limits.orders]\nper_second = 5\n"),
        &[],
    );
    assert!(e.contains("orders"), "{e}");
}

#[test]
fn no_file_and_no_env_gives_the_defaults() {
    let c = load(None, &[]);
    assert_eq!(c, Config::default());
    assert!(c.accounts.is_empty());
    assert_eq!(c.upstox.api_url, "https://api.upstox.com");
    assert_eq!(c.upstox.order_url, "https://api-hft.upstox.com");
    assert_eq!(c.upstox.feed_url, "wss://api.upstox.com");
    assert_eq!(c.store.key_file, PathBuf::from("upkeep.key"));
}

#[test]
fn upkeep_env_overrides_nested_keys() {
    let c = load(
        Some("[server]\nlisten = \"127.0.0.1:1\"\n[renewal]\njitter = \"1m\"\n"),
        &[
            ("UPKEEP_SERVER__LISTEN", "0.0.0.0:9000"),
            ("UPKEEP_RENEWAL__WINDOW_START", "06:15"),
            ("UPKEEP_RENEWAL__TRADE_WEEKENDS", "true"),
            ("UPKEEP_RENEWAL__HOLIDAYS", "2026-11-24,2026-12-25"),
            ("UPKEEP_THRESHOLDS__WARNING", "4h"),
            ("UPKEEP_UPSTOX__API_URL", "http://127.0.0.1:9999/"),
            ("UPKEEP_STORE__URL", "postgres://upkeep:pw@db:5432/upkeep"),
            ("UPKEEP_CONFIG", "/etc/upkeep.toml"),
            ("UPKEEP_LOG", "debug"),
            ("UNRELATED__THING", "x"),
        ],
    );
    assert_eq!(c.server.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        c.server.public_url, "http://127.0.0.1:9000",
        "derived from listen"
    );
    assert_eq!(c.renewal.window_start, Time::constant(6, 15, 0, 0));
    assert_eq!(
        c.renewal.jitter,
        SignedDuration::from_mins(1),
        "file value kept"
    );
    assert!(c.renewal.trade_weekends);
    assert_eq!(
        c.renewal.holidays,
        vec![date(2026, 11, 24), date(2026, 12, 25)]
    );
    assert_eq!(c.thresholds.warning, SignedDuration::from_hours(4));
    assert_eq!(
        c.upstox.api_url, "http://127.0.0.1:9999",
        "trailing slash trimmed"
    );
    assert_eq!(c.store.backend(), Some(StoreBackend::Postgres));
    assert_eq!(
        c.store.redacted_url(),
        "postgres://upkeep:***@db:5432/upkeep"
    );
}

#[test]
fn env_array_syntax_is_accepted_for_lists() {
    let c = load(
        None,
        &[(
            "UPKEEP_RENEWAL__HOLIDAYS",
            r#"["2026-11-24", "2027-01-26"]"#,
        )],
    );
    assert_eq!(
        c.renewal.holidays,
        vec![date(2026, 11, 24), date(2027, 1, 26)]
    );
}

#[test]
fn exchanges_default_to_nse_and_reach_the_policy_in_upper_case() {
    assert_eq!(load(None, &[]).to_policy().exchanges, vec!["NSE"]);
    let c = load(Some("[renewal]\nexchanges = [\"nse\", \"BSE\"]\n"), &[]);
    assert_eq!(c.to_policy().exchanges, vec!["NSE", "BSE"]);
}

#[test]
fn bare_toml_dates_are_accepted_as_holidays() {
    let c = load(Some("[renewal]\nholidays = [2026-11-24]\n"), &[]);
    assert_eq!(c.renewal.holidays, vec![date(2026, 11, 24)]);
}

#[test]
fn legacy_env_creates_main_account_and_infers_strategy() {
    let tok = token_a();
    let cases: Vec<(Vars, UpstoxEnv, Vec<Strategy>)> = vec![
        (
            vec![("UPSTOX_ACCESS_TOKEN", tok.expose())],
            UpstoxEnv::Live,
            vec![Strategy::Static],
        ),
        (
            vec![
                ("UPSTOX_CLIENT_ID", "key"),
                ("UPSTOX_CLIENT_SECRET", "sec"),
                ("UPSTOX_REDIRECT_URI", "http://127.0.0.1:7878/cb"),
            ],
            UpstoxEnv::Live,
            vec![Strategy::Oauth],
        ),
        (
            vec![
                ("UPSTOX_CLIENT_ID", "key"),
                ("UPSTOX_CLIENT_SECRET", "sec"),
                ("UPSTOX_REDIRECT_URI", "http://127.0.0.1:7878/cb"),
                ("UPSTOX_USERNAME", "9876543210"),
                ("UPSTOX_PIN_CODE", "123456"),
                ("UPSTOX_TOTP_SECRET", "JBSWY3DPEHPK3PXP"),
            ],
            UpstoxEnv::Live,
            vec![Strategy::Totp],
        ),
        (
            vec![("UPSTOX_SANDBOX_TOKEN", tok.expose())],
            UpstoxEnv::Sandbox,
            vec![Strategy::Static],
        ),
    ];
    for (vars, want_env, want_renew) in cases {
        let c = load(None, &vars);
        assert_eq!(c.accounts.len(), 1);
        let a = &c.accounts[0];
        assert_eq!(a.id, "main");
        assert_eq!(a.env, want_env, "{vars:?}");
        assert_eq!(a.renew, want_renew, "{vars:?}");
    }
    let c = load(None, &[("UPSTOX_SANDBOX_TOKEN", tok.expose())]);
    assert_eq!(c.accounts[0].initial_token(), Some(&tok));
}

#[test]
fn legacy_env_overrides_the_default_account_of_the_file() {
    let text = r#"
[[account]]
id = "first"
[[account]]
id = "second"
default = true
renew = ["totp"]
client_id = "file-key"
client_secret = "file-secret"
redirect_uri = "http://127.0.0.1:7878/cb"
[account.totp]
mobile = "9876543210"
pin = "111111"
"#;
    let c = load(
        Some(text),
        &[
            ("UPSTOX_TOTP_SECRET", "JBSWY3DPEHPK3PXP"),
            ("UPSTOX_PIN_CODE", "222222"),
            ("UPSTOX_CLIENT_ID", "env-key"),
            ("UPSTOX_ENV", "LIVE"),
            ("UPSTOX_ACCESS_TOKEN", ""),
        ],
    );
    let a = c.default_account().unwrap();
    assert_eq!(a.id, "second");
    assert_eq!(a.client_id.as_deref(), Some("env-key"));
    assert_eq!(a.renew, vec![Strategy::Totp], "file strategies kept");
    let totp = a.totp.as_ref().unwrap();
    assert_eq!(totp.pin.expose(), "222222");
    assert_eq!(totp.mobile, "9876543210");
    assert_eq!(a.access_token, None, "empty variables are ignored");
    assert_eq!(c.account("first").unwrap().client_id, None);
}

#[test]
fn account_trading_weekends_widens_its_policy() {
    let text = "[[account]]\nid = \"wk\"\ntrades_weekends = true\n[[account]]\nid = \"plain\"\n";
    let c = load(Some(text), &[]);
    assert!(c.policy_for(c.account("wk").unwrap()).trade_weekends);
    assert!(!c.policy_for(c.account("plain").unwrap()).trade_weekends);
    assert!(
        !c.account("wk").unwrap().can_renew_daily(),
        "no renew list means static"
    );
}

#[test]
fn redirect_uri_defaults_to_the_daemon_callback() {
    let text = r#"
[server]
public_url = "https://upkeep.example.com/"
[[account]]
id = "a"
renew = ["oauth"]
client_id = "k"
client_secret = "s"
[[account]]
id = "b"
redirect_uri = "https://b.example.com/cb"
"#;
    let c = load(Some(text), &[]);
    assert_eq!(
        c.redirect_uri_for(c.account("a").unwrap()),
        "https://upkeep.example.com/auth/upstox/callback"
    );
    assert_eq!(
        c.redirect_uri_for(c.account("b").unwrap()),
        "https://b.example.com/cb"
    );
}

#[test]
fn each_invalid_config_gets_a_one_line_message_naming_key_and_fix() {
    let bad_token = "not-a-jwt";
    let cases: Vec<(String, Vars, &str)> = vec![
        (
            "[[account]]\nid = \"main\"\nrenew = [\"totpp\"]\n".into(),
            vec![],
            r#"account[0].renew: unknown strategy "totpp"; use one of totp, token_request, oauth, refresh_token, static"#,
        ),
        (
            "[[account]]\nid = \"main\"\nclient_id = \"k\"\nclient_secret = \"s\"\nredirect_uri = \"http://127.0.0.1/cb\"\nrenew = [\"totp\"]\n".into(),
            vec![],
            r#"account "main": strategy totp needs [account.totp] mobile, pin and secret"#,
        ),
        (
            "[[account]]\nid = \"main\"\nrenew = [\"oauth\"]\nclient_id = \"k\"\n".into(),
            vec![],
            r#"account "main": strategy oauth needs client_secret (from the app on the Upstox Developer Apps page)"#,
        ),
        (
            "[[account]]\nid = \"main\"\n[[account]]\nid = \"main\"\n".into(),
            vec![],
            r#"account[1].id: duplicate account id "main" (also account[0]); give each [[account]] its own id"#,
        ),
        (
            "[[account]]\nid = \"my acct\"\n".into(),
            vec![],
            r#"account[0].id: "my acct" is not a valid id; use 1-64 letters, digits, '-' or '_'"#,
        ),
        (
            "[server]\nlisten = \"localhost\"\n".into(),
            vec![],
            r#"server.listen: "localhost" is not an IP address and port; use e.g. 127.0.0.1:7878 or 0.0.0.0:7878"#,
        ),
        (
            "".into(),
            vec![("UPKEEP_SERVER__LISTEN", "nope")],
            r#"server.listen (from UPKEEP_SERVER__LISTEN): "nope" is not an IP address and port; use e.g. 127.0.0.1:7878 or 0.0.0.0:7878"#,
        ),
        (
            "[renewal]\nwindow_start = \"05:30\"\ndeadline = \"05:00\"\n".into(),
            vec![],
            "renewal.deadline: 05:00 is not after window_start 05:30; set a deadline later than window_start",
        ),
        (
            "[renewal]\nwindow_start = \"02:00\"\n".into(),
            vec![],
            "renewal.window_start: 02:00 is before the 03:30 IST rollover, and a token made then dies at 03:30; use 03:30 or later",
        ),
        (
            "[renewal]\ndeadline = \"22:00\"\n".into(),
            vec![],
            "renewal.deadline: 22:00 is too close to the next 03:30 IST rollover (a token made then lives under 6 hours); use 21:30 or earlier",
        ),
        (
            "[renewal]\njitter = \"10x\"\n".into(),
            vec![],
            r#"renewal.jitter: invalid duration "10x"; use a number and a unit (s, m, h, d), e.g. 90s, 30m, 3h, 3d"#,
        ),
        (
            "[renewal]\nwindow_start = \"5.30\"\n".into(),
            vec![],
            r#"renewal.window_start: invalid time "5.30"; use HH:MM in IST, e.g. 05:30"#,
        ),
        (
            "[renewal]\nholidays = [\"2026-13-01\"]\n".into(),
            vec![],
            r#"renewal.holidays: invalid date "2026-13-01"; use YYYY-MM-DD, e.g. 2026-11-24"#,
        ),
        (
            "[renewal]\nexchanges = []\n".into(),
            vec![],
            r#"renewal.exchanges: is empty; list the exchanges the accounts trade on, e.g. ["NSE"]"#,
        ),
        (
            "[renewal]\nexchanges = [\"N SE\"]\n".into(),
            vec![],
            r#"renewal.exchanges: "N SE" is not an exchange name; use names like "NSE" or "BSE""#,
        ),
        (
            "[renewal]\nhealth_check_interval = \"1s\"\n".into(),
            vec![],
            "renewal.health_check_interval: 1s is too short; use at least 10s",
        ),
        (
            "[thresholds]\nwarning = \"1h\"\ncritical = \"2h\"\n".into(),
            vec![],
            "thresholds.critical: 2h is more than thresholds.warning 1h; critical must be the smaller one",
        ),
        (
            "[server]\nlistn = \"127.0.0.1:1\"\n".into(),
            vec![],
            "server.listn: unknown key `listn`; valid keys here are listen, public_url, max_connections, header_read_timeout, idle_timeout, shutdown_timeout",
        ),
        (
            "[serverr]\n".into(),
            vec![],
            "serverr: unknown key `serverr`; valid keys here are server, store, upstox, renewal, thresholds, sinks, account, alert, gateway, relay",
        ),
        (
            "[[account]]\nenv = \"live\"\n".into(),
            vec![],
            "account[0]: missing required key `id`",
        ),
        (
            "[[account]]\nid = \"main\"\nenv = \"paper\"\n".into(),
            vec![],
            r#"account[0].env: unknown env "paper"; use live or sandbox"#,
        ),
        (
            "".into(),
            vec![("UPSTOX_CLIENT_ID", "k"), ("UPSTOX_ENV", "paper")],
            r#"account[0].env (from UPSTOX_ENV): unknown env "paper"; use live or sandbox"#,
        ),
        (
            "[account]\nid = \"main\"\n".into(),
            vec![],
            "account: write accounts as [[account]] (double brackets), one table per account",
        ),
        (
            "".into(),
            vec![("UPKEEP_SERVR__LISTEN", "0.0.0.0:1")],
            "UPKEEP_SERVR__LISTEN: unknown section `servr`; use one of server, store, upstox, renewal, thresholds, sinks",
        ),
        (
            "[store]\nurl = \"mysql://root:hunter2@db/x\"\n".into(),
            vec![],
            "store.url: unsupported database URL scheme `mysql`; use sqlite://upkeep.db or postgres://USER@HOST/DB",
        ),
        (
            "[[account]]\nid = \"sb\"\nenv = \"sandbox\"\nrenew = [\"oauth\"]\n".into(),
            vec![],
            r#"account "sb": strategy oauth does not work with env = "sandbox" (sandbox tokens are generated on the Upstox Developer Apps page and last 30 days); use renew = ["static"] and paste the token"#,
        ),
        (
            "[[account]]\nid = \"main\"\nrenew = [\"static\", \"static\"]\n".into(),
            vec![],
            r#"account "main".renew: strategy static is listed twice; list each once"#,
        ),
        (
            "[[account]]\nid = \"main\"\nrenew = [\"refresh_token\"]\n[account.refresh_token]\ntoken_url = \"https://t.example.com\"\n".into(),
            vec![],
            r#"account "main": strategy refresh_token needs [account.refresh_token] refresh_token"#,
        ),
        (
            TOTP_ACCOUNT.replace("JBSWY3DPEHPK3PXP", "not-base32!"),
            vec![],
            r#"account "main".totp.secret: is not a base32 TOTP seed (value not shown); copy the key shown when enabling TOTP on Upstox"#,
        ),
        (
            "[[account]]\nid = \"main\"\n".into(),
            vec![("UPSTOX_ACCESS_TOKEN", bad_token)],
            r#"account "main".access_token: token is not a JWT (expected three dot-separated parts); copy the whole access token"#,
        ),
        (
            "[[account]]\nid = \"a\"\ndefault = true\n[[account]]\nid = \"b\"\ndefault = true\n".into(),
            vec![],
            "account: 2 accounts have default = true (a, b); mark only one",
        ),
        (
            "[[alert.webhook]]\nurl = \"https://api.telegram.org/botSECRET/sendMessage\"\nformat = \"telegram\"\n".into(),
            vec![],
            "alert.webhook[0]: format telegram needs chat_id (the chat the bot posts to)",
        ),
        (
            "[[alert.webhook]]\nurl = \"ftp://hooks/SECRET\"\n".into(),
            vec![],
            "alert.webhook[0].url: is not an http(s) URL (value not shown)",
        ),
        (
            "[alert.email]\nsmtp_url = \"smtp://me:SECRET@mail:25\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n".into(),
            vec![],
            "alert.email.smtp_url: holds credentials (value not shown); move them to alert.email.username and alert.email.password",
        ),
        (
            "[[account]]\nid = \"main\"\n[account.totp]\npin = 123456\n".into(),
            vec![],
            "account[0].totp.pin: expected a quoted string (value not shown); put quotes around it",
        ),
        (
            "[[account]]\nid = \"main\"\ntotp = \"JBSWY3DPEHPK3PXP\"\n".into(),
            vec![],
            "account[0].totp: expected a table, found a string",
        ),
        (
            "[[account]]\nid = \"main\"\nclient_id = \"k\"\nclient_secret = \"s\"\nrenew = [\"token_request\"]\n".into(),
            vec![],
            r#"account "main".user_id: is required with renew = ["token_request"]: tokens arrive by webhook, which anyone can post to, so upkeep must know whose they are; set user_id = "<your UCC>" (the client id shown in the Upstox app)"#,
        ),
        (
            "[[account]]\nid = \"main\"\nuser_id = \"AB 12\"\n".into(),
            vec![],
            r#"account "main".user_id: is not an Upstox UCC; use the client id shown in the Upstox app (letters and digits, e.g. "AB1234")"#,
        ),
        (
            "[[account]]\nid = \"a\"\nclient_id = \"k\"\n[[account]]\nid = \"b\"\nclient_id = \"k\"\n".into(),
            vec![],
            r#"account "b".client_id: accounts "a" and "b" use the same client_id; each account needs its own Upstox app (the webhook finds the account by it)"#,
        ),
        (
            "[renewal]\ntrade_weekends = \"yes\"\n".into(),
            vec![],
            "renewal.trade_weekends: expected true or false, found a string",
        ),
        (
            "[server]\nlisten = \n".into(),
            vec![],
            "config is not valid TOML (line 2, column 10): invalid string; expected `\"`, `'`",
        ),
    ];
    for (text, vars, want) in cases {
        let got = err(&text, &vars);
        assert_eq!(got, want, "config:\n{text}");
        assert!(!got.contains('\n'));
        for secret in [
            "hunter2",
            "SECRET",
            "123456",
            "JBSWY3DPEHPK3PXP",
            "app-secret-value",
        ] {
            assert!(!got.contains(secret), "{got}");
        }
    }
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_an_example_of_a_right_one() {
    let cases: Vec<(&str, Vars, &str)> = vec![
        (
            "[renewal]\ndeadline = 900\n",
            vec![],
            r#"renewal.deadline: expected a time like "09:00", found an integer"#,
        ),
        (
            "[renewal]\nwindow_start = 5.30\n",
            vec![],
            r#"renewal.window_start: expected a time like "05:30", found a decimal number"#,
        ),
        (
            "[renewal]\nwarn_ahead = 3\n",
            vec![],
            r#"renewal.warn_ahead: expected a duration like "3d", found an integer"#,
        ),
        (
            "[renewal]\nholidays = 2026\n",
            vec![],
            r#"renewal.holidays: expected a list of dates, e.g. ["2026-11-24"]"#,
        ),
        (
            "[server]\nmax_connections = \"lots\"\n",
            vec![],
            "server.max_connections: expected a whole number like 2048, found a string",
        ),
        (
            "[server]\nlisten = 7878\n",
            vec![],
            r#"server.listen: expected an address and port like "127.0.0.1:7878", found an integer"#,
        ),
        (
            "[[account]]\nid = 1\n",
            vec![],
            r#"account[0].id: expected a name like "main", found an integer"#,
        ),
        (
            "[[account]]\nid = \"main\"\nrenew = true\n",
            vec![],
            r#"account[0].renew: expected a list of strategy names, e.g. ["totp", "oauth"]"#,
        ),
        (
            "[[account]]\nid = \"main\"\n[account.totp]\nmobile = 9876543210\n",
            vec![],
            r#"account[0].totp.mobile: expected a quoted number like "9876543210", found an integer"#,
        ),
        (
            "[[alert.webhook]]\nurl = \"https://hooks.example.com/x\"\nformat = 1\n",
            vec![],
            r#"alert.webhook[0].format: expected "generic", "slack" or "telegram""#,
        ),
        (
            "[renewal]\n",
            vec![("UPKEEP_RENEWAL__TRADE_HOLIDAYS", "[1]")],
            "renewal.trade_holidays (from UPKEEP_RENEWAL__TRADE_HOLIDAYS): expected true or false, found a list",
        ),
    ];
    for (text, vars, want) in cases {
        let got = err(text, &vars);
        assert_eq!(got, want, "config:\n{text}");
    }
}

#[test]
fn error_messages_stay_one_line_when_a_quoted_value_holds_control_characters() {
    // Found by fuzz/config_toml: `id = """<newline><newline>"""` (an id that is a line
    // break) gave a two-line message; a value could forge a line of `config check`'s
    // output or of a log, or carry terminal escapes. Control characters are escaped.
    assert_eq!(
        err("[[account]]\nid=\"\"\"\n\n\"\"\"", &[]),
        r#"account[0].id: "\n" is not a valid id; use 1-64 letters, digits, '-' or '_'"#
    );
    let cases = [
        "[server]\npublic_url = \"ftp://a\\nb\"\n",
        "[upstox]\nfeed_url = \"https://x\\r\\nSet: y\"\n",
        "[[account]]\nid = \"a\\u001b[31mb\"\n",
        "[alert.email]\nsmtp_url = \"smtp://h\"\nfrom = \"x\\ny\"\nto = [\"\\t\"]\n",
    ];
    for text in cases {
        let got = err(text, &[]);
        assert!(!got.chars().any(char::is_control), "{got:?} from {text:?}");
    }
}

#[test]
fn a_totp_seed_too_short_to_hold_one_key_byte_is_rejected() {
    // Found by fuzz/config_toml: one base32 symbol carries 5 bits, less than the one byte
    // of key the TOTP generator needs, so such a seed passed validation and the first
    // TOTP login failed ("the TOTP secret is not valid base32").
    let want = r#"account "main".totp.secret: is not a base32 TOTP seed (value not shown); copy the key shown when enabling TOTP on Upstox"#;
    for seed in ["B", "b", " B ", "B=======", "\tQ="] {
        let text = TOTP_ACCOUNT.replace("JBSWY3DPEHPK3PXP", seed);
        assert_eq!(err(&text, &[]), want, "seed {seed:?}");
    }
    // The fuzzer's input: a totp account made from the legacy variables alone.
    let vars = env(&[
        ("UPSTOX_CLIENT_ID", "y"),
        ("UPSTOX_CLIENT_SECRET", "5i"),
        ("UPSTOX_USERNAME", "0"),
        ("UPSTOX_PIN_CODE", "2"),
        ("UPSTOX_TOTP_SECRET", "B"),
    ]);
    assert_eq!(
        Config::from_sources(None, &vars).unwrap_err().to_string(),
        want
    );
    // Two symbols carry 10 bits: one byte of key, which the generator takes.
    load(Some(&TOTP_ACCOUNT.replace("JBSWY3DPEHPK3PXP", "JB")), &[]);
}

#[test]
fn a_webhook_only_account_is_valid_once_its_user_is_known_and_totp_proves_it_itself() {
    let text = "[[account]]\nid = \"main\"\nclient_id = \"k\"\nclient_secret = \"s\"\n\
                renew = [\"token_request\"]\nuser_id = \"AB1234\"\n";
    let c = load(Some(text), &[]);
    assert_eq!(c.accounts[0].user_id.as_deref(), Some("AB1234"));
    // The legacy variable names the default account's user.
    let c = load(
        Some(
            "[[account]]\nid = \"main\"\nclient_id = \"k\"\nclient_secret = \"s\"\nrenew = [\"token_request\"]\n",
        ),
        &[("UPSTOX_USER_ID", "AB1234")],
    );
    assert_eq!(c.accounts[0].user_id.as_deref(), Some("AB1234"));
    // A chain with a login of its own learns the user from that login.
    let c = load(
        Some(&TOTP_ACCOUNT.replace("[\"totp\"]", "[\"totp\", \"token_request\"]")),
        &[],
    );
    assert_eq!(c.accounts[0].user_id, None);
}

#[test]
fn all_validation_problems_are_reported_together() {
    let text =
        "[renewal]\ndeadline = \"05:00\"\n[[account]]\nid = \"x\"\n[[account]]\nid = \"x\"\n";
    let e = Config::from_sources(Some(text), &BTreeMap::new()).unwrap_err();
    assert_eq!(e.problems().len(), 2);
    assert_eq!(
        e.to_string(),
        "renewal.deadline: 05:00 is not after window_start 05:30; set a deadline later than \
         window_start; account[1].id: duplicate account id \"x\" (also account[0]); give each \
         [[account]] its own id"
    );
}

#[test]
fn debug_output_of_a_config_shows_no_secrets() {
    let c = load(
        Some(TOTP_ACCOUNT),
        &[
            ("UPSTOX_ACCESS_TOKEN", token_a().expose()),
            ("UPKEEP_STORE__URL", "postgres://u:hunter2@db/x"),
        ],
    );
    let printed = format!("{c:?}");
    for secret in [
        "482916",
        "JBSWY3DPEHPK3PXP",
        "app-secret-value",
        "hunter2",
        token_a().expose(),
    ] {
        assert!(!printed.contains(secret), "Debug leaks {secret}: {printed}");
    }
}

#[test]
fn durations_times_and_dates_parse() {
    let d = |s: &str| parse_duration(s).unwrap();
    assert_eq!(d("90s"), SignedDuration::from_secs(90));
    assert_eq!(d("30m"), SignedDuration::from_mins(30));
    assert_eq!(d("3h"), SignedDuration::from_hours(3));
    assert_eq!(d("3d"), SignedDuration::from_hours(72));
    assert_eq!(d("1h30m"), SignedDuration::from_mins(90));
    assert_eq!(d("1h 30m"), SignedDuration::from_mins(90));
    assert_eq!(d("0"), SignedDuration::ZERO);
    for bad in ["", "10", "m", "3w", "-1h", "1.5h", "99999999999999999999s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_time("05:30").unwrap(), Time::constant(5, 30, 0, 0));
    assert_eq!(parse_time("5:30").unwrap(), Time::constant(5, 30, 0, 0));
    assert_eq!(
        parse_time("21:30:15").unwrap(),
        Time::constant(21, 30, 15, 0)
    );
    for bad in ["24:00", "05:60", "0530", "05:3", "aa:bb", ""] {
        assert!(parse_time(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_date("2026-11-24").unwrap(), date(2026, 11, 24));
    assert!(parse_date("2026-02-30").is_err());
}

#[test]
fn renew_may_be_a_comma_separated_string() {
    let c = load(Some("[[account]]\nid = \"a\"\nrenew = \"static\"\n"), &[]);
    assert_eq!(c.accounts[0].renew, vec![Strategy::Static]);
}

#[test]
fn redact_userinfo_hides_only_the_password() {
    assert_eq!(redact_userinfo("sqlite://upkeep.db"), "sqlite://upkeep.db");
    assert_eq!(
        redact_userinfo("postgres://u@h/db"),
        "postgres://u:***@h/db"
    );
    assert_eq!(
        redact_userinfo("postgres://u:p@ss@h/db?x=1"),
        "postgres://u:***@h/db?x=1"
    );
}

#[test]
fn redacted_store_url_never_shows_a_password_holding_url_delimiters() {
    // Passwords pasted raw (not percent-encoded) often hold '#', '/' or '?'.
    for (url, password) in [
        ("postgres://upkeep:Tr#d1ng@db.internal/upkeep", "Tr#d1ng"),
        ("postgres://upkeep:a/b@db/upkeep", "a/b"),
        ("postgresql://upkeep:why?not@db:5432/upkeep", "why?not"),
        (
            "postgres://upkeep:p#1/x?y@db/upkeep?sslmode=require",
            "p#1/x?y",
        ),
    ] {
        let shown = redact_userinfo(url);
        assert!(!shown.contains(password), "{url} -> {shown}");
        assert!(shown.starts_with("postgres"), "{shown}");
        assert!(shown.contains("upkeep:***@db"), "{shown}");
    }
    assert_eq!(
        redact_userinfo("postgres://upkeep:Tr#d1ng@db.internal/upkeep"),
        "postgres://upkeep:***@db.internal/upkeep"
    );
    // An '@' in a file path is not userinfo.
    assert_eq!(
        redact_userinfo("sqlite:///srv/me@home/upkeep.db"),
        "sqlite:///srv/me@home/upkeep.db"
    );
}

proptest! {
    #[test]
    fn config_durations_round_trip(secs in 0i64..(365 * 86_400)) {
        let d = SignedDuration::from_secs(secs);
        prop_assert_eq!(parse_duration(&format_config_duration(d)).unwrap(), d);
    }

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in "\\PC{0,200}") {
        let _ = Config::from_sources(Some(&text), &BTreeMap::new());
    }
}

#[test]
fn relative_paths_of_a_config_file_resolve_against_its_folder() {
    let text = "[store]\nurl = \"sqlite://data/upkeep.db?mode=rwc\"\nkey_file = \"upkeep.key\"\n\
                backup_dir = \"backups\"\n[sinks]\njson_file = \"/abs/tokens.json\"\nenv_file = \".env\"\n";
    let mut c = load(Some(text), &[]);
    c.resolve_relative_paths(std::path::Path::new("/etc/upkeep"));
    assert_eq!(
        c.store.url.expose(),
        "sqlite:///etc/upkeep/data/upkeep.db?mode=rwc"
    );
    assert_eq!(
        c.store.sqlite_path(),
        Some(PathBuf::from("/etc/upkeep/data/upkeep.db"))
    );
    assert_eq!(c.store.key_file, PathBuf::from("/etc/upkeep/upkeep.key"));
    assert_eq!(
        c.store.backup_dir,
        Some(PathBuf::from("/etc/upkeep/backups"))
    );
    assert_eq!(c.sinks.json_file, Some(PathBuf::from("/abs/tokens.json")));
    assert_eq!(c.sinks.env_file, Some(PathBuf::from("/etc/upkeep/.env")));
    // Absolute, in-memory and PostgreSQL URLs are left alone.
    for url in [
        "sqlite:///var/lib/upkeep.db",
        "sqlite::memory:",
        "postgres://u@h/db",
    ] {
        let mut c = load(Some(&format!("[store]\nurl = \"{url}\"\n")), &[]);
        c.resolve_relative_paths(std::path::Path::new("/etc/upkeep"));
        assert_eq!(c.store.url.expose(), url);
    }
}

#[test]
fn follow_sim_clock_needs_a_simulator_not_upstox() {
    // Following a clock that Upstox does not have would stop the daemon from starting,
    // and a real account must never run on a simulated time.
    for api_url in [
        "https://api.upstox.com",
        "https://API.Upstox.com:443/",
        "https://user@api-v2.upstox.com",
        "http://upstox.com.",
    ] {
        let text = format!("[upstox]\napi_url = \"{api_url}\"\nfollow_sim_clock = true\n");
        assert!(
            err(&text, &[]).starts_with(
                "upstox.follow_sim_clock: is on while upstox.api_url is Upstox itself"
            ),
            "{api_url}"
        );
    }
    for api_url in [
        "http://127.0.0.1:7879",
        "http://notupstox.com",
        "http://upstox.com.example",
    ] {
        let text = format!("[upstox]\napi_url = \"{api_url}\"\nfollow_sim_clock = true\n");
        assert!(load(Some(&text), &[]).upstox.follow_sim_clock, "{api_url}");
    }
    assert!(!load(None, &[]).upstox.follow_sim_clock, "off by default");
}

#[test]
fn an_unedited_example_is_flagged_key_by_key_without_showing_secrets() {
    let example = load(Some(example_toml()), &[]);
    let found = example.placeholders();
    let keys: Vec<&str> = found.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            r#"account "main".client_id"#,
            r#"account "main".client_secret"#,
            r#"account "main".user_id"#,
            r#"account "main".totp.mobile"#,
            r#"account "main".totp.pin"#,
            r#"account "main".totp.secret"#,
            "alert.webhook[0].url",
            "alert.email.from",
            "alert.email.to",
        ]
    );
    for line in &found {
        assert!(
            !line.contains("your-api-secret") && !line.contains("123456"),
            "{line}"
        );
        assert!(
            !line.contains("JBSWY3DPEHPK3PXP") && !line.contains("hooks.example"),
            "{line}"
        );
    }
    // Edited values pass.
    let edited = example_toml()
        .replace("your-api-key", "k7f3")
        .replace("your-api-secret", "s9q")
        .replace("AB1234", "7QX2LM")
        .replace("9876543210", "9123456780")
        .replace("\"123456\"", "\"482913\"")
        .replace("JBSWY3DPEHPK3PXP", "KRSXG5DSNFXGOIDB")
        .replace("hooks.example.com", "hooks.acme.in")
        .replace("@example.com", "@acme.in");
    assert_eq!(
        load(Some(&edited), &[]).placeholders(),
        Vec::<String>::new()
    );
}

#[test]
fn relay_defaults_match_the_example_and_an_empty_file() {
    assert_eq!(load(None, &[]).relay, RelayConfig::default());
    assert_eq!(
        load(Some(example_toml()), &[]).relay,
        RelayConfig::default()
    );
    let r = RelayConfig::default();
    assert!(r.enabled && !r.persist_ticks);
    assert_eq!(r.stall_timeout, SignedDuration::from_secs(30));
}

#[test]
fn relay_settings_out_of_range_are_refused_by_key() {
    let e = err("[relay]\nstall_timeout = \"2s\"\n", &[]);
    assert!(
        e.contains("relay.stall_timeout") && e.contains("5s to 10m"),
        "{e}"
    );
    let e = err(
        "[relay]\nbackoff_min = \"10s\"\nbackoff_max = \"5s\"\n",
        &[],
    );
    assert!(e.contains("relay.backoff_max"), "{e}");
    let e = err("[relay]\nmax_connections = 6\n", &[]);
    assert!(
        e.contains("relay.max_connections") && e.contains("at most 5"),
        "{e}"
    );
    let e = err("[relay]\nconsumer_queue = 0\n", &[]);
    assert!(e.contains("relay.consumer_queue"), "{e}");
    let e = err("[relay]\nstall_timeout = 30\n", &[]);
    assert!(
        e.contains("relay.stall_timeout") && e.contains("\"30s\""),
        "{e}"
    );
    let ok = load(
        Some("[relay]\nenabled = false\nstall_timeout = \"45s\"\nmax_connections = 1\n"),
        &[],
    );
    assert!(!ok.relay.enabled);
    assert_eq!(ok.relay.max_connections, 1);
}
