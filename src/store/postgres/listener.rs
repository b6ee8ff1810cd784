//! Cross-instance cache coherence on PostgreSQL: every write transaction numbers itself
//! from a sequence and NOTIFYs what it touched; each instance LISTENs, applies the
//! invalidations, and tracks which numbers it has applied (its watermark), so a cached
//! read can tell whether every write committed before it has reached this instance.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};

use crate::{
    domain::UserId,
    store::{Invalidation, InvalidationHandler, ListenerHealth, StoreError},
};

pub(super) const INVALIDATION_CHANNEL: &str = "roster_cache";
/// PostgreSQL caps NOTIFY payloads at 8000 bytes; longer lists become "everything".
const MAX_NOTIFY_PAYLOAD: usize = 7_900;
const LISTENER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTENER_BACKOFF_MAX: Duration = Duration::from_secs(5);
pub(super) const LISTENER_APPLICATION_NAME: &str = "roster-cache-listener";
pub(super) const BARRIER_APPLICATION_NAME: &str = "roster-read-barrier";
/// How long a cached read waits for outstanding notifications before reading the database.
pub(super) const CURRENT_WAIT: Duration = Duration::from_millis(50);
/// A write number missing this long belongs to a rolled-back write.
const GAP_EXPIRY: Duration = Duration::from_secs(2);

/// Tells every instance which users a write touched. Sent inside the write's transaction:
/// PostgreSQL delivers it at commit, and never for a rolled-back write.
pub(super) async fn notify_users(
    tx: &mut sqlx::PgConnection,
    ids: &[UserId],
) -> Result<(), StoreError> {
    let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut payload = format!("users:{}", list.join(","));
    if payload.len() > MAX_NOTIFY_PAYLOAD {
        payload = "everything".into();
    }
    // The sequence number is drawn last, just before commit, so numbers follow commits
    // closely; a rolled-back write leaves a gap that `Watermark` learns to skip.
    sqlx::query("SELECT pg_notify($1, 'seq:' || nextval('roster_write_seq') || ':' || $2)")
        .bind(INVALIDATION_CHANNEL)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The highest write number drawn so far (0 before the first).
pub(super) async fn latest_write<'c, E>(executor: E) -> Result<u64, sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    let latest: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM roster_write_seq",
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(latest).unwrap_or(0))
}

/// The watermark, and a signal for requests waiting for it to advance.
#[derive(Default)]
pub(super) struct Applied {
    pub(super) watermark: std::sync::Mutex<Watermark>,
    pub(super) advanced: tokio::sync::Notify,
}

impl Applied {
    /// Whether every write up to `latest` has been applied here, waiting up to `limit`
    /// for notifications still on their way (they trail their commits by moments).
    pub(super) async fn wait_to_cover(&self, latest: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let advanced = self.advanced.notified();
            let covered = match self.watermark.lock() {
                Ok(mut w) => w.covers(latest),
                Err(_) => return false,
            };
            if covered {
                return true;
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return match self.watermark.lock() {
                    Ok(mut w) => w.covers(latest),
                    Err(_) => false,
                };
            }
        }
    }
}

/// Which write numbers this instance has applied: every one up to `applied`, and some
/// beyond it (notifications arrive in commit order, numbers are drawn slightly earlier).
#[derive(Default)]
pub(super) struct Watermark {
    applied: u64,
    ahead: std::collections::BTreeSet<u64>,
    /// First seen behind `latest` at this time; a gap that old is a rolled-back write.
    behind_since: Option<(u64, std::time::Instant)>,
}

impl Watermark {
    fn reset(&mut self, to: u64) {
        self.applied = to;
        self.ahead.clear();
        self.behind_since = None;
    }

