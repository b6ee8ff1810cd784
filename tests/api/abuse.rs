//! Abuse resistance (SPEC "Abuse resistance"): each attack the issue lists, tried again.

use std::sync::{Arc, atomic::AtomicI64};

use reqwest::Method;
use roster::service::Clock;
use serde_json::json;

use crate::helpers::{TestApp, backend_tests};

/// The exposition's series (lines that are not comments).
async fn series(app: &TestApp) -> Vec<String> {
    app.get("/metrics", None)
        .await
        .text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> crate::helpers::Resp {
    app.send_raw(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": password})),
    )
    .await
}

backend_tests! {
    async fn made_up_methods_and_paths_add_no_metric_series(backend) {
        let app = TestApp::spawn(backend).await;
        let odd = |name: &str| Method::from_bytes(name.as_bytes()).unwrap();
        // Every label combination these requests can reach, once.
        for (method, path) in [("FOO", "/health"), ("FOO", "/nowhere"), ("GET", "/nowhere")] {
            app.send(odd(method), path, None, None).await;
        }
        series(&app).await;
        let before = series(&app).await;
        for i in 0..200 {
            let method = format!("M{}{}", "X".repeat(i % 50), i);
            let path = if i % 2 == 0 { "/health".to_string() } else { format!("/nowhere/{i}/{}", "y".repeat(i)) };
            let r = app.send(odd(&method), &path, None, None).await;
            assert!(matches!(r.status, 404 | 405), "{}", r.status);
            app.get(&format!("/x{i}"), None).await;
        }
        let after = series(&app).await;
        assert_eq!(before.len(), after.len(), "new series: {:?}", after.iter().filter(|s| !before.contains(s)).collect::<Vec<_>>());
        assert!(after.iter().any(|s| s.contains("method=\"OTHER\"")));
        assert!(!after.iter().any(|s| s.contains("MX")), "a request's method became a label");
    }

    async fn responses_carry_the_security_headers(backend) {
        let app = TestApp::spawn(backend).await;
        let login = app.post("/api/v1/auth/login", None, json!({"email": crate::helpers::ADMIN_EMAIL, "password": crate::helpers::ADMIN_PASSWORD})).await;
        let me = app.get("/api/v1/users/me", Some(app.admin())).await;
        let missing = app.get("/api/v1/nowhere", None).await;
        let health = app.get("/health", None).await;
        let docs = app.get("/docs", None).await;
        for r in [&login, &me, &missing, &health, &docs] {
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        }
        for r in [&login, &me, &missing] {
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        assert_eq!(docs.status, 200);
        assert_eq!(docs.header("x-frame-options"), Some("DENY"));
        let csp = docs.header("content-security-policy").expect("a CSP on HTML");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(me.header("x-frame-options"), None, "JSON needs no frame protection");
    }

    async fn csv_exports_neutralise_formulas_and_download_as_files(backend) {
        let app = TestApp::spawn(backend).await;
        for (i, name) in ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1", "-2", "@SUM(A1)", "\tTab", "\rCR", "plain = ok"].iter().enumerate() {
            let r = app.post("/api/v1/users", Some(app.admin()), json!({"email": format!("f{i}@example.com"), "password": "k7#Qm2!xz", "full_name": name})).await;
            assert!(r.status == 201 || r.status == 422, "{}", r.text);
        }
        let r = app.get("/api/v1/users/export?format=csv&sort=email", Some(app.admin())).await;
        assert_eq!(r.status, 200);
        let disposition = r.header("content-disposition").expect("Content-Disposition");
        assert!(disposition.starts_with("attachment; filename=\"users-") && disposition.ends_with(".csv\""), "{disposition}");
        let cells: Vec<String> = csv::Reader::from_reader(r.text.as_bytes())
            .records()
            .map(|rec| rec.unwrap()[2].to_string())
            .collect();
        for cell in &cells {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "formula exported raw: {cell:?}");
        }
        assert!(cells.contains(&"'=HYPERLINK(\"http://evil.example\",\"x\")".to_string()), "{cells:?}");
        assert!(cells.contains(&"'+1+1".to_string()) && cells.contains(&"'-2".to_string()) && cells.contains(&"'@SUM(A1)".to_string()));
        assert!(cells.contains(&"plain = ok".to_string()));
        let nd = app.get("/api/v1/users/export?format=ndjson", Some(app.admin())).await;
        assert!(nd.header("content-disposition").is_some_and(|d| d.ends_with(".ndjson\"")));
        assert!(nd.text.contains("\"full_name\":\"+1+1\""), "NDJSON keeps the data as it is");
    }

    async fn an_account_is_locked_after_too_many_failures_from_any_address(backend) {
        let offset = Arc::new(AtomicI64::new(0));
        let app = TestApp::spawn_with_clock(backend, &[
            ("LOGIN_MAX_FAILURES", "3"), ("LOGIN_FAILURE_WINDOW_SECS", "600"), ("TRUST_PROXY_HEADERS", "true"),
        ], Clock::shifted(offset.clone())).await;
        app.regular_user("target@example.com").await;
        for (i, ip) in ["198.51.100.1", "198.51.100.2", "2001:db8::9"].iter().enumerate() {
            login_from(&app, ip, "target@example.com", &format!("guess-{i}-wrong")).await.assert_error(401, "invalid_credentials");
        }
        // From a fourth address, with the right password: still locked.
        let locked = login_from(&app, "203.0.113.50", "TARGET@example.com", "user-password-1").await;
        locked.assert_error(429, "rate_limited");
        let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
        assert!((590..=600).contains(&retry), "{retry}");
        let stored = app.store.login_failures("target@example.com").await.unwrap().unwrap();
        assert_eq!(stored.0, 3);
        // Other accounts are untouched; unknown emails are counted the same way.
        app.token_for(crate::helpers::ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD).await;
        for _ in 0..3 {
            login_from(&app, "198.51.100.7", "ghost@example.com", "whatever-1").await.assert_error(401, "invalid_credentials");
        }
        login_from(&app, "198.51.100.7", "ghost@example.com", "whatever-1").await.assert_error(429, "rate_limited");
        // When the window has passed, the right password works and clears the count.
        offset.store(601, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(login_from(&app, "198.51.100.1", "target@example.com", "user-password-1").await.status, 200);
        let metrics = app.get("/metrics", None).await.text;
        assert!(metrics.lines().any(|l| l.starts_with("security_events_total{event=\"login.locked\"} ") && !l.ends_with(" 0")), "{metrics}");
    }

    async fn a_wrong_current_password_counts_and_success_clears(backend) {
        let app = TestApp::spawn_with(backend, &[("LOGIN_MAX_FAILURES", "3")]).await;
        let (_, token) = app.regular_user("oracle@example.com").await;
        app.post("/api/v1/auth/login", None, json!({"email": "oracle@example.com", "password": "nope-nope-1"})).await.assert_error(401, "invalid_credentials");
        // A success clears the count.
        app.token_for("oracle@example.com", "user-password-1").await;
        assert!(app.store.login_failures("oracle@example.com").await.unwrap().is_none());
        for i in 0..3 {
            app.patch("/api/v1/users/me", Some(&token), json!({"password": "new-password-9", "current_password": format!("guess-{i}-x")})).await
                .assert_error(403, "forbidden");
        }
        // The oracle is closed: even the right current password waits out the window now.
        let r = app.patch("/api/v1/users/me", Some(&token), json!({"password": "new-password-9", "current_password": "user-password-1"})).await;
        r.assert_error(429, "rate_limited");
        assert!(r.header("retry-after").is_some());
        app.post("/api/v1/auth/login", None, json!({"email": "oracle@example.com", "password": "user-password-1"})).await.assert_error(429, "rate_limited");
    }

    async fn past_the_hashing_queue_requests_get_503_and_other_endpoints_keep_working(backend) {
        let app = TestApp::spawn_with(backend, &[("HASH_CONCURRENCY", "1"), ("HASH_QUEUE_MAX", "1"), ("ARGON2_ITERATIONS", "400")]).await;
        let attempts = (0..8).map(|i| app.post("/api/v1/auth/login", None, json!({"email": format!("flood{i}@example.com"), "password": "wrong-password"})));
        let (results, health) = tokio::join!(futures_util::future::join_all(attempts), app.get("/api/v1/users/me", Some(app.admin())));
        assert_eq!(health.status, 200, "a cached read is not held up by the flood");
        let busy: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
        assert!(!busy.is_empty(), "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
        for r in &busy {
            r.assert_error(503, "service_unavailable");
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        assert!(results.iter().all(|r| matches!(r.status, 401 | 503)));
    }
}

#[cfg(all(unix, feature = "sqlite"))]
#[tokio::test]
async fn sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(crate::helpers::Backend::Sqlite).await;
    app.create_user("perm@example.com", "k7#Qm2!xz", false)
        .await;
    let path = app.database.url.trim_start_matches("sqlite://").to_string();
    for file in [path.clone(), format!("{path}-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
}

mod connections {
    use std::time::{Duration, Instant};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use crate::helpers::{TestApp, backend_tests};

    /// Reads until the server closes the connection; how long that took.
    async fn closed_after(stream: &mut TcpStream, started: Instant) -> Duration {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!("the connection was still open after 10 s"),
            }
        }
    }

    fn addr(app: &TestApp) -> String {
        app.base.trim_start_matches("http://").to_string()
    }

    backend_tests! {
        async fn silent_and_slow_clients_are_disconnected(backend) {
            let app = TestApp::spawn_with(backend, &[("HEADER_READ_TIMEOUT_SECS", "1"), ("IDLE_TIMEOUT_SECS", "30")]).await;
            // Silent from the start.
            let started = Instant::now();
            let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
            let took = closed_after(&mut silent, started).await;
            assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
            // Slowloris: a byte every 200 ms never completes the headers in time.
            let started = Instant::now();
            let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
            let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut closed = false;
            for byte in request {
                if slow.write_all(&[*byte]).await.is_err() {
                    closed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if started.elapsed() > Duration::from_secs(4) {
                    break;
                }
            }
            if !closed {
                let took = closed_after(&mut slow, started).await;
                assert!(took < Duration::from_secs(5), "{took:?}");
            }
            // A well-behaved keep-alive client is served, request after request.
            let mut good = TcpStream::connect(addr(&app)).await.unwrap();
            for _ in 0..2 {
                good.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
                let mut buf = [0u8; 1024];
                let n = good.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            }
        }

        async fn idle_keep_alive_connections_are_closed(backend) {
            let app = TestApp::spawn_with(backend, &[("HEADER_READ_TIMEOUT_SECS", "30"), ("IDLE_TIMEOUT_SECS", "1")]).await;
            let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
            conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            let started = Instant::now();
            let took = closed_after(&mut conn, started).await;
            assert!(took < Duration::from_secs(5), "{took:?}");
        }
    }
}
