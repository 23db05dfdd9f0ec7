//! Supervised background tasks: a task that panics is logged, alerted and started
//! again after a backoff (1 s, doubling, at most 60 s), instead of dying silently and
//! leaving an account that nobody renews. A task that returns normally (shutdown) is
//! not restarted.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{AccountRuntime, Engine};
use crate::alerts::{Alert, AlertKind};

/// The message of a panic payload, for the log and the alert.
fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(_) => "cancelled".into(),
    }
}

impl Engine {
    /// Runs `make()` in a task and starts it again whenever it panics, until it returns
    /// or the engine shuts down. `account`: whose supervisor it is (its status shows
    /// whether it is alive and how often it was restarted).
    pub(crate) fn spawn_supervised<F, Fut>(
        &self,
        what: &'static str,
        account: Option<Arc<AccountRuntime>>,
        make: F,
    ) -> JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut restarts = 0u32;
            loop {
                if let Some(a) = &account {
                    a.status_mut(|s| s.supervisor_alive = true);
                }
                let result = tokio::spawn(make()).await;
                if let Some(a) = &account {
                    a.status_mut(|s| s.supervisor_alive = false);
                }
                let Err(e) = result else { return };
                if !e.is_panic() {
                    return;
                }
                restarts += 1;
                let message = panic_message(e);
                let id = account
                    .as_ref()
                    .map(|a| a.id.clone())
                    .unwrap_or_else(|| "*".into());
                if let Some(a) = &account {
                    a.status_mut(|s| s.supervisor_restarts = restarts);
                }
                metrics::counter!("upkeep_task_restarts_total", "task" => what).increment(1);
                tracing::error!(task = what, account = %id, restarts, panic = %message, "a background task panicked; restarting it");
                engine
                    .alert(Alert::new(
                        AlertKind::InternalError,
                        id.clone(),
                        format!("upkeep's {what} crashed and was restarted"),
                        format!(
                            "The {what} of account {id} panicked ({message}); upkeep restarted it \
                             (restart {restarts}). Please report this with the daemon's log."
                        ),
                        engine.clock().now(),
                    ))
                    .await;
                let backoff =
                    Duration::from_secs(1 << restarts.min(6)).min(Duration::from_secs(60));
                let stop = match &account {
                    Some(a) => a.stop.clone(),
                    None => engine.shutdown_token(),
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        })
    }
}
