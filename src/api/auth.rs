use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, payload::Json};

use super::{
    ApiTags, JsonBody,
    dto::{LoginRequest, RefreshRequest, RegisterRequest, TokenResponse, UserOut},
    users::{Created, create_validated},
};
use crate::{
    domain::Email,
    error::{ApiError, ApiResult},
    state::AppState,
};

pub struct AuthApi;

#[derive(ApiResponse)]
pub enum LoggedOut {
    /// The session is over; its refresh tokens no longer work.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in
    ///
    /// Exchanges email and password for an access token (JWT) and a single-use refresh
    /// token. Unknown email and wrong password give the same 401.
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<LoginRequest>,
    ) -> ApiResult<Json<TokenResponse>> {
        let email = Email::parse(&body.email)
            .map_err(|m| ApiError::validation(&[crate::domain::FieldError::new("email", m)]))?;
        let pair = state.auth.login(&email, &body.password).await?;
        Ok(Json(pair.into()))
    }

    /// Refresh tokens
    ///
    /// Spends the refresh token and returns a new pair. Presenting a token that was
    /// already spent revokes every token of its session (reuse detection).
    #[oai(path = "/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<RefreshRequest>,
    ) -> ApiResult<Json<TokenResponse>> {
        let pair = state.auth.refresh(&body.refresh_token).await?;
        Ok(Json(pair.into()))
    }

    /// Log out
    ///
    /// Revokes the session of this refresh token. Unknown or spent tokens also answer 204.
    #[oai(path = "/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<RefreshRequest>,
    ) -> ApiResult<LoggedOut> {
        state.auth.logout(&body.refresh_token).await?;
        Ok(LoggedOut::NoContent)
    }

    /// Register
    ///
    /// Creates an active, non-superuser account. Only when the server runs with
    /// `ALLOW_REGISTRATION=true`; otherwise 403.
    #[oai(path = "/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<RegisterRequest>,
    ) -> ApiResult<Created<UserOut>> {
        if !state.settings.allow_registration {
            return Err(ApiError::forbidden(
                "Self-registration is disabled on this server.",
            ));
        }
        let valid = body.validate().map_err(|e| ApiError::validation(&e))?;
        create_validated(&state, valid).await
    }
}
