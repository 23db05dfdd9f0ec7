//! The market-data relay: one upstream Market Data Feed V3 pool per account
//! (`upkeep_upstox::feed::upstream::FeedPool`), shared by local consumers.
//!
//! - [`upstream`]: [`Upstreams`], the pools by account, started on first use.
//! - [`tokens`]: the pool's token source, fed from the engine's in-memory token
//!   (every rotation reaches the pool) and reporting refused tokens to the engine's
//!   reactive renewal.
//! - [`persist`]: with `[relay] persist_ticks`, ticks and connection events written to
//!   the store in batches.
//! - [`hub`]: the local side: consumers, their subscriptions and bounded queues, the
//!   last-state cache and the fan-out of upstream frames.
//! - [`Relay`]: one hub per account, fed from the account's pool (started together on
//!   first use).
//! - [`codes`]: the single-use feed URLs and the guard against guessed ones.
//! - [`routes`]: the doors: Upstox's authorize and feed socket under `/upstox`, the
//!   JSON ticks socket `/ws/ticks`, and `GET /api/v1/feed`.

pub mod codes;
pub mod hub;
mod local;
pub mod persist;
pub mod routes;
pub mod tokens;
pub mod upstream;

pub use hub::{
    Consumer, ConsumerHealth, ConsumerKind, Delivery, Hub, HubConfig, HubHealth, UpstreamLink,
    UpstreamSubscriber,
};
pub use local::{AccountFeedHealth, Relay};
pub use upstream::{RelayError, Upstreams};

#[cfg(test)]
mod tests;
