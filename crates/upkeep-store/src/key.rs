//! The master key: 32 random bytes that seal every token and secret at rest.
//!
//! It comes from the environment ([`MASTER_KEY_ENV`]) or from a key file that only its
//! owner may read (mode 0600). The key is zeroized on drop and never printed; what can be
//! printed is its [`MasterKey::key_id`], a short stable identifier.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

use crate::error::StoreError;

/// The environment variable the binary reads the master key from (it wins over the key file).
pub const MASTER_KEY_ENV: &str = "UPKEEP_MASTER_KEY";

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;

/// Where a loaded master key came from. The caller logs `Created` loudly: a new key
/// means nothing sealed with an older key can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Env,
    File,
    Created,
}

/// A 32-byte master key. Zeroized on drop; `Debug` shows only the key id.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: [u8; 4],
    source: String,
}

impl MasterKey {
    /// Wrap raw key bytes. `source` describes where they came from (shown in `WrongKey`).
    pub fn from_bytes(bytes: [u8; KEY_LEN], source: impl Into<String>) -> Self {
        let bytes = Zeroizing::new(bytes);
        let digest = Sha256::digest(bytes.as_slice());
        let id = [digest[0], digest[1], digest[2], digest[3]];
        Self {
            bytes,
            id,
            source: source.into(),
        }
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = Self::from_bytes(bytes, "a newly generated key");
        bytes.zeroize();
        key
    }

    /// Parse a key given as text: 64 hex characters, or base64 (standard or URL-safe,
    /// padded or not) of exactly 32 bytes. Surrounding whitespace is ignored.
    pub fn from_env_value(value: &str) -> Result<Self, StoreError> {
        Self::parse_text(value, &format!("${MASTER_KEY_ENV}"))
    }

    fn parse_text(value: &str, from: &str) -> Result<Self, StoreError> {
        let text = value.trim();
        let invalid = |reason: String| StoreError::InvalidKey {
            from: from.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let decoded: Zeroizing<Vec<u8>> =
            if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(hex::decode(text).map_err(|_| invalid("bad hex".into()))?)
            } else {
                let engines = [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::STANDARD_NO_PAD,
                    &base64::engine::general_purpose::URL_SAFE,
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                ];
                engines
                    .iter()
                    .find_map(|e| e.decode(text).ok())
                    .map(Zeroizing::new)
                    .ok_or_else(|| invalid("it is neither 64 hex characters nor base64".into()))?
            };
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "it decodes to {} bytes, not {KEY_LEN}",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes, from))
    }

    /// The same key, with a different description of where it came from.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Where this key came from, e.g. `key file /etc/upkeep/master.key`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A short stable identifier: the first 8 hex characters of SHA-256(key). Safe to print.
    pub fn key_id(&self) -> String {
        hex::encode(self.id)
    }

    pub(crate) fn id_bytes(&self) -> [u8; 4] {
        self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key as 64 hex characters, for writing a key file or showing once at `keygen`.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_slice()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={}, [REDACTED])", self.key_id())
    }
}

/// Load the master key: the environment value wins if it is set and non-blank, else the
/// key file (which must not be readable by group or others), else a new key is created
/// at `path` with mode 0600 and [`KeyOrigin::Created`] is returned.
pub fn load_or_create(
    path: &Path,
    env_value: Option<&str>,
) -> Result<(MasterKey, KeyOrigin), StoreError> {
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        return Ok((MasterKey::from_env_value(value)?, KeyOrigin::Env));
    }
    match read_key_file(path) {
        Ok(key) => Ok((key, KeyOrigin::File)),
        Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create_or_adopt(path)
        }
        Err(e) => Err(e),
    }
}

/// Creates the key file, or, if another process (a CLI command next to a starting
/// daemon) created it since we looked, uses that one: the file appears complete, by an
/// atomic link, so reading it is safe. Two processes never end up with two keys.
fn create_or_adopt(path: &Path) -> Result<(MasterKey, KeyOrigin), StoreError> {
    match create_key_file(path) {
        Ok(key) => Ok((key, KeyOrigin::Created)),
        Err(StoreError::KeyFileExists { .. }) => Ok((read_key_file(path)?, KeyOrigin::File)),
        Err(e) => Err(e),
    }
}

/// Read a key file: refuses files readable by group or others.
pub fn read_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    let file =
        std::fs::File::open(path).map_err(|e| StoreError::io("cannot open key file", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("cannot stat key file", path, e))?;
    check_owner_only(path, &meta)?;
    let mut raw = Zeroizing::new(Vec::with_capacity(80));
    std::io::Read::read_to_end(&mut &file, &mut raw)
        .map_err(|e| StoreError::io("cannot read key file", path, e))?;
    let from = format!("key file {}", path.display());
    if raw.len() == KEY_LEN && std::str::from_utf8(&raw).is_err() {
        // A raw 32-byte binary key.
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&raw);
        let key = MasterKey::from_bytes(bytes, from);
        bytes.zeroize();
        return Ok(key);
    }
    let text = std::str::from_utf8(&raw).map_err(|_| StoreError::InvalidKey {
        from: from.clone(),
        reason: "it is not text".into(),
    })?;
    MasterKey::parse_text(text, &from)
}

