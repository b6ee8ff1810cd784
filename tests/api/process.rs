//! The real binary's logs and signal handling.

use serde_json::{Value, json};

use crate::helpers::RosterProcess;

const PASSWORD: &str = "very-secret-admin-pw";
const JWT_SECRET: &str = "jwt-secret-that-must-never-be-logged-0123";

/// A server whose secrets are known, so the test can look for them in its log.
fn start_server(dir: &tempfile::TempDir, extra: &[(&str, &str)]) -> RosterProcess {
    let db = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut env = vec![
        ("DATABASE_URL", db.as_str()),
        ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
        ("FIRST_SUPERUSER_PASSWORD", PASSWORD),
        ("JWT_SECRET", JWT_SECRET),
        ("RUST_LOG", "trace"),
    ];
    env.extend_from_slice(extra);
    RosterProcess::start(dir.path(), &env)
}

fn access_line(v: &Value, request_id: &str) -> bool {
    v["request_id"] == request_id && v["target"] == "roster::access"
}

#[tokio::test]
async fn access_lines_carry_request_fields_and_no_secret_is_ever_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(&dir, &[("SLOW_REQUEST_MS", "60000")]);
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", server.base))
        .header("x-request-id", "log-login")
        .json(&json!({"email": "root@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap().to_string();
    let refresh = login["refresh_token"].as_str().unwrap().to_string();
    let me = client
        .get(format!("{}/api/v1/users/me", server.base))
        .bearer_auth(&access)
        .header("x-request-id", "log-me")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    client
        .post(format!("{}/api/v1/auth/refresh", server.base))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/api/v1/users", server.base))
        .bearer_auth(&access)
        .json(&json!({"email": "new@example.com", "password": "another-secret-pw"}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/api/v1/auth/login", server.base))
        .header("x-request-id", "log-wrong")
        .json(&json!({"email": "root@example.com", "password": "wrong-secret-pw"}))
        .send()
        .await
        .unwrap();

    let line = server.wait_for(|v| access_line(v, "log-me"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/v1/users/me");
    assert_eq!(line["status_code"], 200);
    assert!(line["duration_ms"].as_f64().is_some());
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["user_id"], 1);
    // A line logged while a request is served carries the request's id too.
    let security = server.wait_for(|v| v["target"] == "security" && v["request_id"] == "log-wrong");
    assert_eq!(security["level"], "WARN");
    assert_eq!(security["event"], "login.failed");
    server.drain();
    assert_eq!(server.terminate().code(), Some(0));
    server.drain();

    let all = server.seen.join("\n");
    for secret in [
        PASSWORD,
        JWT_SECRET,
        access.as_str(),
        refresh.as_str(),
        "another-secret-pw",
        "wrong-secret-pw",
        "argon2id",
    ] {
        assert!(!all.contains(secret), "a secret reached the log: {secret}");
    }
    assert!(
        !all.to_lowercase().contains("bearer ey"),
        "an Authorization header reached the log"
    );
}

#[tokio::test]
async fn slow_requests_are_logged_at_warn() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(&dir, &[("SLOW_REQUEST_MS", "0")]);
    reqwest::Client::new()
        .get(format!("{}/health/live", server.base))
        .header("x-request-id", "log-slow")
        .send()
        .await
        .unwrap();
    let line = server.wait_for(|v| access_line(v, "log-slow"));
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["status_code"], 200);
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(&dir, &[("RUST_LOG", "info")]);
    assert_eq!(
        reqwest::get(format!("{}/health/live", server.base))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.terminate().code(), Some(0));
    server.drain();
    let all = server.seen.join("\n");
    assert!(all.contains("shutdown signal received"), "{all}");
    assert!(all.contains("roster stopped"), "{all}");
    assert!(
        reqwest::get(format!("{}/health/live", server.base))
            .await
            .is_err()
    );
}

/// The newcomer's path with the default `log` transport: ask for a reset of the printed
/// admin, copy the link from the log, set a password on the page, log in with it.
#[tokio::test]
async fn with_the_log_transport_a_reset_link_is_printed_and_completes_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("new.db").display());
    let mut server = RosterProcess::start(dir.path(), &[("DATABASE_URL", db.as_str())]);
    let client = reqwest::Client::new();
    let r = client
        .post(server.url("/api/v1/auth/password-reset"))
        .json(&json!({"email": "admin@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mail = server.wait_for(|v| v["target"] == "roster::mail");
    assert_eq!(mail["level"], "INFO");
    let text = mail["fields"]["message"]
        .as_str()
        .or(mail["message"].as_str())
        .unwrap_or_default()
        .to_string();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/account/reset-password?token="))
        .unwrap_or_else(|| panic!("no link in the logged mail: {mail}"))
        .to_string();
    // PUBLIC_URL defaults to http:// + the bound address.
    assert!(
        link.starts_with(&format!("{}/account/", server.base)),
        "{link}"
    );
    let token = link.split("token=").nth(1).unwrap().to_string();
    let page = client
        .get(server.url(&format!("/account/reset-password?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let done = client
        .post(server.url("/account/reset-password"))
        .form(&[
            ("token", token.as_str()),
            ("password", "my-own-admin-pw"),
            ("confirm_password", "my-own-admin-pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let login = client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": "my-own-admin-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
}
