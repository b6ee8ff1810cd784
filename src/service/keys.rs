//! The JWT signing key: from JWT_SECRET, or generated once and stored in the database;
//! older keys (JWT_PREVIOUS_SECRETS, or the stored key replaced by
//! `roster rotate-jwt-secret`) still verify tokens until they can no longer be unexpired.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{key_id, random_token},
    config::Settings,
    store::UserStore,
};

const JWT_SECRET_KEY: &str = "jwt_secret";
const JWT_RETIRED_KEY: &str = "jwt_retired_secret";

/// A replaced stored key, kept for verification until `until`.
#[derive(Serialize, Deserialize)]
struct Retired {
    secret: String,
    until: DateTime<Utc>,
}

/// The key to sign with, and the keys that still verify.
pub struct SigningKeys {
    pub current: String,
    pub previous: Vec<Vec<u8>>,
}

pub async fn load(
    settings: &Settings,
    store: &Arc<dyn UserStore>,
    now: DateTime<Utc>,
) -> Result<SigningKeys, String> {
    let mut previous: Vec<Vec<u8>> = settings
        .jwt_previous_secrets
        .iter()
        .map(|s| s.expose().as_bytes().to_vec())
        .collect();
    let current = match &settings.jwt_secret {
        Some(secret) => secret.expose().to_string(),
        None => {
            let stored = store
                .get_or_insert_setting(JWT_SECRET_KEY, random_token()?)
                .await
                .map_err(|e| format!("cannot load the JWT secret: {e}"))?;
            let retired = store
                .get_setting(JWT_RETIRED_KEY)
                .await
                .map_err(|e| format!("cannot load the retired JWT secret: {e}"))?;
            if let Some(retired) = retired.and_then(|r| serde_json::from_str::<Retired>(&r).ok())
                && retired.until > now
            {
                previous.push(retired.secret.into_bytes());
            }
            stored
        }
    };
    Ok(SigningKeys { current, previous })
}

/// What `roster rotate-jwt-secret` did.
pub struct Rotated {
    pub old_kid: Option<String>,
    pub new_kid: String,
    pub old_verifies_until: DateTime<Utc>,
}

/// Replaces the stored key; the old one keeps verifying for one access-token lifetime.
/// Refused when JWT_SECRET configures the key (rotate that by configuration).
pub async fn rotate(
    settings: &Settings,
    store: &Arc<dyn UserStore>,
    now: DateTime<Utc>,
) -> Result<Rotated, String> {
    if settings.jwt_secret.is_some() {
        return Err(
            "the signing key comes from JWT_SECRET: set JWT_SECRET to a new key and \
             JWT_PREVIOUS_SECRETS to the old one instead"
                .into(),
        );
    }
    let old = store
        .get_setting(JWT_SECRET_KEY)
        .await
        .map_err(|e| e.to_string())?;
    let new = random_token()?;
    let lifetime = chrono::Duration::from_std(settings.access_token_ttl)
        .map_err(|e| e.to_string())?
        + chrono::Duration::seconds(1);
    let until = now + lifetime;
    let mut pairs = vec![(JWT_SECRET_KEY.to_string(), new.clone())];
    if let Some(old) = &old {
        let retired = Retired {
            secret: old.clone(),
            until,
        };
        pairs.push((
            JWT_RETIRED_KEY.to_string(),
            serde_json::to_string(&retired).map_err(|e| e.to_string())?,
        ));
    }
    store.set_settings(pairs).await.map_err(|e| e.to_string())?;
    Ok(Rotated {
        old_kid: old.map(|o| key_id(o.as_bytes())),
        new_kid: key_id(new.as_bytes()),
        old_verifies_until: until,
    })
}
