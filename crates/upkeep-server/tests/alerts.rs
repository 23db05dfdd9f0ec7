//! Alerts end to end: a webhook receiver (axum) and an SMTP sink (hand-written, enough
//! SMTP for lettre), both on 127.0.0.1:0 and started by each test.

// Test code may unwrap (clippy's allow-unwrap-in-tests does not reach helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use upkeep_core::Clock;
use upkeep_core::clock::ManualClock;
use upkeep_server::alerts::{
    Alert, AlertError, AlertKind, AlertOutcome, AlertPolicy, Alerter, EmailTarget, WebhookFormat,
    WebhookTarget,
};

const LOGIN_LINK: &str = "https://api.upstox.example/v2/login/authorization/dialog?client_id=abc&redirect_uri=https%3A%2F%2Fupkeep.example%2Fcallback&state=xyz";

// ---------------------------------------------------------------- webhook receiver

#[derive(Clone, Default)]
struct Hook {
    /// (path, body) of every request, in order.
    received: Arc<Mutex<Vec<(String, Value)>>>,
    /// Status codes to answer with, one per request, before answering 200.
    script: Arc<Mutex<VecDeque<StatusCode>>>,
}

struct Receiver {
    addr: SocketAddr,
    hook: Hook,
}

impl Receiver {
    async fn start() -> Self {
        let hook = Hook::default();
        let app = axum::Router::new()
            .route("/{*path}", post(receive))
            .with_state(hook.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, hook }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer_next_with(&self, statuses: &[StatusCode]) {
        self.hook.script.lock().unwrap().extend(statuses);
    }

    fn bodies(&self) -> Vec<Value> {
        self.hook
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn paths(&self) -> Vec<String> {
        self.hook
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

async fn receive(
    State(hook): State<Hook>,
    Path(path): Path<String>,
    body: axum::Json<Value>,
) -> StatusCode {
    hook.received
        .lock()
        .unwrap()
        .push((format!("/{path}"), body.0));
    hook.script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(StatusCode::OK)
}

// ---------------------------------------------------------------- SMTP sink

#[derive(Debug, Clone, Default)]
struct Mail {
    from: String,
    rcpt: Vec<String>,
    data: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        // Unfold continuation lines first.
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The body with quoted-printable undone if the message uses it.
    fn text_body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("quoted-printable"));
        if !qp {
            return body.to_owned();
        }
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}

struct SmtpSink {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(smtp_session(socket, store.clone()));
            }
        });
        Self { addr, mails }
    }

    fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn smtp_session(socket: tokio::net::TcpStream, store: Arc<Mutex<Vec<Mail>>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut mail = Mail::default();
    write.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = line[10..].trim().to_owned();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            mail.rcpt.push(line[8..].trim().to_owned());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await.unwrap();
            let mut data = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "." {
                    break;
                }
                let l = l.strip_prefix('.').unwrap_or(&l);
                data.push_str(l);
                data.push_str("\r\n");
            }
            mail.data = data;
            store.lock().unwrap().push(std::mem::take(&mut mail));
            b"250 queued\r\n"
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await.unwrap();
    }
}

// ---------------------------------------------------------------- helpers

fn t0() -> Timestamp {
    "2025-03-10T21:00:00Z".parse().unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(t0()))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn policy() -> AlertPolicy {
    AlertPolicy {
        dedup_window: SignedDuration::from_mins(30),
        max_per_hour: 20,
        channel_timeout: Duration::from_secs(10),
        retry_delay: Duration::from_millis(10),
        recent_capacity: 50,
    }
}

fn hook(url: String, format: WebhookFormat) -> WebhookTarget {
    WebhookTarget {
        url,
        format,
        chat_id: None,
    }
}

fn email_to(sink: &SmtpSink) -> EmailTarget {
    EmailTarget {
        smtp_url: sink.url(),
        username: None,
        password: None,
        from: "upkeep <upkeep@example.test>".into(),
        to: vec!["trader@example.test".into()],
        starttls: false,
    }
}

fn alerter(
    webhooks: Vec<WebhookTarget>,
    email: Option<EmailTarget>,
    policy: AlertPolicy,
    clock: &Arc<ManualClock>,
) -> Alerter {
    let clock: Arc<dyn Clock> = clock.clone();
    Alerter::new(webhooks, email, policy, clock, http()).unwrap()
}

