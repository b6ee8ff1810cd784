//! Credentials and sessions: logging in, token issue and rotation, the per-request session
//! check, seeing and ending sessions, and pruning what has ended.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Caller, Clock, ServiceError, ServiceResult,
    audit::{Auditor, action},
    cursor::Cursors,
    directory::Directory,
    keys::SigningKeys,
    security::{SecurityEvent, SecurityLog},
};
use crate::{
    auth::{
        AccessTokens, PasswordHasher, UNUSABLE_PASSWORD_HASH, random_token, refresh_token_hash,
    },
    config::Settings,
    domain::{Email, RefreshDecision, UserId, fold_email},
    store::{
        AuditRecord, AuditTarget, FailureAudit, NewRefreshToken, Rotation, SessionRecord,
        SessionScope, UserStore,
    },
};

pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// A login or refresh that succeeded: the new tokens and whose they are.
pub struct Issued {
    pub tokens: TokenPair,
    pub user_id: UserId,
}

/// A console sign-in: the cookie's token and how long it (and its session) lives.
pub struct ConsoleSignIn {
    pub token: String,
    pub lifetime: Duration,
}

/// A console session lives at most this long (SESSION_MAX_LIFETIME_SECS if shorter): a
/// browser left signed in to an administrative tool should not stay so for a month.
const CONSOLE_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

type HmacSha256 = Hmac<Sha256>;

/// Where a login comes from, as the sessions list shows it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A session as its owner (or a superuser) sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub record: SessionRecord,
    /// The session of the token that asked.
    pub current: bool,
}

const BAD_ACCESS_TOKEN: &str = "The access token is invalid or expired.";
const ENDED_SESSION: &str = "The session of this access token has ended; log in again.";
const BAD_REFRESH_TOKEN: &str = "The refresh token is invalid or expired.";
const SESSION_NOT_FOUND: &str = "No such session of yours.";
/// `last_used_at` is written at most this often per session.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per pruning statement, and how often pruning runs.
pub const PRUNE_BATCH: u32 = 1_000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// A user agent is kept to this many characters.
const MAX_USER_AGENT_CHARS: usize = 256;

pub struct AuthService {
    store: Arc<dyn UserStore>,
    directory: Arc<Directory>,
    hasher: PasswordHasher,
    access: AccessTokens,
    refresh_ttl: Duration,
    session_lifetime: Duration,
    clock: Clock,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: String,
    pruned: AtomicU64,
    max_failures: u32,
    failure_window: Duration,
    require_verified_email: bool,
    pub(super) security: Arc<SecurityLog>,
    pub(super) cursors: Arc<Cursors>,
    pub(super) audit: Arc<Auditor>,
    /// Derived from the signing key: anti-forgery tokens hold across restarts and instances.
    csrf_key: Vec<u8>,
}

