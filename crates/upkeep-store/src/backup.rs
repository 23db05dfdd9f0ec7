//! The contents of a backup: everything in a store except leases, with tokens and
//! secrets opened (so a backup can be restored into a store with another master key).
//! It is only ever written to disk sealed (see [`crate::files::backup_to_dir`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use upkeep_core::{AccessToken, Secret};
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::{AccountRecord, AuditEvent, StoredToken};

/// Which of an account's two token slots a token is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSlot {
    Current,
    Previous,
}

impl TokenSlot {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "current" => Some(Self::Current),
            "previous" => Some(Self::Previous),
            _ => None,
        }
    }
}

/// One token in a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupToken {
    pub account: String,
    pub slot: TokenSlot,
    pub token: StoredToken,
}

/// One per-account secret in a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSecret {
    pub account: String,
    pub name: String,
    pub value: Secret,
}

/// A whole store (without leases). `Debug` never shows a token or secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backup {
    pub accounts: Vec<AccountRecord>,
    pub tokens: Vec<BackupToken>,
    pub secrets: Vec<BackupSecret>,
    /// Audit events with their ids, oldest first.
    pub events: Vec<(i64, AuditEvent)>,
}

/// How much a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupStats {
    pub accounts: usize,
    pub tokens: usize,
    pub secrets: usize,
    pub events: usize,
}

const BACKUP_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct FileV1 {
    format: u32,
    accounts: Vec<AccountV1>,
    tokens: Vec<TokenV1>,
    secrets: Vec<SecretV1>,
    events: Vec<EventV1>,
}

#[derive(Serialize, Deserialize)]
struct AccountV1 {
    id: String,
    env: String,
    created_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct TokenV1 {
    account: String,
    slot: TokenSlot,
    #[serde(serialize_with = "expose_token")]
    token: AccessToken,
    issued_at: Option<Timestamp>,
    expires_at: Timestamp,
    kind: String,
    source: String,
    stored_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct SecretV1 {
    account: String,
    name: String,
    #[serde(serialize_with = "expose_secret")]
    value: Secret,
}

#[derive(Serialize, Deserialize)]
struct EventV1 {
    id: i64,
    account: String,
    at: Timestamp,
    actor: String,
    kind: String,
    outcome: String,
    detail: String,
}

fn expose_token<S: serde::Serializer>(t: &AccessToken, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.expose())
}

fn expose_secret<S: serde::Serializer>(t: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.expose())
}

impl Backup {
    pub fn stats(&self) -> BackupStats {
        BackupStats {
            accounts: self.accounts.len(),
            tokens: self.tokens.len(),
            secrets: self.secrets.len(),
            events: self.events.len(),
        }
    }

    /// The plaintext JSON form (holds tokens: only ever sealed before it leaves memory).
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let file = FileV1 {
            format: BACKUP_FORMAT,
            accounts: self
                .accounts
                .iter()
                .map(|a| AccountV1 {
                    id: a.id.clone(),
                    env: a.env.clone(),
                    created_at: a.created_at,
                })
                .collect(),
            tokens: self
                .tokens
                .iter()
                .map(|t| TokenV1 {
                    account: t.account.clone(),
                    slot: t.slot,
                    token: t.token.token.clone(),
                    issued_at: t.token.issued_at,
                    expires_at: t.token.expires_at,
                    kind: t.token.kind.clone(),
                    source: t.token.source.clone(),
                    stored_at: t.token.stored_at,
                })
                .collect(),
            secrets: self
                .secrets
                .iter()
                .map(|s| SecretV1 {
                    account: s.account.clone(),
                    name: s.name.clone(),
                    value: s.value.clone(),
                })
                .collect(),
            events: self
                .events
                .iter()
                .map(|(id, e)| EventV1 {
                    id: *id,
                    account: e.account.clone(),
                    at: e.at,
                    actor: e.actor.clone(),
                    kind: e.kind.clone(),
                    outcome: e.outcome.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(4096));
        serde_json::to_writer(&mut *out, &file).map_err(|e| StoreError::BadRow {
            what: "backup".into(),
            detail: e.to_string(),
        })?;
        Ok(out)
    }

    /// Parse the plaintext JSON form. The error is a reason without any value in it.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let file: FileV1 = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "unreadable contents at line {} column {}",
                e.line(),
                e.column()
            )
        })?;
        if file.format != BACKUP_FORMAT {
            return Err(format!("unknown backup format {}", file.format));
        }
        Ok(Self {
            accounts: file
                .accounts
                .into_iter()
                .map(|a| AccountRecord {
                    id: a.id,
                    env: a.env,
                    created_at: a.created_at,
                })
                .collect(),
            tokens: file
                .tokens
                .into_iter()
                .map(|t| BackupToken {
                    account: t.account,
                    slot: t.slot,
                    token: StoredToken {
                        fingerprint: t.token.fingerprint(),
                        token: t.token,
                        issued_at: t.issued_at,
                        expires_at: t.expires_at,
                        kind: t.kind,
                        source: t.source,
                        stored_at: t.stored_at,
                    },
                })
                .collect(),
            secrets: file
                .secrets
                .into_iter()
                .map(|s| BackupSecret {
                    account: s.account,
                    name: s.name,
                    value: s.value,
                })
                .collect(),
            events: file
                .events
                .into_iter()
                .map(|e| {
                    (
                        e.id,
                        AuditEvent {
                            account: e.account,
                            at: e.at,
                            actor: e.actor,
                            kind: e.kind,
                            outcome: e.outcome,
                            detail: e.detail,
                        },
                    )
                })
                .collect(),
        })
    }
}
