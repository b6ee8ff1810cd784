//! The Metrics tag: pool and cache figures, and the Prometheus exposition.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    Object, OpenApi,
    payload::{Json, PlainText},
};

use super::ApiTags;
use super::BearerAuth;
use crate::{error::ApiResult, metrics::Activity, service::CacheStats, state::AppState};

pub struct MetricsApi;

#[derive(Debug, Object)]
#[oai(example)]
pub struct DatabaseMetrics {
    pub backend: String,
    /// Largest number of connections the pool opens.
    pub pool_size: u32,
    /// Open connections waiting in the pool.
    pub checked_in: u32,
    /// Connections lent out to requests right now.
    pub checked_out: u32,
    /// Connections beyond `pool_size`; this pool never opens any, so always 0.
    pub overflow: u32,
    pub total_connections: u32,
}

#[derive(Debug, Object)]
pub struct CacheFigures {
    /// Entries held now.
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    /// Hits over lookups, 0 to 1 (0 before any lookup).
    pub hit_rate: f64,
}

impl From<CacheStats> for CacheFigures {
    fn from(s: CacheStats) -> Self {
        Self {
            entries: s.entries,
            hits: s.hits,
            misses: s.misses,
            hit_rate: s.hit_rate(),
        }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct CacheMetrics {
    /// Whether CACHE_ENABLED is on; when off every figure stays 0.
    pub enabled: bool,
    /// Dashboard statistics.
    pub dashboard: CacheFigures,
    /// Users by id.
    pub users: CacheFigures,
    /// Sessions with their users: checked on every authenticated request.
    pub sessions: CacheFigures,
}

#[OpenApi(tag = "ApiTags::Metrics")]
impl MetricsApi {
    /// Connection pool figures
    ///
    /// Superuser only.
    #[oai(
        path = "/api/v1/metrics/database",
        method = "get",
        operation_id = "database_metrics"
    )]
    async fn database(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<DatabaseMetrics>> {
        let pool = state.services.operations.database_figures(&auth.0)?;
        Ok(Json(DatabaseMetrics {
            backend: pool.backend.into(),
            pool_size: pool.pool_size,
            checked_in: pool.checked_in,
            checked_out: pool.checked_out,
            overflow: 0,
            total_connections: pool.total_connections,
        }))
    }

    /// Cache figures
    ///
    /// Superuser only. Entries, hits, misses and hit rate of each cache since start-up.
    #[oai(
        path = "/api/v1/metrics/cache",
        method = "get",
        operation_id = "cache_metrics"
    )]
    async fn cache(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<CacheMetrics>> {
        let figures = state.services.operations.cache_figures_for(&auth.0).await?;
        Ok(Json(CacheMetrics {
            enabled: figures.enabled,
            dashboard: figures.dashboard.into(),
            users: figures.users.into(),
            sessions: figures.sessions.into(),
        }))
    }

    /// Prometheus metrics
    ///
    /// Text exposition format: `http_requests_total{method,route,status}`,
    /// `http_request_duration_seconds` (histogram by route template), cache hits and
    /// misses, pool gauges, `rate_limited_total`, `http_health_check_status`, and on
    /// PostgreSQL the read barrier's `coherence_barrier_reads_total`,
    /// `coherence_barrier_requests_total` and `coherence_barrier_wait_microseconds_total`;
    /// `sessions_pruned_rows_total` (ended sessions and spent tokens deleted),
    /// `security_events_total{event}` (failed and locked logins, refresh reuse, privilege
    /// changes, revocations).
    #[oai(path = "/metrics", method = "get", operation_id = "prometheus_metrics")]
    async fn prometheus(&self, state: Data<&Arc<AppState>>) -> PlainText<String> {
        let operations = &state.services.operations;
        let figures = operations.cache_figures().await;
        let cache_stats = [
            ("dashboard", figures.dashboard),
            ("users", figures.users),
            ("sessions", figures.sessions),
        ];
        PlainText(state.metrics.render(
            &operations.pool_status(),
            &cache_stats,
            state.rate_limits.tracked_clients(),
            operations.coherence_stats(),
            &Activity {
                pruned_session_rows: operations.pruned_session_rows(),
                security_events: operations.security_events(),
                outbox: operations.outbox_figures(),
                // Best effort: a scrape must answer even when the database does not.
                outbox_backlog: operations.outbox_counts().await.ok(),
            },
        ))
    }
}
