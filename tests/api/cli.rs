//! The binary as a user runs it.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use tempfile::TempDir;

/// Runs the binary with `args` on database `db`, cheap hashing and no fixed port.
pub(crate) fn roster(dir: &Path, db: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        // Never a fixed port: a developer's own server may be on the default one.
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("ARGON2_MEMORY_KIB", "8")
        .env("ARGON2_ITERATIONS", "1")
        .output()
        .expect("roster runs")
}

/// `roster serve` on the directory's database, its stdout piped, logging at `level`.
fn serve_piped(dir: &TempDir, level: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", sqlite_url(dir))
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("ARGON2_MEMORY_KIB", "8")
        .env("ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", level)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("cli.db").display())
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn openapi_prints_the_committed_spec() {
    let dir = tempfile::tempdir().unwrap();
    let out = roster(dir.path(), "sqlite::memory:", &["openapi"]);
    assert!(out.status.success());
    assert!(stdout(&out) == include_str!("../../openapi/openapi.json"));
}

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let first = roster(dir.path(), &url, &["migrate"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("Applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"),
        "{}",
        stdout(&first)
    );
    let second = roster(dir.path(), &url, &["migrate"]);
    assert!(second.status.success());
    assert!(
        stdout(&second).contains("up to date"),
        "{}",
        stdout(&second)
    );
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    assert!(roster(dir.path(), &url, &["migrate"]).status.success());
    let conn = rusqlite::Connection::open(dir.path().join("cli.db")).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    for args in [&["migrate"][..], &["serve"][..]] {
        let out = roster(dir.path(), &url, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("999 is newer"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn create_superuser_creates_once_and_refuses_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let args = [
        "create-superuser",
        "--email",
        "Ops@Example.com",
        "--password",
        "ops-password-1",
    ];
    let out = roster(dir.path(), &url, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Created superuser Ops@Example.com"));
    let again = roster(
        dir.path(),
        &url,
        &[
            "create-superuser",
            "--email",
            "ops@example.com",
            "--password",
            "ops-password-1",
        ],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));
    let short = roster(
        dir.path(),
        &url,
        &[
            "create-superuser",
            "--email",
            "x@example.com",
            "--password",
            "short",
        ],
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(stderr(&short).contains("password"));
}

#[test]
fn bad_configuration_stops_start_up_naming_each_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("migrate")
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", "mysql://nope")
        .env("DB_POOL_SIZE", "lots")
        .env("JWT_SECRET", "too-short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for var in ["DATABASE_URL:", "DB_POOL_SIZE:", "JWT_SECRET:"] {
        assert_eq!(
            err.lines().filter(|l| l.starts_with(var)).count(),
            1,
            "{var} in {err}"
        );
    }
    assert!(!err.contains("too-short"), "secrets are never echoed");
}

#[test]
fn serve_on_an_empty_database_prints_the_bootstrap_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_piped(&dir, "warn");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut email = None;
    let mut password = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(v) = line.trim().strip_prefix("email:") {
            email = Some(v.trim().to_string());
        }
        if let Some(v) = line.trim().strip_prefix("password:") {
            password = Some(v.trim().to_string());
        }
        if line.contains("/docs") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(email.as_deref(), Some("admin@example.com"));
    assert!(password.is_some_and(|p| p.len() >= 16));
}

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = roster(dir.path(), "sqlite::memory:", &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for command in [
        "serve",
        "migrate",
        "create-superuser",
        "seed",
        "openapi",
        "healthcheck",
        "backup",
        "restore",
    ] {
        assert!(help.contains(command), "--help lacks {command}: {help}");
    }
    assert!(
        help.contains("DATABASE_URL"),
        "--help names the environment: {help}"
    );
    let seed_help = stdout(&roster(dir.path(), "sqlite::memory:", &["seed", "--help"]));
    assert!(seed_help.contains("TEST data"), "{seed_help}");
    let out = roster(
        dir.path(),
        "sqlite::memory:",
        &["seed", "--users", "1", "--superusers-pct", "150"],
    );
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
    assert!(stderr(&out).contains("0 to 100"), "{}", stderr(&out));
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_ready_server_and_1_otherwise() {
    let app = crate::helpers::TestApp::spawn(crate::helpers::Backend::Sqlite).await;
    let url = app.url("/health/ready");
    let dir = tempfile::tempdir().unwrap();
    let ok = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let url = url.clone();
        move || roster(&dir, "sqlite::memory:", &["healthcheck", "--url", &url])
    })
    .await
    .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("answered 200"));
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let by_bind = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_roster"))
                .arg("healthcheck")
                .current_dir(&dir)
                .env_clear()
                .env("BIND_ADDR", format!("0.0.0.0:{port}"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(by_bind.status.code(), Some(0), "{}", stderr(&by_bind));
    let down = roster(
        dir.path(),
        "sqlite::memory:",
        &["healthcheck", "--url", "http://127.0.0.1:1/health/ready"],
    );
    assert_eq!(down.status.code(), Some(1));
    let reason = stderr(&down);
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert!(reason.contains("unhealthy: cannot connect"), "{reason}");
    let nope = app.url("/nope");
    let dir_path = dir.path().to_path_buf();
    let not_ready = tokio::task::spawn_blocking(move || {
        roster(
            &dir_path,
            "sqlite::memory:",
            &["healthcheck", "--url", &nope],
        )
    })
    .await
    .unwrap();
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(stderr(&not_ready).contains("answered 404"));
}

#[test]
fn rotate_jwt_secret_replaces_the_stored_key_and_refuses_a_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    assert!(roster(dir.path(), &url, &["migrate"]).status.success());
    let first = roster(dir.path(), &url, &["rotate-jwt-secret"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("Stored a new JWT signing key"),
        "{}",
        stdout(&first)
    );
    let second = roster(dir.path(), &url, &["rotate-jwt-secret"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("Rotated the JWT signing key"),
        "{}",
        stdout(&second)
    );
    let configured = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["rotate-jwt-secret"])
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", "configured-secret-configured-secret!!")
        .output()
        .unwrap();
    assert_eq!(configured.status.code(), Some(1));
    assert!(
        stderr(&configured).contains("JWT_PREVIOUS_SECRETS"),
        "{}",
        stderr(&configured)
    );
}

#[test]
fn logs_written_to_a_pipe_are_plain_text_with_round_durations() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_piped(&dir, "info");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("roster listening") {
            addr = line
                .split("addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_string);
        }
        seen.push(line);
        if addr.is_some() {
            break;
        }
    }
    let addr = addr.expect("a listening line");
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: roster\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("roster::access");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = seen.join("\n");
    assert!(
        !all.contains('\u{1b}'),
        "no colour codes in a redirected log: {all}"
    );
    let duration = all
        .split("duration_ms=")
        .nth(1)
        .and_then(|d| d.split_whitespace().next())
        .expect("an access line with a duration");
    let decimals = duration.split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 3, "duration_ms={duration}");
}

