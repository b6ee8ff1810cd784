//! The store behind the caches: cached reads, and writes that invalidate what they touched
//! once committed. The services read and write users through here, never around it.

use std::sync::Arc;

use super::Clock;
use crate::{
    cache::{CachedSession, Caches, Lookup},
    domain::{
        DashboardStats, Keyset, NewUser, Page, User, UserChanges, UserFilter, UserId, UserQuery,
    },
    store::{
        AuditRecord, Invalidation, InvalidationHandler, ListenerHealth, NewRefreshToken, Rotation,
        SessionRecord, SessionScope, SideEffects, StoreError, TokenKind, UserChunks, UserStore,
    },
};

/// Whether this instance's caches may answer for the current request (decided once per
/// request, after it arrived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fresh(pub bool);

pub struct Directory {
    store: Arc<dyn UserStore>,
    caches: Arc<Caches>,
    clock: Clock,
    /// Set when other instances' writes reach this one's caches (PostgreSQL).
    listener: Option<Arc<ListenerHealth>>,
}

/// Runs a write and its cache invalidation to the end even if the request awaiting it is
/// dropped (timeout, client gone): a committed write must never leave a stale entry.
async fn to_completion<T: Send + 'static>(
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(write)
        .await
        .map_err(|e| StoreError::Other(format!("write task failed: {e}")))?
}

impl Directory {
    pub fn new(store: Arc<dyn UserStore>, caches: Caches, clock: Clock) -> Self {
        let caches = Arc::new(caches);
        let listener = caches.enabled().then(|| {
            let weak = Arc::downgrade(&caches);
            let handler: InvalidationHandler = Arc::new(move |event| {
                let Some(caches) = weak.upgrade() else {
                    return false;
                };
                match event {
                    Invalidation::Users(ids) => caches.forget_users(&ids),
                    Invalidation::Dashboard => caches.forget_dashboard(),
                    Invalidation::Everything => caches.forget_everything(),
                }
                true
            });
            store.listen_for_invalidations(handler)
        });
        Self {
            store,
            caches,
            clock,
            listener: listener.flatten(),
        }
    }

