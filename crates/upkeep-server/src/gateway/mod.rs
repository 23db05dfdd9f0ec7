//! The Upstox API gateway at `/upstox/...`.
//!
//! - [`budget`]: the shared rate budget per (Upstox user, API).
//! - [`cache`]: the last good answer of market-data GETs, served stale when Upstox fails.

pub mod budget;
pub mod cache;
