//! Outgoing mail: what a mail is, how it is written (`templates`), and how it leaves
//! (`Mailer`: to the log, or over SMTP with lettre). Sending is the outbox sender's job;
//! requests only write mails into the outbox.

mod templates;

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use serde::{Deserialize, Serialize};

pub use templates::{Template, html_escape};

use crate::config::{MailSettings, MailTransport};

/// A mail as the outbox stores it: both parts already written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// How long an SMTP exchange may take before it counts as failed (and is retried).
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

pub enum Mailer {
    /// MAIL_TRANSPORT=log: each mail, link included, at INFO (local runs need no server).
    Log,
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
    },
}

impl Mailer {
    pub fn from_settings(settings: &MailSettings) -> Result<Self, String> {
        match &settings.transport {
            MailTransport::Log => Ok(Self::Log),
            MailTransport::Smtp(url) => {
                let transport =
                    AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp_url(url.expose()))
                        .map_err(|e| format!("SMTP_URL: {e}"))?
                        .timeout(Some(SMTP_TIMEOUT))
                        .build();
                Ok(Self::Smtp {
                    transport: Box::new(transport),
                    from: parse_from(&settings.from)?,
                })
            }
        }
    }

    /// Delivers one mail; an error is worth retrying later.
    pub async fn send(&self, mail: &Mail) -> Result<(), String> {
        match self {
            Self::Log => {
                tracing::info!(
                    target: "roster::mail",
                    to = %mail.to,
                    subject = %mail.subject,
                    "mail (MAIL_TRANSPORT=log; not sent):\n{}",
                    mail.text
                );
                Ok(())
            }
            Self::Smtp { transport, from } => {
                let to: Mailbox = mail
                    .to
                    .parse()
                    .map_err(|e| format!("bad recipient {}: {e}", mail.to))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .multipart(MultiPart::alternative_plain_html(
                        mail.text.clone(),
                        mail.html.clone(),
                    ))
                    .map_err(|e| format!("cannot build the mail: {e}"))?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// `smtp://` means STARTTLS whenever the server offers it (`?tls=required` insists on it,
/// `?tls=none` never tries); `smtps://` is TLS from the first byte.
fn smtp_url(raw: &str) -> String {
    if !raw.starts_with("smtp://") {
        return raw.to_string();
    }
    if raw.contains("tls=none") {
        return raw
            .replace("?tls=none&", "?")
            .replace("?tls=none", "")
            .replace("&tls=none", "");
    }
    if raw.contains("tls=") {
        return raw.to_string();
    }
    let separator = if raw.contains('?') { '&' } else { '?' };
    format!("{raw}{separator}tls=opportunistic")
}

pub fn parse_from(raw: &str) -> Result<Mailbox, String> {
    raw.parse()
        .map_err(|e| format!("MAIL_FROM: not a mailbox like `Roster <no-reply@example.com>` ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_smtp_urls_use_starttls_when_offered() {
        assert_eq!(
            smtp_url("smtp://u:p@mail:587"),
            "smtp://u:p@mail:587?tls=opportunistic"
        );
        assert_eq!(
            smtp_url("smtp://mail:25?tls=required"),
            "smtp://mail:25?tls=required"
        );
        assert_eq!(smtp_url("smtp://mail:25?tls=none"), "smtp://mail:25");
        assert_eq!(smtp_url("smtps://u:p@mail"), "smtps://u:p@mail");
    }

    #[test]
    fn the_default_sender_is_a_mailbox() {
        assert!(parse_from("Roster <no-reply@localhost>").is_ok());
        assert!(parse_from("not a mailbox").is_err());
    }
}