    /// Waits (up to `limit`) for the invalidation listener, so an instance starts serving
    /// cached reads only once other instances' writes reach it.
    pub async fn wait_for_listener(&self, limit: std::time::Duration) -> bool {
        let Some(listener) = &self.listener else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while !listener.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// `None` when no listener is needed (SQLite, or caching off); else whether it is connected.
    pub fn listener_connected(&self) -> Option<bool> {
        self.listener.as_ref().map(|l| l.is_connected())
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Whether the caches may answer: another instance's write whose notification has not
    /// arrived yet would otherwise be read stale (PostgreSQL; always true on SQLite). One
    /// answer holds for the whole request that asked (see `store::postgres::barrier`), so a
    /// request asks once and passes it on as `Fresh`.
    pub async fn freshness(&self) -> Fresh {
        Fresh(self.listener.is_none() || self.store.caches_are_current().await)
    }

    async fn usable(&self, fresh: Option<Fresh>) -> bool {
        match fresh {
            Some(Fresh(usable)) => usable,
            None => self.freshness().await.0,
        }
    }

    pub async fn user_as_of(
        &self,
        id: UserId,
        fresh: Option<Fresh>,
    ) -> Result<(Option<Arc<User>>, Lookup), StoreError> {
        if !self.usable(fresh).await {
            let user = self.store.get_user(id).await?;
            return Ok((user.map(Arc::new), Lookup::Miss));
        }
        self.caches.user(id, self.store.get_user(id)).await
    }

    /// A session and its user, checked per request: through the cache when it may answer.
    pub async fn session_as_of(
        &self,
        id: &str,
        user_id: UserId,
        fresh: Fresh,
    ) -> Result<Option<Arc<CachedSession>>, StoreError> {
        let load = async {
            match self.store.get_session(id).await? {
                Some(session) => {
                    let user = self.store.get_user(user_id).await?;
                    Ok(Some(CachedSession::new(session, user)))
                }
                None => Ok(None),
            }
        };
        if !fresh.0 {
            return Ok(load.await?.map(Arc::new));
        }
        Ok(self.caches.session(id, user_id, load).await?.0)
    }

    pub async fn open_session(
        &self,
        session: SessionRecord,
        first_token: NewRefreshToken,
        audit: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        let store = self.store.clone();
        to_completion(async move { store.open_session(session, first_token, audit).await }).await
    }

    /// Spends a refresh token for the next; a replay ends the session everywhere.
    pub async fn rotate(
        &self,
        token_hash: String,
        next: NewRefreshToken,
        reused: AuditRecord,
    ) -> Result<Rotation, StoreError> {
        let (store, caches, now) = (self.store.clone(), self.caches.clone(), self.clock.now());
        to_completion(async move {
            let rotation = store
                .rotate_refresh_token(&token_hash, next, now, reused)
                .await;
            if let Ok(Rotation::Refused {
                user_id: Some(user_id),
                ..
            }) = &rotation
            {
                caches.invalidate_users(&[*user_id]).await;
            }
            rotation
        })
        .await
    }

    /// Ends sessions; their tokens stop working on every instance once this returns.
    pub async fn end_sessions(
        &self,
        scope: SessionScope,
        audit: AuditRecord,
    ) -> Result<Vec<UserId>, StoreError> {
        let (store, caches, now) = (self.store.clone(), self.caches.clone(), self.clock.now());
        to_completion(async move {
            let users = store.end_sessions(scope, now, audit).await?;
            caches.invalidate_users(&users).await;
            Ok(users)
        })
        .await
    }

    pub async fn dashboard_as_of(
        &self,
        fresh: Option<Fresh>,
    ) -> Result<(Arc<DashboardStats>, Lookup), StoreError> {
        if !self.usable(fresh).await {
            let stats = self.store.dashboard_stats(self.clock.now()).await?;
            return Ok((Arc::new(stats), Lookup::Miss));
        }
        self.caches
            .dashboard(self.store.dashboard_stats(self.clock.now()))
            .await
    }

    pub async fn create(&self, user: NewUser, effects: SideEffects) -> Result<User, StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let created = store.create_user(user, effects).await;
            match &created {
                Ok(user) => caches.invalidate_users(&[user.id]).await,
                Err(_) => caches.invalidate_dashboard().await,
            }
            created
        })
        .await
    }

    /// All or nothing, in one transaction.
    pub async fn create_many(
        &self,
        users: Vec<NewUser>,
        audit: Vec<AuditRecord>,
    ) -> Result<Vec<User>, StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let created = store.create_users(users, audit).await;
            match &created {
                Ok(users) => {
                    let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
                    caches.invalidate_users(&ids).await;
                }
                Err(_) => caches.invalidate_dashboard().await,
            }
            created
        })
        .await
    }

    pub async fn existing_email_keys(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        self.store.existing_email_keys(keys).await
    }

    pub fn export(&self, query: &UserQuery, after: Option<&Keyset>) -> UserChunks {
        self.store.export_users(query, after)
    }

    pub async fn update(
        &self,
        id: UserId,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let updated = store.update_user(id, changes, effects).await;
            caches.invalidate_users(&[id]).await;
            updated
        })
        .await
    }

    /// Spends a one-time token and changes its user, in one transaction.
    pub async fn redeem(
        &self,
        kind: TokenKind,
        token_hash: String,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        let (store, caches, now) = (self.store.clone(), self.caches.clone(), self.clock.now());
        to_completion(async move {
            let redeemed = store
                .redeem_token(kind, &token_hash, now, changes, effects)
                .await;
            if let Ok(user) = &redeemed {
                caches.invalidate_users(&[user.id]).await;
            }
            redeemed
        })
        .await
    }

    pub async fn delete(&self, id: UserId, audit: Vec<AuditRecord>) -> Result<(), StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let deleted = store.delete_user(id, audit).await;
            caches.invalidate_users(&[id]).await;
            deleted
        })
        .await
    }

    /// Up to `limit` users after `after` (from the start without it) in the query's order
    /// (keyset paging).
    pub async fn list_after(
        &self,
        query: &UserQuery,
        after: Option<&Keyset>,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        self.store.list_users_after(query, after, limit).await
    }

    /// How many users match, when the cached figures say (no filter, or only one flag).
    pub async fn cached_count(
        &self,
        query: &UserQuery,
        fresh: Option<Fresh>,
    ) -> Result<Option<u64>, StoreError> {
        match (self.caches.enabled(), total_from_dashboard(&query.filter)) {
            (true, Some(pick)) => Ok(Some(pick(&self.dashboard_as_of(fresh).await?.0))),
            _ => Ok(None),
        }
    }

    /// How many users match the query's filters: from the cached figures when they say.
    pub async fn count(&self, query: &UserQuery, fresh: Option<Fresh>) -> Result<u64, StoreError> {
        match self.cached_count(query, fresh).await? {
            Some(total) => Ok(total),
            None => self.store.count_matching(query).await,
        }
    }

    /// A page of users, through the page cache when it may answer. For the common filters
    /// (none, only `is_active`, only `is_superuser`) the total comes from the cached
    /// dashboard counts instead of a COUNT over the table.
    pub async fn list(
        &self,
        query: &UserQuery,
        fresh: Option<Fresh>,
    ) -> Result<Page<User>, StoreError> {
        if !self.caches.enabled() || !self.usable(fresh).await {
            return self.list_uncached(query, fresh).await;
        }
        let key = format!("{:?}|{:?}|{:?}", query.filter, query.sort, query.page);
        let (page, _) = self
            .caches
            .page(key, self.list_uncached(query, fresh))
            .await?;
        Ok(Page::clone(&page))
    }

    async fn list_uncached(
        &self,
        query: &UserQuery,
        fresh: Option<Fresh>,
    ) -> Result<Page<User>, StoreError> {
        let known_total = self.cached_count(query, fresh).await?;
        self.store.list_users(query, known_total).await
    }
}

