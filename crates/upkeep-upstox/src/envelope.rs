//! Reading Upstox response envelopes. Upstox uses several shapes:
//!
//! - REST success: `{"status":"success","data":...}`; REST error:
//!   `{"status":"error","errors":[{"errorCode":..,"error_code":..,"message":..}]}` (camelCase
//!   keys are deprecated but still sent; either may be alone).
//! - The token endpoint answers a flat object with no wrapper.
//! - The login service: `{"success":true,"data":...}` or `{"success":false,"error":{...}}`,
//!   and sometimes an error inside `data` (`data.status == "error"`).
//! - A generic OAuth 2 server: `{"error":"invalid_grant","error_description":".."}`.
//!
//! Nothing here formats a value that could be a secret: messages pass through
//! [`scrub`] before they are kept.

use serde_json::Value;

/// The code and message an error body carried (both optional: bodies vary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorDetail {
    pub code: Option<String>,
    pub message: Option<String>,
    /// The REST envelope's `invalid_value` / `invalidValue` (e.g. the unknown
    /// instrument key of an LTP call), scrubbed.
    pub invalid_value: Option<String>,
    /// The body was the login service's `{"success":false,"error":{..}}`.
    pub login_service: bool,
}

/// Takes the payload out of a success body, accepting the wrapped and unwrapped
/// shapes. `Err` carries the error the body reported instead.
pub(crate) fn success_data(body: Value) -> Result<Value, ErrorDetail> {
    let Value::Object(mut map) = body else {
        return Ok(body);
    };
    if let Some(success) = map.get("success").and_then(Value::as_bool) {
        if !success {
            return Err(error_detail(&Value::Object(map)).unwrap_or_default());
        }
        let data = map.remove("data").unwrap_or(Value::Null);
        return match error_detail(&data) {
            Some(detail) if is_error_status(&data) => Err(detail),
            _ => Ok(data),
        };
    }
    match map.get("status").and_then(Value::as_str) {
        Some("error") => Err(error_detail(&Value::Object(map)).unwrap_or_default()),
        Some(_) if map.contains_key("data") => Ok(map.remove("data").unwrap_or(Value::Null)),
        _ => {
            // A flat body is an error if it carries `error`/`errors` (OAuth 2, gateways).
            let flagged = matches!(map.get("error"), Some(Value::String(_) | Value::Object(_)))
                || map
                    .get("errors")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
            let body = Value::Object(map);
            match error_detail(&body) {
                Some(detail) if flagged => Err(detail),
                _ => Ok(body),
            }
        }
    }
}

fn is_error_status(v: &Value) -> bool {
    v.get("status").and_then(Value::as_str) == Some("error")
}

/// The code and message of an error body, in any of the shapes above. `None` when
/// the body does not look like an error at all.
pub(crate) fn error_detail(body: &Value) -> Option<ErrorDetail> {
    let obj = body.as_object()?;

    // REST envelope (also found inside a login-service `data`).
    if let Some(first) = obj
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return Some(ErrorDetail {
            code: str_field(first, &["error_code", "errorCode", "code"]),
            message: str_field(first, &["message", "msg", "description"]),
            invalid_value: str_field(first, &["invalid_value", "invalidValue"]),
            login_service: false,
        });
    }
    let login_failure = obj.get("success").and_then(Value::as_bool) == Some(false);
    match obj.get("error") {
        // Login service: {"success":false,"error":{"code":..,"message":..}}; the code
        // comes as an integer (1017069) or a string.
        Some(err @ Value::Object(_)) => {
            return Some(ErrorDetail {
                code: str_field(err, &["code", "errorCode", "error_code"]),
                message: str_field(err, &["message", "description", "msg"]),
                invalid_value: None,
                login_service: true,
            });
        }
        // OAuth 2 (RFC 6749 section 5.2).
        Some(Value::String(code)) => {
            return Some(ErrorDetail {
                code: Some(scrub(code)),
                message: str_field(body, &["error_description", "message"]),
                invalid_value: None,
                login_service: false,
            });
        }
        _ => {}
    }
    if is_error_status(body) || login_failure {
        return Some(ErrorDetail {
            code: str_field(body, &["error_code", "errorCode", "code"]),
            message: str_field(body, &["message", "msg"]),
            invalid_value: None,
            login_service: login_failure,
        });
    }
    None
}

