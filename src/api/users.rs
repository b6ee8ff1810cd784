use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::{ToJSON, Type},
};

use super::{
    ApiTags, JsonBody,
    dto::{
        BulkCreate, BulkCreated, ExportFormat, MeUpdate, SortParam, UserCreate, UserOut, UserPage,
        UserUpdate, ValidChanges, ValidUserCreate,
    },
    export,
};
use crate::{
    auth::BearerAuth,
    domain::{
        DEFAULT_PAGE_SIZE, FieldError, NewUser, PageRequest, UserChanges, UserFilter, UserId,
        UserQuery,
    },
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    store::StoreError,
};

pub struct UsersApi;

#[derive(ApiResponse)]
pub enum Created<T: ToJSON + Type + Send + Sync> {
    /// Created; `Location` is the new resource's URL.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum UserResponse {
    /// The user, with its `ETag`.
    #[oai(status = 200)]
    Ok(Json<UserOut>, #[oai(header = "ETag")] String),
    /// Unchanged since the `If-None-Match` validator was issued.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

/// Whether an `If-None-Match` header (a list, possibly weak validators, or `*`) matches.
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(|candidate| candidate.trim())
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The user and their sessions are gone.
    #[oai(status = 204)]
    NoContent,
}

fn default_format() -> ExportFormat {
    ExportFormat::Csv
}

/// The one reading of the list and export filters.
fn user_filter(
    is_active: Option<bool>,
    is_superuser: Option<bool>,
    search: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
) -> UserFilter {
    UserFilter {
        is_active,
        is_superuser,
        search: search.filter(|s| !s.is_empty()),
        created_after,
        created_before,
    }
}

/// Emails of a batch that are taken: by an existing user, or by an earlier item.
async fn taken_emails(state: &AppState, emails: &[String]) -> ApiResult<Vec<String>> {
    let existing = state.directory.existing_emails(emails).await?;
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    let mut taken = Vec::new();
    for email in emails {
        let folded = email.to_lowercase();
        let repeated = !seen.insert(folded.clone());
        if (repeated || existing.contains(email)) && reported.insert(folded) {
            taken.push(email.clone());
        }
    }
    Ok(taken)
}

fn email_taken(emails: Vec<String>) -> ApiError {
    ApiError::with_details(
        ErrorCode::EmailTaken,
        format!(
            "{} email(s) of the batch are already taken; nothing was created.",
            emails.len()
        ),
        serde_json::json!({ "emails": emails }),
    )
}

#[derive(ApiResponse)]
pub enum BulkResponse {
    /// All users were created.
    #[oai(status = 201)]
    Created(Json<BulkCreated>),
}

fn default_page() -> u64 {
    1
}

fn default_size() -> u64 {
    DEFAULT_PAGE_SIZE
}

pub(super) async fn create_validated(
    state: &AppState,
    valid: ValidUserCreate,
) -> ApiResult<Created<UserOut>> {
    let hashed_password = state.auth.hash_password(valid.password.expose()).await?;
    let user = state
        .directory
        .create(NewUser {
            email: valid.email,
            full_name: valid.full_name,
            hashed_password,
            is_active: valid.is_active,
            is_superuser: valid.is_superuser,
            created_at: None,
        })
        .await?;
    let location = format!("/api/v1/users/{}", user.id);
    Ok(Created::Created(Json(user.into()), location))
}

async fn apply_changes(
    state: &AppState,
    id: UserId,
    valid: ValidChanges,
) -> ApiResult<Json<UserOut>> {
    let hashed_password = match &valid.password {
        Some(p) => Some(state.auth.hash_password(p.expose()).await?),
        None => None,
    };
    let changes = UserChanges {
        email: valid.email,
        full_name: valid.full_name,
        hashed_password,
        is_active: valid.is_active,
        is_superuser: valid.is_superuser,
    };
    let revokes_sessions = changes.revokes_sessions();
    let user = state.directory.update(id, changes).await?;
    if revokes_sessions {
        state.auth.revoke_sessions(id).await?;
    }
    Ok(Json(user.into()))
}

#[OpenApi(prefix_path = "/api/v1/users", tag = "ApiTags::Users")]
impl UsersApi {
    /// Your account
    #[oai(path = "/me", method = "get", operation_id = "get_me")]
    async fn get_me(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<UserOut>> {
        Ok(Json(UserOut::from(&*state.auth.authenticate(&auth).await?)))
    }

    /// Update your account
    ///
    /// Change your email, name or password. A new password needs `current_password`
    /// (wrong → 403) and ends your other sessions. `is_active` and `is_superuser` cannot
    /// be changed here.
    #[oai(path = "/me", method = "patch", operation_id = "update_me")]
    async fn update_me(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: JsonBody<MeUpdate>,
    ) -> ApiResult<Json<UserOut>> {
        let me = state.auth.authenticate(&auth).await?;
        let valid = body.validate().map_err(|e| ApiError::validation(&e))?;
        if let Some(current) = &body.current_password {
            let hash = state
                .store
                .get_password_hash(me.id)
                .await?
                .ok_or_else(|| ApiError::unauthorized("Your account no longer exists."))?;
            if !state.auth.hasher().verify(current, &hash).await {
                return Err(ApiError::forbidden("The current password is wrong."));
            }
        }
        apply_changes(&state, me.id, valid).await
    }

    /// List users
    ///
    /// Superuser only. Filters combine with AND; `search` is a literal, case-insensitive
    /// substring of email or full name; `created_after` is inclusive and `created_before`
    /// exclusive (RFC 3339). A page past the end is empty.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/", method = "get", operation_id = "list_users")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Page number, from 1.
        #[oai(default = "default_page", validator(minimum(value = "1")))]
        page: Query<u64>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_size",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        size: Query<u64>,
        is_active: Query<Option<bool>>,
        is_superuser: Query<Option<bool>>,
        /// Literal substring of email or full name, case-insensitive.
        search: Query<Option<String>>,
        /// Created at or after this instant (RFC 3339).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Created before this instant (RFC 3339).
        created_before: Query<Option<DateTime<Utc>>>,
        #[oai(default)] sort: Query<SortParam>,
    ) -> ApiResult<Json<UserPage>> {
        state.auth.authenticate_superuser(&auth).await?;
        let page = PageRequest::new(page.0, size.0).map_err(|e| ApiError::validation(&[e]))?;
        let query = UserQuery {
            filter: user_filter(
                is_active.0,
                is_superuser.0,
                search.0,
                created_after.0,
                created_before.0,
            ),
            sort: sort.0.into(),
            page,
        };
        Ok(Json(state.directory.list(&query).await?.into()))
    }

