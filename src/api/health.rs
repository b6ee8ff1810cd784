//! The Health tag: liveness, readiness and the dependency report.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::state::AppState;

/// How long the database may take to answer a health probe.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct HealthApi;

#[derive(Debug, Object)]
pub struct DatabaseCheck {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Round-trip time of the probe query.
    pub latency_ms: f64,
    /// `sqlite` or `postgres`.
    pub backend: String,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(Debug, Object)]
pub struct CacheCheck {
    /// `healthy`; `disabled` when caching is off; `degraded` while the cross-instance
    /// invalidation listener (PostgreSQL) is reconnecting.
    pub status: String,
    pub entries: u64,
    /// Hits over lookups, 0 to 1 (0 before any lookup).
    pub hit_rate: f64,
    /// `listening` (PostgreSQL: other instances' writes invalidate this one's caches),
    /// `reconnecting`, or `local` (one process owns the data, or caching is off).
    pub invalidation: String,
}

#[derive(Debug, Object)]
pub struct RateLimiterCheck {
    /// `healthy`, or `disabled` when rate limiting is off.
    pub status: String,
    /// Clients with live rate-limit state (idle ones are dropped).
    pub tracked_clients: u64,
}

#[derive(Debug, Object)]
pub struct HealthChecks {
    pub database: DatabaseCheck,
    pub cache: CacheCheck,
    pub rate_limiter: RateLimiterCheck,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct HealthReport {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    pub version: String,
    pub uptime_seconds: f64,
    pub checks: HealthChecks,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct ProbeStatus {
    pub status: String,
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Healthy or degraded.
    #[oai(status = 200)]
    Ok(Json<HealthReport>),
    /// The database check failed.
    #[oai(status = 503)]
    Unhealthy(Json<HealthReport>),
}

#[derive(ApiResponse)]
pub enum ProbeResponse {
    #[oai(status = 200)]
    Ok(Json<ProbeStatus>),
    /// Not ready: the database is unreachable or its schema is not current.
    #[oai(status = 503)]
    Unavailable(Json<ProbeStatus>),
}

async fn probe_database(state: &AppState) -> (Result<(), String>, Duration) {
    let started = Instant::now();
    let check = state.services.operations.check_ready();
    let result = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            DATABASE_CHECK_TIMEOUT.as_secs()
        )),
    };
    (result, started.elapsed())
}

async fn cache_check(state: &AppState) -> CacheCheck {
    let figures = state.services.operations.cache_figures().await;
    let stats = figures
        .dashboard
        .combine(figures.users)
        .combine(figures.sessions);
    let listener = figures.listener_connected;
    let status = match listener {
        Some(false) => "degraded".to_string(),
        _ => enabled_status(figures.enabled),
    };
    let invalidation = match listener {
        Some(true) => "listening",
        Some(false) => "reconnecting",
        None => "local",
    };
    CacheCheck {
        status,
        entries: stats.entries,
        hit_rate: stats.hit_rate(),
        invalidation: invalidation.into(),
    }
}

fn enabled_status(enabled: bool) -> String {
    if enabled { "healthy" } else { "disabled" }.to_string()
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Health report
    ///
    /// Checks the database (with a short timeout), cache and rate limiter. 503 when the
    /// database check fails. Never rate limited.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self, state: Data<&Arc<AppState>>) -> HealthResponse {
        let (db, latency) = probe_database(&state).await;
        if let Err(error) = &db {
            tracing::warn!(%error, "health check: database unhealthy");
        }
        state.metrics.set_health(db.is_ok());
        let cache = cache_check(&state).await;
        let overall = match (&db, cache.status.as_str()) {
            (Err(_), _) => "unhealthy",
            (Ok(()), "degraded") => "degraded",
            (Ok(()), _) => "healthy",
        };
        let report = HealthReport {
            status: overall.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: state.started_at.elapsed().as_secs_f64(),
            checks: HealthChecks {
                database: DatabaseCheck {
                    status: if db.is_ok() { "healthy" } else { "unhealthy" }.into(),
                    latency_ms: latency.as_secs_f64() * 1000.0,
                    backend: state.services.operations.backend().into(),
                    error: db
                        .as_ref()
                        .err()
                        .map(|_| "database check failed".to_string()),
                },
                cache,
                rate_limiter: RateLimiterCheck {
                    status: enabled_status(state.rate_limits.enabled()),
                    tracked_clients: state.rate_limits.tracked_clients() as u64,
                },
            },
        };
        if db.is_ok() {
            HealthResponse::Ok(Json(report))
        } else {
            HealthResponse::Unhealthy(Json(report))
        }
    }

    /// Liveness
    ///
    /// 200 while the process runs.
    #[oai(path = "/health/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Json<ProbeStatus> {
        Json(ProbeStatus {
            status: "alive".into(),
            reason: None,
        })
    }

    /// Readiness
    ///
    /// 200 when the database answers and its schema is current; 503 otherwise.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self, state: Data<&Arc<AppState>>) -> ProbeResponse {
        match probe_database(&state).await.0 {
            Ok(()) => ProbeResponse::Ok(Json(ProbeStatus {
                status: "ready".into(),
                reason: None,
            })),
            Err(_) => ProbeResponse::Unavailable(Json(ProbeStatus {
                status: "not_ready".into(),
                reason: Some("database unreachable or schema not current".into()),
            })),
        }
    }
}
