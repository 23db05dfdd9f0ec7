//! Upstox response bodies and headers: `ApiError::from_response` (error statuses, both
//! `errorCode` and `error_code` spellings, the login service's and OAuth 2's shapes),
//! `read_body` (the envelope check every REST call runs, which also finds errors inside
//! 200 answers), `Retry-After`, the typed models decoded from a success payload, and the
//! scrubbing of server messages.
//!
//! Input: `status: u16 BE | flags: u8 | n: u8 | Retry-After value: n bytes | body`.
//! flags bit 0: the request carried a bearer token; bit 1: send the Retry-After header.

#![no_main]

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use upkeep_upstox::fuzzing::{json_error_detail, read_body, scrub};
use upkeep_upstox::{
    ApiError, Funds, LtpQuotes, MAX_RETRY_AFTER, Profile, RefreshGrant, RetryAfter, TokenGrant,
    UpstoxError,
};

const EP: &str = "GET /v2/user/profile";

fuzz_target!(|data: &[u8]| {
    let [s0, s1, flags, n, rest @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]);
    let bearer = flags & 1 == 1;
    let n = usize::from(*n).min(rest.len());
    let (retry_after, body) = rest.split_at(n);
    let mut headers = HeaderMap::new();
    if flags & 2 == 2
        && let Ok(v) = HeaderValue::from_bytes(retry_after)
    {
        headers.insert(RETRY_AFTER, v);
    }
    if let Ok(text) = std::str::from_utf8(retry_after) {
        check_retry_after(RetryAfter::parse(text));
    }

    let secrets = secret_like_runs(body);

    let api = ApiError::from_response(EP, status, &headers, body, bearer);
    let _ = api.class();
    check_display(&api.to_string(), &secrets);
    check_retry_after(api.retry_after);
    check_spellings(status, &headers, body, bearer, &api);

    match read_body(EP, status, &headers, body, bearer) {
        Err(e) => {
            if !(200..300).contains(&status) {
                // An error status is exactly the ApiError of the body.
                assert!(matches!(&e, UpstoxError::Api(a) if *a == api), "{e:?} vs {api:?}");
            }
            let _ = e.class();
            check_display(&e.to_string(), &secrets);
        }
        Ok((s, payload)) => {
            assert_eq!(s, status);
            assert!((200..300).contains(&status));
            typed::<Profile>(&payload, &secrets);
            typed::<Funds>(&payload, &secrets);
            typed::<LtpQuotes>(&payload, &secrets);
            typed::<TokenGrant>(&payload, &secrets);
            typed::<RefreshGrant>(&payload, &secrets);
        }
    }

    check_scrub(&scrub(&String::from_utf8_lossy(body)));
});

/// What `call::<T>` does with a success payload; the error detail never quotes a value.
fn typed<T: serde::de::DeserializeOwned>(payload: &Value, secrets: &[String]) {
    if let Err(e) = serde_json::from_value::<T>(payload.clone()) {
        let detail = json_error_detail(&e);
        assert!(
            ["missing field", "unknown field", "malformed JSON", "JSON of the wrong shape", "truncated JSON", "I/O error"]
                .iter()
                .any(|p| detail.starts_with(p)),
            "unexpected decode detail: {detail}"
        );
        check_display(&detail, secrets);
    }
}

fn check_retry_after(ra: Option<RetryAfter>) {
    let Some(ra) = ra else { return };
    for now in [Timestamp::MIN, Timestamp::UNIX_EPOCH, Timestamp::MAX] {
        assert!(ra.delay_from(now) <= MAX_RETRY_AFTER);
    }
}

/// One line, and no token-like run of the body's strings reaches a message.
fn check_display(msg: &str, secrets: &[String]) {
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    for s in secrets {
        assert!(!msg.contains(s.as_str()), "message quotes a token-like value: {msg}");
    }
}

/// `errors[0]` with exactly one of `errorCode` / `error_code`: the other spelling alone
/// must read the same (Upstox sends either, or both).
fn check_spellings(status: u16, headers: &HeaderMap, body: &[u8], bearer: bool, api: &ApiError) {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else { return };
    let Some(first) = v
        .get_mut("errors")
        .and_then(Value::as_array_mut)
        .and_then(|a| a.first_mut())
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let (from, to) = match (first.contains_key("errorCode"), first.contains_key("error_code")) {
        (true, false) => ("errorCode", "error_code"),
        (false, true) => ("error_code", "errorCode"),
        _ => return,
    };
    if let Some(code) = first.remove(from) {
        first.insert(to.to_owned(), code);
    }
    let Ok(swapped) = serde_json::to_vec(&v) else { return };
    let other = ApiError::from_response(EP, status, headers, &swapped, bearer);
    assert_eq!(other.code, api.code, "{from} and {to} read differently");
    assert_eq!(other.message, api.message);
}

const fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '/' | '=')
}

/// Runs of 24+ token characters in the body's string values that could be secrets
/// (runs that are only number characters are left out: numbers are kept as codes).
fn secret_like_runs(body: &[u8]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                let clean: String = s.chars().filter(|c| !c.is_control()).collect();
                for run in clean.split(|c: char| !token_char(c)) {
                    if run.len() >= 24
                        && !run.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
                    {
                        out.push(run.to_owned());
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        walk(&v, &mut out);
    }
    out
}

/// `scrub`'s promise: at most 200 characters (plus an ellipsis) and no run of 24+
/// token characters.
fn check_scrub(out: &str) {
    assert!(out.chars().count() <= 201, "scrub kept {} chars", out.chars().count());
    for run in out.split(|c: char| !token_char(c)) {
        assert!(run.chars().count() < 24, "scrub kept a token-like run: {run}");
    }
    assert!(!out.chars().any(char::is_control));
}
