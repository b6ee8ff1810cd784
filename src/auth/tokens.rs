//! HS256 access tokens and opaque refresh tokens (stored only as SHA-256 hashes).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::UserId;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The session the token belongs to; every request checks it is live.
    sid: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// One HS256 key and its id (`kid`): the first 8 bytes of the key's SHA-256, in hex, so
/// the id names the key without revealing it.
struct Key {
    id: String,
    decoding: DecodingKey,
}

pub fn key_id(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..8])
}

/// What a token that verified carries, kept to answer the same token again.
struct Verified {
    user_id: UserId,
    session_id: String,
    nbf: i64,
    exp: i64,
}

/// Tokens verified at most this many at a time (each entry ≈ 0.5 KB).
const VERIFIED_TOKENS: u64 = 10_000;
/// Expiry and not-before are enforced with at most this much leeway (SPEC: 1 s).
const LEEWAY_SECS: i64 = 1;

pub struct AccessTokens {
    encoding: EncodingKey,
    current_id: String,
    /// The signing key first, then keys still accepted for verification (rotation).
    keys: Vec<Key>,
    validation: Validation,
    ttl: Duration,
    /// Tokens that verified, by their whole text: a client sends the same token with every
    /// request for its lifetime, and checking it again (two base64 and two JSON decodings
    /// and an HMAC) was a tenth of a cached read's CPU. Only verified tokens get in, so a
    /// forged one never matches; expiry is checked again on every hit; a retired key's
    /// tokens go with the `AccessTokens` that trusted it.
    verified: moka::sync::Cache<String, Arc<Verified>>,
}

impl AccessTokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self::with_previous(secret, &[], ttl)
    }

    /// Signs with `secret`; tokens signed with any of `previous` still verify.
    pub fn with_previous(secret: &[u8], previous: &[Vec<u8>], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // SPEC: expiry enforced with at most 1 s of leeway.
        validation.leeway = LEEWAY_SECS as u64;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        let keys = std::iter::once(secret)
            .chain(previous.iter().map(Vec::as_slice))
            .map(|k| Key {
                id: key_id(k),
                decoding: DecodingKey::from_secret(k),
            })
            .collect();
        Self {
            encoding: EncodingKey::from_secret(secret),
            current_id: key_id(secret),
            keys,
            validation,
            ttl,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(ttl + Duration::from_secs(LEEWAY_SECS as u64))
                .build(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(
        &self,
        user_id: UserId,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        self.issue_for(user_id, session_id, now, self.ttl)
    }

    /// A token living `ttl` instead of ACCESS_TOKEN_TTL (the admin console's cookie: every
    /// request still checks its session is live, so revocation stays instant).
    pub fn issue_for(
        &self,
        user_id: UserId,
        session_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<String, String> {
        let iat = now.timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current_id.clone());
        encode(&header, &claims, &self.encoding).map_err(|e| format!("token signing failed: {e}"))
    }

    /// The user and session of a valid, unexpired token signed with one of our keys (the
    /// one its `kid` names; the signing key when it names none).
    pub fn verify(&self, token: &str) -> Option<(UserId, String)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.verify_at(token, now)
    }

    /// `verify` at `now` (seconds since the epoch) for a token seen before; a new token is
    /// also checked by jsonwebtoken against the system clock.
    fn verify_at(&self, token: &str, now: i64) -> Option<(UserId, String)> {
        let verified = match self.verified.get(token) {
            Some(verified) => verified,
            None => {
                let verified = Arc::new(self.decode(token)?);
                self.verified.insert(token.to_string(), verified.clone());
                verified
            }
        };
        let live = verified.exp >= now - LEEWAY_SECS && verified.nbf <= now + LEEWAY_SECS;
        live.then(|| (verified.user_id, verified.session_id.clone()))
    }

    fn decode(&self, token: &str) -> Option<Verified> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.iter().find(|k| k.id == kid)?,
            None => self.keys.first()?,
        };
        let claims = decode::<Claims>(token, &key.decoding, &self.validation)
            .ok()?
            .claims;
        Some(Verified {
            user_id: claims.sub.parse().ok()?,
            session_id: claims.sid,
            nbf: claims.nbf,
            exp: claims.exp,
        })
    }
}

/// 256 random bits, URL-safe.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a refresh token.
pub fn refresh_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What the database keeps of a one-time (reset, verification, invitation) token: the
/// token is 256 random bits, so a plain digest cannot be reversed or guessed.
pub fn one_time_token_hash(token: &str) -> String {
    refresh_token_hash(token)
}

