//! The shared rate budget: every bot and API key behind one Upstox user draws on that
//! user's limits, per API (Upstox counts "per API, per user"; all order placement
//! calls together), so upkeep, not Upstox, says "slow down".
//!
//! Upstox counts calls in windows (1 s, 1 min, 30 min), so the budget is a window
//! count, not a token bucket: a bucket refilling at 50/s with room for 50 lets 99
//! calls through in one second, which Upstox's window would refuse. A call counts
//! from the moment it is admitted; while in flight it counts as "now", and when it
//! ends it is recorded at its end time. Upstox sees the call somewhere between the
//! two, so however the network delays or reorders calls, no window Upstox looks at
//! holds more calls than the budget admitted.
//!
//! A call that finds its window full waits in a short FIFO queue per (user, API): at
//! most `queue_max` waiting calls per user, each for at most `queue_wait`. A call
//! that could not get a slot in time is refused at once, with the time its slot would
//! free as `retry_after`. An upstream 429 backs the whole user off for its
//! `Retry-After` (1 s when absent), capped at `max_backoff`.
//!
//! Time is tokio's, so tests run on a paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use upkeep_core::config::gateway_budget::BudgetConfig;
use upkeep_upstox::limits::{ApiGroup, ApiKey, RateLimits};

/// The budget's settings: limits per group and the queue's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Off: the gateway takes no permits.
    pub enabled: bool,
    limits: [RateLimits; ApiGroup::ALL.len()],
    /// Calls of one user that may wait at once.
    pub queue_max: usize,
    /// The longest a call waits for its slot.
    pub queue_wait: Duration,
    /// The longest an upstream 429 backs a user off.
    pub max_backoff: Duration,
    /// How long an upstream 429 without `Retry-After` backs a user off (Upstox
    /// documents none; at most `max_backoff`).
    pub default_backoff: Duration,
}

/// An upstream 429 without `Retry-After` backs the user off this long by default.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

impl Default for BudgetSettings {
    fn default() -> Self {
        Self::from_config(&BudgetConfig::default())
    }
}

impl BudgetSettings {
    /// The published limits with the configured overrides (`0` removes a window).
    pub fn from_config(c: &BudgetConfig) -> Self {
        let mut limits = ApiGroup::ALL.map(ApiGroup::published);
        for (name, o) in c.rate_limits.iter() {
            let Some(group) = ApiGroup::from_name(name) else {
                continue; // the config's groups are the table's, by construction
            };
            let l = &mut limits[index(group)];
            let set = |slot: &mut Option<u32>, v: Option<u32>| {
                if let Some(v) = v {
                    *slot = (v > 0).then_some(v);
                }
            };
            set(&mut l.per_second, o.per_second);
            set(&mut l.per_minute, o.per_minute);
            set(&mut l.per_30_minutes, o.per_30_minutes);
        }
        Self {
            enabled: c.enabled,
            limits,
            queue_max: c.queue_max,
            queue_wait: Duration::from_millis(c.queue_wait_ms),
            max_backoff: c.max_backoff.try_into().unwrap_or(Duration::ZERO),
            default_backoff: DEFAULT_BACKOFF,
        }
    }

    /// The limits of `group`.
    pub fn limits(&self, group: ApiGroup) -> &RateLimits {
        &self.limits[index(group)]
    }

    /// Replaces the limits of `group`.
    pub fn with_limits(mut self, group: ApiGroup, limits: RateLimits) -> Self {
        self.limits[index(group)] = limits;
        self
    }
}

fn index(group: ApiGroup) -> usize {
    ApiGroup::ALL.iter().position(|g| *g == group).unwrap_or(0)
}

/// Why a call was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `queue_max` calls of this user were already waiting.
    QueueFull,
    /// Its slot would not free within `queue_wait`.
    WaitTooLong,
    /// The user is backed off after an upstream 429, beyond `queue_wait`.
    BackedOff,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::WaitTooLong => "wait_too_long",
            RejectReason::BackedOff => "backed_off",
        }
    }
}

