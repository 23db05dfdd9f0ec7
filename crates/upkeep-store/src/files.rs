//! Files: atomic private writes, the token sinks bots read (legacy JSON and `.env`),
//! and sealed backups.
//!
//! Every file written here is mode 0600 and replaces its target atomically: the bytes go
//! to a temporary file in the same folder, which is synced, renamed over the target, and
//! then the folder is synced. A reader sees the old file or the new one, never half.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rand::RngCore as _;
use upkeep_core::AccessToken;
use zeroize::Zeroizing;

use crate::backup::{Backup, BackupStats};
use crate::error::StoreError;
use crate::key::MasterKey;
use crate::{TokenStore, seal};

/// How many backups [`backup_to_dir`] keeps.
pub const BACKUPS_KEPT: usize = 10;
const BACKUP_PREFIX: &str = "upkeep-backup-";
const BACKUP_SUFFIX: &str = ".sealed";
const BACKUP_MAGIC: &[u8] = b"UPKEEP-BACKUP/1\n";
const BACKUP_PURPOSE: &str = "backup";
/// The variable [`write_env_sink`] sets.
pub const ENV_TOKEN_VAR: &str = "UPSTOX_ACCESS_TOKEN";

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn create_private_dir_all(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| StoreError::io("cannot create folder", dir, e))
}

