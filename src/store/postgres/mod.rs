//! The production backend: sqlx on PostgreSQL. Cross-instance cache coherence lives in
//! `listener`.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::{
    AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};

mod barrier;
mod listener;

use barrier::ReadBarrier;

use listener::{
    Applied, BARRIER_APPLICATION_NAME, CURRENT_WAIT, LISTENER_APPLICATION_NAME, notify_users,
    run_listener,
};

use super::{
    ActionFilter, AuditEvent, AuditQuery, AuditRecord, CoherenceStats, Delivery,
    EMAIL_UNIQUE_INDEX, EXPORT_CHUNK_ROWS, EXPORT_CHUNKS_AHEAD, FailureAudit, InvalidationHandler,
    ListenerHealth, MigrationReport, NewRefreshToken, OutboxCounts, OutboxItem, OutboxMessage,
    PoolStatus, Rotation, RotationStep, SessionRecord, SessionScope, SideEffects, StoreError,
    TokenKind, TokenOwner, TokenRow, Topic, USER_COLUMNS, UserChunks, UserCredentials, UserStore,
    dashboard_windows, details_text, like_pattern,
    migrations::{self, Fixup, Migration, VERSION_TABLE},
    order_by_sql, prefix_end, rotation_step, search_can_match, sort_key_sql,
};
use crate::{
    domain::{
        DashboardStats, Email, EndSessions, Keyset, NewUser, Page, RefreshDecision, SortDirection,
        SortValue, User, UserChanges, UserId, UserQuery, fold_email,
        needs_another_active_superuser, now_micros,
    },
    request_context,
};

