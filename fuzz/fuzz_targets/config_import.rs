//! The importers of files other Upstox tools leave behind (`upkeep config import`):
//! `upkeep_core::config::import::streamlit_secrets` (`.streamlit/secrets.toml`) and
//! `tokens_json` (`data/upstox_tokens.json`).
//!
//! Input: a mode byte (even: secrets.toml, odd: tokens JSON), then the file as UTF-8.
//! Checked: no panic; errors are one line and never show a token or secret; an imported
//! account becomes an `[[account]]`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upkeep_core::ConfigError;
use upkeep_core::config::import::{streamlit_secrets, tokens_json};
use upkeep_core::expiry::inspect;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode % 2 == 0 {
        match streamlit_secrets(text) {
            Ok(imported) => {
                let account = imported.into_account("main");
                assert_eq!(account.renew.len(), 1);
            }
            Err(e) => check_error(&e, &toml_secrets(text), |t| {
                streamlit_secrets(t).err()
            }, text),
        }
    } else {
        match tokens_json(text) {
            Ok(t) => {
                assert!(!t.access_token.expose().is_empty());
                let _ = inspect(&t.access_token);
                if let Some(x) = &t.extended_token {
                    let _ = inspect(x);
                }
            }
            Err(e) => check_error(&e, &json_secrets(text), |t| tokens_json(t).err(), text),
        }
    }
});

/// Errors are one line and never show a value. A message that contains a value may be
/// fixed text equal to it: the value is replaced in the input, and only if the
/// replacement shows in a message is that an echo.
fn check_error(
    e: &ConfigError,
    secrets: &[String],
    parse: impl Fn(&str) -> Option<ConfigError>,
    text: &str,
) {
    for p in e.problems() {
        let msg = p.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg}");
        for s in secrets.iter().filter(|s| msg.contains(s.as_str())) {
            let marker = "Q".repeat(s.chars().count());
            if let Some(e2) = parse(&text.replace(s.as_str(), &marker)) {
                for p2 in e2.problems() {
                    let msg2 = p2.to_string();
                    assert!(!msg2.contains(&marker), "error shows a value: {msg2}");
                }
            }
        }
    }
}

/// Long string values in secrets.toml (any of them may be a secret; none is ever quoted).
fn toml_secrets(text: &str) -> Vec<String> {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.trim().to_owned()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = toml::from_str::<toml::Table>(text) {
        walk(&toml::Value::Table(t), &mut out);
    }
    out.retain(|s| s.chars().count() >= 12);
    out
}

/// The tokens in an upstox_tokens.json.
fn json_secrets(text: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Vec::new();
    };
    ["access_token", "extended_token"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(|v| v.as_str()))
        .map(|s| s.trim().to_owned())
        .filter(|s| s.chars().count() >= 12)
        .collect()
}
