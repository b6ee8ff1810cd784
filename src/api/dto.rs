//! The JSON shapes of the API and their translation into domain types.

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object, types::MaybeUndefined};

use crate::{
    auth::TokenPair,
    domain::{
        DashboardStats, Email, FieldError, FullName, Page, Password, SortDirection, SortField,
        User, UserSort,
    },
};

/// A user account. The password hash is never part of it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "User")]
pub struct UserOut {
    pub id: i64,
    pub email: String,
    /// `null` when not set.
    #[oai(nullable)]
    pub full_name: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
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

impl UserOut {
    /// A strong validator of exactly this representation.
    pub fn etag(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = poem_openapi::types::ToJSON::to_json_string(self);
        let digest = Sha256::digest(json.as_bytes());
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }
}

/// One page of users.
#[derive(Debug, Object)]
pub struct UserPage {
    pub items: Vec<UserOut>,
    /// How many users match the filters, over all pages.
    pub total: u64,
    pub page: u64,
    pub size: u64,
    /// `ceil(total / size)`; 0 when nothing matches.
    pub pages: u64,
}

impl From<Page<User>> for UserPage {
    fn from(p: Page<User>) -> Self {
        Self {
            items: p.items.into_iter().map(UserOut::from).collect(),
            total: p.total,
            page: p.page,
            size: p.size,
            pages: p.pages,
        }
    }
}

#[derive(Debug, Object)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Object)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Object)]
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
pub struct RegisterRequest {
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    #[oai(nullable)]
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Object)]
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
}

/// Users to create at once (1 to BULK_MAX_USERS). Lengths and formats are checked by the
/// server, not declared as schema constraints, so that every invalid item is reported at once.
#[derive(Debug, Object)]
pub struct BulkCreate {
    pub users: Vec<UserCreate>,
}

#[derive(Debug, Object)]
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
pub struct UserUpdate {
    pub email: Option<String>,
    /// `null` clears the name.
    #[oai(nullable)]
    pub full_name: MaybeUndefined<String>,
    /// 8 to 128 characters; ends the user's sessions.
    pub password: Option<String>,
    /// `false` deactivates the user and ends their sessions.
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
}

/// Changes to your own account. A new password needs `current_password`.
#[derive(Debug, Object)]
pub struct MeUpdate {
    pub email: Option<String>,
    /// `null` clears the name.
    #[oai(nullable)]
    pub full_name: MaybeUndefined<String>,
    pub password: Option<String>,
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

/// Collects every broken rule of one input instead of stopping at the first.
#[derive(Default)]
pub struct Violations(pub Vec<FieldError>);

impl Violations {
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    pub fn into_result<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        match (self.0.is_empty(), value()) {
            (true, Some(v)) => Ok(v),
            _ => Err(self.0),
        }
    }
}

/// A validated `UserCreate`, password not yet hashed.
pub struct ValidUserCreate {
    pub email: Email,
    pub password: Password,
    pub full_name: Option<FullName>,
    pub is_active: bool,
    pub is_superuser: bool,
}

impl UserCreate {
    pub fn validate(&self) -> Result<ValidUserCreate, Vec<FieldError>> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(&self.email));
        let password = v.check("password", Password::parse(&self.password));
        let full_name = v.check(
            "full_name",
            self.full_name.as_deref().map(FullName::parse).transpose(),
        );
        v.into_result(|| {
            Some(ValidUserCreate {
                email: email?,
                password: password?,
                full_name: full_name?,
                is_active: self.is_active.unwrap_or(true),
                is_superuser: self.is_superuser.unwrap_or(false),
            })
        })
    }
}

impl RegisterRequest {
    pub fn validate(&self) -> Result<ValidUserCreate, Vec<FieldError>> {
        UserCreate {
            email: self.email.clone(),
            password: self.password.clone(),
            full_name: self.full_name.clone(),
            is_active: Some(true),
            is_superuser: Some(false),
        }
        .validate()
    }
}

/// Validated profile changes, password not yet hashed.
#[derive(Default)]
pub struct ValidChanges {
    pub email: Option<Email>,
    pub full_name: Option<Option<FullName>>,
    pub password: Option<Password>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
}

/// The profile fields shared by both update bodies; a broken rule is recorded in `v`.
fn profile_changes(
    v: &mut Violations,
    email: Option<&str>,
    full_name: &MaybeUndefined<String>,
    password: Option<&str>,
) -> ValidChanges {
    ValidChanges {
        email: v
            .check("email", email.map(Email::parse).transpose())
            .flatten(),
        full_name: match full_name {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(name) => v.check("full_name", FullName::parse(name)).map(Some),
        },
        password: v
            .check("password", password.map(Password::parse).transpose())
            .flatten(),
        ..ValidChanges::default()
    }
}

impl Violations {
    fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

impl UserUpdate {
    pub fn validate(&self) -> Result<ValidChanges, Vec<FieldError>> {
        let mut v = Violations::default();
        let changes = profile_changes(
            &mut v,
            self.email.as_deref(),
            &self.full_name,
            self.password.as_deref(),
        );
        v.finish(ValidChanges {
            is_active: self.is_active,
            is_superuser: self.is_superuser,
            ..changes
        })
    }
}

impl MeUpdate {
    pub fn validate(&self) -> Result<ValidChanges, Vec<FieldError>> {
        let mut v = Violations::default();
        let changes = profile_changes(
            &mut v,
            self.email.as_deref(),
            &self.full_name,
            self.password.as_deref(),
        );
        if self.password.is_some() && self.current_password.is_none() {
            v.0.push(FieldError::new(
                "current_password",
                "is required to change the password",
            ));
        }
        v.finish(changes)
    }
}
