use chrono::{DateTime, Duration, Utc};
use roster::domain::{Email, NewUser};

use crate::helpers::{TestApp, backend_tests};

async fn seed(app: &TestApp, email: &str, active: bool, superuser: bool, age: Duration) {
    seed_at(app, email, active, superuser, Utc::now() - age).await
}

async fn seed_at(
    app: &TestApp,
    email: &str,
    active: bool,
    superuser: bool,
    created_at: DateTime<Utc>,
) {
    app.store
        .create_user(
            NewUser {
                email: Email::parse(email).unwrap(),
                full_name: None,
                hashed_password: "x".into(),
                is_active: active,
                is_superuser: superuser,
                email_verified: false,
                created_at: Some(created_at),
            },
            Default::default(),
        )
        .await
        .unwrap();
}

backend_tests! {
    async fn stats_count_every_group_in_utc_windows(backend) {
        // Five minutes past midnight UTC: "today" has barely begun, "yesterday" is close.
        let now = DateTime::parse_from_rfc3339("2026-06-15T00:05:00Z").unwrap().to_utc();
        let app = TestApp::spawn_at(backend, now).await;
        seed_at(&app, "old@example.com", true, false, now - Duration::days(30)).await;
        seed_at(&app, "week@example.com", false, false, now - Duration::days(6)).await;
        // 2026-06-07T00:05: before the week window, which opens at 2026-06-08T00:00.
        seed_at(&app, "edge@example.com", true, true, now - Duration::days(8)).await;
        seed_at(&app, "today@example.com", false, true, now).await;
        seed_at(&app, "yesterday@example.com", true, false, now - Duration::minutes(10)).await;
        let r = app.get("/api/v1/dashboard/stats", Some(app.admin())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let s = &r.body;
        // The configured admin was created "now" as an active superuser.
        assert_eq!(s["total_users"], 6);
        assert_eq!(s["active_users"], 4);
        assert_eq!(s["inactive_users"], 2);
        assert_eq!(s["superusers"], 3);
        assert_eq!(s["new_users_today"], 2);
        assert_eq!(s["new_users_week"], 4);
        let generated = DateTime::parse_from_rfc3339(s["generated_at"].as_str().unwrap()).unwrap();
        assert_eq!(generated, now);
        assert_eq!(r.header("x-cache"), Some("MISS"));
        let again = app.get("/api/v1/dashboard/stats", Some(app.admin())).await;
        assert_eq!(again.header("x-cache"), Some("HIT"));
        assert_eq!(again.body, r.body);
    }

    async fn sign_up_windows_follow_bulk_loads_and_deletes(backend) {
        let now = DateTime::parse_from_rfc3339("2026-06-15T12:00:00Z").unwrap().to_utc();
        let app = TestApp::spawn_at(backend, now).await;
        let user = |email: &str, age: Duration| NewUser {
            email: Email::parse(email).unwrap(),
            full_name: None,
            hashed_password: "x".into(),
            is_active: true,
            is_superuser: false,
            email_verified: false,
            created_at: Some(now - age),
        };
        // A batch large enough for the bulk path that adds a batch's days at once.
        let mut batch: Vec<NewUser> = (0..5_000).map(|i| user(&format!("old{i}@example.com"), Duration::days(40))).collect();
        batch.extend((0..30).map(|i| user(&format!("week{i}@example.com"), Duration::days(3))));
        batch.extend((0..20).map(|i| user(&format!("today{i}@example.com"), Duration::hours(2))));
        let created = app.store.create_users(batch, Vec::new()).await.unwrap();
        seed(&app, "single@example.com", true, false, Duration::hours(1)).await;
        let stats = app.get("/api/v1/dashboard/stats", Some(app.admin())).await.body;
        // The configured admin was created "now".
        assert_eq!(stats["total_users"], 5_052);
        assert_eq!(stats["new_users_today"], 22);
        assert_eq!(stats["new_users_week"], 52);
        // Deleting a user takes it out of its day.
        let today_user = created.iter().find(|u| u.email.as_str() == "today0@example.com").unwrap().id;
        let week_user = created.iter().find(|u| u.email.as_str() == "week0@example.com").unwrap().id;
        for id in [today_user, week_user] {
            assert_eq!(app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await.status, 204);
        }
        let stats = app.get("/api/v1/dashboard/stats", Some(app.admin())).await.body;
        assert_eq!(stats["total_users"], 5_050);
        assert_eq!(stats["new_users_today"], 21);
        assert_eq!(stats["new_users_week"], 50);
    }

    async fn stats_need_a_superuser(backend) {
        let app = TestApp::spawn(backend).await;
        app.get("/api/v1/dashboard/stats", None).await.assert_error(401, "unauthorized");
        let (_, token) = app.regular_user("user@example.com").await;
        app.get("/api/v1/dashboard/stats", Some(&token)).await.assert_error(403, "forbidden");
    }

    async fn stats_reflect_writes_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let before = app.get("/api/v1/dashboard/stats", Some(app.admin())).await.body["total_users"].as_u64().unwrap();
        app.create_user("fresh@example.com", "password-123", false).await;
        let after = app.get("/api/v1/dashboard/stats", Some(app.admin())).await.body["total_users"].as_u64().unwrap();
        assert_eq!(after, before + 1);
    }

    async fn dashboard_figures_equal_fresh_counts_after_mixed_writes(backend) {
        let app = TestApp::spawn(backend).await;
        let bulk: Vec<serde_json::Value> = (0..30)
            .map(|i| serde_json::json!({"email": format!("m{i}@example.com"), "password": "password-123", "is_active": i % 3 != 0, "is_superuser": i % 7 == 0}))
            .collect();
        let created = app.post("/api/v1/users/bulk", Some(app.admin()), serde_json::json!({"users": bulk})).await;
        let ids: Vec<i64> = created.body["items"].as_array().unwrap().iter().map(|u| u["id"].as_i64().unwrap()).collect();
        for id in &ids[..5] {
            app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
        }
        for id in &ids[5..12] {
            app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), serde_json::json!({"is_active": false, "is_superuser": true})).await;
        }
        seed(&app, "single@example.com", false, false, Duration::hours(1)).await;
        let stats = app.get("/api/v1/dashboard/stats", Some(app.admin())).await.body;
        // Two filters at once bypass the dashboard and COUNT in the database.
        let mut counts = std::collections::HashMap::new();
        for active in [true, false] {
            for superuser in [true, false] {
                let r = app.get(&format!("/api/v1/users?is_active={active}&is_superuser={superuser}"), Some(app.admin())).await;
                counts.insert((active, superuser), r.body["total"].as_u64().unwrap());
            }
        }
        let total: u64 = counts.values().sum();
        assert_eq!(stats["total_users"].as_u64(), Some(total));
        assert_eq!(stats["inactive_users"].as_u64(), Some(counts[&(false, true)] + counts[&(false, false)]));
        assert_eq!(stats["active_users"].as_u64(), Some(counts[&(true, true)] + counts[&(true, false)]));
        assert_eq!(stats["superusers"].as_u64(), Some(counts[&(true, true)] + counts[&(false, true)]));
    }
}
