//! One expensive load at a time, shared by every caller that arrived before it started.
//!
//! The dashboard's figures are cached per write generation, so under a stream of writes
//! nearly every read misses, each with a generation of its own. Loading once per miss ran
//! the aggregate (15–25 ms on PostgreSQL at 100k users, a parallel scan) many times over
//! at once: the pool ran dry and every request, writes included, queued behind them.
//!
//! Here a caller needs a load that *started after it arrived* — such a load sees every
//! write that completed before the caller asked, which is all a fresh answer needs. Loads
//! are numbered; a caller notes the number the next load will get, then waits its turn at
//! a fair gate. Whoever passes the gate reuses the last result if its load has that number
//! or a later one, and otherwise loads itself. So at most one load runs, each serves
//! everyone who queued while the previous one ran, and a caller waits for at most two.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

pub struct Coalesced<T> {
    /// Number of the load started most recently (0: none yet).
    started: AtomicU64,
    gate: tokio::sync::Mutex<()>,
    last: Mutex<Option<(u64, Arc<T>)>>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Self {
            started: AtomicU64::new(0),
            gate: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }
}

impl<T> Coalesced<T> {
    /// The result of a load that started after this call: `load`'s own, or a concurrent
    /// caller's.
    pub async fn load<E, F>(&self, load: F) -> Result<Arc<T>, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let needed = self.started.load(Ordering::SeqCst) + 1;
        let _turn = self.gate.lock().await;
        if let Some(shared) = self.since(needed) {
            return Ok(shared);
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let value = Arc::new(load.await?);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((number, value.clone()));
        }
        Ok(value)
    }

    fn since(&self, needed: u64) -> Option<Arc<T>> {
        let last = self.last.lock().ok()?;
        match &*last {
            Some((number, value)) if *number >= needed => Some(value.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Many concurrent callers cause few loads, and none gets a result whose load began
    /// before it asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_loads_that_began_after_they_asked() {
        let coalesced = Arc::new(Coalesced::<u64>::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let clock = Arc::new(AtomicU64::new(0)); // advances with every caller's arrival
        let callers = (0..200).map(|_| {
            let (coalesced, loads, clock) = (coalesced.clone(), loads.clone(), clock.clone());
            tokio::spawn(async move {
                let arrived = clock.fetch_add(1, Ordering::SeqCst) + 1;
                let seen = coalesced
                    .load(async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        let at_start = clock.load(Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        Ok::<_, ()>(at_start)
                    })
                    .await
                    .unwrap();
                assert!(*seen >= arrived, "a load from before the caller arrived");
            })
        });
        for caller in futures_util::future::join_all(callers).await {
            caller.unwrap();
        }
        let loads = loads.load(Ordering::SeqCst);
        assert!(loads < 50, "200 callers caused {loads} loads");
    }

    #[tokio::test]
    async fn a_failed_load_is_not_shared() {
        let coalesced = Coalesced::<u8>::default();
        assert!(
            coalesced
                .load(async { Err::<u8, _>("down") })
                .await
                .is_err()
        );
        assert_eq!(*coalesced.load(async { Ok::<_, ()>(7) }).await.unwrap(), 7);
    }
}
