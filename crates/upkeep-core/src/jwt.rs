//! Reading the claims of an Upstox access token.
//!
//! Upstox tokens are HS256 JWTs signed with a key only Upstox holds, so upkeep cannot
//! verify them; it only *reads* the payload to learn when the token dies (`exp`), whom
//! it belongs to (`sub`, the UCC) and when it was made (`iat`). Whether a token is
//! accepted is decided by Upstox, never by this module.
//!
//! Decoding never panics and no error message ever contains any part of the token.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The claims upkeep reads from an Upstox JWT payload.
///
/// Observed payload: `{"sub":"2ZCDQ9","jti":"6983e20f...","isMultiClient":false,
/// "isPlusPlan":true,"iat":1770250767,"iss":"udapi-gateway-service","exp":1770328800}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The Upstox client code (UCC) the token belongs to.
    pub sub: String,
    /// Token id (24 hex chars, ObjectId-like). Absent on some older tokens.
    #[serde(default)]
    pub jti: Option<String>,
    /// Issued-at, epoch seconds.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Expiry, epoch seconds.
    pub exp: i64,
    #[serde(rename = "isPlusPlan", default)]
    pub is_plus_plan: bool,
    #[serde(rename = "isMultiClient", default)]
    pub is_multi_client: bool,
    /// Issuer, `udapi-gateway-service` on real tokens.
    #[serde(default)]
    pub iss: Option<String>,
}

/// Why a string could not be read as an Upstox token. Messages never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is empty; paste the whole access token")]
    Empty,
    #[error("token is not a JWT (expected three dot-separated parts); copy the whole access token")]
    NotThreeParts,
    #[error(
        "token {part} is not valid base64url; the token is damaged or cut short, copy it again"
    )]
    BadBase64 { part: &'static str },
    #[error("token payload is not a JSON object; this is not an Upstox access token")]
    BadJson,
    #[error(
        "token has no `exp` claim, so its expiry is unknown; this is not an Upstox access token"
    )]
    MissingExp,
    #[error(
        "token has no `sub` claim (the Upstox client code); this is not an Upstox access token"
    )]
    MissingSub,
    #[error(
        "token claim `{claim}` has the wrong type or is out of range; this is not an Upstox access token"
    )]
    BadClaim { claim: &'static str },
}

/// base64url, with or without `=` padding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `exp`/`iat` outside what `jiff::Timestamp` can represent (years -9999..=9999) are
/// rejected, so converting any decoded claim to a `Timestamp` is infallible.
fn representable(secs: i64) -> bool {
    (jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second()).contains(&secs)
}

/// Read the claims of a JWT **without verifying its signature**.
///
/// Tolerates surrounding whitespace, a `Bearer ` prefix and `=` padding. Never panics.
pub fn decode_claims(token: &str) -> Result<Claims, TokenError> {
    let token = token.trim();
    let token = strip_bearer(token).trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotThreeParts);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenError::NotThreeParts);
    }
    B64URL
        .decode(header)
        .map_err(|_| TokenError::BadBase64 { part: "header" })?;
    let bytes = B64URL
        .decode(payload)
        .map_err(|_| TokenError::BadBase64 { part: "payload" })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::BadJson)?;
    let Value::Object(map) = value else {
        return Err(TokenError::BadJson);
    };
    claims_from_map(&map)
}

fn strip_bearer(s: &str) -> &str {
    match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => s.get(7..).unwrap_or(""),
        _ => s,
    }
}

fn claims_from_map(map: &Map<String, Value>) -> Result<Claims, TokenError> {
    let exp = match map.get("exp") {
        None | Some(Value::Null) => return Err(TokenError::MissingExp),
        Some(v) => epoch_seconds(v).ok_or(TokenError::BadClaim { claim: "exp" })?,
    };
    let iat = match map.get("iat") {
        None | Some(Value::Null) => None,
        Some(v) => Some(epoch_seconds(v).ok_or(TokenError::BadClaim { claim: "iat" })?),
    };
    let sub = match map.get("sub") {
        None | Some(Value::Null) => return Err(TokenError::MissingSub),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(TokenError::BadClaim { claim: "sub" }),
    };
    Ok(Claims {
        sub,
        jti: opt_string(map, "jti")?,
        iat,
        exp,
        is_plus_plan: opt_bool(map, "isPlusPlan")?,
        is_multi_client: opt_bool(map, "isMultiClient")?,
        iss: opt_string(map, "iss")?,
    })
}

/// NumericDate: integer seconds, or a float with no fractional part.
fn epoch_seconds(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    let secs = match n.as_i64() {
        Some(i) => i,
        None => {
            let f = n.as_f64()?;
            if !f.is_finite() || f.fract() != 0.0 || f.abs() > 1e15 {
                return None;
            }
            // In range and integral, so the cast is exact.
            f as i64
        }
    };
    representable(secs).then_some(secs)
}

fn opt_string(map: &Map<String, Value>, key: &'static str) -> Result<Option<String>, TokenError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::BadClaim { claim: key }),
    }
}

fn opt_bool(map: &Map<String, Value>, key: &'static str) -> Result<bool, TokenError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(TokenError::BadClaim { claim: key }),
    }
}

