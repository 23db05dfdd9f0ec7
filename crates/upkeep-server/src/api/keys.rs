//! API keys on the hot path: the live keys' SHA-256 digests held in memory, refreshed
//! from the store every [`REFRESH`], so a key revoked by `upkeep apikey revoke` (another
//! process) stops working within a few seconds and no request reads the store.
//!
//! A key is a 256-bit random value, so one SHA-256 and a constant-time compare against
//! each live digest is the whole check.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::engine::Engine;

/// How often the live keys are re-read from the store.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The name requests made with the daemon's local credential carry (in logs and audit
/// lines). `upkeep apikey create` refuses it, so it never names a stored key.
pub const LOCAL_KEY_NAME: &str = "local-cli";

/// Scopes, from least to most powerful. `admin` may do everything; `token:read` also
/// reads status (it could read the raw token anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    StatusRead,
    TokenRead,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "status:read" => Some(Scope::StatusRead),
            "token:read" => Some(Scope::TokenRead),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StatusRead => "status:read",
            Scope::TokenRead => "token:read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may do what `needed` allows.
    pub fn allows(self, needed: Scope) -> bool {
        match needed {
            Scope::Admin => self == Scope::Admin,
            Scope::TokenRead => matches!(self, Scope::TokenRead | Scope::Admin),
            Scope::StatusRead => true,
        }
    }
}

/// A live key as the cache holds it.
#[derive(Clone)]
struct Live {
    name: Arc<str>,
    digest: [u8; 32],
    scope: Scope,
}

/// Who a request's key says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    /// Shared with the cache (no copy per request).
    pub name: Arc<str>,
    pub scope: Scope,
    /// Signed in through the dashboard's session cookie (not a key): changes need the
    /// session's CSRF token too.
    pub via_session: bool,
}

/// The in-memory key cache.
#[derive(Clone, Default)]
pub struct KeyCache {
    live: Arc<RwLock<Vec<Live>>>,
    /// The digest of the daemon's local credential (admin, in memory only: it dies with
    /// the daemon and is never a stored key).
    local: Arc<RwLock<Option<[u8; 32]>>>,
    loaded: Arc<std::sync::atomic::AtomicBool>,
}

impl KeyCache {
    /// Loads the keys now and keeps them fresh in a supervised task until the engine
    /// stops.
    pub async fn start(engine: &Engine) -> Self {
        let cache = Self::default();
        cache.reload(engine.store().as_ref()).await;
        if tokio::runtime::Handle::try_current().is_ok() {
            let (c, e) = (cache.clone(), engine.clone());
            engine.spawn_supervised("api key cache", None, move || {
                let (cache, engine) = (c.clone(), e.clone());
                async move {
                    let stop = engine.shutdown_token();
                    let mut tick = tokio::time::interval(REFRESH);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tick.tick() => cache.reload(engine.store().as_ref()).await,
                        }
                    }
                }
            });
        }
        cache
    }

    /// Re-reads the live keys. On a store error the last good list stays (a store
    /// blip must not lock every client out), and the error is logged.
    pub async fn reload(&self, store: &dyn upkeep_store::TokenStore) {
        match store.api_keys().await {
            Ok(keys) => {
                let live: Vec<Live> = keys
                    .into_iter()
                    .filter(|k| k.revoked_at.is_none())
                    .filter_map(|k| {
                        Some(Live {
                            scope: Scope::parse(&k.scope)?,
                            name: k.name.into(),
                            digest: k.digest,
                        })
                    })
                    .collect();
                *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
                self.loaded
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the API keys; keeping the last list")
            }
        }
    }

    /// Registers the digest of the daemon's local credential (scope admin).
    pub fn set_local(&self, digest: [u8; 32]) {
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = Some(digest);
    }

    /// The holder of `key`, comparing its digest with every live one in constant time.
    pub fn check(&self, key: &str) -> Option<KeyHolder> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        if let Some(local) = *self.local.read().unwrap_or_else(|e| e.into_inner())
            && bool::from(local.ct_eq(&digest))
        {
            found = Some(KeyHolder {
                name: LOCAL_KEY_NAME.into(),
                scope: Scope::Admin,
                via_session: false,
            });
        }
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        for k in live.iter() {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(KeyHolder {
                    name: k.name.clone(),
                    scope: k.scope,
                    via_session: false,
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn admin_does_everything_token_read_also_reads_status_status_read_only_status() {
        use Scope::*;
        let table = [
            (Admin, Admin, true),
            (Admin, TokenRead, true),
            (Admin, StatusRead, true),
            (TokenRead, Admin, false),
            (TokenRead, TokenRead, true),
            (TokenRead, StatusRead, true),
            (StatusRead, Admin, false),
            (StatusRead, TokenRead, false),
            (StatusRead, StatusRead, true),
        ];
        for (have, need, ok) in table {
            assert_eq!(have.allows(need), ok, "{have:?} for {need:?}");
        }
        assert_eq!(Scope::parse("admin"), Some(Admin));
        assert_eq!(Scope::parse("Admin"), None);
    }
}
