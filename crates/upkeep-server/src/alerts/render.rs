//! Pure rendering of an [`Alert`] into the bodies each channel expects. No I/O.

use serde_json::{Value, json};

use super::{Alert, AlertKind};

/// Longest message text put into a chat body. Slack sections take 3000 characters and
/// Telegram messages 4096; the rest of the body (title, link, context) fits in the margin.
const CHAT_MESSAGE_MAX_CHARS: usize = 2500;

/// India Standard Time, UTC+05:30 (no daylight saving), for the human-readable time.
const IST_OFFSET_SECONDS: i32 = 5 * 3600 + 30 * 60;

/// The generic JSON body: one flat object a script can read without knowing Slack or Telegram.
pub(crate) fn generic(alert: &Alert) -> Value {
    json!({
        "kind": alert.kind,
        "account": alert.account,
        "title": alert.title,
        "message": alert.message,
        "link": alert.link,
        "at": alert.at.to_string(),
        "source": "upkeep",
    })
}

/// A Slack incoming-webhook body: fallback `text` plus Block Kit blocks (a section with
/// the title and message, a "Log in" button when there is a link, and a context line).
pub(crate) fn slack(alert: &Alert) -> Value {
    let headline = format!("{} {}", alert.kind.emoji(), slack_escape(&headline(alert)));
    let message = slack_escape(&truncate_chars(&alert.message, CHAT_MESSAGE_MAX_CHARS));
    let mut text = format!("{headline}\n{message}");
    let mut section = format!("*{headline}*\n{message}");
    if let Some(link) = &alert.link {
        let link_md = format!("<{}|Log in>", slack_escape(link));
        text.push('\n');
        text.push_str(&link_md);
        section.push('\n');
        section.push_str(&link_md);
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": section },
    })];
    if let Some(link) = &alert.link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Log in" },
                "url": link,
                "style": "primary",
            }],
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": format!(
                "upkeep · {} · account `{}` · {}",
                alert.kind.as_str(),
                slack_escape(&alert.account),
                alert.at
            ),
        }],
    }));
    json!({ "text": text, "blocks": blocks })
}

/// A Telegram Bot API `sendMessage` body with HTML formatting.
pub(crate) fn telegram(alert: &Alert, chat_id: &str) -> Value {
    let mut text = format!(
        "{} <b>{}</b>\nAccount: <code>{}</code>\n{}",
        alert.kind.emoji(),
        html_escape(&alert.title),
        html_escape(&alert.account),
        html_escape(&truncate_chars(&alert.message, CHAT_MESSAGE_MAX_CHARS)),
    );
    if let Some(link) = &alert.link {
        text.push_str(&format!("\n<a href=\"{}\">Log in</a>", html_escape(link)));
    }
    text.push_str(&format!("\n<i>{}</i>", html_escape(&human_time(alert))));
    // Telegram takes a numeric chat id or "@channelname"; send numbers as numbers.
    let chat_id = match chat_id.trim().parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(chat_id.trim()),
    };
    json!({
        "chat_id": chat_id,
        "text": text,
        "parse_mode": "HTML",
        "disable_web_page_preview": true,
    })
}

/// `[upkeep] <headline>`, on one line.
#[cfg_attr(not(feature = "smtp"), allow(dead_code))] // email only
pub(crate) fn email_subject(alert: &Alert) -> String {
    one_line(&format!("[upkeep] {}", headline(alert)))
}

/// The title, naming the account when the title does not already: `<title> (account
/// <id>)`, never a bare `(<id>)` (an account called `1` would read as a counter).
/// Alerts about upkeep itself (account `*`) are the title alone.
fn headline(alert: &Alert) -> String {
    let account = &alert.account;
    if account == "*" || alert.title.contains(&format!("account {account}")) {
        alert.title.clone()
    } else {
        format!("{} (account {account})", alert.title)
    }
}