fn manual_action(clock: &ManualClock) -> Alert {
    Alert::new(
        AlertKind::ManualActionNeeded,
        "main",
        "Login needed",
        "Automatic renewal is not set up for this account. Log in before 03:30 IST.",
        clock.now(),
    )
    .with_link(LOGIN_LINK)
}

fn failed(clock: &ManualClock, account: &str) -> Alert {
    Alert::new(
        AlertKind::RenewalFailed,
        account,
        "Renewal failed",
        "The TOTP login was rejected; retrying in 5 minutes.",
        clock.now(),
    )
}

fn recovered(clock: &ManualClock, account: &str) -> Alert {
    Alert::new(
        AlertKind::Recovered,
        account,
        "Token renewed",
        "A fresh token is in place.",
        clock.now(),
    )
}

fn is_sent(outcome: &AlertOutcome) -> bool {
    matches!(outcome, AlertOutcome::Sent { .. })
}

// ---------------------------------------------------------------- body shapes

#[tokio::test]
async fn generic_webhook_receives_flat_json_with_link_and_rfc3339_time() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );

    let outcome = a.send(manual_action(&clock)).await;

    assert!(is_sent(&outcome), "{outcome:?}");
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert_eq!(b["kind"], "manual_action_needed");
    assert_eq!(b["account"], "main");
    assert_eq!(b["title"], "Login needed");
    assert!(b["message"].as_str().unwrap().contains("03:30 IST"));
    assert_eq!(b["link"], LOGIN_LINK);
    assert_eq!(b["source"], "upkeep");
    let at: Timestamp = b["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at, t0());
}

#[tokio::test]
async fn generic_webhook_sends_null_link_when_there_is_none() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );

    a.send(failed(&clock, "main")).await;

    let b = &rx.bodies()[0];
    assert_eq!(b["kind"], "renewal_failed");
    assert!(b["link"].is_null(), "{b}");
}

#[tokio::test]
async fn slack_webhook_receives_text_and_blocks_with_a_login_button() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(
            rx.url("/services/T000/B000/XXXX"),
            WebhookFormat::Slack,
        )],
        None,
        policy(),
        &clock,
    );

    let outcome = a.send(manual_action(&clock)).await;

    assert!(is_sent(&outcome), "{outcome:?}");
    let b = &rx.bodies()[0];
    let text = b["text"].as_str().unwrap();
    assert!(text.contains("Login needed"), "{text}");
    assert!(text.contains("Login needed (account main)"), "{text}");
    let blocks = b["blocks"].as_array().unwrap();
    let section = blocks.iter().find(|b| b["type"] == "section").unwrap();
    assert_eq!(section["text"]["type"], "mrkdwn");
    let section_text = section["text"]["text"].as_str().unwrap();
    assert!(section_text.contains("*"), "title is bold: {section_text}");
    assert!(section_text.contains("Log in before 03:30 IST"));
    // Slack mrkdwn escapes & as &amp; inside <url|label>.
    assert!(section_text.contains(&format!("<{}|Log in>", LOGIN_LINK.replace('&', "&amp;"))));
    let button = blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap())
        .find(|e| e["type"] == "button")
        .expect("a Log in button");
    assert_eq!(button["url"], LOGIN_LINK);
    assert_eq!(button["text"]["text"], "Log in");
}

#[tokio::test]
async fn telegram_webhook_receives_send_message_body_for_the_configured_chat() {
    let rx = Receiver::start().await;
    let clock = clock();
    let mut target = hook(
        rx.url("/bot123456:AAH-secret-bot-token/sendMessage"),
        WebhookFormat::Telegram,
    );
    target.chat_id = Some("-1001234567890".into());
    let a = alerter(vec![target], None, policy(), &clock);

    let outcome = a.send(manual_action(&clock)).await;

    assert!(is_sent(&outcome), "{outcome:?}");
    assert_eq!(
        rx.paths(),
        vec!["/bot123456:AAH-secret-bot-token/sendMessage".to_owned()]
    );
    let b = &rx.bodies()[0];
    assert_eq!(b["chat_id"], serde_json::json!(-1001234567890_i64));
    assert_eq!(b["parse_mode"], "HTML");
    assert_eq!(b["disable_web_page_preview"], true);
    let text = b["text"].as_str().unwrap();
    assert!(text.contains("<b>Login needed</b>"), "{text}");
    assert!(
        text.contains(&format!(
            "<a href=\"{}\">Log in</a>",
            LOGIN_LINK.replace('&', "&amp;")
        )),
        "{text}"
    );
    assert!(text.contains("02:30 IST"), "time shown in IST: {text}");
}

