//! Roster: a self-hosted user-management REST API on SQLite or PostgreSQL.

pub mod access_log;
pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod connection;
pub mod domain;
pub mod error;
pub mod healthcheck;
pub mod log_writer;
pub mod mail;
pub mod metrics;
pub mod middleware;
pub mod request_context;
pub mod routes;
pub mod secret;
pub mod seed;
pub mod service;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhook;
