use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{auth::BearerAuth, error::ApiResult, state::AppState};

pub struct MetricsApi;

#[derive(Debug, Object)]
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
        state.auth.authenticate_superuser(&auth).await?;
        let pool = state.store.pool_status();
        Ok(Json(DatabaseMetrics {
            backend: pool.backend.into(),
            pool_size: pool.pool_size,
            checked_in: pool.checked_in,
            checked_out: pool.checked_out,
            overflow: 0,
            total_connections: pool.total_connections,
        }))
    }
}