#[tokio::test]
async fn telegram_target_without_chat_id_is_rejected_at_startup() {
    let clock: Arc<dyn Clock> = clock();
    let err = Alerter::new(
        vec![hook(
            "https://api.telegram.org/bot1:tok/sendMessage".into(),
            WebhookFormat::Telegram,
        )],
        None,
        policy(),
        clock,
        http(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AlertError::TelegramChatIdMissing { index: 0 }),
        "{err}"
    );
    assert!(!err.to_string().contains("tok"), "{err}");
}

// ---------------------------------------------------------------- email

#[tokio::test]
async fn email_arrives_with_subject_and_login_link() {
    let sink = SmtpSink::start().await;
    let clock = clock();
    let mut target = email_to(&sink);
    target.to.push("ops@example.test".into());
    let a = alerter(vec![], Some(target), policy(), &clock);

    let outcome = a.send(manual_action(&clock)).await;

    assert!(is_sent(&outcome), "{outcome:?}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m.from.contains("upkeep@example.test"), "{}", m.from);
    assert_eq!(m.rcpt.len(), 2, "{:?}", m.rcpt);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[upkeep] Login needed (account main)")
    );
    assert!(
        m.header("Content-Type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let body = m.text_body();
    assert!(body.contains(LOGIN_LINK), "{body}");
    assert!(body.contains("Log in before 03:30 IST"), "{body}");
}

#[tokio::test]
async fn plain_smtp_to_a_remote_host_is_refused_but_starttls_is_accepted() {
    let clock: Arc<dyn Clock> = clock();
    let mut target = EmailTarget {
        smtp_url: "smtp://user:hunter2@mail.example.com:587".into(),
        username: None,
        password: None,
        from: "upkeep@example.com".into(),
        to: vec!["me@example.com".into()],
        starttls: false,
    };
    let err = Alerter::new(
        vec![],
        Some(target.clone()),
        policy(),
        clock.clone(),
        http(),
    )
    .unwrap_err();
    assert!(matches!(err, AlertError::InsecureSmtp { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    target.starttls = true;
    Alerter::new(vec![], Some(target), policy(), clock, http()).unwrap();
}

#[tokio::test]
async fn plain_http_webhook_to_a_remote_host_is_refused() {
    let clock: Arc<dyn Clock> = clock();
    let err = Alerter::new(
        vec![hook(
            "http://hooks.example.com/secret-path".into(),
            WebhookFormat::Generic,
        )],
        None,
        policy(),
        clock,
        http(),
    )
    .unwrap_err();
    assert!(matches!(err, AlertError::InsecureWebhook { .. }), "{err}");
    assert!(!err.to_string().contains("secret-path"), "{err}");
}

// ---------------------------------------------------------------- dedup and rate limit

#[tokio::test]
async fn duplicate_within_the_window_is_not_resent_but_is_after_it() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );

    assert!(is_sent(&a.send(manual_action(&clock)).await));
    clock.advance(SignedDuration::from_mins(29));
    assert_eq!(
        a.send(manual_action(&clock)).await,
        AlertOutcome::Deduplicated
    );
    assert_eq!(rx.bodies().len(), 1);

    clock.advance(SignedDuration::from_mins(2));
    assert!(is_sent(&a.send(manual_action(&clock)).await));
    assert_eq!(rx.bodies().len(), 2);
    assert_eq!(a.stats().deduplicated, 1);
}

#[tokio::test]
async fn same_kind_for_another_account_or_title_is_not_a_duplicate() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );

    assert!(is_sent(&a.send(failed(&clock, "main")).await));
    assert!(is_sent(&a.send(failed(&clock, "second")).await));
    let mut other_title = failed(&clock, "main");
    other_title.title = "Renewal failed: credentials rejected".into();
    assert!(is_sent(&a.send(other_title).await));
    assert_eq!(rx.bodies().len(), 3);
}

#[tokio::test]
async fn rate_limit_holds_alerts_back_then_sends_one_suppressed_summary() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        AlertPolicy {
            max_per_hour: 3,
            ..policy()
        },
        &clock,
    );

    for i in 0..3 {
        assert!(is_sent(&a.send(failed(&clock, &format!("acct{i}"))).await));
    }
    for i in 3..7 {
        assert_eq!(
            a.send(failed(&clock, &format!("acct{i}"))).await,
            AlertOutcome::RateLimited
        );
    }
    assert_eq!(rx.bodies().len(), 3);
    // Still inside the hour: nothing to flush yet.
    clock.advance(SignedDuration::from_mins(30));
    assert_eq!(a.flush_suppressed().await, None);
    assert_eq!(rx.bodies().len(), 3);

    clock.advance(SignedDuration::from_mins(31));
    assert!(is_sent(&a.flush_suppressed().await.unwrap()));
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 4);
    assert_eq!(bodies[3]["kind"], "alerts_suppressed");
    assert_eq!(bodies[3]["title"], "4 alerts suppressed");
    // Only one summary per episode.
    assert_eq!(a.flush_suppressed().await, None);
    assert_eq!(a.stats().rate_limited, 4);
}

