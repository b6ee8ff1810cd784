//! Credentials as cryptography: argon2id password hashing and the signed access and opaque
//! refresh tokens. No storage and no rules here; `service::auth` decides when to use them.

mod password;
mod tokens;

pub use password::{HashError, PasswordHasher};
pub use tokens::{
    AccessTokens, UNUSABLE_PASSWORD_HASH, key_id, one_time_token_hash, random_token,
    refresh_token_hash,
};
