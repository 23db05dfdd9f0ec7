//! Alerts: telling a human when upkeep needs them.
//!
//! An [`Alerter`] sends an [`Alert`] to every configured channel at once: webhooks
//! (generic JSON, Slack, Telegram) and email over SMTP. Delivery is best-effort per
//! channel, with a timeout and one retry on a transient failure; a dead channel never
//! holds up the others.
//!
//! Before anything goes out, the alerter decides whether it should:
//! - **De-duplication**: the same (kind, account, title) is not sent again within
//!   [`AlertPolicy::dedup_window`]. An alert that reached no channel is not remembered,
//!   so the next attempt goes out.
//! - **Rate limit**: at most [`AlertPolicy::max_per_hour`] alerts in any hour. Alerts over
//!   the limit are counted, and once the hour has room again a single
//!   "N alerts suppressed" summary goes out (with the next alert, or from
//!   [`Alerter::flush_suppressed`], which the daemon calls on a timer).
//! - **Recovery**: a [`AlertKind::Recovered`] alert is only sent for an account that had
//!   a problem alert delivered since its last recovery, and it clears de-duplication for
//!   that account so the next problem is reported at once.
//!
//! Time for both comes from the injected [`Clock`].
//!
//! Webhook URLs are secrets (a Telegram URL carries the bot token; Slack URLs are
//! bearer capabilities): logs, errors, `Debug` output and channel labels show the host
//! only.

#[cfg(feature = "smtp")]
mod email;
#[cfg(not(feature = "smtp"))]
#[path = "alerts/no_email.rs"]
mod email;
mod render;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use upkeep_core::{Clock, Secret};

use email::EmailChannel;

/// What happened. Serialized in `snake_case` (`"manual_action_needed"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A renewal attempt failed; upkeep will retry.
    RenewalFailed,
    /// Renewal failed in a way retrying will not fix (bad credentials, revoked app).
    RenewalFatal,
    /// The token will expire before the planned renewal can complete.
    DeadlineAtRisk,
    /// The account has no working token while it should, and renewing fails: the
    /// alert ladder (first alert, +15 min, 30 min before the deadline, at the
    /// deadline, at market open).
    NoWorkingToken,
    /// A human must log in (the alert carries the login link).
    ManualActionNeeded,
    /// The token is expiring and no renewal strategy can run.
    ExpiringNoRenewal,
    /// The account is healthy again after a problem alert.
    Recovered,
    /// Summary sent by the alerter itself after the rate limit held alerts back.
    AlertsSuppressed,
    /// Someone posted another user's or a forged token to the notifier webhook.
    WebhookIntrusion,
    /// The store or the token files cannot be written.
    StorageFailing,
    /// A part of upkeep crashed and was restarted (a bug: report it).
    InternalError,
}

impl AlertKind {
    /// The `snake_case` name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RenewalFailed => "renewal_failed",
            AlertKind::RenewalFatal => "renewal_fatal",
            AlertKind::DeadlineAtRisk => "deadline_at_risk",
            AlertKind::NoWorkingToken => "no_working_token",
            AlertKind::ManualActionNeeded => "manual_action_needed",
            AlertKind::ExpiringNoRenewal => "expiring_no_renewal",
            AlertKind::Recovered => "recovered",
            AlertKind::AlertsSuppressed => "alerts_suppressed",
            AlertKind::WebhookIntrusion => "webhook_intrusion",
            AlertKind::StorageFailing => "storage_failing",
            AlertKind::InternalError => "internal_error",
        }
    }

    /// A problem alert: one that a later [`AlertKind::Recovered`] resolves.
    pub fn is_problem(self) -> bool {
        // An intrusion is not the account's problem: no "recovered" follows it.
        !matches!(
            self,
            AlertKind::Recovered | AlertKind::AlertsSuppressed | AlertKind::WebhookIntrusion
        )
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// The account name (as configured), `*` for alerts about upkeep itself.
    pub account: String,
    /// Short, stable headline. Part of the de-duplication key: keep variable detail
    /// (error text, times) in `message`.
    pub title: String,
    pub message: String,
    /// The login link, for [`AlertKind::ManualActionNeeded`].
    pub link: Option<String>,
    pub at: Timestamp,
}

