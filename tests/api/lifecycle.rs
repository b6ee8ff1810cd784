//! Start-up: the bootstrap admin, migrations across restarts.

use roster::app::LaunchOptions;
use serde_json::json;

use crate::helpers::{TestApp, TestDatabase, backend_tests};

backend_tests! {
    async fn an_empty_database_gets_a_printed_admin_who_can_log_in(backend) {
        let app = TestApp::spawn_with(backend, &[("FIRST_SUPERUSER_EMAIL", ""), ("FIRST_SUPERUSER_PASSWORD", "")]).await;
        let admin = app.bootstrap.as_ref().expect("bootstrap admin created on an empty database");
        assert_eq!(admin.email, "admin@example.com");
        assert!(admin.password.len() >= 16);
        let token = app.token_for(&admin.email, &admin.password).await;
        let me = app.get("/api/v1/users/me", Some(&token)).await;
        assert_eq!((me.body["is_superuser"].as_bool(), me.body["is_active"].as_bool()), (Some(true), Some(true)));
        // A restart over the same, no longer empty, database creates nobody.
        let again = app.restart().await;
        assert!(again.bootstrap.is_none());
        assert_eq!(again.store.count_users().await.unwrap(), 1);
    }

    async fn a_database_holding_users_gets_no_bootstrap_admin(backend) {
        // Users, but none called admin@example.com: only "any user at all?" keeps it out.
        let app = TestApp::spawn(backend).await;
        app.create_user("someone@example.com", "password-123", false).await;
        let again = app.restart_with(&[("FIRST_SUPERUSER_EMAIL", ""), ("FIRST_SUPERUSER_PASSWORD", "")]).await;
        assert!(again.bootstrap.is_none());
        assert_eq!(again.store.count_users().await.unwrap(), 2);
        let r = again.get("/api/v1/users?search=admin@example.com", Some(app.admin())).await;
        assert_eq!(r.body["total"], 0);
    }

    async fn a_configured_first_superuser_replaces_the_bootstrap_admin(backend) {
        let app = TestApp::spawn(backend).await;
        assert!(app.bootstrap.is_none());
        let r = app.get("/api/v1/users?search=admin@example.com", Some(app.admin())).await;
        assert_eq!(r.body["total"], 0);
    }

    async fn restarts_keep_data_and_migrations_are_idempotent(backend) {
        let app = TestApp::spawn(backend).await;
        let created = app.create_user("keep@example.com", "password-123", false).await;
        let report = app.store.migrate().await.unwrap();
        assert!(report.applied.is_empty(), "nothing left to apply: {report:?}");
        let again = app.restart().await;
        let r = again.get(&format!("/api/v1/users/{}", created["id"]), Some(again.admin())).await;
        assert_eq!(r.body, created);
        assert_eq!(again.store.count_users().await.unwrap(), 2);
        let login = again.post("/api/v1/auth/login", None, json!({"email": "keep@example.com", "password": "password-123"})).await;
        assert_eq!(login.status, 200);
    }

    async fn two_instances_starting_at_once_on_an_empty_database_migrate_once(backend) {
        let database = TestDatabase::fresh(backend).await;
        let vars = TestApp::vars(&[]);
        let (a, b) = tokio::join!(
            TestApp::start(backend, database.clone(), vars.clone(), LaunchOptions::default()),
            TestApp::start(backend, database.clone(), vars, LaunchOptions::default())
        );
        assert!(a.store.migrate().await.unwrap().applied.is_empty());
        assert!(b.store.migrate().await.unwrap().applied.is_empty());
        // Both agreed on one signing key and one superuser.
        assert_eq!(a.store.count_users().await.unwrap(), 1);
        let secret = a.store.get_or_insert_setting("jwt_secret", "other".into()).await.unwrap();
        assert_eq!(b.store.get_or_insert_setting("jwt_secret", "third".into()).await.unwrap(), secret);
    }
}
