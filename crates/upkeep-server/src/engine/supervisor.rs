//! The per-account supervisor: asks the plan what to do next, runs renewals and
//! health checks, answers triggers (single-flight), warns when nothing can renew.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;
use upkeep_core::plan::{AccountView, Action, Plan, TokenSummary, jitter_seed, plan};

use super::{AccountRuntime, Actor, Engine, RenewOutcome, Trigger, TriggerKind};
use crate::alerts::{Alert, AlertKind};
use crate::settings::AccountSettings;

impl Engine {
    /// Starts one supervisor task per account and the alert ladder's task, each
    /// supervised: a panic is logged, alerted and the task started again. Call once.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let accounts = self.accounts();
        let mut handles: Vec<_> = accounts
            .order
            .iter()
            .filter_map(|id| accounts.map.get(id))
            .map(|a| self.start_supervisor(a.clone()))
            .collect();
        let engine = self.clone();
        handles.push(self.spawn_supervised("alert ladder", None, move || {
            engine.clone().escalation_loop()
        }));
        let engine = self.clone();
        handles.push(self.spawn_supervised("trading calendar", None, move || {
            engine.clone().calendar_loop()
        }));
        handles
    }

    /// Starts the supervised supervisor task of one account.
    pub(super) fn start_supervisor(&self, a: Arc<AccountRuntime>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        self.spawn_supervised("supervisor", Some(a.clone()), move || {
            engine.clone().supervise(a.clone())
        })
    }

    /// What a failed write left to do, tried again every loop until it is done: the
    /// current token into the store, a rotated refresh token into the store, the token
    /// files; and latches another process cleared (returns whether a strategy was
    /// re-enabled that way: a human asked for another attempt).
    pub(super) async fn catch_up(&self, a: &AccountRuntime) -> bool {
        let unsaved = a.unsaved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(c) = unsaved {
            self.save_unsaved(a, &c).await;
        }
        if a.pending_refresh().is_some() {
            self.save_pending_refresh(a).await;
        }
        let current = a.current.borrow().clone();
        if a.sinks_pending.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(c) = current
        {
            self.write_sinks(&a.id, &c).await;
        }
        let any_disabled = !a
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        any_disabled && self.resync_latches(a).await
    }

    pub(super) fn policy_for(&self, a: &AccountSettings) -> upkeep_core::plan::RenewalPolicy {
        let mut p = self.settings().policy.clone();
        p.calendar = self.current_calendar();
        p.trade_weekends |= a.trades_weekends;
        p.trade_holidays |= a.trades_holidays;
        p
    }

    /// The renewal policy the account's plan uses now (calendar included).
    pub fn renewal_policy(&self, account: &str) -> Option<upkeep_core::plan::RenewalPolicy> {
        let a = self.account(account)?;
        Some(self.policy_for(&a.settings()))
    }

    /// What the account's plan says now (for a process that runs no supervisor: the
    /// CLI reading the store).
    pub fn plan_now(&self, account: &str) -> Option<Plan> {
        let a = self.account(account)?;
        Some(self.plan_for(&a, self.inner.clock.now()))
    }

    pub(super) fn plan_for(&self, a: &AccountRuntime, now: Timestamp) -> Plan {
        let current = a.current.borrow().clone();
        let usable = a
            .settings()
            .strategies
            .iter()
            .any(|s| s.renews() && !a.is_disabled(*s));
        let view = AccountView {
            token: current.map(|c| TokenSummary {
                expires_at: c.expires_at,
                kind: c.kind,
            }),
            can_renew_daily: usable,
            jitter_seed: jitter_seed(&a.id),
        };
        plan(now, &view, &self.policy_for(&a.settings()))
    }

    // The big steps (a renewal, a health check) are boxed: an idle supervisor's future
    // then holds a pointer instead of their whole state, which keeps 10,000 idle
    // accounts small.
    pub(super) async fn supervise(self, a: Arc<AccountRuntime>) {
        // Held for this supervisor's life; a restarted one takes it over (a tokio mutex
        // is released, not poisoned, when a panic unwinds through the guard).
        let triggers = a.triggers_rx.clone();
        let mut rx = triggers.lock().await;
        let rx = &mut *rx;
        let id = a.id.clone();
        // Plan by the published calendar, not the weekdays, from the first pass.
        self.wait_for_calendar().await;
        tracing::info!(account = %id, strategies = ?a.settings().strategies.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "supervisor started");
        let mut next_health = self.inner.clock.now();
        // After an automatic renewal fails, wait this long before the plan may start
        // another one by itself (a human can always force one).
        let mut cooldown_until: Option<Timestamp> = None;
        // The last expiry warning: (what, for which token expiry, whether Upstox had
        // refused it, when). Repeated daily while nothing changes, and at once when a
        // health check finds the token refused; the plan's `at` is "now" once the
        // warning is due, so it cannot be the key.
        let mut warned: Option<(Action, Option<Timestamp>, bool, Timestamp)> = None;
        loop {
            if a.stop.is_cancelled() {
                break;
            }
            // The token files missed the current token (a write failed): try again.
            if Box::pin(self.catch_up(&a)).await {
                cooldown_until = None;
            }
            let now = self.inner.clock.now();
            let p = self.plan_for(&a, now);
            a.status_mut(|s| s.next = Some(p.clone()));

            let mut wake = p.at;
            match p.action {
                Action::RenewNow | Action::RenewAt if p.at <= now => {
                    // Another process (`upkeep token set`, `upkeep renew`, a second daemon)
                    // may have stored a fresh token already: use it rather than log in.
                    if Box::pin(self.adopt_from_store(&a)).await {
                        continue;
                    }
                    if cooldown_until.is_none_or(|c| now >= c) {
                        let deadline = p.deadline.unwrap_or(now + SignedDuration::from_hours(1));
                        let deadline = deadline.max(now + SignedDuration::from_mins(30));
                        let outcome =
                            Box::pin(self.run_renewal(&a, Actor::Schedule, deadline)).await;
                        self.answer_queued_unless_interrupted(rx, &outcome);
                        cooldown_until = match outcome {
                            RenewOutcome::Renewed { .. } => None,
                            _ => Some(
                                self.inner.clock.now()
                                    + self.settings().retry.max.max(SignedDuration::from_mins(15)),
                            ),
                        };
                        continue;
                    }
                    wake = cooldown_until.unwrap_or(now);
                }
                Action::WarnExpiry | Action::ManualNeeded if p.at <= now => {
                    let expiry = a.current.borrow().as_ref().map(|c| c.expires_at);
                    let refused = a.status_mut(|s| super::health::token_refused(s));
                    let due = match warned {
                        Some((action, exp, was_refused, at))
                            if action == p.action && exp == expiry && was_refused == refused =>
                        {
                            now >= at + SignedDuration::from_hours(24)
                        }
                        _ => true,
                    };
                    // With an open incident (renewing failed, no working token) the
                    // alert ladder reports it; no second alert beside it.
                    let laddered = self.incident_open(&a);
                    if due && !laddered {
                        warned = Some((p.action, expiry, refused, now));
                        Box::pin(self.warn_no_renewal(&a, &p)).await;
                    }
                    // Nothing to do until the token changes, a health check finds it
                    // refused, or a trigger arrives.
                    wake = now + SignedDuration::from_hours(6);
                }
                _ => {}
            }

            // Health check of a token that should be valid.
            if now >= next_health {
                next_health = now + self.settings().health_interval;
                if Box::pin(self.adopt_from_store(&a)).await {
                    continue;
                }
                let current = a.current.borrow().clone();
                if let Some(c) = current
                    && c.is_valid_at(now)
                    && Box::pin(self.health_check(&a, &c)).await
                {
                    // Found invalid early: renew now.
                    let deadline = now + SignedDuration::from_hours(1);
                    let outcome = Box::pin(self.run_renewal(&a, Actor::Health, deadline)).await;
                    self.answer_queued_unless_interrupted(rx, &outcome);
                    continue;
                }
            }
            wake = wake.min(next_health);

            a.passes.fetch_add(1, std::sync::atomic::Ordering::Release);
            let mut changes = a.current.subscribe();
            changes.mark_unchanged();
            let remaining = Duration::try_from(wake.duration_since(self.inner.clock.now()))
                .unwrap_or(Duration::ZERO);
            let chunk = remaining
                .min(self.settings().poll)
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = a.stop.cancelled() => break,
                // A reload changed the account's settings: plan again now, without the
                // wait after a failed renewal (the fix may be in).
                _ = a.replan.notified() => { cooldown_until = None; }
                _ = tokio::time::sleep(chunk) => {}
                _ = changes.changed() => { cooldown_until = None; }
                t = rx.recv() => {
                    let Some(t) = t else { break };
                    let outcome = Box::pin(self.handle_trigger(&a, t.kind, t.actor)).await;
                    let _ = t.reply.send(outcome.clone());
                    self.answer_queued(rx, &outcome);
                    if matches!(outcome, RenewOutcome::Renewed { .. }) {
                        cooldown_until = None;
                    }
                }
            }
        }
        // Refuse whatever is still queued.
        rx.close();
        while let Ok(t) = rx.try_recv() {
            let _ = t.reply.send(RenewOutcome::Cancelled);
        }
        tracing::info!(account = %id, "supervisor stopped");
    }

    /// After a renewal the supervisor started: queued triggers share its outcome, unless
    /// a forced renewal cut it short (then the queued trigger is served next, as a
    /// renewal of its own; at shutdown the loop refuses the queue).
    fn answer_queued_unless_interrupted(
        &self,
        rx: &mut mpsc::Receiver<Trigger>,
        outcome: &RenewOutcome,
    ) {
        if *outcome != RenewOutcome::Cancelled {
            self.answer_queued(rx, outcome);
        }
    }

    /// Triggers that arrived while a renewal ran share its outcome (single-flight).
    pub(super) fn answer_queued(&self, rx: &mut mpsc::Receiver<Trigger>, outcome: &RenewOutcome) {
        while let Ok(t) = rx.try_recv() {
            let _ = t.reply.send(outcome.clone());
        }
    }

    pub(super) async fn handle_trigger(
        &self,
        a: &AccountRuntime,
        kind: TriggerKind,
        actor: Actor,
    ) -> RenewOutcome {
        let now = self.inner.clock.now();
        match kind {
            TriggerKind::Reactive { fingerprint } => {
                if a.current
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| c.fingerprint != fingerprint)
                {
                    return RenewOutcome::AlreadyRotated;
                }
            }
            #[cfg(feature = "testing")]
            TriggerKind::Panic => panic!("injected supervisor panic (test)"),
            TriggerKind::Force => {
                // A human asked: give strategies stopped by a credential or
                // configuration fault another go (memory and the stored latch).
                if let Err(e) = self.reset_strategies(&a.id, None).await {
                    tracing::warn!(account = %a.id, error = %e, "cannot clear the lockout latches");
                    a.disabled.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            }
        }
        let p = self.plan_for(a, now);
        // A forced or reactive renewal is about now: use today's window deadline when
        // it is near, otherwise give it an hour (not tomorrow's deadline: the caller waits).
        let deadline = p
            .deadline
            .filter(|d| {
                *d > now + SignedDuration::from_mins(30)
                    && *d <= now + SignedDuration::from_hours(4)
            })
            .unwrap_or(now + SignedDuration::from_hours(1));
        self.run_renewal(a, actor, deadline).await
    }

    pub(super) async fn warn_no_renewal(&self, a: &AccountRuntime, p: &Plan) {
        let id = &a.id;
        let now = self.inner.clock.now();
        let current = a.current.borrow().clone();
        let link = self.login_link(id);
        let (refused, checked, problem) = a.status_mut(|s| {
            (
                super::health::token_refused(s),
                s.last_check,
                s.last_check_problem.clone(),
            )
        });
        let (kind, title, message) = match (p.action, current) {
            (Action::ManualNeeded, _) => (
                AlertKind::ManualActionNeeded,
                format!("account {id} has no valid token and no automatic renewal: log in"),
                format!("Account {id} needs a token. {}", p.reason),
            ),
            // The health check's verdict beats the token's nominal expiry: a refused
            // token does not work now, however long it would have lived.
            (_, Some(c)) if refused && c.is_valid_at(now) => (
                AlertKind::ExpiringNoRenewal,
                format!("account {id}: Upstox refused the token, no automatic renewal"),
                format!(
                    "Upstox refused the token of account {id}{}{}: it does not work now (it \
                     would have expired at {}). upkeep cannot renew this account by itself: \
                     paste a fresh token (`upkeep token set --account {id}`), log in with the \
                     link, or add a strategy to `renew`.",
                    checked
                        .map(|t| format!(" at {}", super::escalation::when(t, now)))
                        .unwrap_or_default(),
                    problem.map(|p| format!(" ({p})")).unwrap_or_default(),
                    super::escalation::when(c.expires_at, now)
                ),
            ),
            (_, current) => {
                let when = current
                    .as_ref()
                    .map(|c| super::escalation::when(c.expires_at, now))
                    .unwrap_or_else(|| "now".into());
                (
                    AlertKind::ExpiringNoRenewal,
                    format!("account {id}: token expires {when}, no automatic renewal"),
                    format!("The token of account {id} expires at {when}. {}", p.reason),
                )
            }
        };
        let mut alert = Alert::new(kind, id.clone(), title, message, now);
        if let Some(link) = link {
            alert = alert.with_link(link);
        }
        self.alert(alert).await;
    }
}