impl Alert {
    pub fn new(
        kind: AlertKind,
        account: impl Into<String>,
        title: impl Into<String>,
        message: impl Into<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            kind,
            account: account.into(),
            title: title.into(),
            message: message.into(),
            link: None,
            at,
        }
    }

    pub fn with_link(mut self, link: impl Into<String>) -> Self {
        self.link = Some(link.into());
        self
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"kind","account","title","message","link","at","source":"upkeep"}`.
    Generic,
    /// Slack incoming webhook: `{"text", "blocks"}`.
    Slack,
    /// Telegram Bot API `sendMessage`; the URL is
    /// `https://api.telegram.org/bot<token>/sendMessage` and `chat_id` is required.
    Telegram,
}

impl WebhookFormat {
    fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Telegram => "telegram",
        }
    }
}

/// A webhook to POST alerts to. `https://` is required except for loopback hosts.
#[derive(Clone, Deserialize)]
pub struct WebhookTarget {
    /// Treated as a secret: only its host is ever logged.
    pub url: String,
    pub format: WebhookFormat,
    /// Telegram only: the chat to post in (numeric id or `@channel`).
    #[serde(default)]
    pub chat_id: Option<String>,
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("host", &url_host(&self.url))
            .field("format", &self.format)
            .field("chat_id", &self.chat_id)
            .finish_non_exhaustive()
    }
}

/// Email over SMTP.
///
/// `smtp_url` is `smtps://host[:465]` (implicit TLS) or `smtp://host[:587]` with
/// `starttls = true` (STARTTLS required). Plain `smtp://` without TLS is accepted only for
/// loopback hosts (a local relay or test sink). Certificates are always verified.
/// User and password may be in the URL (`smtps://user:pass@host`) or in the fields;
/// the fields win.
#[derive(Clone, Deserialize)]
pub struct EmailTarget {
    pub smtp_url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_true")]
    pub starttls: bool,
}

fn default_true() -> bool {
    true
}

impl fmt::Debug for EmailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailTarget")
            .field("host", &url_host(&self.smtp_url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("starttls", &self.starttls)
            .finish()
    }
}

/// How often alerts may go out, and how hard to try.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    /// The same (kind, account, title) is not sent again within this window. Zero turns
    /// de-duplication off.
    pub dedup_window: SignedDuration,
    /// At most this many alerts in any rolling hour (must be at least 1).
    pub max_per_hour: u32,
    /// Per-attempt limit for one channel.
    pub channel_timeout: Duration,
    /// Pause before the single retry after a transient failure.
    pub retry_delay: Duration,
    /// How many alerts [`Alerter::recent`] keeps.
    pub recent_capacity: usize,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            dedup_window: SignedDuration::from_mins(30),
            max_per_hour: 20,
            channel_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(2),
            recent_capacity: 100,
        }
    }
}

/// A configuration mistake found by [`Alerter::new`]. Messages never contain URLs.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert webhook #{index} has an invalid URL: {reason}")]
    WebhookUrl { index: usize, reason: &'static str },
    #[error(
        "alert webhook #{index} ({host}) uses plain http; use https:// (plain http is allowed only for localhost)"
    )]
    InsecureWebhook { index: usize, host: String },
    #[error(
        "alert webhook #{index} is a Telegram webhook without chat_id; set chat_id to the chat to post in"
    )]
    TelegramChatIdMissing { index: usize },
    #[error("alert email smtp_url is invalid: {reason}")]
    EmailUrl { reason: &'static str },
    #[error(
        "alert email to {host} would be sent without TLS; use smtps:// or set starttls = true (plain smtp is allowed only for localhost)"
    )]
    InsecureSmtp { host: String },
    #[error("alert email: could not set up TLS for {host}; check the host name")]
    EmailTls { host: String },
    #[error(
        "alert email is configured, but this upkeep was built without the `smtp` feature; remove [alert.email] or build with it"
    )]
    EmailUnsupported,
    #[error("alert email: set both username and password, or neither")]
    EmailCredentials,
    #[error("alert email: '{address}' is not a valid email address")]
    EmailAddress { address: String },
    #[error("alert email: no recipients; list at least one address in `to`")]
    NoRecipients,
    #[error("alert policy: max_per_hour must be at least 1")]
    ZeroRateLimit,
    #[error("alert policy: dedup_window must not be negative")]
    NegativeDedupWindow,
}

