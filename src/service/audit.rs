//! The audit trail: the events every change writes (built here, written by the store in
//! the change's own transaction), which of them webhooks deliver, reading the trail, and
//! pruning it after AUDIT_RETENTION_DAYS.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Caller, Clock, ServiceError, ServiceResult, cursor::Cursors};
use crate::{
    config::AuditSettings,
    domain::UserId,
    request_context::{current_client_ip, current_request_id},
    store::{ActionFilter, AuditEvent, AuditQuery, AuditRecord, AuditTarget, UserStore},
};

/// The actions Roster records.
pub mod action {
    pub const USER_CREATED: &str = "user.created";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_INVITED: &str = "user.invited";
    pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
    pub const LOGIN_FAILED: &str = "login.failed";
    pub const LOGIN_LOCKED: &str = "login.locked";
    pub const SESSION_REVOKED: &str = "session.revoked";
    pub const REFRESH_REUSED: &str = "refresh.reused";
    pub const PASSWORD_CHANGED: &str = "password.changed";
    pub const PASSWORD_RESET_REQUESTED: &str = "password.reset_requested";
    pub const PASSWORD_RESET: &str = "password.reset";
    pub const EMAIL_VERIFIED: &str = "email.verified";

    pub const ALL: [&str; 13] = [
        USER_CREATED,
        USER_UPDATED,
        USER_DELETED,
        USER_INVITED,
        LOGIN_SUCCEEDED,
        LOGIN_FAILED,
        LOGIN_LOCKED,
        SESSION_REVOKED,
        REFRESH_REUSED,
        PASSWORD_CHANGED,
        PASSWORD_RESET_REQUESTED,
        PASSWORD_RESET,
        EMAIL_VERIFIED,
    ];
}

/// Where a request came from, captured while it is served (jobs carry it along).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl Origin {
    /// The request being served, if any.
    pub fn current() -> Self {
        let request_id = current_request_id();
        Self {
            ip: current_client_ip().map(|ip| ip.to_string()),
            request_id: (!request_id.is_empty()).then_some(request_id),
        }
    }
}

/// A page of the trail.
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
    pub size: u32,
}

/// What a listing asks for, as given.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<UserId>,
    pub target_id: Option<UserId>,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

const PRUNE_BATCH: u32 = 1_000;
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

pub struct Auditor {
    store: Arc<dyn UserStore>,
    clock: Clock,
    retention: Duration,
    webhooks: bool,
    webhook_events: Vec<String>,
    cursors: Arc<Cursors>,
}

impl Auditor {
    pub(super) fn new(
        store: Arc<dyn UserStore>,
        clock: Clock,
        settings: &AuditSettings,
        cursors: Arc<Cursors>,
    ) -> Self {
        Self {
            store,
            clock,
            retention: settings.retention,
            webhooks: settings.webhook.is_some(),
            webhook_events: settings.webhook_events.clone(),
            cursors,
        }
    }

    /// Whether WEBHOOK_EVENTS selects `action`.
    fn delivers(&self, action: &str) -> bool {
        self.webhooks && matches_kinds(&self.webhook_events, action)
    }

    /// An event of the request being served.
    pub fn record(
        &self,
        action: &'static str,
        actor: Option<UserId>,
        target: AuditTarget,
        details: Value,
    ) -> AuditRecord {
        self.record_from(&Origin::current(), action, actor, target, details)
    }

    /// An event of the request `origin` describes (work done after it was answered).
    pub fn record_from(
        &self,
        origin: &Origin,
        action: &'static str,
        actor: Option<UserId>,
        target: AuditTarget,
        details: Value,
    ) -> AuditRecord {
        AuditRecord {
            at: self.clock.now(),
            action,
            actor_id: actor,
            actor_ip: origin.ip.clone(),
            target,
            request_id: origin.request_id.clone(),
            details,
            webhook: self.delivers(action),
        }
    }

    /// Newest first, `size` at a time, after `cursor` (a page's `next_cursor`).
    pub async fn list(
        &self,
        caller: &Caller,
        filter: AuditFilter,
        size: u32,
        cursor: Option<&str>,
    ) -> ServiceResult<AuditPage> {
        caller.require_superuser()?;
        let action = match filter.action.as_deref().map(str::trim) {
            None | Some("") | Some("*") => None,
            Some(kind) => Some(match kind.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('.') => ActionFilter::Prefix(prefix.to_string()),
                Some(_) => {
                    return Err(ServiceError::invalid(
                        "action",
                        "is an action (`user.updated`) or a family of them (`user.*`)",
                    ));
                }
                None => ActionFilter::Exact(kind.to_string()),
            }),
        };
        let list = format!(
            "audit|{:?}|{:?}|{:?}|{:?}|{:?}",
            action, filter.actor_id, filter.target_id, filter.after, filter.before
        );
        let before_id = cursor.map(|c| self.cursors.read_id(&list, c)).transpose()?;
        let query = AuditQuery {
            action,
            actor_id: filter.actor_id,
            target_id: filter.target_id,
            after: filter.after,
            before: filter.before,
            before_id,
            limit: size + 1,
        };
        let mut items = self.store.list_audit(&query).await?;
        let more = items.len() > size as usize;
        items.truncate(size as usize);
        let next_cursor = match (more, items.last()) {
            (true, Some(last)) => Some(self.cursors.after_id(&list, last.id)?),
            _ => None,
        };
        Ok(AuditPage {
            items,
            next_cursor,
            size,
        })
    }

    /// Deletes events older than the retention, a batch per statement; returns how many.
    pub async fn prune(&self) -> ServiceResult<u64> {
        let before = self.clock.now()
            - chrono::Duration::from_std(self.retention).map_err(ServiceError::internal)?;
        let mut total = 0;
        loop {
            let n = self.store.prune_audit(before, PRUNE_BATCH).await?;
            total += n;
            if n < u64::from(PRUNE_BATCH) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    pub fn spawn_pruner(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(auditor) = weak.upgrade() else { break };
                match auditor.prune().await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "pruned audit events past the retention"),
                    Err(e) => tracing::warn!(error = %e, "audit pruning failed; retrying later"),
                }
                drop(auditor);
                tokio::time::sleep(PRUNE_EVERY).await;
            }
        });
    }
}

/// Whether `action` is one of `kinds` (`*`, `user.*`, or exact names).
pub fn matches_kinds(kinds: &[String], action: &str) -> bool {
    kinds.iter().any(|k| match k.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => action.starts_with(prefix),
        None => k == action,
    })
}

/// The details of a change: the names of every changed field, and the values of those
/// that are not secrets.
pub fn change_details(fields: &[(&str, Option<Value>)]) -> Value {
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let values: serde_json::Map<String, Value> = fields
        .iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name.to_string(), v)))
        .collect();
    json!({"fields": names, "values": values})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_kinds_match_exactly_by_family_or_all() {
        let kinds = |k: &str| k.split(',').map(str::to_string).collect::<Vec<_>>();
        assert!(matches_kinds(&kinds("*"), "login.failed"));
        assert!(matches_kinds(&kinds("user.*"), "user.created"));
        assert!(!matches_kinds(&kinds("user.*"), "login.failed"));
        assert!(matches_kinds(&kinds("user.*,login.failed"), "login.failed"));
        assert!(!matches_kinds(&kinds("login.failed"), "login.failedx"));
    }

    #[test]
    fn secrets_are_named_never_shown() {
        let d = change_details(&[("password", None), ("full_name", Some(json!("Ada")))]);
        assert_eq!(d["fields"], json!(["password", "full_name"]));
        assert_eq!(d["values"], json!({"full_name": "Ada"}));
    }
}