impl AuthService {
    pub(super) async fn new(
        settings: &Settings,
        store: Arc<dyn UserStore>,
        directory: Arc<Directory>,
        clock: Clock,
        keys: SigningKeys,
        cursors: Arc<Cursors>,
        audit: Arc<Auditor>,
    ) -> Result<Self, String> {
        let hasher = PasswordHasher::with_limits(
            &settings.argon2,
            settings.hash_concurrency,
            settings.hash_queue_max,
        )?;
        let dummy_hash = hasher
            .hash(&random_token()?)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            directory,
            hasher,
            access: AccessTokens::with_previous(
                keys.current.as_bytes(),
                &keys.previous,
                settings.access_token_ttl,
            ),
            refresh_ttl: settings.refresh_token_ttl,
            session_lifetime: settings.session_max_lifetime,
            clock,
            dummy_hash,
            pruned: AtomicU64::new(0),
            max_failures: settings.login_max_failures,
            require_verified_email: settings.require_email_verification,
            failure_window: settings.login_failure_window,
            security: Arc::new(SecurityLog::default()),
            cursors,
            audit,
            csrf_key: Sha256::new()
                .chain_update(b"roster console csrf\0")
                .chain_update(keys.current.as_bytes())
                .finalize()
                .to_vec(),
        })
    }

    pub(super) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub(super) async fn hash(&self, password: &str) -> ServiceResult<String> {
        Ok(self.hasher.hash(password).await?)
    }

    /// Whether `password` is the stored password of `user_id` (as `current_password`).
    /// A wrong one counts as a failed login of the account, and a locked account is not
    /// checked at all: this must not be a way around the login limit.
    pub(super) async fn check_password(
        &self,
        user_id: UserId,
        email: &str,
        password: &str,
    ) -> ServiceResult<bool> {
        let key = fold_email(email);
        let prior = self.refuse_if_locked(&key).await?;
        let hash =
            self.store
                .get_password_hash(user_id)
                .await?
                .ok_or(ServiceError::Unauthenticated(
                    "Your account no longer exists.",
                ))?;
        let verified = self.hasher.verify(password, &hash).await?;
        if verified {
            if prior.is_some() {
                self.store.clear_login_failures(&key).await?;
            }
        } else {
            self.count_failure(&key, Some(user_id), "wrong current_password")
                .await?;
        }
        Ok(verified)
    }

    /// `Err(Locked)` while the account has used up its failures; else the failures counted
    /// in its current window, if any.
    async fn refuse_if_locked(&self, key: &str) -> ServiceResult<Option<u32>> {
        let now = self.clock.now();
        let window = duration(self.failure_window)?;
        match self.store.login_failures(key).await? {
            Some((count, started)) if started + window > now => {
                if count >= self.max_failures {
                    let left = (started + window - now).num_milliseconds();
                    let retry_after_secs = u64::try_from((left + 999) / 1000).unwrap_or(1).max(1);
                    return Err(ServiceError::Locked { retry_after_secs });
                }
                Ok(Some(count))
            }
            _ => Ok(None),
        }
    }

    async fn count_failure(
        &self,
        key: &str,
        user_id: Option<UserId>,
        what: &'static str,
    ) -> ServiceResult<()> {
        let now = self.clock.now();
        let window = duration(self.failure_window)?;
        let target = user_id.map_or(AuditTarget::Nobody, AuditTarget::User);
        let audit = FailureAudit {
            failed: self.audit.record(
                action::LOGIN_FAILED,
                None,
                target.clone(),
                json!({"email": key, "reason": what}),
            ),
            locked: self.audit.record(
                action::LOGIN_LOCKED,
                None,
                target,
                json!({"email": key, "failures": self.max_failures}),
            ),
            limit: self.max_failures,
        };
        let (count, _) = self
            .store
            .record_login_failure(key, now, now - window, audit)
            .await?;
        self.security
            .record(SecurityEvent::LoginFailed, user_id, what);
        if count == self.max_failures {
            self.security.record(
                SecurityEvent::LoginLocked,
                user_id,
                "LOGIN_MAX_FAILURES reached; further logins are refused until the window ends",
            );
        }
        Ok(())
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: ClientInfo,
    ) -> ServiceResult<Issued> {
        let (user_id, session_id, refresh_token) = self
            .open_session(email, password, client, self.session_lifetime, false)
            .await?;
        self.issue(user_id, &session_id, refresh_token)
    }

    /// A superuser's sign-in to the admin console: a normal session (listed and revocable
    /// like any other) of at most CONSOLE_SESSION_LIFETIME, held by one token that lives as
    /// long as the session. Anyone else is refused before a session is opened.
    pub async fn console_sign_in(
        &self,
        email: &str,
        password: &str,
        client: ClientInfo,
    ) -> ServiceResult<ConsoleSignIn> {
        let lifetime = self.session_lifetime.min(CONSOLE_SESSION_LIFETIME);
        let (user_id, session_id, _refresh_token) = self
            .open_session(email, password, client, lifetime, true)
            .await?;
        let token = self
            .access
            .issue_for(user_id, &session_id, Utc::now(), lifetime)
            .map_err(ServiceError::Internal)?;
        Ok(ConsoleSignIn { token, lifetime })
    }

    /// The console's anti-forgery token of a session: an HMAC of the session id under a
    /// key of the server's, so only pages this server rendered for that session carry it.
    pub fn csrf_token(&self, session_id: &str) -> ServiceResult<String> {
        let mac = self.csrf_mac(session_id).map_err(ServiceError::internal)?;
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `presented` is the anti-forgery token of `session_id` (constant time).
    pub fn csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        match (
            URL_SAFE_NO_PAD.decode(presented.trim()),
            self.csrf_mac(session_id),
        ) {
            (Ok(presented), Ok(mac)) => mac.verify_slice(&presented).is_ok(),
            _ => false,
        }
    }

    fn csrf_mac(&self, session_id: &str) -> Result<HmacSha256, hmac::digest::InvalidLength> {
        Ok(HmacSha256::new_from_slice(&self.csrf_key)?.chain_update(session_id.as_bytes()))
    }

    /// Checks the password and opens a session of `lifetime`; the user, the session and
    /// its first refresh token.
    async fn open_session(
        &self,
        email: &str,
        password: &str,
        client: ClientInfo,
        lifetime: Duration,
        only_superusers: bool,
    ) -> ServiceResult<(UserId, String, String)> {
        let email = Email::parse(email).map_err(|m| ServiceError::invalid("email", m))?;
        let key = email.key();
        let prior = self.refuse_if_locked(&key).await?;
        let found = self.store.find_credentials_by_email(&email).await?;
        // An invitee without a password yet costs the same check as everyone else.
        let usable = found
            .as_ref()
            .is_some_and(|c| c.hashed_password != UNUSABLE_PASSWORD_HASH);
        let (hash, user) = match &found {
            Some(c) if usable => (c.hashed_password.as_str(), Some(&c.user)),
            Some(c) => (self.dummy_hash.as_str(), Some(&c.user)),
            None => (self.dummy_hash.as_str(), None),
        };
        let verified = self.hasher.verify(password, hash).await? && usable;
        let user = match user {
            Some(user) if verified => user,
            _ => {
                let who = user.map(|u| u.id);
                self.count_failure(&key, who, "wrong password at login")
                    .await?;
                return Err(ServiceError::InvalidCredentials);
            }
        };
        if prior.is_some() {
            self.store.clear_login_failures(&key).await?;
        }
        if !user.is_active {
            return Err(ServiceError::InactiveUser);
        }
        if self.require_verified_email && !user.email_verified {
            return Err(ServiceError::EmailNotVerified);
        }
        if only_superusers && !user.is_superuser {
            return Err(ServiceError::Forbidden(
                "The admin console is for superusers only.",
            ));
        }
        if self.hasher.needs_rehash(hash) {
            let fresh = self.hash(password).await?;
            self.store
                .upgrade_password_hash(user.id, hash, &fresh)
                .await?;
        }
        let now = self.clock.now();
        let session = SessionRecord {
            id: random_token().map_err(ServiceError::Internal)?,
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            expires_at: now + duration(lifetime)?,
            ip: client.ip,
            user_agent: client
                .user_agent
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            revoked_at: None,
        };
        let (token, refresh_token) = self.next_refresh_token(now, Some(session.expires_at))?;
        let (session_id, user_id) = (session.id.clone(), session.user_id);
        let audit = self.audit.record(
            action::LOGIN_SUCCEEDED,
            Some(user_id),
            AuditTarget::Changed,
            json!({"session_id": session_id}),
        );
        self.directory
            .open_session(session, token, vec![audit])
            .await?;
        Ok((user_id, session_id, refresh_token))
    }

    /// Spends `refresh_token` and returns the next pair of its session.
    pub async fn refresh(&self, refresh_token: &str) -> ServiceResult<Issued> {
        let now = self.clock.now();
        // The store checks the session is live, and bounds the new token by its end.
        let (next, token) = self.next_refresh_token(now, None)?;
        let rotation = self
            .directory
            .rotate(
                refresh_token_hash(refresh_token),
                next,
                self.audit.record(
                    action::REFRESH_REUSED,
                    None,
                    AuditTarget::Changed,
                    json!({"reason": "a spent refresh token was presented; its session was ended"}),
                ),
            )
            .await?;
        match rotation {
            Rotation::Rotated {
                user_id,
                session_id,
            } => self.issue(user_id, &session_id, token),
            Rotation::Inactive { .. } => Err(ServiceError::InactiveUser),
            Rotation::Refused {
                decision: RefreshDecision::Replayed,
                user_id,
            } => {
                self.security.record(
                    SecurityEvent::RefreshReused,
                    user_id,
                    "a spent refresh token was presented; its session was ended",
                );
                Err(ServiceError::Unauthenticated(
                    "This refresh token was already used; its session has been ended. Log in again.",
                ))
            }
            Rotation::Refused { .. } => Err(ServiceError::Unauthenticated(BAD_REFRESH_TOKEN)),
        }
    }

    /// Ends the session the token belongs to. Unknown or spent tokens are fine.
    pub async fn logout(&self, refresh_token: &str) -> ServiceResult<()> {
        let token_hash = refresh_token_hash(refresh_token);
        self.directory
            .end_sessions(
                SessionScope::OfToken { token_hash },
                self.revoked(None, "logout"),
            )
            .await?;
        Ok(())
    }

    /// The active user a bearer token belongs to, if its session is live.
    pub async fn authenticate(&self, access_token: &str) -> ServiceResult<Caller> {
        let (user_id, session_id) = self
            .access
            .verify(access_token)
            .ok_or(ServiceError::Unauthenticated(BAD_ACCESS_TOKEN))?;
        // One freshness check serves the session, the user and the rest of the request.
        let fresh = self.directory.freshness().await;
        let session = self
            .directory
            .session_as_of(&session_id, user_id, fresh)
            .await?;
        let Some(session) = session else {
            return Err(ServiceError::Unauthenticated(ENDED_SESSION));
        };
        let user = session.user.clone().ok_or(ServiceError::Unauthenticated(
            "The access token's user no longer exists.",
        ))?;
        // A deactivated account says so (as its login would); its sessions ended with
        // the deactivation, so reactivating it revives none of them.
        if !user.is_active {
            return Err(ServiceError::InactiveUser);
        }
        let now = self.clock.now();
        if session.record.user_id != user_id || !session.record.is_live(now) {
            return Err(ServiceError::Unauthenticated(ENDED_SESSION));
        }
        if session.claim_touch(now, TOUCH_EVERY) {
            // Off the request's path: recording use must never slow or fail a request.
            let store = self.store.clone();
            let id = session_id.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_session(&id, now).await {
                    tracing::debug!(error = %e, "could not record session use");
                }
            });
        }
        Ok(Caller {
            user,
            session_id,
            fresh,
        })
    }

    /// Live sessions of `user_id`, newest first; `current` marks the caller's.
    async fn sessions_of(
        &self,
        caller: &Caller,
        user_id: UserId,
    ) -> ServiceResult<Vec<SessionView>> {
        let sessions = self.store.list_sessions(user_id, self.clock.now()).await?;
        Ok(sessions
            .into_iter()
            .map(|record| SessionView {
                current: record.id == caller.session_id,
                record,
            })
            .collect())
    }

    pub async fn my_sessions(&self, caller: &Caller) -> ServiceResult<Vec<SessionView>> {
        self.sessions_of(caller, caller.id()).await
    }

    /// Ends one of the caller's own live sessions (404 for anyone else's or an unknown one).
    pub async fn end_my_session(&self, caller: &Caller, session_id: &str) -> ServiceResult<()> {
        let ended = self
            .directory
            .end_sessions(
                SessionScope::One {
                    user_id: caller.id(),
                    session_id: session_id.to_string(),
                },
                self.revoked(Some(caller.id()), "ended by its user"),
            )
            .await?;
        if ended.is_empty() {
            return Err(ServiceError::NotFound(SESSION_NOT_FOUND));
        }
        Ok(())
    }

    /// Ends every session of the caller but the current one.
    pub async fn end_my_other_sessions(&self, caller: &Caller) -> ServiceResult<()> {
        self.directory
            .end_sessions(
                SessionScope::AllOf {
                    user_id: caller.id(),
                    except: Some(caller.session_id.clone()),
                },
                self.revoked(Some(caller.id()), "every other session ended by its user"),
            )
            .await?;
        Ok(())
    }

    /// A user's live sessions, for a superuser.
    pub async fn sessions_for(
        &self,
        caller: &Caller,
        user_id: UserId,
    ) -> ServiceResult<Vec<SessionView>> {
        caller.require_superuser()?;
        self.require_user(user_id).await?;
        self.sessions_of(caller, user_id).await
    }

    /// Ends one live session of a user, for a superuser (404 when the user has no such
    /// live session).
    pub async fn end_session_of(
        &self,
        caller: &Caller,
        user_id: UserId,
        session_id: &str,
    ) -> ServiceResult<()> {
        caller.require_superuser()?;
        self.require_user(user_id).await?;
        let ended = self
            .directory
            .end_sessions(
                SessionScope::One {
                    user_id,
                    session_id: session_id.to_string(),
                },
                self.revoked(Some(caller.id()), "ended by a superuser"),
            )
            .await?;
        if ended.is_empty() {
            return Err(ServiceError::NotFound("No such live session of this user."));
        }
        self.security.record(
            SecurityEvent::SessionsRevoked,
            Some(user_id),
            &format!("one session ended by superuser {}", caller.id()),
        );
        Ok(())
    }

    /// Ends every session of a user, for a superuser.
    pub async fn end_sessions_for(&self, caller: &Caller, user_id: UserId) -> ServiceResult<()> {
        caller.require_superuser()?;
        self.require_user(user_id).await?;
        self.directory
            .end_sessions(
                SessionScope::AllOf {
                    user_id,
                    except: None,
                },
                self.revoked(Some(caller.id()), "ended by a superuser"),
            )
            .await?;
        self.security.record(
            SecurityEvent::SessionsRevoked,
            Some(user_id),
            &format!("every session ended by superuser {}", caller.id()),
        );
        Ok(())
    }

    /// The `session.revoked` event of sessions ended by `actor` for `reason`.
    pub(super) fn revoked(&self, actor: Option<UserId>, reason: &str) -> AuditRecord {
        self.audit.record(
            action::SESSION_REVOKED,
            actor,
            AuditTarget::Changed,
            json!({ "reason": reason }),
        )
    }

    async fn require_user(&self, user_id: UserId) -> ServiceResult<()> {
        match self.store.get_user(user_id).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(super::USER_NOT_FOUND)),
        }
    }

    /// Deletes ended sessions and spent or expired refresh tokens, a batch per statement,
    /// until none are left; returns how many rows went.
    pub async fn prune(&self) -> ServiceResult<u64> {
        let window = duration(self.failure_window)?;
        let mut total = self
            .store
            .prune_login_failures(self.clock.now() - window)
            .await?;
        loop {
            let pruned = self
                .store
                .prune_sessions(self.clock.now(), PRUNE_BATCH)
                .await?;
            total += pruned;
            self.pruned.fetch_add(pruned, Ordering::Relaxed);
            if pruned < u64::from(PRUNE_BATCH) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Rows pruned since start-up (for `/metrics`).
    pub fn pruned_rows(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// Prunes every PRUNE_EVERY for as long as the service lives.
    pub fn spawn_pruner(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PRUNE_EVERY).await;
                let Some(auth) = weak.upgrade() else { break };
                match auth.prune().await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "pruned ended sessions and spent tokens"),
                    Err(e) => tracing::warn!(error = %e, "session pruning failed; retrying later"),
                }
            }
        });
    }

    /// A new refresh token (and what the store keeps of it), expiring by `limit` at the
    /// latest.
    fn next_refresh_token(
        &self,
        now: DateTime<Utc>,
        limit: Option<DateTime<Utc>>,
    ) -> ServiceResult<(NewRefreshToken, String)> {
        let token = random_token().map_err(ServiceError::Internal)?;
        let expires_at = now + duration(self.refresh_ttl)?;
        let expires_at = limit.map_or(expires_at, |limit| expires_at.min(limit));
        Ok((
            NewRefreshToken {
                token_hash: refresh_token_hash(&token),
                created_at: now,
                expires_at,
            },
            token,
        ))
    }

    fn issue(
        &self,
        user_id: UserId,
        session_id: &str,
        refresh_token: String,
    ) -> ServiceResult<Issued> {
        // JWT validation reads the system clock, so access tokens are stamped by it too.
        let access_token = self
            .access
            .issue(user_id, session_id, Utc::now())
            .map_err(ServiceError::Internal)?;
        Ok(Issued {
            tokens: TokenPair {
                access_token,
                refresh_token,
                expires_in: self.access.ttl().as_secs(),
            },
            user_id,
        })
    }
}

fn duration(d: Duration) -> ServiceResult<chrono::Duration> {
    chrono::Duration::from_std(d).map_err(ServiceError::internal)
}
