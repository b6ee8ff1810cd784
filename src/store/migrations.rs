//! The versioned schema changes embedded in the binary, one list per backend.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

#[cfg(feature = "sqlite")]
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "search_and_sort",
        sql: include_str!("../../migrations/sqlite/0002_search_and_sort.sql"),
    },
    Migration {
        version: 3,
        name: "user_counts",
        sql: include_str!("../../migrations/sqlite/0003_user_counts.sql"),
    },
];

pub fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

#[cfg(feature = "postgres")]
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "search_and_sort",
        sql: include_str!("../../migrations/postgres/0002_search_and_sort.sql"),
    },
    Migration {
        version: 3,
        name: "write_sequence",
        sql: include_str!("../../migrations/postgres/0003_write_sequence.sql"),
    },
];
