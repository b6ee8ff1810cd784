//! Prometheus metrics for `GET /metrics`, recorded per app (no global recorder, so several
//! apps in one process, as in the tests, keep their own figures).

use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::{
    cache::CacheStats,
    routes::{RouteLabel, RouteTable},
    service::OutboxFigures,
    store::{CoherenceStats, OutboxCounts, PoolStatus},
};

/// What the services did since start-up, and the outbox's backlog (of all instances).
pub struct Activity {
    pub pruned_session_rows: u64,
    pub security_events: Vec<(&'static str, u64)>,
    pub outbox: Vec<OutboxFigures>,
    pub outbox_backlog: Option<OutboxCounts>,
}

static METADATA: Metadata<'static> = Metadata::new("roster", Level::INFO, Some(module_path!()));

const DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram keeps every sample until it is summarised (at a scrape, or by upkeep):
/// unscraped, it grew by 8 bytes per request (7 MB per 300k). Summarised this often, as
/// the exporter's own installer does.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Method, route and status: the labels of a request's series. Bounded: methods are a fixed
/// set (`method_label`), routes come from the OpenAPI document, statuses are three digits.
type RequestKey = (&'static str, RouteLabel, u16);
type RequestHandles = (Counter, Histogram);

pub struct AppMetrics {
    recorder: PrometheusRecorder,
    request_handles: RwLock<HashMap<RequestKey, RequestHandles>>,
    handle: PrometheusHandle,
    routes: Arc<RouteTable>,
    upkeep: Option<tokio::task::AbortHandle>,
}

impl Drop for AppMetrics {
    fn drop(&mut self) {
        if let Some(upkeep) = &self.upkeep {
            upkeep.abort();
        }
    }
}

fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

impl AppMetrics {
    pub fn new(routes: Arc<RouteTable>) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let upkeep = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let handle = handle.clone();
            runtime
                .spawn(async move {
                    let mut every = tokio::time::interval(UPKEEP_EVERY);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        every.tick().await;
                        handle.run_upkeep();
                    }
                })
                .abort_handle()
        });
        let metrics = Self {
            recorder,
            request_handles: RwLock::default(),
            handle,
            routes,
            upkeep,
        };
        metrics.set_health(true);
        metrics
    }

    pub fn record_request(&self, method: &'static str, path: &str, status: u16, elapsed: Duration) {
        let key = (method, self.routes.label_of(path), status);
        let record = |(requests, duration): &RequestHandles| {
            requests.increment(1);
            duration.record(elapsed.as_secs_f64());
        };
        // Under the read lock: cloning the handles out would cost four atomic operations.
        if let Ok(handles) = self.request_handles.read()
            && let Some(found) = handles.get(&key)
        {
            return record(found);
        }
        record(&self.register_request_handles(key));
    }

    /// Registers the series of one (method, route, status) once; later requests reuse the
    /// handles instead of building labels and looking them up in the registry.
    fn register_request_handles(&self, series: RequestKey) -> RequestHandles {
        let (method, label, status) = series;
        let route = self.routes.template(label).to_string();
        let requests = self.recorder.register_counter(
            &key(
                "http_requests_total",
                vec![
                    Label::new("method", method),
                    Label::new("route", route.clone()),
                    Label::new("status", status.to_string()),
                ],
            ),
            &METADATA,
        );
        let duration = self.recorder.register_histogram(
            &key(
                "http_request_duration_seconds",
                vec![Label::new("method", method), Label::new("route", route)],
            ),
            &METADATA,
        );
        let handles = (requests, duration);
        if let Ok(mut cache) = self.request_handles.write() {
            cache.insert(series, handles.clone());
        }
        handles
    }

    pub fn record_rate_limited(&self, bucket: &'static str) {
        let labels = vec![Label::new("bucket", bucket)];
        self.recorder
            .register_counter(&key("rate_limited_total", labels), &METADATA)
            .increment(1);
    }

    /// 1 while the last health check passed, 0 after one failed.
    pub fn set_health(&self, healthy: bool) {
        self.recorder
            .register_gauge(&key("http_health_check_status", vec![]), &METADATA)
            .set(if healthy { 1.0 } else { 0.0 });
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        self.recorder
            .register_gauge(&key(name, labels), &METADATA)
            .set(value);
    }

    fn counter_absolute(&self, name: &'static str, labels: Vec<Label>, value: u64) {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
            .absolute(value);
    }

    /// The exposition text, with pool, cache and rate-limiter figures read just now.
    pub fn render(
        &self,
        pool: &PoolStatus,
        caches: &[(&'static str, CacheStats)],
        tracked_clients: usize,
        coherence: Option<CoherenceStats>,
        activity: &Activity,
    ) -> String {
        for f in &activity.outbox {
            let topic = || vec![Label::new("topic", f.topic)];
            self.counter_absolute("outbox_delivered_total", topic(), f.delivered);
            self.counter_absolute("outbox_failed_attempts_total", topic(), f.failed_attempts);
            self.counter_absolute("outbox_gave_up_total", topic(), f.gave_up);
            self.counter_absolute(
                "outbox_attempt_microseconds_total",
                topic(),
                (f.attempt_seconds * 1e6) as u64,
            );
        }
        if let Some(backlog) = &activity.outbox_backlog {
            self.gauge("outbox_pending_messages", vec![], backlog.pending as f64);
            self.gauge("outbox_failed_messages", vec![], backlog.failed as f64);
            // Every topic, so a drained topic reads 0 rather than its last value.
            for topic in ["mail", "webhook", "job"] {
                let (pending, failed) = backlog
                    .by_topic
                    .iter()
                    .find(|(t, _, _)| t == topic)
                    .map_or((0, 0), |(_, p, f)| (*p, *f));
                let label = || vec![Label::new("topic", topic)];
                self.gauge("outbox_topic_pending_messages", label(), pending as f64);
                self.gauge("outbox_topic_failed_messages", label(), failed as f64);
            }
        }
        for (event, count) in &activity.security_events {
            self.counter_absolute(
                "security_events_total",
                vec![Label::new("event", *event)],
                *count,
            );
        }
        self.counter_absolute(
            "sessions_pruned_rows_total",
            vec![],
            activity.pruned_session_rows,
        );
        if let Some(c) = coherence {
            // Requests per read = requests_total / reads_total; both only grow.
            self.counter_absolute("coherence_barrier_reads_total", vec![], c.barrier_reads);
            self.counter_absolute(
                "coherence_barrier_requests_total",
                vec![],
                c.barrier_requests,
            );
            self.counter_absolute(
                "coherence_barrier_wait_microseconds_total",
                vec![],
                (c.barrier_wait_seconds * 1e6) as u64,
            );
        }
        let backend = || Label::new("backend", pool.backend);
        self.gauge("db_pool_size", vec![backend()], f64::from(pool.pool_size));
        self.gauge(
            "db_pool_connections",
            vec![backend(), Label::new("state", "idle")],
            f64::from(pool.checked_in),
        );
        self.gauge(
            "db_pool_connections",
            vec![backend(), Label::new("state", "in_use")],
            f64::from(pool.checked_out),
        );
        for (name, stats) in caches {
            self.counter_absolute(
                "cache_hits_total",
                vec![Label::new("cache", *name)],
                stats.hits,
            );
            self.counter_absolute(
                "cache_misses_total",
                vec![Label::new("cache", *name)],
                stats.misses,
            );
            self.gauge(
                "cache_entries",
                vec![Label::new("cache", *name)],
                stats.entries as f64,
            );
        }
        self.gauge(
            "rate_limiter_tracked_clients",
            vec![],
            tracked_clients as f64,
        );
        self.handle.render()
    }
}