/// Encode bytes as unpadded base64url (used by the test helpers).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TOKEN_A_PAYLOAD, make_jwt};
    use proptest::prelude::*;

    fn jwt_from_payload_text(payload: &str) -> String {
        format!("eyJhbGciOiJIUzI1NiJ9.{}.c2ln", b64url(payload.as_bytes()))
    }

    #[test]
    fn reads_all_claims_of_the_real_daily_token() {
        let jwt = make_jwt(&serde_json::from_str(TOKEN_A_PAYLOAD).unwrap());
        let c = decode_claims(&jwt).unwrap();
        assert_eq!(
            c,
            Claims {
                sub: "2ZCDQ9".into(),
                jti: Some("6983e20fe591417253fcd4cb".into()),
                iat: Some(1770250767),
                exp: 1770328800,
                is_plus_plan: true,
                is_multi_client: false,
                iss: Some("udapi-gateway-service".into()),
            }
        );
    }

    #[test]
    fn missing_optional_claims_default_to_none_and_false() {
        let jwt = jwt_from_payload_text(r#"{"sub":"AB1234","exp":1770328800}"#);
        let c = decode_claims(&jwt).unwrap();
        assert_eq!(c.jti, None);
        assert_eq!(c.iat, None);
        assert_eq!(c.iss, None);
        assert!(!c.is_plus_plan);
        assert!(!c.is_multi_client);
    }

    #[test]
    fn tolerates_padding_whitespace_and_bearer_prefix() {
        let payload = r#"{"sub":"AB1234","exp":1770328800,"x":"?"}"#;
        let padded = base64::engine::general_purpose::URL_SAFE.encode(payload);
        assert!(padded.ends_with('='), "test needs a padded payload");
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{padded}.c2ln");
        assert_eq!(decode_claims(&jwt).unwrap().sub, "AB1234");
        assert_eq!(
            decode_claims(&format!("  Bearer {jwt}\n")).unwrap().exp,
            1770328800
        );
    }

    #[test]
    fn float_exp_without_fraction_is_accepted() {
        let jwt = jwt_from_payload_text(r#"{"sub":"A","exp":1770328800.0}"#);
        assert_eq!(decode_claims(&jwt).unwrap().exp, 1770328800);
    }

    #[test]
    fn each_malformed_token_gets_its_own_error() {
        let cases: Vec<(String, TokenError)> = vec![
            ("".into(), TokenError::Empty),
            ("   ".into(), TokenError::Empty),
            ("abc".into(), TokenError::NotThreeParts),
            ("a.b".into(), TokenError::NotThreeParts),
            ("a.b.c.d".into(), TokenError::NotThreeParts),
            (".b.c".into(), TokenError::NotThreeParts),
            (
                "e30.!!!.sig".into(),
                TokenError::BadBase64 { part: "payload" },
            ),
            (
                "***.e30.sig".into(),
                TokenError::BadBase64 { part: "header" },
            ),
            (jwt_from_payload_text("not json"), TokenError::BadJson),
            (jwt_from_payload_text("[1,2]"), TokenError::BadJson),
            (
                jwt_from_payload_text(r#"{"sub":"A"}"#),
                TokenError::MissingExp,
            ),
            (
                jwt_from_payload_text(r#"{"sub":"A","exp":null}"#),
                TokenError::MissingExp,
            ),
            (
                jwt_from_payload_text(r#"{"exp":1}"#),
                TokenError::MissingSub,
            ),
            (
                jwt_from_payload_text(r#"{"sub":"A","exp":"soon"}"#),
                TokenError::BadClaim { claim: "exp" },
            ),
            (
                jwt_from_payload_text(r#"{"sub":"A","exp":1.5}"#),
                TokenError::BadClaim { claim: "exp" },
            ),
            (
                jwt_from_payload_text(r#"{"sub":"A","exp":99999999999999999}"#),
                TokenError::BadClaim { claim: "exp" },
            ),
            (
                jwt_from_payload_text(r#"{"sub":"A","exp":1,"iat":"x"}"#),
                TokenError::BadClaim { claim: "iat" },
            ),
            (
                jwt_from_payload_text(r#"{"sub":7,"exp":1}"#),
                TokenError::BadClaim { claim: "sub" },
            ),
            (
                jwt_from_payload_text(r#"{"sub":"A","exp":1,"isPlusPlan":"yes"}"#),
                TokenError::BadClaim {
                    claim: "isPlusPlan",
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(decode_claims(&input), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn error_messages_are_one_line_and_never_contain_the_token() {
        let secretish = "eyJzZWNyZXQtcGFydA.c2VjcmV0LXBheWxvYWQ!!.sig-SECRET";
        let err = decode_claims(secretish).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("SECRET") && !msg.contains("c2Vj"), "{msg}");
        for e in [
            TokenError::Empty,
            TokenError::NotThreeParts,
            TokenError::BadBase64 { part: "payload" },
            TokenError::BadJson,
            TokenError::MissingExp,
            TokenError::MissingSub,
            TokenError::BadClaim { claim: "exp" },
        ] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(s in ".*") {
            let _ = decode_claims(&s);
        }

        #[test]
        fn never_panics_on_three_arbitrary_parts(a in "[A-Za-z0-9_=.-]{0,40}", b in ".{0,60}", c in "\\PC{0,10}") {
            let _ = decode_claims(&format!("{a}.{b}.{c}"));
        }

        #[test]
        fn never_panics_on_arbitrary_payload_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_claims(&format!("e30.{}.sig", b64url(&bytes)));
        }

        #[test]
        fn any_integer_exp_in_range_round_trips(exp in jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second(), sub in "[A-Z0-9]{1,8}") {
            let jwt = make_jwt(&serde_json::json!({"sub": sub, "exp": exp}));
            let c = decode_claims(&jwt).unwrap();
            prop_assert_eq!(c.exp, exp);
            prop_assert_eq!(c.sub, sub);
        }
    }
}