/// What [`Alerter::send`] did with an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AlertOutcome {
    /// Delivered to at least one channel (or there are no channels). `failed` lists the
    /// channels that did not take it.
    Sent {
        delivered: Vec<String>,
        failed: Vec<String>,
    },
    /// Every channel failed; the alert is not remembered for de-duplication.
    Failed { failed: Vec<String> },
    /// The same alert went out within the de-duplication window.
    Deduplicated,
    /// Over the hourly limit; counted for the "suppressed" summary.
    RateLimited,
    /// A recovery for an account that had no problem alert delivered.
    NothingToRecover,
}

/// An alert that was dispatched, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentAlert {
    pub alert: Alert,
    /// Labels of channels that took it, e.g. `webhook 0 slack (hooks.slack.com)`.
    pub delivered: Vec<String>,
    pub failed: Vec<String>,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Alerts delivered to at least one channel.
    pub sent: u64,
    /// Alerts that no channel took.
    pub failed: u64,
    pub deduplicated: u64,
    pub rate_limited: u64,
    /// Individual channel deliveries that failed (after the retry).
    pub channel_errors: u64,
    /// Rate-limited alerts not yet reported by a summary.
    pub suppressed_pending: u64,
}

/// Sends alerts. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

struct Inner {
    webhooks: Vec<WebhookChannel>,
    email: Option<EmailChannel>,
    policy: AlertPolicy,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    state: Mutex<State>,
}

struct WebhookChannel {
    target: WebhookTarget,
    label: String,
}

type DedupKey = (AlertKind, String, String);

#[derive(Default)]
struct State {
    /// When each (kind, account, title) last went out.
    dedup: HashMap<DedupKey, Timestamp>,
    /// When each alert in the last hour went out (summaries excluded).
    window: VecDeque<Timestamp>,
    /// Accounts with a delivered problem alert and no recovery since.
    troubled: HashSet<String>,
    recent: VecDeque<SentAlert>,
    stats: AlertStats,
}

enum Decision {
    Skip(AlertOutcome),
    Go {
        summary: Option<Box<(Alert, Reserved)>>,
        reserved: Reserved,
    },
}

/// What `decide` booked for an alert, undone by `finish` if no channel took it.
enum Reserved {
    Nothing,
    /// The de-duplication entry written for this alert.
    Dedup(DedupKey, Timestamp),
    /// The suppressed count this summary reports.
    Suppressed(u64),
}

/// One channel's failure, already free of secrets.
#[derive(Debug)]
pub(crate) struct ChannelError {
    pub(crate) message: String,
    pub(crate) transient: bool,
}

