//! The Sessions tag: your sessions and a superuser's view of anyone's.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, param::Path, payload::Json};

use super::{
    ApiTags, BearerAuth,
    dto::{SessionList, SessionOut},
};
use crate::{error::ApiResult, service::SessionView, state::AppState};

pub struct SessionsApi;

#[derive(ApiResponse)]
pub enum Ended {
    /// The sessions are over: their access and refresh tokens no longer work, on any
    /// instance.
    #[oai(status = 204)]
    NoContent,
}

fn list(views: Vec<SessionView>) -> Json<SessionList> {
    Json(SessionList {
        items: views.into_iter().map(SessionOut::from).collect(),
    })
}

#[OpenApi(prefix_path = "/api/v1/users", tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Your sessions
    ///
    /// Your live sessions (one per login), newest first. `current` marks the one this
    /// access token belongs to.
    #[oai(
        path = "/me/sessions",
        method = "get",
        operation_id = "list_my_sessions"
    )]
    async fn mine(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<SessionList>> {
        Ok(list(state.services.auth.my_sessions(&auth.0).await?))
    }

    /// End your other sessions
    ///
    /// Ends every session of yours except the current one.
    #[oai(
        path = "/me/sessions",
        method = "delete",
        operation_id = "end_my_other_sessions"
    )]
    async fn end_others(&self, state: Data<&Arc<AppState>>, auth: BearerAuth) -> ApiResult<Ended> {
        state.services.auth.end_my_other_sessions(&auth.0).await?;
        Ok(Ended::NoContent)
    }

    /// End one of your sessions
    ///
    /// 404 when the session is not yours, unknown, or already over.
    #[oai(
        path = "/me/sessions/:session_id",
        method = "delete",
        operation_id = "end_my_session"
    )]
    async fn end_one(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        session_id: Path<String>,
    ) -> ApiResult<Ended> {
        state
            .services
            .auth
            .end_my_session(&auth.0, &session_id.0)
            .await?;
        Ok(Ended::NoContent)
    }

    /// A user's sessions
    ///
    /// Superuser only. The user's live sessions, newest first.
    #[oai(
        path = "/:id/sessions",
        method = "get",
        operation_id = "list_user_sessions"
    )]
    async fn of_user(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        id: Path<i64>,
    ) -> ApiResult<Json<SessionList>> {
        Ok(list(state.services.auth.sessions_for(&auth.0, id.0).await?))
    }

    /// End a user's sessions
    ///
    /// Superuser only. Ends every session of the user.
    #[oai(
        path = "/:id/sessions",
        method = "delete",
        operation_id = "end_user_sessions"
    )]
    async fn end_of_user(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        id: Path<i64>,
    ) -> ApiResult<Ended> {
        state.services.auth.end_sessions_for(&auth.0, id.0).await?;
        Ok(Ended::NoContent)
    }
}
