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

/// The one reading of a refresh token's row: `(spent, expires_at, session_live)`, or
/// `None` for no such token. A spent token is a replay even after its session ended; a
/// token of an ended or expired session is refused without ending anything.
pub fn refresh_decision(
    found: Option<(bool, DateTime<Utc>, bool)>,
    now: DateTime<Utc>,
) -> RefreshDecision {
    match found {
        None => RefreshDecision::Invalid,
        Some((true, _, _)) => RefreshDecision::Replayed,
        Some((false, _, false)) => RefreshDecision::Invalid,
        Some((false, expires_at, true)) if expires_at <= now => RefreshDecision::Invalid,
        Some((false, _, true)) => RefreshDecision::Spend,
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
        use RefreshDecision::{Invalid, Replayed, Spend};
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(refresh_decision(None, now), Invalid);
        assert_eq!(refresh_decision(Some((false, later, true)), now), Spend);
        assert_eq!(refresh_decision(Some((false, now, true)), now), Invalid);
        assert_eq!(refresh_decision(Some((false, later, false)), now), Invalid);
        assert_eq!(refresh_decision(Some((true, later, true)), now), Replayed);
        assert_eq!(refresh_decision(Some((true, now, false)), now), Replayed);
    }

    #[test]
    fn only_losing_an_active_superuser_needs_another() {
        assert!(needs_another_active_superuser(true, false));
        assert!(!needs_another_active_superuser(true, true));
        assert!(!needs_another_active_superuser(false, false));
        assert!(!needs_another_active_superuser(false, true));
    }
}
