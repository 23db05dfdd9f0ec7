//! RFC 6238 TOTP (SHA1, 6 digits, 30 s step) against the simulator clock.

use jiff::Timestamp;
use totp_rs::{Algorithm, Secret, TOTP};

const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;

/// Decodes a base32 seed; tolerates lowercase, spaces and `=` padding like authenticator apps do.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let cleaned: String = secret
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    Secret::Encoded(cleaned).to_bytes().ok()
}

/// Base32 (RFC 4648, no padding) text of a raw seed.
pub fn encode_secret(raw: &[u8]) -> String {
    match Secret::Raw(raw.to_vec()).to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => String::new(),
    }
}

fn totp(seed: Vec<u8>) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP_SECS, seed)
}

/// The 6-digit code for a base32 `secret` at `at`, or `None` if the secret is not base32
/// or `at` is before 1970.
pub fn code_at(secret: &str, at: Timestamp) -> Option<String> {
    let seed = decode_secret(secret)?;
    let secs = u64::try_from(at.as_second()).ok()?;
    Some(totp(seed).generate(secs))
}

/// True if `code` matches the step of `at` or one step either side.
pub fn verify(secret: &str, code: &str, at: Timestamp) -> bool {
    let Some(seed) = decode_secret(secret) else {
        return false;
    };
    let Ok(secs) = u64::try_from(at.as_second()) else {
        return false;
    };
    if code.len() != DIGITS || !code.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let t = totp(seed);
    [
        secs.checked_sub(STEP_SECS),
        Some(secs),
        secs.checked_add(STEP_SECS),
    ]
    .into_iter()
    .flatten()
    .any(|s| t.generate(s) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector_matches() {
        // RFC 6238 appendix B: seed "12345678901234567890", T=59 -> 94287082 (8 digits); 6 digits -> 287082.
        let secret = encode_secret(b"12345678901234567890");
        let at = Timestamp::from_second(59).unwrap();
        assert_eq!(code_at(&secret, at).unwrap(), "287082");
    }

    #[test]
    fn neighbouring_steps_are_accepted_and_further_ones_not() {
        let secret = encode_secret(b"12345678901234567890");
        let at = Timestamp::from_second(1_111_111_109).unwrap();
        let code = code_at(&secret, at).unwrap();
        assert!(verify(&secret, &code, at));
        assert!(verify(
            &secret,
            &code,
            Timestamp::from_second(1_111_111_109 + 30).unwrap()
        ));
        assert!(!verify(
            &secret,
            &code,
            Timestamp::from_second(1_111_111_109 + 90).unwrap()
        ));
    }

    #[test]
    fn lowercase_padded_secret_is_accepted() {
        assert_eq!(
            decode_secret("jbsw y3dp ehpk 3pxp===="),
            decode_secret("JBSWY3DPEHPK3PXP")
        );
    }
}
