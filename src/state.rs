//! What every handler shares.

use std::{sync::Arc, time::Instant};

use crate::{
    auth::AuthService, config::Settings, directory::Directory, metrics::AppMetrics,
    middleware::RateLimits, routes::RouteTable, store::UserStore,
};

pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn UserStore>,
    pub directory: Arc<Directory>,
    pub auth: AuthService,
    pub metrics: Arc<AppMetrics>,
    pub routes: Arc<RouteTable>,
    pub rate_limits: Arc<RateLimits>,
    pub started_at: Instant,
}
