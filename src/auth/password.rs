//! argon2id hashing with the configured cost, always off the async executor.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::phc::PasswordHash,
};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Argon2Cost, cores};

/// Why password work was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// HASH_CONCURRENCY are running and HASH_QUEUE_MAX are waiting: try again shortly.
    Busy,
    Failed(String),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy => f.write_str("password hashing is at capacity"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

impl From<String> for HashError {
    fn from(why: String) -> Self {
        Self::Failed(why)
    }
}

/// The one admission gate for argon2 work: each hash holds ARGON2_MEMORY_KIB of memory
/// and a core, so at most `concurrency` run and at most `queue_max` wait; the rest are
/// refused at once rather than piling up threads and memory.
struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_max: usize,
}

/// Counts a waiter for as long as it waits (also when its request is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    async fn admit(&self) -> Result<OwnedSemaphorePermit, HashError> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue_max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let _waiting = Waiting(&self.waiting);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Failed(format!("hashing unavailable: {e}")))
    }

    /// A slot for work already admitted (the rest of a bulk create): it waits, never refused.
    async fn another_slot(&self) -> Result<OwnedSemaphorePermit, HashError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Failed(format!("hashing unavailable: {e}")))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads argon2 runs on: as many as the gate admits at once, at a lower CPU
/// priority than the threads serving requests, so a flood of logins takes the CPU the
/// rest of the API leaves over instead of half of it. The threads end with the last
/// clone of the hasher.
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    fn start(count: usize) -> Result<Self, String> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the hasher is gone
                        }
                    }
                })
                .map_err(|e| format!("cannot start a hashing thread: {e}"))?;
        }
        Ok(Self { jobs })
    }

    /// Queues `work` at once (not when the returned future is first polled: a bulk hash
    /// queues every chunk before it waits for any), and resolves to its result.
    fn run<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<T, HashError>> + use<T, F> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        let sent = self.jobs.send(job);
        async move {
            sent.map_err(|_| HashError::Failed("the hashing threads are gone".into()))?;
            result
                .await
                .map_err(|_| HashError::Failed("a hashing thread failed".into()))
        }
    }
}

/// Nice 10: the scheduler then gives request threads about nine times the CPU share of a
/// hashing thread when both want it (Linux sets this per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; `0` names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    gate: Arc<Gate>,
    workers: Arc<Workers>,
}

impl PasswordHasher {
    pub fn new(cost: &Argon2Cost) -> Result<Self, String> {
        Self::with_limits(cost, cores(), 64)
    }

    /// At most `concurrency` hashes or checks at once, `queue_max` waiting.
    pub fn with_limits(
        cost: &Argon2Cost,
        concurrency: usize,
        queue_max: usize,
    ) -> Result<Self, String> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        Ok(Self {
            params,
            gate: Arc::new(Gate {
                slots: Arc::new(Semaphore::new(concurrency.max(1))),
                waiting: AtomicUsize::new(0),
                queue_max,
            }),
            workers: Arc::new(Workers::start(concurrency.max(1))?),
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

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let slot = self.gate.admit().await?;
        let hasher = self.clone();
        let password = password.to_string();
        self.workers
            .run(move || {
                let _slot = slot;
                hasher.hash_blocking(&password)
            })
            .await?
            .map_err(HashError::Failed)
    }

    /// Hashes many passwords, order kept: admitted as one entry of the queue, then spread
    /// over the gate's slots, off the async executor.
    pub async fn hash_many(&self, passwords: Vec<String>) -> Result<Vec<String>, HashError> {
        if passwords.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.gate.admit().await?;
        let per_task = passwords.len().div_ceil(cores()).max(1);
        let mut tasks = Vec::new();
        let mut rest = passwords;
        let mut slot = Some(first);
        while !rest.is_empty() {
            let tail = rest.split_off(per_task.min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            let held = match slot.take() {
                Some(first) => first,
                None => self.gate.another_slot().await?,
            };
            let hasher = self.clone();
            tasks.push(self.workers.run(move || {
                let _slot = held;
                chunk
                    .iter()
                    .map(|p| hasher.hash_blocking(p))
                    .collect::<Result<Vec<_>, _>>()
            }));
        }
        let mut hashes = Vec::new();
        for result in futures_util::future::join_all(tasks).await {
            hashes.extend(result?.map_err(HashError::Failed)?);
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
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, HashError> {
        let slot = self.gate.admit().await?;
        let argon2 = self.argon2();
        let password = password.to_string();
        let phc = phc.to_string();
        self.workers
            .run(move || {
                let _slot = slot;
                argon2
                    .verify_password(password.as_bytes(), phc.as_str())
                    .is_ok()
            })
            .await
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
        assert!(hasher.verify("correct horse", &hash).await.unwrap());
        assert!(!hasher.verify("wrong horse", &hash).await.unwrap());
        assert!(
            !hasher
                .verify("correct horse", "not a phc string")
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn beyond_the_queue_work_is_refused_at_once() {
        let dear = Argon2Cost {
            memory_kib: 64,
            iterations: 50,
            parallelism: 1,
        };
        let hasher = PasswordHasher::with_limits(&dear, 1, 2).unwrap();
        let attempts = (0..8).map(|i| {
            let hasher = hasher.clone();
            async move { hasher.hash(&format!("password-{i}")).await }
        });
        let results = futures_util::future::join_all(attempts).await;
        let refused = results
            .iter()
            .filter(|r| **r == Err(HashError::Busy))
            .count();
        let done = results.iter().filter(|r| r.is_ok()).count();
        // One runs, two wait, the other five are refused without waiting.
        assert_eq!((done, refused), (3, 5), "{results:?}");
        // A bulk hash is one entry: admitted, then it may use every slot.
        let many = hasher
            .hash_many((0..5).map(|i| format!("bulk-{i}")).collect())
            .await
            .unwrap();
        assert_eq!(many.len(), 5);
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
            assert!(hasher.verify(password, hash).await.unwrap());
        }
        assert!(hasher.hash_many(Vec::new()).await.unwrap().is_empty());
    }
}
