//! Storage behind one trait; the backend is picked at run time from DATABASE_URL.

mod audit;
pub mod migrations;
mod outbox;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub mod sqlite_files;
#[cfg(feature = "sqlite")]
mod sqlite_group;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

pub use audit::{
    ActionFilter, AuditEvent, AuditQuery, AuditRecord, AuditTarget, details_text, prefix_end,
};
pub use outbox::{
    Delivery, OutboxCounts, OutboxItem, OutboxMessage, SideEffects, TokenGrant, TokenKind,
    TokenOwner, Topic,
};

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    config::DatabaseUrl,
    domain::{
        DashboardStats, Email, Keyset, NewUser, Page, RefreshDecision, SortDirection, SortField,
        User, UserChanges, UserId, UserQuery, UserSort, refresh_decision,
    },
};

/// What another instance's committed write made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Users(Vec<UserId>),
    Dashboard,
    /// Notifications may have been missed (the listener reconnected): drop everything.
    Everything,
}

/// Receives invalidations; returns false once nobody needs them any more.
pub type InvalidationHandler = Arc<dyn Fn(Invalidation) -> bool + Send + Sync>;

/// Whether a backend's invalidation listener is connected right now.
#[derive(Debug, Default)]
pub struct ListenerHealth {
    connected: std::sync::atomic::AtomicBool,
}

impl ListenerHealth {
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected
            .store(connected, std::sync::atomic::Ordering::Release);
    }
}

/// Users in chunks of at most `EXPORT_CHUNK_ROWS`, then the end of the channel; an error
/// ends the export.
pub type UserChunks = tokio::sync::mpsc::Receiver<Result<Vec<User>, StoreError>>;

pub const EXPORT_CHUNK_ROWS: usize = 500;
/// Chunks produced ahead of the client: this bounds an export's memory.
pub const EXPORT_CHUNKS_AHEAD: usize = 2;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("email already taken")]
    EmailTaken,
    #[error("the change would leave no active superuser")]
    LastActiveSuperuser,
    /// A one-time token that is unknown, spent, expired, or sent to an address the user
    /// no longer has.
    #[error("invalid or expired token")]
    TokenInvalid,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database schema version {found} is newer than this binary knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database error: {0}")]
    Other(String),
}

/// A user with the hash needed to check a password.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub hashed_password: String,
}

/// A refresh token to store (only its hash is kept). Its session is given separately.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A login's session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl SessionRecord {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What presenting a refresh token did (decided by `domain::refresh_decision`, with the
/// session's state read and locked in the same transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was spent and `next` stored in its place, in one transaction.
    Rotated { user_id: UserId, session_id: String },
    /// The account is inactive; nothing changed.
    Inactive { user_id: UserId },
    /// Not spendable. On `Replayed` the store has ended the token's session, whose user
    /// is named so caches can forget it.
    Refused {
        decision: RefreshDecision,
        user_id: Option<UserId>,
    },
}

/// A refresh token's row with its session's and user's state, read (and locked) by the
/// rotating transaction.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub session_id: String,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
    pub spent: bool,
    pub session_live: bool,
    pub user_active: bool,
    pub session_expires_at: DateTime<Utc>,
}

/// What a rotating transaction must do next, decided the same way on both backends.
#[derive(Debug, Clone)]
pub enum RotationStep {
    /// Mark token `token_id` used and store `next` (its expiry capped by the session's).
    Spend {
        token_id: i64,
        session_id: String,
        user_id: UserId,
        next: NewRefreshToken,
    },
    /// A replay: end the session (and tell other instances).
    EndSession { session_id: String, user_id: UserId },
    /// Nothing to write.
    Answer(Rotation),
}

/// The one reading of a rotation (`domain::refresh_decision`, the user's state, the cap).
pub fn rotation_step(
    found: Option<TokenRow>,
    next: NewRefreshToken,
    now: DateTime<Utc>,
) -> RotationStep {
    let decision = refresh_decision(
        found
            .as_ref()
            .map(|f| (f.spent, f.expires_at, f.session_live)),
        now,
    );
    match (decision, found) {
        (RefreshDecision::Spend, Some(f)) if !f.user_active => {
            RotationStep::Answer(Rotation::Inactive { user_id: f.user_id })
        }
        (RefreshDecision::Spend, Some(f)) => RotationStep::Spend {
            token_id: f.id,
            next: NewRefreshToken {
                expires_at: next.expires_at.min(f.session_expires_at),
                ..next
            },
            session_id: f.session_id,
            user_id: f.user_id,
        },
        (RefreshDecision::Replayed, Some(f)) => RotationStep::EndSession {
            session_id: f.session_id,
            user_id: f.user_id,
        },
        (decision, _) => RotationStep::Answer(Rotation::Refused {
            decision,
            user_id: None,
        }),
    }
}

