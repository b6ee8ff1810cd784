//! One integration-test binary: a real server on a random port over a real database.

mod auth;
#[cfg(feature = "sqlite")]
mod cli;
mod dashboard;
mod errors;
mod health;
mod helpers;
mod lifecycle;
mod openapi;
mod users;
mod users_list;