/// A refused call: why, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub reason: RejectReason,
    /// From now until the slot should be free (at least the next window boundary).
    pub retry_after: Duration,
}

impl Rejected {
    /// `retry_after` in whole seconds, rounded up, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        s.max(1)
    }
}

/// Counters since start, and the calls waiting now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    pub admitted: u64,
    /// Calls that had to wait (admitted or refused later).
    pub queued: u64,
    pub rejected_queue_full: u64,
    pub rejected_wait_too_long: u64,
    pub rejected_backed_off: u64,
    /// Upstream 429s reported.
    pub upstream_429: u64,
    /// Calls waiting right now.
    pub waiting: u64,
    /// The most calls that ever waited at once (all users).
    pub waiting_peak: u64,
}

impl BudgetStats {
    pub fn rejected(&self) -> u64 {
        self.rejected_queue_full + self.rejected_wait_too_long + self.rejected_backed_off
    }
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    queued: AtomicU64,
    queue_full: AtomicU64,
    wait_too_long: AtomicU64,
    backed_off: AtomicU64,
    upstream_429: AtomicU64,
    waiting: AtomicU64,
    waiting_peak: AtomicU64,
}

/// The budget of every user. Cheap to clone (shared).
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: BudgetSettings,
    users: Mutex<HashMap<Arc<str>, User>>,
    counters: Counters,
}

#[derive(Default)]
struct User {
    backoff_until: Option<Instant>,
    waiting: usize,
    next_ticket: u64,
    apis: HashMap<ApiKey, Window>,
}

/// One (user, API): calls in flight, ends of finished calls still inside the longest
/// window (ascending), the waiting calls' tickets in arrival order.
struct Window {
    in_flight: usize,
    ended: VecDeque<Instant>,
    queue: VecDeque<u64>,
    changed: watch::Sender<()>,
}

impl Window {
    fn new() -> Self {
        Self {
            in_flight: 0,
            ended: VecDeque::new(),
            queue: VecDeque::new(),
            changed: watch::Sender::new(()),
        }
    }

    fn forget_before(&mut self, now: Instant, longest: Duration) {
        while self.ended.front().is_some_and(|t| *t + longest <= now) {
            self.ended.pop_front();
        }
    }

    /// The earliest time at which `ahead` more calls and then one more fit in every
    /// window (`now` if it fits now). With calls in flight that is a lower bound: they
    /// end at `now` at the earliest.
    fn earliest_slot(&self, now: Instant, limits: &RateLimits, ahead: usize) -> Instant {
        let mut at = now;
        for (window, limit) in limits.windows() {
            let first_inside = match now.checked_sub(window) {
                Some(start) => self.ended.partition_point(|t| *t <= start),
                None => 0,
            };
            let inside = self.ended.len() - first_inside;
            let wanted = self.in_flight + inside + ahead + 1;
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            if wanted <= limit {
                continue;
            }
            let must_leave = wanted - limit;
            let free = match self.ended.get(first_inside + must_leave - 1) {
                Some(t) if must_leave <= inside => *t + window,
                _ => now + window,
            };
            at = at.max(free);
        }
        at
    }

    fn wake_waiters(&self) {
        self.changed.send_replace(());
    }
}

fn longest(limits: &RateLimits) -> Duration {
    limits.windows().map(|(w, _)| w).max().unwrap_or_default()
}

impl Budget {
    pub fn new(settings: BudgetSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                users: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }

    pub fn settings(&self) -> &BudgetSettings {
        &self.inner.settings
    }

