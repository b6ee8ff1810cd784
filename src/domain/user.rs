//! Users: the account as clients see it, a user to insert, the changes a write makes,
//! and the dashboard figures.

use chrono::{DateTime, Utc};

use super::Email;

pub type UserId = i64;

/// A user as clients see it; the password hash never leaves the store layer in this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub full_name: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub email_verified: bool,
}

pub const MAX_FULL_NAME_CHARS: usize = 255;

/// A display name of at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().count() > MAX_FULL_NAME_CHARS {
            return Err(format!("must be at most {MAX_FULL_NAME_CHARS} characters"));
        }
        // PostgreSQL text cannot hold NUL, and no name needs control characters.
        if raw.chars().any(|c| c.is_control() && c != '\t') {
            return Err("must not contain control characters".into());
        }
        Ok(Self(raw.to_string()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A user to insert, password already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub full_name: Option<FullName>,
    pub hashed_password: String,
    pub is_active: bool,
    pub is_superuser: bool,
    pub email_verified: bool,
    /// Defaults to now; set by data seeding and tests.
    pub created_at: Option<DateTime<Utc>>,
}

/// The fields a write changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub email: Option<Email>,
    /// `Some(None)` clears the name.
    pub full_name: Option<Option<FullName>>,
    pub hashed_password: Option<String>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub email_verified: Option<bool>,
    /// Sessions the same transaction ends.
    pub end_sessions: Option<EndSessions>,
}

/// Which of the user's sessions a change ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndSessions {
    All,
    /// All but the one making the change (an own password change).
    AllExcept(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardStats {
    pub total_users: u64,
    pub active_users: u64,
    pub inactive_users: u64,
    pub superusers: u64,
    pub new_users_today: u64,
    pub new_users_week: u64,
    pub generated_at: DateTime<Utc>,
}

/// Current time at the precision both backends store (microseconds), so what a write
/// returns equals what a later read returns.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_refuse_control_characters() {
        assert!(FullName::parse("Ada\u{0}Lovelace").is_err());
        assert!(FullName::parse("Ada\nLovelace").is_err());
        assert!(FullName::parse("Ada\tLovelace").is_ok());
    }

    #[test]
    fn full_name_length_is_capped_at_255_characters() {
        assert!(FullName::parse(&"ü".repeat(255)).is_ok());
        assert!(FullName::parse(&"a".repeat(256)).is_err());
    }
}
