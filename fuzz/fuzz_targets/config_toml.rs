//! The configuration file: `upkeep_core::Config::from_sources` (TOML text + environment
//! map -> parse, env overrides, defaults, validation), as `upkeep config check` and
//! `upkeep serve` run it on a user's file.
//!
//! Input: UTF-8 text. Everything before a line `#% env` is the TOML file; each line after
//! it is one `NAME=VALUE` environment variable.
//!
//! Checked: no panic; every error message is one line and never contains the value of a
//! secret key; a config that validates validates again, yields its policy, thresholds
//! and redirect URIs, and has TOTP seeds the TOTP generator accepts.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use upkeep_core::config::{Config, Strategy, parse_date, parse_duration, parse_time};
use upkeep_upstox::TotpCode;

const ENV_MARKER: &str = "\n#% env\n";

/// Keys whose values are secrets (anywhere in the file).
const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "access_token",
    "sandbox_token",
    "pin",
    "secret",
    "refresh_token",
    "password",
];
/// Environment variables holding secrets.
const SECRET_ENV: &[&str] = &[
    "UPSTOX_ACCESS_TOKEN",
    "UPSTOX_SANDBOX_TOKEN",
    "UPSTOX_CLIENT_SECRET",
    "UPSTOX_PIN_CODE",
    "UPSTOX_TOTP_SECRET",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml_text, env_text) = text.split_once(ENV_MARKER).unwrap_or((text, ""));
    let env: BTreeMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    // The value parsers on their own (short inputs: they are single values).
    if text.len() <= 64 {
        let _ = parse_duration(text);
        let _ = parse_time(text);
        let _ = parse_date(text);
    }

    match Config::from_sources(Some(toml_text), &env) {
        Err(e) => {
            let (secrets, public) = secrets_of(toml_text, &env);
            for p in e.problems() {
                let msg = p.to_string();
                assert!(!msg.contains('\n'), "multi-line error: {msg}");
                for s in &secrets {
                    if !public.iter().any(|v| v.contains(s.as_str())) && msg.contains(s.as_str())
                    {
                        assert_not_echoed(toml_text, &env, s);
                    }
                }
            }
        }
        Ok(config) => {
            assert_eq!(config.validate(), Ok(()), "a loaded config no longer validates");
            let _ = config.to_policy();
            let _ = config.thresholds();
            let _ = config.default_account();
            for a in &config.accounts {
                let _ = config.redirect_uri_for(a);
                let _ = config.policy_for(a);
                let _ = a.initial_token();
                let _ = a.can_renew_daily();
                assert!(config.account(&a.id).is_some());
                // Validation accepted the account's TOTP seed: the login must be able to
                // use it (or the first renewal fails at 05:30 instead of at `config check`).
                if a.renew.contains(&Strategy::Totp)
                    && let Some(t) = &a.totp
                {
                    assert!(
                        TotpCode::from_base32(&t.secret).is_ok(),
                        "validation accepted a TOTP seed the TOTP generator rejects"
                    );
                }
            }
        }
    }
});

/// A message contains the secret `s`: it may be fixed text that happens to equal the
/// secret. Replace the secret in the input: if the replacement shows in a message, the
/// message echoes the value.
fn assert_not_echoed(toml_text: &str, env: &BTreeMap<String, String>, s: &str) {
    let marker = "Q".repeat(s.chars().count());
    let env2 = env
        .iter()
        .map(|(k, v)| (k.clone(), v.replace(s, &marker)))
        .collect();
    if let Err(e) = Config::from_sources(Some(&toml_text.replace(s, &marker)), &env2) {
        for p in e.problems() {
            let msg = p.to_string();
            assert!(!msg.contains(&marker), "error shows a secret: {msg}");
        }
    }
}

/// (secret values, every other string in the input): a secret is only looked for in
/// error messages when no non-secret value or key contains it (a message may rightly
/// quote those).
fn secrets_of(toml_text: &str, env: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    fn walk(v: &toml::Value, key: &str, secrets: &mut Vec<String>, public: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => {
                let in_secret = SECRET_KEYS.contains(&key) || key == "url";
                if in_secret {
                    secrets.push(s.trim().to_owned());
                } else {
                    public.push(s.clone());
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, key, secrets, public)),
            toml::Value::Table(t) => {
                for (k, x) in t {
                    public.push(k.clone());
                    walk(x, k, secrets, public);
                }
            }
            other => public.push(other.to_string()),
        }
    }
    let mut secrets = Vec::new();
    let mut public = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(toml_text) {
        walk(&toml::Value::Table(table), "", &mut secrets, &mut public);
    }
    for (k, v) in env {
        public.push(k.clone());
        if SECRET_ENV.contains(&k.as_str()) {
            secrets.push(v.trim().to_owned());
        } else {
            public.push(v.clone());
        }
    }
    // Short values could appear in a message by coincidence.
    secrets.retain(|s| s.chars().count() >= 12);
    (secrets, public)
}
