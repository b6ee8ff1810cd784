//! The Users tag: accounts, lists, bulk create, export.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};

use super::{
    ApiTags, BearerAuth, Created, JsonBody,
    dto::{
        BulkCreate, BulkCreated, ExportFormat, InviteRequest, MeUpdate, SortParam, UserCreate,
        UserOut, UserUpdate,
    },
    export,
    page_json::{self, UserJson},
};
use crate::{
    domain::{DEFAULT_PAGE_SIZE, FieldError, PageRequest, UserFilter, UserQuery},
    error::{ApiError, ApiResult},
    state::AppState,
};

pub struct UsersApi;

#[derive(ApiResponse)]
pub enum UserResponse {
    /// The user, with its `ETag`.
    #[oai(status = 200)]
    Ok(UserJson, #[oai(header = "ETag")] String),
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

#[derive(ApiResponse)]
pub enum BulkResponse {
    /// All users were created.
    #[oai(status = 201)]
    Created(Json<BulkCreated>),
}

fn default_size() -> u64 {
    DEFAULT_PAGE_SIZE
}

#[OpenApi(prefix_path = "/api/v1/users", tag = "ApiTags::Users")]
impl UsersApi {
    /// Your account
    ///
    /// The account of the access token's user. 401 once the token's session has ended,
    /// 403 `inactive_user` once the account was deactivated.
    #[oai(path = "/me", method = "get", operation_id = "get_me")]
    async fn get_me(&self, auth: BearerAuth) -> ApiResult<Json<UserOut>> {
        Ok(Json(UserOut::from(&*auth.0.user)))
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
        let user = state
            .services
            .users
            .update_me(&auth.0, body.0.into())
            .await?;
        Ok(Json(user.into()))
    }

    /// List users
    ///
    /// Superuser only. Filters combine with AND; `search` is a literal, case-insensitive
    /// substring of email or full name; `created_after` is inclusive and `created_before`
    /// exclusive (RFC 3339). A page past the end is empty.
    ///
    /// Every page carries `next_cursor` (null on the last page). Passing it back as
    /// `cursor` (with the same filters and sort) fetches the next page by keyset, at the
    /// same cost at any depth; such a page answers `{items, next_cursor, size}` and counts
    /// a `total` only with `include_total=true`. `cursor` and `page` together are 422.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/", method = "get", operation_id = "list_users")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Page number, from 1 (default 1). Not with `cursor`.
        #[oai(validator(minimum(value = "1")))]
        page: Query<Option<u64>>,
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
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// With `cursor`: also count the matching users (`total`).
        include_total: Query<Option<bool>>,
    ) -> ApiResult<page_json::UserPageJson> {
        if cursor.0.is_some() && page.0.is_some() {
            return Err(ApiError::validation(&[FieldError::new(
                "cursor",
                "cannot be combined with page",
            )]));
        }
        let page = PageRequest::new(page.0.unwrap_or(1), size.0)
            .map_err(|e| ApiError::validation(&[e]))?;
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
        let listed = state
            .services
            .users
            .list(
                &auth.0,
                &query,
                cursor.0.as_deref(),
                include_total.0.unwrap_or(false),
            )
            .await?;
        Ok(page_json::UserPageJson(listed))
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
        let user = state.services.users.create(&auth.0, body.0.into()).await?;
        Ok(Created::user(user))
    }

    /// Invite a user
    ///
    /// Superuser only. Creates an active account with no usable password and mails the
    /// address a link (`PUBLIC_URL/account/accept-invite?token=…`, valid INVITE_TTL_SECS)
    /// to choose one. 409 `email_taken` when the email exists.
    #[oai(path = "/invite", method = "post", operation_id = "invite_user")]
    async fn invite(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: JsonBody<InviteRequest>,
    ) -> ApiResult<Created<UserOut>> {
        let user = state
            .services
            .account
            .invite(&auth.0, body.0.into())
            .await?;
        Ok(Created::user(user))
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
        let drafts = body.0.users.into_iter().map(Into::into).collect();
        let users = state.services.users.create_many(&auth.0, drafts).await?;
        Ok(BulkResponse::Created(Json(BulkCreated {
            created: users.len() as u64,
            items: users.into_iter().map(UserOut::from).collect(),
        })))
    }

    /// Export users
    ///
    /// Superuser only. Every user matching the same filters and sort as the list, streamed
    /// as CSV (`text/csv`, header row, RFC 4180 quoting) or NDJSON (one User per line);
    /// with `cursor`, only those after that list page.
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
        /// Start after this list page's `next_cursor` (same filters and sort).
        cursor: Query<Option<String>>,
    ) -> ApiResult<export::ExportFile> {
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
            state
                .services
                .users
                .export(&auth.0, &query, cursor.0.as_deref())?,
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
        let user = state.services.users.get(&auth.0, id.0).await?;
        let (user, etag) = state.encoded_users.get(&user).map_err(ApiError::internal)?;
        if if_none_match
            .0
            .as_deref()
            .is_some_and(|header| etag_matches(header, &etag))
        {
            return Ok(UserResponse::NotModified(etag));
        }
        Ok(UserResponse::Ok(user, etag))
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
        let user = state
            .services
            .users
            .update(&auth.0, id.0, body.0.into())
            .await?;
        Ok(Json(user.into()))
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
        state.services.users.delete(&auth.0, id.0).await?;
        Ok(Deleted::NoContent)
    }
}
