//! The durable outbox and one-time tokens as both stores see them. A change that must send
//! something (a mail, a webhook, a deferred job) writes it here in its own transaction; the
//! background sender (`service::outbox`) delivers it afterwards.

use chrono::{DateTime, Utc};

use super::AuditRecord;
use crate::domain::UserId;

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    PasswordReset,
    EmailVerification,
    Invitation,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::Invitation => "invitation",
        }
    }
}

/// A one-time token to keep for a user (only its hash), replacing any older one of its
/// kind.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub kind: TokenKind,
    pub token_hash: String,
    /// The address the link goes to; the token is void once the user's email changed.
    pub email_key: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Whose a live token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: UserId,
    pub email_key: String,
}

/// Which deliverer takes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Mail,
    Webhook,
    /// Work deferred to the sender so the request that asked for it costs the same
    /// whatever its outcome (a reset for an unknown address).
    Job,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mail => "mail",
            Self::Webhook => "webhook",
            Self::Job => "job",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "mail" => Some(Self::Mail),
            "webhook" => Some(Self::Webhook),
            "job" => Some(Self::Job),
            _ => None,
        }
    }
}

/// A message for the sender.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub topic: Topic,
    /// Messages with the same key are delivered one at a time, in the order written.
    pub ordering_key: Option<String>,
    /// JSON, read back by the deliverer of `topic`.
    pub payload: String,
}

/// Rows written in the same transaction as a change to one user: nothing is sent for a
/// change that did not commit, and nothing committed is lost.
#[derive(Debug, Clone, Default)]
pub struct SideEffects {
    pub token: Option<TokenGrant>,
    pub outbox: Vec<OutboxMessage>,
    /// Forget the failed-login count of the user's address (a password reset).
    pub clear_login_failures: bool,
    /// Events of the change (`AuditTarget::Changed` is the user written).
    pub audit: Vec<AuditRecord>,
}

/// A message leased to this sender for delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub topic: Option<Topic>,
    pub payload: String,
    /// Including the one now under way.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Recorded as sent; never delivered again (its payload is erased: mails hold links).
    Delivered,
    /// Try again at `at`.
    Retry { at: DateTime<Utc>, error: String },
    /// No more attempts.
    GaveUp { error: String },
}

/// Messages not yet delivered, and those given up on: in all, and per topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub failed: u64,
    /// `(topic, pending, failed)` for every topic with either.
    pub by_topic: Vec<(String, u64, u64)>,
}

impl OutboxCounts {
    /// Totals and per-topic figures from `(topic, status, count)` rows.
    pub fn from_rows(rows: Vec<(String, String, u64)>) -> Self {
        let mut counts = Self::default();
        for (topic, status, n) in rows {
            let entry = match counts.by_topic.iter().position(|(t, _, _)| *t == topic) {
                Some(i) => &mut counts.by_topic[i],
                None => {
                    counts.by_topic.push((topic, 0, 0));
                    let last = counts.by_topic.len() - 1;
                    &mut counts.by_topic[last]
                }
            };
            if status == "pending" {
                entry.1 += n;
                counts.pending += n;
            } else {
                entry.2 += n;
                counts.failed += n;
            }
        }
        counts.by_topic.sort();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_topic_and_in_all() {
        let counts = OutboxCounts::from_rows(vec![
            ("webhook".into(), "pending".into(), 3),
            ("mail".into(), "pending".into(), 1),
            ("webhook".into(), "failed".into(), 2),
        ]);
        assert_eq!((counts.pending, counts.failed), (4, 2));
        assert_eq!(
            counts.by_topic,
            [("mail".to_string(), 1, 0), ("webhook".to_string(), 3, 2)]
        );
    }
}
