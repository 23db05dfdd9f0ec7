//! The upstream pool's [`TokenSource`] for one account, fed from the engine.
//!
//! A task follows the account's current token (the engine's watch channel) and passes on
//! the token while it is valid on the engine's clock, `None` once it has expired (the
//! pool then waits instead of knocking at Upstox with a dead token; the renewal
//! schedule brings the next one). It re-reads the clock every `settings.poll`, so the
//! 03:30 rollover is seen without a token change. A token Upstox refuses is reported to
//! [`Engine::report_unauthorized`] (the reactive trigger), unless it has expired anyway.

use tokio::sync::watch;
use upkeep_core::AccessToken;
use upkeep_upstox::feed::upstream::TokenSource;

use crate::engine::{CurrentToken, Engine};

/// The token to hand the feed: the current one while it is valid at `now`.
fn usable(current: Option<&CurrentToken>, now: jiff::Timestamp) -> Option<AccessToken> {
    current
        .filter(|c| c.is_valid_at(now))
        .map(|c| c.token.clone())
}

/// A token source for `account`, or `None` for an unknown account. Its task ends with
/// the engine (or when the pool drops the source).
pub fn token_source(engine: &Engine, account: &str) -> Option<TokenSource> {
    let mut current = engine.subscribe(account)?;
    let clock = engine.clock().clone();
    let first = usable(current.borrow_and_update().as_deref(), clock.now());
    let (tx, rx) = watch::channel(first);
    let stop = engine.shutdown_token();
    let poll = engine.settings().poll;
    let id = account.to_owned();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = current.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep(poll) => {}
                _ = stop.cancelled() => break,
                _ = tx.closed() => break,
            }
            let next = usable(current.borrow_and_update().as_deref(), clock.now());
            tx.send_if_modified(|held| {
                if *held == next {
                    return false;
                }
                match &next {
                    Some(t) => tracing::info!(account = %id, token_fp = %t.fingerprint(), "relay: the feed follows a new token"),
                    None => tracing::info!(account = %id, "relay: the account has no valid token; the feed waits for one"),
                }
                *held = next;
                true
            });
        }
    });
    let engine = engine.clone();
    let account = account.to_owned();
    Some(TokenSource::new(rx, move |refused: AccessToken| {
        let (engine, account) = (engine.clone(), account.clone());
        let fp = refused.fingerprint();
        let still_valid = engine
            .current(&account)
            .is_some_and(|c| c.fingerprint == fp && c.is_valid_at(engine.clock().now()));
        if !still_valid {
            return;
        }
        tokio::spawn(async move {
            tracing::warn!(account = %account, token_fp = %fp, "relay: Upstox refused the feed's token; asking for a renewal");
            let outcome = engine.report_unauthorized(&account, &fp).await;
            tracing::info!(account = %account, ?outcome, "relay: reactive renewal finished");
        });
    }))
}
