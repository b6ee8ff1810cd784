//! `ServiceError`: every way a rule can refuse a request, in the service's own words.
//! `crate::error` turns each into an HTTP status and error body; nothing here knows HTTP.

use crate::{auth::HashError, domain::FieldError, store::StoreError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// Input that breaks a rule, one entry per broken field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Wrong email or password (the same answer for both).
    #[error("incorrect email or password")]
    InvalidCredentials,
    /// No usable credentials: a missing, bad, expired or revoked token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Known, but not allowed to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the account is inactive")]
    InactiveUser,
    /// REQUIRE_EMAIL_VERIFICATION is on and the address is not verified.
    #[error("the email address is not verified")]
    EmailNotVerified,
    #[error("{0}")]
    NotFound(&'static str),
    /// One email already in use.
    #[error("email already taken")]
    EmailTaken,
    /// Emails of a batch already in use or repeated within it; nothing was written.
    #[error("emails already taken")]
    EmailsTaken(Vec<String>),
    /// The change contradicts the current state.
    #[error("{0}")]
    Conflict(&'static str),
    /// Too many failed password checks for one account within the window.
    #[error("account locked for {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// Password hashing is at capacity (HASH_CONCURRENCY running, HASH_QUEUE_MAX waiting).
    #[error("password hashing is at capacity")]
    Busy { retry_after_secs: u64 },
    /// A reset, verification or invitation token that is unknown, spent or expired.
    #[error("invalid or expired token")]
    InvalidToken,
    #[error(transparent)]
    Store(StoreError),
    /// A failure of ours (randomness, hashing, signing); the detail is for the log.
    #[error("{0}")]
    Internal(String),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::NotFound => Self::NotFound(USER_NOT_FOUND),
            StoreError::LastActiveSuperuser => Self::Conflict(LAST_SUPERUSER),
            StoreError::TokenInvalid => Self::InvalidToken,
            other => Self::Store(other),
        }
    }
}

pub const USER_NOT_FOUND: &str = "User not found.";
pub const LAST_SUPERUSER: &str = "This change would leave the system without an active superuser.";

impl From<HashError> for ServiceError {
    fn from(err: HashError) -> Self {
        match err {
            // A second is about what the queue ahead takes to clear at default costs.
            HashError::Busy => Self::Busy {
                retry_after_secs: 1,
            },
            HashError::Failed(why) => Self::Internal(why),
        }
    }
}

impl ServiceError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}