fn str_field(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().filter_map(|k| v.get(*k)).find_map(|f| match f {
        Value::String(s) if !s.trim().is_empty() => Some(scrub(s.trim())),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Shortens a server-supplied message and blanks anything that looks like a token or
/// key (a run of 24+ token characters), so an echoed secret never reaches a log.
pub(crate) fn scrub(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= 24 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars().filter(|c| !c.is_control()) {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '/' | '=') {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    if out.chars().count() > MAX_CHARS {
        out = out.chars().take(MAX_CHARS).collect();
        out.push('…');
    }
    out
}

/// A description of a JSON parse failure that never quotes the input (serde_json's
/// own message can contain a string value, which could be a token).
pub(crate) fn json_error_detail(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("missing field") || text.starts_with("unknown field") {
        // These quote only the field name, never a value.
        return text.split(" at line").next().unwrap_or(&text).to_owned();
    }
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(code: &str, message: &str) -> ErrorDetail {
        ErrorDetail {
            code: Some(code.into()),
            message: Some(message.into()),
            ..ErrorDetail::default()
        }
    }

    fn login(code: &str, message: &str) -> ErrorDetail {
        ErrorDetail {
            login_service: true,
            ..detail(code, message)
        }
    }

    #[test]
    fn reads_error_codes_in_every_documented_shape() {
        let cases = [
            // live 401 capture: both spellings
            (
                r#"{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null,"error_code":"UDAPI100050","property_path":null,"invalid_value":null}]}"#,
                detail("UDAPI100050", "Invalid token used to access API"),
            ),
            // docs form: snake_case only
            (
                r#"{"status":"error","errors":[{"error_code":"UDAPI100067","message":"The API you are trying to access is not permitted with an extended_token","property_path":null,"invalid_value":null}]}"#,
                detail(
                    "UDAPI100067",
                    "The API you are trying to access is not permitted with an extended_token",
                ),
            ),
            // deprecated camelCase only
            (
                r#"{"status":"error","errors":[{"errorCode":"UDAPI10005","message":"Too Many Request Sent"}]}"#,
                detail("UDAPI10005", "Too Many Request Sent"),
            ),
            // login service, string code
            (
                r#"{"success":false,"error":{"code":"1017062","message":"Invalid OTP"},"data":null}"#,
                login("1017062", "Invalid OTP"),
            ),
            // login service, integer code (what Upstox sends)
            (
                r#"{"success":false,"error":{"code":1017076,"message":"session to validate otp has expired"}}"#,
                login("1017076", "session to validate otp has expired"),
            ),
            // LTP: the bad key is named in invalid_value
            (
                r#"{"status":"error","errors":[{"errorCode":"UDAPI1087","message":"Invalid Instrument key","propertyPath":null,"invalidValue":"NSE_EQ|NOPE","error_code":"UDAPI1087","property_path":null,"invalid_value":"NSE_EQ|NOPE"}]}"#,
                ErrorDetail {
                    invalid_value: Some("NSE_EQ|NOPE".into()),
                    ..detail("UDAPI1087", "Invalid Instrument key")
                },
            ),
            // login service, error inside data
            (
                r#"{"success":true,"data":{"status":"error","errors":[{"errorCode":"UDAPI100073","message":"Your 'client_id' is inactive"}]}}"#,
                detail("UDAPI100073", "Your 'client_id' is inactive"),
            ),
            // OAuth 2
            (
                r#"{"error":"invalid_grant","error_description":"refresh token revoked"}"#,
                detail("invalid_grant", "refresh token revoked"),
            ),
        ];
        for (body, want) in cases {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(success_data(v).unwrap_err(), want, "{body}");
        }
    }

    #[test]
    fn unwraps_wrapped_and_flat_success_bodies() {
        let wrapped = json!({"status":"success","data":{"user_id":"AB1234"}});
        let login = json!({"success":true,"data":{"user_id":"AB1234"}});
        let flat = json!({"user_id":"AB1234","access_token":"x"});
        assert_eq!(success_data(wrapped).unwrap()["user_id"], "AB1234");
        assert_eq!(success_data(login).unwrap()["user_id"], "AB1234");
        assert_eq!(success_data(flat.clone()).unwrap(), flat);
    }

    #[test]
    fn success_body_is_not_mistaken_for_an_error() {
        let v = json!({"status":"success","data":true});
        assert_eq!(error_detail(&v), None);
        assert_eq!(success_data(v).unwrap(), json!(true));
    }

    #[test]
    fn scrub_blanks_token_like_runs_and_keeps_codes() {
        let msg = "bad token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyWkNEUTkifQ.sig for UDAPI100050";
        let out = scrub(msg);
        assert!(!out.contains("eyJ"), "{out}");
        assert!(out.contains("UDAPI100050"), "{out}");
        assert!(out.contains("[redacted]"));
    }

    #[test]
    fn json_error_detail_never_quotes_values() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            n: i64,
        }
        let e = serde_json::from_str::<T>(r#"{"n":"super-secret-token-value"}"#).unwrap_err();
        let d = json_error_detail(&e);
        assert!(!d.contains("super-secret"), "{d}");
        let e = serde_json::from_str::<T>(r#"{}"#).unwrap_err();
        assert!(json_error_detail(&e).contains("missing field `n`"));
    }
}