#[tokio::test]
async fn suppressed_summary_goes_out_with_the_next_alert_once_the_hour_has_room() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        AlertPolicy {
            max_per_hour: 1,
            ..policy()
        },
        &clock,
    );

    assert!(is_sent(&a.send(failed(&clock, "a")).await));
    assert_eq!(a.send(failed(&clock, "b")).await, AlertOutcome::RateLimited);
    clock.advance(SignedDuration::from_mins(61));
    assert!(is_sent(&a.send(failed(&clock, "c")).await));

    let kinds: Vec<Value> = rx.bodies().iter().map(|b| b["kind"].clone()).collect();
    assert_eq!(
        kinds,
        vec!["renewal_failed", "alerts_suppressed", "renewal_failed"]
    );
    assert_eq!(rx.bodies()[1]["title"], "1 alert suppressed");
}

#[tokio::test]
async fn suppressed_count_is_kept_when_the_summary_reaches_no_channel() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        AlertPolicy {
            max_per_hour: 1,
            ..policy()
        },
        &clock,
    );
    assert!(is_sent(&a.send(failed(&clock, "a")).await));
    assert_eq!(a.send(failed(&clock, "b")).await, AlertOutcome::RateLimited);
    clock.advance(SignedDuration::from_mins(61));
    rx.answer_next_with(&[StatusCode::BAD_REQUEST]);

    let lost = a.flush_suppressed().await.unwrap();
    assert!(matches!(lost, AlertOutcome::Failed { .. }), "{lost:?}");
    assert!(is_sent(&a.flush_suppressed().await.unwrap()));
    let last = rx.bodies().pop().unwrap();
    assert_eq!(last["title"], "1 alert suppressed");
}

// ---------------------------------------------------------------- failures

#[tokio::test]
async fn dead_webhook_does_not_stop_email_delivery() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }; // listener dropped: connections are refused
    let sink = SmtpSink::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(format!("http://{dead}/hook"), WebhookFormat::Generic)],
        Some(email_to(&sink)),
        policy(),
        &clock,
    );

    let outcome = a.send(manual_action(&clock)).await;

    match &outcome {
        AlertOutcome::Sent { delivered, failed } => {
            assert_eq!(delivered.len(), 1, "{outcome:?}");
            assert!(delivered[0].starts_with("email"), "{outcome:?}");
            assert_eq!(failed.len(), 1, "{outcome:?}");
            assert!(failed[0].starts_with("webhook"), "{outcome:?}");
        }
        other => panic!("expected Sent, got {other:?}"),
    }
    assert_eq!(sink.mails().len(), 1);
    assert_eq!(a.stats().channel_errors, 1);
    let recent = a.recent();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].failed, vec![failed_label(&outcome)]);
}

fn failed_label(outcome: &AlertOutcome) -> String {
    match outcome {
        AlertOutcome::Sent { failed, .. } | AlertOutcome::Failed { failed } => failed[0].clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn transient_webhook_failure_is_retried_once() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );
    rx.answer_next_with(&[StatusCode::SERVICE_UNAVAILABLE]);

    let outcome = a.send(failed(&clock, "main")).await;

    assert!(is_sent(&outcome), "{outcome:?}");
    assert_eq!(rx.bodies().len(), 2, "first attempt + one retry");
}

#[tokio::test]
async fn permanent_webhook_rejection_is_not_retried() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );
    rx.answer_next_with(&[StatusCode::BAD_REQUEST]);

    let outcome = a.send(failed(&clock, "main")).await;

    assert!(
        matches!(outcome, AlertOutcome::Failed { .. }),
        "{outcome:?}"
    );
    assert_eq!(rx.bodies().len(), 1);
}

