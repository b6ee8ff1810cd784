//! The production backend: sqlx on PostgreSQL.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::{
    AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow},
};
use tracing::Instrument;

use super::{
    EXPORT_CHUNK_ROWS, EXPORT_CHUNKS_AHEAD, Invalidation, InvalidationHandler, ListenerHealth,
    MigrationReport, NewRefreshToken, PoolStatus, RefreshTokenUse, StoreError, UserChunks,
    UserCredentials, UserStore, dashboard_windows, like_pattern,
    migrations::{self, Migration},
    order_by_sql, search_can_match,
};
use crate::domain::{
    DashboardStats, Email, NewUser, Page, User, UserChanges, UserId, UserQuery, now_micros,
};

const USER_COLUMNS: &str = "id, email, full_name, is_active, is_superuser, created_at, updated_at";
const EMAIL_UNIQUE_INDEX: &str = "users_email_lower_key";
/// Advisory lock keys (arbitrary, fixed): one for migrations, one serialising changes
/// that could remove the last active superuser.
const MIGRATION_LOCK: i64 = 0x526f_7374_6572_0001;
const SUPERUSER_LOCK: i64 = 0x526f_7374_6572_0002;
const INVALIDATION_CHANNEL: &str = "roster_cache";
/// PostgreSQL caps NOTIFY payloads at 8000 bytes; longer lists become "everything".
const MAX_NOTIFY_PAYLOAD: usize = 7_900;
const LISTENER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTENER_BACKOFF_MAX: Duration = Duration::from_secs(5);
const LISTENER_APPLICATION_NAME: &str = "roster-cache-listener";
/// How long a cached read waits for outstanding notifications before reading the database.
const CURRENT_WAIT: Duration = Duration::from_millis(50);
/// A write number missing this long belongs to a rolled-back write.
const GAP_EXPIRY: Duration = Duration::from_secs(2);

pub struct PostgresStore {
    pool: PgPool,
    pool_size: u32,
    /// One connection for LISTEN, apart from the request pool.
    listener_pool: PgPool,
    listener: std::sync::OnceLock<Arc<ListenerHealth>>,
    watermark: Arc<std::sync::Mutex<Watermark>>,
}

