//! The OAuth `state` parameter: signed, short-lived and single-use.
//!
//! A state is `v1.<account>.<expires_unix>.<nonce>.<mac>` where `mac` is
//! HMAC-SHA256 over the rest under a key derived from the master key. Anything that
//! holds the master key (the daemon, or `upkeep login` on the same machine) can mint
//! one; only the daemon redeems it, and it remembers redeemed nonces until they
//! expire, so a state works once. (The authorization code itself is single-use at
//! Upstox as well, so a replay after a restart gains nothing.)

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

type HmacSha256 = Hmac<Sha256>;

/// How long a login link stays usable.
pub const STATE_TTL: SignedDuration = SignedDuration::from_mins(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("the login link is malformed; start again from `upkeep login` or the alert's link")]
    Malformed,
    #[error("the login link was not issued by this upkeep (bad signature); start again")]
    BadSignature,
    #[error("the login link expired; start again from `upkeep login` or the dashboard")]
    Expired,
    #[error("the login link was already used; start again from `upkeep login`")]
    AlreadyUsed,
}

/// Mints and redeems states. Cheap to share behind an `Arc`.
pub struct StateBook {
    key: [u8; 32],
    ttl: SignedDuration,
    used: Mutex<HashMap<String, Timestamp>>,
}

impl std::fmt::Debug for StateBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateBook([REDACTED])")
    }
}

impl StateBook {
    /// `key_material` is the master key (or any secret shared by minter and redeemer).
    pub fn new(key_material: &[u8]) -> Self {
        Self::with_purpose(b"upkeep/oauth-state/v1", key_material, STATE_TTL)
    }

    /// A book for another kind of signed single-use link (the dashboard's sign-in
    /// link): the purpose label keys the MAC, so a link of one kind never works as the
    /// other.
    pub fn with_purpose(purpose: &[u8], key_material: &[u8], ttl: SignedDuration) -> Self {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(purpose).unwrap_or_else(|_| unreachable_hmac());
        mac.update(key_material);
        let mut key = [0u8; 32];
        key.copy_from_slice(&mac.finalize().into_bytes());
        Self {
            key,
            ttl,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, body: &str) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac());
        mac.update(body.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A fresh state for `account`, valid for [`STATE_TTL`] from `now`.
    pub fn mint(&self, account: &str, now: Timestamp) -> String {
        let nonce: [u8; 16] = rand::random();
        let expires = now.as_second() + self.ttl.as_secs();
        let body = format!(
            "v1.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(account.as_bytes()),
            expires,
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// Checks signature and expiry and marks the state used. Returns the account id.
    pub fn redeem(&self, state: &str, now: Timestamp) -> Result<String, StateError> {
        let (body, mac) = state.rsplit_once('.').ok_or(StateError::Malformed)?;
        let parts: Vec<&str> = body.split('.').collect();
        let [version, account, expires, nonce] = parts.as_slice() else {
            return Err(StateError::Malformed);
        };
        if *version != "v1" || nonce.is_empty() {
            return Err(StateError::Malformed);
        }
        let expected = self.mac(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            mac.as_bytes(),
        )) {
            return Err(StateError::BadSignature);
        }
        let expires: i64 = expires.parse().map_err(|_| StateError::Malformed)?;
        if now.as_second() >= expires {
            return Err(StateError::Expired);
        }
        let account = URL_SAFE_NO_PAD
            .decode(account)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(StateError::Malformed)?;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, exp| *exp > now);
        let until = Timestamp::from_second(expires).unwrap_or(now);
        if used.insert((*nonce).to_owned(), until).is_some() {
            return Err(StateError::AlreadyUsed);
        }
        Ok(account)
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot happen.
    unreachable!("HMAC-SHA256 accepts any key length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_state_redeems_once_for_its_account() {
        let book = StateBook::new(b"master key bytes");
        let s = book.mint("main", t(1_800_000_000));
        assert_eq!(book.redeem(&s, t(1_800_000_010)), Ok("main".into()));
        assert_eq!(
            book.redeem(&s, t(1_800_000_020)),
            Err(StateError::AlreadyUsed)
        );
    }

    #[test]
    fn an_expired_or_forged_state_is_refused() {
        let book = StateBook::new(b"master key bytes");
        let s = book.mint("main", t(1_800_000_000));
        let later = t(1_800_000_000 + STATE_TTL.as_secs());
        assert_eq!(book.redeem(&s, later), Err(StateError::Expired));

        let other = StateBook::new(b"another key");
        let forged = other.mint("main", t(1_800_000_000));
        assert_eq!(
            book.redeem(&forged, t(1_800_000_001)),
            Err(StateError::BadSignature)
        );
        let tampered = s.replacen("v1.", "v1.x", 1);
        assert!(book.redeem(&tampered, t(1_800_000_001)).is_err());
        assert_eq!(
            book.redeem("garbage", t(1_800_000_001)),
            Err(StateError::Malformed)
        );
    }
}
