//! A store wrapper that counts the calls tests care about, delegating everything.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use roster::{
    domain::{DashboardStats, Email, NewUser, Page, User, UserChanges, UserId, UserQuery},
    store::{
        AuditEvent, AuditQuery, AuditRecord, Delivery, FailureAudit, MigrationReport,
        NewRefreshToken, OutboxCounts, OutboxItem, OutboxMessage, PoolStatus, Rotation,
        SessionRecord, SessionScope, SideEffects, StoreError, TokenKind, TokenOwner, UserChunks,
        UserCredentials, UserStore,
    },
};

/// Counts calls, and can slow down or break the store on demand.
#[derive(Default)]
pub struct Calls {
    pub dashboard: AtomicUsize,
    pub get_user: AtomicUsize,
    pub list_users: AtomicUsize,
    /// Extra latency of the dashboard query, in ms (default 50, so concurrent requests overlap).
    pub dashboard_delay_ms: AtomicU64,
    /// Latency added before an update reaches the database, in ms.
    pub update_delay_ms: AtomicU64,
    /// While set, every call answers "database unavailable".
    pub broken: AtomicBool,
}

impl Calls {
    pub fn slow_dashboard(ms: u64) -> Self {
        let calls = Self::default();
        calls.dashboard_delay_ms.store(ms, Ordering::SeqCst);
        calls
    }

    pub fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected fault".into()))
        } else {
            Ok(())
        }
    }

    pub fn dashboard(&self) -> usize {
        self.dashboard.load(Ordering::SeqCst)
    }

    pub fn get_user(&self) -> usize {
        self.get_user.load(Ordering::SeqCst)
    }

    pub fn list_users(&self) -> usize {
        self.list_users.load(Ordering::SeqCst)
    }
}

pub struct ObservedStore {
    pub inner: Arc<dyn UserStore>,
    pub calls: Arc<Calls>,
}

