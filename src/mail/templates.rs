//! The mails Roster sends, each with a plain-text and an HTML part. They hold the product
//! name, the one-time link and its lifetime, and no other secret.

use std::time::Duration;

use super::Mail;

const PRODUCT: &str = "Roster";

pub enum Template<'a> {
    PasswordReset {
        link: &'a str,
        valid_for: Duration,
    },
    VerifyEmail {
        link: &'a str,
        valid_for: Duration,
    },
    /// To the old address after an email change.
    EmailChanged,
    Invitation {
        link: &'a str,
        valid_for: Duration,
    },
}

impl Template<'_> {
    pub fn render(&self, to: &str) -> Mail {
        let (subject, lines, action) = match self {
            Self::PasswordReset { link, valid_for } => (
                format!("Reset your {PRODUCT} password"),
                vec![
                    format!("Someone asked to reset the password of your {PRODUCT} account."),
                    format!(
                        "The link below sets a new one. It works once, for {}.",
                        human(*valid_for)
                    ),
                    "If you did not ask for this, ignore this mail: your password stays as it is."
                        .to_string(),
                ],
                Some(("Choose a new password", *link)),
            ),
            Self::VerifyEmail { link, valid_for } => (
                format!("Confirm your email address for {PRODUCT}"),
                vec![
                    format!("Please confirm that this address belongs to your {PRODUCT} account."),
                    format!("The link works once, for {}.", human(*valid_for)),
                    "If you did not sign up or change your address, ignore this mail.".to_string(),
                ],
                Some(("Confirm my address", *link)),
            ),
            Self::EmailChanged => (
                format!("Your {PRODUCT} email address was changed"),
                vec![
                    format!(
                        "The email address of your {PRODUCT} account was changed, so mail for \
                         the account no longer comes here."
                    ),
                    "If you did not make this change, contact your administrator at once."
                        .to_string(),
                ],
                None,
            ),
            Self::Invitation { link, valid_for } => (
                format!("You are invited to {PRODUCT}"),
                vec![
                    format!("An administrator created a {PRODUCT} account for this address."),
                    format!(
                        "Choose your password with the link below. It works once, for {}.",
                        human(*valid_for)
                    ),
                ],
                Some(("Accept the invitation", *link)),
            ),
        };
        let mut text = lines.join("\n\n");
        let mut html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{}</h2>",
            html_escape(&subject)
        );
        for line in &lines {
            html.push_str(&format!("<p>{}</p>", html_escape(line)));
        }
        if let Some((label, link)) = action {
            text.push_str(&format!("\n\n{label}: {link}\n"));
            html.push_str(&format!(
                "<p><a href=\"{0}\">{1}</a></p><p style=\"color:#666\">Or paste this link into your browser: {0}</p>",
                html_escape(link),
                html_escape(label)
            ));
        }
        html.push_str(&format!(
            "<p style=\"color:#666\">— {PRODUCT}</p></body></html>"
        ));
        text.push_str(&format!("\n— {PRODUCT}\n"));
        Mail {
            to: to.to_string(),
            subject,
            text,
            html,
        }
    }
}

/// "15 minutes", "24 hours", "7 days".
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        s if s % 86_400 == 0 && s >= 86_400 * 2 => (s / 86_400, "day"),
        s if s % 3_600 == 0 && s >= 3_600 => (s / 3_600, "hour"),
        s if s % 60 == 0 && s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Text made safe to place in HTML content or a quoted attribute.
pub fn html_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_naturally() {
        assert_eq!(human(Duration::from_secs(900)), "15 minutes");
        assert_eq!(human(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(human(Duration::from_secs(604_800)), "7 days");
        assert_eq!(human(Duration::from_secs(1)), "1 second");
    }

    #[test]
    fn a_reset_mail_has_the_link_and_its_lifetime_in_both_parts() {
        let link = "http://x/account/reset-password?token=abc&x=<1>";
        let mail = Template::PasswordReset {
            link,
            valid_for: Duration::from_secs(900),
        }
        .render("a@b.c");
        assert!(mail.text.contains(link));
        assert!(mail.text.contains("15 minutes"));
        assert!(mail.html.contains("token=abc&amp;x=&lt;1&gt;"));
        assert!(mail.html.contains("15 minutes"));
        assert!(mail.subject.contains("Roster"));
    }
}
