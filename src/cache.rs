//! The moka caches (dashboard stats, users by id) and their invalidation.
//!
//! Keys carry a write generation. A write bumps the generation of what it touched
//! after it commits, so every later read looks under a new key: a load that started
//! before the write can only fill an entry nobody asks for any more. Readers never
//! see their own writes stale, and concurrent misses of one key still share one load.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use moka::future::Cache;

use crate::{
    coalesce::Coalesced,
    config::CacheSettings,
    domain::{DashboardStats, Page, User, UserId},
    store::{SessionRecord, StoreError},
};

/// List pages kept: the first pages of the common filters and sorts, at most 100 users each.
const PAGE_ENTRIES: u64 = 256;

/// Users share this many generation counters; a write to one user re-keys 1/STRIPES of them.
const USER_GENERATION_STRIPES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

impl Lookup {
    pub fn as_header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
        }
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
}

impl CacheStats {
    /// Hits over lookups, 0 before the first lookup.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }

    pub fn combine(self, other: Self) -> Self {
        Self {
            entries: self.entries + other.entries,
            hits: self.hits + other.hits,
            misses: self.misses + other.misses,
        }
    }
}

/// A cache whose lookups are counted; `None` when caching is disabled.
struct CountedCache<K, V> {
    cache: Option<Cache<K, V>>,
    counters: Counters,
}

impl<K, V> CountedCache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(enabled: bool, capacity: u64, ttl: Duration) -> Self {
        let cache = enabled.then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            cache,
            counters: Counters::default(),
        }
    }

    /// The cached value, or the one `load` returns (stored unless it failed).
    /// Concurrent callers missing the same key wait for one `load`.
    async fn get_or_load<F>(&self, key: K, load: F) -> Result<(V, Lookup), StoreError>
    where
        F: Future<Output = Result<V, StoreError>>,
    {
        let Some(cache) = &self.cache else {
            return load.await.map(|v| (v, Lookup::Miss));
        };
        // A plain lookup first: the entry API below coordinates concurrent loads, and
        // costs several times more than a hit needs.
        if let Some(value) = cache.get(&key).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((value, Lookup::Hit));
        }
        let loaded_here = AtomicBool::new(false);
        let entry = cache
            .entry(key)
            .or_try_insert_with(async {
                loaded_here.store(true, Ordering::Relaxed);
                load.await
            })
            .await
            .map_err(|e| (*e).clone())?;
        let lookup = if loaded_here.load(Ordering::Relaxed) {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            Lookup::Miss
        } else {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            Lookup::Hit
        };
        Ok((entry.into_value(), lookup))
    }

    async fn invalidate(&self, key: &K) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key).await;
        }
    }

    async fn stats(&self) -> CacheStats {
        let entries = match &self.cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                cache.entry_count()
            }
            None => 0,
        };
        CacheStats {
            entries,
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
        }
    }
}

/// What authenticating a request needs, in one entry: the session, its user (`None`: gone),
/// and the last time this instance recorded the session's use (so `last_used_at` is
/// written at most once a minute, not per request).
#[derive(Debug)]
pub struct CachedSession {
    pub record: SessionRecord,
    pub user: Option<Arc<User>>,
    touched_micros: AtomicI64,
}

impl CachedSession {
    pub fn new(record: SessionRecord, user: Option<User>) -> Self {
        let touched = record.last_used_at.timestamp_micros();
        Self {
            record,
            user: user.map(Arc::new),
            touched_micros: AtomicI64::new(touched),
        }
    }

