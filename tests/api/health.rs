use crate::helpers::{TestApp, backend_tests};

backend_tests! {
    async fn health_reports_each_check(backend) {
        let started = std::time::Instant::now();
        let app = TestApp::spawn(backend).await;
        // The figures the cache check must repeat (this request is the last lookup).
        let figures = app.get("/api/v1/metrics/cache", Some(app.admin())).await.body;
        let r = app.get("/health", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let b = &r.body;
        assert_eq!(b["status"], "healthy");
        assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
        let uptime = b["uptime_seconds"].as_f64().unwrap();
        assert!(uptime > 0.0 && uptime <= started.elapsed().as_secs_f64(), "{uptime}");
        assert_eq!(b["checks"]["database"]["status"], "healthy");
        assert_eq!(b["checks"]["database"]["backend"], app.store.backend());
        let latency = b["checks"]["database"]["latency_ms"].as_f64().unwrap();
        assert!(latency > 0.0 && latency < 2000.0, "{latency}");
        let sum = |field: &str| ["dashboard", "users", "sessions"].iter().map(|c| figures[c][field].as_u64().unwrap()).sum::<u64>();
        let expected_rate = sum("hits") as f64 / (sum("hits") + sum("misses")) as f64;
        assert!(sum("misses") > 0, "logging in and the figures request looked users up");
        assert_eq!(b["checks"]["cache"]["hit_rate"].as_f64(), Some(expected_rate));
        assert_eq!(b["checks"]["cache"]["entries"].as_u64(), Some(sum("entries")));
        assert_eq!(b["checks"]["cache"]["status"], "healthy");
        // The test configuration turns rate limiting off.
        assert_eq!(b["checks"]["rate_limiter"]["status"], "disabled");
    }

    async fn live_and_ready_answer_200(backend) {
        let app = TestApp::spawn(backend).await;
        let live = app.get("/health/live", None).await;
        assert_eq!((live.status, live.body["status"].as_str()), (200, Some("alive")));
        let ready = app.get("/health/ready", None).await;
        assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")));
    }

    async fn database_metrics_show_the_pool(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.get("/api/v1/metrics/database", Some(app.admin())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["backend"], app.store.backend());
        assert_eq!(r.body["pool_size"], 5);
        let total = r.body["total_connections"].as_u64().unwrap();
        assert_eq!(r.body["checked_in"].as_u64().unwrap() + r.body["checked_out"].as_u64().unwrap(), total);
        let (_, token) = app.regular_user("u@example.com").await;
        app.get("/api/v1/metrics/database", Some(&token)).await.assert_error(403, "forbidden");
    }
}
