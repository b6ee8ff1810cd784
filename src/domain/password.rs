//! Plaintext passwords: the length rule, no common password, not the account's email; never
//! shown in logs.
//!
//! `common_passwords.txt` holds those of the 10,000 most common passwords (ranked by
//! frequency) that are 8 characters or longer, lowercased: the `PASSWORDS` list of the
//! `zxcvbn` crate 3.1.1 (MIT licence, © 2016 Joshua Holmer; the list is Dropbox zxcvbn's,
//! drawn from Mark Burnett's 10 million password corpus). Regenerate it from a newer
//! release the same way to follow the list's maintenance.

use std::{collections::HashSet, sync::LazyLock};

use super::Email;
use crate::secret::Secret;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common_passwords.txt").lines().collect());

/// Whether `raw` is on the common-password list, in any letter case.
pub fn is_common(raw: &str) -> bool {
    COMMON.contains(raw.to_lowercase().as_str())
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// A plaintext password that meets the length rule; never printed.
#[derive(Debug, Clone)]
pub struct Password(Secret);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(format!(
                "must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long"
            ));
        }
        if is_common(raw) {
            return Err("is one of the most common passwords; choose another".into());
        }
        Ok(Self(Secret::new(raw)))
    }

    /// As `parse`, and not the account's email address or its local part (in any case).
    pub fn parse_for(raw: &str, email: Option<&Email>) -> Result<Self, String> {
        let password = Self::parse(raw)?;
        if let Some(email) = email {
            let folded = raw.to_lowercase();
            let address = email.as_str().to_lowercase();
            let local = address.split('@').next().unwrap_or_default();
            if folded == address || folded == local {
                return Err("must not be your email address or its local part".into());
            }
        }
        Ok(password)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("1234567x").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn the_email_and_its_local_part_are_refused() {
        let email = Email::parse("Ada.Lovelace@example.com").unwrap();
        assert!(Password::parse_for("ada.lovelace", Some(&email)).is_err());
        assert!(Password::parse_for("ADA.LOVELACE@EXAMPLE.COM", Some(&email)).is_err());
        assert!(Password::parse_for("ada.lovelace!", Some(&email)).is_ok());
        assert!(Password::parse_for("ada.lovelace", None).is_ok());
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        for common in ["password", "PASSWORD", "12345678", "Qwerty123", "iloveyou1"] {
            assert!(Password::parse(common).is_err(), "{common}");
        }
        assert!(Password::parse("correct horse battery").is_ok());
        assert!(COMMON.len() > 3000);
    }

    #[test]
    fn debug_hides_the_value() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
