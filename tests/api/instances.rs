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
    // B caches a list page; A's rename shows in B's next page.
    let listed = |body: Value| body["items"][0]["full_name"].clone();
    assert_eq!(
        listed(c.get(&c.b, "/api/v1/users?search=shared").await),
        "Name 19"
    );
    for round in 0..5 {
        let name = format!("Listed {round}");
        c.write(
            &c.a,
            reqwest::Method::PATCH,
            &path,
            json!({"full_name": name}),
        )
        .await;
        assert_eq!(
            listed(c.get(&c.b, "/api/v1/users?search=shared").await),
            name.as_str(),
            "round {round}: B served a stale list page"
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

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn concurrent_readers_on_one_instance_never_see_a_write_older_than_the_last_completed() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let c = Cluster::start().await;
    let created = c
        .write(
            &c.a,
            reqwest::Method::POST,
            "/api/v1/users",
            json!({"email": "hot@example.com", "password": "password-123", "full_name": "0"}),
        )
        .await;
    let path = format!("/api/v1/users/{}", created["id"]);
    // The highest version whose write had returned to the client.
    let completed = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let reader = || async {
        let mut reads = 0u64;
        while !done.load(Ordering::SeqCst) {
            let floor = completed.load(Ordering::SeqCst);
            let seen: u64 = c.get(&c.b, &path).await["full_name"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap();
            assert!(
                seen >= floor,
                "B answered version {seen} after version {floor} had been written"
            );
            reads += 1;
        }
        reads
    };
    let writer = async {
        for version in 1..=60u64 {
            c.write(
                &c.a,
                reqwest::Method::PATCH,
                &path,
                json!({"full_name": version.to_string()}),
            )
            .await;
            completed.store(version, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
    };
    let readers = futures_util::future::join_all((0..16).map(|_| reader()));
    let (reads, ()) = tokio::join!(readers, writer);
    let reads: u64 = reads.iter().sum();
    assert!(
        reads > 100,
        "the readers overlapped the writes ({reads} reads)"
    );
}

/// The value of an unlabelled counter in a Prometheus exposition.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn cached_reads_share_sequence_reads() {
    let c = Cluster::start().await;
    let metrics = || async {
        c.client
            .get(c.b.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = metrics().await;
    // Many clients at once, so that reads are shared even on a loaded machine (the share
    // follows how many requests arrive while one sequence read is in flight).
    let client = || async {
        for _ in 0..5 {
            c.get(&c.b, "/api/v1/dashboard/stats").await;
        }
    };
    futures_util::future::join_all((0..256).map(|_| client())).await;
    let after = metrics().await;
    let delta = |name| counter(&after, name) - counter(&before, name);
    let (requests, reads) = (
        delta("coherence_barrier_requests_total"),
        delta("coherence_barrier_reads_total"),
    );
    eprintln!("{requests} cached reads, {reads} sequence reads");
    assert!(
        requests >= 1280,
        "every cached read asks the barrier ({requests})"
    );
    // Unshared, every cached read would be a sequence read; a loaded CI machine shared
    // 3.8 per read with 64 clients, an idle one 9-26.
    assert!(
        reads * 3 <= requests,
        "{reads} sequence reads for {requests} cached reads: reads are not shared"
    );
    assert!(counter(&after, "coherence_barrier_wait_microseconds_total") > 0);
}

impl Cluster {
    /// A fresh login of the cluster's superuser through `on`: a new session.
    async fn login(&self, on: &RosterProcess) -> Value {
        self.client
            .post(on.url("/api/v1/auth/login"))
            .json(&json!({"email": "root@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn me_status(&self, on: &RosterProcess, pair: &Value) -> u16 {
        self.client
            .get(on.url("/api/v1/users/me"))
            .bearer_auth(pair["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn logout(&self, on: &RosterProcess, pair: &Value) {
        let r = self
            .client
            .post(on.url("/api/v1/auth/logout"))
            .json(&json!({"refresh_token": pair["refresh_token"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn a_session_ended_through_one_instance_is_refused_by_the_other_on_the_next_request() {
    let c = Cluster::start().await;
    for round in 0..10 {
        let pair = c.login(&c.a).await;
        // B has checked (and cached) the session.
        assert_eq!(c.me_status(&c.b, &pair).await, 200, "round {round}");
        assert_eq!(c.me_status(&c.b, &pair).await, 200, "round {round}");
        if round % 2 == 0 {
            c.logout(&c.a, &pair).await;
        } else {
            // A refresh, then a replay of the spent token: a reuse ends the session.
            for expected in [200, 401] {
                let r = c
                    .client
                    .post(c.a.url("/api/v1/auth/refresh"))
                    .json(&json!({"refresh_token": pair["refresh_token"]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), expected, "round {round}");
            }
        }
        assert_eq!(
            c.me_status(&c.b, &pair).await,
            401,
            "round {round}: B accepted a token of a session A had ended"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn without_its_listener_an_instance_checks_sessions_in_the_database() {
    let mut c = Cluster::start().await;
    let pair = c.login(&c.a).await;
    assert_eq!(c.me_status(&c.b, &pair).await, 200);
    assert_eq!(c.me_status(&c.b, &pair).await, 200);
    assert_eq!(c.kill_listeners().await, 2);
    // Ended while B cannot hear about it: B must not trust its cached session.
    c.logout(&c.a, &pair).await;
    assert_eq!(
        c.me_status(&c.b, &pair).await,
        401,
        "B trusted a stale session"
    );
    let said = |text: &'static str| {
        move |v: &Value| v["message"].as_str().is_some_and(|m| m.contains(text))
    };
    c.b.wait_for(said("listener connected"));
    assert_eq!(c.me_status(&c.b, &pair).await, 401);
    let fresh = c.login(&c.a).await;
    assert_eq!(c.me_status(&c.b, &fresh).await, 200);
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn the_failure_limit_of_an_account_holds_across_instances() {
    let c = Cluster::start().await;
    let attempt = |on: &RosterProcess, password: &str| {
        c.client
            .post(on.url("/api/v1/auth/login"))
            .json(&json!({"email": "root@example.com", "password": password}))
            .send()
    };
    // LOGIN_MAX_FAILURES (10) split over both instances.
    for i in 0..10 {
        let on = if i % 2 == 0 { &c.a } else { &c.b };
        let r = attempt(on, "wrong-guess-1").await.unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    for on in [&c.a, &c.b] {
        let r = attempt(on, PASSWORD).await.unwrap();
        assert_eq!(r.status(), 429, "the count is shared");
        assert!(r.headers().contains_key("retry-after"));
    }
}
