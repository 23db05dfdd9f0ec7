//! Reading the files users of earlier Upstox scripts already have:
//! - `.streamlit/secrets.toml` with an `[upstox]` table (app credentials, maybe a token);
//! - `data/upstox_tokens.json` (`{"access_token": "...", "expires_at": "...", ...}`).
//!
//! Both are tolerant: several common key spellings, extra keys ignored. Errors name the
//! key and never contain a value that could be secret.

use super::{AccountConfig, ConfigError, Strategy, TotpConfig};
use crate::expiry::ist;
use crate::secret::{AccessToken, Secret};
use jiff::Timestamp;
use serde_json::Value as Json;
use toml::{Table, Value};

/// App credentials (and maybe a token) read from a Streamlit secrets file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportedAccount {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub redirect_uri: Option<String>,
    pub access_token: Option<AccessToken>,
    pub mobile: Option<String>,
    pub pin: Option<Secret>,
    pub totp_secret: Option<Secret>,
}

impl ImportedAccount {
    /// An `[[account]]` holding what was imported. `renew` is inferred: `totp` when
    /// mobile, PIN and TOTP seed are all present, else `oauth` when the app credentials
    /// are, else `static`.
    pub fn into_account(self, id: &str) -> AccountConfig {
        let strategy = if self.mobile.is_some() && self.pin.is_some() && self.totp_secret.is_some()
        {
            Strategy::Totp
        } else if self.client_id.is_some() && self.client_secret.is_some() {
            Strategy::Oauth
        } else {
            Strategy::Static
        };
        let totp = (self.mobile.is_some() || self.pin.is_some() || self.totp_secret.is_some())
            .then(|| TotpConfig {
                mobile: self.mobile.unwrap_or_default(),
                pin: self.pin.unwrap_or_else(|| Secret::new("")),
                secret: self.totp_secret.unwrap_or_else(|| Secret::new("")),
            });
        AccountConfig {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri: self.redirect_uri,
            renew: vec![strategy],
            access_token: self.access_token,
            totp,
            ..AccountConfig::new(id)
        }
    }
}

/// A token read from `data/upstox_tokens.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedToken {
    pub access_token: AccessToken,
    /// The file's own idea of the expiry (the token's `exp` claim is authoritative).
    pub expires_at: Option<Timestamp>,
    pub issued_at: Option<Timestamp>,
    pub extended_token: Option<AccessToken>,
}

const SECRETS: &str = "secrets.toml";
const TOKENS: &str = "upstox_tokens.json";

/// Accepted spellings, first is canonical.
const CLIENT_ID: &[&str] = &["client_id", "api_key", "apikey", "key"];
const CLIENT_SECRET: &[&str] = &[
    "client_secret",
    "api_secret",
    "apisecret",
    "secret_key",
    "secret",
];
const REDIRECT_URI: &[&str] = &["redirect_uri", "redirect_url"];
const ACCESS_TOKEN: &[&str] = &["access_token", "token"];
const MOBILE: &[&str] = &["mobile", "username", "mobile_no", "mobile_number", "phone"];
const PIN: &[&str] = &["pin", "pin_code", "mpin"];
const TOTP_SECRET: &[&str] = &["totp_secret", "totp_key", "totp"];

/// Read the `[upstox]` table of a Streamlit `secrets.toml`. Without one, top-level keys
/// prefixed `upstox_` (any case) are read instead.
pub fn streamlit_secrets(text: &str) -> Result<ImportedAccount, ConfigError> {
    let root: Table = toml::from_str(text).map_err(|e| {
        match ConfigError::syntax(text, e.span(), e.message()) {
            ConfigError::Syntax {
                line,
                column,
                message,
            } => ConfigError::invalid(
                SECRETS,
                format!("not valid TOML (line {line}, column {column}): {message}"),
            ),
            other => other,
        }
    })?;
    let (label, table) = match root
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("upstox") && v.is_table())
    {
        Some((k, Value::Table(t))) => (format!("{SECRETS} [{k}]"), lowercase_keys(t, "")),
        _ => (SECRETS.to_string(), lowercase_keys(&root, "upstox_")),
    };
    let get = |names: &[&str]| pick(&table, names, &label);
    let imported = ImportedAccount {
        client_id: get(CLIENT_ID)?,
        client_secret: get(CLIENT_SECRET)?.map(Secret::new),
        redirect_uri: get(REDIRECT_URI)?,
        access_token: get(ACCESS_TOKEN)?.map(AccessToken::new),
        mobile: get(MOBILE)?,
        pin: get(PIN)?.map(Secret::new),
        totp_secret: get(TOTP_SECRET)?.map(Secret::new),
    };
    if imported == ImportedAccount::default() {
        return Err(ConfigError::invalid(
            SECRETS,
            "no Upstox settings found; expected an [upstox] table with api_key (or client_id), \
             api_secret (or client_secret), redirect_uri or access_token",
        ));
    }
    Ok(imported)
}

