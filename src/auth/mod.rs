//! Logging in, token rotation, and who is calling.

mod password;
mod tokens;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use poem_openapi::{SecurityScheme, auth::Bearer};

pub use password::PasswordHasher;
pub use tokens::{AccessTokens, random_token, refresh_token_hash};

use crate::{
    config::Settings,
    directory::Directory,
    domain::{Email, User, UserId},
    error::{ApiError, ApiResult, ErrorCode},
    middleware::request_context::record_user_id,
    store::{NewRefreshToken, RefreshTokenUse, UserStore},
};

/// A JWT access token from `POST /api/v1/auth/login`, sent as `Authorization: Bearer …`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerAuth(pub Bearer);

pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

const JWT_SECRET_KEY: &str = "jwt_secret";

pub struct AuthService {
    store: Arc<dyn UserStore>,
    directory: Arc<Directory>,
    hasher: PasswordHasher,
    access: AccessTokens,
    refresh_ttl: Duration,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: String,
}

impl AuthService {
    pub async fn new(
        settings: &Settings,
        store: Arc<dyn UserStore>,
        directory: Arc<Directory>,
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
            dummy_hash,
        })
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub async fn hash_password(&self, password: &str) -> ApiResult<String> {
        self.hasher.hash(password).await.map_err(ApiError::internal)
    }

    pub async fn login(&self, email: &Email, password: &str) -> ApiResult<TokenPair> {
        let found = self.store.find_credentials_by_email(email).await?;
        let (hash, user) = match &found {
            Some(c) => (c.hashed_password.as_str(), Some(&c.user)),
            None => (self.dummy_hash.as_str(), None),
        };
        let verified = self.hasher.verify(password, hash).await;
        let user = match user {
            Some(user) if verified => user,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidCredentials,
                    "Incorrect email or password.",
                ));
            }
        };
        record_user_id(user.id);
        if !user.is_active {
            return Err(inactive());
        }
        self.issue_pair(user.id, random_token().map_err(ApiError::internal)?)
            .await
    }

    /// Spends `refresh_token` and returns the next pair of its family.
    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<TokenPair> {
        let now = Utc::now();
        match self
            .store
            .use_refresh_token(&refresh_token_hash(refresh_token), now)
            .await?
        {
            RefreshTokenUse::Consumed { user_id, family_id } => {
                record_user_id(user_id);
                let (user, _) = self.directory.user(user_id).await?;
                match user {
                    Some(user) if user.is_active => self.issue_pair(user.id, family_id).await,
                    Some(_) => Err(inactive()),
                    None => Err(ApiError::unauthorized(
                        "The refresh token is invalid or expired.",
                    )),
                }
            }
            RefreshTokenUse::Replayed => Err(ApiError::unauthorized(
                "This refresh token was already used; its session has been revoked. Log in again.",
            )),
            RefreshTokenUse::Invalid => Err(ApiError::unauthorized(
                "The refresh token is invalid or expired.",
            )),
        }
    }

    /// Ends the session the token belongs to. Unknown or spent tokens are fine.
    pub async fn logout(&self, refresh_token: &str) -> ApiResult<()> {
        self.store
            .revoke_refresh_family_of(&refresh_token_hash(refresh_token))
            .await?;
        Ok(())
    }

    pub async fn revoke_sessions(&self, user_id: UserId) -> ApiResult<()> {
        self.store.revoke_user_refresh_tokens(user_id).await?;
        Ok(())
    }

    /// The active user a bearer token belongs to.
    pub async fn authenticate(&self, auth: &BearerAuth) -> ApiResult<Arc<User>> {
        let user_id = self
            .access
            .verify(&auth.0.token)
            .ok_or_else(|| ApiError::unauthorized("The access token is invalid or expired."))?;
        let (user, _) = self.directory.user(user_id).await?;
        let user = user
            .ok_or_else(|| ApiError::unauthorized("The access token's user no longer exists."))?;
        record_user_id(user.id);
        if !user.is_active {
            return Err(inactive());
        }
        Ok(user)
    }

    pub async fn authenticate_superuser(&self, auth: &BearerAuth) -> ApiResult<Arc<User>> {
        let user = self.authenticate(auth).await?;
        if !user.is_superuser {
            return Err(ApiError::forbidden("This action needs a superuser."));
        }
        Ok(user)
    }

    async fn issue_pair(&self, user_id: UserId, family_id: String) -> ApiResult<TokenPair> {
        let now = Utc::now();
        let access_token = self
            .access
            .issue(user_id, now)
            .map_err(ApiError::internal)?;
        let refresh_token = random_token().map_err(ApiError::internal)?;
        let refresh_ttl =
            chrono::Duration::from_std(self.refresh_ttl).map_err(ApiError::internal)?;
        self.store
            .insert_refresh_token(NewRefreshToken {
                token_hash: refresh_token_hash(&refresh_token),
                family_id,
                user_id,
                expires_at: now + refresh_ttl,
            })
            .await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.access.ttl().as_secs(),
        })
    }
}

fn inactive() -> ApiError {
    ApiError::new(ErrorCode::InactiveUser, "This account is inactive.")
}
