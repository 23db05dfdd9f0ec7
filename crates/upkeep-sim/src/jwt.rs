//! Access tokens: HS256 JWTs shaped like the ones Upstox issues.
//!
//! Header `{"typ":"JWT","key_id":"sk_v1.0","alg":"HS256"}`; claims `sub`, `jti`
//! (24 hex, first 4 bytes = `iat`), `isMultiClient`, `isPlusPlan`, `iat`,
//! `iss = "udapi-gateway-service"`, `exp`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp, ToSpan, tz::TimeZone};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ist;

type HmacSha256 = Hmac<Sha256>;

/// Exact header bytes Upstox uses (field order matters for a faithful token).
const HEADER_JSON: &str = r#"{"typ":"JWT","key_id":"sk_v1.0","alg":"HS256"}"#;
/// `iss` claim value.
pub const ISSUER: &str = "udapi-gateway-service";

/// Which kind of token to mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Dies at the first 03:30 IST after issue.
    Daily,
    /// Valid one year; read-only APIs (not profile/funds/orders).
    Extended,
    /// The first 03:30 IST after issue + 30 days; order APIs only.
    Sandbox,
}

impl std::str::FromStr for TokenKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "daily" => Ok(TokenKind::Daily),
            "extended" => Ok(TokenKind::Extended),
            "sandbox" => Ok(TokenKind::Sandbox),
            other => Err(format!(
                "unknown token kind {other:?}; use daily, extended or sandbox"
            )),
        }
    }
}

/// JWT payload, in Upstox's claim order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub jti: String,
    #[serde(rename = "isMultiClient")]
    pub is_multi_client: bool,
    #[serde(rename = "isPlusPlan")]
    pub is_plus_plan: bool,
    pub iat: i64,
    pub iss: String,
    pub exp: i64,
}

/// When a token of `kind` issued at `iat` expires.
pub fn expiry(kind: TokenKind, iat: Timestamp) -> Timestamp {
    match kind {
        TokenKind::Daily => ist::next_rollover_after(iat),
        TokenKind::Sandbox => ist::next_rollover_after(iat)
            .checked_add(SignedDuration::from_hours(30 * 24))
            .unwrap_or(Timestamp::MAX),
        TokenKind::Extended => iat
            .to_zoned(TimeZone::UTC)
            .checked_add(1.year())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX),
    }
}

/// A MongoDB-ObjectId-like id: 4 bytes of `iat` (big endian) + 8 random bytes, as 24 hex chars.
pub fn new_jti(iat: Timestamp) -> String {
    let mut bytes = [0u8; 12];
    // ObjectIds hold a 32-bit second count; wrap like they do.
    let secs = iat.as_second() as u32;
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    rand::thread_rng().fill_bytes(&mut bytes[4..]);
    hex::encode(bytes)
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; the error branch cannot happen.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_mac(),
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // new_from_slice never fails for HMAC; fall back to an empty key rather than panic.
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

/// Signs `claims` with `key`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Checks the HS256 signature and returns the claims; `None` for anything malformed or forged.
/// Does not check expiry.
pub fn verify(key: &[u8], token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    if header.alg != "HS256" {
        return None;
    }
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    let mut m = mac(key);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&sig).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: i64) -> Claims {
        Claims {
            sub: "2ZCDQ9".into(),
            jti: new_jti(Timestamp::from_second(iat).unwrap()),
            is_multi_client: false,
            is_plus_plan: true,
            iat,
            iss: ISSUER.into(),
            exp: iat + 100,
        }
    }

    #[test]
    fn signed_token_round_trips_and_tampering_is_detected() {
        let key = b"0123456789abcdef0123456789abcdef";
        let c = claims(1_770_250_767);
        let token = sign(key, &c);
        assert_eq!(verify(key, &token), Some(c.clone()));
        assert_eq!(verify(b"another key", &token), None);
        let mut forged = token.clone();
        forged.push('x');
        assert_eq!(verify(key, &forged), None);
        assert_eq!(verify(key, "garbage"), None);
    }

    #[test]
    fn header_and_claim_order_match_upstox() {
        let token = sign(b"k", &claims(1_770_250_767));
        let mut parts = token.split('.');
        let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        assert_eq!(header, HEADER_JSON.as_bytes());
        let payload =
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
        assert!(
            payload.starts_with(r#"{"sub":"2ZCDQ9","jti":""#),
            "{payload}"
        );
        assert!(payload.contains(r#""isMultiClient":false,"isPlusPlan":true,"iat":1770250767,"iss":"udapi-gateway-service","exp":"#));
    }

    #[test]
    fn jti_starts_with_iat() {
        let jti = new_jti(Timestamp::from_second(1_770_250_767).unwrap());
        assert_eq!(jti.len(), 24);
        assert_eq!(&jti[..8], "6983e20f");
    }

    #[test]
    fn sandbox_token_matches_reference_token_b() {
        // Reference token B: iat 1769805321, exp 1772402400.
        let iat = Timestamp::from_second(1_769_805_321).unwrap();
        assert_eq!(expiry(TokenKind::Sandbox, iat).as_second(), 1_772_402_400);
    }

    #[test]
    fn extended_token_lasts_a_year() {
        let iat: Timestamp = "2026-02-05T00:19:27Z".parse().unwrap();
        assert_eq!(
            expiry(TokenKind::Extended, iat),
            "2027-02-05T00:19:27Z".parse::<Timestamp>().unwrap()
        );
    }
}
