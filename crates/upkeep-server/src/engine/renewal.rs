//! A renewal: takes the store lease, walks the account's strategies in order with
//! backoff on transient failures, and reports the outcome (audit, metrics, alerts).

use jiff::{SignedDuration, Timestamp};
use upkeep_core::expiry::format_ist;

use super::latch::LatchKind;
use super::lease::{LeaseGuard, holder_is_dead_local_process};
use super::{AccountRuntime, Actor, Engine, RenewOutcome};
use crate::alerts::{Alert, AlertKind};
use crate::strategies::{self, Failure, Obtained};

impl Engine {
    /// Runs the account's strategies in order until one yields a token that is
    /// accepted, or all fail. Transient failures retry with exponential backoff and
    /// jitter, capped by `deadline`.
    pub(crate) async fn run_renewal(
        &self,
        a: &AccountRuntime,
        actor: Actor,
        deadline: Timestamp,
    ) -> RenewOutcome {
        self.run_renewal_with(a, actor, deadline, true).await
    }

    pub(super) async fn run_renewal_with(
        &self,
        a: &AccountRuntime,
        actor: Actor,
        deadline: Timestamp,
        interactive: bool,
    ) -> RenewOutcome {
        let id = a.id.clone();
        let lease = match self.take_lease(&id).await {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                tracing::info!(account = %id, "another upkeep process is renewing this account");
                return RenewOutcome::Busy;
            }
            Err(e) => {
                tracing::error!(account = %id, error = %e, "cannot take the renewal lease");
                self.store_failed(a, "the renewal lease", &e.to_string())
                    .await;
                let reason = format!("store unavailable: {e}");
                // Without the lease nothing renews: with no working token, that is the
                // ladder's trouble like any failed attempt.
                self.renewal_attempt_failed(a, &reason).await;
                if self.incident_open(a) {
                    self.escalate(a, true).await;
                }
                return RenewOutcome::Failed { reason };
            }
        };
        a.status_mut(|s| s.renewing = true);
        // Strategies compute TOTP codes and judge expiries on this clock: make it exact
        // (a no-op unless the daemon follows a simulator's clock).
        self.inner.clock.sync().await;
        let started = tokio::time::Instant::now();
        self.audit(
            &id,
            actor,
            "renewal_started",
            "started",
            &format!("deadline {}", format_ist(deadline)),
        )
        .await;
        // A renewal can outlast the lease (retries through an outage, a wait for a
        // human): keep extending it, and stop if another process took it over.
        let outcome = tokio::select! {
            o = self.try_strategies(a, actor, deadline, interactive) => o,
            () = self.keep_lease(&id) => RenewOutcome::Busy,
        };
        let elapsed = started.elapsed().as_secs_f64();
        lease.release().await;
        a.status_mut(|s| s.renewing = false);
        let now = self.inner.clock.now();
        match &outcome {
            RenewOutcome::Renewed {
                strategy,
                fingerprint,
            } => {
                metrics::counter!("upkeep_renewals_total", "account" => id.clone(), "strategy" => strategy.clone(), "result" => "success").increment(1);
                metrics::histogram!("upkeep_renewal_duration_seconds").record(elapsed);
                a.status_mut(|s| s.last_renewal = Some((now, strategy.clone(), "success".into())));
                self.audit(
                    &id,
                    actor,
                    "renewal_succeeded",
                    strategy,
                    &format!("token fp={fingerprint}"),
                )
                .await;
                // An open incident ends with its own recovery alert; otherwise this one
                // (sent only if a problem alert about the account went out).
                if !self.escalate(a, false).await && !self.ended_an_incident(a, fingerprint) {
                    self.alert(Alert::new(
                        AlertKind::Recovered,
                        id.clone(),
                        format!("account {id} renewed its token"),
                        format!("Account {id} has a fresh token (strategy {strategy})."),
                        now,
                    ))
                    .await;
                }
            }
            RenewOutcome::Failed { reason } => {
                metrics::counter!("upkeep_renewals_total", "account" => id.clone(), "strategy" => "all", "result" => "failure").increment(1);
                a.status_mut(|s| s.last_renewal = Some((now, "none".into(), "failed".into())));
                self.audit(&id, actor, "renewal_failed", "failed", reason)
                    .await;
                self.renewal_attempt_failed(a, reason).await;
                if self.incident_open(a) {
                    // No working token: the alert ladder tells the human (at once now
                    // that the renewal gave up, if it had not yet).
                    self.escalate(a, true).await;
                    return outcome;
                }
                let mut alert = Alert::new(
                    AlertKind::ManualActionNeeded,
                    id.clone(),
                    format!("account {id}: every renewal strategy failed, log in"),
                    format!(
                        "Every renewal strategy of account {id} failed ({reason}). Open the link to log in with Upstox."
                    ),
                    now,
                );
                if let Some(link) = self.login_link(&id) {
                    alert = alert.with_link(link);
                }
                self.alert(alert).await;
            }
            _ => {}
        }
        outcome
    }

    /// Extends the account's renewal lease every third of its lifetime (clock time).
    /// Returns only if the lease was lost to another holder (it had expired, e.g. while
    /// the machine was suspended); store errors are logged and retried.
    /// Takes the account's renewal lease; a lease held by a dead process of this host
    /// is taken over at once. `None`: a live holder has it.
    pub(super) async fn take_lease(
        &self,
        id: &str,
    ) -> Result<Option<LeaseGuard>, upkeep_store::StoreError> {
        let store = &self.inner.store;
        let holder = &self.inner.holder;
        let ttl = self.settings().lease_ttl;
        // Armed before the first attempt: if this future is cancelled after the database
        // granted the lease but before the answer came back, the guard still gives it
        // back (releasing a lease someone else holds changes nothing).
        let guard = LeaseGuard::new(store.clone(), id, holder);
        if store
            .try_acquire_lease(id, holder, self.inner.clock.now(), ttl)
            .await?
        {
            return Ok(Some(guard));
        }
        let Some((other, _)) = store.lease_holder(id).await? else {
            // Released meanwhile: try once more.
            let taken = store
                .try_acquire_lease(id, holder, self.inner.clock.now(), ttl)
                .await?;
            return Ok(guard.keep_if(taken));
        };
        if !holder_is_dead_local_process(&other) {
            return Ok(guard.keep_if(false));
        }
        tracing::warn!(account = %id, dead_holder = %other, "the renewal lease was held by a process that no longer runs; taking it over");
        store.release_lease(id, &other).await?;
        let taken = store
            .try_acquire_lease(id, holder, self.inner.clock.now(), ttl)
            .await?;
        Ok(guard.keep_if(taken))
    }

    pub(super) async fn keep_lease(&self, id: &str) {
        let ttl = self.settings().lease_ttl;
        let every = SignedDuration::try_from(ttl / 3)
            .unwrap_or(SignedDuration::from_mins(1))
            .max(SignedDuration::from_secs(1));
        loop {
            if !self.sleep_until(self.inner.clock.now() + every).await {
                // Shutting down: the renewal itself stops; nothing is left to keep.
                return std::future::pending().await;
            }
            let now = self.inner.clock.now();
            match self
                .inner
                .store
                .try_acquire_lease(id, &self.inner.holder, now, ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(account = %id, "another upkeep process took over the renewal lease; stopping this renewal");
                    return;
                }
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "could not extend the renewal lease");
                }
            }
        }
    }

    pub(super) async fn try_strategies(
        &self,
        a: &AccountRuntime,
        actor: Actor,
        deadline: Timestamp,
        interactive: bool,
    ) -> RenewOutcome {
        let id = a.id.clone();
        let mut reasons = Vec::new();
        for &kind in &a.settings().strategies {
            if !kind.renews() {
                continue;
            }
            if !interactive && kind.needs_human() {
                reasons.push(format!(
                    "{}: needs the daemon (`upkeep serve`) running",
                    kind.as_str()
                ));
                continue;
            }
            if a.is_disabled(kind) {
                reasons.push(format!(
                    "{}: disabled after a credential or configuration fault",
                    kind.as_str()
                ));
                continue;
            }
            let mut delay = self.settings().retry.first;
            loop {
                if self.inner.shutdown.is_cancelled() {
                    return RenewOutcome::Cancelled;
                }
                // Shutdown cancels a strategy mid-flight (an HTTP step of a login, a wait
                // for approval); nothing is written until a token is accepted, and that
                // write runs in a task of its own.
                let result = tokio::select! {
                    r = strategies::obtain(self, a, kind, deadline) => r,
                    _ = self.inner.shutdown.cancelled() => return RenewOutcome::Cancelled,
                };
                let failure = match result {
                    Ok(Obtained::Token { token, validate }) => {
                        match self
                            .accept_token(&id, token, kind.as_str(), actor, validate)
                            .await
                        {
                            Ok(c) => {
                                return RenewOutcome::Renewed {
                                    strategy: kind.as_str().to_owned(),
                                    fingerprint: c.fingerprint.clone(),
                                };
                            }
                            Err(reason) => Failure::from_rejection(&reason),
                        }
                    }
                    Ok(Obtained::Delivered(c)) => {
                        return RenewOutcome::Renewed {
                            strategy: c.source.clone(),
                            fingerprint: c.fingerprint.clone(),
                        };
                    }
                    Err(f) => f,
                };
                let failure_kind = match &failure {
                    Failure::Credential(_) => LatchKind::Credential,
                    _ => LatchKind::Configuration,
                };
                match failure {
                    Failure::Cancelled => return RenewOutcome::Cancelled,
                    Failure::NotApplicable(why) => {
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::Credential(why) | Failure::Configuration(why) => {
                        let latch = failure_kind;
                        tracing::error!(account = %id, strategy = kind.as_str(), reason = %why, "strategy failed on credentials or configuration; not retrying it");
                        self.latch(a, kind, latch, &why).await;
                        self.renewal_attempt_failed(a, &format!("{}: {why}", kind.as_str()))
                            .await;
                        self.audit(
                            &id,
                            actor,
                            "strategy_failed",
                            "fatal",
                            &format!("{}: {why}", kind.as_str()),
                        )
                        .await;
                        self.alert(Alert::new(
                            AlertKind::RenewalFatal,
                            id.clone(),
                            format!("account {id}: renewal strategy {} stopped, fix its credentials or settings", kind.as_str()),
                            format!("{why}. upkeep will not retry it by itself (to avoid a lockout), also not after a restart; fix it and run `upkeep renew --account {id}` (or `upkeep accounts reset-strategy --account {id}`)."),
                            self.inner.clock.now(),
                        ))
                        .await;
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::Refused(why) => {
                        // Not the credentials: the strategy stays enabled for the next
                        // attempt; this one moves on to the next strategy.
                        tracing::warn!(account = %id, strategy = kind.as_str(), reason = %why, "Upstox refused this attempt");
                        self.renewal_attempt_failed(a, &format!("{}: {why}", kind.as_str()))
                            .await;
                        self.audit(
                            &id,
                            actor,
                            "strategy_failed",
                            "refused",
                            &format!("{}: {why}", kind.as_str()),
                        )
                        .await;
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::TimedOut(why) => {
                        self.renewal_attempt_failed(a, &format!("{}: {why}", kind.as_str()))
                            .await;
                        reasons.push(format!("{}: {why}", kind.as_str()));
                        break;
                    }
                    Failure::Transient {
                        reason,
                        retry_after,
                    } => {
                        let now = self.inner.clock.now();
                        // Retry-After comes from the network: never let it overflow the
                        // clock arithmetic (past the deadline is past the deadline).
                        let wait = retry_after.unwrap_or_else(|| jittered(delay));
                        let retry_at = now.checked_add(wait).unwrap_or(deadline);
                        let at_risk = retry_at.checked_add(wait).unwrap_or(deadline);
                        tracing::warn!(account = %id, strategy = kind.as_str(), %reason, retry_in = %wait, "transient failure; retrying");
                        self.renewal_attempt_failed(a, &format!("{}: {reason}", kind.as_str()))
                            .await;
                        if retry_at >= deadline {
                            self.audit(
                                &id,
                                actor,
                                "strategy_failed",
                                "transient",
                                &format!("{}: {reason} (deadline reached)", kind.as_str()),
                            )
                            .await;
                            reasons.push(format!("{}: {reason}", kind.as_str()));
                            break;
                        }
                        // With no working token the alert ladder is already climbing
                        // to the deadline: no second alert about it.
                        if at_risk >= deadline && !self.incident_open(a) {
                            let mut alert = Alert::new(
                                AlertKind::DeadlineAtRisk,
                                id.clone(),
                                format!(
                                    "account {id}: renewal deadline {} at risk",
                                    super::escalation::when(deadline, now)
                                ),
                                format!(
                                    "Strategy {} keeps failing ({reason}); the deadline is {}. \
                                     Log in with the link to be safe.",
                                    kind.as_str(),
                                    format_ist(deadline)
                                ),
                                now,
                            );
                            if let Some(link) = self.login_link(&id) {
                                alert = alert.with_link(link);
                            }
                            self.alert(alert).await;
                        }
                        if !self.sleep_until(retry_at).await {
                            return RenewOutcome::Cancelled;
                        }
                        delay = (delay * 2).min(self.settings().retry.max);
                    }
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("no renewing strategy is configured".into());
        }
        RenewOutcome::Failed {
            reason: reasons.join("; "),
        }
    }
}

/// Full jitter between half and all of `d`.
fn jittered(d: SignedDuration) -> SignedDuration {
    let ms = d.as_millis().max(2) as u64;
    let half = ms / 2;
    let extra = rand::random::<u64>() % (half + 1);
    SignedDuration::from_millis((half + extra) as i64)
}
