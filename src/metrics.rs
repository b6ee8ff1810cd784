//! Prometheus metrics for `GET /metrics`, recorded per app (no global recorder, so several
//! apps in one process, as in the tests, keep their own figures).

use std::time::Duration;

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::{cache::CacheStats, store::PoolStatus};

static METADATA: Metadata<'static> = Metadata::new("roster", Level::INFO, Some(module_path!()));

const DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Request paths reduced to the route templates of the API, so ids never become labels.
struct RouteTemplates(Vec<Vec<Segment>>);

enum Segment {
    Literal(String),
    Param,
}

impl RouteTemplates {
    fn from_spec(spec: &str) -> Self {
        let paths = serde_json::from_str::<serde_json::Value>(spec)
            .ok()
            .and_then(|v| {
                v.get("paths")
                    .and_then(|p| p.as_object())
                    .map(|p| p.keys().cloned().collect::<Vec<_>>())
            })
            .unwrap_or_default();
        let templates = paths
            .iter()
            .map(|path| {
                path.split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        if s.starts_with('{') {
                            Segment::Param
                        } else {
                            Segment::Literal(s.to_string())
                        }
                    })
                    .collect()
            })
            .collect();
        Self(templates)
    }

    fn template_of(&self, path: &str) -> String {
        if path == "/docs" || path.starts_with("/docs/") {
            return "/docs".into();
        }
        if path == "/openapi.json" {
            return path.into();
        }
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(&Vec<Segment>, usize)> = None;
        for template in &self.0 {
            if template.len() != parts.len() {
                continue;
            }
            let matches = template.iter().zip(&parts).all(|(seg, part)| match seg {
                Segment::Literal(l) => l == part,
                Segment::Param => true,
            });
            let literals = template
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count();
            if matches && best.is_none_or(|(_, n)| literals > n) {
                best = Some((template, literals));
            }
        }
        match best {
            Some((template, _)) if template.is_empty() => "/".into(),
            Some((template, _)) => template
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => format!("/{l}"),
                    Segment::Param => "/{id}".into(),
                })
                .collect(),
            None => "unmatched".into(),
        }
    }
}

pub struct AppMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    routes: RouteTemplates,
}

fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

impl AppMetrics {
    pub fn new(spec: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let metrics = Self {
            recorder,
            handle,
            routes: RouteTemplates::from_spec(spec),
        };
        metrics.set_health(true);
        metrics
    }

    pub fn record_request(&self, method: &str, path: &str, status: u16, elapsed: Duration) {
        let route = self.routes.template_of(path);
        let labels = vec![
            Label::new("method", method.to_string()),
            Label::new("route", route.clone()),
            Label::new("status", status.to_string()),
        ];
        self.recorder
            .register_counter(&key("http_requests_total", labels), &METADATA)
            .increment(1);
        let labels = vec![
            Label::new("method", method.to_string()),
            Label::new("route", route),
        ];
        self.recorder
            .register_histogram(&key("http_request_duration_seconds", labels), &METADATA)
            .record(elapsed.as_secs_f64());
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
    ) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_route_templates() {
        let spec = r#"{"paths": {"/api/v1/users": {}, "/api/v1/users/me": {}, "/api/v1/users/{id}": {}, "/health": {}}}"#;
        let routes = RouteTemplates::from_spec(spec);
        assert_eq!(routes.template_of("/api/v1/users/42"), "/api/v1/users/{id}");
        assert_eq!(routes.template_of("/api/v1/users/me"), "/api/v1/users/me");
        assert_eq!(routes.template_of("/api/v1/users"), "/api/v1/users");
        assert_eq!(routes.template_of("/health"), "/health");
        assert_eq!(routes.template_of("/docs/index.css"), "/docs");
        assert_eq!(routes.template_of("/random/123"), "unmatched");
    }
}
