//! Spawns a real Roster on a random port over a fresh database, and speaks HTTP to it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use poem::Route;
use reqwest::{Method, header::HeaderMap};
use roster::{
    app::{self, BootstrapAdmin, LaunchOptions},
    config::Settings,
    service::Clock,
    state::AppState,
    store::UserStore,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's database lives; removed with the last app using it.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<TempDir>,
    /// Server URL and name of a database created for this test alone.
    postgres: Option<(String, String)>,
}

pub const POSTGRES_URL_VAR: &str = "TEST_POSTGRES_URL";

impl TestDatabase {
    pub async fn fresh(backend: Backend) -> Arc<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("roster.db").display());
                Arc::new(Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let server = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
                    panic!("{POSTGRES_URL_VAR} must name a PostgreSQL server for this test")
                });
                let name = format!("roster_test_{}", uuid::Uuid::new_v4().simple());
                postgres_admin(&server, &format!("CREATE DATABASE \"{name}\"")).await;
                let url = with_database(&server, &name);
                Arc::new(Self {
                    url,
                    _dir: None,
                    postgres: Some((server, name)),
                })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((server, name)) = self.postgres.take() {
            // Drop runs inside the test's runtime; the clean-up gets a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(postgres_admin(
                    &server,
                    &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                ));
            })
            .join();
        }
    }
}

#[cfg(feature = "postgres")]
async fn postgres_admin(server: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {server} ({POSTGRES_URL_VAR}): {e}")
        });
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[cfg(not(feature = "postgres"))]
async fn postgres_admin(_server: &str, _sql: &str) {
    panic!("PostgreSQL tests need the `postgres` feature");
}