#[tokio::test]
async fn alert_that_reached_no_channel_is_tried_again_not_deduplicated() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );
    rx.answer_next_with(&[StatusCode::BAD_GATEWAY, StatusCode::BAD_GATEWAY]);

    assert!(matches!(
        a.send(manual_action(&clock)).await,
        AlertOutcome::Failed { .. }
    ));
    clock.advance(SignedDuration::from_mins(1));
    assert!(is_sent(&a.send(manual_action(&clock)).await));
    assert_eq!(a.stats().failed, 1);
    assert_eq!(a.stats().sent, 1);
}

// ---------------------------------------------------------------- recovery

#[tokio::test]
async fn recovered_is_sent_only_after_a_failure_alert_and_resets_dedup() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );

    // Nothing went wrong yet: no "recovered" noise.
    assert_eq!(
        a.send(recovered(&clock, "main")).await,
        AlertOutcome::NothingToRecover
    );
    assert!(rx.bodies().is_empty());

    assert!(is_sent(&a.send(failed(&clock, "main")).await));
    assert!(is_sent(&a.send(recovered(&clock, "main")).await));
    // One recovery per problem episode.
    assert_eq!(
        a.send(recovered(&clock, "main")).await,
        AlertOutcome::NothingToRecover
    );

    // Right after recovery, the same failure is news again, not a duplicate.
    clock.advance(SignedDuration::from_mins(5));
    assert!(is_sent(&a.send(failed(&clock, "main")).await));

    let kinds: Vec<Value> = rx.bodies().iter().map(|b| b["kind"].clone()).collect();
    assert_eq!(kinds, vec!["renewal_failed", "recovered", "renewal_failed"]);
}

#[tokio::test]
async fn recovered_for_one_account_needs_a_failure_on_that_account() {
    let rx = Receiver::start().await;
    let clock = clock();
    let a = alerter(
        vec![hook(rx.url("/hook"), WebhookFormat::Generic)],
        None,
        policy(),
        &clock,
    );

    assert!(is_sent(&a.send(failed(&clock, "other")).await));
    assert_eq!(
        a.send(recovered(&clock, "main")).await,
        AlertOutcome::NothingToRecover
    );
}

// ---------------------------------------------------------------- secrets in logs

mod capture {
    //! A tracing subscriber that writes every event and span field, at every level,
    //! into a shared string.
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Capture {
        pub buf: Arc<Mutex<String>>,
        next: Arc<AtomicU64>,
    }

    struct Writer<'a>(&'a mut String);
    impl Visit for Writer<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut buf = self.buf.lock().unwrap();
            buf.push_str(span.metadata().name());
            span.record(&mut Writer(&mut buf));
            buf.push('\n');
            Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, values: &Record<'_>) {
            let mut buf = self.buf.lock().unwrap();
            values.record(&mut Writer(&mut buf));
            buf.push('\n');
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut buf = self.buf.lock().unwrap();
            let _ = write!(
                buf,
                "{} {}",
                event.metadata().level(),
                event.metadata().target()
            );
            event.record(&mut Writer(&mut buf));
            buf.push('\n');
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test]
async fn telegram_bot_url_never_appears_in_logs() {
    let capture = capture::Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());

    let token = "987654:AAE-never-log-this-token";
    let rx = Receiver::start().await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let clock = clock();
    let telegram = |url: String| WebhookTarget {
        url,
        format: WebhookFormat::Telegram,
        chat_id: Some("42".into()),
    };
    let a = alerter(
        vec![
            // Delivered fine.
            telegram(rx.url(&format!("/bot{token}/sendMessage"))),
            // Connection refused: reqwest's error would name the URL.
            telegram(format!("http://{dead}/bot{token}/sendMessage")),
        ],
        None,
        policy(),
        &clock,
    );
    // Rejected by the receiver (twice: first attempt and the retry).
    rx.answer_next_with(&[
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::INTERNAL_SERVER_ERROR,
    ]);
    let first = a.send(manual_action(&clock)).await;
    let second = a.send(failed(&clock, "main")).await;
    // Also through Debug, as someone might log the config.
    tracing::info!(alerter = ?a, "configured");

    let logs = capture.buf.lock().unwrap().clone();
    assert!(matches!(first, AlertOutcome::Failed { .. }), "{first:?}");
    assert!(is_sent(&second), "{second:?}");
    assert!(
        logs.contains("alert delivery failed"),
        "failures were logged: {logs}"
    );
    assert!(logs.contains("127.0.0.1"), "the host is logged: {logs}");
    assert!(!logs.contains(token), "bot token leaked into logs:\n{logs}");
    assert!(
        !logs.contains("never-log-this"),
        "bot token leaked into logs:\n{logs}"
    );
}