/// Applies `changes` to user `id` inside the caller's transaction.
async fn update_row(
    tx: &mut sqlx::PgConnection,
    id: UserId,
    changes: UserChanges,
) -> Result<User, StoreError> {
    let was_active_superuser = is_active_superuser(tx, id).await?;
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE users SET updated_at = ");
    qb.push_bind(now_micros());
    let mut changed = false;
    if let Some(email) = changes.email {
        qb.push(", email_key = ").push_bind(email.key());
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
    if let Some(verified) = changes.email_verified {
        qb.push(", email_verified = ").push_bind(verified);
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
    if needs_another_active_superuser(was_active_superuser, user.is_active && user.is_superuser) {
        ensure_active_superuser_remains(tx).await?;
    }
    if let Some(end) = changes.end_sessions {
        let except = match end {
            EndSessions::All => None,
            EndSessions::AllExcept(keep) => Some(keep),
        };
        let scope = SessionScope::AllOf {
            user_id: id,
            except,
        };
        end_session_rows(tx, scope, now_micros()).await?;
    }
    Ok(user)
}

/// Writes a user's side effects inside the caller's transaction.
async fn write_effects(
    tx: &mut sqlx::PgConnection,
    user_id: UserId,
    effects: SideEffects,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(token) = effects.token {
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, kind, user_id, email_key, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, kind) DO UPDATE SET
                 token_hash = excluded.token_hash, email_key = excluded.email_key,
                 created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(token.token_hash)
        .bind(token.kind.as_str())
        .bind(user_id)
        .bind(token.email_key)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
    }
    if effects.clear_login_failures {
        sqlx::query(
            "DELETE FROM login_failures
             WHERE email_key = (SELECT email_key FROM users WHERE id = $1)",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    }
    insert_audit(tx, &effects.audit, &[user_id]).await?;
    insert_messages(tx, effects.outbox, now).await
}

/// Writes each of `records` once per user of `changed` (who `AuditTarget::Changed` stands
/// for), in one statement, with the webhook deliveries of those that want one.
async fn insert_audit(
    tx: &mut sqlx::PgConnection,
    records: &[AuditRecord],
    changed: &[UserId],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(&AuditRecord, Option<UserId>)> = if changed.is_empty() {
        records.iter().map(|r| (r, r.target_id(None))).collect()
    } else {
        changed
            .iter()
            .flat_map(|id| records.iter().map(move |r| (r, r.target_id(Some(*id)))))
            .collect()
    };
    let n = pairs.len();
    let (mut at, mut action, mut actor, mut ip, mut target, mut request, mut details) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (r, target_id) in &pairs {
        at.push(r.at);
        action.push(r.action);
        actor.push(r.actor_id);
        ip.push(r.actor_ip.clone());
        target.push(*target_id);
        request.push(r.request_id.clone());
        details.push(details_text(&r.details));
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO audit_events (at, action, actor_id, actor_ip, target_id, request_id, details)
         SELECT a, c, o, p, t, q, d::jsonb
         FROM unnest($1::timestamptz[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                     $6::text[], $7::text[]) WITH ORDINALITY AS e(a, c, o, p, t, q, d, i)
         ORDER BY i
         RETURNING id",
    )
    .bind(at)
    .bind(action)
    .bind(actor)
    .bind(ip)
    .bind(target)
    .bind(request)
    .bind(details)
    .fetch_all(&mut *tx)
    .await?;
    // Ids are drawn in input order, so sorting them restores it.
    ids.sort_unstable();
    let webhooks: Vec<OutboxMessage> = pairs
        .iter()
        .zip(ids)
        .filter(|((r, _), _)| r.webhook)
        .map(|((r, target_id), id)| {
            AuditEvent {
                id,
                at: r.at,
                action: r.action.to_string(),
                actor_id: r.actor_id,
                actor_ip: r.actor_ip.clone(),
                target_id: *target_id,
                request_id: r.request_id.clone(),
                details: r.details.clone(),
            }
            .webhook_message()
        })
        .collect();
    insert_messages(tx, webhooks, now_micros()).await
}

async fn insert_messages(
    tx: &mut sqlx::PgConnection,
    messages: Vec<OutboxMessage>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut topics = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    for m in messages {
        topics.push(m.topic.as_str());
        keys.push(m.ordering_key);
        payloads.push(m.payload);
    }
    sqlx::query(
        "INSERT INTO outbox (topic, ordering_key, payload, created_at, next_attempt_at)
         SELECT t, k, p, $4, $4
         FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS m(t, k, p, i)
         ORDER BY i",
    )
    .bind(topics)
    .bind(keys)
    .bind(payloads)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Advisory lock keys (arbitrary, fixed): one for migrations, one serialising changes
/// that could remove the last active superuser.
const MIGRATION_LOCK: i64 = 0x526f_7374_6572_0001;
const SUPERUSER_LOCK: i64 = 0x526f_7374_6572_0002;

pub struct PostgresStore {
    pool: PgPool,
    pool_size: u32,
    /// One connection for LISTEN, apart from the request pool.
    listener_pool: PgPool,
    listener: std::sync::OnceLock<Arc<ListenerHealth>>,
    applied: Arc<Applied>,
    barrier: ReadBarrier,
}

impl PostgresStore {
    pub async fn open(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        let listener_options = options.clone().application_name(LISTENER_APPLICATION_NAME);
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(listener_options);
        Ok(Self {
            barrier: ReadBarrier::start(options.application_name(BARRIER_APPLICATION_NAME)),
            pool,
            pool_size,
            listener_pool,
            listener: std::sync::OnceLock::new(),
            applied: Arc::default(),
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

/// A user from a row that starts with `USER_COLUMNS`, read by position (a page of users
/// is read a column at a time, and name lookups were a visible share of it).
fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        full_name: row.try_get(2)?,
        is_active: row.try_get(3)?,
        is_superuser: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        email_verified: row.try_get(7)?,
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
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
             version    BIGINT      PRIMARY KEY,
             name       TEXT        NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL
         )"
    )))
    .execute(&mut *tx)
    .await?;
    let current: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COALESCE(MAX(version), 0)::BIGINT FROM {VERSION_TABLE}"
    )))
    .fetch_one(&mut *tx)
    .await?;
    let mut applied = Vec::new();
    for migration in migrations::pending(list, current)? {
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
        if let Some(Fixup::FoldEmailKeys) = migration.fixup {
            fold_email_keys(&mut tx).await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES ($1, $2, $3)"
        )))
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(migrations::report(list, applied))
}

const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, ip, user_agent, revoked_at";

