//! Caches: HIT/MISS, single-flight loads, ETags, and invalidation by every kind of write.

use std::sync::Arc;

use serde_json::json;

use crate::{
    helpers::{TestApp, backend_tests},
    observed_store::{Calls, ObservedStore},
};

async fn dashboard(app: &TestApp) -> (String, serde_json::Value) {
    let r = app.get("/api/v1/dashboard/stats", Some(app.admin())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (r.header("x-cache").unwrap().to_string(), r.body)
}

backend_tests! {
    async fn the_dashboard_is_a_miss_then_a_hit(backend) {
        let app = TestApp::spawn(backend).await;
        let (first, a) = dashboard(&app).await;
        let (second, b) = dashboard(&app).await;
        assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"));
        assert_eq!(a, b, "a hit returns the cached figures, generated_at included");
    }

    async fn concurrent_misses_share_one_database_query(backend) {
        let calls = Arc::new(Calls::default());
        let observed = calls.clone();
        let app = TestApp::spawn_wrapped(backend, &[], move |inner| Arc::new(ObservedStore { inner, calls: observed })).await;
        let requests = (0..20).map(|_| app.get("/api/v1/dashboard/stats", Some(app.admin())));
        let responses = futures_util::future::join_all(requests).await;
        assert!(responses.iter().all(|r| r.status == 200));
        assert_eq!(calls.dashboard(), 1, "20 concurrent requests on a cold cache ran one query");
        let misses = responses.iter().filter(|r| r.header("x-cache") == Some("MISS")).count();
        assert_eq!(misses, 1);
        assert!(responses.iter().all(|r| r.body == responses[0].body));
        let metrics = app.get("/api/v1/metrics/cache", Some(app.admin())).await;
        assert_eq!((metrics.body["dashboard"]["misses"].as_u64(), metrics.body["dashboard"]["hits"].as_u64()), (Some(1), Some(19)));
    }

    async fn every_kind_of_write_drops_the_dashboard_at_once(backend) {
        let app = TestApp::spawn_with(backend, &[("ALLOW_REGISTRATION", "true")]).await;
        let total = |b: &serde_json::Value| b["total_users"].as_u64().unwrap();
        let (_, before) = dashboard(&app).await;
        let id = app.create_user("a@example.com", "password-123", false).await["id"].as_i64().unwrap();
        let (state, after_create) = dashboard(&app).await;
        assert_eq!((state.as_str(), total(&after_create)), ("MISS", total(&before) + 1));
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": false})).await;
        let (_, after_deactivate) = dashboard(&app).await;
        assert_eq!(after_deactivate["inactive_users"], 1);
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": true, "is_superuser": true})).await;
        let (_, after_promote) = dashboard(&app).await;
        assert_eq!((after_promote["inactive_users"].as_u64(), after_promote["superusers"].as_u64()), (Some(0), Some(2)));
        app.post("/api/v1/auth/register", None, json!({"email": "r@example.com", "password": "password-123"})).await;
        assert_eq!(total(&dashboard(&app).await.1), total(&before) + 2);
        app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
        assert_eq!(total(&dashboard(&app).await.1), total(&before) + 1);
    }

    async fn user_reads_see_every_write_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("reader@example.com").await;
        let path = format!("/api/v1/users/{id}");
        assert_eq!(app.get(&path, Some(app.admin())).await.body["full_name"], serde_json::Value::Null);
        assert_eq!(app.get(&path, Some(app.admin())).await.body["full_name"], serde_json::Value::Null);
        app.patch(&path, Some(app.admin()), json!({"full_name": "By Admin"})).await;
        assert_eq!(app.get(&path, Some(&token)).await.body["full_name"], "By Admin");
        app.patch("/api/v1/users/me", Some(&token), json!({"full_name": "By Me"})).await;
        assert_eq!(app.get(&path, Some(app.admin())).await.body["full_name"], "By Me");
        assert_eq!(app.get("/api/v1/users/me", Some(&token)).await.body["full_name"], "By Me");
        // Deactivation reaches the (cached) authentication of the next request.
        app.patch(&path, Some(app.admin()), json!({"is_active": false})).await;
        app.get("/api/v1/users/me", Some(&token)).await.assert_error(403, "inactive_user");
        app.delete(&path, Some(app.admin())).await;
        app.get(&path, Some(app.admin())).await.assert_error(404, "not_found");
        app.get("/api/v1/users/me", Some(&token)).await.assert_error(401, "unauthorized");
    }

    async fn a_user_looked_up_before_creation_is_found_after_it(backend) {
        let app = TestApp::spawn(backend).await;
        let next_id = app.create_user("probe@example.com", "password-123", false).await["id"].as_i64().unwrap() + 1;
        app.get(&format!("/api/v1/users/{next_id}"), Some(app.admin())).await.assert_error(404, "not_found");
        let created = app.create_user("later@example.com", "password-123", false).await;
        assert_eq!(created["id"], next_id);
        assert_eq!(app.get(&format!("/api/v1/users/{next_id}"), Some(app.admin())).await.status, 200);
    }

    async fn repeated_reads_of_a_user_are_served_from_the_cache(backend) {
        let calls = Arc::new(Calls::default());
        let observed = calls.clone();
        let app = TestApp::spawn_wrapped(backend, &[], move |inner| Arc::new(ObservedStore { inner, calls: observed })).await;
        let id = app.create_user("cached@example.com", "password-123", false).await["id"].as_i64().unwrap();
        app.get(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
        let before = calls.get_user();
        for _ in 0..5 {
            assert_eq!(app.get(&format!("/api/v1/users/{id}"), Some(app.admin())).await.status, 200);
        }
        assert_eq!(calls.get_user(), before, "neither the caller nor the user was read from the database again");
    }

    async fn etag_and_if_none_match_give_304_until_the_user_changes(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("etag@example.com", "password-123", false).await["id"].as_i64().unwrap();
        let path = format!("/api/v1/users/{id}");
        let first = app.get(&path, Some(app.admin())).await;
        let etag = first.header("etag").expect("an ETag").to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        for header in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_string()] {
            let req = app.client.get(app.url(&path)).bearer_auth(app.admin()).header("if-none-match", header.as_str());
            let r = app.send_raw(req).await;
            assert_eq!(r.status, 304, "If-None-Match: {header}");
            assert!(r.text.is_empty());
            assert_eq!(r.header("etag"), Some(etag.as_str()));
        }
        let stale = app.client.get(app.url(&path)).bearer_auth(app.admin()).header("if-none-match", "\"nope\"");
        assert_eq!(app.send_raw(stale).await.status, 200);
        app.patch(&path, Some(app.admin()), json!({"full_name": "Changed"})).await;
        let req = app.client.get(app.url(&path)).bearer_auth(app.admin()).header("if-none-match", etag.as_str());
        let changed = app.send_raw(req).await;
        assert_eq!(changed.status, 200);
        assert_eq!(changed.body["full_name"], "Changed");
        assert_ne!(changed.header("etag"), Some(etag.as_str()));
    }

    async fn with_caching_disabled_everything_works_uncached(backend) {
        let app = TestApp::spawn_with(backend, &[("CACHE_ENABLED", "false")]).await;
        assert_eq!(dashboard(&app).await.0, "MISS");
        assert_eq!(dashboard(&app).await.0, "MISS");
        let id = app.create_user("u@example.com", "password-123", false).await["id"].as_i64().unwrap();
        assert_eq!(dashboard(&app).await.1["total_users"], 2);
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"full_name": "N"})).await;
        assert_eq!(app.get(&format!("/api/v1/users/{id}"), Some(app.admin())).await.body["full_name"], "N");
        assert_eq!(app.get("/api/v1/users?is_active=true", Some(app.admin())).await.body["total"], 2);
        let metrics = app.get("/api/v1/metrics/cache", Some(app.admin())).await;
        assert_eq!(metrics.body["enabled"], false);
        assert_eq!(metrics.body["users"]["entries"], 0);
        assert_eq!(app.get("/health", None).await.body["checks"]["cache"]["status"], "disabled");
    }

    async fn cache_metrics_and_health_report_real_counters(backend) {
        let app = TestApp::spawn(backend).await;
        let fresh = app.get("/api/v1/metrics/cache", Some(app.admin())).await;
        assert_eq!(fresh.status, 200);
        assert_eq!(fresh.body["dashboard"]["hit_rate"], 0.0);
        dashboard(&app).await;
        dashboard(&app).await;
        dashboard(&app).await;
        let m = app.get("/api/v1/metrics/cache", Some(app.admin())).await.body;
        assert_eq!((m["dashboard"]["hits"].as_u64(), m["dashboard"]["misses"].as_u64()), (Some(2), Some(1)));
        assert!((m["dashboard"]["hit_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(m["dashboard"]["entries"], 1);
        // Authentication caches the admin's session with the admin: one entry, one miss
        // (the first request), a hit for every request after it.
        assert_eq!(m["sessions"]["entries"], 1);
        assert_eq!(m["sessions"]["misses"], 1);
        assert_eq!(m["sessions"]["hits"], 4, "{m}");
        assert_eq!(m["users"]["entries"], 0, "nothing read a user by id");
        let health = app.get("/health", None).await.body;
        assert_eq!(health["checks"]["cache"]["status"], "healthy");
        assert_eq!(health["checks"]["cache"]["entries"], 2);
        // 2 + 4 hits of 1 + 1 + 2 + 4 lookups.
        assert_eq!(health["checks"]["cache"]["hit_rate"].as_f64(), Some(6.0 / 8.0));
        let (_, token) = app.regular_user("x@example.com").await;
        app.get("/api/v1/metrics/cache", Some(&token)).await.assert_error(403, "forbidden");
    }

    async fn list_pages_are_served_from_the_cache_until_any_user_changes(backend) {
        let calls = Arc::new(Calls::default());
        let observed = calls.clone();
        let app = TestApp::spawn_wrapped(backend, &[], move |inner| Arc::new(ObservedStore { inner, calls: observed })).await;
        let id = app.create_user("page@example.com", "password-123", false).await["id"].as_i64().unwrap();
        let list = |q: &'static str| {
            let app = &app;
            async move { app.get(&format!("/api/v1/users?{q}"), Some(app.admin())).await.body }
        };
        let first = list("sort=email").await;
        let reads = calls.list_users();
        for _ in 0..3 {
            assert_eq!(list("sort=email").await, first, "a repeated page is the same page");
        }
        assert_eq!(calls.list_users(), reads, "a repeated page is not read from the database");
        // Every kind of user write is seen by the next page, whatever it changed.
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"full_name": "Renamed"})).await;
        assert_eq!(list("sort=email").await["items"][0]["full_name"], "Renamed");
        assert_eq!(calls.list_users(), reads + 1, "the write dropped the page");
        app.create_user("another@example.com", "password-123", false).await;
        let after_create = list("sort=email").await;
        assert_eq!(after_create["total"], 3);
        assert_eq!(after_create["items"][0]["email"], "another@example.com");
        app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
        assert_eq!(list("sort=email").await["total"], 2);
        assert!(list("search=page").await["items"].as_array().unwrap().is_empty());
    }

    async fn list_totals_stay_exact_across_writes(backend) {
        let app = TestApp::spawn(backend).await;
        let total = |q: &'static str| {
            let app = &app;
            async move { app.get(&format!("/api/v1/users?{q}"), Some(app.admin())).await.body["total"].as_u64().unwrap() }
        };
        assert_eq!((total("").await, total("is_active=true").await, total("is_superuser=false").await), (1, 1, 0));
        let id = app.create_user("t@example.com", "password-123", false).await["id"].as_i64().unwrap();
        assert_eq!((total("").await, total("is_active=false").await, total("is_superuser=false").await), (2, 0, 1));
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": false})).await;
        assert_eq!((total("is_active=false").await, total("is_active=true").await, total("is_superuser=true").await), (1, 1, 1));
        let page = app.get("/api/v1/users?is_active=false", Some(app.admin())).await.body;
        assert_eq!(page["items"].as_array().unwrap().len() as u64, page["total"].as_u64().unwrap());
    }
}
