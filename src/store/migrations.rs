//! The versioned schema changes embedded in the binary, one list per backend, and the
//! one rule for which of them a database still needs.

use super::{MigrationReport, StoreError};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    /// Work SQL cannot do, run by the backend after `sql` in the same transaction.
    pub fixup: Option<Fixup>,
}

/// Data changes that need Roster's own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixup {
    /// Sets `email_key` to `domain::fold_email(email)` where SQL's lower() may differ
    /// (emails with non-ASCII characters).
    FoldEmailKeys,
}

#[cfg(feature = "sqlite")]
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
        fixup: None,
    },
    Migration {
        version: 2,
        name: "search_and_sort",
        sql: include_str!("../../migrations/sqlite/0002_search_and_sort.sql"),
        fixup: None,
    },
    Migration {
        version: 3,
        name: "user_counts",
        sql: include_str!("../../migrations/sqlite/0003_user_counts.sql"),
        fixup: None,
    },
    Migration {
        version: 4,
        name: "email_key",
        sql: include_str!("../../migrations/sqlite/0004_email_key.sql"),
        fixup: Some(Fixup::FoldEmailKeys),
    },
    Migration {
        version: 5,
        name: "sessions",
        sql: include_str!("../../migrations/sqlite/0005_sessions.sql"),
        fixup: None,
    },
    Migration {
        version: 6,
        name: "login_failures",
        sql: include_str!("../../migrations/sqlite/0006_login_failures.sql"),
        fixup: None,
    },
    Migration {
        version: 7,
        name: "email_verified",
        sql: include_str!("../../migrations/sqlite/0007_email_verified.sql"),
        fixup: None,
    },
    Migration {
        version: 8,
        name: "ascii_name_sort",
        sql: include_str!("../../migrations/sqlite/0008_ascii_name_sort.sql"),
        fixup: None,
    },
    Migration {
        version: 9,
        name: "outbox_and_tokens",
        sql: include_str!("../../migrations/sqlite/0009_outbox_and_tokens.sql"),
        fixup: None,
    },
    Migration {
        version: 10,
        name: "audit_events",
        sql: include_str!("../../migrations/sqlite/0010_audit_events.sql"),
        fixup: None,
    },
    Migration {
        version: 11,
        name: "signups_by_day",
        sql: include_str!("../../migrations/sqlite/0011_signups_by_day.sql"),
        fixup: None,
    },
];

pub fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The migrations a database at `current` still needs, in order; a schema newer than
/// this binary is refused. Both backends apply the result in one transaction under
/// their own lock and record each version as they go.
pub fn pending(list: &[Migration], current: i64) -> Result<Vec<&Migration>, StoreError> {
    let known = latest_version(list);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    let mut pending: Vec<&Migration> = list.iter().filter(|m| m.version > current).collect();
    pending.sort_by_key(|m| m.version);
    Ok(pending)
}

/// What a run did, once `applied` were applied.
pub fn report(list: &[Migration], applied: Vec<i64>) -> MigrationReport {
    MigrationReport {
        applied,
        current_version: latest_version(list),
    }
}

/// The table both backends keep their applied versions in.
pub const VERSION_TABLE: &str = "schema_migrations";

#[cfg(feature = "postgres")]
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
        fixup: None,
    },
    Migration {
        version: 2,
        name: "search_and_sort",
        sql: include_str!("../../migrations/postgres/0002_search_and_sort.sql"),
        fixup: None,
    },
    Migration {
        version: 3,
        name: "write_sequence",
        sql: include_str!("../../migrations/postgres/0003_write_sequence.sql"),
        fixup: None,
    },
    Migration {
        version: 4,
        name: "email_key",
        sql: include_str!("../../migrations/postgres/0004_email_key.sql"),
        fixup: Some(Fixup::FoldEmailKeys),
    },
    Migration {
        version: 5,
        name: "sessions",
        sql: include_str!("../../migrations/postgres/0005_sessions.sql"),
        fixup: None,
    },
    Migration {
        version: 6,
        name: "login_failures",
        sql: include_str!("../../migrations/postgres/0006_login_failures.sql"),
        fixup: None,
    },
    Migration {
        version: 7,
        name: "email_verified",
        sql: include_str!("../../migrations/postgres/0007_email_verified.sql"),
        fixup: None,
    },
    Migration {
        version: 8,
        name: "ascii_name_sort",
        sql: include_str!("../../migrations/postgres/0008_ascii_name_sort.sql"),
        fixup: None,
    },
    Migration {
        version: 9,
        name: "outbox_and_tokens",
        sql: include_str!("../../migrations/postgres/0009_outbox_and_tokens.sql"),
        fixup: None,
    },
    Migration {
        version: 10,
        name: "audit_events",
        sql: include_str!("../../migrations/postgres/0010_audit_events.sql"),
        fixup: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &[Migration] = &[
        Migration {
            version: 1,
            name: "a",
            sql: "",
            fixup: None,
        },
        Migration {
            version: 2,
            name: "b",
            sql: "",
            fixup: None,
        },
    ];

    #[test]
    fn pending_lists_what_is_missing_and_refuses_newer_schemas() {
        let versions = |current| -> Vec<i64> {
            pending(LIST, current)
                .unwrap()
                .iter()
                .map(|m| m.version)
                .collect()
        };
        assert_eq!(versions(0), [1, 2]);
        assert_eq!(versions(1), [2]);
        assert!(versions(2).is_empty());
        assert!(matches!(
            pending(LIST, 3),
            Err(StoreError::SchemaTooNew { found: 3, known: 2 })
        ));
    }
}
