//! Group commit for SQLite's one writer. Writes that queue while the writer is busy run
//! together in one transaction, each in a savepoint of its own: a write that fails rolls
//! back to its savepoint and fails alone, the others commit. One commit (one WAL append
//! and sync) then serves the whole group, where a transaction per write would pay it for
//! each; under a burst of writes the queue drains in groups instead of one by one.
//!
//! A caller's answer is sent only after the group's COMMIT: a write is never reported
//! done before it is durable, and a failed COMMIT fails every write of its group.
//! The group is run by a task of its own, so a caller that goes away (timeout, client
//! gone) neither strands its queued write nor half-runs it.

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use tokio::sync::{Semaphore, oneshot};

use super::StoreError;
use crate::request_context;

/// The most writes one transaction carries: bounds how long the first of them waits.
const GROUP_MAX: usize = 64;
const SAVEPOINT: &str = "grouped_write";

/// One queued write: runs inside the group's transaction and returns what tells its
/// caller the outcome once the group's commit is known.
type Job = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Arc<Mutex<VecDeque<Job>>>,
    /// Transactions committed so far (each one group).
    groups: Arc<AtomicU64>,
}

impl GroupCommit {
    #[cfg(test)]
    fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Runs `work` on the writer connection inside a group's transaction; `work` must not
    /// begin a transaction of its own (a savepoint is fine).
    pub(super) async fn run<T, F>(
        &self,
        writer: Pool<SqliteConnectionManager>,
        slot: Arc<Semaphore>,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let request = request_context::current();
        let job: Job = Box::new(move |conn| {
            let result = request_context::sync_scope(request, || in_savepoint(conn, work));
            Box::new(move |committed| {
                let _ = answer.send(committed.and(result));
            })
        });
        self.queue
            .lock()
            .map_err(|_| StoreError::Other("the write queue is poisoned".into()))?
            .push_back(job);
        tokio::spawn(commit_group(
            writer,
            slot,
            self.queue.clone(),
            self.groups.clone(),
        ));
        answered.await.map_err(|_| {
            StoreError::Unavailable("the database writer could not run this write".into())
        })?
    }
}

/// Takes the writer when its turn comes and runs whatever is queued then as one group.
/// One of these is spawned per write; those that find the queue emptied by an earlier
/// group do nothing.
async fn commit_group(
    writer: Pool<SqliteConnectionManager>,
    slot: Arc<Semaphore>,
    queue: Arc<Mutex<VecDeque<Job>>>,
    groups: Arc<AtomicU64>,
) {
    let Ok(slot) = slot.acquire_owned().await else {
        return; // the store is closed: dropped jobs answer their callers with an error
    };
    let jobs: Vec<Job> = match queue.lock() {
        Ok(mut queue) => {
            let take = queue.len().min(GROUP_MAX);
            queue.drain(..take).collect()
        }
        Err(_) => return,
    };
    if jobs.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        // A job dropped unrun answers its caller "unavailable".
        let Ok(mut conn) = writer.get() else { return };
        if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
            return;
        }
        let replies: Vec<Reply> = jobs.into_iter().map(|job| job(&mut conn)).collect();
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            groups.fetch_add(1, Ordering::Relaxed);
        }
        for reply in replies {
            reply(committed.clone());
        }
    })
    .await;
}

/// Runs one write in its own savepoint: kept on success, rolled back on failure (or a
/// panic, which must not leave the shared transaction half-written).
fn in_savepoint<T, F>(conn: &mut Connection, work: F) -> Result<T, StoreError>
where
    F: FnOnce(&mut Connection) -> Result<T, StoreError>,
{
    conn.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Other("a database write failed".into())));
    let end = if result.is_ok() {
        format!("RELEASE {SAVEPOINT}")
    } else {
        format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}")
    };
    conn.execute_batch(&end)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent writes share transactions; one that fails leaves nothing behind and
    /// fails alone; every write that was answered "done" is in the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Pool::builder()
            .max_size(1)
            .build(SqliteConnectionManager::file(dir.path().join("g.db")))
            .unwrap();
        writer
            .get()
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let group = Arc::new(GroupCommit::default());
        let slot = Arc::new(Semaphore::new(1));
        let writes = (0..200i64).map(|n| {
            let (group, writer, slot) = (group.clone(), writer.clone(), slot.clone());
            tokio::spawn(async move {
                group
                    .run(writer, slot, move |conn| {
                        conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                        if n % 7 == 3 {
                            return Err(StoreError::EmailTaken);
                        }
                        Ok(n)
                    })
                    .await
            })
        });
        let results = futures_util::future::join_all(writes).await;
        let done: Vec<i64> = results
            .into_iter()
            .filter_map(|r| r.unwrap().ok())
            .collect();
        let expected: Vec<i64> = (0..200).filter(|n| n % 7 != 3).collect();
        let mut sorted = done.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        let conn = writer.get().unwrap();
        let mut stored: Vec<i64> = conn
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        stored.sort_unstable();
        assert_eq!(
            stored, expected,
            "failed writes left rows, or done ones are missing"
        );
        assert!(
            group.groups() < 200,
            "200 queued writes took {} transactions",
            group.groups()
        );
    }
}