#[async_trait]
impl UserStore for ObservedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.inner.migrate().await
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.calls.check()?;
        self.inner.check_ready().await
    }
    fn pool_status(&self) -> PoolStatus {
        self.inner.pool_status()
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn listen_for_invalidations(
        &self,
        handler: roster::store::InvalidationHandler,
    ) -> Option<Arc<roster::store::ListenerHealth>> {
        self.inner.listen_for_invalidations(handler)
    }
    fn coherence_stats(&self) -> Option<roster::store::CoherenceStats> {
        self.inner.coherence_stats()
    }
    async fn caches_are_current(&self) -> bool {
        self.inner.caches_are_current().await
    }
    async fn get_or_insert_setting(
        &self,
        key: &str,
        candidate: String,
    ) -> Result<String, StoreError> {
        self.inner.get_or_insert_setting(key, candidate).await
    }
    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.get_setting(key).await
    }
    async fn set_settings(&self, pairs: Vec<(String, String)>) -> Result<(), StoreError> {
        self.inner.set_settings(pairs).await
    }
    async fn create_user(&self, user: NewUser, effects: SideEffects) -> Result<User, StoreError> {
        self.inner.create_user(user, effects).await
    }
    async fn create_users(
        &self,
        users: Vec<NewUser>,
        audit: Vec<AuditRecord>,
    ) -> Result<Vec<User>, StoreError> {
        self.inner.create_users(users, audit).await
    }
    async fn existing_email_keys(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        self.inner.existing_email_keys(keys).await
    }
    fn export_users(
        &self,
        query: &UserQuery,
        after: Option<&roster::domain::Keyset>,
    ) -> UserChunks {
        self.inner.export_users(query, after)
    }
    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.calls.get_user.fetch_add(1, Ordering::SeqCst);
        self.calls.check()?;
        self.inner.get_user(id).await
    }
    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserCredentials>, StoreError> {
        self.inner.find_credentials_by_email(email).await
    }
    async fn get_password_hash(&self, id: UserId) -> Result<Option<String>, StoreError> {
        self.inner.get_password_hash(id).await
    }
    async fn update_user(
        &self,
        id: UserId,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        let delay = self.calls.update_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.update_user(id, changes, effects).await
    }
    async fn delete_user(&self, id: UserId, audit: Vec<AuditRecord>) -> Result<(), StoreError> {
        self.inner.delete_user(id, audit).await
    }
    async fn list_users_after(
        &self,
        query: &UserQuery,
        after: Option<&roster::domain::Keyset>,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        self.calls.check()?;
        self.inner.list_users_after(query, after, limit).await
    }
    async fn count_matching(&self, query: &UserQuery) -> Result<u64, StoreError> {
        self.calls.check()?;
        self.inner.count_matching(query).await
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        self.inner.count_users().await
    }
    async fn has_users(&self) -> Result<bool, StoreError> {
        self.inner.has_users().await
    }
    async fn list_users(
        &self,
        query: &UserQuery,
        known_total: Option<u64>,
    ) -> Result<Page<User>, StoreError> {
        self.calls.list_users.fetch_add(1, Ordering::SeqCst);
        self.inner.list_users(query, known_total).await
    }
    async fn count_created_between(
        &self,
        bounds: Vec<DateTime<Utc>>,
    ) -> Result<Vec<u64>, StoreError> {
        self.calls.check()?;
        self.inner.count_created_between(bounds).await
    }

    async fn dashboard_stats(&self, now: DateTime<Utc>) -> Result<DashboardStats, StoreError> {
        self.calls.dashboard.fetch_add(1, Ordering::SeqCst);
        self.calls.check()?;
        let delay = match self.calls.dashboard_delay_ms.load(Ordering::SeqCst) {
            0 => 50,
            ms => ms,
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.dashboard_stats(now).await
    }
    async fn open_session(
        &self,
        session: SessionRecord,
        first_token: NewRefreshToken,
        audit: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        self.calls.check()?;
        self.inner.open_session(session, first_token, audit).await
    }
    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next: NewRefreshToken,
        now: DateTime<Utc>,
        reused: AuditRecord,
    ) -> Result<Rotation, StoreError> {
        self.calls.check()?;
        self.inner
            .rotate_refresh_token(token_hash, next, now, reused)
            .await
    }
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.calls.check()?;
        self.inner.get_session(id).await
    }
    async fn list_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.calls.check()?;
        self.inner.list_sessions(user_id, now).await
    }
    async fn touch_session(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.touch_session(id, now).await
    }
    async fn end_sessions(
        &self,
        scope: SessionScope,
        now: DateTime<Utc>,
        audit: AuditRecord,
    ) -> Result<Vec<UserId>, StoreError> {
        self.calls.check()?;
        self.inner.end_sessions(scope, now, audit).await
    }
    async fn prune_sessions(&self, now: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        self.inner.prune_sessions(now, batch).await
    }
    async fn login_failures(
        &self,
        email_key: &str,
    ) -> Result<Option<(u32, DateTime<Utc>)>, StoreError> {
        self.inner.login_failures(email_key).await
    }
    async fn record_login_failure(
        &self,
        email_key: &str,
        now: DateTime<Utc>,
        window_opened_after: DateTime<Utc>,
        audit: FailureAudit,
    ) -> Result<(u32, DateTime<Utc>), StoreError> {
        self.inner
            .record_login_failure(email_key, now, window_opened_after, audit)
            .await
    }
    async fn clear_login_failures(&self, email_key: &str) -> Result<(), StoreError> {
        self.inner.clear_login_failures(email_key).await
    }
    async fn prune_login_failures(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.prune_login_failures(before).await
    }
    async fn upgrade_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .upgrade_password_hash(user_id, old_hash, new_hash)
            .await
    }
    async fn record_effects(
        &self,
        user_id: UserId,
        effects: SideEffects,
    ) -> Result<(), StoreError> {
        self.inner.record_effects(user_id, effects).await
    }
    async fn enqueue(
        &self,
        messages: Vec<OutboxMessage>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.enqueue(messages, now).await
    }
    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenOwner>, StoreError> {
        self.inner.token_owner(kind, token_hash, now).await
    }
    async fn redeem_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        self.inner
            .redeem_token(kind, token_hash, now, changes, effects)
            .await
    }
    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.inner.claim_outbox(now, lease_until, limit).await
    }
    async fn finish_outbox(
        &self,
        id: i64,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.finish_outbox(id, delivery, now).await
    }
    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.inner.outbox_counts().await
    }
    async fn prune_outbox(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        self.inner.prune_outbox(before, batch).await
    }
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.list_audit(query).await
    }
    async fn prune_audit(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        self.inner.prune_audit(before, batch).await
    }
}
