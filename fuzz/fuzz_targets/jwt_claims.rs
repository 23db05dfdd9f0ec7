//! JWT claims: `upkeep_core::jwt::decode_claims` and `expiry::inspect` (via `AccessToken`)
//! on arbitrary text, as pasted by a user (`upkeep token set`, `decode`), read from a
//! config or an env var, or delivered by the notifier webhook.
//!
//! Input: a mode byte, then the rest.
//! - mode even: the rest is the token text itself;
//! - mode odd: the rest is a JWT *payload* (JSON bytes), wrapped into
//!   `<real header>.<base64url(payload)>.<sig>` so the fuzzer reaches the claims logic
//!   without having to discover base64.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use upkeep_core::expiry::{format_duration, format_ist, inspect, inspect_claims};
use upkeep_core::{AccessToken, Thresholds, decode_claims, next_rollover_after};

/// `{"typ":"JWT","key_id":"sk_v1.0","alg":"HS256"}`, the header of real Upstox tokens.
const HEADER: &str = "eyJ0eXAiOiJKV1QiLCJrZXlfaWQiOiJza192MS4wIiwiYWxnIjoiSFMyNTYifQ";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        format!("{HEADER}.{}.c2ln", URL_SAFE_NO_PAD.encode(rest))
    };
    check(&text);
});

fn check(text: &str) {
    let direct = decode_claims(text);
    let token = AccessToken::new(text);
    let via_token = inspect(&token);

    // The same verdict whether read directly or through the secret type (which trims).
    match (&direct, &via_token) {
        (Ok(c), Ok(info)) => assert_eq!(c, &info.claims),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("decode_claims and inspect disagree: {direct:?} vs {via_token:?}"),
    }

    match direct {
        Err(e) => {
            // (`TokenError` holds only `&'static str`s, so it cannot echo the token.)
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
        }
        Ok(claims) => {
            // Decoded claims are always representable (the documented guarantee that
            // makes inspect_claims' saturation unreachable for decoded tokens).
            let info = inspect_claims(claims.clone());
            assert_eq!(info.expires_at.as_second(), claims.exp);
            assert_eq!(info.issued_at.map(|t| t.as_second()), claims.iat);
            // Everything a status line renders for it, at the instants that matter.
            let t = Thresholds::default();
            for now in [
                info.expires_at,
                info.issued_at.unwrap_or(info.expires_at),
                Timestamp::MIN,
                Timestamp::MAX,
                Timestamp::UNIX_EPOCH,
            ] {
                let _ = info.state(now, &t);
                let _ = format_duration(info.remaining(now));
                let _ = next_rollover_after(now);
            }
            let _ = format_ist(info.expires_at);
            let _ = format_duration(SignedDuration::MAX);
            let _ = format_duration(SignedDuration::MIN);
            if let Some(m) = &info.mismatch {
                assert!(!m.contains('\n'));
            }
            // The Debug of the secret type never shows the token.
            let dbg = format!("{token:?}");
            if token.expose().len() > dbg.len() {
                assert!(!dbg.contains(token.expose()));
            }
        }
    }
}
