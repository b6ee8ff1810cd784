//! argon2id hashing with the configured cost, always off the async executor.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::phc::PasswordHash,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Argon2Cost;

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// One hash per core at a time: each holds ARGON2_MEMORY_KIB of memory, and more
    /// concurrent hashes than cores only add memory, not speed.
    slots: Arc<Semaphore>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl PasswordHasher {
    pub fn new(cost: &Argon2Cost) -> Result<Self, String> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(cores())),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string with a fresh random salt. Blocking: call from a blocking thread.
    pub fn hash_blocking(&self, password: &str) -> Result<String, String> {
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| format!("password hashing failed: {e}"))
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, String> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("hashing unavailable: {e}"))
    }

    pub async fn hash(&self, password: &str) -> Result<String, String> {
        let slot = self.slot().await?;
        let hasher = self.clone();
        let password = password.to_string();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            hasher.hash_blocking(&password)
        })
        .await
        .map_err(|e| format!("hashing task failed: {e}"))?
    }

    /// Hashes many passwords on all cores at once, off the async executor; order is kept.
    pub async fn hash_many(&self, passwords: Vec<String>) -> Result<Vec<String>, String> {
        let per_task = passwords.len().div_ceil(cores()).max(1);
        let mut tasks = Vec::new();
        let mut rest = passwords;
        while !rest.is_empty() {
            let tail = rest.split_off(per_task.min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            let hasher = self.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .map(|p| hasher.hash_blocking(p))
                    .collect::<Result<Vec<_>, _>>()
            }));
        }
        let mut hashes = Vec::new();
        for task in tasks {
            hashes.extend(
                task.await
                    .map_err(|e| format!("hashing task failed: {e}"))??,
            );
        }
        Ok(hashes)
    }

    /// Whether `phc` was made with other settings than the configured ones, so a login
    /// that verified it should store a fresh hash (old and new accounts then cost the same
    /// to check). A malformed hash never verifies, so it needs nothing here.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(hash) = phc.parse::<PasswordHash>() else {
            return false;
        };
        if hash.algorithm.as_str() != "argon2id" || hash.version != Some(Version::V0x13.into()) {
            return true;
        }
        match Params::try_from(&hash) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }

    /// Whether `password` matches `phc`; a malformed stored hash never matches.
    pub async fn verify(&self, password: &str, phc: &str) -> bool {
        let argon2 = self.argon2();
        let password = password.to_string();
        let phc = phc.to_string();
        tokio::task::spawn_blocking(move || {
            argon2
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(&Argon2Cost {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let hasher = cheap();
        let hash = hasher.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse", &hash).await);
        assert!(!hasher.verify("wrong horse", &hash).await);
        assert!(!hasher.verify("correct horse", "not a phc string").await);
    }

    #[tokio::test]
    async fn hashes_of_another_cost_need_a_rehash() {
        let hasher = cheap();
        let hash = hasher.hash("correct horse").await.unwrap();
        assert!(!hasher.needs_rehash(&hash));
        let dearer = PasswordHasher::new(&Argon2Cost {
            memory_kib: 16,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        assert!(dearer.needs_rehash(&hash));
        assert!(!dearer.needs_rehash("not a phc string"));
    }

    #[tokio::test]
    async fn many_hashes_keep_their_order() {
        let hasher = cheap();
        let passwords: Vec<String> = (0..7).map(|i| format!("password-{i}")).collect();
        let hashes = hasher.hash_many(passwords.clone()).await.unwrap();
        assert_eq!(hashes.len(), 7);
        for (password, hash) in passwords.iter().zip(&hashes) {
            assert!(hasher.verify(password, hash).await);
        }
        assert!(hasher.hash_many(Vec::new()).await.unwrap().is_empty());
    }
}