/// `base` with its database name replaced by `database`.
fn with_database(base: &str, database: &str) -> String {
    let (main, query) = base
        .split_once('?')
        .map_or((base, None), |(m, q)| (m, Some(q)));
    let host_start = main.find("://").map_or(0, |i| i + 3);
    let root = main[host_start..]
        .find('/')
        .map_or(main, |i| &main[..host_start + i]);
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: Arc<AppState>,
    /// The store under the app (wrapped as the test asked), to check what was written.
    pub store: Arc<dyn UserStore>,
    pub bootstrap: Option<BootstrapAdmin>,
    pub database: Arc<TestDatabase>,
    pub backend: Backend,
    vars: HashMap<String, String>,
    admin_token: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Cheap hashing and a known superuser, so tests are fast and can log in.
fn default_vars() -> HashMap<String, String> {
    [
        ("ARGON2_MEMORY_KIB", "8"),
        ("ARGON2_ITERATIONS", "1"),
        ("ARGON2_PARALLELISM", "1"),
        ("FIRST_SUPERUSER_EMAIL", ADMIN_EMAIL),
        ("FIRST_SUPERUSER_PASSWORD", ADMIN_PASSWORD),
        ("JWT_SECRET", JWT_SECRET),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("RATE_LIMIT_ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the SPEC error body: code, a message, and the request id of the header.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.body["error"], code,
            "unexpected error code; body: {}",
            self.text
        );
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {}",
            self.text
        );
        let request_id = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(
            self.body["request_id"], request_id,
            "request id in body and header differ"
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "error is not JSON: {:?}",
            self.header("content-type")
        );
    }

    /// The `field` names listed in a validation error's details.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// With configuration `overrides` (see `spawn_custom`).
    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        Self::spawn_options(backend, overrides, LaunchOptions::default()).await
    }

    /// A second server over the same database, as after a restart.
    pub async fn restart(&self) -> Self {
        self.restart_with(&[]).await
    }

    /// A server over a fresh database with configuration `overrides` and `options`.
    async fn spawn_options(
        backend: Backend,
        overrides: &[(&str, &str)],
        options: LaunchOptions,
    ) -> Self {
        Self::start(
            backend,
            TestDatabase::fresh(backend).await,
            Self::vars(overrides),
            options,
        )
        .await
    }

    /// Like `spawn_with`, with the store wrapped by `wrap` (to observe or break it).
    pub async fn spawn_wrapped(
        backend: Backend,
        overrides: &[(&str, &str)],
        wrap: impl FnOnce(Arc<dyn UserStore>) -> Arc<dyn UserStore> + Send + 'static,
    ) -> Self {
        Self::spawn_custom(backend, overrides, wrap, Route::new()).await
    }

    /// Like `spawn_with`, with the service's clock fixed at `now`.
    pub async fn spawn_at(backend: Backend, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self::spawn_with_clock(backend, &[], Clock::fixed(now)).await
    }

    /// Like `spawn_with`, with the service reading `clock`.
    pub async fn spawn_with_clock(
        backend: Backend,
        overrides: &[(&str, &str)],
        clock: Clock,
    ) -> Self {
        let options = LaunchOptions {
            clock,
            ..LaunchOptions::default()
        };
        Self::spawn_options(backend, overrides, options).await
    }

    /// A second server over the same database with configuration `overrides` on top of
    /// this one's, as after a restart with changed settings.
    pub async fn restart_with(&self, overrides: &[(&str, &str)]) -> Self {
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        Self::start(
            self.backend,
            self.database.clone(),
            vars,
            LaunchOptions::default(),
        )
        .await
    }

    /// The most general form: wrapped store and extra routes inside every middleware layer.
    /// `overrides` set or (with an empty value) unset configuration variables.
    pub async fn spawn_custom(
        backend: Backend,
        overrides: &[(&str, &str)],
        wrap: impl FnOnce(Arc<dyn UserStore>) -> Arc<dyn UserStore> + Send + 'static,
        extra_routes: Route,
    ) -> Self {
        let options = LaunchOptions {
            wrap_store: Some(Box::new(wrap)),
            extra_routes,
            ..LaunchOptions::default()
        };
        Self::spawn_options(backend, overrides, options).await
    }

    /// The test configuration with `overrides` applied (an empty value unsets).
    pub fn vars(overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars = default_vars();
        for (k, v) in overrides {
            if v.is_empty() {
                vars.remove(*k);
            } else {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        vars
    }

    /// Starts a server over `database` through the same `app::launch` as `roster serve`.
    pub async fn start(
        backend: Backend,
        database: Arc<TestDatabase>,
        mut vars: HashMap<String, String>,
        mut options: LaunchOptions,
    ) -> Self {
        vars.insert("DATABASE_URL".into(), database.url.clone());
        let settings = Settings::from_map(&vars).expect("test settings are valid");
        let store_handle: Arc<std::sync::Mutex<Option<Arc<dyn UserStore>>>> = Arc::default();
        let wrap = options.wrap_store.take();
        let keep = store_handle.clone();
        options.wrap_store = Some(Box::new(move |store| {
            let store = match wrap {
                Some(wrap) => wrap(store),
                None => store,
            };
            *keep.lock().unwrap() = Some(store.clone());
            store
        }));
        let acceptor = app::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let (tx, rx) = oneshot::channel::<()>();
        let launched = app::launch(settings, acceptor, options, async {
            let _ = rx.await;
        })
        .await
        .expect("app starts");
        let store = store_handle
            .lock()
            .unwrap()
            .take()
            .expect("the store was opened");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut app = Self {
            base: format!("http://{}", launched.addr),
            client,
            state: launched.state,
            store,
            bootstrap: launched.bootstrap,
            database,
            backend,
            vars,
            admin_token: None,
            shutdown: Some(tx),
            server: Some(launched.server),
        };
        if app.vars.contains_key("FIRST_SUPERUSER_EMAIL") {
            app.admin_token = Some(
                app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        app
    }

    /// Starts a graceful shutdown, as SIGTERM does; returns the server task to await.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("the server is running")
    }

    pub fn admin(&self) -> &str {
        self.admin_token
            .as_deref()
            .expect("this app has a configured superuser")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.expect("request sent")).await
    }

    pub async fn send_raw(&self, req: reqwest::RequestBuilder) -> Resp {
        into_resp(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::DELETE, path, token, None).await
    }

    /// Logs in and returns the token response, asserting success.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let r = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(r.status, 200, "login failed: {}", r.text);
        r.body
    }

    pub async fn token_for(&self, email: &str, password: &str) -> String {
        self.login(email, password).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a user through the API as the admin; returns its JSON.
    pub async fn create_user(&self, email: &str, password: &str, superuser: bool) -> Value {
        let r = self
            .post(
                "/api/v1/users",
                Some(self.admin()),
                json!({"email": email, "password": password, "is_superuser": superuser}),
            )
            .await;
        assert_eq!(r.status, 201, "create failed: {}", r.text);
        r.body
    }

    /// A regular user and their access token.
    pub async fn regular_user(&self, email: &str) -> (i64, String) {
        let user = self.create_user(email, "user-password-1", false).await;
        (
            user["id"].as_i64().unwrap(),
            self.token_for(email, "user-password-1").await,
        )
    }
}

async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

/// Generates each test once per backend compiled in, with the same body:
/// `async fn name(backend) { let app = TestApp::spawn(backend).await; … }`.
/// PostgreSQL tests are `#[ignore]`d (listed as not run) unless TEST_POSTGRES_URL was set
/// when the tests were built; `postgres_tests_are_not_skipped_in_ci` fails CI if so.
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block )*) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test]
                async fn $name() {
                    let $backend = $crate::helpers::Backend::Sqlite;
                    $body
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test]
                #[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests")]
                async fn $name() {
                    let $backend = $crate::helpers::Backend::Postgres;
                    $body
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

/// A `roster serve` process of the built binary, its JSON log read line by line.
pub struct RosterProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub base: String,
}

#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
impl RosterProcess {
    /// Starts on a random port with cheap hashing and JSON logs; `env` adds or overrides.
    pub fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.current_dir(dir)
            .env_clear()
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("ARGON2_MEMORY_KIB", "8")
            .env("ARGON2_ITERATIONS", "1")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("roster starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            lines,
            seen: Vec::new(),
            base: String::new(),
        };
        let listening = process.wait_for(|v| {
            v["message"] == "roster listening" || v["fields"]["message"] == "roster listening"
        });
        let addr = listening
            .get("addr")
            .or_else(|| listening["fields"].get("addr"))
            .and_then(Value::as_str)
            .expect("addr");
        process.base = format!("http://{addr}");
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next JSON log line matching `pred` (every line read is kept in `seen`).
    pub fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
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

    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.seen.push(line);
        }
    }

    /// Sends SIGTERM and waits (at most 5 s) for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("roster did not stop within 5 s of SIGTERM");
    }
}

impl Drop for RosterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
