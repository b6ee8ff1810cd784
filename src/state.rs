//! What every handler shares: the services, and the operational parts the middleware uses.

use std::{sync::Arc, time::Instant};

use crate::{
    api::EncodedUsers, config::Settings, metrics::AppMetrics, middleware::RateLimits,
    routes::RouteTable, service::Services,
};

pub struct AppState {
    /// Read by the middleware (timeouts, limits, proxy headers); rules live in `services`.
    pub settings: Settings,
    pub services: Services,
    pub metrics: Arc<AppMetrics>,
    pub routes: Arc<RouteTable>,
    pub rate_limits: Arc<RateLimits>,
    pub started_at: Instant,
    /// Cached users as `GET /users/{id}` sends them, with their `ETag`s.
    pub encoded_users: EncodedUsers,
}
