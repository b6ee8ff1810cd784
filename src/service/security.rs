//! Security events: logged at WARN under the `security` target and counted for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A wrong password (at login, or as `current_password`).
    LoginFailed,
    /// An account reached LOGIN_MAX_FAILURES within the window.
    LoginLocked,
    /// A spent refresh token was presented; its session was ended.
    RefreshReused,
    /// A superuser flag or an active flag changed.
    PrivilegeChanged,
    /// Sessions were ended by someone or something other than their own logout.
    SessionsRevoked,
    /// A password reset link was mailed.
    PasswordResetRequested,
}

impl SecurityEvent {
    pub const ALL: [Self; 6] = [
        Self::LoginFailed,
        Self::LoginLocked,
        Self::RefreshReused,
        Self::PrivilegeChanged,
        Self::SessionsRevoked,
        Self::PasswordResetRequested,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::LoginFailed => "login.failed",
            Self::LoginLocked => "login.locked",
            Self::RefreshReused => "refresh.reused",
            Self::PrivilegeChanged => "privilege.changed",
            Self::SessionsRevoked => "session.revoked",
            Self::PasswordResetRequested => "password.reset_requested",
        }
    }
}

#[derive(Default)]
pub struct SecurityLog {
    counts: [AtomicU64; 6],
}

impl SecurityLog {
    /// Logs and counts one event. `subject` is the account concerned, when known; `detail`
    /// never carries a secret.
    pub fn record(&self, event: SecurityEvent, subject: Option<UserId>, detail: &str) {
        let index = SecurityEvent::ALL
            .iter()
            .position(|e| *e == event)
            .unwrap_or(0);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "security", event = event.name(), user_id = subject, detail, "security event");
    }

    /// Every event kind with its count since start-up.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        SecurityEvent::ALL
            .iter()
            .zip(&self.counts)
            .map(|(e, c)| (e.name(), c.load(Ordering::Relaxed)))
            .collect()
    }
}
