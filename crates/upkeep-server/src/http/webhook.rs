//! `POST /webhooks/upstox/token`: where Upstox delivers the token a user approved.
//!
//! Upstox signs nothing and cannot send a key, so anyone who can reach this door can
//! post. It is built so that strangers cannot spend what the real delivery needs:
//!
//! 1. **Cheap checks first, with no budget**: the body parses, the app's client id is
//!    ours, the account's Upstox user is known (config `user_id`, or learned from a
//!    path that proves it) and both the payload and the token's `sub` name it, the
//!    token is not expired and not older than the current one.
//! 2. **Only the profile call is rate-limited** (a token bucket). A delivery that passed
//!    the cheap checks waits in a bounded queue, deduplicated by fingerprint; the
//!    newest is validated first and the oldest is dropped when the queue is full, so
//!    forgeries that came first never crowd out the real delivery (Upstox delivers
//!    once, without retry).
//! 3. **Rejections are counted** (`upkeep_webhook_rejections_total{reason}`) and
//!    logged as one summary line per interval, never one line per request.
//! 4. A token for another user, or a well-formed token Upstox refuses, raises an
//!    alert: someone is knocking.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use upkeep_core::AccessToken;
use upkeep_upstox::webhook::parse_notifier;

use super::error;
use super::tally::RefusalTally;
use crate::alerts::{Alert, AlertKind};
use crate::engine::{Actor, CurrentToken, Engine, RejectReason, WEBHOOK_SOURCE};
use crate::settings::WebhookSettings;

/// What became of a queued delivery.
#[derive(Debug, Clone)]
enum Verdict {
    Accepted(Arc<CurrentToken>),
    Rejected(RejectReason),
    /// Dropped from a full queue for newer deliveries.
    Superseded,
}

struct Candidate {
    account: String,
    fingerprint: String,
    token: AccessToken,
}

#[derive(Default)]
struct Queue {
    /// Oldest first; validated from the back.
    order: VecDeque<Candidate>,
    /// Everyone waiting for a fingerprint's verdict (queued or being validated).
    waiters: HashMap<String, Vec<oneshot::Sender<Verdict>>>,
}

/// A token bucket on the tokio clock.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The webhook's shared state: the validation queue, its budget and the rejection
/// counts. One per router.
pub struct Gate {
    engine: Engine,
    limits: WebhookSettings,
    queue: Mutex<Queue>,
    wake: Notify,
    bucket: Mutex<Bucket>,
    rejections: RefusalTally,
}

