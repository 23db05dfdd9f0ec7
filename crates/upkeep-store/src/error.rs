//! The one error type of this crate. Every message is one line that says what was wrong
//! and what to do. No message ever contains a token, a secret or a database password.

use std::path::PathBuf;

/// Everything that can go wrong in the store, the key handling and the file sinks.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The master key is not the one the store (or backup, or sealed value) was sealed with.
    #[error(
        "the master key {used_key_id} (from {used_from}) is not the key {sealed_key_id} this data was sealed with; \
         set {env} or the key file back to the original key (nothing was changed)",
        env = crate::key::MASTER_KEY_ENV
    )]
    WrongKey {
        used_key_id: String,
        used_from: String,
        sealed_key_id: String,
    },

    /// A sealed value failed authentication: the row or file was modified or damaged.
    #[error(
        "the sealed {what} of account '{account}' failed its integrity check (modified or damaged); \
         re-import that value or restore a backup"
    )]
    Tampered { account: String, what: String },

    /// The database file is not a (valid) SQLite database.
    #[error(
        "{} is not a valid upkeep database (corrupt or not SQLite); move it aside and restore a backup or start a new store",
        path.display()
    )]
    Corrupt { path: PathBuf },

    /// The database stayed locked by someone else for longer than the busy timeout.
    #[error(
        "the database {} is locked by another process (is another upkeep instance running?); stop it or use a different database",
        path.display()
    )]
    Locked { path: PathBuf },

    /// A stored row holds a value this version cannot read.
    #[error("the stored {what} is unreadable ({detail}); restore a backup or re-import it")]
    BadRow { what: String, detail: String },

    /// A master key given as text could not be parsed.
    #[error(
        "invalid master key from {from}: {reason}; expected 32 bytes as 64 hex characters or base64 (make one with `upkeep keygen`)"
    )]
    InvalidKey { from: String, reason: String },

    /// The key file can be read by group or others.
    #[error(
        "the key file {} is readable by group or others (mode {mode:03o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },

    /// `create_key_file` was asked to overwrite an existing key.
    #[error(
        "the key file {} already exists; refusing to overwrite a master key (move it aside first if you really mean it)",
        path.display()
    )]
    KeyFileExists { path: PathBuf },

    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The database URL names a backend this build does not know.
    #[error(
        "unsupported store URL scheme '{scheme}'; use sqlite://PATH or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl { scheme: String },

    /// A PostgreSQL schema name that is not a plain identifier.
    #[error("invalid schema name '{0}'; use lowercase letters, digits and underscores")]
    InvalidSchema(String),

    /// The account does not exist; add it first.
    #[error(
        "unknown account '{account}'; add it to the configuration (or `upkeep accounts add`) first"
    )]
    UnknownAccount { account: String },

    /// An API key name is taken (by a live or a revoked key).
    #[error("an API key named '{name}' exists (or existed); pick another name")]
    ApiKeyExists { name: String },

    /// A backup file is not a backup, or is of an unknown version.
    #[error("{} is not an upkeep backup ({reason}); pick a file named upkeep-backup-*.sealed", path.display())]
    BadBackup { path: PathBuf, reason: String },

    /// An existing `.env` file could not be understood.
    #[error("{} is not a UTF-8 text file; fix or remove it", path.display())]
    BadEnvFile { path: PathBuf },

    /// The database server could not be reached.
    #[error(
        "cannot reach the {backend} database ({reason}); check the URL and that the server is running"
    )]
    Unreachable {
        backend: &'static str,
        reason: String,
    },

    /// Schema migration failed.
    #[error("database migration failed: {0}; check the database is reachable and writable")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}