/// Removes the temporary files [`write_atomic`] leaves behind when a process dies
/// between writing and renaming (`.NAME.tmp-<12 hex>`): they may hold a plaintext
/// token. Returns how many were removed. A missing folder is not an error.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("cannot list", dir, e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())
                .map_err(|e| StoreError::io("cannot remove", entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((_, suffix)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    suffix.len() == 12 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    let mut rnd = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut rnd);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    parent_dir(path).join(format!(".{name}.tmp-{}", hex::encode(rnd)))
}

/// Create a new file that only its owner can read or write; fails if it exists.
pub(crate) fn create_new_private(path: &Path) -> Result<File, StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
        .map_err(|e| StoreError::io("cannot create file", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("cannot sync folder", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replace `path` with `bytes` atomically (temp file in the same folder, fsync, rename,
/// fsync of the folder). The result is mode 0600. Missing parent folders are created
/// with mode 0700. On error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = parent_dir(path);
    create_private_dir_all(&dir)?;
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = create_new_private(&tmp)?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::io("cannot write", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| StoreError::io("cannot replace", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
}

/// Format a timestamp the way the legacy sink file does: RFC 3339 in IST (`+05:30`),
/// whole seconds.
pub fn ist_rfc3339(ts: Timestamp) -> String {
    let whole = Timestamp::from_second(ts.as_second()).unwrap_or(ts);
    match jiff::tz::Offset::from_seconds(5 * 3600 + 30 * 60) {
        Ok(ist) => whole
            .to_zoned(jiff::tz::TimeZone::fixed(ist))
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => whole.to_string(),
    }
}

/// What the JSON sink says besides the token and its expiry.
#[derive(Debug, Clone)]
pub struct JsonSinkInfo<'a> {
    pub account: &'a str,
    pub issued_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

#[derive(serde::Serialize)]
struct JsonSinkFile<'a> {
    access_token: &'a str,
    expires_at: String,
    expires_at_epoch: i64,
    issued_at: Option<String>,
    account: &'a str,
    token_type: &'static str,
    updated_at: String,
}

/// Write the legacy `data/upstox_tokens.json` shape:
/// `{"access_token", "expires_at" (RFC 3339 +05:30), "expires_at_epoch" (seconds),
/// "issued_at" (RFC 3339 +05:30 or null), "account", "token_type": "Bearer", "updated_at"}`.
pub fn write_json_sink(
    path: &Path,
    token: &AccessToken,
    expires_at: Timestamp,
    info: &JsonSinkInfo<'_>,
) -> Result<(), StoreError> {
    let body = JsonSinkFile {
        access_token: token.expose(),
        expires_at: ist_rfc3339(expires_at),
        expires_at_epoch: expires_at.as_second(),
        issued_at: info.issued_at.map(ist_rfc3339),
        account: info.account,
        token_type: "Bearer",
        updated_at: ist_rfc3339(info.updated_at),
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(512));
    // Serializing a struct of strings and integers into a Vec cannot fail.
    serde_json::to_writer_pretty(&mut *bytes, &body).map_err(|e| StoreError::BadRow {
        what: "token sink".into(),
        detail: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Create or rewrite a `.env` file so it holds `UPSTOX_ACCESS_TOKEN=<token>` exactly
/// once, keeping every other line (and an `export ` prefix) as it was.
pub fn write_env_sink(path: &Path, token: &AccessToken) -> Result<(), StoreError> {
    let old = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(Vec::new()),
        Err(e) => return Err(StoreError::io("cannot read", path, e)),
    };
    let old_text = std::str::from_utf8(&old).map_err(|_| StoreError::BadEnvFile {
        path: path.to_owned(),
    })?;
    let mut out = Zeroizing::new(String::with_capacity(old_text.len() + 1024));
    let mut written = false;
    for line in old_text.split_inclusive('\n') {
        let (body, ending) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            },
        };
        match env_assignment_prefix(body) {
            Some(_) if written => {} // drop duplicate assignments
            Some(prefix) => {
                out.push_str(prefix);
                out.push_str(ENV_TOKEN_VAR);
                out.push('=');
                out.push_str(token.expose());
                out.push_str(if ending.is_empty() { "\n" } else { ending });
                written = true;
            }
            None => out.push_str(line),
        }
    }
    if !written {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(ENV_TOKEN_VAR);
        out.push('=');
        out.push_str(token.expose());
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

/// If `line` assigns [`ENV_TOKEN_VAR`], the text before the name (indent and `export `).
fn env_assignment_prefix(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let (prefix_len, rest) = match trimmed.strip_prefix("export") {
        Some(r) if r.starts_with([' ', '\t']) => {
            let r2 = r.trim_start();
            (indent.len() + trimmed.len() - r2.len(), r2)
        }
        _ => (indent.len(), trimmed),
    };
    let after = rest.strip_prefix(ENV_TOKEN_VAR)?;
    after
        .trim_start()
        .starts_with('=')
        .then(|| &line[..prefix_len])
}

fn backup_file_name(now: Timestamp) -> String {
    let whole = Timestamp::from_second(now.as_second()).unwrap_or(now);
    format!(
        "{BACKUP_PREFIX}{}{BACKUP_SUFFIX}",
        whole.strftime("%Y%m%dT%H%M%SZ")
    )
}

fn is_backup_name(name: &str) -> bool {
    name.strip_prefix(BACKUP_PREFIX)
        .and_then(|r| r.strip_suffix(BACKUP_SUFFIX))
        .is_some_and(|stamp| stamp.len() == 16 && stamp.ends_with('Z'))
}

/// Export the whole store, seal it with `key`, and write it to
/// `dir/upkeep-backup-YYYYMMDDTHHMMSSZ.sealed` (mode 0600). Keeps the newest
/// [`BACKUPS_KEPT`] backups in `dir` and removes older ones. Returns the new file's path.
pub async fn backup_to_dir(
    store: &(impl TokenStore + ?Sized),
    key: &MasterKey,
    dir: &Path,
    now: Timestamp,
) -> Result<PathBuf, StoreError> {
    let backup = store.export().await?;
    let plain = backup.to_json()?;
    let sealed = seal::seal(key, "", BACKUP_PURPOSE, &plain);
    let mut bytes = Vec::with_capacity(BACKUP_MAGIC.len() + sealed.len());
    bytes.extend_from_slice(BACKUP_MAGIC);
    bytes.extend_from_slice(&sealed);
    let path = dir.join(backup_file_name(now));
    write_atomic(&path, &bytes)?;
    prune_backups(dir)?;
    Ok(path)
}

fn prune_backups(dir: &Path) -> Result<(), StoreError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| StoreError::io("cannot list backups in", dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_backup_name(n))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(BACKUPS_KEPT);
    for old in &names[..excess] {
        let p = dir.join(old);
        std::fs::remove_file(&p).map_err(|e| StoreError::io("cannot remove old backup", &p, e))?;
    }
    Ok(())
}

/// Read and open a backup file without touching any store.
pub fn read_backup_file(key: &MasterKey, path: &Path) -> Result<Backup, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io("cannot read backup", path, e))?;
    let bad = |reason: &str| StoreError::BadBackup {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let sealed = bytes
        .strip_prefix(BACKUP_MAGIC)
        .ok_or_else(|| bad("missing backup header"))?;
    let plain = seal::open(key, "", BACKUP_PURPOSE, sealed).map_err(|e| match e {
        StoreError::Tampered { .. } => bad("it fails its integrity check: damaged or modified"),
        other => other,
    })?;
    Backup::from_json(&plain).map_err(|reason| bad(&reason))
}

/// Verify a backup file completely (header, key, integrity, contents), then replace the
/// whole store with it in one transaction. Nothing is changed if any check fails.
pub async fn restore_from_file(
    store: &(impl TokenStore + ?Sized),
    key: &MasterKey,
    path: &Path,
) -> Result<BackupStats, StoreError> {
    let backup = read_backup_file(key, path)?;
    let stats = backup.stats();
    store.import(backup).await?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn only_file_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_files_left_by_a_crash_are_removed_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("tokens.json");
        let left = temp_path_for(&target);
        std::fs::write(&left, b"plaintext token").unwrap();
        std::fs::write(&target, b"{}").unwrap();
        std::fs::write(dir.path().join(".env.tmp-notreallyhex"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.tmp-0123456789ab"), b"x").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert!(!left.exists());
        assert!(target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(
            remove_stale_temp_files(&dir.path().join("missing")).unwrap(),
            0
        );
    }

    #[test]
    fn write_atomic_replaces_with_private_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(only_file_in(dir.path()), vec!["out.txt"]);
    }

    #[test]
    fn json_sink_has_legacy_shape_and_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/upstox_tokens.json");
        let token = AccessToken::new("eyJhbGciOiJIUzI1NiJ9.payload-part.signature-part");
        let expires: Timestamp = "2024-11-12T22:00:00Z".parse().unwrap(); // 03:30 IST
        let issued: Timestamp = "2024-11-12T12:00:00Z".parse().unwrap();
        let updated: Timestamp = "2024-11-12T12:00:05.75Z".parse().unwrap();
        write_json_sink(
            &path,
            &token,
            expires,
            &JsonSinkInfo {
                account: "main",
                issued_at: Some(issued),
                updated_at: updated,
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(token.expose()).count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["access_token"], token.expose());
        assert_eq!(v["expires_at"], "2024-11-13T03:30:00+05:30");
        assert_eq!(v["expires_at_epoch"], expires.as_second());
        assert_eq!(v["issued_at"], "2024-11-12T17:30:00+05:30");
        assert_eq!(v["updated_at"], "2024-11-12T17:30:05+05:30");
        assert_eq!(v["account"], "main");
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            only_file_in(&dir.path().join("data")),
            vec!["upstox_tokens.json"]
        );
    }

    #[test]
    fn json_sink_without_issued_at_writes_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let now: Timestamp = "2024-11-12T12:00:00Z".parse().unwrap();
        let info = JsonSinkInfo {
            account: "a",
            issued_at: None,
            updated_at: now,
        };
        write_json_sink(&path, &AccessToken::new("tok"), now, &info).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(v["issued_at"].is_null());
    }

    #[test]
    fn env_sink_replaces_token_line_and_keeps_every_other_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        let before = "# bot settings\nUPSTOX_API_KEY=abc\n\nexport UPSTOX_ACCESS_TOKEN=old-token-1\nLOG_LEVEL=debug\nUPSTOX_ACCESS_TOKEN = old-token-2\nUPSTOX_ACCESS_TOKEN_BACKUP=keep-me\nTAIL=no-newline";
        std::fs::write(&path, before).unwrap();
        let token = AccessToken::new("new.jwt.token");
        write_env_sink(&path, &token).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            "# bot settings\nUPSTOX_API_KEY=abc\n\nexport UPSTOX_ACCESS_TOKEN=new.jwt.token\nLOG_LEVEL=debug\nUPSTOX_ACCESS_TOKEN_BACKUP=keep-me\nTAIL=no-newline"
        );
        assert_eq!(after.matches("new.jwt.token").count(), 1);
        assert!(!after.contains("old-token"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(only_file_in(dir.path()), vec![".env"]);
    }

    #[test]
    fn env_sink_appends_when_missing_and_creates_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "A=1").unwrap();
        write_env_sink(&path, &AccessToken::new("t1")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "A=1\nUPSTOX_ACCESS_TOKEN=t1\n"
        );

        let fresh = dir.path().join("new/.env");
        write_env_sink(&fresh, &AccessToken::new("t2")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            "UPSTOX_ACCESS_TOKEN=t2\n"
        );
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn backup_names_sort_by_time_and_are_recognised() {
        let t: Timestamp = "2024-11-12T12:34:56.9Z".parse().unwrap();
        let name = backup_file_name(t);
        assert_eq!(name, "upkeep-backup-20241112T123456Z.sealed");
        assert!(is_backup_name(&name));
        assert!(!is_backup_name("upkeep-backup-notes.sealed"));
    }
}
