//! Plaintext passwords: the length rule, and never shown in logs.

use super::Email;
use crate::secret::Secret;

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
        assert!(Password::parse("12345678").is_ok());
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
    fn debug_hides_the_value() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
