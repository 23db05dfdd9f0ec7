//! Market Data Feed V3 (placeholder).
//!
//! This file is owned by the feed engineer and will be replaced wholesale. It
//! only fixes the contract between the simulator core and the feed:
//! the core implements [`FeedHost`] for its state and merges
//! [`feed_router`] into the main router.

use std::time::Duration;

/// What the feed needs from the simulator core.
pub trait FeedHost: Clone + Send + Sync + 'static {
    /// The simulator's clock (never the system clock).
    fn now(&self) -> jiff::Timestamp;
    /// Checks a bearer access token the way the REST API does.
    fn authenticate(&self, bearer: &str) -> Result<FeedUser, FeedAuthError>;
    /// The feed faults currently injected.
    fn faults(&self) -> FeedFaults;
    /// How often the feed emits a tick.
    fn tick_interval(&self) -> Duration;
    /// `ws://host:port` under which the simulator is reachable.
    fn base_ws_url(&self) -> String;
}

/// The user a feed connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedUser {
    pub ucc: String,
    pub plus: bool,
}

/// Feed faults: `drop` closes connections abruptly, `stall` keeps them open without ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedFaults {
    pub drop: bool,
    pub stall: bool,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedAuthError {
    Invalid,
    Expired,
}

/// The feed routes (none yet in this placeholder).
pub fn feed_router<S: FeedHost>(host: S) -> axum::Router {
    let _ = host;
    axum::Router::new()
}
