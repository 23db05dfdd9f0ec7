//! The Upstox API gateway: `/upstox/{path}` goes to Upstox's `{path}` with the account's
//! current token swapped in for the caller's upkeep API key.
//!
//! A bot built on the official SDK sets `configuration.host` and `order_host` to
//! `http://127.0.0.1:7878/upstox` and `access_token` to an upkeep API key (scope
//! `token:read` or `admin`); it never holds an Upstox token again.
//!
//! - `proxy`: the request path (key check in memory, account, token swap, streamed
//!   bodies, hop-by-hop headers dropped) and the reactive renewal on a 401;
//! - `hooks`: the seams where the shared rate budget (before the upstream call) and the
//!   cached fallback (after it, and instead of it when upstream fails) plug in;
//! - `usage`: per account, API key and endpoint template: counts, errors, latency, for
//!   `/metrics` and `GET /api/v1/usage`;
//! - [`budget`]: the shared rate budget per (Upstox user, API): a short line, then 429
//!   with `Retry-After` from upkeep; an upstream 429 backs the user off;
//! - [`cache`]: the last good answer of market-data GETs, served stale (with
//!   `X-Upkeep-Stale` and `Warning: 110`) when Upstox fails, up to a maximum age.
//!
//! Which Upstox host a path goes to and what an upstream 401 means are upkeep-upstox's
//! knowledge (`upkeep_upstox::gateway`); this module knows HTTP.

pub mod budget;
pub mod cache;
mod hooks;
mod proxy;
mod upstream;
pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderName;
use axum::routing::any;
use jiff::Timestamp;

use crate::api::keys::KeyCache;
use crate::engine::Engine;
pub use proxy::BearerHeader;
pub use usage::Usage;

/// The gateway's shared state (cheap to clone).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    keys: KeyCache,
    client: upstream::UpstreamClient,
    account_header: HeaderName,
    default_accounts: HashMap<String, String>,
    usage: Usage,
    budget: budget::Budget,
    cache: cache::StaleCache,
    /// Per account: the fingerprint whose reactive renewal failed last, and when. Another
    /// 401 on the same token within [`RENEWAL_COOLDOWN`] does not ask again (no renewal
    /// storm while every strategy is failing).
    failed_renewals: Mutex<HashMap<String, (String, Timestamp)>>,
}

/// How long a failed reactive renewal of a token keeps 401s on it from asking again.
const RENEWAL_COOLDOWN: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway.account_header \"{0}\" is not an HTTP header name")]
    Header(String),
    #[error("cannot build the gateway's HTTP client: {0}")]
    Client(String),
}

impl Gateway {
    /// The gateway of `engine`'s accounts, checking keys against `keys` and counting into
    /// `usage`. One pooled upstream client (rustls, TLS verified, HTTP/2 when offered).
    /// Requests draw on `budget` and market-data GETs fall back on `cache`.
    pub fn new(
        engine: Engine,
        keys: KeyCache,
        usage: Usage,
        budget: budget::Budget,
        cache: cache::StaleCache,
    ) -> Result<Self, GatewayError> {
        let settings = engine.settings().gateway.clone();
        let account_header = HeaderName::try_from(settings.account_header.as_str())
            .map_err(|_| GatewayError::Header(settings.account_header.clone()))?;
        let hosts = engine.upstox().hosts();
        let client = upstream::UpstreamClient::new(
            &hosts.api,
            &hosts.order,
            upstream::Options {
                connect_timeout: settings.connect_timeout,
                request_timeout: settings.request_timeout,
                max_idle: settings.max_idle_connections,
                max_buffered: proxy::MAX_BUFFERED,
                roots: None,
            },
        )
        .map_err(|e| GatewayError::Client(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                keys,
                client,
                account_header,
                default_accounts: settings.default_accounts.into_iter().collect(),
                usage,
                budget,
                cache,
                failed_renewals: Mutex::default(),
            }),
        })
    }

    pub fn usage(&self) -> &Usage {
        &self.inner.usage
    }
}

/// The gateway's routes: every method under `/upstox/`.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/upstox/{*path}", any(proxy::handle))
        .with_state(gateway)
}