#[cfg(unix)]
fn check_owner_only(path: &Path, meta: &std::fs::Metadata) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), StoreError> {
    Ok(())
}

/// Create a new key file with a fresh random key, mode 0600, atomically: the key is
/// written and synced to a temporary file first, then linked into place, which fails if
/// `path` already exists. Never overwrites. Creates missing parent folders (mode 0700).
pub fn create_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    if path.symlink_metadata().is_ok() {
        return Err(StoreError::KeyFileExists {
            path: path.to_owned(),
        });
    }
    let dir = crate::files::parent_dir(path);
    crate::files::create_private_dir_all(&dir)?;
    let key = MasterKey::generate().with_source(format!("key file {}", path.display()));
    let mut text = key.to_hex();
    text.push('\n');

    let tmp = crate::files::temp_path_for(path);
    let result = (|| {
        let mut f = crate::files::create_new_private(&tmp)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::io("cannot write key file", &tmp, e))?;
        drop(f);
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                StoreError::KeyFileExists {
                    path: path.to_owned(),
                }
            } else {
                StoreError::io("cannot create key file", path, e)
            }
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    crate::files::sync_dir(&dir)?;
    Ok(key)
}

/// Where a key file would live by default inside a data folder.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_created_by_another_process_meanwhile_is_adopted_not_replaced() {
        // The window between "no key file" and "create it": another process won.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upkeep.key");
        let theirs = create_key_file(&path).unwrap();
        let (ours, origin) = create_or_adopt(&path).unwrap();
        assert_eq!(origin, KeyOrigin::File);
        assert_eq!(ours.key_id(), theirs.key_id());
        assert_eq!(read_key_file(&path).unwrap().key_id(), theirs.key_id());
    }

    use super::*;

    #[test]
    fn debug_shows_only_the_key_id() {
        let key = MasterKey::from_bytes([7u8; 32], "test");
        let printed = format!("{key:?}");
        assert!(printed.contains(&key.key_id()));
        assert!(!printed.contains(&*key.to_hex()));
        assert!(!printed.contains("0707070707"));
    }

    #[test]
    fn key_id_is_first_8_hex_of_sha256() {
        let key = MasterKey::from_bytes([0u8; 32], "test");
        // SHA-256 of 32 zero bytes starts with 66687aad.
        assert_eq!(key.key_id(), "66687aad");
    }

    #[test]
    fn env_value_accepts_hex_and_base64_of_the_same_key() {
        let key = MasterKey::generate();
        let hex_text = key.to_hex();
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.bytes());
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.bytes());
        for text in [hex_text.as_str(), &b64, &b64url, &format!("  {b64}\n")] {
            let parsed = MasterKey::from_env_value(text).unwrap();
            assert_eq!(parsed.key_id(), key.key_id(), "{text}");
        }
    }

    #[test]
    fn env_value_of_wrong_length_or_alphabet_is_a_clear_error_without_the_value() {
        for bad in [
            "",
            "abc",
            &"ab".repeat(31),
            "not base64 at all!!",
            &"zz".repeat(32),
        ] {
            let err = MasterKey::from_env_value(bad).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{msg}");
            assert!(msg.contains("64 hex characters or base64"), "{msg}");
            if bad.len() > 4 {
                assert!(!msg.contains(bad), "{msg}");
            }
        }
    }

    #[test]
    fn load_or_create_prefers_env_then_file_then_creates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let env_key = MasterKey::generate();

        let (k, origin) = load_or_create(&path, Some(&env_key.to_hex())).unwrap();
        assert_eq!((k.key_id(), origin), (env_key.key_id(), KeyOrigin::Env));
        assert!(!path.exists(), "env key must not create a file");

        let (created, origin) = load_or_create(&path, Some("  ")).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        assert_eq!(file_mode(&path), 0o600);

        let (loaded, origin) = load_or_create(&path, None).unwrap();
        assert_eq!(origin, KeyOrigin::File);
        assert_eq!(loaded.key_id(), created.key_id());
        assert!(loaded.source().contains("master.key"));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn group_readable_key_file_is_refused_with_chmod_advice() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        create_key_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_or_create(&path, None).unwrap_err();
        assert!(matches!(
            err,
            StoreError::KeyFilePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn create_key_file_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = create_key_file(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = create_key_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::KeyFileExists { .. }));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(read_key_file(&path).unwrap().key_id(), first.key_id());
    }

    #[test]
    fn key_file_with_garbage_is_invalid_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "hello\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create(&path, None).unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    }

    fn file_mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
}
