//! Several `roster serve` processes on one PostgreSQL database stay coherent.
#![cfg(feature = "postgres")]

use serde_json::{Value, json};

use crate::helpers::{Backend, POSTGRES_URL_VAR, RosterProcess, TestDatabase};

const PASSWORD: &str = "cluster-admin-pw";

fn start(dir: &tempfile::TempDir, database: &TestDatabase) -> RosterProcess {
    RosterProcess::start(
        dir.path(),
        &[
            ("DATABASE_URL", database.url.as_str()),
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", PASSWORD),
            ("JWT_SECRET", "shared-secret-of-the-cluster-0123456789"),
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    )
}

struct Cluster {
    a: RosterProcess,
    b: RosterProcess,
    client: reqwest::Client,
    token: String,
    database: std::sync::Arc<TestDatabase>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let database = TestDatabase::fresh(Backend::Postgres).await;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (start(&dir, &database), start(&dir, &database));
        let client = reqwest::Client::new();
        let login: Value = client
            .post(a.url("/api/v1/auth/login"))
            .json(&json!({"email": "root@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_string();
        Self {
            a,
            b,
            client,
            token,
            database,
            _dir: dir,
        }
    }

    async fn get(&self, on: &RosterProcess, path: &str) -> Value {
        let r = self
            .client
            .get(on.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn write(
        &self,
        on: &RosterProcess,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Value {
        let r = self
            .client
            .request(method, on.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn listening(&self, on: &RosterProcess) -> bool {
        let health: Value = self
            .client
            .get(on.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["checks"]["cache"]["invalidation"] == "listening"
    }

    /// Kills every listener connection of this database, as a network blip would.
    async fn kill_listeners(&self) -> u64 {
        use sqlx::Connection;
        let server = std::env::var(POSTGRES_URL_VAR).unwrap();
        let name = self.database.url.rsplit('/').next().unwrap().to_string();
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'roster-cache-listener'",
        )
        .bind(name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        killed.len() as u64
    }
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn a_write_through_one_instance_is_read_at_once_through_the_other() {
    let c = Cluster::start().await;
    assert!(c.listening(&c.a).await && c.listening(&c.b).await);
    let created = c
        .write(
            &c.a,
            reqwest::Method::POST,
            "/api/v1/users",
            json!({"email": "shared@example.com", "password": "password-123"}),
        )
        .await;
    let path = format!("/api/v1/users/{}", created["id"]);
    // B caches the user, and its dashboard.
    assert_eq!(c.get(&c.b, &path).await["full_name"], Value::Null);
    assert_eq!(c.get(&c.b, &path).await["full_name"], Value::Null);
    let before = c.get(&c.b, "/api/v1/dashboard/stats").await["total_users"]
        .as_u64()
        .unwrap();
    // B has applied A's notification before it answers from its cache, or it reads the
    // database: never a stale answer, however the notification races the request.
    for round in 0..20 {
        let name = format!("Name {round}");
        c.write(
            &c.a,
            reqwest::Method::PATCH,
            &path,
            json!({"full_name": name}),
        )
        .await;
        assert_eq!(
            c.get(&c.b, &path).await["full_name"],
            name.as_str(),
            "round {round}: B served a stale user"
        );
    }
    c.write(
        &c.a,
        reqwest::Method::POST,
        "/api/v1/users",
        json!({"email": "second@example.com", "password": "password-123"}),
    )
    .await;
    assert_eq!(
        c.get(&c.b, "/api/v1/dashboard/stats").await["total_users"].as_u64(),
        Some(before + 1),
        "B's dashboard missed a user created through A"
    );
    c.write(
        &c.b,
        reqwest::Method::PATCH,
        &path,
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(
        c.get(&c.a, "/api/v1/dashboard/stats").await["inactive_users"],
        1
    );
    assert_eq!(
        c.get(&c.a, &path).await["is_active"],
        false,
        "A missed a deactivation made through B"
    );
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn instances_recover_and_stay_coherent_after_the_listener_connection_is_killed() {
    let mut c = Cluster::start().await;
    let created = c
        .write(
            &c.a,
            reqwest::Method::POST,
            "/api/v1/users",
            json!({"email": "blip@example.com", "password": "password-123"}),
        )
        .await;
    let path = format!("/api/v1/users/{}", created["id"]);
    assert_eq!(c.get(&c.b, &path).await["full_name"], Value::Null);
    assert_eq!(c.kill_listeners().await, 2);
    // A write while B may be deaf: B drops its caches when it reconnects.
    c.write(
        &c.a,
        reqwest::Method::PATCH,
        &path,
        json!({"full_name": "During the blip"}),
    )
    .await;
    // B notices the lost connection, drops its caches and listens again.
    let said = |text: &'static str| {
        move |v: &Value| v["message"].as_str().is_some_and(|m| m.contains(text))
    };
    c.b.wait_for(said("listener disconnected"));
    c.b.wait_for(said("listener connected"));
    assert!(c.listening(&c.b).await, "B reports listening again");
    assert_eq!(
        c.get(&c.b, &path).await["full_name"],
        "During the blip",
        "B dropped its caches when it reconnected"
    );
    c.write(
        &c.a,
        reqwest::Method::PATCH,
        &path,
        json!({"full_name": "After the blip"}),
    )
    .await;
    assert_eq!(
        c.get(&c.b, &path).await["full_name"],
        "After the blip",
        "B listens again after the blip"
    );
    let health: Value = c
        .client
        .get(c.b.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
}
