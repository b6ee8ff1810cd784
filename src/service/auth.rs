//! Logging in, token issue and rotation, and who is calling: the rules of credentials.

use std::{sync::Arc, time::Duration};

use super::{Caller, Clock, ServiceError, ServiceResult, directory::Directory};
use crate::{
    auth::{AccessTokens, PasswordHasher, random_token, refresh_token_hash},
    config::Settings,
    domain::{Email, RefreshDecision, UserId},
    store::{NewRefreshToken, RefreshTokenUse, UserStore},
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

const JWT_SECRET_KEY: &str = "jwt_secret";
const BAD_ACCESS_TOKEN: &str = "The access token is invalid or expired.";
const BAD_REFRESH_TOKEN: &str = "The refresh token is invalid or expired.";

pub struct AuthService {
    store: Arc<dyn UserStore>,
    directory: Arc<Directory>,
    hasher: PasswordHasher,
    access: AccessTokens,
    refresh_ttl: Duration,
    clock: Clock,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: String,
}

impl AuthService {
    pub(super) async fn new(
        settings: &Settings,
        store: Arc<dyn UserStore>,
        directory: Arc<Directory>,
        clock: Clock,
    ) -> Result<Self, String> {
        let secret = match &settings.jwt_secret {
            Some(secret) => secret.expose().to_string(),
            None => store
                .get_or_insert_setting(JWT_SECRET_KEY, random_token()?)
                .await
                .map_err(|e| format!("cannot load the JWT secret: {e}"))?,
        };
        let hasher = PasswordHasher::new(&settings.argon2)?;
        let dummy_hash = hasher.hash(&random_token()?).await?;
        Ok(Self {
            store,
            directory,
            hasher,
            access: AccessTokens::new(secret.as_bytes(), settings.access_token_ttl),
            refresh_ttl: settings.refresh_token_ttl,
            clock,
            dummy_hash,
        })
    }

    pub(super) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub(super) async fn hash(&self, password: &str) -> ServiceResult<String> {
        self.hasher
            .hash(password)
            .await
            .map_err(ServiceError::Internal)
    }

    /// Whether `password` is the stored password of `user_id`.
    pub(super) async fn check_password(
        &self,
        user_id: UserId,
        password: &str,
    ) -> ServiceResult<bool> {
        let hash =
            self.store
                .get_password_hash(user_id)
                .await?
                .ok_or(ServiceError::Unauthenticated(
                    "Your account no longer exists.",
                ))?;
        Ok(self.hasher.verify(password, &hash).await)
    }

    pub async fn login(&self, email: &str, password: &str) -> ServiceResult<Issued> {
        let email = Email::parse(email).map_err(|m| ServiceError::invalid("email", m))?;
        let found = self.store.find_credentials_by_email(&email).await?;
        let (hash, user) = match &found {
            Some(c) => (c.hashed_password.as_str(), Some(&c.user)),
            None => (self.dummy_hash.as_str(), None),
        };
        let verified = self.hasher.verify(password, hash).await;
        let user = match user {
            Some(user) if verified => user,
            _ => return Err(ServiceError::InvalidCredentials),
        };
        if !user.is_active {
            return Err(ServiceError::InactiveUser);
        }
        let family = random_token().map_err(ServiceError::Internal)?;
        self.issue(user.id, family).await
    }

    /// Spends `refresh_token` and returns the next pair of its family.
    pub async fn refresh(&self, refresh_token: &str) -> ServiceResult<Issued> {
        let used = self
            .store
            .use_refresh_token(&refresh_token_hash(refresh_token), self.clock.now())
            .await?;
        match used {
            RefreshTokenUse::Consumed { user_id, family_id } => {
                let (user, _) = self.directory.user(user_id).await?;
                match user {
                    Some(user) if user.is_active => self.issue(user.id, family_id).await,
                    Some(_) => Err(ServiceError::InactiveUser),
                    None => Err(ServiceError::Unauthenticated(BAD_REFRESH_TOKEN)),
                }
            }
            RefreshTokenUse::Refused(RefreshDecision::Replayed) => {
                Err(ServiceError::Unauthenticated(
                    "This refresh token was already used; its session has been revoked. Log in again.",
                ))
            }
            RefreshTokenUse::Refused(_) => Err(ServiceError::Unauthenticated(BAD_REFRESH_TOKEN)),
        }
    }

    /// Ends the session the token belongs to. Unknown or spent tokens are fine.
    pub async fn logout(&self, refresh_token: &str) -> ServiceResult<()> {
        self.store
            .revoke_refresh_family_of(&refresh_token_hash(refresh_token), self.clock.now())
            .await?;
        Ok(())
    }

    pub(super) async fn revoke_sessions(&self, user_id: UserId) -> ServiceResult<()> {
        self.store
            .revoke_user_refresh_tokens(user_id, self.clock.now())
            .await?;
        Ok(())
    }

    /// The active user a bearer token belongs to.
    pub async fn authenticate(&self, access_token: &str) -> ServiceResult<Caller> {
        let user_id = self
            .access
            .verify(access_token)
            .ok_or(ServiceError::Unauthenticated(BAD_ACCESS_TOKEN))?;
        let (user, _) = self.directory.user(user_id).await?;
        let user = user.ok_or(ServiceError::Unauthenticated(
            "The access token's user no longer exists.",
        ))?;
        if !user.is_active {
            return Err(ServiceError::InactiveUser);
        }
        Ok(Caller { user })
    }

    async fn issue(&self, user_id: UserId, family_id: String) -> ServiceResult<Issued> {
        let now = self.clock.now();
        // JWT validation reads the system clock, so access tokens are stamped by it too.
        let access_token = self
            .access
            .issue(user_id, chrono::Utc::now())
            .map_err(ServiceError::Internal)?;
        let refresh_token = random_token().map_err(ServiceError::Internal)?;
        let refresh_ttl =
            chrono::Duration::from_std(self.refresh_ttl).map_err(ServiceError::internal)?;
        self.store
            .insert_refresh_token(NewRefreshToken {
                token_hash: refresh_token_hash(&refresh_token),
                family_id,
                user_id,
                created_at: now,
                expires_at: now + refresh_ttl,
            })
            .await?;
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
