use crate::helpers::{Backend, TestApp};

const COMMITTED: &str = include_str!("../../openapi/openapi.json");

#[test]
fn committed_spec_matches_what_the_code_generates() {
    assert!(
        roster::api::spec_json() == COMMITTED,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn served_spec_is_byte_identical_to_the_committed_file() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text == COMMITTED,
        "served spec differs from openapi/openapi.json"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app.get("/docs", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("swagger"), "not the Swagger UI page");
}

#[test]
fn every_spec_operation_declares_bearer_auth_or_is_public_by_design() {
    let spec: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    assert_eq!(
        spec["components"]["securitySchemes"]["BearerAuth"]["scheme"],
        "bearer"
    );
    let public = [
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/register",
        "/api/v1/auth/password-reset",
        "/api/v1/auth/password-reset/confirm",
        "/api/v1/auth/verify-email",
        "/api/v1/auth/verify-email/resend",
        "/api/v1/auth/accept-invite",
        "/account/reset-password",
        "/account/verify-email",
        "/account/accept-invite",
        "/",
        "/favicon.ico",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
    ];
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let secured = op.get("security").is_some();
            assert_eq!(secured, !public.contains(&path.as_str()), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_root_sends_browsers_to_the_docs_and_there_is_no_favicon_error() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = app.send_raw(client.get(app.url("/"))).await;
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/docs"));
    let icon = app.get("/favicon.ico", None).await;
    assert_eq!(icon.status, 204);
    assert!(icon.text.is_empty());
}

/// The spec documents itself: every operation described, every response described, an
/// example for every JSON body in and out, and only the errors an operation can answer.
#[test]
fn every_operation_is_described_with_examples_and_its_own_errors() {
    let spec: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    let schemas = &spec["components"]["schemas"];
    let has_example = |media: &serde_json::Value| {
        let schema = &media["schema"];
        let named = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map(|name| &schemas[name]);
        media.get("example").is_some()
            || schema.get("example").is_some()
            || named.is_some_and(|s| s.get("example").is_some())
            || schema["type"] == "string"
    };
    let mut problems = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let name = format!("{method} {path}");
            if op["summary"].as_str().is_none_or(str::is_empty)
                || op["description"].as_str().is_none_or(str::is_empty)
            {
                problems.push(format!("{name}: no summary or description"));
            }
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (ct, media) in content {
                    if !has_example(media) {
                        problems.push(format!("{name}: request {ct} has no example"));
                    }
                }
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if response["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{name} {status}: no description"));
                }
                if status.starts_with('2')
                    && let Some(content) = response["content"].as_object()
                {
                    for (ct, media) in content {
                        if !has_example(media) {
                            problems.push(format!("{name} {status}: {ct} has no example"));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let codes = |path: &str, method: &str| -> Vec<String> {
        spec["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let login = codes("/api/v1/auth/login", "post");
    assert!(
        !login.contains(&"404".into()) && !login.contains(&"409".into()),
        "{login:?}"
    );
    let dashboard = codes("/api/v1/dashboard/stats", "get");
    for never in ["405", "409", "413", "415", "422"] {
        assert!(!dashboard.contains(&never.to_string()), "{dashboard:?}");
    }
    assert!(codes("/api/v1/users/{id}", "get").contains(&"404".into()));
    assert!(codes("/health", "get").iter().all(|c| c != "429"));
    let details = &schemas["ErrorBody"]["properties"]["details"];
    assert!(details["oneOf"].is_array(), "details is typed: {details}");
}
