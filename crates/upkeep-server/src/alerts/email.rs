//! The SMTP channel: turning an [`EmailTarget`] into a lettre transport (with the
//! "plain SMTP only to loopback" rule) and sending one alert.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Alert, AlertError, ChannelError, EmailTarget, render};

pub(crate) struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    pub(crate) label: String,
}

impl EmailChannel {
    pub(crate) fn build(target: &EmailTarget, timeout: Duration) -> Result<Self, AlertError> {
        // Never echo the URL in an error: it may carry a password.
        let url = url::Url::parse(&target.smtp_url).map_err(|_| AlertError::EmailUrl {
            reason: "it is not a valid URL (expected smtp://host:port or smtps://host:port)",
        })?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => {
                return Err(AlertError::EmailUrl {
                    reason: "it has no host",
                });
            }
        };
        let loopback = super::is_loopback(&url);
        let tls_err = |_| AlertError::EmailTls { host: host.clone() };
        let builder = match url.scheme() {
            "smtps" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(tls_err)?
                .port(url.port().unwrap_or(465)),
            "smtp" if target.starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                    .map_err(tls_err)?
                    .port(url.port().unwrap_or(587))
            }
            "smtp" if loopback => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                .port(url.port().unwrap_or(25)),
            "smtp" => return Err(AlertError::InsecureSmtp { host }),
            _ => {
                return Err(AlertError::EmailUrl {
                    reason: "its scheme must be smtp:// or smtps://",
                });
            }
        };
        let builder = builder.timeout(Some(timeout));

        let url_user = percent_decode(url.username());
        let url_pass = url.password().map(percent_decode);
        let username = target
            .username
            .clone()
            .or_else(|| (!url_user.is_empty()).then_some(url_user));
        let password = target
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .or(url_pass);
        let builder = match (username, password) {
            (Some(u), Some(p)) => builder.credentials(Credentials::new(u, p)),
            (None, None) => builder,
            _ => return Err(AlertError::EmailCredentials),
        };

        let from: Mailbox = target.from.parse().map_err(|_| AlertError::EmailAddress {
            address: target.from.clone(),
        })?;
        if target.to.is_empty() {
            return Err(AlertError::NoRecipients);
        }
        let to = target
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|_| AlertError::EmailAddress { address: a.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            transport: builder.build(),
            from,
            to,
            label: format!("email ({host})"),
        })
    }

    pub(crate) async fn send(&self, alert: &Alert) -> Result<(), ChannelError> {
        let mut msg = Message::builder()
            .from(self.from.clone())
            .subject(render::email_subject(alert))
            .date(std::time::SystemTime::from(alert.at))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            msg = msg.to(to.clone());
        }
        let msg = msg
            .body(render::email_text(alert))
            .map_err(|e| ChannelError::permanent(format!("could not build the email: {e}")))?;
        self.transport.send(msg).await.map(|_| ()).map_err(|e| {
            // lettre's messages name the SMTP reply or the I/O failure, never credentials.
            let transient = !(e.is_permanent() || e.is_tls());
            ChannelError {
                message: super::error_chain(&e),
                transient,
            }
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding_handles_reserved_chars_and_stray_percent() {
        assert_eq!(percent_decode("p%40ss%2Fw%3Ard"), "p@ss/w:rd");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
