//! The bearer security scheme: every handler that takes `BearerAuth` gets the verified,
//! active caller, and the access log learns who it is.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use crate::{error::ApiError, request_context::record_user_id, service::Caller, state::AppState};

/// A JWT access token from `POST /api/v1/auth/login`, sent as `Authorization: Bearer …`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "authenticate")]
pub struct BearerAuth(pub Caller);

async fn authenticate(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let state = req
        .data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let caller = state
        .services
        .auth
        .authenticate(&bearer.token)
        .await
        .map_err(ApiError::from)?;
    record_user_id(caller.id());
    Ok(caller)
}
