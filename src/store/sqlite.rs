//! The embedded backend: rusqlite behind an r2d2 pool, every call on the blocking pool.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params, params_from_iter,
    types::Value,
};
use tokio::sync::Semaphore;

use super::{
    ActionFilter, AuditEvent, AuditQuery, AuditRecord, Delivery, EXPORT_CHUNK_ROWS,
    EXPORT_CHUNKS_AHEAD, FailureAudit, MigrationReport, NewRefreshToken, OutboxCounts, OutboxItem,
    OutboxMessage, PoolStatus, Rotation, RotationStep, SessionRecord, SessionScope, SideEffects,
    StoreError, TokenKind, TokenOwner, TokenRow, Topic, USER_COLUMNS, UserChunks, UserCredentials,
    UserStore, dashboard_windows, details_text, keyset_sql, like_pattern,
    migrations::{self, Fixup, Migration, VERSION_TABLE},
    order_by_sql, prefix_end, rotation_step, search_can_match,
    sqlite_group::GroupCommit,
};
use crate::{
    config::SqliteLocation,
    domain::{
        DashboardStats, Email, EndSessions, Keyset, NewUser, Page, RefreshDecision, SortValue,
        User, UserChanges, UserId, UserQuery, fold_email, needs_another_active_superuser,
        now_micros,
    },
    request_context,
};

/// SQLite names the column, not the index, when a unique index on a column is violated.
const EMAIL_UNIQUE_COLUMN: &str = "users.email_key";
const BUSY_TIMEOUT_MS: u32 = 5_000;
/// Page cache per reader connection. Small: readers share the OS page cache, and a pool of
/// large private caches would hold the same hot pages several times over.
const CACHE_KIB: u32 = 4_096;
/// The writer's: twice a reader's, as writes touch every index of the rows they change.
/// Under mixed load (30% writes) it fills whatever it is given; 16 MiB wrote no faster than
/// 8 and held 10–12 MB more at the memory peak (BENCHMARKS.md, "a smaller writer cache").
const WRITER_CACHE_KIB: u32 = 8_192;
/// Reads through a shared memory map of the file: a reader's private page cache is emptied
/// whenever another connection commits, and re-reading through `pread` copies every page.
const MMAP_BYTES: u64 = 1 << 30;
/// The width of a `user_signups_by_day` row (its triggers, in migration 11, say it in SQL).
const MICROS_PER_DAY: i64 = 86_400_000_000;
const LARGE_BATCH_ROWS: usize = 5_000;
const LARGE_BATCH_CACHE_KIB: u32 = 524_288;
/// The trigram index cannot answer shorter search terms; they scan.
const TRIGRAM_MIN_CHARS: usize = 3;

pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pool: Pool<SqliteConnectionManager>,
    /// The one writer connection. SQLite admits one writer at a time; queueing writers
    /// here wakes each in turn, where contending connections would sleep in SQLite's busy
    /// handler (1, 2, 5, … 100 ms) and wreck tail latency.
    writer: Pool<SqliteConnectionManager>,
    /// Callers wait here, asynchronously, rather than parked on a blocking thread: a queue
    /// of writers must not hold threads (and their memory) while the writer is busy.
    reader_slots: Arc<Semaphore>,
    writer_slot: Arc<Semaphore>,
    /// Single writes queue here and commit in groups (`sqlite_group`).
    grouped: GroupCommit,
}

/// The writer keeps a larger page cache: writes touch every index of the rows they change.
fn configure_writer(conn: &mut Connection) -> rusqlite::Result<()> {
    configure(conn)?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))
}

fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -{CACHE_KIB};
         PRAGMA mmap_size = {MMAP_BYTES};
         PRAGMA temp_store = MEMORY;"
    ))?;
    // WAL is a property of the file, set once. Switching needs an exclusive lock, and
    // SQLite answers "locked" at once rather than waiting when another process holds the
    // file during its own switch, so wait here.
    let deadline = std::time::Instant::now() + Duration::from_millis(BUSY_TIMEOUT_MS.into());
    loop {
        let mode = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .and_then(|mode| {
                if mode.eq_ignore_ascii_case("wal") {
                    Ok(mode)
                } else {
                    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
                }
            });
        match mode {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.map(|_| ()),
        }
    }
}

/// Creates the database file readable by its owner only (it holds password hashes and the
/// JWT key); SQLite gives its -wal and -shm files the same mode. An existing file is left
/// as it is.
fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl SqliteStore {
    pub async fn open(location: &SqliteLocation, pool_size: u32) -> Result<Self, StoreError> {
        let location = location.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(&location, pool_size))
            .await
            .map_err(|e| StoreError::Other(format!("open task failed: {e}")))?
    }

    fn open_blocking(location: &SqliteLocation, pool_size: u32) -> Result<Self, StoreError> {
        let (manager, builder, writer_manager) = match location {
            SqliteLocation::File(path) => {
                create_private(path)?;
                // A direct open first, so a bad path fails at once with SQLite's own reason
                // instead of after the pool's connection timeout.
                let mut probe = Connection::open(path).map_err(|e| {
                    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
                })?;
                configure(&mut probe).map_err(|e| {
                    StoreError::Unavailable(format!("cannot use {}: {e}", path.display()))
                })?;
                // SQLite silently opens a file it may not write read-only; every write
                // would then fail. Refuse at start-up instead.
                if probe.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
                    return Err(StoreError::Unavailable(format!(
                        "{} is read-only: Roster needs to write to its database",
                        path.display()
                    )));
                }
                (
                    SqliteConnectionManager::file(path),
                    Pool::builder().max_size(pool_size),
                    Some(SqliteConnectionManager::file(path)),
                )
            }
            // One connection owns an in-memory database; it must never be recycled.
            SqliteLocation::Memory => (
                SqliteConnectionManager::memory(),
                Pool::builder()
                    .max_size(1)
                    .min_idle(Some(1))
                    .idle_timeout(None)
                    .max_lifetime(None),
                None,
            ),
        };
        let pool = builder
            .connection_timeout(Duration::from_secs(10))
            .build(manager.with_init(configure))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let writer = match writer_manager {
            Some(manager) => Pool::builder()
                .max_size(1)
                .connection_timeout(Duration::from_secs(30))
                .build(manager.with_init(configure_writer))
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            None => pool.clone(),
        };
        // Readers may queue a little deeper than the pool: the wait for a connection is
        // then short, and threads stay few.
        let reader_slots = Arc::new(Semaphore::new(2 * pool.max_size() as usize));
        Ok(Self {
            pool,
            writer,
            reader_slots,
            writer_slot: Arc::new(Semaphore::new(1)),
            grouped: GroupCommit::default(),
        })
    }

    /// Runs `work` with a reader connection on the blocking thread pool, in the caller's span.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.pool.clone(), &self.reader_slots, work).await
    }

    /// A single write on the writer connection, committed with the writes queued beside it
    /// (`sqlite_group`); `work` takes a savepoint, not a transaction.
    async fn run_grouped<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.grouped
            .run(self.writer.clone(), self.writer_slot.clone(), work)
            .await
    }

    /// Like `run`, alone on the single writer connection: for work that needs the file to
    /// itself or manages its own transactions (migrations, bulk loads, backups).
    async fn run_write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.writer.clone(), &self.writer_slot, work).await
    }

    async fn on<T, F>(
        pool: Pool<SqliteConnectionManager>,
        slots: &Arc<Semaphore>,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let request = request_context::current();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            request_context::sync_scope(request, || {
                let mut conn = pool
                    .get()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                work(&mut conn)
            })
        })
        .await
        .map_err(|e| StoreError::Other(format!("database task failed: {e}")))?
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(failure, message) = &err {
            let message = message.clone().unwrap_or_default();
            return match failure.code {
                ErrorCode::ConstraintViolation if message.contains(EMAIL_UNIQUE_COLUMN) => {
                    StoreError::EmailTaken
                }
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::ReadOnly
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt => StoreError::Unavailable(err.to_string()),
                _ => StoreError::Other(err.to_string()),
            };
        }
        StoreError::Other(err.to_string())
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn timestamp(row: &Row, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let value: i64 = row.get(idx)?;
    DateTime::from_timestamp_micros(value)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        full_name: row.get(2)?,
        is_active: row.get(3)?,
        is_superuser: row.get(4)?,
        created_at: timestamp(row, 5)?,
        updated_at: timestamp(row, 6)?,
        email_verified: row.get(7)?,
    })
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn apply_migrations(
    conn: &mut Connection,
    list: &[Migration],
) -> Result<MigrationReport, StoreError> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         )"
    ))?;
    // IMMEDIATE: the write lock first, so two processes cannot both apply.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row(
        &format!("SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"),
        [],
        |r| r.get(0),
    )?;
    let mut applied = Vec::new();
    for migration in migrations::pending(list, current)? {
        tx.execute_batch(migration.sql)?;
        if let Some(Fixup::FoldEmailKeys) = migration.fixup {
            fold_email_keys(&tx)?;
        }
        tx.execute(
            &format!("INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES (?1, ?2, ?3)"),
            params![migration.version, migration.name, micros(now_micros())],
        )?;
        applied.push(migration.version);
    }
    tx.commit()?;
    Ok(migrations::report(list, applied))
}