/// The stored hash of an account with no password yet (an invitee): no PHC string, so no
/// password ever verifies against it.
pub const UNUSABLE_PASSWORD_HASH: &str = "!no-password";

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_tokens_verify_and_carry_the_user() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60));
        let token = tokens.issue(42, "s1", Utc::now()).unwrap();
        assert_eq!(tokens.verify(&token), Some((42, "s1".to_string())));
    }

    #[test]
    fn expired_foreign_and_garbage_tokens_are_refused() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60));
        let old = tokens
            .issue(1, "s", Utc::now() - chrono::Duration::seconds(120))
            .unwrap();
        assert_eq!(tokens.verify(&old), None);
        let other = AccessTokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert_eq!(
            tokens.verify(&other.issue(1, "s", Utc::now()).unwrap()),
            None
        );
        assert_eq!(tokens.verify("not.a.jwt"), None);
    }

    #[test]
    fn tokens_name_their_key_and_previous_keys_still_verify() {
        let old = b"old-secret-old-secret-old-secret!".to_vec();
        let before = AccessTokens::new(&old, Duration::from_secs(60));
        let token = before.issue(7, "s", Utc::now()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(&old).as_str()));
        let rotated = AccessTokens::with_previous(
            SECRET,
            std::slice::from_ref(&old),
            Duration::from_secs(60),
        );
        assert_eq!(rotated.verify(&token), Some((7, "s".to_string())));
        let fresh = rotated.issue(8, "t", Utc::now()).unwrap();
        assert_eq!(rotated.verify(&fresh), Some((8, "t".to_string())));
        assert_eq!(
            before.verify(&fresh),
            None,
            "the old key does not know the new one"
        );
        let forgotten = AccessTokens::new(SECRET, Duration::from_secs(60));
        assert_eq!(
            forgotten.verify(&token),
            None,
            "a retired key no longer verifies"
        );
    }

    #[test]
    fn a_token_seen_before_still_expires_and_is_not_early() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60));
        let issued = Utc::now();
        let token = tokens.issue(5, "s", issued).unwrap();
        let at = issued.timestamp();
        assert_eq!(tokens.verify_at(&token, at), Some((5, "s".to_string())));
        // Now answered from the verified tokens: the same limits hold, with 1 s of leeway.
        assert!(tokens.verified.contains_key(&token));
        assert_eq!(
            tokens.verify_at(&token, at + 61),
            Some((5, "s".to_string()))
        );
        assert_eq!(tokens.verify_at(&token, at + 62), None);
        assert_eq!(tokens.verify_at(&token, at - 1), Some((5, "s".to_string())));
        assert_eq!(tokens.verify_at(&token, at - 2), None);
        // A forged variant of a verified token is not taken for it.
        let forged = format!("{token}x");
        assert_eq!(tokens.verify_at(&forged, at), None);
        assert!(
            !tokens.verified.contains_key(&forged),
            "only verified tokens are kept"
        );
    }

    #[test]
    fn refresh_tokens_are_random_and_hash_to_hex() {
        let a = random_token().unwrap();
        assert_ne!(a, random_token().unwrap());
        assert_eq!(refresh_token_hash(&a).len(), 64);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    proptest! {
        #[test]
        fn arbitrary_bearer_tokens_never_verify_or_panic(token in ".{0,400}") {
            let keys = AccessTokens::new(SECRET, Duration::from_secs(60));
            prop_assert_eq!(keys.verify(&token), None);
        }

        #[test]
        fn issued_tokens_carry_any_user_id(id: i64) {
            let keys = AccessTokens::new(SECRET, Duration::from_secs(60));
            let token = keys.issue(id, "session", Utc::now()).unwrap();
            prop_assert_eq!(keys.verify(&token), Some((id, "session".to_string())));
            // Any single changed character of the signed part breaks it.
            let mut bytes = token.into_bytes();
            let at = bytes.len() / 2;
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(keys.verify(&tampered), None);
        }

        #[test]
        fn refresh_token_hashes_are_stable_hex(token in ".{0,100}") {
            let hash = refresh_token_hash(&token);
            prop_assert_eq!(hash.len(), 64);
            prop_assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
            prop_assert_eq!(hash, refresh_token_hash(&token));
        }
    }
}