fn session_from_row(row: &PgRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

async fn insert_token(
    tx: &mut sqlx::PgConnection,
    token: &NewRefreshToken,
    session_id: &str,
    user_id: UserId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&token.token_hash)
    .bind(session_id)
    .bind(user_id)
    .bind(token.expires_at)
    .bind(token.created_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Ends the live sessions in `scope` and revokes their refresh tokens; returns whose
/// sessions they were. The caller NOTIFYs (most callers already do for the user).
async fn end_session_rows(
    tx: &mut sqlx::PgConnection,
    scope: SessionScope,
    now: DateTime<Utc>,
) -> Result<Vec<UserId>, StoreError> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE sessions SET revoked_at = ");
    qb.push_bind(now).push(" WHERE revoked_at IS NULL AND ");
    match scope {
        SessionScope::One {
            user_id,
            session_id,
        } => {
            qb.push("id = ")
                .push_bind(session_id)
                .push(" AND user_id = ")
                .push_bind(user_id);
        }
        SessionScope::AllOf { user_id, except } => {
            qb.push("user_id = ").push_bind(user_id);
            if let Some(keep) = except {
                qb.push(" AND id <> ").push_bind(keep);
            }
        }
        SessionScope::OfToken { token_hash } => {
            qb.push("id = (SELECT family_id FROM refresh_tokens WHERE token_hash = ")
                .push_bind(token_hash)
                .push(")");
        }
    }
    qb.push(" RETURNING id, user_id");
    let ended: Vec<(String, UserId)> = qb.build_query_as().fetch_all(&mut *tx).await?;
    if ended.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ended.iter().map(|(id, _)| id.clone()).collect();
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = ANY($2) AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let mut users: Vec<UserId> = ended.into_iter().map(|(_, user)| user).collect();
    users.sort_unstable();
    users.dedup();
    Ok(users)
}

/// Re-folds the keys of emails with characters beyond ASCII, where lower() may differ.
async fn fold_email_keys(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    let rows: Vec<(UserId, String)> =
        sqlx::query_as("SELECT id, email FROM users WHERE email ~ '[^ -~]'")
            .fetch_all(&mut *tx)
            .await?;
    for (id, email) in rows {
        sqlx::query("UPDATE users SET email_key = $1 WHERE id = $2")
            .bind(fold_email(&email))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::EmailTaken => StoreError::Other(format!(
                    "two accounts share the address {email} in different letter case; rename one and start again"
                )),
                other => other,
            })?;
    }
    Ok(())
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

/// Pushes the filter's WHERE clause; whether there was one.
fn push_filter(qb: &mut QueryBuilder<Postgres>, query: &UserQuery) -> bool {
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
    sep == " AND "
}

