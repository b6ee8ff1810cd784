//! What operators read: database and pool health, cache figures, the listener's state.

use std::sync::Arc;

use super::{AuthService, Caller, Outbox, OutboxFigures, ServiceResult, directory::Directory};
use crate::{
    cache::CacheStats,
    store::{CoherenceStats, PoolStatus, StoreError, UserStore},
};

pub struct Operations {
    store: Arc<dyn UserStore>,
    directory: Arc<Directory>,
    auth: Arc<AuthService>,
    outbox: Arc<Outbox>,
}

/// Both caches' figures and whether caching is on.
pub struct CacheFigures {
    pub enabled: bool,
    pub dashboard: CacheStats,
    pub users: CacheStats,
    /// Sessions with their users: what every authenticated request looks up.
    pub sessions: CacheStats,
    /// `None` where no listener is needed (SQLite, or caching off); else whether it is
    /// connected.
    pub listener_connected: Option<bool>,
}

impl Operations {
    pub(super) fn new(
        store: Arc<dyn UserStore>,
        directory: Arc<Directory>,
        auth: Arc<AuthService>,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            store,
            directory,
            auth,
            outbox,
        }
    }

    /// Outbox deliveries by topic since start-up.
    pub fn outbox_figures(&self) -> Vec<OutboxFigures> {
        self.outbox.figures()
    }

    /// Messages waiting in the outbox, and those given up on (all instances).
    pub async fn outbox_counts(&self) -> Result<crate::store::OutboxCounts, StoreError> {
        self.store.outbox_counts().await
    }

    /// Security events by kind since start-up.
    pub fn security_events(&self) -> Vec<(&'static str, u64)> {
        self.auth.security.counts()
    }

    /// Rows of ended sessions and spent tokens pruned since start-up.
    pub fn pruned_session_rows(&self) -> u64 {
        self.auth.pruned_rows()
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// A round trip proving the database answers and its schema is current.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        self.store.check_ready().await
    }

    pub fn pool_status(&self) -> PoolStatus {
        self.store.pool_status()
    }

    /// The PostgreSQL read barrier's figures (`None` on SQLite).
    pub fn coherence_stats(&self) -> Option<CoherenceStats> {
        self.store.coherence_stats()
    }

    pub async fn cache_figures(&self) -> CacheFigures {
        let caches = self.directory.caches();
        CacheFigures {
            enabled: caches.enabled(),
            dashboard: caches.dashboard_stats().await,
            users: caches.user_stats().await,
            sessions: caches.session_stats().await,
            listener_connected: self.directory.listener_connected(),
        }
    }

    /// Pool figures, for superusers.
    pub fn database_figures(&self, caller: &Caller) -> ServiceResult<PoolStatus> {
        caller.require_superuser()?;
        Ok(self.pool_status())
    }

    /// Cache figures, for superusers.
    pub async fn cache_figures_for(&self, caller: &Caller) -> ServiceResult<CacheFigures> {
        caller.require_superuser()?;
        Ok(self.cache_figures().await)
    }

    /// Closes the store's connections; once, at shutdown.
    pub async fn close(&self) {
        self.store.close().await;
    }
}
