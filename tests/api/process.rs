//! The real binary's logs and signal handling.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::{Value, json};

const PASSWORD: &str = "very-secret-admin-pw";
const JWT_SECRET: &str = "jwt-secret-that-must-never-be-logged-0123";

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    base: String,
}

impl Server {
    fn start(dir: &tempfile::TempDir, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("p.db").display()),
            )
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("ARGON2_MEMORY_KIB", "8")
            .env("ARGON2_ITERATIONS", "1")
            .env("FIRST_SUPERUSER_EMAIL", "root@example.com")
            .env("FIRST_SUPERUSER_PASSWORD", PASSWORD)
            .env("JWT_SECRET", JWT_SECRET)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            seen: Vec::new(),
            base: String::new(),
        };
        let listening = server.wait_for(|v| {
            v["fields"]["message"] == "roster listening" || v["message"] == "roster listening"
        });
        let addr = listening
            .get("addr")
            .or_else(|| listening["fields"].get("addr"))
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        server.base = format!("http://{addr}");
        server
    }

    /// The next JSON log line matching `pred` (all lines read are kept in `seen`).
    fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("a log line in time");
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && pred(&v)
            {
                return v;
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.seen.push(line);
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("roster did not stop within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn access_line(v: &Value, request_id: &str) -> bool {
    v["request_id"] == request_id && v["target"] == "roster::access"
}

#[tokio::test]
async fn access_lines_carry_request_fields_and_no_secret_is_ever_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir, &[("SLOW_REQUEST_MS", "60000")]);
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
    let mut server = Server::start(&dir, &[("SLOW_REQUEST_MS", "0")]);
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
    let mut server = Server::start(&dir, &[("RUST_LOG", "info")]);
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