#[test]
fn options_belong_to_the_commands_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let migrate_help = stdout(&roster(
        dir.path(),
        "sqlite::memory:",
        &["migrate", "--help"],
    ));
    assert!(migrate_help.contains("--database-url"), "{migrate_help}");
    assert!(!migrate_help.contains("--bind"), "{migrate_help}");
    let serve_help = stdout(&roster(dir.path(), "sqlite::memory:", &["serve", "--help"]));
    assert!(serve_help.contains("--bind"), "{serve_help}");
    let openapi_help = stdout(&roster(
        dir.path(),
        "sqlite::memory:",
        &["openapi", "--help"],
    ));
    assert!(!openapi_help.contains("--database-url"), "{openapi_help}");
    // The option after its command takes effect...
    let migrated = roster(
        dir.path(),
        "sqlite::memory:",
        &["migrate", "--database-url", &url],
    );
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    assert!(dir.path().join("cli.db").exists());
    // ...and one before a command that it cannot change is refused, not ignored.
    let misplaced = roster(dir.path(), &url, &["--bind", "127.0.0.1:0", "migrate"]);
    assert_eq!(misplaced.status.code(), Some(1));
    assert!(
        stderr(&misplaced).contains("go after the command"),
        "{}",
        stderr(&misplaced)
    );
}