    /// Create a user
    ///
    /// Superuser only. 409 `email_taken` when the email exists in any letter case.
    #[oai(path = "/", method = "post", operation_id = "create_user")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: JsonBody<UserCreate>,
    ) -> ApiResult<Created<UserOut>> {
        state.auth.authenticate_superuser(&auth).await?;
        let valid = body.validate().map_err(|e| ApiError::validation(&e))?;
        create_validated(&state, valid).await
    }

    /// Create users in bulk
    ///
    /// Superuser only. 1 to BULK_MAX_USERS users in one transaction: all are created or
    /// none. Every invalid item is reported (422, `details` entries carry the item's
    /// `index`) before any uniqueness check; then every email already taken or repeated in
    /// the batch is reported (409 `email_taken`, `details.emails`).
    #[oai(path = "/bulk", method = "post", operation_id = "bulk_create_users")]
    async fn bulk(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: JsonBody<BulkCreate>,
    ) -> ApiResult<BulkResponse> {
        state.auth.authenticate_superuser(&auth).await?;
        let max = state.settings.bulk_max_users;
        if body.users.is_empty() || body.users.len() > max {
            return Err(ApiError::validation(&[FieldError::new(
                "users",
                format!("must hold 1 to {max} users (got {})", body.users.len()),
            )]));
        }
        let mut violations = Vec::new();
        let mut valid = Vec::with_capacity(body.users.len());
        for (index, item) in body.users.iter().enumerate() {
            match item.validate() {
                Ok(v) => valid.push(v),
                Err(errors) => violations.extend(errors.into_iter().map(|e| e.at(index))),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::validation(&violations));
        }
        let emails: Vec<String> = valid.iter().map(|v| v.email.as_str().to_string()).collect();
        let taken = taken_emails(&state, &emails).await?;
        if !taken.is_empty() {
            return Err(email_taken(taken));
        }
        let passwords = valid
            .iter()
            .map(|v| v.password.expose().to_string())
            .collect();
        let hashes = state
            .auth
            .hasher()
            .hash_many(passwords)
            .await
            .map_err(ApiError::internal)?;
        let new_users = valid
            .into_iter()
            .zip(hashes)
            .map(|(v, hashed_password)| NewUser {
                email: v.email,
                full_name: v.full_name,
                hashed_password,
                is_active: v.is_active,
                is_superuser: v.is_superuser,
                created_at: None,
            })
            .collect();
        match state.directory.create_many(new_users).await {
            Ok(users) => Ok(BulkResponse::Created(Json(BulkCreated {
                created: users.len() as u64,
                items: users.into_iter().map(UserOut::from).collect(),
            }))),
            // Someone took an email between the check and the insert.
            Err(StoreError::EmailTaken) => Err(email_taken(taken_emails(&state, &emails).await?)),
            Err(e) => Err(e.into()),
        }
    }