impl ChannelError {
    #[cfg_attr(not(feature = "smtp"), allow(dead_code))] // email only
    pub(crate) fn permanent(message: String) -> Self {
        Self {
            message,
            transient: false,
        }
    }
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channels: Vec<&str> = self.channel_labels().collect();
        f.debug_struct("Alerter")
            .field("channels", &channels)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// Checks the targets and builds the channels. Nothing is sent and nothing connects.
    pub fn new(
        webhooks: Vec<WebhookTarget>,
        email: Option<EmailTarget>,
        policy: AlertPolicy,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Result<Self, AlertError> {
        if policy.max_per_hour == 0 {
            return Err(AlertError::ZeroRateLimit);
        }
        if policy.dedup_window.is_negative() {
            return Err(AlertError::NegativeDedupWindow);
        }
        let webhooks = webhooks
            .into_iter()
            .enumerate()
            .map(|(index, target)| check_webhook(index, target))
            .collect::<Result<Vec<_>, _>>()?;
        let email = email
            .as_ref()
            .map(|t| EmailChannel::build(t, policy.channel_timeout))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                webhooks,
                email,
                policy,
                clock,
                http,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// Labels of the configured channels (host only), for the status page.
    pub fn channel_labels(&self) -> impl Iterator<Item = &str> {
        self.inner
            .webhooks
            .iter()
            .map(|w| w.label.as_str())
            .chain(self.inner.email.iter().map(|e| e.label.as_str()))
    }

    /// Sends `alert` to every channel concurrently, unless de-duplication, the rate limit
    /// or the recovery rule holds it back. Never fails: channel errors are logged, counted
    /// and reported in the outcome.
    pub async fn send(&self, alert: Alert) -> AlertOutcome {
        let now = self.inner.clock.now();
        let decision = self.decide(&alert, now);
        let (summary, reserved) = match decision {
            Decision::Skip(outcome) => {
                metrics::counter!("upkeep_alerts_total", "channel" => "none", "kind" => alert.kind.as_str(), "outcome" => outcome_name(&outcome))
                    .increment(1);
                return outcome;
            }
            Decision::Go { summary, reserved } => (summary, reserved),
        };
        if let Some((summary, booked)) = summary.map(|b| *b) {
            let (delivered, failed) = self.dispatch(&summary).await;
            self.finish(summary, delivered, failed, booked);
        }
        let (delivered, failed) = self.dispatch(&alert).await;
        self.finish(alert, delivered, failed, reserved)
    }

    /// Sends the "N alerts suppressed" summary if alerts were held back by the rate limit
    /// and the hour has room again. Call it on a timer (e.g. every minute) so the summary
    /// does not wait for the next alert. Returns `None` when there was nothing to send.
    pub async fn flush_suppressed(&self) -> Option<AlertOutcome> {
        let now = self.inner.clock.now();
        let (summary, booked) = {
            let mut st = self.lock();
            prune(&mut st, &self.inner.policy, now);
            self.take_summary(&mut st, now)
        }?;
        let (delivered, failed) = self.dispatch(&summary).await;
        Some(self.finish(summary, delivered, failed, booked))
    }

    /// Records that `account` had a problem alert delivered (by an earlier run of the
    /// daemon), so its recovery alert is sent.
    pub fn note_troubled(&self, account: &str) {
        self.lock().troubled.insert(account.to_owned());
    }

    /// The most recent dispatched alerts, oldest first.
    pub fn recent(&self) -> Vec<SentAlert> {
        self.lock().recent.iter().cloned().collect()
    }

    pub fn stats(&self) -> AlertStats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn decide(&self, alert: &Alert, now: Timestamp) -> Decision {
        let policy = &self.inner.policy;
        let mut st = self.lock();
        prune(&mut st, policy, now);

        let key = (alert.kind, alert.account.clone(), alert.title.clone());
        if alert.kind == AlertKind::Recovered {
            if !st.troubled.contains(&alert.account) {
                return Decision::Skip(AlertOutcome::NothingToRecover);
            }
        } else if let Some(last) = st.dedup.get(&key)
            && now.duration_since(*last) < policy.dedup_window
        {
            st.stats.deduplicated += 1;
            return Decision::Skip(AlertOutcome::Deduplicated);
        }

        if st.window.len() >= policy.max_per_hour as usize {
            st.stats.rate_limited += 1;
            st.stats.suppressed_pending += 1;
            tracing::info!(
                kind = alert.kind.as_str(),
                account = %alert.account,
                "alert held back by the hourly rate limit"
            );
            return Decision::Skip(AlertOutcome::RateLimited);
        }
        let summary = self.take_summary(&mut st, now).map(Box::new);
        st.window.push_back(now);

        let reserved = if alert.kind == AlertKind::Recovered {
            // The account is fine again: its next problem must be reported at once.
            st.troubled.remove(&alert.account);
            st.dedup
                .retain(|(_, account, _), _| account != &alert.account);
            Reserved::Nothing
        } else {
            st.dedup.insert(key.clone(), now);
            Reserved::Dedup(key, now)
        };
        Decision::Go { summary, reserved }
    }

    /// Takes the pending suppressed count as a summary alert if the hour has room.
    /// Summaries do not count against the limit (there is at most one per episode).
    fn take_summary(&self, st: &mut State, now: Timestamp) -> Option<(Alert, Reserved)> {
        let max = self.inner.policy.max_per_hour;
        if st.stats.suppressed_pending == 0 || st.window.len() >= max as usize {
            return None;
        }
        let n = std::mem::take(&mut st.stats.suppressed_pending);
        let noun = if n == 1 { "alert" } else { "alerts" };
        let summary = Alert::new(
            AlertKind::AlertsSuppressed,
            "*",
            format!("{n} {noun} suppressed"),
            format!(
                "The limit of {max} alerts per hour was reached and {n} {noun} were not sent. \
                 Check the upkeep status page for the current state of every account."
            ),
            now,
        );
        Some((summary, Reserved::Suppressed(n)))
    }

    fn finish(
        &self,
        alert: Alert,
        delivered: Vec<String>,
        failed: Vec<String>,
        reserved: Reserved,
    ) -> AlertOutcome {
        let mut st = self.lock();
        st.stats.channel_errors += failed.len() as u64;
        let outcome = if delivered.is_empty() && !failed.is_empty() {
            st.stats.failed += 1;
            // Nobody heard it: forget it so the next attempt is not "a duplicate", put a
            // summary's count back, and a recovery that did not arrive leaves the account
            // waiting for one.
            match reserved {
                Reserved::Dedup(key, at) if st.dedup.get(&key) == Some(&at) => {
                    st.dedup.remove(&key);
                }
                Reserved::Suppressed(n) => st.stats.suppressed_pending += n,
                Reserved::Dedup(..) | Reserved::Nothing => {}
            }
            if alert.kind == AlertKind::Recovered {
                st.troubled.insert(alert.account.clone());
            }
            tracing::warn!(
                kind = alert.kind.as_str(),
                account = %alert.account,
                "alert reached no channel"
            );
            AlertOutcome::Failed {
                failed: failed.clone(),
            }
        } else {
            st.stats.sent += 1;
            if alert.kind.is_problem() {
                st.troubled.insert(alert.account.clone());
            }
            AlertOutcome::Sent {
                delivered: delivered.clone(),
                failed: failed.clone(),
            }
        };
        // One count per channel: which channel carried (or failed) which kind.
        let kind = alert.kind.as_str();
        for (channels, result) in [(&delivered, "sent"), (&failed, "failed")] {
            for channel in channels.iter() {
                metrics::counter!("upkeep_alerts_total", "channel" => channel.clone(), "kind" => kind, "outcome" => result)
                    .increment(1);
            }
        }
        let cap = self.inner.policy.recent_capacity;
        if cap > 0 {
            while st.recent.len() >= cap {
                st.recent.pop_front();
            }
            st.recent.push_back(SentAlert {
                alert,
                delivered,
                failed,
            });
        }
        outcome
    }

    /// Sends to every channel concurrently; returns (delivered, failed) labels.
    async fn dispatch(&self, alert: &Alert) -> (Vec<String>, Vec<String>) {
        let hooks = futures_util::future::join_all(self.inner.webhooks.iter().map(|w| {
            let label = w.label.as_str();
            async move {
                (
                    label,
                    self.attempt(label, || self.post_webhook(w, alert)).await,
                )
            }
        }));
        let mail = async {
            match &self.inner.email {
                Some(e) => Some((
                    e.label.as_str(),
                    self.attempt(&e.label, || e.send(alert)).await,
                )),
                None => None,
            }
        };
        let (hooks, mail) = tokio::join!(hooks, mail);
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        for (label, ok) in hooks.into_iter().chain(mail) {
            if ok {
                delivered.push(label.to_owned());
            } else {
                failed.push(label.to_owned());
            }
        }
        (delivered, failed)
    }

    /// Runs one delivery with a timeout, retrying once after a transient failure.
    async fn attempt<F, Fut>(&self, label: &str, mut deliver: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), ChannelError>>,
    {
        let timeout = self.inner.policy.channel_timeout;
        let mut retried = false;
        loop {
            let result = match tokio::time::timeout(timeout, deliver()).await {
                Ok(r) => r,
                Err(_) => Err(ChannelError {
                    message: format!("no answer within {timeout:?}"),
                    transient: true,
                }),
            };
            match result {
                Ok(()) => {
                    tracing::debug!(channel = label, "alert delivered");
                    return true;
                }
                Err(e) if e.transient && !retried => {
                    tracing::debug!(channel = label, error = %e.message, "alert delivery failed; retrying once");
                    retried = true;
                    tokio::time::sleep(self.inner.policy.retry_delay).await;
                }
                Err(e) => {
                    tracing::warn!(channel = label, error = %e.message, "alert delivery failed");
                    metrics::counter!("upkeep_alert_channel_errors_total").increment(1);
                    return false;
                }
            }
        }
    }

    async fn post_webhook(&self, w: &WebhookChannel, alert: &Alert) -> Result<(), ChannelError> {
        let body = match w.target.format {
            WebhookFormat::Generic => render::generic(alert),
            WebhookFormat::Slack => render::slack(alert),
            WebhookFormat::Telegram => {
                render::telegram(alert, w.target.chat_id.as_deref().unwrap_or_default())
            }
        };
        let response = self
            .inner
            .http
            .post(&w.target.url)
            .timeout(self.inner.policy.channel_timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                // reqwest puts the full URL (with a Telegram bot token) in its message.
                let e = e.without_url();
                ChannelError {
                    transient: !e.is_builder(),
                    message: error_chain(&e),
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            // The body is not read: receivers like to echo the request path back.
            Err(ChannelError {
                message: format!("the receiver answered HTTP {status}"),
                transient: status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT,
            })
        }
    }
}

fn check_webhook(index: usize, target: WebhookTarget) -> Result<WebhookChannel, AlertError> {
    let url = url::Url::parse(&target.url).map_err(|_| AlertError::WebhookUrl {
        index,
        reason: "not a valid URL",
    })?;
    let host = url
        .host_str()
        .ok_or(AlertError::WebhookUrl {
            index,
            reason: "it has no host",
        })?
        .to_owned();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(AlertError::InsecureWebhook { index, host }),
        _ => {
            return Err(AlertError::WebhookUrl {
                index,
                reason: "the scheme must be https://",
            });
        }
    }
    if target.format == WebhookFormat::Telegram
        && target
            .chat_id
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
    {
        return Err(AlertError::TelegramChatIdMissing { index });
    }
    let label = format!("webhook {index} {} ({host})", target.format.as_str());
    Ok(WebhookChannel { target, label })
}

/// Drops de-duplication entries past the window and rate-window entries past an hour.
fn prune(st: &mut State, policy: &AlertPolicy, now: Timestamp) {
    let hour = SignedDuration::from_hours(1);
    while st
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= hour)
    {
        st.window.pop_front();
    }
    st.dedup
        .retain(|_, at| now.duration_since(*at) < policy.dedup_window);
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        // Non-special schemes (smtp://) leave IP addresses unparsed, as a "domain".
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// The host of a URL, or a placeholder; safe to log.
fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "<invalid url>".to_owned())
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn outcome_name(outcome: &AlertOutcome) -> &'static str {
    match outcome {
        AlertOutcome::Sent { .. } => "sent",
        AlertOutcome::Failed { .. } => "failed",
        AlertOutcome::Deduplicated => "deduplicated",
        AlertOutcome::RateLimited => "rate_limited",
        AlertOutcome::NothingToRecover => "nothing_to_recover",
    }
}
