//! Sealing at rest with XChaCha20-Poly1305.
//!
//! A sealed blob is `[version: 1][key id: 4][nonce: 24][ciphertext + tag]`. The key id
//! (first 4 bytes of SHA-256 of the master key) lets [`open`] tell "sealed with another
//! key" ([`StoreError::WrongKey`]) apart from "modified" ([`StoreError::Tampered`]).
//! The associated data is `upkeep/v1|{account}|{purpose}|{key id}`, so a blob moved to
//! another account or another purpose does not open.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::key::MasterKey;

/// The format version byte of a sealed blob.
pub const SEAL_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + 24;
const TAG_LEN: usize = 16;

fn aad(account: &str, purpose: &str, key: &MasterKey) -> Vec<u8> {
    format!("upkeep/v1|{account}|{purpose}|{}", key.key_id()).into_bytes()
}

/// Seal `plaintext` for (`account`, `purpose`) with a fresh random 24-byte nonce.
pub fn seal(key: &MasterKey, account: &str, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = aad(account, purpose, key);
    // Encryption with a valid key and nonce only fails if the plaintext is longer than
    // the cipher's limit (256 GiB); nothing we seal is anywhere near that. Were it ever
    // to fail, the empty ciphertext would fail to open as `Tampered`, never leak.
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&key.id_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// The key id (8 hex chars) a blob says it was sealed with, if it has a readable header.
pub fn sealed_key_id(blob: &[u8]) -> Option<String> {
    (blob.len() >= HEADER_LEN && blob[0] == SEAL_VERSION).then(|| hex::encode(&blob[1..5]))
}

/// Open a blob sealed by [`seal`] for the same (`account`, `purpose`).
///
/// Fails with [`StoreError::WrongKey`] if the blob names another key, and with
/// [`StoreError::Tampered`] if it is malformed or fails authentication.
pub fn open(
    key: &MasterKey,
    account: &str,
    purpose: &str,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let tampered = || StoreError::Tampered {
        account: account.to_owned(),
        what: purpose.to_owned(),
    };
    if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != SEAL_VERSION {
        return Err(tampered());
    }
    if blob[1..5] != key.id_bytes() {
        return Err(StoreError::WrongKey {
            used_key_id: key.key_id(),
            used_from: key.source().to_owned(),
            sealed_key_id: hex::encode(&blob[1..5]),
        });
    }
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let aad = aad(account, purpose, key);
    cipher
        .decrypt(
            XNonce::from_slice(&blob[5..HEADER_LEN]),
            Payload {
                msg: &blob[HEADER_LEN..],
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| tampered())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate()
    }

    #[test]
    fn sealed_value_opens_with_same_key_account_and_purpose() {
        let k = key();
        let blob = seal(&k, "acct1", "access_token", b"eyJ.secret.token");
        assert_eq!(
            &*open(&k, "acct1", "access_token", &blob).unwrap(),
            b"eyJ.secret.token"
        );
        assert_eq!(sealed_key_id(&blob).unwrap(), k.key_id());
    }

    #[test]
    fn sealed_value_does_not_contain_plaintext_and_nonces_differ() {
        let k = key();
        let a = seal(&k, "a", "p", b"plaintext-token-value");
        let b = seal(&k, "a", "p", b"plaintext-token-value");
        assert_ne!(a, b);
        assert!(!a.windows(9).any(|w| w == b"plaintext"));
    }

    #[test]
    fn other_key_is_wrong_key_not_tampered() {
        let blob = seal(&key(), "a", "p", b"x");
        let other = key();
        let err = open(&other, "a", "p", &blob).unwrap_err();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    }

    #[test]
    fn flipped_byte_or_moved_blob_is_tampered() {
        let k = key();
        let blob = seal(&k, "a", "p", b"token");
        for i in HEADER_LEN - 24..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let err = open(&k, "a", "p", &bad).unwrap_err();
            assert!(
                matches!(&err, StoreError::Tampered { account, what } if account == "a" && what == "p"),
                "byte {i}: {err}"
            );
        }
        assert!(matches!(
            open(&k, "b", "p", &blob),
            Err(StoreError::Tampered { .. })
        ));
        assert!(matches!(
            open(&k, "a", "q", &blob),
            Err(StoreError::Tampered { .. })
        ));
        assert!(matches!(
            open(&k, "a", "p", &blob[..10]),
            Err(StoreError::Tampered { .. })
        ));
        let mut unknown_version = blob.clone();
        unknown_version[0] = 9;
        assert!(matches!(
            open(&k, "a", "p", &unknown_version),
            Err(StoreError::Tampered { .. })
        ));
    }
}
