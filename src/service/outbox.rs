//! The background sender of the durable outbox: it leases due messages, hands each to the
//! deliverer of its topic, and records the outcome. A failed attempt is retried with
//! exponential backoff; a lease that runs out (the process died mid-delivery) makes the
//! message due again, so delivery is at least once, and never again once recorded.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::Clock;
use crate::{
    config::MailSettings,
    mail::{Mail, Mailer},
    store::{Delivery, OutboxItem, Topic, UserStore},
};

/// How long a leased message is this sender's before another may take it over.
const LEASE: Duration = Duration::from_secs(120);
/// Messages leased per round.
const BATCH: u32 = 16;
/// How often the sender looks for due messages (retries, other instances' writes) when
/// nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// Attempts before a message is given up (about three hours at the default backoff).
pub const MAX_ATTEMPTS: u32 = 20;
/// Delivered and abandoned messages are kept this long, then pruned.
const KEEP_FINISHED: chrono::Duration = chrono::Duration::days(7);
const PRUNE_BATCH: u32 = 1_000;

/// Delivers the messages of one topic. An error is retried later.
#[async_trait]
pub trait Deliverer: Send + Sync {
    async fn deliver(&self, item: &OutboxItem) -> Result<(), String>;
}

/// Counts per topic since start-up, for `/metrics`.
#[derive(Default)]
struct TopicCounts {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    gave_up: AtomicU64,
    /// Time spent in delivery attempts, successful or not.
    attempt_micros: AtomicU64,
}

/// One topic's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxFigures {
    pub topic: &'static str,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub gave_up: u64,
    /// Seconds spent in attempts (divide by attempts for the mean latency).
    pub attempt_seconds: f64,
}

pub struct Outbox {
    store: Arc<dyn UserStore>,
    clock: Clock,
    wake: Arc<Notify>,
    retry_base: Duration,
    retry_max: Duration,
    counts: [TopicCounts; 3],
}

const TOPICS: [Topic; 3] = [Topic::Mail, Topic::Webhook, Topic::Job];

fn slot(topic: Topic) -> usize {
    match topic {
        Topic::Mail => 0,
        Topic::Webhook => 1,
        Topic::Job => 2,
    }
}

/// The deliverers the sender dispatches to.
pub struct Deliverers {
    pub mail: Arc<dyn Deliverer>,
    pub jobs: Weak<dyn Deliverer>,
    pub webhooks: Option<Arc<dyn Deliverer>>,
}

impl Outbox {
    pub fn new(store: Arc<dyn UserStore>, clock: Clock, settings: &MailSettings) -> Self {
        Self {
            store,
            clock,
            wake: Arc::new(Notify::new()),
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
            counts: Default::default(),
        }
    }

    /// Tells the sender a message was just committed, so it need not wait for its poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn figures(&self) -> Vec<OutboxFigures> {
        TOPICS
            .iter()
            .map(|t| {
                let c = &self.counts[slot(*t)];
                OutboxFigures {
                    topic: t.as_str(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
                    gave_up: c.gave_up.load(Ordering::Relaxed),
                    attempt_seconds: c.attempt_micros.load(Ordering::Relaxed) as f64 / 1e6,
                }
            })
            .collect()
    }

    /// Leases and delivers one batch; returns how many messages it handled.
    pub async fn run_once(&self, deliverers: &Deliverers) -> usize {
        let now = self.clock.now();
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let items = match self.store.claim_outbox(now, lease_until, BATCH).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot lease messages; retrying");
                return 0;
            }
        };
        let handled = items.len();
        for item in items {
            let started = std::time::Instant::now();
            let result = match item.topic {
                Some(Topic::Mail) => deliverers.mail.deliver(&item).await,
                Some(Topic::Job) => match deliverers.jobs.upgrade() {
                    Some(jobs) => jobs.deliver(&item).await,
                    None => return handled, // shutting down; the lease runs out
                },
                Some(Topic::Webhook) => match &deliverers.webhooks {
                    Some(webhooks) => webhooks.deliver(&item).await,
                    None => Err("WEBHOOK_URL is not set".into()),
                },
                None => Err("unknown topic".into()),
            };
            let topic = item.topic.unwrap_or(Topic::Job);
            let counts = &self.counts[slot(topic)];
            counts.attempt_micros.fetch_add(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let delivery = match result {
                Ok(()) => {
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                    Delivery::Delivered
                }
                Err(error) if item.attempts >= MAX_ATTEMPTS || item.topic.is_none() => {
                    counts.gave_up.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(id = item.id, topic = topic.as_str(), attempts = item.attempts, %error,
                        "outbox: giving up on a message");
                    Delivery::GaveUp { error }
                }
                Err(error) => {
                    counts.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff(self.retry_base, self.retry_max, item.attempts);
                    tracing::warn!(id = item.id, topic = topic.as_str(), attempts = item.attempts,
                        retry_in_ms = delay.as_millis() as u64, %error, "outbox: delivery failed; will retry");
                    Delivery::Retry {
                        at: self.clock.now()
                            + chrono::Duration::from_std(delay).unwrap_or_default(),
                        error,
                    }
                }
            };
            if let Err(e) = self
                .store
                .finish_outbox(item.id, delivery, self.clock.now())
                .await
            {
                // The lease runs out and the message is tried again: at least once.
                tracing::warn!(id = item.id, error = %e, "outbox: cannot record the outcome");
            }
        }
        handled
    }

    /// Runs the sender until the service is dropped: a batch whenever woken or every POLL,
    /// and pruning of old finished messages now and then.
    pub fn spawn(self: &Arc<Self>, deliverers: Deliverers) {
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let mut rounds: u64 = 0;
            loop {
                let Some(outbox) = weak.upgrade() else { break };
                let handled = outbox.run_once(&deliverers).await;
                rounds += 1;
                if rounds % 600 == 1 {
                    outbox.prune().await;
                }
                drop(outbox);
                if handled < BATCH as usize {
                    let _ = tokio::time::timeout(POLL, wake.notified()).await;
                }
            }
        });
    }

    async fn prune(&self) {
        let before = self.clock.now() - KEEP_FINISHED;
        loop {
            match self.store.prune_outbox(before, PRUNE_BATCH).await {
                Ok(n) if n >= u64::from(PRUNE_BATCH) => tokio::task::yield_now().await,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: pruning failed; retrying later");
                    return;
                }
            }
        }
    }
}

/// The delay after failed attempt number `attempts`: the base, doubled per attempt, capped.
fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
    base.saturating_mul(factor).min(max)
}

/// Posts the webhook events of the outbox.
pub struct WebhookDeliverer(pub crate::webhook::WebhookSender);

#[async_trait]
impl Deliverer for WebhookDeliverer {
    async fn deliver(&self, item: &OutboxItem) -> Result<(), String> {
        self.0.post(&item.payload).await
    }
}

/// Sends the mails of the outbox through the configured transport.
pub struct MailDeliverer(pub Mailer);

#[async_trait]
impl Deliverer for MailDeliverer {
    async fn deliver(&self, item: &OutboxItem) -> Result<(), String> {
        let mail: Mail = serde_json::from_str(&item.payload)
            .map_err(|e| format!("unreadable mail in the outbox: {e}"))?;
        self.0.send(&mail).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(900));
        let delays: Vec<u64> = (1..=40).map(|n| backoff(base, max, n).as_secs()).collect();
        assert_eq!(delays[..4], [2, 4, 8, 16]);
        assert_eq!(delays[9], 900);
        assert_eq!(*delays.last().unwrap(), 900);
    }
}
