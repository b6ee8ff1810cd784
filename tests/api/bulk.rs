//! `POST /api/v1/users/bulk`: one transaction, all or nothing.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, TestApp, backend_tests};

fn item(email: &str) -> Value {
    json!({"email": email, "password": "password-123", "full_name": format!("Name {email}")})
}

async fn count(app: &TestApp) -> u64 {
    app.store.count_users().await.unwrap()
}

backend_tests! {
    async fn bulk_creates_every_user_in_order(backend) {
        let app = TestApp::spawn(backend).await;
        let users: Vec<Value> = (0..25).map(|i| item(&format!("bulk{i}@example.com"))).collect();
        let mut users = users;
        users[3]["is_superuser"] = json!(true);
        users[4]["is_active"] = json!(false);
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["created"], 25);
        let items = r.body["items"].as_array().unwrap();
        let emails: Vec<&str> = items.iter().map(|u| u["email"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..25).map(|i| format!("bulk{i}@example.com")).collect();
        assert_eq!(emails, expected);
        assert_eq!((items[3]["is_superuser"].as_bool(), items[4]["is_active"].as_bool()), (Some(true), Some(false)));
        assert!(!r.text.contains("argon2"));
        assert_eq!(count(&app).await, 26);
        // The stored users are real: readable, and able to log in with their password.
        let stored = app.get(&format!("/api/v1/users/{}", items[7]["id"]), Some(app.admin())).await;
        assert_eq!(stored.body, items[7]);
        app.token_for("bulk7@example.com", "password-123").await;
        let stats = app.get("/api/v1/dashboard/stats", Some(app.admin())).await.body;
        assert_eq!((stats["total_users"].as_u64(), stats["superusers"].as_u64()), (Some(26), Some(2)));
    }

    async fn every_invalid_item_is_reported_with_its_index_and_nothing_is_written(backend) {
        let app = TestApp::spawn(backend).await;
        let users = json!([
            item("ok1@example.com"),
            {"email": "not-an-email", "password": "password-123"},
            item("ok2@example.com"),
            {"email": "short@example.com", "password": "short", "full_name": "x".repeat(300)},
            item(ADMIN_EMAIL),
        ]);
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        r.assert_error(422, "validation_error");
        let details: Vec<(u64, String)> = r.body["details"].as_array().unwrap().iter()
            .map(|d| (d["index"].as_u64().unwrap(), d["field"].as_str().unwrap().to_string())).collect();
        assert_eq!(details, [(1, "email".into()), (3, "password".into()), (3, "full_name".into())]);
        assert_eq!(count(&app).await, 1, "validation comes before uniqueness, and nothing is written");
    }

    async fn wrong_json_types_in_items_carry_their_index(backend) {
        let app = TestApp::spawn(backend).await;
        let users = json!([item("a@example.com"), {"email": 3, "password": "password-123"}, {"password": "password-123"}]);
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        r.assert_error(422, "validation_error");
        let details = r.body["details"].as_array().unwrap();
        assert_eq!(details.len(), 2, "{}", r.text);
        assert_eq!((details[0]["index"].as_u64(), details[0]["field"].as_str()), (Some(1), Some("email")));
        assert_eq!((details[1]["index"].as_u64(), details[1]["field"].as_str()), (Some(2), Some("email")));
        assert_eq!(count(&app).await, 1);
    }

    async fn every_duplicate_email_is_reported_and_nothing_is_written(backend) {
        let app = TestApp::spawn(backend).await;
        app.create_user("exists@example.com", "password-123", false).await;
        let users = json!([
            item("fresh@example.com"),
            item("EXISTS@example.com"),
            item("twice@example.com"),
            item("Twice@Example.com"),
            item("other@example.com"),
        ]);
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        r.assert_error(409, "email_taken");
        assert_eq!(r.body["details"]["emails"], json!(["EXISTS@example.com", "Twice@Example.com"]));
        assert_eq!(count(&app).await, 2);
        let fresh = roster::domain::Email::parse("fresh@example.com").unwrap();
        assert!(app.store.find_credentials_by_email(&fresh).await.unwrap().is_none());
    }

    async fn an_empty_or_oversized_batch_is_422(backend) {
        let app = TestApp::spawn_with(backend, &[("BULK_MAX_USERS", "3")]).await;
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": []})).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["users"]);
        let four: Vec<Value> = (0..4).map(|i| item(&format!("u{i}@example.com"))).collect();
        app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": four})).await.assert_error(422, "validation_error");
        let three: Vec<Value> = (0..3).map(|i| item(&format!("u{i}@example.com"))).collect();
        assert_eq!(app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": three})).await.status, 201);
        app.post("/api/v1/users/bulk", Some(app.admin()), json!({})).await.assert_error(422, "validation_error");
    }

    async fn bulk_is_for_superusers_only(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, token) = app.regular_user("pleb@example.com").await;
        app.post("/api/v1/users/bulk", Some(&token), json!({"users": [item("x@example.com")]})).await.assert_error(403, "forbidden");
        app.post("/api/v1/users/bulk", None, json!({"users": [item("x@example.com")]})).await.assert_error(401, "unauthorized");
        assert_eq!(count(&app).await, 2);
    }
}