    fn users(&self) -> MutexGuard<'_, HashMap<Arc<str>, User>> {
        self.inner.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one call of `api` by `user` (the Upstox user id, or the account when
    /// the user is unknown): at once, after a short wait in line, or refused.
    pub async fn acquire(&self, user: &str, api: &ApiKey) -> Result<Permit, Rejected> {
        let settings = &self.inner.settings;
        let limits = settings.limits(api.group);
        let deadline = Instant::now() + settings.queue_wait;
        let mut line = InLine {
            budget: self,
            user,
            api,
            ticket: None,
        };
        loop {
            let (mut changed, wake_at) = {
                let mut users = self.users();
                let name: Arc<str> = users
                    .get_key_value(user)
                    .map_or_else(|| Arc::from(user), |(k, _)| k.clone());
                let User {
                    backoff_until,
                    waiting,
                    next_ticket,
                    apis,
                } = users.entry(name.clone()).or_default();
                let now = Instant::now();
                let backoff = backoff_until.filter(|t| *t > now);
                if backoff.is_none() {
                    *backoff_until = None;
                }
                let w = apis.entry(api.clone()).or_insert_with(Window::new);
                w.forget_before(now, longest(limits));
                let ahead = match line.ticket {
                    None => w.queue.len(),
                    Some(t) => w.queue.iter().position(|q| *q == t).unwrap_or(0),
                };
                let slot = w.earliest_slot(now, limits, ahead);
                if backoff.is_none() && ahead == 0 && slot <= now {
                    if line.ticket.take().is_some() {
                        w.queue.pop_front();
                        w.wake_waiters();
                        *waiting = waiting.saturating_sub(1);
                        self.inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                    }
                    w.in_flight += 1;
                    self.inner.counters.admitted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Permit {
                        budget: self.clone(),
                        user: name,
                        api: api.clone(),
                    });
                }
                let ready = slot.max(backoff.unwrap_or(now));
                if ready > deadline || now >= deadline {
                    let reason = if backoff.is_some_and(|b| b > deadline) {
                        RejectReason::BackedOff
                    } else {
                        RejectReason::WaitTooLong
                    };
                    drop(users);
                    return Err(self.refuse(reason, ready - now));
                }
                if line.ticket.is_none() {
                    if *waiting >= settings.queue_max {
                        drop(users);
                        return Err(self.refuse(RejectReason::QueueFull, ready - now));
                    }
                    let t = *next_ticket;
                    *next_ticket += 1;
                    *waiting += 1;
                    w.queue.push_back(t);
                    line.ticket = Some(t);
                    let c = &self.inner.counters;
                    c.queued.fetch_add(1, Ordering::Relaxed);
                    let now_waiting = c.waiting.fetch_add(1, Ordering::Relaxed) + 1;
                    c.waiting_peak.fetch_max(now_waiting, Ordering::Relaxed);
                }
                // The first in line waits for its slot; the others until the line
                // moves (never on a timer already due, which would spin).
                let wake_at = if ahead == 0 { ready } else { deadline };
                (w.changed.subscribe(), wake_at)
            };
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    fn refuse(&self, reason: RejectReason, retry_after: Duration) -> Rejected {
        let c = &self.inner.counters;
        match reason {
            RejectReason::QueueFull => &c.queue_full,
            RejectReason::WaitTooLong => &c.wait_too_long,
            RejectReason::BackedOff => &c.backed_off,
        }
        .fetch_add(1, Ordering::Relaxed);
        Rejected {
            reason,
            retry_after,
        }
    }

    /// Upstream answered 429 for `user`: no call of this user goes out for
    /// `retry_after` (1 s when Upstox gave none), at most `max_backoff`.
    pub fn back_off(&self, user: &str, retry_after: Option<Duration>) {
        let settings = &self.inner.settings;
        let wait = retry_after
            .unwrap_or(settings.default_backoff)
            .min(settings.max_backoff);
        let until = Instant::now() + wait;
        self.inner
            .counters
            .upstream_429
            .fetch_add(1, Ordering::Relaxed);
        let mut users = self.users();
        let u = users.entry(Arc::from(user)).or_default();
        u.backoff_until = Some(u.backoff_until.map_or(until, |b| b.max(until)));
        for w in u.apis.values() {
            w.wake_waiters();
        }
    }

    /// When `user` may send again after an upstream 429 (`None`: not backed off).
    pub fn backed_off_until(&self, user: &str) -> Option<Instant> {
        let now = Instant::now();
        self.users()
            .get(user)
            .and_then(|u| u.backoff_until)
            .filter(|t| *t > now)
    }

    pub fn stats(&self) -> BudgetStats {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BudgetStats {
            admitted: g(&c.admitted),
            queued: g(&c.queued),
            rejected_queue_full: g(&c.queue_full),
            rejected_wait_too_long: g(&c.wait_too_long),
            rejected_backed_off: g(&c.backed_off),
            upstream_429: g(&c.upstream_429),
            waiting: g(&c.waiting),
            waiting_peak: g(&c.waiting_peak),
        }
    }

    /// Appends the budget's counters to `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.stats();
        let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "upkeep_gateway_budget_admitted_total",
            "Gateway requests admitted by the shared rate budget.",
            &[("", s.admitted)],
        );
        counter(
            "upkeep_gateway_budget_queued_total",
            "Gateway requests that waited in line for a slot of the rate budget.",
            &[("", s.queued)],
        );
        counter(
            "upkeep_gateway_budget_rejected_total",
            "Gateway requests answered 429 by upkeep, by reason.",
            &[
                ("{reason=\"queue_full\"}", s.rejected_queue_full),
                ("{reason=\"wait_too_long\"}", s.rejected_wait_too_long),
                ("{reason=\"backed_off\"}", s.rejected_backed_off),
            ],
        );
        counter(
            "upkeep_gateway_upstream_429_total",
            "Upstream 429 answers (each backs its user off).",
            &[("", s.upstream_429)],
        );
        for (name, help, v) in [
            (
                "upkeep_gateway_budget_waiting",
                "Gateway requests waiting for a slot now.",
                s.waiting,
            ),
            (
                "upkeep_gateway_budget_waiting_peak",
                "The most gateway requests that waited for a slot at once.",
                s.waiting_peak,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }

    fn end(&self, user: &str, api: &ApiKey) {
        let now = Instant::now();
        let mut users = self.users();
        if let Some(w) = users.get_mut(user).and_then(|u| u.apis.get_mut(api)) {
            w.in_flight = w.in_flight.saturating_sub(1);
            w.ended.push_back(now);
            w.wake_waiters();
        }
    }

    fn leave_line(&self, user: &str, api: &ApiKey, ticket: u64) {
        let mut users = self.users();
        let Some(u) = users.get_mut(user) else {
            return;
        };
        if let Some(w) = u.apis.get_mut(api)
            && let Some(i) = w.queue.iter().position(|q| *q == ticket)
        {
            w.queue.remove(i);
            w.wake_waiters();
            u.waiting = u.waiting.saturating_sub(1);
            self.inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A waiting call's place in line, given up when the call stops waiting for any
/// reason (admitted, refused, or its client went away).
struct InLine<'a> {
    budget: &'a Budget,
    user: &'a str,
    api: &'a ApiKey,
    ticket: Option<u64>,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.budget.leave_line(self.user, self.api, t);
        }
    }
}

/// An admitted call. Dropping it records the call's end; the call keeps counting in
/// each window until that window has passed its end.
pub struct Permit {
    budget: Budget,
    user: Arc<str>,
    api: ApiKey,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("user", &self.user)
            .field("api", &self.api)
            .finish()
    }
}

impl Permit {
    /// Upstream answered 429: backs this call's user off (see [`Budget::back_off`]).
    pub fn upstream_refused(&self, retry_after: Option<Duration>) {
        self.budget.back_off(&self.user, retry_after);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.end(&self.user, &self.api);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upkeep_upstox::limits::api_of;

    fn ltp() -> ApiKey {
        api_of("/v3/market-quote/ltp")
    }

    fn budget(per_second: u32, queue_max: usize, queue_wait_ms: u64) -> Budget {
        let s = BudgetSettings {
            queue_max,
            queue_wait: Duration::from_millis(queue_wait_ms),
            ..BudgetSettings::default()
        }
        .with_limits(
            ApiGroup::Standard,
            RateLimits::new(Some(per_second), Some(500), Some(2000)),
        );
        Budget::new(s)
    }

    #[tokio::test(start_paused = true)]
    async fn calls_within_the_limit_go_at_once() {
        let b = budget(5, 0, 0);
        let start = Instant::now();
        let api = ltp();
        let permits: Vec<_> = futures_util::future::join_all((0..5).map(|_| b.acquire("U1", &api)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(permits.len(), 5);
        assert_eq!(Instant::now(), start, "nobody waited");
        assert_eq!(b.stats().admitted, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_second_refuses_without_a_queue_and_names_when_to_retry() {
        let b = budget(2, 0, 0);
        let p1 = b.acquire("U1", &ltp()).await.unwrap();
        let p2 = b.acquire("U1", &ltp()).await.unwrap();
        drop((p1, p2));
        let r = b.acquire("U1", &ltp()).await.unwrap_err();
        assert_eq!(r.reason, RejectReason::WaitTooLong);
        assert_eq!(r.retry_after, Duration::from_secs(1));
        assert_eq!(r.retry_after_secs(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            b.acquire("U1", &ltp()).await.is_ok(),
            "the window has passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_flight_counts_until_a_window_after_it_ends() {
        let b = budget(1, 0, 0);
        let p = b.acquire("U1", &ltp()).await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.acquire("U1", &ltp()).await.is_err(), "still in flight");
        drop(p);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(b.acquire("U1", &ltp()).await.is_err(), "ended 999 ms ago");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.acquire("U1", &ltp()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_calls_go_in_arrival_order_when_their_slot_frees() {
        let b = budget(2, 10, 1500);
        let start = Instant::now();
        drop(b.acquire("U1", &ltp()).await.unwrap());
        drop(b.acquire("U1", &ltp()).await.unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..2)
            .map(|i| {
                let (b, order) = (b.clone(), order.clone());
                tokio::spawn(async move {
                    let p = b.acquire("U1", &ltp()).await;
                    order.lock().unwrap().push((i, Instant::now() - start));
                    p.map(drop)
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            vec![(0, Duration::from_secs(1)), (1, Duration::from_secs(1))]
        );
        let s = b.stats();
        assert_eq!((s.admitted, s.queued, s.waiting), (4, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_per_user() {
        let b = budget(1, 2, 5000);
        drop(b.acquire("U1", &ltp()).await.unwrap());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire("U1", &ltp()).await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        while b.stats().waiting < 2 {
            tokio::task::yield_now().await;
        }
        let r = b.acquire("U1", &ltp()).await.unwrap_err();
        assert_eq!(r.reason, RejectReason::QueueFull);
        assert!(r.retry_after_secs() >= 1);
        assert!(
            b.acquire("U2", &ltp()).await.is_ok(),
            "another user has their own budget"
        );
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(b.stats().rejected_queue_full, 1);
        assert_eq!(b.stats().waiting_peak, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_slot_is_beyond_the_wait_is_refused_at_once() {
        let b = budget(2, 10, 500);
        let start = Instant::now();
        drop(b.acquire("U1", &ltp()).await.unwrap());
        drop(b.acquire("U1", &ltp()).await.unwrap());
        let r = b.acquire("U1", &ltp()).await.unwrap_err();
        assert_eq!(r.reason, RejectReason::WaitTooLong);
        assert_eq!(Instant::now(), start, "refused without waiting");
        assert_eq!(b.stats().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_goes_away_gives_up_its_place() {
        let b = budget(1, 1, 5000);
        drop(b.acquire("U1", &ltp()).await.unwrap());
        let waiting = {
            let b = b.clone();
            tokio::spawn(async move { b.acquire("U1", &ltp()).await.map(drop) })
        };
        while b.stats().waiting < 1 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(b.stats().waiting, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.acquire("U1", &ltp()).await.is_ok(), "not stuck behind it");
    }

    #[tokio::test(start_paused = true)]
    async fn two_keys_behind_one_user_share_its_budget_but_apis_do_not() {
        let b = budget(3, 0, 0);
        for _ in 0..3 {
            drop(b.acquire("U1", &ltp()).await.unwrap());
        }
        assert!(b.acquire("U1", &ltp()).await.is_err());
        assert!(
            b.acquire("U1", &api_of("/v2/market-quote/ltp"))
                .await
                .is_ok()
        );
        assert!(b.acquire("U1", &api_of("/v2/user/profile")).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn order_placement_shares_one_budget_of_ten_a_second() {
        let b = Budget::new(BudgetSettings {
            queue_max: 0,
            queue_wait: Duration::ZERO,
            ..BudgetSettings::default()
        });
        for i in 0..10 {
            let path = if i % 2 == 0 {
                "/v2/order/place"
            } else {
                "/v3/order/cancel"
            };
            drop(b.acquire("U1", &api_of(path)).await.unwrap());
        }
        assert!(b.acquire("U1", &api_of("/v2/order/modify")).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_minute_window_holds_after_the_second_window_frees() {
        let b = Budget::new(
            BudgetSettings {
                queue_max: 0,
                queue_wait: Duration::ZERO,
                ..BudgetSettings::default()
            }
            .with_limits(ApiGroup::Standard, RateLimits::new(Some(2), Some(3), None)),
        );
        for _ in 0..2 {
            drop(b.acquire("U1", &ltp()).await.unwrap());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.acquire("U1", &ltp()).await.unwrap());
        let r = b.acquire("U1", &ltp()).await.unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_429_backs_the_whole_user_off_capped() {
        let b = Budget::new(BudgetSettings {
            queue_max: 10,
            queue_wait: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            ..BudgetSettings::default()
        });
        let p = b.acquire("U1", &ltp()).await.unwrap();
        p.upstream_refused(Some(Duration::from_secs(3600)));
        drop(p);
        let r = b
            .acquire("U1", &api_of("/v2/user/profile"))
            .await
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::BackedOff);
        assert_eq!(r.retry_after, Duration::from_secs(10), "capped");
        assert!(b.acquire("U2", &ltp()).await.is_ok(), "other users go on");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.acquire("U1", &ltp()).await.is_ok());
        assert_eq!(b.stats().upstream_429, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_backoff_is_waited_out_in_line() {
        let b = Budget::new(BudgetSettings {
            queue_max: 10,
            queue_wait: Duration::from_secs(2),
            ..BudgetSettings::default()
        });
        let start = Instant::now();
        b.back_off("U1", None);
        assert!(b.acquire("U1", &ltp()).await.is_ok());
        assert_eq!(Instant::now() - start, DEFAULT_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_count_admitted_queued_and_rejected() {
        let b = budget(1, 0, 0);
        drop(b.acquire("U1", &ltp()).await.unwrap());
        assert!(b.acquire("U1", &ltp()).await.is_err());
        let mut text = String::new();
        b.render_metrics(&mut text);
        assert!(
            text.contains("upkeep_gateway_budget_admitted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("upkeep_gateway_budget_rejected_total{reason=\"wait_too_long\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("upkeep_gateway_budget_waiting 0\n"), "{text}");
    }

    #[test]
    fn overrides_replace_only_the_windows_they_name() {
        use upkeep_core::config::gateway_budget::WindowLimits;
        let mut c = BudgetConfig::default();
        c.rate_limits.order = Some(WindowLimits {
            per_second: Some(50),
            ..WindowLimits::default()
        });
        c.rate_limits.standard = Some(WindowLimits {
            per_30_minutes: Some(0),
            ..WindowLimits::default()
        });
        let s = BudgetSettings::from_config(&c);
        assert_eq!(
            *s.limits(ApiGroup::Order),
            RateLimits::new(Some(50), Some(500), Some(2000))
        );
        assert_eq!(
            *s.limits(ApiGroup::Standard),
            RateLimits::new(Some(50), Some(500), None)
        );
        assert_eq!(s.queue_wait, Duration::from_secs(1));
    }
}
