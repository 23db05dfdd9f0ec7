//! Renewal strategies. Each one either produces a token, waits for one to be
//! delivered (webhook, OAuth callback), or fails with a class that tells the engine
//! what to do next: retry (transient), stop and alert (fatal), or move on.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use upkeep_core::AccessToken;
use upkeep_upstox::{Fault, TotpLogin, UpstoxError};

use crate::alerts::{Alert, AlertKind};
use crate::engine::{AccountRuntime, CurrentToken, Engine, short_error};
use crate::settings::StrategyKind;

/// What a strategy came back with.
pub(crate) enum Obtained {
    /// A token to validate and store. `validate`: ask Upstox (profile call) first.
    Token { token: AccessToken, validate: bool },
    /// A token someone else delivered and the engine already stored.
    Delivered(Arc<CurrentToken>),
}

/// Why a strategy did not produce a token. The kind decides what the engine does:
/// only a credential or configuration fault disables the strategy (a stored latch)
/// until a human acts; a refusal fails this attempt and the next strategy is tried.
pub(crate) enum Failure {
    /// The strategy is not configured or cannot run for this account.
    NotApplicable(String),
    /// The user's credentials were refused (wrong PIN or TOTP, lockout, a refresh token
    /// refused): retrying would lock the account. Disables the strategy.
    Credential(String),
    /// The app or upkeep's configuration is wrong. Disables the strategy.
    Configuration(String),
    /// Upstox refused this attempt (a token it would not accept, an unexpected answer);
    /// retrying at once will not help, a later attempt may.
    Refused(String),
    /// Worth retrying after a backoff.
    Transient {
        reason: String,
        retry_after: Option<SignedDuration>,
    },
    /// Waited for a human (approval, login) until the limit.
    TimedOut(String),
    /// The daemon is shutting down.
    Cancelled,
}

impl Failure {
    /// A token the engine refused to make current, as a failure of the strategy that
    /// produced it.
    pub(crate) fn from_rejection(reason: &crate::engine::RejectReason) -> Self {
        use crate::engine::RejectReason as R;
        let why = format!("token refused: {reason}");
        match reason {
            R::Unverified(_) | R::Store(_) => Failure::Transient {
                reason: why,
                retry_after: None,
            },
            R::WrongUser => Failure::Configuration(format!(
                "{why} (the account's credentials log in as another Upstox user than its \
                 user_id)"
            )),
            R::UserUnknown | R::UnknownAccount(_) => Failure::Configuration(why),
            R::Malformed(_) | R::Expired(_) | R::NotAccepted(_) | R::Stale(_) => {
                Failure::Refused(why)
            }
        }
    }
}

fn classify(engine: &Engine, e: UpstoxError) -> Failure {
    let reason = short_error(&e);
    match e.fault() {
        Fault::Transient => Failure::Transient {
            retry_after: e.retry_after().map(|r| {
                let d = r.delay_from(engine.clock().now());
                SignedDuration::try_from(d).unwrap_or(SignedDuration::from_secs(60))
            }),
            reason,
        },
        Fault::Credential => Failure::Credential(reason),
        Fault::Configuration => Failure::Configuration(reason),
        Fault::Refusal => Failure::Refused(reason),
    }
}

pub(crate) async fn obtain(
    engine: &Engine,
    a: &AccountRuntime,
    kind: StrategyKind,
    deadline: Timestamp,
) -> Result<Obtained, Failure> {
    match kind {
        StrategyKind::Totp => totp(engine, a).await,
        StrategyKind::TokenRequest => token_request(engine, a, deadline).await,
        StrategyKind::Oauth => oauth(engine, a, deadline).await,
        StrategyKind::RefreshToken => refresh_token(engine, a).await,
        StrategyKind::Static => Err(Failure::NotApplicable(
            "a static token is monitored, not renewed".into(),
        )),
    }
}

