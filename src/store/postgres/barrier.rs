//! The coalesced read barrier: a cached read on PostgreSQL must know the highest write
//! number drawn before the request arrived, without a database round trip per request.
//!
//! ## Why it is correct
//! Every write transaction draws its number from `roster_write_seq` *before* it commits
//! (`listener::notify_users`). So a write that committed before a request arrived drew its
//! number before that arrival, and any read of the sequence's `last_value` that *starts
//! after* the arrival returns a value at least that number. The cache may answer once this
//! instance has applied every number up to that value (`listener::Watermark`).
//!
//! ## How reads are shared
//! Reads are numbered (`epoch`). A request notes the epoch of the read in flight (or of
//! the last one) and asks for the next epoch: that read, by construction, has not started
//! yet, so it starts after the request arrived. One driver task performs reads one at a
//! time; a read answers every request that asked for its epoch or an earlier one. However
//! many requests arrive, the database sees one small query per round trip, and each
//! request waits for at most the read in flight plus one more.
//!
//! Between reads the driver yields once to the runtime, so a read starts only after the
//! tasks already queued have run, and all those that ask in that turn share it: under load
//! a read serves ≈ 26 requests instead of ≈ 7 (BENCHMARKS.md, "the 80% line crossed"); on
//! an idle runtime the yield returns at once. It only delays when the next read starts, so
//! the argument above holds.
//!
//! The driver is a task of its own, so a request that is dropped (timeout, client gone)
//! never leaves a half-done read that others wait on. It reads over a connection of its
//! own rather than the request pool: a pooled query first waits for a free connection
//! and pings it (a second round trip), and every waiting request pays for both.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::sync::{Notify, watch};

use super::listener::latest_write;
use crate::store::CoherenceStats;

/// How long one barrier read may take; past it the read counts as failed and its waiters
/// read the database instead. One timer per read, not one per request.
const READ_LIMIT: Duration = Duration::from_secs(2);

/// The result of the last completed read: its epoch and the sequence value (or that it
/// failed, so waiters fall back to the database instead of waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    epoch: u64,
    value: Option<u64>,
}

#[derive(Default)]
struct Figures {
    reads: AtomicU64,
    requests: AtomicU64,
    wait_micros: AtomicU64,
}

/// What requests and the driver share.
#[derive(Default)]
struct Shared {
    /// Epoch of the read started most recently (0: none yet).
    started: AtomicU64,
    /// The highest epoch any request waits for.
    requested: AtomicU64,
    wake_driver: Notify,
    figures: Figures,
}

pub(super) struct ReadBarrier {
    shared: Arc<Shared>,
    observed: watch::Receiver<Observed>,
    driver: tokio::task::JoinHandle<()>,
}

impl ReadBarrier {
    /// Starts the driver, which connects with `options` when it first reads; it stops when
    /// the barrier is dropped.
    pub(super) fn start(options: PgConnectOptions) -> Self {
        let (publish, observed) = watch::channel(Observed {
            epoch: 0,
            value: None,
        });
        let shared = Arc::new(Shared::default());
        let driver = tokio::spawn(drive(shared.clone(), options, publish));
        Self {
            shared,
            observed,
            driver,
        }
    }

    /// The highest write number drawn before this call, read by a query that started
    /// after it; `None` when the database could not be asked in time.
    pub(super) async fn latest_before_now(&self) -> Option<u64> {
        let began = Instant::now();
        let shared = &self.shared;
        shared.figures.requests.fetch_add(1, Ordering::Relaxed);
        let needed = shared.started.load(Ordering::SeqCst) + 1;
        shared.requested.fetch_max(needed, Ordering::SeqCst);
        shared.wake_driver.notify_one();
        let mut observed = self.observed.clone();
        // Bounded without a timer of its own: the read it waits for is bounded.
        let value = match observed.wait_for(|o| o.epoch >= needed).await {
            Ok(o) => o.value,
            Err(_) => None,
        };
        let waited = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        shared
            .figures
            .wait_micros
            .fetch_add(waited, Ordering::Relaxed);
        value
    }

    pub(super) fn stats(&self) -> CoherenceStats {
        let figures = &self.shared.figures;
        CoherenceStats {
            barrier_reads: figures.reads.load(Ordering::Relaxed),
            barrier_requests: figures.requests.load(Ordering::Relaxed),
            barrier_wait_seconds: figures.wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Drop for ReadBarrier {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Performs one read at a time, each as soon as a request waits for it.
async fn drive(shared: Arc<Shared>, options: PgConnectOptions, publish: watch::Sender<Observed>) {
    let mut connection: Option<PgConnection> = None;
    loop {
        let woken = shared.wake_driver.notified();
        let started = shared.started.load(Ordering::SeqCst);
        if shared.requested.load(Ordering::SeqCst) <= started {
            woken.await;
            continue;
        }
        // Announce the epoch before the query is sent: a request that sees it may have
        // arrived after the read began, so it asks for the next one.
        let epoch = started + 1;
        shared.started.store(epoch, Ordering::SeqCst);
        shared.figures.reads.fetch_add(1, Ordering::Relaxed);
        let value = match tokio::time::timeout(READ_LIMIT, read(&mut connection, &options)).await {
            Ok(Ok(value)) => Some(value),
            _ => {
                // Failed or cut off mid-query: the connection's state is unknown.
                connection = None;
                None
            }
        };
        if publish.send(Observed { epoch, value }).is_err() {
            return; // the barrier is gone
        }
        // Let the tasks already queued run first — the requests this read just released and
        // those that arrived meanwhile — so they join the next read instead of each
        // round trip serving whoever happened to ask first (see "How reads are shared").
        tokio::task::yield_now().await;
    }
}

/// One sequence read over the driver's connection, opening it first when there is none.
async fn read(
    connection: &mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<u64, sqlx::Error> {
    if connection.is_none() {
        *connection = Some(PgConnection::connect_with(options).await?);
    }
    match connection.as_mut() {
        Some(conn) => latest_write(conn).await,
        None => Err(sqlx::Error::PoolClosed),
    }
}
