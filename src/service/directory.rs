//! The store behind the caches: cached reads, and writes that invalidate what they touched
//! once committed. The services read and write users through here, never around it.

use std::sync::Arc;

use super::Clock;
use crate::{
    cache::{Caches, Lookup},
    domain::{DashboardStats, NewUser, Page, User, UserChanges, UserFilter, UserId, UserQuery},
    store::{Invalidation, InvalidationHandler, ListenerHealth, StoreError, UserChunks, UserStore},
};

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
    /// arrived yet would otherwise be read stale (PostgreSQL; always true on SQLite).
    async fn caches_usable(&self) -> bool {
        self.listener.is_none() || self.store.caches_are_current().await
    }

    pub async fn user(&self, id: UserId) -> Result<(Option<Arc<User>>, Lookup), StoreError> {
        if !self.caches_usable().await {
            let user = self.store.get_user(id).await?;
            return Ok((user.map(Arc::new), Lookup::Miss));
        }
        self.caches.user(id, self.store.get_user(id)).await
    }

    pub async fn dashboard(&self) -> Result<(Arc<DashboardStats>, Lookup), StoreError> {
        if !self.caches_usable().await {
            let stats = self.store.dashboard_stats(self.clock.now()).await?;
            return Ok((Arc::new(stats), Lookup::Miss));
        }
        self.caches
            .dashboard(self.store.dashboard_stats(self.clock.now()))
            .await
    }

    pub async fn create(&self, user: NewUser) -> Result<User, StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let created = store.create_user(user).await;
            match &created {
                Ok(user) => caches.invalidate_users(&[user.id]).await,
                Err(_) => caches.invalidate_dashboard().await,
            }
            created
        })
        .await
    }

    /// All or nothing, in one transaction.
    pub async fn create_many(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let created = store.create_users(users).await;
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

    pub fn export(&self, query: &UserQuery) -> UserChunks {
        self.store.export_users(query)
    }

    pub async fn update(&self, id: UserId, changes: UserChanges) -> Result<User, StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let updated = store.update_user(id, changes).await;
            caches.invalidate_users(&[id]).await;
            updated
        })
        .await
    }

    pub async fn delete(&self, id: UserId) -> Result<(), StoreError> {
        let (store, caches) = (self.store.clone(), self.caches.clone());
        to_completion(async move {
            let deleted = store.delete_user(id).await;
            caches.invalidate_users(&[id]).await;
            deleted
        })
        .await
    }

    /// A page of users. For the common filters (none, only `is_active`, only
    /// `is_superuser`) the total comes from the cached dashboard counts instead of a
    /// COUNT over the table.
    pub async fn list(&self, query: &UserQuery) -> Result<Page<User>, StoreError> {
        let known_total = match self.caches.enabled() {
            true => match total_from_dashboard(&query.filter) {
                Some(pick) => Some(pick(&self.dashboard().await?.0)),
                None => None,
            },
            false => None,
        };
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