type TotalPick = fn(&DashboardStats) -> u64;

/// Which dashboard figure is the total for this filter, when one is.
fn total_from_dashboard(filter: &UserFilter) -> Option<TotalPick> {
    let only_flags = filter.search.is_none()
        && filter.created_after.is_none()
        && filter.created_before.is_none();
    if !only_flags {
        return None;
    }
    match (filter.is_active, filter.is_superuser) {
        (None, None) => Some(|s| s.total_users),
        (Some(true), None) => Some(|s| s.active_users),
        (Some(false), None) => Some(|s| s.inactive_users),
        (None, Some(true)) => Some(|s| s.superusers),
        (None, Some(false)) => Some(|s| s.total_users.saturating_sub(s.superusers)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn stats() -> DashboardStats {
        DashboardStats {
            total_users: 10,
            active_users: 7,
            inactive_users: 3,
            superusers: 2,
            new_users_today: 0,
            new_users_week: 0,
            generated_at: Utc::now(),
        }
    }

    #[test]
    fn common_filters_take_their_total_from_the_dashboard() {
        let pick = |filter: UserFilter| total_from_dashboard(&filter).map(|f| f(&stats()));
        assert_eq!(pick(UserFilter::default()), Some(10));
        assert_eq!(
            pick(UserFilter {
                is_active: Some(false),
                ..Default::default()
            }),
            Some(3)
        );
        assert_eq!(
            pick(UserFilter {
                is_superuser: Some(false),
                ..Default::default()
            }),
            Some(8)
        );
        assert_eq!(
            pick(UserFilter {
                is_active: Some(true),
                is_superuser: Some(true),
                ..Default::default()
            }),
            None
        );
        assert_eq!(
            pick(UserFilter {
                search: Some("a".into()),
                ..Default::default()
            }),
            None
        );
    }
}
