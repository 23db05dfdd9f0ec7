//! The alert ladder (see `upkeep_core::escalation`): when an account has no working
//! token while the plan says it should, and a renewal attempt fails, an incident opens;
//! its rungs go out once each, from one task that looks at every open incident every
//! `poll`; a working token ends it with one recovery alert.
//!
//! Every rung sent is recorded in the audit log (`escalation`, outcome = rung), so a
//! restarted daemon picks the incident up where it was instead of starting over.

use jiff::Timestamp;
use upkeep_core::escalation::{Ladder, Rung};
use upkeep_core::expiry::{format_ist, ist_date, ist_datetime};
use upkeep_core::plan::Action;

use super::{AccountRuntime, Actor, Engine};
use crate::alerts::{Alert, AlertKind};

/// The audit kind of the ladder's records.
const AUDIT_KIND: &str = "escalation";
/// An incident older than this is not picked up again after a restart.
const RESTORE_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(72);

/// An open incident of one account.
#[derive(Debug, Clone)]
pub(crate) struct Incident {
    ladder: Ladder,
    /// Rungs sent, or skipped because a later one was due at the same time.
    handled: Vec<Rung>,
    /// A rung went out: a recovery alert is owed.
    alerted: bool,
    /// The latest failure.
    reason: String,
}

impl Incident {
    pub(crate) fn since(&self) -> Timestamp {
        self.ladder.since
    }
}