/// Which sessions to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionScope {
    /// One session, only if it belongs to `user_id` and is live.
    One { user_id: UserId, session_id: String },
    /// Every live session of a user, but `except`.
    AllOf {
        user_id: UserId,
        except: Option<String>,
    },
    /// The session of a refresh token (logout).
    OfToken { token_hash: String },
}

/// The columns of a `User`, in the order both stores read them.
pub const USER_COLUMNS: &str =
    "id, email, full_name, is_active, is_superuser, created_at, updated_at, email_verified";
/// The unique index on `email_key` (the folded email); a violation of it is `EmailTaken`.
pub const EMAIL_UNIQUE_INDEX: &str = "users_email_key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub backend: &'static str,
    pub pool_size: u32,
    pub checked_in: u32,
    pub checked_out: u32,
    pub total_connections: u32,
}

/// How the PostgreSQL read barrier is doing: reads of the write sequence, the cached
/// reads they served, and the time those spent waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoherenceStats {
    pub barrier_reads: u64,
    pub barrier_requests: u64,
    pub barrier_wait_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i64>,
    pub current_version: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    /// Applies pending migrations; refuses a schema newer than this binary.
    async fn migrate(&self) -> Result<MigrationReport, StoreError>;
    /// A round trip that proves the database answers and the schema is current.
    async fn check_ready(&self) -> Result<(), StoreError>;
    fn pool_status(&self) -> PoolStatus;
    /// Closes the pool's connections; called once at shutdown.
    async fn close(&self) {}
    /// Starts delivering other instances' invalidations to `handler`, for backends shared
    /// by several processes. `None`: this backend has one process only (SQLite).
    fn listen_for_invalidations(
        &self,
        _handler: InvalidationHandler,
    ) -> Option<Arc<ListenerHealth>> {
        None
    }
    /// Whether this instance has applied every invalidation committed so far, so its caches
    /// may answer. Always true where one process owns the data.
    async fn caches_are_current(&self) -> bool {
        true
    }
    /// Figures of the cross-instance read barrier, where there is one.
    fn coherence_stats(&self) -> Option<CoherenceStats> {
        None
    }

    /// Returns the stored value for `key`, storing `candidate` first if there is none.
    async fn get_or_insert_setting(
        &self,
        key: &str,
        candidate: String,
    ) -> Result<String, StoreError>;

    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores every pair (replacing existing values) in one transaction.
    async fn set_settings(&self, pairs: Vec<(String, String)>) -> Result<(), StoreError>;

    /// Creates a user and writes `effects` for it, in one transaction.
    async fn create_user(&self, user: NewUser, effects: SideEffects) -> Result<User, StoreError>;
    /// All or nothing, in one transaction; users come back in input order. Each record of
    /// `audit` is written once per created user (`AuditTarget::Changed`).
    async fn create_users(
        &self,
        users: Vec<NewUser>,
        audit: Vec<AuditRecord>,
    ) -> Result<Vec<User>, StoreError>;
    /// Those of `keys` (emails folded by `domain::fold_email`) that some user already has.
    async fn existing_email_keys(&self, keys: &[String]) -> Result<Vec<String>, StoreError>;
    /// Every user matching the query's filter, in its sort order (paging ignored),
    /// produced in chunks as the receiver takes them.
    fn export_users(&self, query: &UserQuery, after: Option<&Keyset>) -> UserChunks;
    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserCredentials>, StoreError>;
    async fn get_password_hash(&self, id: UserId) -> Result<Option<String>, StoreError>;
    /// Fails with `LastActiveSuperuser` and changes nothing if no active superuser would
    /// remain. `effects` are written in the same transaction.
    async fn update_user(
        &self,
        id: UserId,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError>;
    async fn delete_user(&self, id: UserId, audit: Vec<AuditRecord>) -> Result<(), StoreError>;
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// Whether any user exists: one row read, where a count reads a whole index (start-up
    /// asks this on every launch; COUNT(*) took seconds on a cold ten-million-user file).
    async fn has_users(&self) -> Result<bool, StoreError>;
    /// Up to `limit` users of the query's filter and sort that come after `after`.
    async fn list_users_after(
        &self,
        query: &UserQuery,
        after: Option<&Keyset>,
        limit: u64,
    ) -> Result<Vec<User>, StoreError>;
    /// How many users match the query's filter.
    async fn count_matching(&self, query: &UserQuery) -> Result<u64, StoreError>;
    /// A page of users; `known_total`, when given, is trusted instead of counting.
    async fn list_users(
        &self,
        query: &UserQuery,
        known_total: Option<u64>,
    ) -> Result<Page<User>, StoreError>;
    async fn dashboard_stats(&self, now: DateTime<Utc>) -> Result<DashboardStats, StoreError>;
    /// Users created in each window `[bounds[i], bounds[i + 1])`, in order (sign-ups per
    /// day): one index range per window.
    async fn count_created_between(
        &self,
        bounds: Vec<DateTime<Utc>>,
    ) -> Result<Vec<u64>, StoreError>;

    /// Stores a new session and its first refresh token, in one transaction.
    async fn open_session(
        &self,
        session: SessionRecord,
        first_token: NewRefreshToken,
        audit: Vec<AuditRecord>,
    ) -> Result<(), StoreError>;
    /// Spends the refresh token with `token_hash` and stores `next` in its session, in one
    /// transaction that reads and locks the session (reuse ends the session).
    /// `reused` is written (for the token's user) when a replay ends the session.
    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next: NewRefreshToken,
        now: DateTime<Utc>,
        reused: AuditRecord,
    ) -> Result<Rotation, StoreError>;
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// A user's live sessions, newest first.
    async fn list_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Records use of a session (callers do this at most once a minute per session).
    async fn touch_session(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Ends the sessions in `scope` and their refresh tokens; returns whose they were
    /// (empty when nothing live matched).
    /// `audit` is written once per user whose sessions ended (`AuditTarget::Changed`).
    async fn end_sessions(
        &self,
        scope: SessionScope,
        now: DateTime<Utc>,
        audit: AuditRecord,
    ) -> Result<Vec<UserId>, StoreError>;
    /// Deletes up to `batch` rows of ended sessions and spent or expired refresh tokens;
    /// returns how many went.
    async fn prune_sessions(&self, now: DateTime<Utc>, batch: u32) -> Result<u64, StoreError>;
    /// Failed password checks counted for `email_key` and when their window began.
    async fn login_failures(
        &self,
        email_key: &str,
    ) -> Result<Option<(u32, DateTime<Utc>)>, StoreError>;
    /// Counts one failure: in the window that began after `window_opened_after`, or in a
    /// new one starting `now`. Returns the count and the window's start.
    /// `audit.failed` is written with the count, and `audit.locked` too when the count
    /// reaches `audit.limit`, in the same transaction.
    async fn record_login_failure(
        &self,
        email_key: &str,
        now: DateTime<Utc>,
        window_opened_after: DateTime<Utc>,
        audit: FailureAudit,
    ) -> Result<(u32, DateTime<Utc>), StoreError>;
    async fn clear_login_failures(&self, email_key: &str) -> Result<(), StoreError>;
    /// Forgets failure windows that began before `before`; returns how many went.
    async fn prune_login_failures(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Replaces a password hash with one of the current cost, unless the password changed
    /// meanwhile; sessions and `updated_at` are untouched.
    async fn upgrade_password_hash(
        &self,
        user_id: UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError>;

    /// Writes `effects` for an existing user in one transaction (`NotFound` if none).
    async fn record_effects(&self, user_id: UserId, effects: SideEffects)
    -> Result<(), StoreError>;
    /// Adds messages that belong to no user change.
    async fn enqueue(
        &self,
        messages: Vec<OutboxMessage>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Whose the live token of `kind` with this hash is.
    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenOwner>, StoreError>;
    /// Spends the token and applies `changes` and `effects` to its user in one
    /// transaction; `TokenInvalid` (and nothing changed) when the token is not live or the
    /// user's email is no longer the one it was sent to.
    async fn redeem_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
        now: DateTime<Utc>,
        changes: UserChanges,
        effects: SideEffects,
    ) -> Result<User, StoreError>;
    /// Leases up to `limit` due messages until `lease_until`: the oldest first, never two
    /// of one ordering key, never one another sender holds.
    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// Records how an attempt ended and releases the lease.
    async fn finish_outbox(
        &self,
        id: i64,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError>;
    /// Deletes up to `batch` delivered or abandoned messages finished before `before`, and
    /// expired one-time tokens; returns how many rows went.
    async fn prune_outbox(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError>;
    /// Events matching the query, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Deletes up to `batch` events older than `before`; returns how many went.
    async fn prune_audit(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError>;
}

/// The events of a failed password check: always `failed`; `locked` as well when the
/// count reaches `limit`.
#[derive(Debug, Clone)]
pub struct FailureAudit {
    pub failed: AuditRecord,
    pub locked: AuditRecord,
    pub limit: u32,
}

/// Opens the backend named by the URL's scheme (only compiled-in backends can be named).
pub async fn connect(url: &DatabaseUrl, pool_size: u32) -> Result<Arc<dyn UserStore>, StoreError> {
    Ok(match url {
        #[cfg(feature = "sqlite")]
        DatabaseUrl::Sqlite(location) => Arc::new(SqliteStore::open(location, pool_size).await?),
        #[cfg(feature = "postgres")]
        DatabaseUrl::Postgres(url) => Arc::new(PostgresStore::open(url.expose(), pool_size).await?),
    })
}

/// Midnight UTC of `now`'s day, and seven days before it: the dashboard's windows.
pub fn dashboard_windows(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    (today, today - chrono::Duration::days(7))
}

/// The ORDER BY of a list or export: text keys by their lowercase form (NULL names as the
/// empty string) under `collation`, ties broken by id in the same direction.
pub fn order_by_sql(sort: &UserSort, collation: &str) -> String {
    let dir = match sort.direction {
        SortDirection::Asc => "ASC",
        SortDirection::Desc => "DESC",
    };
    match sort_key_sql(sort.field, collation) {
        Some(key) => format!(" ORDER BY {key} {dir}, id {dir}"),
        None => format!(" ORDER BY id {dir}"),
    }
}

/// The expression a sort orders by (`None`: by id alone). Names fold ASCII only on both
/// backends (PostgreSQL's `lower` under `COLLATE "C"`), so `Keyset::of` can compute a
/// row's key exactly.
pub fn sort_key_sql(field: SortField, collation: &str) -> Option<String> {
    match field {
        SortField::CreatedAt => Some("created_at".to_string()),
        SortField::Email => Some(format!("email_key{collation}")),
        SortField::FullName => Some(format!(
            "lower(coalesce(full_name, ''){collation}){collation}"
        )),
        SortField::Id => None,
    }
}

/// The comparison that keeps the rows after a keyset in the sort's direction:
/// `key > a OR (key = a AND id > b)` ascending, `<` descending, with `a` and `b` written by
/// `param` (the backend's placeholder for the n-th value: 0 the key, 1 the id). SQLite's
/// planner ranges this form over the sort's index; PostgreSQL does not, and its store writes
/// the same rows as the row comparison `(key, id) > (a, b)` (`push_filter_after`).
pub fn keyset_sql(sort: &UserSort, collation: &str, param: impl Fn(usize) -> String) -> String {
    let op = match sort.direction {
        SortDirection::Asc => ">",
        SortDirection::Desc => "<",
    };
    match sort_key_sql(sort.field, collation) {
        Some(key) => {
            let (a, b) = (param(0), param(1));
            format!("({key} {op} {a} OR ({key} = {a} AND id {op} {b}))")
        }
        None => format!("id {op} {}", param(1)),
    }
}

/// Whether any stored text could contain `term`: none holds NUL (PostgreSQL text cannot,
/// and names refuse control characters), and SQLite would cut the pattern at it.
pub fn search_can_match(term: &str) -> bool {
    !term.contains('\0')
}

/// `%`, `_` and `\` escaped so a LIKE pattern matches the term literally (ESCAPE '\').
pub fn like_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("a%b_c\\d'e"), "%a\\%b\\_c\\\\d'e%");
    }

    #[test]
    fn dashboard_week_starts_at_midnight_seven_days_ago() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T13:45:00Z")
            .unwrap()
            .to_utc();
        let (today, week) = dashboard_windows(now);
        assert_eq!(today.to_rfc3339(), "2026-11-26T00:00:00+00:00");
        assert_eq!(week.to_rfc3339(), "2026-11-19T00:00:00+00:00");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Undoes `like_pattern`: the term a LIKE pattern matches literally, if well formed.
    fn unescape_like(pattern: &str) -> Option<String> {
        let inner = pattern.strip_prefix('%')?.strip_suffix('%')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '%' | '_' => return None, // an unescaped wildcard would match more than the term
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn like_patterns_match_the_term_literally(term in ".{0,40}") {
            prop_assert_eq!(unescape_like(&like_pattern(&term)), Some(term));
        }
    }
}
