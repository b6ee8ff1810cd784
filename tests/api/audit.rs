//! The audit trail: one event per action, written with its change (never without it),
//! read back with filters and cursors, pruned after the retention; and signed webhooks.

use std::{
    sync::{Arc, atomic::AtomicI64},
    time::Duration,
};

use roster::{app::LaunchOptions, service::Clock};
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, TestDatabase, backend_tests},
    smtp_sink::SmtpSink,
    webhook_receiver::Receiver,
};

/// Events of `action` (or a `family.*`), newest first, but the start-up's creation of the
/// first superuser.
async fn events(app: &TestApp, action: &str) -> Vec<Value> {
    events_as(app, app.admin(), action).await
}

async fn events_as(app: &TestApp, token: &str, action: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v1/audit?action={action}&size=100"),
            Some(token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["via"] != "first superuser")
        .cloned()
        .collect()
}

async fn one(app: &TestApp, action: &str) -> Value {
    one_as(app, app.admin(), action).await
}

async fn one_as(app: &TestApp, token: &str, action: &str) -> Value {
    let found = events_as(app, token, action).await;
    assert_eq!(found.len(), 1, "{action}: {found:?}");
    found[0].clone()
}

/// The configured superuser is the first user created.
const ADMIN_ID: i64 = 1;

