//! Domain types: what the service knows about users, parsed from untrusted input, and the
//! pure rules over them. No I/O and no configuration here.

mod email;
mod password;
mod query;
mod rules;
mod user;

pub use email::{Email, fold_email};
pub use password::Password;
pub use query::{
    DEFAULT_PAGE_SIZE, Keyset, MAX_PAGE_SIZE, Page, PageRequest, SORT_KEYS, SortDirection,
    SortField, SortValue, UserFilter, UserQuery, UserSort,
};
pub use rules::{RefreshDecision, needs_another_active_superuser, refresh_decision};
pub use user::{
    DashboardStats, EndSessions, FullName, NewUser, User, UserChanges, UserId, now_micros,
};

/// A rule broken by one field of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Position of the item in a list input (bulk create), if any.
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            index: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}