impl PostgresStore {
    pub async fn open(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let listener_options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .application_name(LISTENER_APPLICATION_NAME);
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(listener_options);
        Ok(Self {
            pool,
            pool_size,
            listener_pool,
            listener: std::sync::OnceLock::new(),
            watermark: Arc::default(),
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if code == "23505" && db.constraint() == Some(EMAIL_UNIQUE_INDEX) {
                    return StoreError::EmailTaken;
                }
                // Connection exceptions, refused or lost sessions (shutdown, database not
                // accepting connections or gone, failed authentication), too many connections.
                let unavailable = ["08", "57P", "28"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || ["3D000", "53300", "55000"].contains(&code.as_ref());
                if unavailable {
                    return StoreError::Unavailable(err.to_string());
                }
                StoreError::Other(err.to_string())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            _ => StoreError::Other(err.to_string()),
        }
    }
}

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        full_name: row.try_get("full_name")?,
        is_active: row.try_get("is_active")?,
        is_superuser: row.try_get("is_superuser")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

async fn apply_migrations(
    pool: &PgPool,
    list: &[Migration],
) -> Result<MigrationReport, StoreError> {
    let mut tx = pool.begin().await?;
    // Several instances may start at once against one empty database: one migrates, the
    // others wait here and then find nothing left to do.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT      PRIMARY KEY,
             name       TEXT        NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
    let known = migrations::latest_version(list);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    let mut applied = Vec::new();
    for migration in list.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
        )
        .bind(migration.version)
        .bind(migration.name)
        .execute(&mut *tx)
        .await?;
        applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(MigrationReport {
        applied,
        current_version: known,
    })
}

async fn is_active_superuser(tx: &mut sqlx::PgConnection, id: UserId) -> Result<bool, StoreError> {
    let row: Option<bool> =
        sqlx::query_scalar("SELECT is_active AND is_superuser FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.unwrap_or(false))
}

/// Called after a change that demoted, deactivated or deleted an active superuser.
async fn ensure_active_superuser_remains(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    // Serialises concurrent demotions, so two superusers cannot remove each other at once.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SUPERUSER_LOCK)
        .execute(&mut *tx)
        .await?;
    let remains: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE is_active AND is_superuser)")
            .fetch_one(&mut *tx)
            .await?;
    if remains {
        Ok(())
    } else {
        Err(StoreError::LastActiveSuperuser)
    }
}

/// Tells every instance which users a write touched. Sent inside the write's transaction:
/// PostgreSQL delivers it at commit, and never for a rolled-back write.
async fn notify_users(tx: &mut sqlx::PgConnection, ids: &[UserId]) -> Result<(), StoreError> {
    let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut payload = format!("users:{}", list.join(","));
    if payload.len() > MAX_NOTIFY_PAYLOAD {
        payload = "everything".into();
    }
    // The sequence number is drawn last, just before commit, so numbers follow commits
    // closely; a rolled-back write leaves a gap that `Watermark` learns to skip.
    sqlx::query("SELECT pg_notify($1, 'seq:' || nextval('roster_write_seq') || ':' || $2)")
        .bind(INVALIDATION_CHANNEL)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The highest write number drawn so far (0 before the first).
async fn latest_write(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let latest: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM roster_write_seq",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(latest).unwrap_or(0))
}

/// Which write numbers this instance has applied: every one up to `applied`, and some
/// beyond it (notifications arrive in commit order, numbers are drawn slightly earlier).
#[derive(Default)]
struct Watermark {
    applied: u64,
    ahead: std::collections::BTreeSet<u64>,
    /// First seen behind `latest` at this time; a gap that old is a rolled-back write.
    behind_since: Option<(u64, std::time::Instant)>,
}

impl Watermark {
    fn reset(&mut self, to: u64) {
        self.applied = to;
        self.ahead.clear();
        self.behind_since = None;
    }

    fn record(&mut self, seq: u64) {
        if seq > self.applied {
            self.ahead.insert(seq);
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.ahead.remove(&(self.applied + 1)) {
            self.applied += 1;
        }
    }

    /// Whether everything up to `latest` is applied; skips gaps older than `GAP_EXPIRY`.
    fn covers(&mut self, latest: u64) -> bool {
        if self.applied >= latest {
            self.behind_since = None;
            return true;
        }
        match self.behind_since {
            Some((target, since)) if since.elapsed() >= GAP_EXPIRY => {
                self.applied = self.applied.max(target);
                self.ahead.retain(|s| *s > target);
                self.advance();
                self.behind_since = None;
                self.applied >= latest
            }
            Some(_) => false,
            None => {
                self.behind_since = Some((latest, std::time::Instant::now()));
                false
            }
        }
    }
}

/// `seq:N:users:1,2` → (N, the users).
fn parse_notification(payload: &str) -> (Option<u64>, Invalidation) {
    let Some(rest) = payload.strip_prefix("seq:") else {
        return (None, parse_invalidation(payload));
    };
    match rest.split_once(':') {
        Some((seq, what)) => (seq.parse().ok(), parse_invalidation(what)),
        None => (None, Invalidation::Everything),
    }
}

fn parse_invalidation(payload: &str) -> Invalidation {
    match payload.strip_prefix("users:") {
        Some(ids) => {
            let parsed: Result<Vec<UserId>, _> = ids
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect();
            parsed.map_or(Invalidation::Everything, Invalidation::Users)
        }
        None if payload == "dashboard" => Invalidation::Dashboard,
        None => Invalidation::Everything,
    }
}

/// Keeps one LISTEN connection open for as long as `handler` wants events, reconnecting
/// with backoff; every (re)connection first drops all caches, since notifications sent
/// while disconnected are lost.
async fn run_listener(
    listener_pool: PgPool,
    pool: PgPool,
    handler: InvalidationHandler,
    health: Arc<ListenerHealth>,
    watermark: Arc<std::sync::Mutex<Watermark>>,
) {
    let mut backoff = LISTENER_BACKOFF_MIN;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&listener_pool).await?;
            listener.listen(INVALIDATION_CHANNEL).await?;
            // Writes committed before LISTEN are in the database and the caches are about
            // to be cleared; later ones will be notified.
            let latest = latest_write(&pool).await?;
            Ok::<_, sqlx::Error>((listener, latest))
        }
        .await;
        match connected {
            Ok((mut listener, latest)) => {
                if let Ok(mut w) = watermark.lock() {
                    w.reset(latest);
                }
                health.set_connected(true);
                backoff = LISTENER_BACKOFF_MIN;
                if !handler(Invalidation::Everything) {
                    return;
                }
                tracing::info!("cache invalidation listener connected");
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            let (seq, invalidation) = parse_notification(notification.payload());
                            if !handler(invalidation) {
                                return;
                            }
                            if let (Some(seq), Ok(mut w)) = (seq, watermark.lock()) {
                                w.record(seq);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cache invalidation listener failed");
                            break;
                        }
                    }
                }
                health.set_connected(false);
                tracing::warn!("cache invalidation listener disconnected; reconnecting");
                if !handler(Invalidation::Everything) {
                    return;
                }
            }
            Err(e) => {
                health.set_connected(false);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cache invalidation listener cannot connect");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTENER_BACKOFF_MAX);
            }
        }
    }
}

