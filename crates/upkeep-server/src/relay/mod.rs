//! The market-data relay's local side: many local consumers of one account's upstream
//! feed.
//!
//! - [`hub`]: consumers, their subscriptions and bounded queues, the last-state cache
//!   and the fan-out of upstream frames.

pub mod hub;

pub use hub::{
    Consumer, ConsumerHealth, ConsumerKind, Delivery, Hub, HubConfig, HubHealth, UpstreamLink,
    UpstreamSubscriber,
};

#[cfg(test)]
mod tests;
