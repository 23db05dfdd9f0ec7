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
        String::deserialize(d).map(Secret::new)
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
        String::deserialize(d).map(AccessToken::new)
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
    fn fingerprint_is_stable_and_distinguishes_tokens() {
        let a = AccessToken::new("a.b.c");
        let b = AccessToken::new("a.b.d");
        assert_eq!(a.fingerprint(), AccessToken::new(" a.b.c\n").fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 12);
    }
}
