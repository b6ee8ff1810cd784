//! What callers ask the service to create or change, as given, and its validation into
//! domain types. Every broken rule of one input is reported at once.

use crate::domain::{Email, FieldError, FullName, Password};

/// A user to create, as submitted.
#[derive(Debug, Clone, Default)]
pub struct UserDraft {
    pub email: String,
    pub password: String,
    pub full_name: Option<String>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub email_verified: Option<bool>,
}

/// Changes to a user, as submitted; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct ChangeRequest {
    pub email: Option<String>,
    /// `Some(None)` clears the name.
    pub full_name: Option<Option<String>>,
    pub password: Option<String>,
    pub current_password: Option<String>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub email_verified: Option<bool>,
}

/// A validated draft, password not yet hashed.
pub struct ValidDraft {
    pub email: Email,
    pub password: Password,
    pub full_name: Option<FullName>,
    pub is_active: bool,
    pub is_superuser: bool,
    pub email_verified: bool,
}

/// Validated changes, password not yet hashed.
#[derive(Default)]
pub struct ValidChanges {
    pub email: Option<Email>,
    pub full_name: Option<Option<FullName>>,
    pub password: Option<Password>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub email_verified: Option<bool>,
}

/// Collects every broken rule of one input instead of stopping at the first.
#[derive(Default)]
struct Violations(Vec<FieldError>);

impl Violations {
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match (self.0.is_empty(), value) {
            (true, Some(v)) => Ok(v),
            _ => Err(self.0),
        }
    }
}

impl UserDraft {
    pub fn validate(&self) -> Result<ValidDraft, Vec<FieldError>> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(&self.email));
        let password = v.check(
            "password",
            Password::parse_for(&self.password, email.as_ref()),
        );
        let full_name = v.check(
            "full_name",
            self.full_name.as_deref().map(FullName::parse).transpose(),
        );
        let valid = (|| {
            Some(ValidDraft {
                email: email?,
                password: password?,
                full_name: full_name?,
                is_active: self.is_active.unwrap_or(true),
                is_superuser: self.is_superuser.unwrap_or(false),
                email_verified: self.email_verified.unwrap_or(false),
            })
        })();
        v.finish(valid)
    }
}

impl ChangeRequest {
    /// `current_email` is the account's address, which a new password must not equal.
    pub fn validate(&self, current_email: Option<&str>) -> Result<ValidChanges, Vec<FieldError>> {
        let mut v = Violations::default();
        let email = v
            .check("email", self.email.as_deref().map(Email::parse).transpose())
            .flatten();
        let full_name = match &self.full_name {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(name)) => v
                .check("full_name", FullName::parse(name))
                .map(|n| Some(Some(n))),
        };
        let known_email = email
            .clone()
            .or_else(|| current_email.and_then(|e| Email::parse(e).ok()));
        let password = v
            .check(
                "password",
                self.password
                    .as_deref()
                    .map(|p| Password::parse_for(p, known_email.as_ref()))
                    .transpose(),
            )
            .flatten();
        let valid = full_name.map(|full_name| ValidChanges {
            email,
            full_name,
            password,
            is_active: self.is_active,
            is_superuser: self.is_superuser,
            email_verified: self.email_verified,
        });
        v.finish(valid)
    }
}