fn push_filter(qb: &mut QueryBuilder<Postgres>, query: &UserQuery) {
    let filter = &query.filter;
    let mut sep = " WHERE ";
    let mut next = |qb: &mut QueryBuilder<Postgres>| {
        qb.push(sep);
        sep = " AND ";
    };
    if let Some(active) = filter.is_active {
        next(qb);
        qb.push("is_active = ").push_bind(active);
    }
    if let Some(superuser) = filter.is_superuser {
        next(qb);
        qb.push("is_superuser = ").push_bind(superuser);
    }
    if let Some(after) = filter.created_after {
        next(qb);
        qb.push("created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        next(qb);
        qb.push("created_at < ").push_bind(before);
    }
    if filter
        .search
        .as_deref()
        .is_some_and(|t| !search_can_match(t))
    {
        next(qb);
        qb.push("FALSE");
    } else if let Some(term) = filter.search.as_deref() {
        let pattern = like_pattern(term);
        next(qb);
        qb.push("(email ILIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR full_name ILIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
}

/// Byte order, the same as PostgreSQL's with COLLATE "C".
fn order_sql(query: &UserQuery) -> String {
    order_by_sql(&query.sort, " COLLATE \"C\"")
}

#[async_trait]
impl UserStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        apply_migrations(&self.pool, migrations::POSTGRES).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations")
                .fetch_one(&self.pool)
                .await?;
        let known = migrations::latest_version(migrations::POSTGRES);
        if version < known {
            return Err(StoreError::Unavailable(format!(
                "schema version {version}, expected {known}: run `roster migrate`"
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
        self.listener_pool.close().await;
    }

    fn listen_for_invalidations(
        &self,
        handler: InvalidationHandler,
    ) -> Option<Arc<ListenerHealth>> {
        let health = Arc::new(ListenerHealth::default());
        let _ = self.listener.set(health.clone());
        tokio::spawn(run_listener(
            self.listener_pool.clone(),
            self.pool.clone(),
            handler,
            health.clone(),
            self.watermark.clone(),
        ));
        Some(health)
    }

    async fn caches_are_current(&self) -> bool {
        let Some(listener) = self.listener.get() else {
            return true; // caching is off: nothing to be current about
        };
        if !listener.is_connected() {
            return false;
        }
        let Ok(latest) = latest_write(&self.pool).await else {
            return false;
        };
        // Notifications trail their commits by moments: wait a little before giving up.
        let deadline = tokio::time::Instant::now() + CURRENT_WAIT;
        loop {
            let covered = match self.watermark.lock() {
                Ok(mut w) => w.covers(latest),
                Err(_) => return false,
            };
            if covered {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn pool_status(&self) -> PoolStatus {
        let total = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(total);
        PoolStatus {
            backend: "postgres",
            pool_size: self.pool_size,
            checked_in: idle,
            checked_out: total - idle,
            total_connections: total,
        }
    }

    async fn get_or_insert_setting(
        &self,
        key: &str,
        candidate: String,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO app_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM app_settings WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let created_at = user.created_at.unwrap_or_else(now_micros);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO users (email, full_name, hashed_password, is_active, is_superuser, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {USER_COLUMNS}"
        )))
        .bind(user.email.as_str())
        .bind(user.full_name.map(|n| n.into_inner()))
        .bind(user.hashed_password)
        .bind(user.is_active)
        .bind(user.is_superuser)
        .bind(created_at)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&row)?;
        notify_users(&mut tx, &[user.id]).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn create_users(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let now = now_micros();
        let mut emails = Vec::with_capacity(users.len());
        let mut names = Vec::with_capacity(users.len());
        let mut hashes = Vec::with_capacity(users.len());
        let mut active = Vec::with_capacity(users.len());
        let mut superuser = Vec::with_capacity(users.len());
        let mut created_at = Vec::with_capacity(users.len());
        for user in users {
            emails.push(user.email.as_str().to_string());
            names.push(user.full_name.map(|n| n.into_inner()));
            hashes.push(user.hashed_password);
            active.push(user.is_active);
            superuser.push(user.is_superuser);
            created_at.push(user.created_at.unwrap_or(now));
        }
        // One set-wise statement (one round trip) instead of a row at a time; ids are
        // drawn in input order, so sorting by id restores it.
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO users (email, full_name, hashed_password, is_active, is_superuser, created_at, updated_at)
             SELECT e, n, h, a, s, c, c
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::timestamptz[])
                  WITH ORDINALITY AS t(e, n, h, a, s, c, i)
             ORDER BY i
             RETURNING {USER_COLUMNS}"
        )))
        .bind(emails)
        .bind(names)
        .bind(hashes)
        .bind(active)
        .bind(superuser)
        .bind(created_at)
        .fetch_all(&mut *tx)
        .await?;
        let mut created = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        created.sort_by_key(|u| u.id);
        let ids: Vec<UserId> = created.iter().map(|u| u.id).collect();
        notify_users(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn existing_emails(&self, emails: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT e FROM unnest($1::text[]) WITH ORDINALITY AS t(e, n)
             WHERE EXISTS (SELECT 1 FROM users WHERE lower(email) COLLATE \"C\" = lower(e) COLLATE \"C\")
             ORDER BY n",
        )
        .bind(emails)
        .fetch_all(&self.pool)
        .await?)
    }

    fn export_users(&self, query: &UserQuery) -> UserChunks {
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_AHEAD);
        let pool = self.pool.clone();
        let query = query.clone();
        tokio::spawn(
            async move {
                let produce = async {
                    let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
                    push_filter(&mut qb, &query);
                    qb.push(order_sql(&query));
                    let mut rows = qb.build().fetch(&pool);
                    let mut chunk = Vec::with_capacity(EXPORT_CHUNK_ROWS);
                    while let Some(row) = rows.try_next().await? {
                        chunk.push(user_from_row(&row)?);
                        if chunk.len() == EXPORT_CHUNK_ROWS
                            && tx.send(Ok(std::mem::take(&mut chunk))).await.is_err()
                        {
                            return Ok(()); // the client went away
                        }
                    }
                    if !chunk.is_empty() {
                        let _ = tx.send(Ok(chunk)).await;
                    }
                    Ok::<_, StoreError>(())
                };
                if let Err(e) = produce.await {
                    let _ = tx.send(Err(e)).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        rx
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, hashed_password FROM users WHERE lower(email) COLLATE \"C\" = lower($1) COLLATE \"C\""
        )))
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(UserCredentials {
                user: user_from_row(&row)?,
                hashed_password: row.try_get("hashed_password")?,
            })),
            None => Ok(None),
        }
    }

    async fn get_password_hash(&self, id: UserId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT hashed_password FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn update_user(&self, id: UserId, changes: UserChanges) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let was_active_superuser = is_active_superuser(&mut tx, id).await?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE users SET updated_at = ");
        qb.push_bind(now_micros());
        let mut changed = false;
        if let Some(email) = changes.email {
            qb.push(", email = ").push_bind(email.as_str().to_string());
            changed = true;
        }
        if let Some(full_name) = changes.full_name {
            qb.push(", full_name = ")
                .push_bind(full_name.map(|n| n.into_inner()));
            changed = true;
        }
        if let Some(hash) = changes.hashed_password {
            qb.push(", hashed_password = ").push_bind(hash);
            changed = true;
        }
        if let Some(active) = changes.is_active {
            qb.push(", is_active = ").push_bind(active);
            changed = true;
        }
        if let Some(superuser) = changes.is_superuser {
            qb.push(", is_superuser = ").push_bind(superuser);
            changed = true;
        }
        let row = if changed {
            qb.push(" WHERE id = ")
                .push_bind(id)
                .push(" RETURNING ")
                .push(USER_COLUMNS);
            qb.build().fetch_optional(&mut *tx).await?
        } else {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        };
        let user = user_from_row(&row.ok_or(StoreError::NotFound)?)?;
        if was_active_superuser && !(user.is_active && user.is_superuser) {
            ensure_active_superuser_remains(&mut tx).await?;
        }
        notify_users(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let was_active_superuser = is_active_superuser(&mut tx, id).await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if was_active_superuser {
            ensure_active_superuser_remains(&mut tx).await?;
        }
        notify_users(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn list_users(
        &self,
        query: &UserQuery,
        known_total: Option<u64>,
    ) -> Result<Page<User>, StoreError> {
        // One snapshot for the total and the page.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let total: i64 = match known_total {
            Some(total) => i64::try_from(total).unwrap_or(i64::MAX),
            None => {
                let mut count_qb = QueryBuilder::new("SELECT COUNT(*) FROM users");
                push_filter(&mut count_qb, query);
                count_qb.build_query_scalar().fetch_one(&mut *tx).await?
            }
        };
        let items = match query.page.offset() {
            Some(offset) if offset < total => {
                let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
                push_filter(&mut qb, query);
                qb.push(order_sql(query));
                qb.push(" LIMIT ")
                    .push_bind(query.page.limit())
                    .push(" OFFSET ")
                    .push_bind(offset);
                let rows = qb.build().fetch_all(&mut *tx).await?;
                rows.iter()
                    .map(user_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        let total = count(total);
        Ok(Page {
            items,
            total,
            page: query.page.page,
            size: query.page.size,
            pages: query.page.page_count(total),
        })
    }

    async fn dashboard_stats(&self, now: DateTime<Utc>) -> Result<DashboardStats, StoreError> {
        let (today, week) = dashboard_windows(now);
        let row = sqlx::query(
            "SELECT COUNT(*)                                     AS total,
                    COUNT(*) FILTER (WHERE is_active)            AS active,
                    COUNT(*) FILTER (WHERE is_superuser)         AS superusers,
                    COUNT(*) FILTER (WHERE created_at >= $1)     AS today,
                    COUNT(*) FILTER (WHERE created_at >= $2)     AS week
             FROM users",
        )
        .bind(today)
        .bind(week)
        .fetch_one(&self.pool)
        .await?;
        let total = count(row.try_get("total")?);
        let active = count(row.try_get("active")?);
        Ok(DashboardStats {
            total_users: total,
            active_users: active,
            inactive_users: total.saturating_sub(active),
            superusers: count(row.try_get("superusers")?),
            new_users_today: count(row.try_get("today")?),
            new_users_week: count(row.try_get("week")?),
            generated_at: now,
        })
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at)
             VALUES ($1, $2, $3, $4, now())",
        )
        .bind(token.token_hash)
        .bind(token.family_id)
        .bind(token.user_id)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshTokenUse, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, family_id, user_id, expires_at, used_at IS NOT NULL OR revoked_at IS NOT NULL AS spent
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshTokenUse::Invalid);
        };
        let id: i64 = row.try_get("id")?;
        let family_id: String = row.try_get("family_id")?;
        let user_id: UserId = row.try_get("user_id")?;
        let expires_at: DateTime<Utc> = row.try_get("expires_at")?;
        let spent: bool = row.try_get("spent")?;
        let outcome = if spent {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(&family_id)
                .execute(&mut *tx)
                .await?;
            RefreshTokenUse::Replayed
        } else if expires_at <= now {
            RefreshTokenUse::Invalid
        } else {
            sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            RefreshTokenUse::Consumed { user_id, family_id }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn revoke_refresh_family_of(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now()
             WHERE revoked_at IS NULL
               AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        )
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_user_refresh_tokens(&self, user_id: UserId) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_advances_only_over_contiguous_writes() {
        let mut w = Watermark::default();
        w.reset(10);
        w.record(12);
        assert!(!w.covers(12), "11 has not been applied");
        w.record(11);
        assert!(w.covers(12));
        w.record(9);
        assert_eq!(w.applied, 12);
    }

    #[test]
    fn an_old_gap_is_a_rolled_back_write() {
        let mut w = Watermark::default();
        w.record(2);
        assert!(!w.covers(2));
        w.behind_since = w
            .behind_since
            .map(|(target, since)| (target, since - GAP_EXPIRY));
        assert!(w.covers(2));
    }

    #[test]
    fn notifications_carry_their_write_number() {
        assert_eq!(
            parse_notification("seq:7:users:1,2"),
            (Some(7), Invalidation::Users(vec![1, 2]))
        );
        assert_eq!(
            parse_notification("seq:8:everything"),
            (Some(8), Invalidation::Everything)
        );
        assert_eq!(parse_notification("garbage").1, Invalidation::Everything);
    }
}
