//! The account lifecycle over email: password reset, email verification, invitations.
//! Every mail is a row of the outbox written in the same transaction as its token; the
//! outbox sender delivers it. Links carry a random one-time token of which only the hash is
//! stored; it is single use, expires, and a newer one of its kind replaces it.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    AuthService, Caller, Clock, ServiceError, ServiceResult,
    audit::{Origin, action},
    directory::Directory,
    outbox::{Deliverer, Outbox},
};
use crate::{
    auth::{UNUSABLE_PASSWORD_HASH, one_time_token_hash, random_token},
    config::MailSettings,
    domain::{Email, EndSessions, FieldError, FullName, NewUser, Password, User, UserChanges},
    mail::Template,
    store::{
        AuditTarget, OutboxItem, OutboxMessage, SideEffects, TokenGrant, TokenKind, Topic,
        UserStore,
    },
};

/// An invitation, as a superuser submits it.
#[derive(Debug, Clone, Default)]
pub struct InviteDraft {
    pub email: String,
    pub full_name: Option<String>,
    pub is_superuser: Option<bool>,
}

/// Work a request leaves to the sender, so that it answers the same, in the same time,
/// whether or not the address belongs to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
enum Job {
    PasswordReset {
        email: String,
        #[serde(default)]
        origin: Origin,
    },
    ResendVerification {
        email: String,
        #[serde(default)]
        origin: Origin,
    },
}

pub struct AccountService {
    store: Arc<dyn UserStore>,
    directory: Arc<Directory>,
    auth: Arc<AuthService>,
    outbox: Arc<Outbox>,
    clock: Clock,
    mail: MailSettings,
}

impl AccountService {
    pub(super) fn new(
        store: Arc<dyn UserStore>,
        directory: Arc<Directory>,
        auth: Arc<AuthService>,
        outbox: Arc<Outbox>,
        clock: Clock,
        mail: MailSettings,
    ) -> Self {
        Self {
            store,
            directory,
            auth,
            outbox,
            clock,
            mail,
        }
    }

    fn ttl(&self, kind: TokenKind) -> Duration {
        match kind {
            TokenKind::PasswordReset => self.mail.password_reset_ttl,
            TokenKind::EmailVerification => self.mail.email_verify_ttl,
            TokenKind::Invitation => self.mail.invite_ttl,
        }
    }

    /// A new token of `kind` for the holder of `email`, and the mail with its link.
    fn token_mail(
        &self,
        kind: TokenKind,
        email: &Email,
    ) -> ServiceResult<(TokenGrant, OutboxMessage)> {
        let token = random_token().map_err(ServiceError::Internal)?;
        let now = self.clock.now();
        let valid_for = self.ttl(kind);
        let grant = TokenGrant {
            kind,
            token_hash: one_time_token_hash(&token),
            email_key: email.key(),
            created_at: now,
            expires_at: now
                + chrono::Duration::from_std(valid_for).map_err(ServiceError::internal)?,
        };
        let page = match kind {
            TokenKind::PasswordReset => "reset-password",
            TokenKind::EmailVerification => "verify-email",
            TokenKind::Invitation => "accept-invite",
        };
        let base = self.mail.public_url.as_deref().unwrap_or_default();
        let link = format!("{base}/account/{page}?token={token}");
        let template = match kind {
            TokenKind::PasswordReset => Template::PasswordReset {
                link: &link,
                valid_for,
            },
            TokenKind::EmailVerification => Template::VerifyEmail {
                link: &link,
                valid_for,
            },
            TokenKind::Invitation => Template::Invitation {
                link: &link,
                valid_for,
            },
        };
        Ok((grant, mail_message(&template, email.as_str())?))
    }

    /// What a new, unverified address gets in the transaction that sets it: a
    /// verification link; after a change, the old address is also told.
    pub(super) fn verification(
        &self,
        email: &Email,
        old_address: Option<&str>,
    ) -> ServiceResult<SideEffects> {
        let (grant, message) = self.token_mail(TokenKind::EmailVerification, email)?;
        let mut outbox = vec![message];
        if let Some(old) = old_address {
            outbox.push(mail_message(&Template::EmailChanged, old)?);
        }
        Ok(SideEffects {
            token: Some(grant),
            outbox,
            ..Default::default()
        })
    }

    /// Called once a write with outbox rows has committed.
    pub(super) fn sent(&self) {
        self.outbox.wake();
    }

    /// Records a reset request; the sender mails the link if the address has an active
    /// account. The same answer, in the same time, either way.
    pub async fn request_password_reset(&self, email: &str) -> ServiceResult<()> {
        let email = Email::parse(email).map_err(|m| ServiceError::invalid("email", m))?;
        self.defer(Job::PasswordReset {
            email: email.as_str().to_string(),
            origin: Origin::current(),
        })
        .await
    }

