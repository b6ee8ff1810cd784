//! `GET /api/v1/users/export`: the list's filters and sort, streamed.

use chrono::{Duration, Utc};
use roster::domain::{Email, FullName, NewUser};
use serde_json::Value;

use crate::helpers::{TestApp, backend_tests};

async fn seed_many(app: &TestApp, n: usize) {
    let start = Utc::now() - Duration::days(30);
    let users = (0..n)
        .map(|i| NewUser {
            email: Email::parse(&format!("user{i:05}@example.com")).unwrap(),
            full_name: (i % 3 != 0).then(|| FullName::parse(&format!("Name, \"{i}\"")).unwrap()),
            hashed_password: "x".into(),
            is_active: i % 4 != 0,
            is_superuser: i % 50 == 0,
            email_verified: false,
            created_at: Some(start + Duration::seconds(i as i64)),
        })
        .collect();
    app.store.create_users(users, Vec::new()).await.unwrap();
}

/// Every page of the list for `query`, concatenated.
async fn listed(app: &TestApp, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for page in 1.. {
        let r = app
            .get(
                &format!("/api/v1/users?{query}&size=100&page={page}"),
                Some(app.admin()),
            )
            .await;
        let batch = r.body["items"].as_array().unwrap().clone();
        if batch.is_empty() {
            break;
        }
        items.extend(batch);
    }
    items
}

backend_tests! {
    async fn ndjson_export_equals_the_list_for_the_same_filters(backend) {
        let app = TestApp::spawn(backend).await;
        seed_many(&app, 700).await;
        let query = "is_active=true&search=user0&sort=-email";
        let r = app.get(&format!("/api/v1/users/export?format=ndjson&{query}"), Some(app.admin())).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let exported: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let expected = listed(&app, query).await;
        assert!(expected.len() > 400, "{}", expected.len());
        assert_eq!(exported, expected);
    }

    async fn csv_export_has_the_header_and_rfc_4180_rows(backend) {
        let app = TestApp::spawn(backend).await;
        seed_many(&app, 30).await;
        let r = app.get("/api/v1/users/export?format=csv&sort=id&search=user0000", Some(app.admin())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
        let mut lines = r.text.split("\r\n");
        assert_eq!(lines.next(), Some("id,email,full_name,is_active,is_superuser,created_at,updated_at"));
        let expected = listed(&app, "sort=id&search=user0000").await;
        let rows: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.len(), expected.len());
        let second = &expected[1];
        assert_eq!(
            rows[1],
            format!(
                "{},{},\"Name, \"\"1\"\"\",{},{},{},{}",
                second["id"], second["email"].as_str().unwrap(), second["is_active"], second["is_superuser"],
                second["created_at"].as_str().unwrap(), second["updated_at"].as_str().unwrap()
            )
        );
        assert!(rows[0].contains(",,"), "a null full_name is an empty field: {}", rows[0]);
        let default = app.get("/api/v1/users/export", Some(app.admin())).await;
        assert_eq!(default.header("content-type"), Some("text/csv; charset=utf-8"));
    }

    async fn a_large_export_is_streamed_in_chunks(backend) {
        let app = TestApp::spawn(backend).await;
        seed_many(&app, 5000).await;
        let mut response = app.client.get(app.url("/api/v1/users/export?format=ndjson")).bearer_auth(app.admin()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        // A buffered answer would carry its length; a stream is sent chunked as it is produced.
        assert!(response.content_length().is_none());
        assert_eq!(response.headers().get("transfer-encoding").and_then(|v| v.to_str().ok()), Some("chunked"));
        let mut chunks = 0;
        let mut lines = 0;
        while let Some(chunk) = response.chunk().await.unwrap() {
            chunks += 1;
            lines += chunk.iter().filter(|b| **b == b'\n').count();
        }
        assert_eq!(lines, 5001);
        assert!(chunks >= 5, "{chunks} chunks");
    }

    async fn export_rejects_unknown_formats_and_non_superusers(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.get("/api/v1/users/export?format=xlsx", Some(app.admin())).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["format"]);
        let (_, token) = app.regular_user("pleb@example.com").await;
        app.get("/api/v1/users/export", Some(&token)).await.assert_error(403, "forbidden");
    }
}
