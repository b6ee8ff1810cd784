//! The Auth tag: login, refresh, logout, register.

use std::sync::Arc;

use poem::{Request, http::header, web::Data};
use poem_openapi::{ApiResponse, OpenApi, payload::Json};

use super::{
    ApiTags, Created, JsonBody,
    dto::{LoginRequest, RefreshRequest, RegisterRequest, TokenResponse, UserOut},
};
use crate::{
    error::ApiResult,
    request_context::{current_client_ip, record_user_id},
    service::ClientInfo,
    state::AppState,
};

pub struct AuthApi;

/// The routes sharing the stricter per-IP login bucket (LOGIN_RATE_LIMIT_PER_MINUTE).
pub const LOGIN_BUCKET_PATHS: &[&str] = &[
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/register",
    "/api/v1/auth/password-reset",
    "/api/v1/auth/verify-email/resend",
    // The admin console's sign-in checks passwords too.
    "/admin/login",
];

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
        req: &Request,
        body: JsonBody<LoginRequest>,
    ) -> ApiResult<Json<TokenResponse>> {
        let client = ClientInfo {
            ip: current_client_ip().map(|ip| ip.to_string()),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        let issued = state
            .services
            .auth
            .login(&body.email, &body.password, client)
            .await?;
        record_user_id(issued.user_id);
        Ok(Json(issued.tokens.into()))
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
        let issued = state.services.auth.refresh(&body.refresh_token).await?;
        record_user_id(issued.user_id);
        Ok(Json(issued.tokens.into()))
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
        state.services.auth.logout(&body.refresh_token).await?;
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
        let user = state.services.users.register(body.0.into()).await?;
        Ok(Created::user(user))
    }
}
