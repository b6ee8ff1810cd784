//! The JSON shapes of the API and their translation into what the services take.

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object, types::MaybeUndefined};

use crate::{
    domain::{DashboardStats, SortDirection, SortField, User, UserSort},
    service::{ChangeRequest, InviteDraft, ListPage, SessionView, TokenPair, UserDraft},
    store::AuditEvent,
};

/// A user account. The password hash is never part of it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "User", example)]
pub struct UserOut {
    pub id: i64,
    pub email: String,
    /// `null` when not set.
    #[oai(nullable)]
    pub full_name: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
    /// Whether the user proved they receive mail at `email`.
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            full_name: u.full_name,
            is_active: u.is_active,
            is_superuser: u.is_superuser,
            email_verified: u.email_verified,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        u.clone().into()
    }
}

/// One page of users: by offset (`total`, `page`, `pages` set) or by cursor (`total` only
/// with `include_total=true`).
#[derive(Debug, Object)]
#[oai(example)]
pub struct UserPage {
    pub items: Vec<UserOut>,
    /// How many users match the filters, over all pages.
    #[oai(skip_serializing_if_is_none)]
    pub total: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub page: Option<u64>,
    pub size: u64,
    /// `ceil(total / size)`; 0 when nothing matches.
    #[oai(skip_serializing_if_is_none)]
    pub pages: Option<u64>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl From<ListPage> for UserPage {
    fn from(p: ListPage) -> Self {
        Self {
            items: p.items.into_iter().map(UserOut::from).collect(),
            total: p.total,
            page: p.page,
            size: p.size,
            pages: p.pages,
            next_cursor: p.next_cursor,
        }
    }
}

/// A login session. Refreshing keeps the session; logging out or revoking ends it.
#[derive(Debug, Object)]
#[oai(rename = "Session", example)]
pub struct SessionOut {
    /// Opaque identifier (for `DELETE /api/v1/users/me/sessions/{session_id}`).
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Last login, refresh or request (recorded at most once a minute).
    pub last_used_at: DateTime<Utc>,
    /// The session ends then however often it is refreshed (SESSION_MAX_LIFETIME_SECS).
    pub expires_at: DateTime<Utc>,
    /// Client address at login.
    #[oai(nullable)]
    pub ip: Option<String>,
    /// `User-Agent` at login.
    #[oai(nullable)]
    pub user_agent: Option<String>,
    /// Whether the calling access token belongs to this session.
    pub current: bool,
}

impl From<SessionView> for SessionOut {
    fn from(v: SessionView) -> Self {
        let r = v.record;
        Self {
            id: r.id,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
            current: v.current,
        }
    }
}

impl poem_openapi::types::Example for SessionOut {
    fn example() -> Self {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .unwrap_or_default()
        };
        Self {
            id: "3q2-7wEAAAA-g8Zb1X9kWq4mV0c2JrTQ3n8yQpL5sHk".into(),
            created_at: at("2026-11-30T08:00:00Z"),
            last_used_at: at("2026-11-30T09:15:00Z"),
            expires_at: at("2026-12-30T08:00:00Z"),
            ip: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/146.0".into()),
            current: true,
        }
    }
}

