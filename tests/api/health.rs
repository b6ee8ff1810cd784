use crate::helpers::{TestApp, backend_tests};

backend_tests! {
    async fn health_reports_each_check(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.get("/health", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let b = &r.body;
        assert_eq!(b["status"], "healthy");
        assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
        assert!(b["uptime_seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(b["checks"]["database"]["status"], "healthy");
        assert_eq!(b["checks"]["database"]["backend"], app.store.backend());
        assert!(b["checks"]["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
        let hit_rate = b["checks"]["cache"]["hit_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&hit_rate));
        assert!(b["checks"]["cache"]["entries"].as_u64().is_some());
        assert!(b["checks"]["rate_limiter"]["status"].is_string());
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
        assert_eq!(r.body["overflow"], 0);
        let (_, token) = app.regular_user("u@example.com").await;
        app.get("/api/v1/metrics/database", Some(&token)).await.assert_error(403, "forbidden");
    }
}