    /// Whether use at `now` should be written, claiming it when so (one writer per minute).
    pub fn claim_touch(&self, now: DateTime<Utc>, every: Duration) -> bool {
        let now = now.timestamp_micros();
        let every = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
        let last = self.touched_micros.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && self
                .touched_micros
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// The first 16 bytes of a session id as a number.
fn session_key(id: &str) -> u128 {
    let mut bytes = [0u8; 16];
    for (slot, byte) in bytes.iter_mut().zip(id.bytes()) {
        *slot = byte;
    }
    u128::from_le_bytes(bytes)
}

pub struct Caches {
    enabled: bool,
    /// Keyed by (a prefix of) the session id and its user's generation: any write to the
    /// user (including ending their sessions) re-keys the entry, user included.
    sessions: CountedCache<(u128, u64), Option<Arc<CachedSession>>>,
    dashboard: CountedCache<u64, Arc<DashboardStats>>,
    /// Bumped by every write to any user (here, or announced by another instance): it keys
    /// the dashboard and the list pages.
    dashboard_generation: AtomicU64,
    /// Misses of the dashboard share their aggregate (`coalesce`): under a stream of writes
    /// every generation misses, and one aggregate per miss ran dry the pool.
    dashboard_loads: Coalesced<DashboardStats>,
    /// Offset pages of the user list, keyed by that generation and the query: a write to any
    /// user re-keys them all, so a page is never older than the last write this instance
    /// knows of (and the PostgreSQL read barrier decides whether it may know of all).
    pages: CountedCache<(u64, String), Arc<Page<User>>>,
    /// `None` in a value: no such user (also worth remembering: every request authenticates).
    users: CountedCache<(UserId, u64), Option<Arc<User>>>,
    user_generations: Box<[AtomicU64]>,
}

impl Caches {
    pub fn new(settings: &CacheSettings) -> Self {
        let enabled = settings.enabled;
        Self {
            enabled,
            dashboard: CountedCache::new(enabled, 4, settings.dashboard_ttl),
            dashboard_generation: AtomicU64::new(0),
            dashboard_loads: Coalesced::default(),
            pages: CountedCache::new(enabled, PAGE_ENTRIES, settings.user_ttl),
            users: CountedCache::new(enabled, settings.max_entries, settings.user_ttl),
            sessions: CountedCache::new(enabled, settings.max_entries, settings.user_ttl),
            user_generations: (0..USER_GENERATION_STRIPES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn user_stripe(&self, id: UserId) -> &AtomicU64 {
        &self.user_generations[(id.unsigned_abs() % USER_GENERATION_STRIPES as u64) as usize]
    }

    pub async fn dashboard<F>(&self, load: F) -> Result<(Arc<DashboardStats>, Lookup), StoreError>
    where
        F: Future<Output = Result<DashboardStats, StoreError>>,
    {
        let generation = self.dashboard_generation.load(Ordering::Acquire);
        self.dashboard
            .get_or_load(generation, self.dashboard_loads.load(load))
            .await
    }

    /// A page of the user list for `query_key` (the query, written out), loaded by `load`
    /// on a miss.
    pub async fn page<F>(
        &self,
        query_key: String,
        load: F,
    ) -> Result<(Arc<Page<User>>, Lookup), StoreError>
    where
        F: Future<Output = Result<Page<User>, StoreError>>,
    {
        let generation = self.dashboard_generation.load(Ordering::Acquire);
        self.pages
            .get_or_load((generation, query_key), async { load.await.map(Arc::new) })
            .await
    }

    pub async fn user<F>(
        &self,
        id: UserId,
        load: F,
    ) -> Result<(Option<Arc<User>>, Lookup), StoreError>
    where
        F: Future<Output = Result<Option<User>, StoreError>>,
    {
        let generation = self.user_stripe(id).load(Ordering::Acquire);
        self.users
            .get_or_load((id, generation), async {
                load.await.map(|u| u.map(Arc::new))
            })
            .await
    }

    /// A session and its user, loaded together by `load` on a miss. Session ids are 256
    /// random bits: 128 of them key the entry (no allocation per lookup), and the whole id
    /// is compared before an entry is trusted.
    pub async fn session<F>(
        &self,
        id: &str,
        user_id: UserId,
        load: F,
    ) -> Result<(Option<Arc<CachedSession>>, Lookup), StoreError>
    where
        F: Future<Output = Result<Option<CachedSession>, StoreError>>,
    {
        let generation = self.user_stripe(user_id).load(Ordering::Acquire);
        let (found, lookup) = self
            .sessions
            .get_or_load((session_key(id), generation), async {
                load.await.map(|s| s.map(Arc::new))
            })
            .await?;
        match found {
            Some(s) if s.record.id != id => Ok((None, lookup)),
            other => Ok((other, lookup)),
        }
    }

    /// After a write that changed these users (and so the dashboard) has committed.
    pub async fn invalidate_users(&self, ids: &[UserId]) {
        for &id in ids {
            let old = self.user_stripe(id).fetch_add(1, Ordering::AcqRel);
            self.users.invalidate(&(id, old)).await;
        }
        self.invalidate_dashboard().await;
    }

    /// After a write that changed the user count or flags without touching a cached user.
    pub async fn invalidate_dashboard(&self) {
        let old = self.dashboard_generation.fetch_add(1, Ordering::AcqRel);
        self.dashboard.invalidate(&old).await;
    }

    /// Makes entries unreachable at once, without waiting on the caches: for invalidations
    /// from other instances, delivered on a listener task. The old entries expire by TTL.
    pub fn forget_users(&self, ids: &[UserId]) {
        for &id in ids {
            self.user_stripe(id).fetch_add(1, Ordering::AcqRel);
        }
        self.forget_dashboard();
    }

    pub fn forget_dashboard(&self) {
        self.dashboard_generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn forget_everything(&self) {
        for generation in self.user_generations.iter() {
            generation.fetch_add(1, Ordering::AcqRel);
        }
        self.forget_dashboard();
        if let Some(cache) = &self.users.cache {
            cache.invalidate_all();
        }
        if let Some(cache) = &self.dashboard.cache {
            cache.invalidate_all();
        }
        if let Some(cache) = &self.pages.cache {
            cache.invalidate_all();
        }
        if let Some(cache) = &self.sessions.cache {
            cache.invalidate_all();
        }
    }

    pub async fn dashboard_stats(&self) -> CacheStats {
        self.dashboard.stats().await
    }

    pub async fn user_stats(&self) -> CacheStats {
        self.users.stats().await
    }

    pub async fn session_stats(&self) -> CacheStats {
        self.sessions.stats().await
    }
}