const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, ip, user_agent, revoked_at";

fn session_from_row(row: &Row) -> rusqlite::Result<SessionRecord> {
    let revoked_at: Option<i64> = row.get(7)?;
    Ok(SessionRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        created_at: timestamp(row, 2)?,
        last_used_at: timestamp(row, 3)?,
        expires_at: timestamp(row, 4)?,
        ip: row.get(5)?,
        user_agent: row.get(6)?,
        revoked_at: revoked_at.and_then(DateTime::from_timestamp_micros),
    })
}

fn insert_token(
    conn: &Connection,
    token: &NewRefreshToken,
    session_id: &str,
    user_id: UserId,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            token.token_hash,
            session_id,
            user_id,
            micros(token.expires_at),
            micros(token.created_at)
        ],
    )?;
    Ok(())
}

/// Ends the live sessions matching `condition` and revokes their refresh tokens; returns
/// whose sessions they were. The condition's parameters are ?1, ?2…
fn end_session_rows(
    conn: &Connection,
    condition: &str,
    values: impl rusqlite::Params + Clone,
    now: DateTime<Utc>,
) -> Result<Vec<UserId>, StoreError> {
    let now = micros(now);
    let mut stmt = conn.prepare(&format!(
        "UPDATE sessions SET revoked_at = {now}
         WHERE revoked_at IS NULL AND ({condition})
         RETURNING id, user_id"
    ))?;
    let ended = stmt
        .query_map(values, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, UserId>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut revoke = conn.prepare_cached(
        "UPDATE refresh_tokens SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
    )?;
    let mut users: Vec<UserId> = Vec::new();
    for (session_id, user_id) in ended {
        revoke.execute(params![now, session_id])?;
        if !users.contains(&user_id) {
            users.push(user_id);
        }
    }
    Ok(users)
}

/// Re-folds the keys of emails with characters beyond ASCII, which SQL's lower() left alone.
fn fold_email_keys(conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT id, email FROM users WHERE email GLOB '*[^ -~]*'")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, UserId>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, email) in rows {
        conn.execute(
            "UPDATE users SET email_key = ?1 WHERE id = ?2",
            params![fold_email(&email), id],
        )
        .map_err(|e| match StoreError::from(e) {
            StoreError::EmailTaken => StoreError::Other(format!(
                "two accounts share the address {email} in different letter case; rename one and start again"
            )),
            other => other,
        })?;
    }
    Ok(())
}

fn is_active_superuser(conn: &Connection, id: UserId) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT is_active = 1 AND is_superuser = 1 FROM users WHERE id = ?1",
            [id],
            |r| r.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false))
}

fn any_active_superuser(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE is_active = 1 AND is_superuser = 1)",
        [],
        |r| r.get(0),
    )?)
}

/// The WHERE clause and its parameters for a list or export filter.
fn filter_sql(query: &UserQuery) -> (String, Vec<Value>) {
    filter_sql_using(query, true)
}