/// The filter's WHERE clause, and when `after` is given, only the rows after it in the
/// query's order (keyset paging), with sqlx binds.
fn push_filter_after(qb: &mut QueryBuilder<Postgres>, query: &UserQuery, after: Option<&Keyset>) {
    let filtered = push_filter(qb, query);
    let Some(after) = after else { return };
    qb.push(if filtered { " AND " } else { " WHERE " });
    let op = match query.sort.direction {
        SortDirection::Asc => " > ",
        SortDirection::Desc => " < ",
    };
    let bind_key = |qb: &mut QueryBuilder<Postgres>| match &after.value {
        SortValue::Time(t) => {
            qb.push_bind(*t);
        }
        SortValue::Text(s) => {
            qb.push_bind(s.clone());
        }
        SortValue::Id => {}
    };
    match sort_key_sql(query.sort.field, " COLLATE \"C\"") {
        // A row comparison, which means the same as `store::keyset_sql`'s
        // `key < a OR (key = a AND id < b)` for non-null keys, is what PostgreSQL turns into
        // a range of the `(…, key, id)` index: the OR form made it walk the index from the
        // first page on and filter (61 ms halfway through a million users, 129 ms at the end).
        Some(key) => {
            qb.push("(").push(&key).push(", id)").push(op).push("(");
            bind_key(qb);
            qb.push(", ").push_bind(after.id).push(")");
        }
        None => {
            qb.push("id").push(op).push_bind(after.id);
        }
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
            self.applied.clone(),
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
        let Some(latest) = self.barrier.latest_before_now().await else {
            return false;
        };
        self.applied.wait_to_cover(latest, CURRENT_WAIT).await
    }

    fn coherence_stats(&self) -> Option<CoherenceStats> {
        Some(self.barrier.stats())
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

    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM app_settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_settings(&self, pairs: Vec<(String, String)>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (key, value) in pairs {
            sqlx::query(
                "INSERT INTO app_settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_user(&self, user: NewUser, effects: SideEffects) -> Result<User, StoreError> {
        let created_at = user.created_at.unwrap_or_else(now_micros);
        let key = user.email.key();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO users (email, email_key, full_name, hashed_password, is_active, is_superuser, created_at, updated_at, email_verified)
             VALUES ($1, $7, $2, $3, $4, $5, $6, $6, $8) RETURNING {USER_COLUMNS}"
        )))
        .bind(user.email.as_str())
        .bind(user.full_name.map(|n| n.into_inner()))
        .bind(user.hashed_password)
        .bind(user.is_active)
        .bind(user.is_superuser)
        .bind(created_at)
        .bind(key)
        .bind(user.email_verified)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&row)?;
        write_effects(&mut tx, user.id, effects, now_micros()).await?;
        notify_users(&mut tx, &[user.id]).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn create_users(
        &self,
        users: Vec<NewUser>,
        audit: Vec<AuditRecord>,
    ) -> Result<Vec<User>, StoreError> {
        let now = now_micros();
        let mut emails = Vec::with_capacity(users.len());
        let mut keys = Vec::with_capacity(users.len());
        let mut verified = Vec::with_capacity(users.len());
        let mut names = Vec::with_capacity(users.len());
        let mut hashes = Vec::with_capacity(users.len());
        let mut active = Vec::with_capacity(users.len());
        let mut superuser = Vec::with_capacity(users.len());
        let mut created_at = Vec::with_capacity(users.len());
        for user in users {
            keys.push(user.email.key());
            verified.push(user.email_verified);
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
            "INSERT INTO users (email, email_key, full_name, hashed_password, is_active, is_superuser, created_at, updated_at, email_verified)
             SELECT e, k, n, h, a, s, c, c, v
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::timestamptz[], $7::text[], $8::bool[])
                  WITH ORDINALITY AS t(e, n, h, a, s, c, k, v, i)
             ORDER BY i
             RETURNING {USER_COLUMNS}"
        )))
        .bind(emails)
        .bind(names)
        .bind(hashes)
        .bind(active)
        .bind(superuser)
        .bind(created_at)
        .bind(keys)
        .bind(verified)
        .fetch_all(&mut *tx)
        .await?;
        let mut created = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        created.sort_by_key(|u| u.id);
        let ids: Vec<UserId> = created.iter().map(|u| u.id).collect();
        insert_audit(&mut tx, &audit, &ids).await?;
        notify_users(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn existing_email_keys(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT k FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n)
             WHERE EXISTS (SELECT 1 FROM users WHERE email_key COLLATE \"C\" = k COLLATE \"C\")
             ORDER BY n",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await?)
    }

    fn export_users(&self, query: &UserQuery, after: Option<&Keyset>) -> UserChunks {
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_AHEAD);
        let pool = self.pool.clone();
        let query = query.clone();
        let after = after.cloned();
        let request = request_context::current();
        tokio::spawn(request_context::continue_scope(request, async move {
            let produce = async {
                let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
                push_filter_after(&mut qb, &query, after.as_ref());
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
        }));
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
            "SELECT {USER_COLUMNS}, hashed_password FROM users WHERE email_key COLLATE \"C\" = $1"
        )))
        .bind(email.key())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(UserCredentials {
                user: user_from_row(&row)?,
                hashed_password: row.try_get(8)?,
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

    async fn update_user(
        &self,
        id: UserId,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user = update_row(&mut tx, id, changes).await?;
        write_effects(&mut tx, id, effects, now_micros()).await?;
        notify_users(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn delete_user(&self, id: UserId, audit: Vec<AuditRecord>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let was_active_superuser = is_active_superuser(&mut tx, id).await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if needs_another_active_superuser(was_active_superuser, false) {
            ensure_active_superuser_remains(&mut tx).await?;
        }
        insert_audit(&mut tx, &audit, &[id]).await?;
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

    async fn has_users(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn list_users_after(
        &self,
        query: &UserQuery,
        after: Option<&Keyset>,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
        push_filter_after(&mut qb, query, after);
        qb.push(order_sql(query));
        qb.push(" LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = qb.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn count_matching(&self, query: &UserQuery) -> Result<u64, StoreError> {
        let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM users");
        push_filter(&mut qb, query);
        let total: i64 = qb.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(count(total))
    }

    async fn list_users(
        &self,
        query: &UserQuery,
        known_total: Option<u64>,
    ) -> Result<Page<User>, StoreError> {
        let page_query = |offset: i64| {
            let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
            push_filter(&mut qb, query);
            qb.push(order_sql(query));
            qb.push(" LIMIT ")
                .push_bind(query.page.limit())
                .push(" OFFSET ")
                .push_bind(offset);
            qb
        };
        let rows = |rows: Vec<PgRow>| {
            rows.iter()
                .map(user_from_row)
                .collect::<Result<Vec<_>, _>>()
        };
        if let Some(total) = known_total {
            // The total is known (from the cached figures): one statement, no transaction.
            let items = match query.page.offset() {
                Some(offset) if offset < i64::try_from(total).unwrap_or(i64::MAX) => {
                    rows(page_query(offset).build().fetch_all(&self.pool).await?)?
                }
                _ => Vec::new(),
            };
            return Ok(Page::new(items, total, &query.page));
        }
        // One snapshot for the count and the page.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut count_qb = QueryBuilder::new("SELECT COUNT(*) FROM users");
        push_filter(&mut count_qb, query);
        let total: i64 = count_qb.build_query_scalar().fetch_one(&mut *tx).await?;
        let items = match query.page.offset() {
            Some(offset) if offset < total => {
                rows(page_query(offset).build().fetch_all(&mut *tx).await?)?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok(Page::new(items, count(total), &query.page))
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

    async fn count_created_between(
        &self,
        bounds: Vec<DateTime<Utc>>,
    ) -> Result<Vec<u64>, StoreError> {
        if bounds.len() < 2 {
            return Ok(Vec::new());
        }
        let (starts, ends) = (&bounds[..bounds.len() - 1], &bounds[1..]);
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM users WHERE created_at >= w.lo AND created_at < w.hi)
             FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY AS w(lo, hi, n)
             ORDER BY w.n",
        )
        .bind(starts)
        .bind(ends)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(count).collect())
    }

    async fn open_session(
        &self,
        session: SessionRecord,
        first_token: NewRefreshToken,
        audit: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip, user_agent)
             VALUES ($1, $2, $3, $3, $4, $5, $6)",
        )
        .bind(&session.id)
        .bind(session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(&session.ip)
        .bind(&session.user_agent)
        .execute(&mut *tx)
        .await?;
        insert_token(&mut tx, &first_token, &session.id, session.user_id).await?;
        insert_audit(&mut tx, &audit, &[session.user_id]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next: NewRefreshToken,
        now: DateTime<Utc>,
        reused: AuditRecord,
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The session row first, locked: rotations, logouts and revocations of one session
        // take their turns, so a token minted here is seen by any revocation after it.
        let session_id: Option<String> =
            sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(session_id) = &session_id {
            sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "SELECT t.id, t.family_id, t.user_id, t.expires_at,
                    t.used_at IS NOT NULL OR t.revoked_at IS NOT NULL AS spent,
                    s.revoked_at IS NULL AND s.expires_at > $2 AS session_live,
                    u.is_active, s.expires_at AS session_expires_at
             FROM refresh_tokens AS t
             JOIN sessions AS s ON s.id = t.family_id
             JOIN users AS u ON u.id = t.user_id
             WHERE t.token_hash = $1
             FOR UPDATE OF t",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let found = match &row {
            Some(row) => Some(TokenRow {
                id: row.try_get("id")?,
                session_id: row.try_get("family_id")?,
                user_id: row.try_get("user_id")?,
                expires_at: row.try_get("expires_at")?,
                spent: row.try_get("spent")?,
                session_live: row.try_get("session_live")?,
                user_active: row.try_get("is_active")?,
                session_expires_at: row.try_get("session_expires_at")?,
            }),
            None => None,
        };
        let outcome = match rotation_step(found, next, now) {
            RotationStep::Spend {
                token_id,
                session_id,
                user_id,
                next,
            } => {
                sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(token_id)
                    .execute(&mut *tx)
                    .await?;
                insert_token(&mut tx, &next, &session_id, user_id).await?;
                sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&session_id)
                    .execute(&mut *tx)
                    .await?;
                Rotation::Rotated {
                    user_id,
                    session_id,
                }
            }
            RotationStep::EndSession {
                session_id,
                user_id,
            } => {
                end_session_rows(
                    &mut tx,
                    SessionScope::One {
                        user_id,
                        session_id,
                    },
                    now,
                )
                .await?;
                insert_audit(&mut tx, std::slice::from_ref(&reused), &[user_id]).await?;
                // Other instances must stop accepting the session's access tokens too.
                notify_users(&mut tx, &[user_id]).await?;
                Rotation::Refused {
                    decision: RefreshDecision::Replayed,
                    user_id: Some(user_id),
                }
            }
            RotationStep::Answer(rotation) => rotation,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn list_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC, id DESC"
        )))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn touch_session(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND last_used_at < $1")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn end_sessions(
        &self,
        scope: SessionScope,
        now: DateTime<Utc>,
        audit: AuditRecord,
    ) -> Result<Vec<UserId>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let users = end_session_rows(&mut tx, scope, now).await?;
        if !users.is_empty() {
            let mut whose = users.clone();
            whose.sort_unstable();
            whose.dedup();
            insert_audit(&mut tx, std::slice::from_ref(&audit), &whose).await?;
            notify_users(&mut tx, &users).await?;
        }
        tx.commit().await?;
        Ok(users)
    }

    async fn prune_sessions(&self, now: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let batch = i64::from(batch);
        let tokens = sqlx::query(
            "DELETE FROM refresh_tokens WHERE id IN (
                 SELECT t.id FROM refresh_tokens AS t
                 LEFT JOIN sessions AS s ON s.id = t.family_id
                 WHERE t.expires_at <= $1 OR s.id IS NULL
                    OR s.revoked_at IS NOT NULL OR s.expires_at <= $1
                 LIMIT $2)",
        )
        .bind(now)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE id IN (
                 SELECT s.id FROM sessions AS s
                 WHERE (s.revoked_at IS NOT NULL OR s.expires_at <= $1)
                   AND NOT EXISTS (SELECT 1 FROM refresh_tokens AS t WHERE t.family_id = s.id)
                 LIMIT $2)",
        )
        .bind(now)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(tokens + sessions)
    }

    async fn login_failures(
        &self,
        email_key: &str,
    ) -> Result<Option<(u32, DateTime<Utc>)>, StoreError> {
        let row: Option<(i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT failures, window_start FROM login_failures WHERE email_key = $1",
        )
        .bind(email_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(n, at)| (u32::try_from(n).unwrap_or(0), at)))
    }

    async fn record_login_failure(
        &self,
        email_key: &str,
        now: DateTime<Utc>,
        window_opened_after: DateTime<Utc>,
        audit: FailureAudit,
    ) -> Result<(u32, DateTime<Utc>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let (n, at): (i32, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO login_failures AS f (email_key, failures, window_start) VALUES ($1, 1, $2)
             ON CONFLICT (email_key) DO UPDATE SET
                 failures = CASE WHEN f.window_start > $3 THEN f.failures + 1 ELSE 1 END,
                 window_start = CASE WHEN f.window_start > $3 THEN f.window_start ELSE $2 END
             RETURNING failures, window_start",
        )
        .bind(email_key)
        .bind(now)
        .bind(window_opened_after)
        .fetch_one(&mut *tx)
        .await?;
        let n = u32::try_from(n).unwrap_or(0);
        let mut events = vec![audit.failed];
        if n == audit.limit {
            events.push(audit.locked);
        }
        insert_audit(&mut tx, &events, &[]).await?;
        tx.commit().await?;
        Ok((n, at))
    }

    async fn clear_login_failures(&self, email_key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE email_key = $1")
            .bind(email_key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_login_failures(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM login_failures WHERE window_start < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn upgrade_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET hashed_password = $1 WHERE id = $2 AND hashed_password = $3")
            .bind(new_hash)
            .bind(user_id)
            .bind(old_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_effects(
        &self,
        user_id: UserId,
        effects: SideEffects,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        write_effects(&mut tx, user_id, effects, now_micros()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue(
        &self,
        messages: Vec<OutboxMessage>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_messages(&mut conn, messages, now).await
    }

    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenOwner>, StoreError> {
        let row: Option<(UserId, String)> = sqlx::query_as(
            "SELECT t.user_id, t.email_key FROM one_time_tokens AS t
             JOIN users AS u ON u.id = t.user_id AND u.email_key = t.email_key
             WHERE t.token_hash = $1 AND t.kind = $2 AND t.expires_at > $3",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, email_key)| TokenOwner { user_id, email_key }))
    }

    async fn redeem_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The DELETE locks the token row: of two redemptions racing, one finds it gone.
        let owner: Option<UserId> = sqlx::query_scalar(
            "DELETE FROM one_time_tokens AS t
             USING users AS u
             WHERE t.token_hash = $1 AND t.kind = $2 AND t.expires_at > $3
               AND u.id = t.user_id AND u.email_key = t.email_key
             RETURNING t.user_id",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let user_id = owner.ok_or(StoreError::TokenInvalid)?;
        let user = update_row(&mut tx, user_id, changes).await?;
        write_effects(&mut tx, user_id, effects, now).await?;
        notify_users(&mut tx, &[user_id]).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // SKIP LOCKED: instances claiming at once take different rows instead of waiting.
        let rows: Vec<(i64, String, String, i32, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE outbox SET locked_until = $2, attempts = attempts + 1
             WHERE id IN (
                 SELECT o.id FROM outbox AS o
                 WHERE o.status = 'pending' AND o.next_attempt_at <= $1
                   AND (o.locked_until IS NULL OR o.locked_until <= $1)
                   AND (o.ordering_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM outbox AS p
                       WHERE p.ordering_key = o.ordering_key AND p.status = 'pending'
                         AND p.id < o.id))
                 ORDER BY o.id LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, topic, payload, attempts, created_at",
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut items: Vec<OutboxItem> = rows
            .into_iter()
            .map(|(id, topic, payload, attempts, created_at)| OutboxItem {
                id,
                topic: Topic::parse(&topic),
                payload,
                attempts: u32::try_from(attempts).unwrap_or(0),
                created_at,
            })
            .collect();
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    async fn finish_outbox(
        &self,
        id: i64,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let query = match delivery {
            Delivery::Delivered => sqlx::query(
                "UPDATE outbox SET status = 'sent', payload = '', locked_until = NULL,
                     finished_at = $2, last_error = NULL
                 WHERE id = $1",
            )
            .bind(id)
            .bind(now),
            Delivery::Retry { at, error } => sqlx::query(
                "UPDATE outbox SET next_attempt_at = $2, locked_until = NULL, last_error = $3
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(at)
            .bind(error),
            Delivery::GaveUp { error } => sqlx::query(
                "UPDATE outbox SET status = 'failed', locked_until = NULL, finished_at = $2,
                     last_error = $3
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(now)
            .bind(error),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        // Each half reads its own partial index, never the delivered rows.
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT topic, 'pending', COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY topic
             UNION ALL
             SELECT topic, 'failed', COUNT(*) FROM outbox WHERE status = 'failed' GROUP BY topic",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(OutboxCounts::from_rows(
            rows.into_iter().map(|(t, s, n)| (t, s, count(n))).collect(),
        ))
    }

    async fn prune_outbox(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let messages = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox WHERE status <> 'pending' AND finished_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?
        .rows_affected();
        let tokens = sqlx::query(
            "DELETE FROM one_time_tokens WHERE token_hash IN (
                 SELECT token_hash FROM one_time_tokens WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(now_micros())
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(messages + tokens)
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, at, action, actor_id, actor_ip, target_id, request_id, details::text
             FROM audit_events WHERE TRUE",
        );
        match &query.action {
            Some(ActionFilter::Exact(action)) => {
                qb.push(" AND action = ").push_bind(action.clone());
            }
            Some(ActionFilter::Prefix(prefix)) => {
                qb.push(" AND action >= ").push_bind(prefix.clone());
                qb.push(" AND action < ").push_bind(prefix_end(prefix));
            }
            None => {}
        }
        if let Some(id) = query.actor_id {
            qb.push(" AND actor_id = ").push_bind(id);
        }
        if let Some(id) = query.target_id {
            qb.push(" AND target_id = ").push_bind(id);
        }
        if let Some(after) = query.after {
            qb.push(" AND at >= ").push_bind(after);
        }
        if let Some(before) = query.before {
            qb.push(" AND at < ").push_bind(before);
        }
        if let Some(id) = query.before_id {
            qb.push(" AND id < ").push_bind(id);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get(7)?;
                Ok(AuditEvent {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    action: r.try_get(2)?,
                    actor_id: r.try_get(3)?,
                    actor_ip: r.try_get(4)?,
                    target_id: r.try_get(5)?,
                    request_id: r.try_get(6)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn prune_audit(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM audit_events WHERE id IN (
                 SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