impl Engine {
    /// Whether the account has a token Upstox should take now: one that has not
    /// expired and that the last health check did not find refused.
    pub(super) fn has_working_token(&self, a: &AccountRuntime, now: Timestamp) -> bool {
        let valid = a
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.is_valid_at(now));
        valid && !a.status_mut(|s| super::health::token_refused(s))
    }

    /// Whether the plan says the account should have a working token now: it has none,
    /// its token was refused, or its expired token is due for renewal.
    fn should_have_token(&self, a: &AccountRuntime, now: Timestamp) -> bool {
        let current = a.current.borrow().clone();
        let Some(c) = current else {
            return true;
        };
        if c.is_valid_at(now) {
            // Not expired, yet not working: refused at a health check.
            return true;
        }
        let p = self.plan_for(a, now);
        matches!(p.action, Action::RenewNow | Action::ManualNeeded)
            || (p.action == Action::RenewAt && p.at <= now)
    }

    /// Whether the token `fingerprint` ended an incident whose alerts went out (its
    /// recovery alert is the ladder's).
    pub(super) fn ended_an_incident(&self, a: &AccountRuntime, fingerprint: &str) -> bool {
        // The incident lock first: a resolution in progress has set `resolved_by` by the
        // time it is released.
        let _g = a.incident.lock().unwrap_or_else(|e| e.into_inner());
        a.resolved_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(fingerprint)
    }

    pub(super) fn incident_open(&self, a: &AccountRuntime) -> bool {
        a.incident
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// A renewal attempt failed with `reason`. Opens an incident if the account has no
    /// working token while it should (or notes the reason in the open one).
    pub(super) async fn renewal_attempt_failed(&self, a: &AccountRuntime, reason: &str) {
        let now = self.inner.clock.now();
        if self.has_working_token(a, now) || !self.should_have_token(a, now) {
            return;
        }
        {
            let mut g = a.incident.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = g.as_mut() {
                i.reason = reason.to_owned();
                return;
            }
        }
        let policy = self.policy_for(&a.settings());
        let mut incident = match self.restore_incident(a, now).await {
            Some(i) => i,
            None => Incident {
                ladder: Ladder::new(now, &policy),
                handled: Vec::new(),
                alerted: false,
                reason: String::new(),
            },
        };
        incident.reason = reason.to_owned();
        let since = incident.ladder.since;
        let mut g = a.incident.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(i) => i.reason = reason.to_owned(),
            None => {
                tracing::warn!(account = %a.id, since = %format_ist(since), "no working token and renewing fails: alerting by the ladder");
                *g = Some(Box::new(incident));
            }
        }
    }

    /// Sends what the account's incident has due, or its recovery once a working token
    /// is back. `gave_up`: a renewal just ended without a token, so the first alert does
    /// not wait for its minute. Returns whether a recovery alert went out.
    pub(super) async fn escalate(&self, a: &AccountRuntime, gave_up: bool) -> bool {
        let now = self.inner.clock.now();
        let id = &a.id;
        if self.has_working_token(a, now) {
            let taken = {
                let mut g = a.incident.lock().unwrap_or_else(|e| e.into_inner());
                let taken = g.take();
                if taken.as_ref().is_some_and(|i| i.alerted) {
                    *a.resolved_by.lock().unwrap_or_else(|e| e.into_inner()) =
                        a.current.borrow().as_ref().map(|c| c.fingerprint.clone());
                }
                taken
            };
            let Some(incident) = taken else {
                return false;
            };
            if !incident.alerted {
                tracing::info!(account = %id, "renewing works again before anyone was alerted");
                return false;
            }
            let since = incident.ladder.since;
            self.audit(
                id,
                Actor::Daemon,
                AUDIT_KIND,
                "recovered",
                &format!("no working token since {}", format_ist(since)),
            )
            .await;
            let current = a.current.borrow().clone();
            let detail = current
                .map(|c| {
                    format!(
                        " (from {}, valid until {})",
                        c.source,
                        when(c.expires_at, now)
                    )
                })
                .unwrap_or_default();
            self.alert(Alert::new(
                AlertKind::Recovered,
                id.clone(),
                format!(
                    "account {id} has a working Upstox token again (it had none from {} to {})",
                    when(since, now),
                    when(now, now)
                ),
                format!(
                    "Account {id} has a working token again{detail}. The alerts about it since {} are resolved.",
                    when(since, now)
                ),
                now,
            ))
            .await;
            return true;
        }
        let (rung, incident) = {
            let mut g = a.incident.lock().unwrap_or_else(|e| e.into_inner());
            let Some(i) = g.as_mut() else {
                return false;
            };
            climb_again_if_done(i, &self.policy_for(&a.settings()));
            let mut due = i.ladder.due_rungs(now, &i.handled);
            if gave_up && !i.alerted && !due.contains(&Rung::First) {
                due.insert(0, Rung::First);
            }
            let Some(&rung) = due.last() else {
                return false;
            };
            i.handled.extend(due);
            i.alerted = true;
            (rung, i.clone())
        };
        self.audit(
            id,
            Actor::Daemon,
            AUDIT_KIND,
            rung.as_str(),
            &format!(
                "no working token since {}",
                format_ist(incident.ladder.since)
            ),
        )
        .await;
        let alert = self.rung_alert(a, rung, &incident, now);
        self.alert(alert).await;
        false
    }

    /// Every `poll`, escalates every account with an open incident. Runs for the
    /// daemon's life (one task for all accounts).
    pub(super) async fn escalation_loop(self) {
        loop {
            let accounts = self.accounts();
            for id in &accounts.order {
                if let Some(a) = accounts.map.get(id)
                    && self.incident_open(a)
                {
                    self.escalate(a, false).await;
                }
            }
            self.inner
                .escalation_passes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings().poll) => {}
            }
        }
    }

    /// How many rounds the alert ladder's task has completed (each read the clock and
    /// sent what was due): tests wait for rounds, not wall time.
    pub fn escalation_passes(&self) -> u64 {
        self.inner
            .escalation_passes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The open incident of a previous process, from the audit log: rungs it sent and
    /// no recovery after them, no token stored since, not older than three days.
    async fn restore_incident(&self, a: &AccountRuntime, now: Timestamp) -> Option<Incident> {
        let id = &a.id;
        let events = match self.inner.store.events(Some(id), 200).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(account = %id, error = %e, "cannot read the audit log for an earlier incident");
                return None;
            }
        };
        let mut since: Option<Timestamp> = None;
        let mut last_at: Option<Timestamp> = None;
        let mut handled = Vec::new();
        // Newest first.
        for (_, e) in events.iter().filter(|(_, e)| e.kind == AUDIT_KIND) {
            if e.outcome == "recovered" {
                break;
            }
            let Some(s) = e
                .detail
                .rsplit("since ")
                .next()
                .and_then(|s| s.parse::<Timestamp>().ok())
            else {
                break;
            };
            if since.is_some_and(|x| x != s) {
                break;
            }
            since = Some(s);
            last_at.get_or_insert(e.at);
            if let Some(r) = Rung::from_name(&e.outcome) {
                handled.push(r);
            }
        }
        let (since, last_at) = (since?, last_at?);
        let stored_after = a
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.stored_at > last_at);
        if stored_after || now.duration_since(since) > RESTORE_WITHIN || since > now {
            return None;
        }
        tracing::info!(account = %id, since = %format_ist(since), "continuing the alert ladder of an earlier run");
        if let Some(alerter) = self.alerter() {
            // Its alerts went out: the recovery is owed.
            alerter.note_troubled(id);
        }
        let mut incident = Incident {
            ladder: Ladder::new(since, &self.policy_for(&a.settings())),
            handled,
            alerted: true,
            reason: String::new(),
        };
        // Rung names repeat from morning to morning: a ladder the earlier run finished
        // continues with the next morning after its last record.
        if incident.ladder.next(&incident.handled).is_none()
            && let Some(next) = incident
                .ladder
                .next_morning(last_at, &self.policy_for(&a.settings()))
        {
            incident.ladder = next;
            incident.handled.clear();
        }
        Some(incident)
    }

    fn rung_alert(
        &self,
        a: &AccountRuntime,
        rung: Rung,
        incident: &Incident,
        now: Timestamp,
    ) -> Alert {
        let id = &a.id;
        let ladder = &incident.ladder;
        let since = when(ladder.since, now);
        let deadline = ladder.deadline.map(|d| when(d, now)).unwrap_or_default();
        let title = match rung {
            Rung::First => {
                format!("account {id} has no working Upstox token (renewal failing since {since})")
            }
            Rung::StillFailing => format!(
                "account {id} still has no working Upstox token (renewal failing since {since})"
            ),
            Rung::BeforeDeadline => format!(
                "account {id} has no working Upstox token 30 min before the {deadline} renewal deadline"
            ),
            Rung::AtDeadline => format!(
                "account {id} missed the {deadline} renewal deadline: no working Upstox token"
            ),
            Rung::MarketOpen => format!(
                "market open ({}): account {id} still has no working Upstox token",
                ladder.market_open.map(|t| when(t, now)).unwrap_or_default()
            ),
        };
        let problem = self.token_problem(a, now);
        let reason = if incident.reason.is_empty() {
            String::new()
        } else {
            format!(" (last: {})", incident.reason)
        };
        let next = match ladder.next(&incident.handled) {
            Some((r, at)) => format!(
                "Next alert {}{} unless it is fixed.",
                when(at, now),
                match r {
                    Rung::BeforeDeadline => " (30 min before the deadline)",
                    Rung::AtDeadline => " (the renewal deadline)",
                    Rung::MarketOpen => " (market open)",
                    Rung::First | Rung::StillFailing => "",
                }
            ),
            None => "A recovery alert follows when it is fixed.".to_owned(),
        };
        let mut alert = Alert::new(
            AlertKind::NoWorkingToken,
            id.clone(),
            title,
            format!(
                "{problem}, and renewing it has failed since {since}{reason}. upkeep keeps \
                 retrying; to fix it now, log in with the link (or `upkeep login --account \
                 {id}`), or fix the cause and run `upkeep renew --account {id}`. {next}"
            ),
            now,
        );
        if let Some(link) = self.login_link(id) {
            alert = alert.with_link(link);
        }
        alert
    }

    /// Why the account's token does not work, as a sentence without a full stop.
    fn token_problem(&self, a: &AccountRuntime, now: Timestamp) -> String {
        let id = &a.id;
        let current = a.current.borrow().clone();
        let Some(c) = current else {
            return format!("Account {id} has no token");
        };
        if !c.is_valid_at(now) {
            return format!(
                "The token of account {id} expired at {}",
                when(c.expires_at, now)
            );
        }
        let (checked, problem) = a.status_mut(|s| (s.last_check, s.last_check_problem.clone()));
        format!(
            "Upstox refused the token of account {id}{}{}",
            checked
                .map(|t| format!(" at {}", when(t, now)))
                .unwrap_or_default(),
            problem.map(|p| format!(" ({p})")).unwrap_or_default()
        )
    }
}

/// At the top of its ladder, an open incident climbs the next trading morning's rungs.
fn climb_again_if_done(i: &mut Incident, policy: &upkeep_core::plan::RenewalPolicy) {
    if i.ladder.next(&i.handled).is_some() {
        return;
    }
    let Some(top) = i.ladder.rungs.last().map(|(_, at)| *at) else {
        return;
    };
    if let Some(next) = i.ladder.next_morning(top, policy) {
        i.ladder = next;
        i.handled.clear();
    }
}

/// `08:38 IST` on the day of `now`, else `2026-12-04 14:00 IST`.
pub(crate) fn when(t: Timestamp, now: Timestamp) -> String {
    let dt = ist_datetime(t);
    if ist_date(t) == ist_date(now) {
        format!("{:02}:{:02} IST", dt.hour(), dt.minute())
    } else {
        format!("{} {:02}:{:02} IST", dt.date(), dt.hour(), dt.minute())
    }
}
