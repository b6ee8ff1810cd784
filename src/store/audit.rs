//! Audit events as both stores write and read them. An event is written by the store in
//! the same transaction as the change it records; when webhooks want it, its outbox row
//! is written there too, so an event exists exactly when its change committed.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{OutboxMessage, Topic};
use crate::domain::UserId;

/// Whom an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// The user the write creates or changes (known to the store once written).
    Changed,
    User(UserId),
    Nobody,
}

/// An event to write.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub action: &'static str,
    pub actor_id: Option<UserId>,
    pub actor_ip: Option<String>,
    pub target: AuditTarget,
    pub request_id: Option<String>,
    /// Never a secret's value: changed secrets are named, not shown.
    pub details: Value,
    /// Whether a webhook delivery is queued with it (WEBHOOK_URL and WEBHOOK_EVENTS).
    pub webhook: bool,
}

impl AuditRecord {
    /// The target's id, `changed` standing for `AuditTarget::Changed`.
    pub fn target_id(&self, changed: Option<UserId>) -> Option<UserId> {
        match self.target {
            AuditTarget::Changed => changed,
            AuditTarget::User(id) => Some(id),
            AuditTarget::Nobody => None,
        }
    }
}

/// A written event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub action: String,
    pub actor_id: Option<UserId>,
    pub actor_ip: Option<String>,
    pub target_id: Option<UserId>,
    pub request_id: Option<String>,
    pub details: Value,
}

impl AuditEvent {
    /// The event as a webhook delivers it (the body that is signed), queued in order per
    /// target user.
    pub fn webhook_message(&self) -> OutboxMessage {
        OutboxMessage {
            topic: Topic::Webhook,
            ordering_key: Some(match self.target_id {
                Some(id) => format!("user:{id}"),
                None => "user:none".to_string(),
            }),
            payload: json!({
                "id": self.id,
                // As the API writes it.
                "at": self.at.to_rfc3339(),
                "action": self.action,
                "actor_id": self.actor_id,
                "actor_ip": self.actor_ip,
                "target_id": self.target_id,
                "request_id": self.request_id,
                "details": self.details,
            })
            .to_string(),
        }
    }
}

/// Which actions a listing keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    Exact(String),
    /// `user.*`: every action starting `user.`.
    Prefix(String),
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<ActionFilter>,
    pub actor_id: Option<UserId>,
    pub target_id: Option<UserId>,
    /// Inclusive.
    pub after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub before: Option<DateTime<Utc>>,
    /// Only events older than this id (the cursor).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The upper bound of a prefix range: `user.` → `user/` (the next character), so a prefix
/// filter is an index range on both backends.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_string();
    if let Some(last) = end.pop() {
        end.push(char::from_u32(last as u32 + 1).unwrap_or(char::MAX));
    }
    end
}

/// How both stores keep `details`: its JSON text (SQLite TEXT, PostgreSQL cast to JSONB).
pub fn details_text(details: &Value) -> String {
    details.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_just_past_the_prefix() {
        assert_eq!(prefix_end("user."), "user/");
        let end = prefix_end("user.");
        assert!("user.updated" >= "user." && "user.updated" < end.as_str());
        assert!("userx" >= end.as_str(), "not a user.* action");
    }
}
