//! The Dashboard tag: aggregate figures.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, payload::Json};

use super::BearerAuth;
use super::{ApiTags, dto::DashboardStatsOut};
use crate::{error::ApiResult, state::AppState};

pub struct DashboardApi;

#[derive(ApiResponse)]
pub enum StatsResponse {
    /// Current figures; `X-Cache` tells whether they came from the cache.
    #[oai(status = 200)]
    Ok(Json<DashboardStatsOut>, #[oai(header = "X-Cache")] String),
}

#[OpenApi(tag = "ApiTags::Dashboard")]
impl DashboardApi {
    /// Dashboard statistics
    ///
    /// Superuser only. Counts over all users from one aggregate query: totals, active,
    /// inactive, superusers, and users created today and in the last seven days (UTC).
    /// Cached for DASHBOARD_CACHE_TTL seconds and dropped on every write; `X-Cache` says
    /// whether this answer came from the cache.
    #[oai(
        path = "/api/v1/dashboard/stats",
        method = "get",
        operation_id = "dashboard_stats"
    )]
    async fn stats(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> ApiResult<StatsResponse> {
        let (stats, lookup) = state.services.users.dashboard(&auth.0).await?;
        Ok(StatsResponse::Ok(
            Json((*stats).clone().into()),
            lookup.as_header().into(),
        ))
    }
}