/// The plain-text email body.
#[cfg_attr(not(feature = "smtp"), allow(dead_code))] // email only
pub(crate) fn email_text(alert: &Alert) -> String {
    let mut body = format!(
        "{}\n\nAccount: {}\nKind:    {}\nAt:      {}\n\n{}\n",
        alert.title,
        alert.account,
        alert.kind.as_str(),
        human_time(alert),
        alert.message,
    );
    if let Some(link) = &alert.link {
        body.push_str(&format!("\nLog in here:\n{link}\n"));
    }
    body.push_str("\n-- \nSent by upkeep.\n");
    body
}

/// `2025-01-02T03:04:05Z (08:34 IST)`.
fn human_time(alert: &Alert) -> String {
    let ist = jiff::tz::Offset::from_seconds(IST_OFFSET_SECONDS)
        .map(|off| alert.at.to_zoned(jiff::tz::TimeZone::fixed(off)));
    match ist {
        Ok(z) => format!("{} ({} IST)", alert.at, z.strftime("%H:%M")),
        Err(_) => alert.at.to_string(),
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg_attr(not(feature = "smtp"), allow(dead_code))] // email only
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Slack's mrkdwn needs exactly these three escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Telegram's HTML mode: escape text and attribute values.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl AlertKind {
    fn emoji(self) -> &'static str {
        match self {
            AlertKind::RenewalFailed => "⚠️",
            AlertKind::RenewalFatal => "🛑",
            AlertKind::DeadlineAtRisk => "⏰",
            AlertKind::NoWorkingToken => "🚫",
            AlertKind::ManualActionNeeded => "🔑",
            AlertKind::ExpiringNoRenewal => "⌛",
            AlertKind::Recovered => "✅",
            AlertKind::AlertsSuppressed => "🔇",
            AlertKind::WebhookIntrusion => "🚨",
            AlertKind::StorageFailing => "💾",
            AlertKind::InternalError => "🐞",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert::new(
            AlertKind::ManualActionNeeded,
            "acct<1>",
            "Login needed & soon",
            "Tap the <link>",
            "2025-01-02T03:04:05Z".parse().unwrap(),
        )
        .with_link("https://example.test/login?a=1&b=2")
    }

    #[test]
    fn telegram_html_escapes_user_text_so_markup_cannot_break() {
        let body = telegram(&alert(), "-100123");
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("Login needed &amp; soon"), "{text}");
        assert!(text.contains("Tap the &lt;link&gt;"), "{text}");
        assert!(text.contains("href=\"https://example.test/login?a=1&amp;b=2\""));
        assert_eq!(body["chat_id"], json!(-100123));
        assert!(text.contains("08:34 IST"), "{text}");
    }

    #[test]
    fn slack_escapes_angle_brackets_in_user_text() {
        let body = slack(&alert());
        let section = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.contains("acct&lt;1&gt;"), "{section}");
        assert!(section.contains("<https://example.test/login?a=1&amp;b=2|Log in>"));
    }

    #[test]
    fn email_subject_is_one_line_even_if_title_has_newlines() {
        let mut a = alert();
        a.title = "two\r\nlines".into();
        assert_eq!(email_subject(&a), "[upkeep] two  lines (account acct<1>)");
    }

    #[test]
    fn headlines_name_the_account_once_and_never_as_a_bare_parenthesis() {
        let mut a = alert();
        a.account = "1".into();
        a.title = "Renewal deadline at risk".into();
        assert_eq!(
            email_subject(&a),
            "[upkeep] Renewal deadline at risk (account 1)"
        );
        a.title = "account 1 has no working Upstox token (renewal failing since 08:38 IST)".into();
        assert_eq!(
            email_subject(&a),
            "[upkeep] account 1 has no working Upstox token (renewal failing since 08:38 IST)"
        );
        let text = slack(&a)["text"].as_str().unwrap().to_owned();
        assert!(text.starts_with("🔑 account 1 has no working"), "{text}");
        a.account = "*".into();
        a.title = "3 alerts suppressed".into();
        assert_eq!(email_subject(&a), "[upkeep] 3 alerts suppressed");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(CHAT_MESSAGE_MAX_CHARS + 10);
        let t = truncate_chars(&s, CHAT_MESSAGE_MAX_CHARS);
        assert_eq!(t.chars().count(), CHAT_MESSAGE_MAX_CHARS + 1);
    }
}
