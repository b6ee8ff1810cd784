//! The Account tag: password reset, email verification and invitations over email. The
//! HTML pages that complete them from a link are in `account_pages`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, payload::Json};

use super::{
    ApiTags, JsonBody,
    dto::{
        AcceptInviteRequest, AcceptedOut, EmailRequest, PasswordResetConfirm, VerifyEmailRequest,
    },
};
use crate::{error::ApiResult, state::AppState};

pub struct AccountApi;

#[derive(ApiResponse)]
pub enum Accepted {
    /// Recorded. A mail follows if the address has an account it applies to; the answer
    /// is the same either way.
    #[oai(status = 202)]
    Accepted(Json<AcceptedOut>),
}

impl Accepted {
    fn with(message: &str) -> Self {
        Self::Accepted(Json(AcceptedOut {
            message: message.to_string(),
        }))
    }
}

#[derive(ApiResponse)]
pub enum Done {
    /// Done; the link's token is spent.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Account")]
impl AccountApi {
    /// Request a password reset
    ///
    /// Mails a link (`PUBLIC_URL/account/reset-password?token=…`, valid
    /// PASSWORD_RESET_TTL_SECS) if the address has an active account. The same 202, in
    /// about the same time, whether or not it does. Shares the login rate-limit bucket.
    #[oai(
        path = "/password-reset",
        method = "post",
        operation_id = "request_password_reset"
    )]
    async fn request_reset(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<EmailRequest>,
    ) -> ApiResult<Accepted> {
        state
            .services
            .account
            .request_password_reset(&body.email)
            .await?;
        Ok(Accepted::with(
            "If an account uses this address, a password reset link is on its way.",
        ))
    }

    /// Set a new password from a reset link
    ///
    /// Ends every session of the account and clears its failed-login count. 400
    /// `invalid_token` when the token is unknown, spent or expired.
    #[oai(
        path = "/password-reset/confirm",
        method = "post",
        operation_id = "confirm_password_reset"
    )]
    async fn confirm_reset(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<PasswordResetConfirm>,
    ) -> ApiResult<Done> {
        state
            .services
            .account
            .confirm_password_reset(&body.token, &body.new_password)
            .await?;
        Ok(Done::NoContent)
    }

    /// Verify an email address
    ///
    /// Marks the address the link was sent to as verified, if it is still the account's.
    /// 400 `invalid_token` when the token is unknown, spent or expired.
    #[oai(path = "/verify-email", method = "post", operation_id = "verify_email")]
    async fn verify_email(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<VerifyEmailRequest>,
    ) -> ApiResult<Done> {
        state.services.account.verify_email(&body.token).await?;
        Ok(Done::NoContent)
    }

    /// Send a new verification link
    ///
    /// Mails a new link if the address has an account that is not verified yet (no login
    /// needed). The same 202 either way. Shares the login rate-limit bucket.
    #[oai(
        path = "/verify-email/resend",
        method = "post",
        operation_id = "resend_verification"
    )]
    async fn resend(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<EmailRequest>,
    ) -> ApiResult<Accepted> {
        state
            .services
            .account
            .resend_verification(&body.email)
            .await?;
        Ok(Accepted::with(
            "If this address has an unverified account, a new verification link is on its way.",
        ))
    }

    /// Accept an invitation
    ///
    /// Sets the invitee's password and marks the address verified. 400 `invalid_token`
    /// when the token is unknown, spent or expired.
    #[oai(
        path = "/accept-invite",
        method = "post",
        operation_id = "accept_invite"
    )]
    async fn accept_invite(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<AcceptInviteRequest>,
    ) -> ApiResult<Done> {
        state
            .services
            .account
            .accept_invite(&body.token, &body.password)
            .await?;
        Ok(Done::NoContent)
    }
}
