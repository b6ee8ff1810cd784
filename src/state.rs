//! What every handler shares.

use std::{sync::Arc, time::Instant};

use crate::{auth::AuthService, config::Settings, directory::Directory, store::UserStore};

pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn UserStore>,
    pub directory: Arc<Directory>,
    pub auth: AuthService,
    pub started_at: Instant,
}
