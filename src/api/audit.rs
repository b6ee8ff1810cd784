//! The Audit tag: the trail of every change to accounts and sessions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{OpenApi, param::Query, payload::Json};

use super::{
    ApiTags, BearerAuth,
    dto::{AuditEventOut, AuditPageOut},
};
use crate::{error::ApiResult, service::audit::AuditFilter, state::AppState};

pub struct AuditApi;

fn default_size() -> u32 {
    50
}

#[OpenApi(prefix_path = "/api/v1/audit", tag = "ApiTags::Audit")]
impl AuditApi {
    /// The audit trail
    ///
    /// Superuser only. Events newest first, `size` per page; follow `next_cursor` for
    /// older ones. Actions: `user.created`, `user.updated`, `user.deleted`,
    /// `user.invited`, `login.succeeded`, `login.failed`, `login.locked`,
    /// `session.revoked`, `refresh.reused`, `password.changed`,
    /// `password.reset_requested`, `password.reset`, `email.verified`. Events older than
    /// AUDIT_RETENTION_DAYS are pruned.
    #[oai(path = "/", method = "get", operation_id = "list_audit_events")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// An action (`user.updated`) or a family of them (`user.*`).
        action: Query<Option<String>>,
        /// Events by this user.
        actor_id: Query<Option<i64>>,
        /// Events about this user.
        target_id: Query<Option<i64>>,
        /// At or after this instant (RFC 3339).
        after: Query<Option<DateTime<Utc>>>,
        /// Before this instant (RFC 3339).
        before: Query<Option<DateTime<Utc>>>,
        /// `next_cursor` of the previous page (same filters).
        cursor: Query<Option<String>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_size",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        size: Query<u32>,
    ) -> ApiResult<Json<AuditPageOut>> {
        let filter = AuditFilter {
            action: action.0,
            actor_id: actor_id.0,
            target_id: target_id.0,
            after: after.0,
            before: before.0,
        };
        let page = state
            .services
            .audit
            .list(&auth.0, filter, size.0, cursor.0.as_deref())
            .await?;
        Ok(Json(AuditPageOut {
            items: page.items.into_iter().map(AuditEventOut::from).collect(),
            next_cursor: page.next_cursor,
            size: page.size,
        }))
    }
}
