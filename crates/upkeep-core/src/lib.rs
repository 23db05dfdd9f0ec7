//! # upkeep-core
//!
//! The pure domain of upkeep. No I/O, no async runtime, no sockets, no database, and
//! it never reads the clock: every time-dependent function is handed `now`.
//!
//! - [`secret`]: secret types (tokens, client secrets, PINs, TOTP seeds).
//! - [`calendar`]: the trading calendar (which exchanges are open on a date, and when).
//! - [`clock`]: the `Clock` trait the daemon takes its time from.
//! - [`jwt`]: reading Upstox JWT claims (no signature check: there is no key to check with).
//! - [`expiry`]: the 03:30 IST rule, token kinds and the cross-check against `exp`.
//! - [`state`]: healthy / warning / critical / expired.
//! - [`plan`](mod@plan): the renewal plan, a pure function of (now, account, policy).
//! - [`escalation`]: the alert ladder for an account whose token does not work while it
//!   should (first alert, then 15 min later, 30 min before the deadline, at it, at 09:15).
//! - [`config`]: configuration types, parsing from TOML + environment, validation, and
//!   importing the files of earlier Upstox scripts ([`config::import`]).
//! - `testing` (feature `testing`): fixture JWTs shaped like real Upstox tokens.

pub mod calendar;
pub mod clock;
pub mod config;
pub mod escalation;
pub mod expiry;
pub mod jwt;
pub mod plan;
pub mod secret;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use clock::{Clock, ManualClock};
pub use config::{AccountConfig, Config, ConfigError, Strategy, UpstoxEnv};
pub use expiry::{
    TokenInfo, TokenKind, format_ist, inspect, inspect_claims, ist, next_rollover_after,
};
pub use jwt::{Claims, TokenError, decode_claims};
pub use plan::{AccountView, Action, Plan, RenewalPolicy, TokenSummary, plan};
pub use secret::{AccessToken, Secret};
pub use state::{Thresholds, TokenState};