async fn totp(engine: &Engine, a: &AccountRuntime) -> Result<Obtained, Failure> {
    let s = a.settings();
    let Some(t) = &s.totp else {
        return Err(Failure::NotApplicable(
            "no [account.totp] mobile/pin/secret configured".into(),
        ));
    };
    let login = TotpLogin {
        mobile: t.mobile.clone(),
        pin: t.pin.clone(),
        totp_secret: t.secret.clone(),
        client_id: s.client_id.clone(),
        client_secret: s.client_secret.clone(),
        redirect_uri: s.redirect_uri.clone(),
    };
    let clock = engine.clock().clone();
    match engine
        .upstox()
        .totp_login(&login, move || clock.now())
        .await
    {
        // Straight from Upstox's token endpoint: no need for an extra profile call.
        Ok(grant) => Ok(Obtained::Token {
            token: grant.access_token,
            validate: false,
        }),
        Err(e) => Err(classify(engine, e)),
    }
}

async fn token_request(
    engine: &Engine,
    a: &AccountRuntime,
    deadline: Timestamp,
) -> Result<Obtained, Failure> {
    let s = a.settings();
    if s.client_id.is_empty() || s.client_secret.is_empty() {
        return Err(Failure::NotApplicable(
            "client_id and client_secret are needed".into(),
        ));
    }
    let before = a_current_fp(engine, &s.id);
    let ack = engine
        .upstox()
        .request_access_token(&s.client_id, &s.client_secret)
        .await
        .map_err(|e| classify(engine, e))?;
    let now = engine.clock().now();
    let until = deadline
        .min(now + engine.settings().approval_wait)
        .min(ack.authorization_expiry);
    engine
        .audit(
            &s.id,
            crate::engine::Actor::Schedule,
            "token_request_sent",
            "pending",
            &format!(
                "approval window until {}",
                upkeep_core::expiry::format_ist(ack.authorization_expiry)
            ),
        )
        .await;
    let remind = |n: u32| {
        let mut alert = Alert::new(
            AlertKind::ManualActionNeeded,
            s.id.clone(),
            reminder_title(
                format!(
                    "account {}: approve the Upstox access-token request before {}",
                    s.id,
                    crate::engine::when(until, engine.clock().now())
                ),
                n,
            ),
            format!(
                "upkeep asked Upstox for a new access token for account {}. Approve it in the Upstox app (or on WhatsApp) before {}.",
                s.id,
                upkeep_core::expiry::format_ist(until)
            ),
            engine.clock().now(),
        );
        if let Some(link) = engine.login_link(&s.id) {
            alert = alert.with_link(link);
        }
        alert
    };
    wait_for_delivery(engine, &s.id, before, until, remind).await
}

async fn oauth(
    engine: &Engine,
    a: &AccountRuntime,
    deadline: Timestamp,
) -> Result<Obtained, Failure> {
    let s = a.settings();
    if s.client_id.is_empty() || s.redirect_uri.is_empty() {
        return Err(Failure::NotApplicable(
            "client_id and redirect_uri are needed".into(),
        ));
    }
    let before = a_current_fp(engine, &s.id);
    let remind = |n: u32| {
        let link = engine.login_link(&s.id).unwrap_or_default();
        Alert::new(
            AlertKind::ManualActionNeeded,
            s.id.clone(),
            reminder_title(
                format!(
                    "account {}: log in with Upstox before {}",
                    s.id,
                    crate::engine::when(deadline, engine.clock().now())
                ),
                n,
            ),
            format!(
                "Account {} needs a human login before {}. Open the link on your phone or computer.",
                s.id,
                upkeep_core::expiry::format_ist(deadline)
            ),
            engine.clock().now(),
        )
        .with_link(link)
    };
    wait_for_delivery(engine, &s.id, before, deadline, remind).await
}

