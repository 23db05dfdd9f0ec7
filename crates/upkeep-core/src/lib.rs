//! # upkeep-core
//!
//! The pure domain of upkeep. No I/O, no async runtime, no sockets, no database, and
//! it never reads the clock: every time-dependent function is handed `now`.
//!
//! - [`secret`]: secret types (tokens, client secrets, PINs, TOTP seeds).
//! - [`clock`]: the `Clock` trait the daemon takes its time from.
//! - [`jwt`]: reading Upstox JWT claims (no signature check: there is no key to check with).
//! - [`expiry`]: the 03:30 IST rule, token kinds and the cross-check against `exp`.
//! - [`state`]: healthy / warning / critical / expired.
//! - [`plan`]: the renewal plan, a pure function of (now, account, policy).
//! - [`config`]: configuration types, parsing from TOML + environment, validation.

pub mod clock;
pub mod secret;

pub use clock::Clock;
pub use secret::{AccessToken, Secret};