/// Keys lowercased, `prefix` (lowercase) stripped; keys without it dropped.
fn lowercase_keys(t: &Table, prefix: &str) -> Vec<(String, Value)> {
    t.iter()
        .filter_map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            k.strip_prefix(prefix)
                .map(|rest| (rest.to_string(), v.clone()))
        })
        .collect()
}

/// The value under the first spelling present; an error if two spellings disagree.
fn pick(
    table: &[(String, Value)],
    names: &[&str],
    label: &str,
) -> Result<Option<String>, ConfigError> {
    let mut found: Option<(&str, String)> = None;
    for name in names {
        let Some((_, v)) = table.iter().find(|(k, _)| k == name) else {
            continue;
        };
        let Value::String(s) = v else {
            return Err(ConfigError::invalid(
                format!("{label}.{name}"),
                "expected a quoted string (value not shown)",
            ));
        };
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        match &found {
            None => found = Some((name, s.to_string())),
            Some((first, prev)) if prev != s => {
                return Err(ConfigError::invalid(
                    format!("{label}.{name}"),
                    format!("disagrees with {first} (values not shown); keep one of them"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, s)| s))
}

/// Read `data/upstox_tokens.json`. `expires_at` / `issued_at` may be RFC 3339 strings
/// (a time without offset is read as IST), epoch seconds, or epoch milliseconds (as
/// numbers or digit strings; values above 10^11 are taken as milliseconds).
pub fn tokens_json(text: &str) -> Result<ImportedToken, ConfigError> {
    let value: Json = serde_json::from_str(text).map_err(|e| {
        ConfigError::invalid(
            TOKENS,
            format!(
                "not valid JSON (line {}, column {}); expected {{\"access_token\": \"...\"}}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Json::Object(map) = value else {
        return Err(ConfigError::invalid(
            TOKENS,
            "expected a JSON object like {\"access_token\": \"...\", \"expires_at\": \"...\"}",
        ));
    };
    let token = |key: &str| -> Result<Option<AccessToken>, ConfigError> {
        match map.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Json::String(s)) => Ok(Some(AccessToken::new(s.as_str()))),
            Some(_) => Err(ConfigError::invalid(
                format!("{TOKENS} {key}"),
                "expected a string (value not shown)",
            )),
        }
    };
    let access_token = token("access_token")?.ok_or_else(|| {
        ConfigError::invalid(
            format!("{TOKENS} access_token"),
            "is missing or empty; the file holds no token to import",
        )
    })?;
    Ok(ImportedToken {
        access_token,
        expires_at: time_field(map.get("expires_at"), "expires_at")?,
        issued_at: time_field(map.get("issued_at"), "issued_at")?,
        extended_token: token("extended_token")?,
    })
}

fn time_field(v: Option<&Json>, key: &str) -> Result<Option<Timestamp>, ConfigError> {
    let bad = || {
        ConfigError::invalid(
            format!("{TOKENS} {key}"),
            "is not a time; use RFC 3339 (2026-02-06T03:30:00+05:30) or epoch seconds",
        )
    };
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => {
            let secs = n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite() && f.abs() < 1e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(bad)?;
            epoch(secs).map(Some).ok_or_else(bad)
        }
        Some(Json::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            if s.bytes().all(|b| b.is_ascii_digit()) {
                let n: i64 = s.parse().map_err(|_| bad())?;
                return epoch(n).map(Some).ok_or_else(bad);
            }
            if let Ok(t) = s.parse::<Timestamp>() {
                return Ok(Some(t));
            }
            s.parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|dt| dt.to_zoned(ist()).ok())
                .map(|z| Some(z.timestamp()))
                .ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

/// Epoch seconds, or milliseconds when above 10^11 (year 5138 in seconds).
fn epoch(n: i64) -> Option<Timestamp> {
    if n.unsigned_abs() > 100_000_000_000 {
        Timestamp::from_millisecond(n).ok()
    } else {
        Timestamp::from_second(n).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::token_a;

    #[test]
    fn reads_streamlit_upstox_table_in_either_spelling() {
        let a = streamlit_secrets(
            r#"
            other = 1
            [upstox]
            api_key = "key-1"
            api_secret = "sec-1"
            redirect_uri = "http://127.0.0.1:8501/callback"
            access_token = "a.b.c"
            extra = "ignored"
            "#,
        )
        .unwrap();
        assert_eq!(a.client_id.as_deref(), Some("key-1"));
        assert_eq!(a.client_secret.as_ref().map(Secret::expose), Some("sec-1"));
        assert_eq!(
            a.redirect_uri.as_deref(),
            Some("http://127.0.0.1:8501/callback")
        );
        assert_eq!(
            a.access_token.as_ref().map(AccessToken::expose),
            Some("a.b.c")
        );

        let b = streamlit_secrets(
            "[UPSTOX]\nCLIENT_ID = \"key-1\"\nCLIENT_SECRET = \"sec-1\"\nREDIRECT_URI = \"http://127.0.0.1:8501/callback\"\naccess_token = \"a.b.c\"\n",
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn reads_prefixed_top_level_keys_without_a_table() {
        let a = streamlit_secrets("UPSTOX_API_KEY = \"k\"\nUPSTOX_API_SECRET = \"s\"\n").unwrap();
        assert_eq!(a.client_id.as_deref(), Some("k"));
        let acct = a.into_account("main");
        assert_eq!(acct.renew, vec![Strategy::Oauth]);
        assert_eq!(acct.id, "main");
    }

    #[test]
    fn totp_credentials_make_a_totp_account() {
        let a = streamlit_secrets(
            "[upstox]\napi_key=\"k\"\napi_secret=\"s\"\nmobile=\"9876543210\"\npin=\"123456\"\ntotp_secret=\"JBSWY3DPEHPK3PXP\"\n",
        )
        .unwrap();
        let acct = a.into_account("main");
        assert_eq!(acct.renew, vec![Strategy::Totp]);
        assert_eq!(acct.totp.unwrap().pin.expose(), "123456");
    }

    #[test]
    fn streamlit_errors_name_the_key_and_hide_values() {
        let cases = [
            (
                "[upstox]\napi_secret = 123456\n",
                "secrets.toml [upstox].api_secret: expected a quoted string (value not shown)",
            ),
            (
                "[upstox]\napi_key = \"k1\"\nclient_id = \"k2\"\n",
                "secrets.toml [upstox].api_key: disagrees with client_id (values not shown); keep one of them",
            ),
            (
                "[database]\nurl = \"x\"\n",
                "secrets.toml: no Upstox settings found; expected an [upstox] table with api_key (or client_id), api_secret (or client_secret), redirect_uri or access_token",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(streamlit_secrets(text).unwrap_err().to_string(), want);
        }
        let syntax = streamlit_secrets("[upstox\napi_key = \"SECRETVALUE\"")
            .unwrap_err()
            .to_string();
        assert!(
            syntax.starts_with("secrets.toml: not valid TOML (line 1"),
            "{syntax}"
        );
        assert!(!syntax.contains("SECRETVALUE"));
    }

    #[test]
    fn reads_tokens_json_with_rfc3339_or_epoch_expiry() {
        let tok = token_a();
        let want: Timestamp = "2026-02-05T22:00:00Z".parse().unwrap();
        for expires in [
            "\"2026-02-06T03:30:00+05:30\"".to_string(),
            "\"2026-02-05T22:00:00Z\"".to_string(),
            "\"2026-02-06T03:30:00\"".to_string(),
            "1770328800".to_string(),
            "1770328800000".to_string(),
            "\"1770328800\"".to_string(),
        ] {
            let text = format!(
                r#"{{"access_token": "{}", "expires_at": {expires}, "user_id": "X", "n": 1}}"#,
                tok.expose()
            );
            let got = tokens_json(&text).unwrap();
            assert_eq!(got.access_token, tok);
            assert_eq!(got.expires_at, Some(want), "expires_at {expires}");
        }
        let bare = tokens_json(r#"{"access_token": "a.b.c"}"#).unwrap();
        assert_eq!(bare.expires_at, None);
        assert_eq!(bare.extended_token, None);
    }

    #[test]
    fn tokens_json_errors_name_the_problem() {
        let cases = [
            (
                "{",
                "upstox_tokens.json: not valid JSON (line 1, column 1); expected {\"access_token\": \"...\"}",
            ),
            (
                "[]",
                "upstox_tokens.json: expected a JSON object like {\"access_token\": \"...\", \"expires_at\": \"...\"}",
            ),
            (
                "{}",
                "upstox_tokens.json access_token: is missing or empty; the file holds no token to import",
            ),
            (
                r#"{"access_token": 5}"#,
                "upstox_tokens.json access_token: expected a string (value not shown)",
            ),
            (
                r#"{"access_token": "a.b.c", "expires_at": "tomorrow"}"#,
                "upstox_tokens.json expires_at: is not a time; use RFC 3339 (2026-02-06T03:30:00+05:30) or epoch seconds",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(tokens_json(text).unwrap_err().to_string(), want, "{text}");
        }
    }
}