async fn refresh_token(engine: &Engine, a: &AccountRuntime) -> Result<Obtained, Failure> {
    let s = a.settings();
    let Some(r) = &s.refresh else {
        return Err(Failure::NotApplicable(
            "no [account.refresh_token] configured".into(),
        ));
    };
    let url = url::Url::parse(&r.token_url)
        .map_err(|_| Failure::Configuration("refresh_token.token_url is not a URL".into()))?;
    let stored = engine
        .store()
        .get_secret(&s.id, "refresh_token")
        .await
        .or_else(|e| {
            // The rotated token waiting to be saved is the one to use anyway.
            if a.pending_refresh().is_some() {
                Ok(None)
            } else {
                Err(Failure::Transient {
                    reason: format!("store: {e}"),
                    retry_after: None,
                })
            }
        })?;
    let configured = r.refresh_token.as_ref();
    let pending = a.pending_refresh();
    let Some(refresh) = pending.as_ref().or(stored.as_ref()).or(configured) else {
        return Err(Failure::NotApplicable(
            "no refresh token is known yet".into(),
        ));
    };
    let client = engine.upstox();
    let mut result = client
        .oauth2_refresh(&url, &s.client_id, &s.client_secret, refresh)
        .await;
    // The stored (rotated) refresh token is refused: the chain is broken. If the
    // configured one differs (the user pasted a new one to fix it), start over from it;
    // otherwise the dead stored token would shadow the configuration for good.
    if let Err(e) = &result
        && stored.is_some()
        && e.code()
            .is_some_and(|c| c.eq_ignore_ascii_case("invalid_grant"))
        && let Some(fresh) = configured.filter(|c| c.expose() != refresh.expose())
    {
        result = client
            .oauth2_refresh(&url, &s.client_id, &s.client_secret, fresh)
            .await;
    }
    let grant = result.map_err(|e| classify(engine, e))?;
    if let Some(rotated) = &grant.refresh_token {
        // The provider has rotated it: the old one is dead. Keep the new one in memory
        // whatever the store says, and save it until the store takes it.
        a.set_pending_refresh(rotated.clone());
        engine.save_pending_refresh(a).await;
    }
    Ok(Obtained::Token {
        token: grant.access_token,
        validate: false,
    })
}

/// A reminder's title: the request itself, then `(reminder N)` from the second on (a
/// different title each time, so the alerter's de-duplication lets it through).
fn reminder_title(what: String, n: u32) -> String {
    if n <= 1 {
        what
    } else {
        format!("{what} (reminder {n})")
    }
}

fn a_current_fp(engine: &Engine, id: &str) -> Option<String> {
    engine.current(id).map(|c| c.fingerprint.clone())
}

/// Waits until a new valid token is current (delivered by the webhook or the OAuth
/// callback), reminding the human every 15 minutes of clock time.
async fn wait_for_delivery(
    engine: &Engine,
    id: &str,
    before: Option<String>,
    until: Timestamp,
    remind: impl Fn(u32) -> Alert,
) -> Result<Obtained, Failure> {
    let Some(mut rx) = engine.subscribe(id) else {
        return Err(Failure::NotApplicable("unknown account".into()));
    };
    let every = SignedDuration::from_mins(15);
    let mut reminders = 0u32;
    let mut next_reminder = engine.clock().now();
    let shutdown = engine.shutdown_token();
    loop {
        let now = engine.clock().now();
        if let Some(c) = rx.borrow_and_update().clone()
            && Some(&c.fingerprint) != before.as_ref()
            && c.is_valid_at(now)
        {
            return Ok(Obtained::Delivered(c));
        }
        if now >= until {
            return Err(Failure::TimedOut(format!(
                "no token arrived before {}",
                upkeep_core::expiry::format_ist(until)
            )));
        }
        if now >= next_reminder {
            reminders += 1;
            engine.alert(remind(reminders)).await;
            next_reminder = now + every;
        }
        let wake = until.min(next_reminder);
        let chunk = std::time::Duration::try_from(wake.duration_since(now))
            .unwrap_or_default()
            .min(engine.settings().poll)
            .max(std::time::Duration::from_millis(1));
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Failure::Cancelled),
            // `upkeep renew`: the forced renewal replaces this wait.
            _ = engine.interrupted(id) => return Err(Failure::Cancelled),
            _ = rx.changed() => {}
            _ = tokio::time::sleep(chunk) => {}
        }
    }
}