/// The filter's WHERE clause; `trigrams` lets a search start from the trigram index (off
/// when a page walks an index instead, where checking each row it meets is cheaper).
fn filter_sql_using(query: &UserQuery, trigrams: bool) -> (String, Vec<Value>) {
    let filter = &query.filter;
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(active) = filter.is_active {
        values.push(Value::Integer(active.into()));
        clauses.push(format!("is_active = ?{}", values.len()));
    }
    if let Some(superuser) = filter.is_superuser {
        values.push(Value::Integer(superuser.into()));
        clauses.push(format!("is_superuser = ?{}", values.len()));
    }
    if let Some(after) = filter.created_after {
        values.push(Value::Integer(micros(after)));
        clauses.push(format!("created_at >= ?{}", values.len()));
    }
    if let Some(before) = filter.created_before {
        values.push(Value::Integer(micros(before)));
        clauses.push(format!("created_at < ?{}", values.len()));
    }
    if filter
        .search
        .as_deref()
        .is_some_and(|t| !search_can_match(t))
    {
        clauses.push("0 = 1".into());
    } else if let Some(term) = filter.search.as_deref() {
        // LIKE folds ASCII case; other characters match exactly.
        values.push(Value::Text(like_pattern(term)));
        let n = values.len();
        let mut clause =
            format!("(email LIKE ?{n} ESCAPE '\\' OR full_name LIKE ?{n} ESCAPE '\\')");
        if trigrams && term.chars().count() >= TRIGRAM_MIN_CHARS {
            // The trigram index finds a superset of the LIKE matches (it folds case more
            // widely) without scanning the table; the LIKE keeps the result exact.
            values.push(Value::Text(format!("\"{}\"", term.replace('"', "\"\""))));
            clause = format!(
                "id IN (SELECT rowid FROM users_search WHERE users_search MATCH ?{}) AND {clause}",
                values.len()
            );
        }
        clauses.push(clause);
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

/// Byte order, the same as PostgreSQL's with COLLATE "C".
/// How a page is best read when its filters keep many rows. SQLite's planner, given a
/// filter, reads every row it keeps and then sorts them: all 100,000 inactive users of a
/// million to show 25 by email (≈ 90 ms), or every candidate of a three-letter search
/// (33,000 rows checked against the term, ≈ 45 ms). Walking the sort's index and checking
/// rows until the page is full reads about `wanted × users / matching` rows instead of
/// `matching`, so it wins when `matching² > wanted × users`. `matching` is estimated from
/// what is known without reading rows: the kept counts (`user_counts`) and the number of
/// trigram candidates (a read of the search index alone, ≈ 1 ms at that size). Returns the
/// index hint, or nothing (the planner's own choice). A hinted page checks each row it
/// meets against the search term directly, without the trigram index.
fn scan_hint(
    conn: &rusqlite::Connection,
    query: &UserQuery,
    wanted: i64,
) -> rusqlite::Result<&'static str> {
    use crate::domain::SortField;
    let filter = &query.filter;
    // A time range is an index range already; the created_at sort under an is_active
    // filter has its own (is_active, created_at) index.
    // Without a flag or a search the planner walks the sort's index already; a term too
    // short for trigrams, or one that cannot match, is the filter's own business.
    let searchable = filter
        .search
        .as_deref()
        .map(|t| t.chars().count() >= TRIGRAM_MIN_CHARS && search_can_match(t));
    if filter.created_after.is_some()
        || filter.created_before.is_some()
        || searchable == Some(false)
        || (filter.is_active.is_none() && filter.is_superuser.is_none() && searchable.is_none())
        || (query.sort.field == SortField::CreatedAt
            && filter.is_active.is_some()
            && filter.search.is_none())
    {
        return Ok("");
    }
    let (users, inactive, superusers): (i64, i64, i64) = conn
        .prepare_cached("SELECT total, inactive, superusers FROM user_counts WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut matching: Option<i64> = None;
    let mut keep = |n: i64| matching = Some(matching.map_or(n, |m| m.min(n)));
    match filter.is_active {
        Some(true) => keep(users - inactive),
        Some(false) => keep(inactive),
        None => {}
    }
    match filter.is_superuser {
        Some(true) => keep(superusers),
        Some(false) => keep(users - superusers),
        None => {}
    }
    if let Some(term) = filter.search.as_deref() {
        let phrase = format!("\"{}\"", term.replace('"', "\"\""));
        keep(
            conn.prepare_cached("SELECT COUNT(*) FROM users_search WHERE users_search MATCH ?1")?
                .query_row([phrase], |r| r.get(0))?,
        );
    }
    match matching {
        Some(m) if m.saturating_mul(m) > wanted.saturating_mul(users) => {
            Ok(match query.sort.field {
                SortField::CreatedAt => "INDEXED BY users_created_at_idx",
                SortField::Email => "INDEXED BY users_email_key",
                SortField::FullName => "INDEXED BY users_full_name_sort_idx",
                SortField::Id => "NOT INDEXED",
            })
        }
        _ => Ok(""),
    }
}

fn order_sql(query: &UserQuery) -> String {
    order_by_sql(&query.sort, "")
}

/// The filter's WHERE clause, and when `after` is given, only the rows after it in the
/// query's order (keyset paging).
fn filter_after_sql(query: &UserQuery, after: Option<&Keyset>) -> (String, Vec<Value>) {
    filter_after_sql_using(query, after, true)
}

fn filter_after_sql_using(
    query: &UserQuery,
    after: Option<&Keyset>,
    trigrams: bool,
) -> (String, Vec<Value>) {
    let (where_sql, mut values) = filter_sql_using(query, trigrams);
    let Some(after) = after else {
        return (where_sql, values);
    };
    let base = values.len();
    values.push(match &after.value {
        SortValue::Time(t) => Value::Integer(micros(*t)),
        SortValue::Text(s) => Value::Text(s.clone()),
        SortValue::Id => Value::Null,
    });
    values.push(Value::Integer(after.id));
    let keyset = keyset_sql(&query.sort, "", |n| format!("?{}", base + n + 1));
    let condition = if where_sql.is_empty() {
        format!("WHERE {keyset}")
    } else {
        format!("{where_sql} AND {keyset}")
    };
    (condition, values)
}

/// Applies `changes` to user `id` inside the caller's transaction.
fn update_row(tx: &Connection, id: UserId, changes: UserChanges) -> Result<User, StoreError> {
    let was_active_superuser = is_active_superuser(tx, id)?;
    let mut assignments: Vec<(&str, Value)> = Vec::new();
    if let Some(email) = changes.email {
        assignments.push(("email_key", Value::Text(email.key())));
        assignments.push(("email", Value::Text(email.as_str().to_string())));
    }
    if let Some(full_name) = changes.full_name {
        assignments.push((
            "full_name",
            full_name.map_or(Value::Null, |n| Value::Text(n.into_inner())),
        ));
    }
    if let Some(hash) = changes.hashed_password {
        assignments.push(("hashed_password", Value::Text(hash)));
    }
    if let Some(active) = changes.is_active {
        assignments.push(("is_active", Value::Integer(active.into())));
    }
    if let Some(superuser) = changes.is_superuser {
        assignments.push(("is_superuser", Value::Integer(superuser.into())));
    }
    if let Some(verified) = changes.email_verified {
        assignments.push(("email_verified", Value::Integer(verified.into())));
    }
    let updated = if assignments.is_empty() {
        tx.query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
            [id],
            user_from_row,
        )
        .optional()?
    } else {
        assignments.push(("updated_at", Value::Integer(micros(now_micros()))));
        let sets: Vec<String> = assignments
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{column} = ?{}", i + 1))
            .collect();
        let mut values: Vec<Value> = assignments.into_iter().map(|(_, v)| v).collect();
        values.push(Value::Integer(id));
        tx.query_row(
            &format!(
                "UPDATE users SET {} WHERE id = ?{} RETURNING {USER_COLUMNS}",
                sets.join(", "),
                values.len()
            ),
            params_from_iter(values),
            user_from_row,
        )
        .optional()?
    };
    let user = updated.ok_or(StoreError::NotFound)?;
    if needs_another_active_superuser(was_active_superuser, user.is_active && user.is_superuser)
        && !any_active_superuser(tx)?
    {
        return Err(StoreError::LastActiveSuperuser);
    }
    match changes.end_sessions {
        Some(EndSessions::All) => {
            end_session_rows(tx, "user_id = ?1", params![id], now_micros())?;
        }
        Some(EndSessions::AllExcept(keep)) => {
            end_session_rows(
                tx,
                "user_id = ?1 AND id <> ?2",
                params![id, keep],
                now_micros(),
            )?;
        }
        None => {}
    }
    Ok(user)
}

/// Writes a user's side effects inside the caller's transaction.
fn write_effects(
    tx: &Connection,
    user_id: UserId,
    effects: SideEffects,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(token) = effects.token {
        tx.execute(
            "INSERT INTO one_time_tokens (token_hash, kind, user_id, email_key, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (user_id, kind) DO UPDATE SET
                 token_hash = excluded.token_hash, email_key = excluded.email_key,
                 created_at = excluded.created_at, expires_at = excluded.expires_at",
            params![
                token.token_hash,
                token.kind.as_str(),
                user_id,
                token.email_key,
                micros(token.created_at),
                micros(token.expires_at)
            ],
        )?;
    }
    if effects.clear_login_failures {
        tx.execute(
            "DELETE FROM login_failures
             WHERE email_key = (SELECT email_key FROM users WHERE id = ?1)",
            [user_id],
        )?;
    }
    insert_audit(tx, &effects.audit, Some(user_id))?;
    insert_messages(tx, effects.outbox, now)
}

/// Writes events inside the caller's transaction, each with its webhook delivery when it
/// wants one; `changed` is the user `AuditTarget::Changed` stands for.
fn insert_audit(
    tx: &Connection,
    records: &[AuditRecord],
    changed: Option<UserId>,
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut webhooks = Vec::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_events (at, action, actor_id, actor_ip, target_id, request_id, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )?;
        for r in records {
            let target_id = r.target_id(changed);
            let id: i64 = insert.query_row(
                params![
                    micros(r.at),
                    r.action,
                    r.actor_id,
                    r.actor_ip,
                    target_id,
                    r.request_id,
                    details_text(&r.details)
                ],
                |row| row.get(0),
            )?;
            if r.webhook {
                webhooks.push(event_of(id, r, target_id).webhook_message());
            }
        }
    }
    insert_messages(tx, webhooks, now_micros())
}

