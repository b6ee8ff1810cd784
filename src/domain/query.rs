//! Lists of users: filters, sort keys, and the one pagination arithmetic.

use chrono::{DateTime, Utc};

pub const MAX_PAGE_SIZE: u64 = 100;
/// The sort keys of lists and exports; each also sorts descending with a leading `-`.
pub const SORT_KEYS: [&str; 4] = ["created_at", "email", "full_name", "id"];
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// Filters of the user list and export; every one is applied in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    /// A literal, case-insensitive substring of email or full name.
    pub search: Option<String>,
    /// Inclusive.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    Email,
    FullName,
    Id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDirection {
    Asc,
    Desc,
}

/// A sort key; ties are always broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSort {
    pub field: SortField,
    pub direction: SortDirection,
}

impl Default for UserSort {
    fn default() -> Self {
        Self {
            field: SortField::CreatedAt,
            direction: SortDirection::Desc,
        }
    }
}

/// A page number (from 1) and size (1..=100), with the one pagination arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub size: u64,
}

impl PageRequest {
    pub fn new(page: u64, size: u64) -> Result<Self, crate::domain::FieldError> {
        use crate::domain::FieldError;
        if page < 1 {
            return Err(FieldError::new("page", "must be at least 1"));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(FieldError::new(
                "size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(Self { page, size })
    }

    /// Rows to skip, or `None` when the page lies beyond anything a table can hold.
    pub fn offset(&self) -> Option<i64> {
        (self.page - 1)
            .checked_mul(self.size)
            .and_then(|o| i64::try_from(o).ok())
    }

    pub fn limit(&self) -> i64 {
        self.size as i64
    }

    /// `ceil(total / size)`, 0 when there is nothing.
    pub fn page_count(&self, total: u64) -> u64 {
        total.div_ceil(self.size)
    }
}

/// A row's position in a sort order: its sort key and id (ties are broken by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    pub value: SortValue,
    pub id: super::UserId,
}

/// A sort key's value, exactly as both databases compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    Time(DateTime<Utc>),
    Text(String),
    /// Sorting by id: the id is the whole key.
    Id,
}

impl Keyset {
    /// Where `user` stands in `sort`. Text keys are folded as the databases fold them: the
    /// stored `email_key` for emails, ASCII lowercase for names (SQLite's `lower`, and
    /// PostgreSQL's under `COLLATE "C"`).
    pub fn of(user: &super::User, field: SortField) -> Self {
        let value = match field {
            SortField::CreatedAt => SortValue::Time(user.created_at),
            SortField::Email => SortValue::Text(super::fold_email(&user.email)),
            SortField::FullName => SortValue::Text(
                user.full_name
                    .as_deref()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            ),
            SortField::Id => SortValue::Id,
        };
        Self { value, id: user.id }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    pub filter: UserFilter,
    pub sort: UserSort,
    pub page: PageRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u64,
    pub size: u64,
    pub pages: u64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: u64, request: &PageRequest) -> Self {
        Self {
            items,
            total,
            page: request.page,
            size: request.size,
            pages: request.page_count(total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_count_rounds_up_and_is_zero_when_empty() {
        let p = PageRequest::new(1, 50).unwrap();
        assert_eq!(p.page_count(0), 0);
        assert_eq!(p.page_count(1), 1);
        assert_eq!(p.page_count(50), 1);
        assert_eq!(p.page_count(51), 2);
    }

    #[test]
    fn offsets_never_overflow() {
        assert_eq!(PageRequest::new(3, 20).unwrap().offset(), Some(40));
        assert_eq!(PageRequest::new(u64::MAX, 100).unwrap().offset(), None);
    }

    #[test]
    fn page_bounds_are_enforced() {
        assert!(PageRequest::new(0, 10).is_err());
        assert!(PageRequest::new(1, 0).is_err());
        assert!(PageRequest::new(1, 101).is_err());
        assert!(PageRequest::new(1, 100).is_ok());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn pagination_arithmetic_holds(page in 1u64..u64::MAX, size in 1u64..=MAX_PAGE_SIZE, total in 0u64..10_000_000) {
            let p = PageRequest::new(page, size).unwrap();
            match p.offset() {
                Some(offset) => prop_assert_eq!(offset as u128, (page as u128 - 1) * size as u128),
                None => prop_assert!((page as u128 - 1) * size as u128 > i64::MAX as u128),
            }
            let pages = p.page_count(total);
            prop_assert!(pages * size >= total);
            if total > 0 {
                prop_assert!((pages - 1) * size < total);
            } else {
                prop_assert_eq!(pages, 0);
            }
        }

        #[test]
        fn out_of_range_pages_are_refused(size in prop_oneof![Just(0u64), (MAX_PAGE_SIZE + 1)..u64::MAX]) {
            prop_assert!(PageRequest::new(0, 10).is_err());
            prop_assert!(PageRequest::new(1, size).is_err());
        }
    }
}