    /// Export users
    ///
    /// Superuser only. Every user matching the same filters and sort as the list, streamed
    /// as CSV (`text/csv`, header row, RFC 4180 quoting) or NDJSON (one User per line).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/export", method = "get", operation_id = "export_users")]
    async fn export(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// `csv` (default) or `ndjson`.
        #[oai(default = "default_format")]
        format: Query<ExportFormat>,
        is_active: Query<Option<bool>>,
        is_superuser: Query<Option<bool>>,
        /// Literal substring of email or full name, case-insensitive.
        search: Query<Option<String>>,
        /// Created at or after this instant (RFC 3339).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Created before this instant (RFC 3339).
        created_before: Query<Option<DateTime<Utc>>>,
        #[oai(default)] sort: Query<SortParam>,
    ) -> ApiResult<export::ExportFile> {
        state.auth.authenticate_superuser(&auth).await?;
        let query = UserQuery {
            filter: user_filter(
                is_active.0,
                is_superuser.0,
                search.0,
                created_after.0,
                created_before.0,
            ),
            sort: sort.0.into(),
            page: PageRequest::new(1, 1).map_err(|e| ApiError::validation(&[e]))?,
        };
        Ok(export::ExportFile::new(
            state.directory.export(&query),
            format.0,
        ))
    }

    /// Get a user
    ///
    /// Superusers may read anyone; other users only themselves. Sends an `ETag`; with a
    /// matching `If-None-Match` the answer is 304 without a body.
    #[oai(path = "/:id", method = "get", operation_id = "get_user")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        id: Path<i64>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> ApiResult<UserResponse> {
        let caller = state.auth.authenticate(&auth).await?;
        if !caller.is_superuser && caller.id != id.0 {
            return Err(ApiError::forbidden("You may only read your own account."));
        }
        let user = match state.directory.user(id.0).await?.0 {
            Some(user) => UserOut::from(&*user),
            None => return Err(ApiError::not_found("User not found.")),
        };
        let etag = user.etag();
        if if_none_match
            .0
            .as_deref()
            .is_some_and(|header| etag_matches(header, &etag))
        {
            return Ok(UserResponse::NotModified(etag));
        }
        Ok(UserResponse::Ok(Json(user), etag))
    }

    /// Update a user
    ///
    /// Superuser only (use `PATCH /api/v1/users/me` for yourself otherwise). Deactivating
    /// a user or setting a password ends their sessions. 409 `conflict` if the change
    /// would leave no active superuser.
    #[oai(path = "/:id", method = "patch", operation_id = "update_user")]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        id: Path<i64>,
        body: JsonBody<UserUpdate>,
    ) -> ApiResult<Json<UserOut>> {
        state.auth.authenticate_superuser(&auth).await?;
        let valid = body.validate().map_err(|e| ApiError::validation(&e))?;
        apply_changes(&state, id.0, valid).await
    }

    /// Delete a user
    ///
    /// Superuser only. You cannot delete yourself, nor the last active superuser (409).
    #[oai(path = "/:id", method = "delete", operation_id = "delete_user")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        id: Path<i64>,
    ) -> ApiResult<Deleted> {
        let caller = state.auth.authenticate_superuser(&auth).await?;
        if caller.id == id.0 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "You cannot delete your own account.",
            ));
        }
        state.directory.delete(id.0).await?;
        Ok(Deleted::NoContent)
    }
}