    fn record(&mut self, seq: u64) {
        if seq > self.applied {
            self.ahead.insert(seq);
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.ahead.remove(&(self.applied + 1)) {
            self.applied += 1;
        }
    }

    /// Whether everything up to `latest` is applied; skips gaps older than `GAP_EXPIRY`.
    pub(super) fn covers(&mut self, latest: u64) -> bool {
        if self.applied >= latest {
            self.behind_since = None;
            return true;
        }
        match self.behind_since {
            Some((target, since)) if since.elapsed() >= GAP_EXPIRY => {
                self.applied = self.applied.max(target);
                self.ahead.retain(|s| *s > target);
                self.advance();
                self.behind_since = None;
                self.applied >= latest
            }
            Some(_) => false,
            None => {
                self.behind_since = Some((latest, std::time::Instant::now()));
                false
            }
        }
    }
}

/// `seq:N:users:1,2` → (N, the users).
fn parse_notification(payload: &str) -> (Option<u64>, Invalidation) {
    let Some(rest) = payload.strip_prefix("seq:") else {
        return (None, parse_invalidation(payload));
    };
    match rest.split_once(':') {
        Some((seq, what)) => (seq.parse().ok(), parse_invalidation(what)),
        None => (None, Invalidation::Everything),
    }
}

fn parse_invalidation(payload: &str) -> Invalidation {
    match payload.strip_prefix("users:") {
        Some(ids) => {
            let parsed: Result<Vec<UserId>, _> = ids
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect();
            parsed.map_or(Invalidation::Everything, Invalidation::Users)
        }
        None if payload == "dashboard" => Invalidation::Dashboard,
        None => Invalidation::Everything,
    }
}

/// Keeps one LISTEN connection open for as long as `handler` wants events, reconnecting
/// with backoff; every (re)connection first drops all caches, since notifications sent
/// while disconnected are lost.
pub(super) async fn run_listener(
    listener_pool: PgPool,
    pool: PgPool,
    handler: InvalidationHandler,
    health: Arc<ListenerHealth>,
    applied: Arc<Applied>,
) {
    let mut backoff = LISTENER_BACKOFF_MIN;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&listener_pool).await?;
            listener.listen(INVALIDATION_CHANNEL).await?;
            // Writes committed before LISTEN are in the database and the caches are about
            // to be cleared; later ones will be notified.
            let latest = latest_write(&pool).await?;
            Ok::<_, sqlx::Error>((listener, latest))
        }
        .await;
        match connected {
            Ok((mut listener, latest)) => {
                if let Ok(mut w) = applied.watermark.lock() {
                    w.reset(latest);
                }
                applied.advanced.notify_waiters();
                health.set_connected(true);
                backoff = LISTENER_BACKOFF_MIN;
                if !handler(Invalidation::Everything) {
                    return;
                }
                tracing::info!("cache invalidation listener connected");
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            let (seq, invalidation) = parse_notification(notification.payload());
                            if !handler(invalidation) {
                                return;
                            }
                            if let (Some(seq), Ok(mut w)) = (seq, applied.watermark.lock()) {
                                w.record(seq);
                            }
                            applied.advanced.notify_waiters();
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cache invalidation listener failed");
                            break;
                        }
                    }
                }
                health.set_connected(false);
                tracing::warn!("cache invalidation listener disconnected; reconnecting");
                if !handler(Invalidation::Everything) {
                    return;
                }
            }
            Err(e) => {
                health.set_connected(false);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cache invalidation listener cannot connect");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTENER_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_advances_only_over_contiguous_writes() {
        let mut w = Watermark::default();
        w.reset(10);
        w.record(12);
        assert!(!w.covers(12), "11 has not been applied");
        w.record(11);
        assert!(w.covers(12));
        w.record(9);
        assert_eq!(w.applied, 12);
    }

    #[test]
    fn an_old_gap_is_a_rolled_back_write() {
        let mut w = Watermark::default();
        w.record(2);
        assert!(!w.covers(2));
        w.behind_since = w
            .behind_since
            .map(|(target, since)| (target, since - GAP_EXPIRY));
        assert!(w.covers(2));
    }

    #[test]
    fn notifications_carry_their_write_number() {
        assert_eq!(
            parse_notification("seq:7:users:1,2"),
            (Some(7), Invalidation::Users(vec![1, 2]))
        );
        assert_eq!(
            parse_notification("seq:8:everything"),
            (Some(8), Invalidation::Everything)
        );
        assert_eq!(parse_notification("garbage").1, Invalidation::Everything);
    }
}
