//! One integration-test binary: a real server on a random port over a real database.

mod abuse;
mod account;
mod admin;
mod audit;
mod auth;
mod bulk;
mod cache;
#[cfg(feature = "sqlite")]
mod cli;
mod dashboard;
mod errors;
mod export;
#[cfg(feature = "sqlite")]
mod faults;
#[cfg(feature = "sqlite")]
mod files;
mod health;
mod helpers;
mod instances;
mod lifecycle;
mod observed_store;
mod openapi;
mod operations;
#[cfg(feature = "sqlite")]
mod process;
mod readme;
mod sessions;
mod smtp_sink;
mod users;
mod users_list;
mod webhook_receiver;

/// In CI the PostgreSQL half of the suite must run, never silently skip.
#[cfg(feature = "postgres")]
#[test]
fn postgres_tests_are_not_skipped_in_ci() {
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let configured = std::env::var(helpers::POSTGRES_URL_VAR).is_ok_and(|v| !v.trim().is_empty());
    assert!(
        !in_ci || configured,
        "CI is set but {} is not: the PostgreSQL tests would be skipped",
        helpers::POSTGRES_URL_VAR
    );
    assert!(
        !in_ci || cfg!(postgres_tests),
        "{} was set after the tests were built; rebuild",
        helpers::POSTGRES_URL_VAR
    );
}
