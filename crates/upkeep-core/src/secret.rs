//! Secret types. A token, client secret, PIN or TOTP seed is one of these from the
//! moment it is parsed until the moment it is put on the wire. `Debug` prints
//! `[REDACTED]`, there is no `Display`, and the memory is zeroized on drop.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// A secret string (client secret, PIN, TOTP seed, API key, password).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }
    /// The only way to read the value. Call it where the value goes on the wire or
    /// into a cipher, never to format it for a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl PartialEq for Secret {
    /// Constant-time in the length of the shorter value is not needed here: this is
    /// for tests and config diffs; API keys are compared by digest elsewhere.
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}
impl Eq for Secret {}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}
impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `any`, not `str`: serde_json's `deserialize_str` builds the quoting "invalid type"
        // error itself, without asking the visitor.
        d.deserialize_any(SecretVisitor)
    }
}

/// Reads a string; any other value is refused with a message that does not quote it
/// (serde's stock "invalid type: integer `918273`" would put a PIN in an error).
struct SecretVisitor;

const NOT_A_STRING: &str = "expected a quoted string (value not shown)";

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_char<E: serde::de::Error>(self, _: char) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
}

/// An Upstox access token (a JWT). Same guarantees as [`Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Secret);

impl AccessToken {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Secret::new(value.into().trim().to_owned()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
    /// A short, non-reversible fingerprint for logs and audit events: the first 12 hex
    /// chars of SHA-256(token). Safe to print; lets a human tell two tokens apart.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.expose().as_bytes());
        let mut out = String::with_capacity(12);
        for b in digest.iter().take(6) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken([REDACTED] fp={})", self.fingerprint())
    }
}

impl<'de> serde::Deserialize<'de> for AccessToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Secret::deserialize(d).map(|s| AccessToken::new(s.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-pin-1234");
        let t = AccessToken::new("eyJhbGciOi.payload.sig-secret-part");
        let printed = format!("{s:?} {t:?} {:?}", vec![&s]);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("sig-secret-part"), "{printed}");
        assert!(printed.contains("REDACTED"));
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_rejected_without_echoing_the_value() {
        // A PIN typed as a JSON number is an easy mistake; serde's stock message would be
        // "invalid type: integer `918273`, expected a string".
        for json in [
            "918273",
            "9182.73",
            "true",
            "[\"918273\"]",
            "{\"pin\":\"918273\"}",
        ] {
            let err = serde_json::from_str::<Secret>(json)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("918273") && !err.contains("9182.73"),
                "{json}: {err}"
            );
            let err = serde_json::from_str::<AccessToken>(json)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("918273") && !err.contains("9182.73"),
                "{json}: {err}"
            );
        }
        let err = serde_json::from_str::<Secret>("true")
            .unwrap_err()
            .to_string();
        assert!(err.contains("string"), "{err}");
        assert_eq!(
            serde_json::from_str::<Secret>("\"918273\"")
                .unwrap()
                .expose(),
            "918273"
        );
        assert_eq!(
            serde_json::from_str::<AccessToken>("\" a.b.c \"")
                .unwrap()
                .expose(),
            "a.b.c"
        );
    }

    #[test]
    fn fingerprint_is_stable_and_distinguishes_tokens() {
        let a = AccessToken::new("a.b.c");
        let b = AccessToken::new("a.b.d");
        assert_eq!(a.fingerprint(), AccessToken::new(" a.b.c\n").fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 12);
    }
}