/// Live sessions, newest first.
#[derive(Debug, Object)]
#[oai(example)]
pub struct SessionList {
    pub items: Vec<SessionOut>,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// An address to mail a link to, if it has an account.
#[derive(Debug, Object)]
#[oai(example)]
pub struct EmailRequest {
    pub email: String,
}

/// The same answer whether or not the address has an account.
#[derive(Debug, Object)]
#[oai(rename = "Accepted", example)]
pub struct AcceptedOut {
    pub message: String,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct PasswordResetConfirm {
    /// The `token` of the emailed link.
    pub token: String,
    /// 8 to 128 characters.
    pub new_password: String,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct VerifyEmailRequest {
    /// The `token` of the emailed link.
    pub token: String,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct AcceptInviteRequest {
    /// The `token` of the emailed link.
    pub token: String,
    /// 8 to 128 characters.
    pub password: String,
}

/// A person to invite: the account is created now, the invitee chooses a password.
#[derive(Debug, Object)]
#[oai(example)]
pub struct InviteRequest {
    pub email: String,
    #[oai(nullable)]
    pub full_name: Option<String>,
    /// Defaults to false.
    pub is_superuser: Option<bool>,
}

impl From<InviteRequest> for InviteDraft {
    fn from(r: InviteRequest) -> Self {
        Self {
            email: r.email,
            full_name: r.full_name,
            is_superuser: r.is_superuser,
        }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct TokenResponse {
    /// JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Opaque token for `POST /api/v1/auth/refresh`; single use.
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
}

impl From<TokenPair> for TokenResponse {
    fn from(t: TokenPair) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "bearer".into(),
            expires_in: t.expires_in,
        }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct RegisterRequest {
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    #[oai(nullable)]
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct UserCreate {
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    #[oai(nullable)]
    pub full_name: Option<String>,
    /// Defaults to true.
    pub is_active: Option<bool>,
    /// Defaults to false.
    pub is_superuser: Option<bool>,
    /// Defaults to false.
    pub email_verified: Option<bool>,
}

/// Users to create at once (1 to BULK_MAX_USERS). Lengths and formats are checked by the
/// server, not declared as schema constraints, so that every invalid item is reported at once.
#[derive(Debug, Object)]
#[oai(example)]
pub struct BulkCreate {
    pub users: Vec<UserCreate>,
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct BulkCreated {
    /// How many users were created.
    pub created: u64,
    /// The new users, in the order given.
    pub items: Vec<UserOut>,
}

/// Export file formats.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

/// Changes to any user (superuser only). Absent fields stay as they are; `full_name: null` clears it.
#[derive(Debug, Object)]
#[oai(example)]
pub struct UserUpdate {
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// `null` clears the name.
    #[oai(nullable)]
    pub full_name: MaybeUndefined<String>,
    /// 8 to 128 characters; ends the user's sessions.
    #[oai(skip_serializing_if_is_none)]
    pub password: Option<String>,
    /// `false` deactivates the user and ends their sessions.
    #[oai(skip_serializing_if_is_none)]
    pub is_active: Option<bool>,
    #[oai(skip_serializing_if_is_none)]
    pub is_superuser: Option<bool>,
    /// A changed email is unverified unless this says otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub email_verified: Option<bool>,
}

/// Changes to your own account. A new password needs `current_password`.
#[derive(Debug, Object)]
#[oai(example)]
pub struct MeUpdate {
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// `null` clears the name.
    #[oai(nullable)]
    pub full_name: MaybeUndefined<String>,
    #[oai(skip_serializing_if_is_none)]
    pub password: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub current_password: Option<String>,
}

/// Sort key; a leading `-` sorts descending. Ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, Default, Enum)]
pub enum SortParam {
    #[oai(rename = "created_at")]
    CreatedAt,
    #[default]
    #[oai(rename = "-created_at")]
    CreatedAtDesc,
    #[oai(rename = "email")]
    Email,
    #[oai(rename = "-email")]
    EmailDesc,
    #[oai(rename = "full_name")]
    FullName,
    #[oai(rename = "-full_name")]
    FullNameDesc,
    #[oai(rename = "id")]
    Id,
    #[oai(rename = "-id")]
    IdDesc,
}

impl From<SortParam> for UserSort {
    fn from(s: SortParam) -> Self {
        use SortDirection::{Asc, Desc};
        let (field, direction) = match s {
            SortParam::CreatedAt => (SortField::CreatedAt, Asc),
            SortParam::CreatedAtDesc => (SortField::CreatedAt, Desc),
            SortParam::Email => (SortField::Email, Asc),
            SortParam::EmailDesc => (SortField::Email, Desc),
            SortParam::FullName => (SortField::FullName, Asc),
            SortParam::FullNameDesc => (SortField::FullName, Desc),
            SortParam::Id => (SortField::Id, Asc),
            SortParam::IdDesc => (SortField::Id, Desc),
        };
        UserSort { field, direction }
    }
}

#[derive(Debug, Object)]
#[oai(example)]
pub struct DashboardStatsOut {
    pub total_users: u64,
    pub active_users: u64,
    pub inactive_users: u64,
    pub superusers: u64,
    /// Created since 00:00 UTC today.
    pub new_users_today: u64,
    /// Created since 00:00 UTC seven days ago.
    pub new_users_week: u64,
    pub generated_at: DateTime<Utc>,
}

impl From<DashboardStats> for DashboardStatsOut {
    fn from(s: DashboardStats) -> Self {
        Self {
            total_users: s.total_users,
            active_users: s.active_users,
            inactive_users: s.inactive_users,
            superusers: s.superusers,
            new_users_today: s.new_users_today,
            new_users_week: s.new_users_week,
            generated_at: s.generated_at,
        }
    }
}

fn maybe(value: &MaybeUndefined<String>) -> Option<Option<String>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v.clone())),
    }
}

impl From<UserCreate> for UserDraft {
    fn from(u: UserCreate) -> Self {
        Self {
            email: u.email,
            password: u.password,
            full_name: u.full_name,
            is_active: u.is_active,
            is_superuser: u.is_superuser,
            email_verified: u.email_verified,
        }
    }
}

impl From<RegisterRequest> for UserDraft {
    fn from(r: RegisterRequest) -> Self {
        Self {
            email: r.email,
            password: r.password,
            full_name: r.full_name,
            is_active: None,
            is_superuser: None,
            email_verified: None,
        }
    }
}

impl From<UserUpdate> for ChangeRequest {
    fn from(u: UserUpdate) -> Self {
        Self {
            email: u.email,
            full_name: maybe(&u.full_name),
            password: u.password,
            current_password: None,
            is_active: u.is_active,
            is_superuser: u.is_superuser,
            email_verified: u.email_verified,
        }
    }
}

impl From<MeUpdate> for ChangeRequest {
    fn from(u: MeUpdate) -> Self {
        Self {
            email: u.email,
            full_name: maybe(&u.full_name),
            password: u.password,
            current_password: u.current_password,
            is_active: None,
            is_superuser: None,
            email_verified: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::{
        registry::Registry,
        types::{ParseFromParameter, Type},
    };
    use proptest::prelude::*;

    use super::*;
    use crate::domain::SORT_KEYS;

    #[test]
    fn the_sort_enum_offers_exactly_the_domain_keys() {
        let mut registry = Registry::new();
        SortParam::register(&mut registry);
        let offered: Vec<String> = registry.schemas["SortParam"]
            .enum_items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect();
        let mut expected: Vec<String> = SORT_KEYS
            .iter()
            .flat_map(|k| [k.to_string(), format!("-{k}")])
            .collect();
        let mut sorted = offered.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(sorted, expected);
    }

    proptest! {
        #[test]
        fn sort_keys_round_trip(field in prop::sample::select(SORT_KEYS.to_vec()), desc: bool) {
            let raw = if desc { format!("-{field}") } else { field.to_string() };
            let sort = UserSort::from(SortParam::parse_from_parameter(&raw).unwrap());
            prop_assert_eq!(sort.direction == SortDirection::Desc, desc);
            let name = match sort.field {
                SortField::CreatedAt => "created_at",
                SortField::Email => "email",
                SortField::FullName => "full_name",
                SortField::Id => "id",
            };
            prop_assert_eq!(name, field);
        }

        #[test]
        fn unknown_sort_keys_are_refused(raw in "[a-z_-]{0,20}") {
            let name = raw.strip_prefix('-').unwrap_or(&raw);
            prop_assert_eq!(SortParam::parse_from_parameter(&raw).is_ok(), SORT_KEYS.contains(&name));
        }
    }
}

/// One audit event: who did what to whom, when, from where.
#[derive(Debug, Object)]
#[oai(rename = "AuditEvent", example)]
pub struct AuditEventOut {
    /// Increasing; webhooks send it as `X-Roster-Delivery`.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// E.g. `user.updated`, `login.failed`, `session.revoked`.
    pub action: String,
    /// The user who acted, when known (null for anonymous requests and the system).
    #[oai(nullable)]
    pub actor_id: Option<i64>,
    #[oai(nullable)]
    pub actor_ip: Option<String>,
    /// The user acted upon.
    #[oai(nullable)]
    pub target_id: Option<i64>,
    /// The `X-Request-ID` of the request that caused it.
    #[oai(nullable)]
    pub request_id: Option<String>,
    /// What changed: field names, and values of fields that are not secrets.
    pub details: serde_json::Value,
}

impl From<AuditEvent> for AuditEventOut {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            at: e.at,
            action: e.action,
            actor_id: e.actor_id,
            actor_ip: e.actor_ip,
            target_id: e.target_id,
            request_id: e.request_id,
            details: e.details,
        }
    }
}

impl poem_openapi::types::Example for AuditEventOut {
    fn example() -> Self {
        Self {
            id: 4711,
            at: DateTime::parse_from_rfc3339("2026-11-30T09:15:00Z")
                .map(|t| t.to_utc())
                .unwrap_or_default(),
            action: "user.updated".into(),
            actor_id: Some(1),
            actor_ip: Some("203.0.113.7".into()),
            target_id: Some(42),
            request_id: Some("9f1c2d7e4b3a4c5d8e6f7a8b9c0d1e2f".into()),
            details: serde_json::json!({
                "fields": ["is_active", "password"],
                "values": {"is_active": false}
            }),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Object)]
#[oai(example)]
pub struct AuditPageOut {
    pub items: Vec<AuditEventOut>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
    pub size: u32,
}
