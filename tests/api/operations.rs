//! Timeouts, rate limits, body limits, panics, health under faults, /metrics, shutdown.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use poem::{Route, get, handler};
use serde_json::json;

use crate::{
    helpers::{TestApp, backend_tests},
    observed_store::{Calls, ObservedStore},
};

#[handler]
fn panics() -> &'static str {
    panic!("deliberate panic in a test route")
}

fn observed(
    calls: &Arc<Calls>,
) -> impl FnOnce(Arc<dyn roster::store::UserStore>) -> Arc<dyn roster::store::UserStore> + Send + 'static
{
    let calls = calls.clone();
    move |inner| Arc::new(ObservedStore { inner, calls })
}

/// Polls `check` until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

backend_tests! {
    async fn a_slow_request_gets_504_with_the_configured_timeout(backend) {
        let calls = Arc::new(Calls::slow_dashboard(1500));
        let app = TestApp::spawn_wrapped(backend, &[("REQUEST_TIMEOUT_SECS", "0.3")], observed(&calls)).await;
        let started = Instant::now();
        let r = app.get("/api/v1/dashboard/stats", Some(app.admin())).await;
        r.assert_error(504, "request_timeout");
        assert_eq!(r.body["message"], "Request exceeded 0.3s timeout");
        assert!(started.elapsed() < Duration::from_millis(1400), "answered at the timeout, not after the work");
        assert_eq!(app.get("/api/v1/users/me", Some(app.admin())).await.status, 200);
    }

    async fn a_write_cut_off_by_the_timeout_completes_and_is_never_read_stale(backend) {
        let calls = Arc::new(Calls::default());
        let app = TestApp::spawn_wrapped(backend, &[("REQUEST_TIMEOUT_SECS", "0.2")], observed(&calls)).await;
        let id = app.create_user("slow@example.com", "password-123", false).await["id"].as_i64().unwrap();
        let path = format!("/api/v1/users/{id}");
        assert_eq!(app.get(&path, Some(app.admin())).await.body["full_name"], serde_json::Value::Null);
        calls.update_delay_ms.store(500, Ordering::SeqCst);
        app.patch(&path, Some(app.admin()), json!({"full_name": "Finished"})).await.assert_error(504, "request_timeout");
        // The write was not abandoned half-way: it commits, and the cache learns of it.
        let landed = eventually(Duration::from_secs(5), || async {
            app.get(&path, Some(app.admin())).await.body["full_name"] == "Finished"
        })
        .await;
        assert!(landed, "the cut-off write never became visible");
        let stored = app.store.get_user(id).await.unwrap().unwrap();
        assert_eq!(stored.full_name.as_deref(), Some("Finished"));
    }

    async fn rate_limited_clients_get_429_with_headers_and_recover(backend) {
        let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_ENABLED", "true"), ("RATE_LIMIT_PER_SECOND", "2"), ("RATE_LIMIT_BURST", "3")]).await;
        // Logging in (during spawn) used one cell of the bucket.
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..4 {
            let r = app.get("/api/v1/users/me", Some(app.admin())).await;
            statuses.push(r.status);
            last = Some(r);
        }
        let first_429 = statuses.iter().position(|s| *s == 429).expect("limited within the burst");
        assert!(first_429 >= 1 && statuses[..first_429].iter().all(|s| *s == 200), "{statuses:?}");
        let limited = last.unwrap();
        limited.assert_error(429, "rate_limited");
        assert_eq!(limited.header("retry-after"), Some("1"));
        assert_eq!(limited.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
        // Health is never limited.
        for _ in 0..10 {
            assert_eq!(app.get("/health/live", None).await.status, 200);
        }
        let recovered = eventually(Duration::from_secs(3), || async { app.get("/api/v1/users/me", Some(app.admin())).await.status == 200 }).await;
        assert!(recovered);
        let ok = app.get("/api/v1/users/me", Some(app.admin())).await;
        assert_eq!(ok.header("x-ratelimit-limit"), Some("3"));
        // An error answer (here a 404 from the handler) carries the headers too.
        let mut missing = app.get("/api/v1/users/999999", Some(app.admin())).await;
        for _ in 0..50 {
            if missing.status != 429 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            missing = app.get("/api/v1/users/999999", Some(app.admin())).await;
        }
        missing.assert_error(404, "not_found");
        assert_eq!(missing.header("x-ratelimit-limit"), Some("3"));
        assert!(missing.header("x-ratelimit-remaining").is_some());
        let mut metrics = String::new();
        for _ in 0..100 {
            let r = app.get("/metrics", None).await;
            if r.status == 200 {
                metrics = r.text;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(metrics.lines().any(|l| l.starts_with("rate_limited_total{bucket=\"api\"}")), "{metrics}");
    }

    async fn login_refresh_and_register_share_a_stricter_per_minute_bucket(backend) {
        let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_ENABLED", "true"), ("LOGIN_RATE_LIMIT_PER_MINUTE", "3"), ("ALLOW_REGISTRATION", "true")]).await;
        // One login was spent by the test harness.
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": "x"})).await;
        assert_eq!(r.status, 401);
        let r = app.post("/api/v1/auth/register", None, json!({"email": "n@example.com", "password": "password-123"})).await;
        assert_eq!(r.status, 201);
        let limited = app.post("/api/v1/auth/login", None, json!({"email": "n@example.com", "password": "password-123"})).await;
        limited.assert_error(429, "rate_limited");
        let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(app.get("/api/v1/users/me", Some(app.admin())).await.status, 200, "the API bucket is separate");
    }

    async fn forwarded_for_picks_the_bucket_only_when_trusted(backend) {
        let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_ENABLED", "true"), ("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "1"), ("TRUST_PROXY_HEADERS", "true")]).await;
        for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            let req = app.client.get(app.url("/api/v1/users/me")).bearer_auth(app.admin()).header("x-forwarded-for", format!("{ip}, 10.0.0.1"));
            assert_eq!(app.send_raw(req).await.status, 200, "{ip} has its own bucket");
        }
        let again = app.client.get(app.url("/api/v1/users/me")).bearer_auth(app.admin()).header("x-forwarded-for", "203.0.113.1");
        app.send_raw(again).await.assert_error(429, "rate_limited");

        let untrusted = TestApp::spawn_with(backend, &[("RATE_LIMIT_ENABLED", "true"), ("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")]).await;
        // Logging in took one cell; the header cannot buy a fresh bucket.
        let first = untrusted.client.get(untrusted.url("/api/v1/users/me")).bearer_auth(untrusted.admin()).header("x-forwarded-for", "198.51.100.9");
        assert_eq!(untrusted.send_raw(first).await.status, 200);
        let spoofed = untrusted.client.get(untrusted.url("/api/v1/users/me")).bearer_auth(untrusted.admin()).header("x-forwarded-for", "198.51.100.10");
        untrusted.send_raw(spoofed).await.assert_error(429, "rate_limited");
    }

    async fn bodies_over_the_limit_get_413_with_or_without_content_length(backend) {
        let app = TestApp::spawn_with(backend, &[("MAX_BODY_BYTES", "1024")]).await;
        let big = json!({"email": "big@example.com", "password": "password-123", "full_name": "x".repeat(2000)});
        app.post("/api/v1/users", Some(app.admin()), big.clone()).await.assert_error(413, "payload_too_large");
        let bytes = serde_json::to_vec(&big).unwrap();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(100).map(|c| Ok(c.to_vec())).collect();
        let chunked = app.client.post(app.url("/api/v1/users")).bearer_auth(app.admin())
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)));
        app.send_raw(chunked).await.assert_error(413, "payload_too_large");
        assert_eq!(app.store.count_users().await.unwrap(), 1);
        let small = json!({"email": "small@example.com", "password": "password-123"});
        assert_eq!(app.post("/api/v1/users", Some(app.admin()), small).await.status, 201);
        let small_chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(br#"{"email": "chunked@example.com", "#.to_vec()), Ok(br#""password": "password-123"}"#.to_vec())];
        let chunked_ok = app.client.post(app.url("/api/v1/users")).bearer_auth(app.admin())
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(small_chunks)));
        assert_eq!(app.send_raw(chunked_ok).await.status, 201);
    }

    async fn a_panicking_handler_gives_500_json_and_the_server_keeps_serving(backend) {
        let app = TestApp::spawn_custom(backend, &[], |s| s, Route::new().at("/test/panic", get(panics))).await;
        let r = app.get("/test/panic", None).await;
        r.assert_error(500, "internal_error");
        assert!(!r.text.contains("deliberate"), "no internals leak to the client");
        assert_eq!(app.get("/api/v1/users/me", Some(app.admin())).await.status, 200);
        assert_eq!(app.get("/test/panic", None).await.status, 500);
    }

    async fn health_turns_503_while_the_database_fails_and_200_when_it_returns(backend) {
        let calls = Arc::new(Calls::default());
        let app = TestApp::spawn_wrapped(backend, &[], observed(&calls)).await;
        assert_eq!(app.get("/health", None).await.status, 200);
        calls.set_broken(true);
        let r = app.get("/health", None).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.body["status"], "unhealthy");
        assert_eq!(r.body["checks"]["database"]["status"], "unhealthy");
        assert_eq!(app.get("/health/ready", None).await.status, 503);
        assert_eq!(app.get("/health/live", None).await.status, 200, "the process is alive all along");
        assert!(app.get("/metrics", None).await.text.lines().any(|l| l == "http_health_check_status 0"));
        app.get("/api/v1/dashboard/stats", Some(app.admin())).await.assert_error(503, "service_unavailable");
        calls.set_broken(false);
        assert_eq!(app.get("/health", None).await.status, 200);
        assert_eq!(app.get("/health/ready", None).await.status, 200);
        assert!(app.get("/metrics", None).await.text.lines().any(|l| l == "http_health_check_status 1"));
        assert_eq!(app.get("/api/v1/dashboard/stats", Some(app.admin())).await.status, 200);
    }

    async fn metrics_count_requests_by_route_template(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("m@example.com", "password-123", false).await["id"].as_i64().unwrap();
        for _ in 0..3 {
            app.get(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
        }
        app.get("/api/v1/users/999999", Some(app.admin())).await;
        app.get("/no/such/route", None).await;
        app.get("/api/v1/dashboard/stats", Some(app.admin())).await;
        app.get("/api/v1/dashboard/stats", Some(app.admin())).await;
        let r = app.get("/metrics", None).await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let text = r.text;
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has(r#"http_requests_total{method="GET",route="/api/v1/users/{id}",status="200"} 3"#), "{text}");
        assert!(has(r#"http_requests_total{method="GET",route="/api/v1/users/{id}",status="404"} 1"#));
        assert!(has(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#));
        assert!(has(r#"http_requests_total{method="POST",route="/api/v1/users",status="201"} 1"#));
        assert!(!text.contains(&format!("/api/v1/users/{id}\"")), "raw ids never become labels");
        assert!(text.contains(r#"http_request_duration_seconds_bucket{method="GET",route="/api/v1/users/{id}",le="0.005"}"#));
        assert!(has(r#"cache_misses_total{cache="dashboard"} 1"#));
        assert!(has(r#"cache_hits_total{cache="dashboard"} 1"#));
        assert!(text.lines().any(|l| l.starts_with(&format!("db_pool_size{{backend=\"{}\"}} 5", app.store.backend()))));
        assert!(text.lines().any(|l| l.starts_with("db_pool_connections{")));
        assert!(has("http_health_check_status 1"));
    }

    async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones(backend) {
        let calls = Arc::new(Calls::slow_dashboard(600));
        let mut app = TestApp::spawn_wrapped(backend, &[], observed(&calls)).await;
        let request = app.client.get(app.url("/api/v1/dashboard/stats")).bearer_auth(app.admin()).send();
        let in_flight = tokio::spawn(request);
        // Wait until the request is inside the handler, then begin shutting down.
        assert!(eventually(Duration::from_secs(3), || async { calls.dashboard() == 1 }).await);
        let server = app.shutdown();
        let response = in_flight.await.unwrap().expect("the in-flight request completes");
        assert_eq!(response.status(), 200);
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("the server stops").unwrap().expect("served without error");
        let fresh = reqwest::Client::new().get(app.url("/health/live")).send().await;
        assert!(fresh.is_err(), "new connections are refused after shutdown");
    }
}

/// A real outage: the database stops accepting connections and its sessions are killed.
#[cfg(feature = "postgres")]
#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn postgres_outage_gives_503_and_the_service_recovers_when_it_returns() {
    use sqlx::Connection;

    let app = TestApp::spawn(crate::helpers::Backend::Postgres).await;
    let server = std::env::var(crate::helpers::POSTGRES_URL_VAR).unwrap();
    let name = app.database.url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    let exec = |sql: String| sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    assert_eq!(app.get("/health", None).await.status, 200);
    exec(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    exec(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .await
    .unwrap();

    let started = Instant::now();
    let health = app.get("/health", None).await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.body["checks"]["database"]["status"], "unhealthy");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the health check is bounded"
    );
    assert_eq!(app.get("/health/ready", None).await.status, 503);
    app.get("/api/v1/users?search=anything", Some(app.admin()))
        .await
        .assert_error(503, "service_unavailable");

    exec(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        app.get("/health", None).await.status == 200
    })
    .await;
    assert!(
        back,
        "health recovers once the database accepts connections again"
    );
    assert_eq!(
        app.get("/api/v1/users?search=anything", Some(app.admin()))
            .await
            .status,
        200
    );
}