impl Gate {
    /// Creates the gate and, inside a tokio runtime, starts its validation worker and
    /// its rejection summary; both end when the engine shuts down.
    pub fn start(engine: Engine) -> Arc<Self> {
        let limits = engine.settings().webhook;
        let gate = Arc::new(Self {
            limits,
            queue: Mutex::default(),
            wake: Notify::new(),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limits.checks_burst.max(1)),
                last: Instant::now(),
            }),
            rejections: RefusalTally::new("notifier webhook", "deliveries rejected"),
            engine,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let g = gate.clone();
            gate.engine
                .spawn_supervised("webhook validator", None, move || g.clone().validate_loop());
            let g = gate.clone();
            gate.engine
                .spawn_supervised("webhook summary", None, move || g.clone().summary_loop());
        }
        gate
    }

    /// Queues a delivery that passed the cheap checks; the receiver gets its verdict.
    fn enqueue(&self, account: String, token: AccessToken) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        let fingerprint = token.fingerprint();
        let mut q = lock(&self.queue);
        if let Some(w) = q.waiters.get_mut(&fingerprint) {
            // Already queued or being validated: share its verdict.
            w.push(tx);
            return rx;
        }
        q.waiters.insert(fingerprint.clone(), vec![tx]);
        q.order.push_back(Candidate {
            account,
            fingerprint,
            token,
        });
        while q.order.len() > self.limits.queue.max(1) {
            if let Some(old) = q.order.pop_front() {
                for w in q.waiters.remove(&old.fingerprint).unwrap_or_default() {
                    let _ = w.send(Verdict::Superseded);
                }
                self.count("superseded");
            }
        }
        drop(q);
        self.wake.notify_one();
        rx
    }

    fn answer(&self, fingerprint: &str, verdict: Verdict) {
        let waiters = lock(&self.queue).waiters.remove(fingerprint);
        for w in waiters.unwrap_or_default() {
            let _ = w.send(verdict.clone());
        }
    }

    /// The newest queued delivery, waiting for one if none is queued.
    async fn next(&self) -> Candidate {
        loop {
            let notified = self.wake.notified();
            if let Some(c) = lock(&self.queue).order.pop_back() {
                return c;
            }
            notified.await;
        }
    }

    /// Waits until the budget allows one more profile call, and takes it.
    async fn take_budget(&self) {
        let per = self.limits.check_every.max(Duration::from_millis(1));
        let burst = f64::from(self.limits.checks_burst.max(1));
        loop {
            let wait = {
                let mut b = lock(&self.bucket);
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() / per.as_secs_f64();
                b.tokens = (b.tokens + refill).min(burst);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                per.mul_f64(1.0 - b.tokens)
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn validate_loop(self: Arc<Self>) {
        let stop = self.engine.shutdown_token();
        loop {
            let candidate = tokio::select! {
                _ = stop.cancelled() => break,
                c = self.next() => c,
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                () = self.take_budget() => {}
            }
            let verdict = self.validate(&candidate).await;
            if let Verdict::Rejected(reason) = &verdict {
                self.count(reason_code(reason));
                if matches!(reason, RejectReason::NotAccepted(_)) {
                    self.knocking(
                        &candidate.account,
                        "Forged token posted to the webhook",
                        "A well-formed token for this account's user and app was posted to \
                         the notifier webhook and Upstox refused it. Someone who knows your \
                         client id and UCC can reach the webhook.",
                    )
                    .await;
                }
            }
            self.answer(&candidate.fingerprint, verdict);
        }
        // Shutting down: whoever still waits gets no verdict (their senders drop).
        lock(&self.queue).waiters.clear();
    }

    async fn validate(&self, c: &Candidate) -> Verdict {
        let mut attempt = 0u32;
        loop {
            let result = self
                .engine
                .accept_token(
                    &c.account,
                    c.token.clone(),
                    WEBHOOK_SOURCE,
                    Actor::Webhook,
                    true,
                )
                .await;
            match result {
                Ok(current) => {
                    metrics::counter!("upkeep_webhook_accepted_total").increment(1);
                    return Verdict::Accepted(current);
                }
                // Upstox could not be asked right now: the token may well be the real
                // one, and it is delivered only once. Try again a few times.
                Err(RejectReason::Unverified(why)) if attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(reason = %why, attempt, "webhook token not verified yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                Err(reason) => return Verdict::Rejected(reason),
            }
        }
    }

    fn count(&self, reason: &'static str) {
        metrics::counter!("upkeep_webhook_rejections_total", "reason" => reason).increment(1);
        self.rejections.count(reason);
    }

    async fn summary_loop(self: Arc<Self>) {
        let stop = self.engine.shutdown_token();
        self.rejections.run(self.limits.summary_every, stop).await;
    }

    /// Tells a human that a stranger's or a forged token reached the webhook
    /// (de-duplicated by the alerter).
    async fn knocking(&self, account: &str, title: &str, message: &str) {
        self.engine
            .alert(Alert::new(
                AlertKind::WebhookIntrusion,
                account,
                title,
                message,
                self.engine.clock().now(),
            ))
            .await;
    }

    fn reject(&self, reason: &'static str, message: String) -> Response {
        self.count(reason);
        error(StatusCode::BAD_REQUEST, reason, message)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reason label of a refused token.
fn reason_code(r: &RejectReason) -> &'static str {
    match r {
        RejectReason::UnknownAccount(_) => "unknown_client",
        RejectReason::Malformed(_) => "bad_token",
        RejectReason::Expired(_) => "expired",
        RejectReason::WrongUser => "wrong_user",
        RejectReason::UserUnknown => "user_unknown",
        RejectReason::Stale(_) => "stale",
        RejectReason::NotAccepted(_) => "rejected",
        RejectReason::Unverified(_) => "unverified",
        RejectReason::Store(_) => "store",
    }
}

fn accepted(account: &str, c: &CurrentToken) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "status": "accepted", "account": account, "fingerprint": c.fingerprint })),
    )
        .into_response()
}

/// The handler.
pub(super) async fn receive(State(gate): State<Arc<Gate>>, body: Bytes) -> Response {
    let engine = &gate.engine;
    let payload = match parse_notifier(&body) {
        Ok(p) => p,
        Err(e) => return gate.reject("bad_payload", e.to_string()),
    };
    let Some(account) = engine.account_for_client(&payload.client_id) else {
        return gate.reject(
            "unknown_client",
            "the notification is for an app upkeep does not manage".into(),
        );
    };
    let Some(known) = engine.known_user(&account) else {
        return gate.reject("user_unknown", RejectReason::UserUnknown.to_string());
    };
    let sub = upkeep_core::expiry::inspect(&payload.access_token).map(|i| i.claims.sub);
    let stranger = payload.user_id != known || sub.as_ref().is_ok_and(|s| *s != known);
    if stranger {
        gate.knocking(
            &account,
            "Another user's token posted to the webhook",
            "A notification carrying a token of another Upstox user than this account's was \
             posted to the notifier webhook and refused.",
        )
        .await;
        return gate.reject(
            "wrong_user",
            "the notification is for another user than this account's".into(),
        );
    }
    let token = payload.access_token;
    match engine.precheck(&account, &token, Actor::Webhook) {
        Ok(Some(current)) => return accepted(&account, &current),
        Ok(None) => {}
        Err(reason) => return gate.reject(reason_code(&reason), reason.to_string()),
    }
    let verdict = gate.enqueue(account.clone(), token);
    match tokio::time::timeout(gate.limits.answer_within, verdict).await {
        Ok(Ok(Verdict::Accepted(c))) => accepted(&account, &c),
        Ok(Ok(Verdict::Rejected(reason))) => error(
            StatusCode::BAD_REQUEST,
            reason_code(&reason),
            reason.to_string(),
        ),
        Ok(Ok(Verdict::Superseded)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "superseded",
            "newer deliveries arrived before this one could be checked; it was dropped",
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "upkeep is shutting down",
        ),
        Err(_) => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "queued", "account": account })),
        )
            .into_response(),
    }
}