fn event_of(id: i64, r: &AuditRecord, target_id: Option<UserId>) -> AuditEvent {
    AuditEvent {
        id,
        at: r.at,
        action: r.action.to_string(),
        actor_id: r.actor_id,
        actor_ip: r.actor_ip.clone(),
        target_id,
        request_id: r.request_id.clone(),
        details: r.details.clone(),
    }
}

fn insert_messages(
    tx: &Connection,
    messages: Vec<OutboxMessage>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (topic, ordering_key, payload, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?;
    for message in messages {
        insert.execute(params![
            message.topic.as_str(),
            message.ordering_key,
            message.payload,
            micros(now)
        ])?;
    }
    Ok(())
}

/// Inserts `users` in one transaction with one prepared statement. The search index is fed
/// once for the whole batch instead of by the per-row trigger.
fn insert_users(
    conn: &mut Connection,
    users: Vec<NewUser>,
    audit: &[AuditRecord],
) -> Result<Vec<User>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE search_index_control SET paused = 1 WHERE id = 1",
        [],
    )?;
    let now = micros(now_micros());
    let mut created: Vec<User> = Vec::with_capacity(users.len());
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO users (email, email_key, full_name, hashed_password, is_active, is_superuser, created_at, updated_at, email_verified)
             VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6, ?6, ?8) RETURNING {USER_COLUMNS}"
        ))?;
        for user in users {
            let created_at = user.created_at.map_or(now, micros);
            created.push(insert.query_row(
                params![
                    user.email.as_str(),
                    user.full_name.map(|n| n.into_inner()),
                    user.hashed_password,
                    user.is_active,
                    user.is_superuser,
                    created_at,
                    user.email.key(),
                    user.email_verified
                ],
                user_from_row,
            )?);
        }
    }
    if let (Some(first), Some(last)) = (created.first(), created.last()) {
        tx.execute(
            "INSERT INTO users_search (rowid, email, full_name)
             SELECT id, email, full_name FROM users WHERE id BETWEEN ?1 AND ?2",
            [first.id, last.id],
        )?;
        tx.execute(
            "UPDATE user_counts
             SET total = total + (SELECT COUNT(*) FROM users WHERE id BETWEEN ?1 AND ?2),
                 inactive = inactive + (SELECT COUNT(*) FROM users WHERE id BETWEEN ?1 AND ?2 AND is_active = 0),
                 superusers = superusers + (SELECT COUNT(*) FROM users WHERE id BETWEEN ?1 AND ?2 AND is_superuser = 1)
             WHERE id = 1",
            [first.id, last.id],
        )?;
        tx.execute(
            "INSERT INTO user_signups_by_day (day, users)
             SELECT created_at / ?3, COUNT(*) FROM users WHERE id BETWEEN ?1 AND ?2 GROUP BY 1
             ON CONFLICT (day) DO UPDATE SET users = users + excluded.users",
            [first.id, last.id, MICROS_PER_DAY],
        )?;
    }
    tx.execute(
        "UPDATE search_index_control SET paused = 0 WHERE id = 1",
        [],
    )?;
    for user in &created {
        insert_audit(&tx, audit, Some(user.id))?;
    }
    tx.commit()?;
    Ok(created)
}

