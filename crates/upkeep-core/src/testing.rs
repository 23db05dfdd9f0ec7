//! Test helpers for this and other crates: fixture JWTs shaped like real Upstox tokens.
//! Enabled in this crate's tests and, for other crates, with the `testing` feature.
//!
//! The signatures are dummies: nothing in upkeep verifies them (Upstox does).

use crate::expiry::{SANDBOX_LIFETIME, next_rollover_after};
use crate::secret::AccessToken;
use jiff::{SignedDuration, Timestamp};

/// The header of real Upstox tokens.
pub const HEADER_JSON: &str = r#"{"typ":"JWT","key_id":"sk_v1.0","alg":"HS256"}"#;

/// Payload of the supplied daily token A: issued 2026-02-05 05:49:27 IST, expires
/// 2026-02-06 03:30 IST.
pub const TOKEN_A_PAYLOAD: &str = r#"{"sub":"2ZCDQ9","jti":"6983e20fe591417253fcd4cb","isMultiClient":false,"isPlusPlan":true,"iat":1770250767,"iss":"udapi-gateway-service","exp":1770328800}"#;

/// Payload of the supplied token B: issued 2026-01-31 02:05:21 IST, expires
/// 2026-03-02 03:30 IST (the 30-day sandbox rule).
pub const TOKEN_B_PAYLOAD: &str = r#"{"sub":"2ZCDQ9","jti":"697d160903bb3e2becf46258","isMultiClient":false,"isPlusPlan":true,"iat":1769805321,"iss":"udapi-gateway-service","exp":1772402400}"#;

/// 32 bytes, like an HMAC-SHA256 signature, but not one.
const DUMMY_SIGNATURE: &[u8; 32] = b"upkeep-test-signature-not-valid!";

/// Build a JWT with the real Upstox header, `claims_json` as payload and a dummy signature.
pub fn make_jwt(claims_json: &serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        crate::jwt::b64url(HEADER_JSON.as_bytes()),
        crate::jwt::b64url(claims_json.to_string().as_bytes()),
        crate::jwt::b64url(DUMMY_SIGNATURE)
    )
}

fn token_from_payload(payload: &str) -> AccessToken {
    let value = serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
    AccessToken::new(make_jwt(&value))
}

/// Fixture token A (daily, expires 2026-02-06 03:30 IST).
pub fn token_a() -> AccessToken {
    token_from_payload(TOKEN_A_PAYLOAD)
}

/// Fixture token B (30-day sandbox, expires 2026-03-02 03:30 IST).
pub fn token_b() -> AccessToken {
    token_from_payload(TOKEN_B_PAYLOAD)
}

fn token_with(sub: &str, issued_at: Timestamp, exp: Timestamp) -> AccessToken {
    AccessToken::new(make_jwt(&serde_json::json!({
        "sub": sub,
        "jti": format!("{:08x}0000000000000000", issued_at.as_second()),
        "isMultiClient": false,
        "isPlusPlan": false,
        "iat": issued_at.as_second(),
        "iss": "udapi-gateway-service",
        "exp": exp.as_second(),
    })))
}

/// A daily token issued at `issued_at`: expires at the first 03:30 IST after it.
pub fn daily_token(sub: &str, issued_at: Timestamp) -> AccessToken {
    token_with(sub, issued_at, next_rollover_after(issued_at))
}

/// A sandbox token issued at `issued_at`: expires at the first 03:30 IST after 30 days.
pub fn sandbox_token(sub: &str, issued_at: Timestamp) -> AccessToken {
    let exp = next_rollover_after(issued_at.checked_add(SANDBOX_LIFETIME).unwrap_or(issued_at));
    token_with(sub, issued_at, exp)
}

/// An extended (or analytics) token issued at `issued_at`: expires 365 days later.
pub fn extended_token(sub: &str, issued_at: Timestamp) -> AccessToken {
    let exp = issued_at
        .checked_add(SignedDuration::from_hours(365 * 24))
        .unwrap_or(issued_at);
    token_with(sub, issued_at, exp)
}