    /// Records a request for a new verification link; the sender mails one if the address
    /// has an account that is not verified yet.
    pub async fn resend_verification(&self, email: &str) -> ServiceResult<()> {
        let email = Email::parse(email).map_err(|m| ServiceError::invalid("email", m))?;
        self.defer(Job::ResendVerification {
            email: email.as_str().to_string(),
            origin: Origin::current(),
        })
        .await
    }

    async fn defer(&self, job: Job) -> ServiceResult<()> {
        let payload = serde_json::to_string(&job).map_err(ServiceError::internal)?;
        let message = OutboxMessage {
            topic: Topic::Job,
            ordering_key: None,
            payload,
        };
        self.store.enqueue(vec![message], self.clock.now()).await?;
        self.sent();
        Ok(())
    }

    async fn run_job(&self, job: Job) -> ServiceResult<()> {
        let (kind, email, origin) = match &job {
            Job::PasswordReset { email, origin } => (TokenKind::PasswordReset, email, origin),
            Job::ResendVerification { email, origin } => {
                (TokenKind::EmailVerification, email, origin)
            }
        };
        let Ok(email) = Email::parse(email) else {
            return Ok(());
        };
        let Some(found) = self.store.find_credentials_by_email(&email).await? else {
            return Ok(()); // no such account: nothing to send, and the caller never knows
        };
        let user = found.user;
        let wanted = match kind {
            TokenKind::PasswordReset => user.is_active,
            _ => !user.email_verified,
        };
        if !wanted {
            return Ok(());
        }
        let address = Email::parse(&user.email).map_err(ServiceError::Internal)?;
        let (grant, message) = self.token_mail(kind, &address)?;
        let audit = match kind {
            TokenKind::PasswordReset => vec![self.auth.audit.record_from(
                origin,
                action::PASSWORD_RESET_REQUESTED,
                None,
                AuditTarget::Changed,
                json!({}),
            )],
            _ => Vec::new(),
        };
        let effects = SideEffects {
            token: Some(grant),
            outbox: vec![message],
            audit,
            ..Default::default()
        };
        match self.store.record_effects(user.id, effects).await {
            // Deleted meanwhile: nothing to send.
            Ok(()) | Err(crate::store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        if kind == TokenKind::PasswordReset {
            self.auth.security.record(
                super::security::SecurityEvent::PasswordResetRequested,
                Some(user.id),
                "a password reset link was mailed",
            );
        }
        self.sent();
        Ok(())
    }

    /// Whether a link's token can still be used (the pages say so before asking for a
    /// password).
    pub async fn link_is_live(&self, kind: TokenKind, token: &str) -> ServiceResult<bool> {
        let hash = one_time_token_hash(token);
        let owner = self
            .store
            .token_owner(kind, &hash, self.clock.now())
            .await?;
        Ok(owner.is_some())
    }

    /// The live token's user, or `InvalidToken`.
    async fn token_user(&self, kind: TokenKind, token: &str) -> ServiceResult<(String, User)> {
        let hash = one_time_token_hash(token);
        let owner = self
            .store
            .token_owner(kind, &hash, self.clock.now())
            .await?
            .ok_or(ServiceError::InvalidToken)?;
        let user = self
            .store
            .get_user(owner.user_id)
            .await?
            .ok_or(ServiceError::InvalidToken)?;
        Ok((hash, user))
    }

    /// A new password for `user`, checked against the rules (reported on `field`).
    async fn new_password(&self, user: &User, raw: &str, field: &str) -> ServiceResult<String> {
        let email = Email::parse(&user.email).ok();
        let password = Password::parse_for(raw, email.as_ref())
            .map_err(|m| ServiceError::invalid(field, m))?;
        self.auth.hash(password.expose()).await
    }

    /// Sets the password from a reset link: every session ends, the failure count clears.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new_password: &str,
    ) -> ServiceResult<()> {
        let (hash, user) = self.token_user(TokenKind::PasswordReset, token).await?;
        let hashed_password = self
            .new_password(&user, new_password, "new_password")
            .await?;
        let changes = UserChanges {
            hashed_password: Some(hashed_password),
            end_sessions: Some(EndSessions::All),
            ..Default::default()
        };
        let audit = &self.auth.audit;
        let effects = SideEffects {
            clear_login_failures: true,
            audit: vec![
                audit.record(
                    action::PASSWORD_RESET,
                    Some(user.id),
                    AuditTarget::Changed,
                    json!({}),
                ),
                self.auth
                    .revoked(Some(user.id), "password reset: every session ended"),
            ],
            ..Default::default()
        };
        self.directory
            .redeem(TokenKind::PasswordReset, hash, changes, effects)
            .await?;
        self.auth.security.record(
            super::security::SecurityEvent::SessionsRevoked,
            Some(user.id),
            "password reset: every session ended",
        );
        Ok(())
    }

    /// Marks the address the link was sent to as verified (if it is still the user's).
    pub async fn verify_email(&self, token: &str) -> ServiceResult<()> {
        let hash = one_time_token_hash(token);
        let changes = UserChanges {
            email_verified: Some(true),
            ..Default::default()
        };
        let verified = self.auth.audit.record(
            action::EMAIL_VERIFIED,
            None,
            AuditTarget::Changed,
            json!({"via": "verification link"}),
        );
        let effects = SideEffects {
            audit: vec![verified],
            ..Default::default()
        };
        self.directory
            .redeem(TokenKind::EmailVerification, hash, changes, effects)
            .await?;
        Ok(())
    }

    /// Creates an active account with no usable password and mails its invitation.
    pub async fn invite(&self, caller: &Caller, draft: InviteDraft) -> ServiceResult<User> {
        caller.require_superuser()?;
        let mut violations = Vec::new();
        let email = Email::parse(&draft.email)
            .map_err(|m| violations.push(FieldError::new("email", m)))
            .ok();
        let full_name = draft
            .full_name
            .as_deref()
            .map(FullName::parse)
            .transpose()
            .map_err(|m| violations.push(FieldError::new("full_name", m)))
            .ok();
        let (Some(email), Some(full_name)) = (email, full_name) else {
            return Err(ServiceError::Invalid(violations));
        };
        let (grant, message) = self.token_mail(TokenKind::Invitation, &email)?;
        let user = NewUser {
            email,
            full_name,
            hashed_password: UNUSABLE_PASSWORD_HASH.to_string(),
            is_active: true,
            is_superuser: draft.is_superuser.unwrap_or(false),
            email_verified: false,
            created_at: Some(self.clock.now()),
        };
        let audit = &self.auth.audit;
        let details = json!({
            "via": "invitation",
            "email": user.email.as_str(),
            "is_active": user.is_active,
            "is_superuser": user.is_superuser,
        });
        let effects = SideEffects {
            token: Some(grant),
            outbox: vec![message],
            audit: vec![
                audit.record(
                    action::USER_CREATED,
                    Some(caller.id()),
                    AuditTarget::Changed,
                    details.clone(),
                ),
                audit.record(
                    action::USER_INVITED,
                    Some(caller.id()),
                    AuditTarget::Changed,
                    details,
                ),
            ],
            ..Default::default()
        };
        let user = self.directory.create(user, effects).await?;
        self.sent();
        Ok(user)
    }

    /// Sets the invitee's password; the address is verified by the link itself.
    pub async fn accept_invite(&self, token: &str, password: &str) -> ServiceResult<()> {
        let (hash, user) = self.token_user(TokenKind::Invitation, token).await?;
        let hashed_password = self.new_password(&user, password, "password").await?;
        let changes = UserChanges {
            hashed_password: Some(hashed_password),
            email_verified: Some(true),
            ..Default::default()
        };
        let audit = &self.auth.audit;
        let effects = SideEffects {
            audit: vec![
                audit.record(
                    action::PASSWORD_CHANGED,
                    Some(user.id),
                    AuditTarget::Changed,
                    json!({"by": "invitation"}),
                ),
                audit.record(
                    action::EMAIL_VERIFIED,
                    Some(user.id),
                    AuditTarget::Changed,
                    json!({"via": "invitation"}),
                ),
            ],
            ..Default::default()
        };
        self.directory
            .redeem(TokenKind::Invitation, hash, changes, effects)
            .await?;
        Ok(())
    }
}

/// The outbox row of a rendered mail to `to`.
fn mail_message(template: &Template<'_>, to: &str) -> ServiceResult<OutboxMessage> {
    let mail = template.render(to);
    Ok(OutboxMessage {
        topic: Topic::Mail,
        ordering_key: None,
        payload: serde_json::to_string(&mail).map_err(ServiceError::internal)?,
    })
}

/// The sender runs deferred jobs through here.
#[async_trait]
impl Deliverer for AccountService {
    async fn deliver(&self, item: &OutboxItem) -> Result<(), String> {
        let job: Job = serde_json::from_str(&item.payload)
            .map_err(|e| format!("unreadable job in the outbox: {e}"))?;
        self.run_job(job).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_through_their_payload() {
        let job = Job::PasswordReset {
            email: "a@b.c".into(),
            origin: Origin::default(),
        };
        let payload = serde_json::to_string(&job).unwrap();
        assert_eq!(
            payload,
            r#"{"job":"password_reset","email":"a@b.c","origin":{"ip":null,"request_id":null}}"#
        );
        assert_eq!(serde_json::from_str::<Job>(&payload).unwrap(), job);
    }
}
