//! Email addresses: parsing untrusted input, and the one case fold.

use std::fmt;

use email_address::{EmailAddress, Options};

/// A trimmed, syntactically valid email address of at most 254 characters.
/// Its case is kept as given; uniqueness and lookups ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

pub const MAX_EMAIL_CHARS: usize = 254;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.chars().count() > MAX_EMAIL_CHARS {
            return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
        }
        let options = Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        EmailAddress::parse_with_options(value, options)
            .map_err(|_| "is not a valid email address".to_string())?;
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The one case fold of emails: uniqueness, lookups and duplicate checks compare these.
/// Full Unicode lowercase, so `Ä@example.com` and `ä@example.com` are one address.
pub fn fold_email(email: &str) -> String {
    email.to_lowercase()
}

impl Email {
    /// The folded form under which the address is unique.
    pub fn key(&self) -> String {
        fold_email(&self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_trimmed_and_case_kept() {
        assert_eq!(
            Email::parse("  Ann@Example.com ").unwrap().as_str(),
            "Ann@Example.com"
        );
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "   ",
            "plain",
            "a@",
            "@b.com",
            "a@b",
            "Ann <ann@example.com>",
            "a b@c.com",
            "a@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn length_limit_is_254_characters() {
        let local = "a".repeat(64);
        let domain = format!(
            "{}.{}.{}.com",
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60)
        );
        let ok = format!("{local}@{domain}");
        assert!(ok.len() <= 254, "{}", ok.len());
        assert!(Email::parse(&ok).is_ok());
        let too_long = format!("{local}@{}.{domain}", "e".repeat(60));
        assert!(Email::parse(&too_long).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn parsing_never_panics_and_is_idempotent(raw in ".{0,300}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(email.as_str(), raw.trim());
                prop_assert!(email.as_str().chars().count() <= MAX_EMAIL_CHARS);
                prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email);
            }
        }

        #[test]
        fn plausible_addresses_are_accepted(
            local in "[a-z0-9]([a-z0-9+_-]|\\.[a-z0-9]){0,20}",
            domain in "[a-z]{1,20}\\.(com|org|example)",
            pad in "[ \t]{0,2}",
        ) {
            let raw = format!("{pad}{local}@{domain}{pad}");
            let email = Email::parse(&raw);
            prop_assert!(email.is_ok(), "{raw:?}");
            prop_assert_eq!(email.unwrap().as_str().to_string(), format!("{local}@{domain}"));
        }

        #[test]
        fn the_fold_ignores_case_of_accented_letters(raw in "[a-zA-Z0-9äöüÄÖÜéÉ]{1,20}") {
            prop_assert_eq!(fold_email(&raw.to_uppercase()), fold_email(&raw.to_lowercase()));
            prop_assert_eq!(fold_email(&fold_email(&raw)), fold_email(&raw));
        }
    }
}