#[async_trait]
impl UserStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.run_write(|conn| apply_migrations(conn, migrations::SQLITE))
            .await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            let version: i64 = conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )?;
            let known = migrations::latest_version(migrations::SQLITE);
            if version < known {
                return Err(StoreError::Unavailable(format!(
                    "schema version {version}, expected {known}: run `roster migrate`"
                )));
            }
            Ok(())
        })
        .await
    }

    fn pool_status(&self) -> PoolStatus {
        let state = self.pool.state();
        PoolStatus {
            backend: "sqlite",
            pool_size: self.pool.max_size(),
            checked_in: state.idle_connections,
            checked_out: state.connections.saturating_sub(state.idle_connections),
            total_connections: state.connections,
        }
    }

    async fn get_or_insert_setting(
        &self,
        key: &str,
        candidate: String,
    ) -> Result<String, StoreError> {
        let key = key.to_string();
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            tx.execute(
                "INSERT INTO app_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, candidate],
            )?;
            let value = tx.query_row("SELECT value FROM app_settings WHERE key = ?1", [&key], |r| r.get(0))?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM app_settings WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn set_settings(&self, pairs: Vec<(String, String)>) -> Result<(), StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            for (key, value) in pairs {
                tx.execute(
                    "INSERT INTO app_settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn create_user(&self, user: NewUser, effects: SideEffects) -> Result<User, StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let created_at = micros(user.created_at.unwrap_or_else(now_micros));
            let created = tx.query_row(
                &format!(
                    "INSERT INTO users (email, email_key, full_name, hashed_password, is_active, is_superuser, created_at, updated_at, email_verified)
                     VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6, ?6, ?8) RETURNING {USER_COLUMNS}"
                ),
                params![
                    user.email.as_str(),
                    user.full_name.map(|n| n.into_inner()),
                    user.hashed_password,
                    user.is_active,
                    user.is_superuser,
                    created_at,
                    user.email.key(),
                    user.email_verified
                ],
                user_from_row,
            )?;
            write_effects(&tx, created.id, effects, now_micros())?;
            tx.commit()?;
            Ok(created)
        })
        .await
    }

    async fn create_users(
        &self,
        users: Vec<NewUser>,
        audit: Vec<AuditRecord>,
    ) -> Result<Vec<User>, StoreError> {
        self.run_write(move |conn| {
            // Large loads touch index pages all over the file; a bigger page cache for the
            // duration makes a million-row seed much faster. Given back afterwards.
            let large = users.len() >= LARGE_BATCH_ROWS;
            if large {
                conn.execute_batch(&format!("PRAGMA cache_size = -{LARGE_BATCH_CACHE_KIB}"))?;
            }
            let result = insert_users(conn, users, &audit);
            if large {
                conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))?;
            }
            result
        })
        .await
    }

    async fn existing_email_keys(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let keys = serde_json::to_string(keys).map_err(|e| StoreError::Other(e.to_string()))?;
        self.run(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT j.value FROM json_each(?1) AS j
                 WHERE EXISTS (SELECT 1 FROM users AS u WHERE u.email_key = j.value)
                 ORDER BY j.key",
            )?;
            let rows = stmt.query_map([keys], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    fn export_users(&self, query: &UserQuery, after: Option<&Keyset>) -> UserChunks {
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_AHEAD);
        let pool = self.pool.clone();
        let query = query.clone();
        let after = after.cloned();
        let request = request_context::current();
        tokio::task::spawn_blocking(move || {
            let produce = || -> Result<(), StoreError> {
                let conn = pool
                    .get()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let (where_sql, values) = filter_after_sql(&query, after.as_ref());
                let mut stmt = conn.prepare(&format!(
                    "SELECT {USER_COLUMNS} FROM users {where_sql} {}",
                    order_sql(&query)
                ))?;
                let mut rows = stmt.query(params_from_iter(values))?;
                let mut chunk = Vec::with_capacity(EXPORT_CHUNK_ROWS);
                while let Some(row) = rows.next()? {
                    chunk.push(user_from_row(row)?);
                    if chunk.len() == EXPORT_CHUNK_ROWS
                        && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
                    {
                        return Ok(()); // the client went away
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Ok(chunk));
                }
                Ok(())
            };
            if let Err(e) = request_context::sync_scope(request, produce) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                    [id],
                    user_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let key = email.key();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS}, hashed_password FROM users WHERE email_key = ?1"
                    ),
                    [key],
                    |row| {
                        Ok(UserCredentials {
                            user: user_from_row(row)?,
                            hashed_password: row.get(8)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn get_password_hash(&self, id: UserId) -> Result<Option<String>, StoreError> {
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT hashed_password FROM users WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn update_user(
        &self,
        id: UserId,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let user = update_row(&tx, id, changes)?;
            write_effects(&tx, id, effects, now_micros())?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, id: UserId, audit: Vec<AuditRecord>) -> Result<(), StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let was_active_superuser = is_active_superuser(&tx, id)?;
            if tx.execute("DELETE FROM users WHERE id = ?1", [id])? == 0 {
                return Err(StoreError::NotFound);
            }
            if needs_another_active_superuser(was_active_superuser, false)
                && !any_active_superuser(&tx)?
            {
                return Err(StoreError::LastActiveSuperuser);
            }
            insert_audit(&tx, &audit, Some(id))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.run(|conn| {
            Ok(count(conn.query_row(
                "SELECT COUNT(*) FROM users",
                [],
                |r| r.get(0),
            )?))
        })
        .await
    }

    async fn has_users(&self) -> Result<bool, StoreError> {
        self.run(
            |conn| Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?),
        )
        .await
    }

    async fn list_users_after(
        &self,
        query: &UserQuery,
        after: Option<&Keyset>,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        let (query, after) = (query.clone(), after.cloned());
        self.run(move |conn| {
            let wanted = i64::try_from(limit).unwrap_or(i64::MAX);
            let hint = scan_hint(conn, &query, wanted)?;
            let (condition, mut values) =
                filter_after_sql_using(&query, after.as_ref(), hint.is_empty());
            values.push(Value::Integer(wanted));
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users {hint} {condition} {} LIMIT ?{}",
                order_sql(&query),
                values.len()
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), user_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn count_matching(&self, query: &UserQuery) -> Result<u64, StoreError> {
        let query = query.clone();
        self.run(move |conn| {
            let (where_sql, values) = filter_sql(&query);
            let total: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM users {where_sql}"),
                params_from_iter(values),
                |r| r.get(0),
            )?;
            Ok(count(total))
        })
        .await
    }

    async fn list_users(
        &self,
        query: &UserQuery,
        known_total: Option<u64>,
    ) -> Result<Page<User>, StoreError> {
        let query = query.clone();
        self.run(move |conn| {
            let (where_sql, values) = filter_sql(&query);
            // One read transaction: the total and the page come from the same snapshot.
            let tx = conn.transaction()?;
            let total: i64 = match known_total {
                Some(total) => i64::try_from(total).unwrap_or(i64::MAX),
                None => tx.query_row(
                    &format!("SELECT COUNT(*) FROM users {where_sql}"),
                    params_from_iter(values.iter()),
                    |r| r.get(0),
                )?,
            };
            let items = match query.page.offset() {
                Some(offset) if offset < total => {
                    let hint =
                        scan_hint(&tx, &query, offset.saturating_add(query.page.limit()))?;
                    let (where_sql, mut page_values) = match hint.is_empty() {
                        true => (where_sql, values),
                        false => filter_sql_using(&query, false),
                    };
                    page_values.push(Value::Integer(query.page.limit()));
                    page_values.push(Value::Integer(offset));
                    let n = page_values.len();
                    let sql = format!(
                        "SELECT {USER_COLUMNS} FROM users {hint} {where_sql} {} LIMIT ?{} OFFSET ?{n}",
                        order_sql(&query),
                        n - 1
                    );
                    let mut stmt = tx.prepare(&sql)?;
                    let rows = stmt.query_map(params_from_iter(page_values), user_from_row)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                }
                _ => Vec::new(),
            };
            Ok(Page::new(items, count(total), &query.page))
        })
        .await
    }

    async fn dashboard_stats(&self, now: DateTime<Utc>) -> Result<DashboardStats, StoreError> {
        self.run(move |conn| {
            let (today, week) = dashboard_windows(now);
            // One statement over rows kept by triggers: the totals, and the sign-ups of the
            // UTC days in each window (both windows start at a midnight). A SUM(CASE …)
            // over the table reads every row: ≈ 200 ms at a million users; counting the
            // created_at index's range for the week walks ≈ 190,000 entries at ten million.
            let stats = conn.query_row(
                "SELECT total, inactive, superusers,
                        (SELECT COALESCE(SUM(users), 0) FROM user_signups_by_day WHERE day >= ?1),
                        (SELECT COALESCE(SUM(users), 0) FROM user_signups_by_day WHERE day >= ?2)
                 FROM user_counts WHERE id = 1",
                params![
                    micros(today) / MICROS_PER_DAY,
                    micros(week) / MICROS_PER_DAY
                ],
                |r| {
                    let total = count(r.get(0)?);
                    let inactive = count(r.get(1)?);
                    Ok(DashboardStats {
                        total_users: total,
                        active_users: total.saturating_sub(inactive),
                        inactive_users: inactive,
                        superusers: count(r.get(2)?),
                        new_users_today: count(r.get(3)?),
                        new_users_week: count(r.get(4)?),
                        generated_at: now,
                    })
                },
            )?;
            Ok(stats)
        })
        .await
    }

    async fn count_created_between(
        &self,
        bounds: Vec<DateTime<Utc>>,
    ) -> Result<Vec<u64>, StoreError> {
        self.run(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT COUNT(*) FROM users WHERE created_at >= ?1 AND created_at < ?2",
            )?;
            let mut counts = Vec::with_capacity(bounds.len().saturating_sub(1));
            for window in bounds.windows(2) {
                let n: i64 = statement
                    .query_row(params![micros(window[0]), micros(window[1])], |r| r.get(0))?;
                counts.push(count(n));
            }
            Ok(counts)
        })
        .await
    }

    async fn open_session(
        &self,
        session: SessionRecord,
        first_token: NewRefreshToken,
        audit: Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            tx.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip, user_agent)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
                params![
                    session.id,
                    session.user_id,
                    micros(session.created_at),
                    micros(session.expires_at),
                    session.ip,
                    session.user_agent
                ],
            )?;
            insert_token(&tx, &first_token, &session.id, session.user_id)?;
            insert_audit(&tx, &audit, Some(session.user_id))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next: NewRefreshToken,
        now: DateTime<Utc>,
        reused: AuditRecord,
    ) -> Result<Rotation, StoreError> {
        let token_hash = token_hash.to_string();
        // The single writer serialises rotations, logouts and revocations: the session's
        // state read here cannot change before this transaction commits.
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let found = tx
                .query_row(
                    "SELECT t.id, t.family_id, t.user_id, t.expires_at,
                            t.used_at IS NOT NULL OR t.revoked_at IS NOT NULL,
                            s.revoked_at IS NULL AND s.expires_at > ?2, u.is_active, s.expires_at
                     FROM refresh_tokens AS t
                     JOIN sessions AS s ON s.id = t.family_id
                     JOIN users AS u ON u.id = t.user_id
                     WHERE t.token_hash = ?1",
                    params![token_hash, micros(now)],
                    |r| {
                        Ok(TokenRow {
                            id: r.get(0)?,
                            session_id: r.get(1)?,
                            user_id: r.get(2)?,
                            expires_at: timestamp(r, 3)?,
                            spent: r.get(4)?,
                            session_live: r.get(5)?,
                            user_active: r.get(6)?,
                            session_expires_at: timestamp(r, 7)?,
                        })
                    },
                )
                .optional()?;
            let outcome = match rotation_step(found, next, now) {
                RotationStep::Spend {
                    token_id,
                    session_id,
                    user_id,
                    next,
                } => {
                    tx.execute(
                        "UPDATE refresh_tokens SET used_at = ?1 WHERE id = ?2",
                        params![micros(now), token_id],
                    )?;
                    insert_token(&tx, &next, &session_id, user_id)?;
                    tx.execute(
                        "UPDATE sessions SET last_used_at = ?1 WHERE id = ?2",
                        params![micros(now), session_id],
                    )?;
                    Rotation::Rotated {
                        user_id,
                        session_id,
                    }
                }
                RotationStep::EndSession {
                    session_id,
                    user_id,
                } => {
                    end_session_rows(&tx, "id = ?1", params![session_id], now)?;
                    insert_audit(&tx, std::slice::from_ref(&reused), Some(user_id))?;
                    Rotation::Refused {
                        decision: RefreshDecision::Replayed,
                        user_id: Some(user_id),
                    }
                }
                RotationStep::Answer(rotation) => rotation,
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                    [id],
                    session_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn list_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.run(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                 ORDER BY created_at DESC, id DESC"
            ))?;
            let rows = stmt.query_map(params![user_id, micros(now)], session_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn touch_session(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.run_grouped(move |conn| {
            conn.execute(
                "UPDATE sessions SET last_used_at = ?1 WHERE id = ?2 AND last_used_at < ?1",
                params![micros(now), id],
            )?;
            Ok(())
        })
        .await
    }

    async fn end_sessions(
        &self,
        scope: SessionScope,
        now: DateTime<Utc>,
        audit: AuditRecord,
    ) -> Result<Vec<UserId>, StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let users = match scope {
                SessionScope::One {
                    user_id,
                    session_id,
                } => end_session_rows(
                    &tx,
                    "id = ?1 AND user_id = ?2",
                    params![session_id, user_id],
                    now,
                )?,
                SessionScope::AllOf { user_id, except } => end_session_rows(
                    &tx,
                    "user_id = ?1 AND id IS NOT ?2",
                    params![user_id, except],
                    now,
                )?,
                SessionScope::OfToken { token_hash } => end_session_rows(
                    &tx,
                    "id = (SELECT family_id FROM refresh_tokens WHERE token_hash = ?1)",
                    params![token_hash],
                    now,
                )?,
            };
            let mut whose = users.clone();
            whose.sort_unstable();
            whose.dedup();
            for user_id in whose {
                insert_audit(&tx, std::slice::from_ref(&audit), Some(user_id))?;
            }
            tx.commit()?;
            Ok(users)
        })
        .await
    }

    async fn prune_sessions(&self, now: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        self.run_write(move |conn| {
            let now = micros(now);
            // Tokens first: spent or revoked ones of ended sessions, and expired ones.
            let tokens = conn.execute(
                "DELETE FROM refresh_tokens WHERE id IN (
                     SELECT t.id FROM refresh_tokens AS t
                     LEFT JOIN sessions AS s ON s.id = t.family_id
                     WHERE t.expires_at <= ?1 OR s.id IS NULL
                        OR s.revoked_at IS NOT NULL OR s.expires_at <= ?1
                     LIMIT ?2)",
                params![now, batch],
            )?;
            let sessions = conn.execute(
                "DELETE FROM sessions WHERE id IN (
                     SELECT s.id FROM sessions AS s
                     WHERE (s.revoked_at IS NOT NULL OR s.expires_at <= ?1)
                       AND NOT EXISTS (SELECT 1 FROM refresh_tokens AS t WHERE t.family_id = s.id)
                     LIMIT ?2)",
                params![now, batch],
            )?;
            Ok((tokens + sessions) as u64)
        })
        .await
    }

    async fn login_failures(
        &self,
        email_key: &str,
    ) -> Result<Option<(u32, DateTime<Utc>)>, StoreError> {
        let key = email_key.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT failures, window_start FROM login_failures WHERE email_key = ?1",
                    [key],
                    |r| Ok((r.get::<_, u32>(0)?, timestamp(r, 1)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn record_login_failure(
        &self,
        email_key: &str,
        now: DateTime<Utc>,
        window_opened_after: DateTime<Utc>,
        audit: FailureAudit,
    ) -> Result<(u32, DateTime<Utc>), StoreError> {
        let key = email_key.to_string();
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let counted: (u32, DateTime<Utc>) = tx.query_row(
                "INSERT INTO login_failures (email_key, failures, window_start) VALUES (?1, 1, ?2)
                 ON CONFLICT (email_key) DO UPDATE SET
                     failures = CASE WHEN window_start > ?3 THEN failures + 1 ELSE 1 END,
                     window_start = CASE WHEN window_start > ?3 THEN window_start ELSE ?2 END
                 RETURNING failures, window_start",
                params![key, micros(now), micros(window_opened_after)],
                |r| Ok((r.get::<_, u32>(0)?, timestamp(r, 1)?)),
            )?;
            insert_audit(&tx, std::slice::from_ref(&audit.failed), None)?;
            if counted.0 == audit.limit {
                insert_audit(&tx, std::slice::from_ref(&audit.locked), None)?;
            }
            tx.commit()?;
            Ok(counted)
        })
        .await
    }

    async fn clear_login_failures(&self, email_key: &str) -> Result<(), StoreError> {
        let key = email_key.to_string();
        self.run_grouped(move |conn| {
            conn.execute("DELETE FROM login_failures WHERE email_key = ?1", [key])?;
            Ok(())
        })
        .await
    }

    async fn prune_login_failures(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.run_write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM login_failures WHERE window_start < ?1",
                [micros(before)],
            )? as u64)
        })
        .await
    }

    async fn upgrade_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        let (old_hash, new_hash) = (old_hash.to_string(), new_hash.to_string());
        self.run_grouped(move |conn| {
            conn.execute(
                "UPDATE users SET hashed_password = ?1 WHERE id = ?2 AND hashed_password = ?3",
                params![new_hash, user_id, old_hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_effects(
        &self,
        user_id: UserId,
        effects: SideEffects,
    ) -> Result<(), StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let exists = tx
                .query_row("SELECT 1 FROM users WHERE id = ?1", [user_id], |_| Ok(()))
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            write_effects(&tx, user_id, effects, now_micros())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn enqueue(
        &self,
        messages: Vec<OutboxMessage>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            insert_messages(&tx, messages, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenOwner>, StoreError> {
        let hash = token_hash.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT t.user_id, t.email_key FROM one_time_tokens AS t
                     JOIN users AS u ON u.id = t.user_id AND u.email_key = t.email_key
                     WHERE t.token_hash = ?1 AND t.kind = ?2 AND t.expires_at > ?3",
                    params![hash, kind.as_str(), micros(now)],
                    |r| {
                        Ok(TokenOwner {
                            user_id: r.get(0)?,
                            email_key: r.get(1)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn redeem_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError> {
        let hash = token_hash.to_string();
        self.run_grouped(move |conn| {
            let tx = conn.savepoint()?;
            let owner = tx
                .query_row(
                    "DELETE FROM one_time_tokens
                     WHERE token_hash = ?1 AND kind = ?2 AND expires_at > ?3
                       AND email_key = (SELECT u.email_key FROM users AS u WHERE u.id = user_id)
                     RETURNING user_id",
                    params![hash, kind.as_str(), micros(now)],
                    |r| r.get::<_, UserId>(0),
                )
                .optional()?;
            let user_id = owner.ok_or(StoreError::TokenInvalid)?;
            let user = update_row(&tx, user_id, changes)?;
            write_effects(&tx, user_id, effects, now)?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.run_write(move |conn| {
            let mut claim = conn.prepare_cached(
                "UPDATE outbox SET locked_until = ?2, attempts = attempts + 1
                 WHERE id IN (
                     SELECT o.id FROM outbox AS o
                     WHERE o.status = 'pending' AND o.next_attempt_at <= ?1
                       AND (o.locked_until IS NULL OR o.locked_until <= ?1)
                       AND (o.ordering_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM outbox AS p
                           WHERE p.ordering_key = o.ordering_key AND p.status = 'pending'
                             AND p.id < o.id))
                     ORDER BY o.id LIMIT ?3)
                 RETURNING id, topic, payload, attempts, created_at",
            )?;
            let rows = claim.query_map(params![micros(now), micros(lease_until), limit], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    topic: Topic::parse(&r.get::<_, String>(1)?),
                    payload: r.get(2)?,
                    attempts: r.get(3)?,
                    created_at: timestamp(r, 4)?,
                })
            })?;
            let mut items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            items.sort_by_key(|i| i.id);
            Ok(items)
        })
        .await
    }

    async fn finish_outbox(
        &self,
        id: i64,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.run_grouped(move |conn| {
            match delivery {
                Delivery::Delivered => conn.execute(
                    "UPDATE outbox SET status = 'sent', payload = '', locked_until = NULL,
                         finished_at = ?2, last_error = NULL
                     WHERE id = ?1",
                    params![id, micros(now)],
                )?,
                Delivery::Retry { at, error } => conn.execute(
                    "UPDATE outbox SET next_attempt_at = ?2, locked_until = NULL, last_error = ?3
                     WHERE id = ?1 AND status = 'pending'",
                    params![id, micros(at), error],
                )?,
                Delivery::GaveUp { error } => conn.execute(
                    "UPDATE outbox SET status = 'failed', locked_until = NULL, finished_at = ?2,
                         last_error = ?3
                     WHERE id = ?1 AND status = 'pending'",
                    params![id, micros(now), error],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.run(|conn| {
            // Each half reads its own partial index, never the delivered rows.
            let mut stmt = conn.prepare_cached(
                "SELECT topic, 'pending', COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY topic
                 UNION ALL
                 SELECT topic, 'failed', COUNT(*) FROM outbox WHERE status = 'failed' GROUP BY topic",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, count(r.get(2)?))))?;
            Ok(OutboxCounts::from_rows(
                rows.collect::<rusqlite::Result<Vec<_>>>()?,
            ))
        })
        .await
    }

    async fn prune_outbox(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        self.run_write(move |conn| {
            let before = micros(before);
            let messages = conn.execute(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox WHERE status <> 'pending' AND finished_at < ?1
                     LIMIT ?2)",
                params![before, batch],
            )?;
            let tokens = conn.execute(
                "DELETE FROM one_time_tokens WHERE token_hash IN (
                     SELECT token_hash FROM one_time_tokens WHERE expires_at < ?1 LIMIT ?2)",
                params![micros(now_micros()), batch],
            )?;
            Ok((messages + tokens) as u64)
        })
        .await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let query = query.clone();
        self.run(move |conn| {
            let mut conditions = Vec::new();
            let mut values: Vec<Value> = Vec::new();
            let mut push = |condition: &str, value: Value| {
                values.push(value);
                conditions.push(condition.replace('?', &format!("?{}", values.len())));
            };
            match &query.action {
                Some(ActionFilter::Exact(action)) => {
                    push("action = ?", Value::Text(action.clone()))
                }
                Some(ActionFilter::Prefix(prefix)) => {
                    push("action >= ?", Value::Text(prefix.clone()));
                    push("action < ?", Value::Text(prefix_end(prefix)));
                }
                None => {}
            }
            if let Some(id) = query.actor_id {
                push("actor_id = ?", Value::Integer(id));
            }
            if let Some(id) = query.target_id {
                push("target_id = ?", Value::Integer(id));
            }
            if let Some(after) = query.after {
                push("at >= ?", Value::Integer(micros(after)));
            }
            if let Some(before) = query.before {
                push("at < ?", Value::Integer(micros(before)));
            }
            if let Some(id) = query.before_id {
                push("id < ?", Value::Integer(id));
            }
            let where_sql = match conditions.is_empty() {
                true => String::new(),
                false => format!("WHERE {}", conditions.join(" AND ")),
            };
            values.push(Value::Integer(i64::from(query.limit)));
            let mut stmt = conn.prepare(&format!(
                "SELECT id, at, action, actor_id, actor_ip, target_id, request_id, details
                 FROM audit_events {where_sql} ORDER BY id DESC LIMIT ?{}",
                values.len()
            ))?;
            let rows = stmt.query_map(params_from_iter(values), |r| {
                let details: String = r.get(7)?;
                Ok(AuditEvent {
                    id: r.get(0)?,
                    at: timestamp(r, 1)?,
                    action: r.get(2)?,
                    actor_id: r.get(3)?,
                    actor_ip: r.get(4)?,
                    target_id: r.get(5)?,
                    request_id: r.get(6)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn prune_audit(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        self.run_write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM audit_events WHERE id IN (
                     SELECT id FROM audit_events WHERE at < ?1 ORDER BY at LIMIT ?2)",
                params![micros(before), batch],
            )? as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PageRequest, SortDirection, SortField, UserFilter, UserSort};

    /// Every hint names an index that exists and changes only how rows are found: the
    /// hinted page equals the planner's own.
    #[test]
    fn scan_hints_keep_the_page_the_same() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply_migrations(&mut conn, migrations::SQLITE).unwrap();
        for i in 0..40 {
            conn.execute(
                "INSERT INTO users (email, email_key, full_name, hashed_password, is_active,
                                    is_superuser, created_at, updated_at)
                 VALUES (?1, ?1, ?2, 'x', ?3, ?4, ?5, ?5)",
                params![
                    format!("member{:02}@example.com", (i * 7) % 40),
                    format!("Name {}", (i * 13) % 40),
                    i % 4 != 0,
                    i % 3 == 0,
                    (i * 1_000_003) % 97
                ],
            )
            .unwrap();
        }
        let filters = [
            UserFilter {
                is_active: Some(true),
                ..UserFilter::default()
            },
            UserFilter {
                is_superuser: Some(false),
                ..UserFilter::default()
            },
            UserFilter {
                search: Some("member".into()),
                ..UserFilter::default()
            },
            UserFilter {
                search: Some("member".into()),
                is_active: Some(true),
                ..UserFilter::default()
            },
        ];
        let fields = [
            SortField::CreatedAt,
            SortField::Email,
            SortField::FullName,
            SortField::Id,
        ];
        let mut hinted = 0;
        for filter in filters {
            for field in fields {
                for direction in [SortDirection::Asc, SortDirection::Desc] {
                    let query = UserQuery {
                        filter: filter.clone(),
                        sort: UserSort { field, direction },
                        page: PageRequest::new(1, 3).unwrap(),
                    };
                    let hint = scan_hint(&conn, &query, 3).unwrap();
                    hinted += usize::from(!hint.is_empty());
                    let page = |hint: &str| -> Vec<i64> {
                        let (condition, mut values) =
                            filter_after_sql_using(&query, None, hint.is_empty());
                        values.push(Value::Integer(3));
                        let sql = format!(
                            "SELECT id FROM users {hint} {condition} {} LIMIT ?{}",
                            order_sql(&query),
                            values.len()
                        );
                        let mut stmt = conn.prepare(&sql).unwrap();
                        stmt.query_map(params_from_iter(values), |r| r.get(0))
                            .unwrap()
                            .collect::<rusqlite::Result<_>>()
                            .unwrap()
                    };
                    assert_eq!(page(hint), page(""), "{query:?} with {hint}");
                }
            }
        }
        assert!(hinted >= 24, "the hints were exercised: {hinted}");
    }

    #[test]
    fn upgrading_folds_existing_non_ascii_emails_like_the_code_does() {
        let mut conn = Connection::open_in_memory().unwrap();
        let before_keys = &migrations::SQLITE[..3];
        apply_migrations(&mut conn, before_keys).unwrap();
        conn.execute(
            "INSERT INTO users (email, hashed_password, created_at, updated_at)
             VALUES ('ÄBC@Example.com', 'x', 0, 0), ('plain@Example.com', 'x', 0, 0)",
            [],
        )
        .unwrap();
        let report = apply_migrations(&mut conn, migrations::SQLITE).unwrap();
        assert_eq!(report.applied, [4, 5, 6, 7, 8, 9, 10, 11]);
        let keys: Vec<String> = conn
            .prepare("SELECT email_key FROM users ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keys, ["äbc@example.com", "plain@example.com"]);
        // Sign-ups per day start from the users already there.
        let days: Vec<(i64, i64)> = conn
            .prepare("SELECT day, users FROM user_signups_by_day")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(days, [(0, 2)]);
    }

    #[test]
    fn upgrading_refuses_two_accounts_that_fold_to_one_address() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply_migrations(&mut conn, &migrations::SQLITE[..3]).unwrap();
        conn.execute(
            "INSERT INTO users (email, hashed_password, created_at, updated_at)
             VALUES ('Äbc@example.com', 'x', 0, 0), ('äbc@example.com', 'x', 0, 0)",
            [],
        )
        .unwrap();
        let err = apply_migrations(&mut conn, migrations::SQLITE).unwrap_err();
        assert!(err.to_string().contains("different letter case"), "{err}");
        // Nothing of the failed upgrade stays.
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, 3);
    }
}
