//! Decisions both stores take inside their transactions, as pure functions, so the two
//! backends cannot disagree on them.

use chrono::{DateTime, Utc};

/// What presenting a stored refresh token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Valid: spend it and issue the next one.
    Spend,
    /// Already spent or revoked: a replay, which ends the token's session.
    Replayed,
    /// Unknown or past its expiry.
    Invalid,
}

/// The one reading of a refresh token's row (`None`: no such token).
pub fn refresh_decision(
    found: Option<(bool, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> RefreshDecision {
    match found {
        None => RefreshDecision::Invalid,
        Some((true, _)) => RefreshDecision::Replayed,
        Some((false, expires_at)) if expires_at <= now => RefreshDecision::Invalid,
        Some((false, _)) => RefreshDecision::Spend,
    }
}

/// Whether a change to one account must find another active superuser before it may
/// commit: the account was an active superuser and no longer is (deleted, deactivated or
/// demoted). Without one, the change is refused and rolled back.
pub fn needs_another_active_superuser(
    was_active_superuser: bool,
    is_active_superuser: bool,
) -> bool {
    was_active_superuser && !is_active_superuser
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_spent_once_and_only_before_expiry() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(refresh_decision(None, now), RefreshDecision::Invalid);
        assert_eq!(
            refresh_decision(Some((false, later)), now),
            RefreshDecision::Spend
        );
        assert_eq!(
            refresh_decision(Some((false, now)), now),
            RefreshDecision::Invalid
        );
        assert_eq!(
            refresh_decision(Some((true, later)), now),
            RefreshDecision::Replayed
        );
        assert_eq!(
            refresh_decision(Some((true, now)), now),
            RefreshDecision::Replayed
        );
    }

    #[test]
    fn only_losing_an_active_superuser_needs_another() {
        assert!(needs_another_active_superuser(true, false));
        assert!(!needs_another_active_superuser(true, true));
        assert!(!needs_another_active_superuser(false, false));
        assert!(!needs_another_active_superuser(false, true));
    }
}