backend_tests! {
    async fn creating_a_user_records_who_when_from_where_and_which_request(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.send_raw(app.client.post(app.url("/api/v1/users")).bearer_auth(app.admin())
            .header("x-request-id", "audit-create-1")
            .json(&json!({"email": "new@example.com", "password": "user-password-1", "full_name": "N"}))).await;
        assert_eq!(r.status, 201);
        let e = one(&app, "user.created").await;
        assert_eq!(e["target_id"], r.body["id"]);
        assert_eq!(e["actor_id"], ADMIN_ID);
        assert_eq!(e["actor_ip"], "127.0.0.1");
        assert_eq!(e["request_id"], "audit-create-1");
        assert_eq!(e["details"]["email"], "new@example.com");
        assert!(chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).is_ok());
        assert!(!e.to_string().contains("user-password-1"), "no secret in the trail");
    }

    async fn an_update_names_every_field_and_shows_no_secret(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("u@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        let r = app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()),
            json!({"full_name": "Ada", "password": "another-password-2", "is_active": false})).await;
        assert_eq!(r.status, 200);
        let e = one(&app, "user.updated").await;
        assert_eq!(e["target_id"], id);
        let mut fields: Vec<String> = serde_json::from_value(e["details"]["fields"].clone()).unwrap();
        fields.sort();
        assert_eq!(fields, ["full_name", "is_active", "password"]);
        assert_eq!(e["details"]["values"], json!({"full_name": "Ada", "is_active": false}));
        assert!(!e.to_string().contains("another-password-2"));
        let changed = one(&app, "password.changed").await;
        assert_eq!(changed["details"]["by"], "superuser");
        let revoked = one(&app, "session.revoked").await;
        assert_eq!(revoked["target_id"], id);
    }

    async fn a_deletion_is_recorded(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("gone@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        assert_eq!(app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await.status, 204);
        let e = one(&app, "user.deleted").await;
        assert_eq!((e["target_id"].as_i64(), e["actor_id"].as_i64()), (Some(id), Some(ADMIN_ID)));
    }

    async fn an_invitation_is_recorded(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/users/invite", Some(app.admin()), json!({"email": "guest@example.com"})).await;
        assert_eq!(r.status, 201);
        let e = one(&app, "user.invited").await;
        assert_eq!(e["target_id"], r.body["id"]);
        assert_eq!(one(&app, "user.created").await["details"]["via"], "invitation");
    }

    async fn logins_that_succeed_fail_and_lock_are_recorded(backend) {
        let app = TestApp::spawn_with(backend, &[("LOGIN_MAX_FAILURES", "2")]).await;
        let id = app.create_user("who@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        app.login("who@example.com", "user-password-1").await;
        let ok: Vec<Value> = events(&app, "login.succeeded").await.into_iter()
            .filter(|e| e["target_id"] == id).collect();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0]["actor_id"], id);
        for _ in 0..2 {
            app.post("/api/v1/auth/login", None, json!({"email": "who@example.com", "password": "wrong-pass"})).await;
        }
        app.post("/api/v1/auth/login", None, json!({"email": "ghost@example.com", "password": "wrong-pass"})).await;
        let failed = events(&app, "login.failed").await;
        assert_eq!(failed.len(), 3);
        assert_eq!(failed[0]["target_id"], Value::Null, "an unknown address has no target");
        assert_eq!(failed[0]["details"]["email"], "ghost@example.com");
        assert_eq!(failed[1]["target_id"], id);
        let locked = one(&app, "login.locked").await;
        assert_eq!(locked["target_id"], id);
        assert!(!json!(failed).to_string().contains("wrong-pass"));
    }

    async fn ending_a_session_and_replaying_a_refresh_token_are_recorded(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("s@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        let first = app.login("s@example.com", "user-password-1").await;
        let refresh = first["refresh_token"].as_str().unwrap();
        assert_eq!(app.post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh})).await.status, 200);
        let replay = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh})).await;
        assert_eq!(replay.status, 401);
        let reused = one(&app, "refresh.reused").await;
        assert_eq!(reused["target_id"], id);
        let second = app.login("s@example.com", "user-password-1").await;
        app.post("/api/v1/auth/logout", None, json!({"refresh_token": second["refresh_token"]})).await;
        let revoked = one(&app, "session.revoked").await;
        assert_eq!(revoked["target_id"], id);
        assert_eq!(revoked["details"]["reason"], "logout");
        // A logout of nothing live changes nothing and records nothing.
        app.post("/api/v1/auth/logout", None, json!({"refresh_token": "unknown"})).await;
        assert_eq!(events(&app, "session.revoked").await.len(), 1);
    }

    async fn an_own_password_change_is_recorded(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("me@example.com").await;
        let r = app.patch("/api/v1/users/me", Some(&token),
            json!({"password": "brand-new-password", "current_password": "user-password-1"})).await;
        assert_eq!(r.status, 200);
        let e = one(&app, "password.changed").await;
        assert_eq!((e["actor_id"].as_i64(), e["target_id"].as_i64()), (Some(id), Some(id)));
        assert_eq!(e["details"]["by"], "self");
    }

    async fn a_password_reset_and_an_email_verification_are_recorded(backend) {
        let sink = SmtpSink::start().await;
        let url = sink.url();
        let app = TestApp::spawn_with(backend, &[("MAIL_TRANSPORT", "smtp"), ("SMTP_URL", url.as_str()),
            ("ALLOW_REGISTRATION", "true")]).await;
        let r = app.send_raw(app.client.post(app.url("/api/v1/auth/password-reset"))
            .header("x-request-id", "audit-reset-1").json(&json!({"email": ADMIN_EMAIL}))).await;
        assert_eq!(r.status, 202);
        let token = sink.wait_for(1).await.remove(0).token();
        let requested = one(&app, "password.reset_requested").await;
        assert_eq!(requested["target_id"], 1);
        assert_eq!(requested["request_id"], "audit-reset-1", "the job carries the request's origin");
        assert_eq!(requested["actor_ip"], "127.0.0.1");
        let r = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": token, "new_password": "a-brand-new-secret"})).await;
        assert_eq!(r.status, 204);
        // The admin's sessions ended with the reset: log in again to read the trail.
        let admin = app.token_for(ADMIN_EMAIL, "a-brand-new-secret").await;
        assert_eq!(one_as(&app, &admin, "password.reset").await["target_id"], 1);
        assert_eq!(one_as(&app, &admin, "session.revoked").await["target_id"], 1);

        let reg = app.post("/api/v1/auth/register", None, json!({"email": "v@example.com", "password": "user-password-1"})).await;
        let token = sink.wait_for(2).await.remove(1).token();
        assert_eq!(app.post("/api/v1/auth/verify-email", None, json!({"token": token})).await.status, 204);
        assert_eq!(one_as(&app, &admin, "email.verified").await["target_id"], reg.body["id"]);
    }

    async fn a_rolled_back_change_leaves_no_event_and_a_bulk_create_one_per_user(backend) {
        let app = TestApp::spawn(backend).await;
        let before = events(&app, "user.*").await.len();
        // Would leave no active superuser: refused, rolled back, not recorded.
        let r = app.patch("/api/v1/users/1", Some(app.admin()), json!({"is_superuser": false})).await;
        r.assert_error(409, "conflict");
        // A duplicate in the batch: nothing written, nothing recorded.
        let dup = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": [
            {"email": "b1@example.com", "password": "user-password-1"},
            {"email": "B1@example.com", "password": "user-password-1"}]})).await;
        dup.assert_error(409, "email_taken");
        assert_eq!(events(&app, "user.*").await.len(), before);

        let users: Vec<Value> = (0..5).map(|i| json!({"email": format!("bulk{i}@example.com"), "password": "user-password-1"})).collect();
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        assert_eq!(r.status, 201);
        let mut created: Vec<i64> = r.body["items"].as_array().unwrap().iter().map(|u| u["id"].as_i64().unwrap()).collect();
        let mut recorded: Vec<i64> = events(&app, "user.created").await.iter()
            .filter(|e| e["details"]["via"] == "bulk").map(|e| e["target_id"].as_i64().unwrap()).collect();
        created.sort();
        recorded.sort();
        assert_eq!(recorded, created);
    }

    async fn the_trail_filters_pages_by_cursor_and_is_for_superusers(backend) {
        let app = TestApp::spawn(backend).await;
        let (uid, token) = app.regular_user("plain@example.com").await;
        for i in 0..6 {
            app.patch(&format!("/api/v1/users/{uid}"), Some(app.admin()), json!({"full_name": format!("n{i}")})).await;
        }
        app.get("/api/v1/audit", Some(&token)).await.assert_error(403, "forbidden");
        let path = format!("/api/v1/audit?target_id={uid}&action=user.updated&size=4");
        let first = app.get(&path, Some(app.admin())).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.body["size"], 4);
        let page1 = first.body["items"].as_array().unwrap().clone();
        assert_eq!(page1.len(), 4);
        let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
        let second = app.get(&format!("{path}&cursor={cursor}"), Some(app.admin())).await;
        let page2 = second.body["items"].as_array().unwrap().clone();
        assert_eq!(page2.len(), 2);
        assert_eq!(second.body["next_cursor"], Value::Null);
        let ids: Vec<i64> = page1.iter().chain(&page2).map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no repeats: {ids:?}");
        assert_eq!(page1[0]["details"]["values"]["full_name"], "n5");
        // A cursor belongs to its filters.
        app.get(&format!("/api/v1/audit?cursor={cursor}"), Some(app.admin())).await.assert_error(422, "validation_error");
        app.get("/api/v1/audit?cursor=forged.cursor", Some(app.admin())).await.assert_error(422, "validation_error");
        app.get("/api/v1/audit?action=us*", Some(app.admin())).await.assert_error(422, "validation_error");
        // Families, actors and time windows.
        let family = app.get("/api/v1/audit?action=user.*&size=100", Some(app.admin())).await;
        assert!(family.body["items"].as_array().unwrap().iter().all(|e| e["action"].as_str().unwrap().starts_with("user.")));
        let by_admin = app.get(&format!("/api/v1/audit?actor_id=1&target_id={uid}&size=100"), Some(app.admin())).await;
        assert_eq!(by_admin.body["items"].as_array().unwrap().len(), 7, "created + 6 updates");
        let at = page1[0]["at"].as_str().unwrap();
        let after = app.get(&format!("/api/v1/audit?target_id={uid}&after={}", at.replace('+', "%2B")), Some(app.admin())).await;
        assert_eq!(after.body["items"].as_array().unwrap().len(), 1);
        let before = app.get(&format!("/api/v1/audit?target_id={uid}&before={}", at.replace('+', "%2B")), Some(app.admin())).await;
        // The creation, the user's login, and five updates.
        assert_eq!(before.body["items"].as_array().unwrap().len(), 7);
    }

    async fn events_past_the_retention_are_pruned(backend) {
        let offset = Arc::new(AtomicI64::new(0));
        let options = LaunchOptions { clock: Clock::shifted(offset.clone()), ..LaunchOptions::default() };
        let app = TestApp::start(backend, TestDatabase::fresh(backend).await,
            TestApp::vars(&[("AUDIT_RETENTION_DAYS", "1")]), options).await;
        app.create_user("old@example.com", "user-password-1", false).await;
        offset.store(2 * 86_400, std::sync::atomic::Ordering::SeqCst);
        app.create_user("new@example.com", "user-password-1", false).await;
        let pruned = app.state.services.audit.prune().await.unwrap();
        assert!(pruned >= 2, "the old login and creation: {pruned}");
        let left = events(&app, "user.created").await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["details"]["email"], "new@example.com");
    }

    async fn webhooks_are_signed_retried_after_errors_and_delivered_in_order_per_user(backend) {
        let receiver = Receiver::start().await;
        receiver.fail_first(2);
        let url = receiver.url();
        let app = TestApp::spawn_with(backend, &[("WEBHOOK_URL", url.as_str()), ("WEBHOOK_SECRET", "hook-secret-1"),
            ("OUTBOX_RETRY_BASE_MS", "20"), ("OUTBOX_RETRY_MAX_SECS", "1")]).await;
        let id = app.create_user("hooked@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        for i in 0..3 {
            app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"full_name": format!("v{i}")})).await;
        }
        let accepted = receiver.wait_until(|d| d.iter().filter(|d| d.event == "user.updated").count() == 3).await;
        for d in &accepted {
            assert_eq!(d.signature, roster::webhook::signature(b"hook-secret-1", d.body.as_bytes()).unwrap());
            assert_eq!(d.content_type, "application/json");
            let event = d.json();
            assert_eq!(event["id"].to_string(), d.delivery);
            assert_eq!(event["action"], d.event);
        }
        // Each was refused twice first, and the same delivery id came again.
        let all = receiver.all();
        let first = &accepted[0].delivery;
        assert_eq!(all.iter().filter(|d| &d.delivery == first).count(), 3);
        // In event order for the user, and the same events the trail shows.
        let names: Vec<String> = accepted.iter().filter(|d| d.json()["target_id"] == id)
            .map(|d| d.json()["details"]["values"]["full_name"].as_str().unwrap_or("created").to_string()).collect();
        assert_eq!(names, ["created", "v0", "v1", "v2"]);
        let trail = events(&app, "user.updated").await;
        assert_eq!(trail[0]["id"].to_string(), accepted.iter().rev().find(|d| d.event == "user.updated").unwrap().delivery);
        let metrics = app.get("/metrics", None).await.text;
        assert!(metrics.contains("outbox_failed_attempts_total{topic=\"webhook\"}"), "{metrics}");
        assert!(metrics.contains("outbox_attempt_microseconds_total{topic=\"webhook\"}"));
        assert!(metrics.contains("outbox_topic_pending_messages{topic=\"webhook\"}"), "{metrics}");
    }

    async fn a_bulk_of_a_thousand_users_reaches_the_receiver_once_each_and_kinds_filter(backend) {
        let receiver = Receiver::start().await;
        let url = receiver.url();
        let app = TestApp::spawn_with(backend, &[("WEBHOOK_URL", url.as_str()), ("WEBHOOK_SECRET", "hook-secret-1"),
            ("WEBHOOK_EVENTS", "user.created")]).await;
        let users: Vec<Value> = (0..1000).map(|i| json!({"email": format!("k{i}@example.com"), "password": "user-password-1"})).collect();
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        assert_eq!(r.status, 201);
        // Not selected by WEBHOOK_EVENTS: never delivered.
        app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let accepted = receiver.wait_until(|d| d.len() >= 1001).await;
        let mut targets: Vec<i64> = accepted.iter().map(|d| d.json()["target_id"].as_i64().unwrap()).collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), 1001);
        assert!(accepted.iter().all(|d| d.event == "user.created"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.store.outbox_counts().await.unwrap().pending > 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And the first superuser's creation at start-up: nothing else was delivered.
        assert_eq!(receiver.accepted().len(), 1001);
    }
}
