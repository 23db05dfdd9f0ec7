//! The market-data relay: one upstream Market Data Feed V3 pool per account
//! (`upkeep_upstox::feed::upstream::FeedPool`), shared by local consumers.
//!
//! - [`upstream`]: [`Upstreams`], the pools by account, started on first use.
//! - [`tokens`]: the pool's token source, fed from the engine's in-memory token
//!   (every rotation reaches the pool) and reporting refused tokens to the engine's
//!   reactive renewal.
//! - [`persist`]: with `[relay] persist_ticks`, ticks and connection events written to
//!   the store in batches.

pub mod persist;
pub mod tokens;
pub mod upstream;

pub use upstream::{RelayError, Upstreams};
