//! Faults: concurrent writers, a killed process, a full disk, a read-only file.

use std::{process::Command, time::Duration};

use serde_json::{Value, json};

use crate::helpers::{RosterProcess, TestApp, backend_tests};

backend_tests! {
    async fn eight_concurrent_bulk_writers_and_readers_all_succeed(backend) {
        let app = TestApp::spawn(backend).await;
        let writers = (0..8).map(|w| {
            let users: Vec<Value> = (0..50).map(|i| json!({"email": format!("w{w}u{i}@example.com"), "password": "password-123"})).collect();
            app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users}))
        });
        let readers = (0..8).map(|_| app.get("/api/v1/users?search=example&size=100", Some(app.admin())));
        let (written, read) = tokio::join!(futures_util::future::join_all(writers), futures_util::future::join_all(readers));
        for r in &written {
            assert_eq!(r.status, 201, "{}", r.text);
        }
        for r in &read {
            assert_eq!(r.status, 200, "{}", r.text);
        }
        assert_eq!(app.store.count_users().await.unwrap(), 401);
    }
}

fn count_users(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn kill_9_during_a_bulk_load_leaves_only_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["seed", "--users", "400000"])
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("ARGON2_MEMORY_KIB", "8")
        .env("ARGON2_ITERATIONS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill mid-way: after some batches have committed, while another is being written.
    let mut waited = Duration::ZERO;
    while waited < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
        if db.exists() && std::panic::catch_unwind(|| count_users(&db)).is_ok_and(|n| n >= 20_000) {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let users = count_users(&db);
    assert!(users > 0 && users < 400_000, "killed mid-way: {users}");
    assert_eq!(
        users % 10_000,
        0,
        "a batch was left half-written: {users} users"
    );
    let indexed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM users_search WHERE users_search MATCH '\"example\"'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        indexed, users,
        "the search index holds exactly the committed rows"
    );
}

#[test]
fn a_read_only_database_file_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ro.db");
    let url = format!("sqlite://{}", db.display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    for leftover in ["ro.db-wal", "ro.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(leftover));
    }
    if let Some(reason) = needs_root("making a file immutable with chattr") {
        eprintln!("{reason}");
        return;
    }
    let locked = Command::new("chattr")
        .args(["+i", db.to_str().unwrap()])
        .status()
        .expect("chattr (e2fsprogs) runs");
    if !locked.success() {
        eprintln!("skipped: this file system does not support immutable files (chattr +i)");
        return;
    }
    let out = run(&["migrate"]);
    let _ = Command::new("chattr")
        .args(["-i", db.to_str().unwrap()])
        .status();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("ro.db")
            && (err.contains("readonly") || err.contains("read-only") || err.contains("cannot")),
        "{err}"
    );
}

#[tokio::test]
async fn a_full_disk_gives_503_and_reads_keep_working() {
    if let Some(reason) = needs_root("mounting a small tmpfs") {
        eprintln!("{reason}");
        return;
    }
    let mount = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1536k",
            "tmpfs",
            mount.path().to_str().unwrap(),
        ])
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let url = format!("sqlite://{}", mount.path().join("full.db").display());
    let server = RosterProcess::start(
        mount.path(),
        &[
            ("DATABASE_URL", url.as_str()),
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "full-disk-pw-1"),
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    );
    let client = reqwest::Client::new();
    let login: Value = client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "root@example.com", "password": "full-disk-pw-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    let mut full = None;
    for batch in 0..200 {
        let users: Vec<Value> = (0..200).map(|i| json!({"email": format!("b{batch}u{i}@example.com"), "password": "password-123", "full_name": "x".repeat(200)})).collect();
        let r = client
            .post(server.url("/api/v1/users/bulk"))
            .bearer_auth(&token)
            .json(&json!({"users": users}))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => continue,
            status => {
                full = Some((status, r.json::<Value>().await.unwrap()));
                break;
            }
        }
    }
    let (status, body) = full.expect("the disk filled up");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "service_unavailable");
    let me = client
        .get(server.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "reads keep working on a full disk");
    let page = client
        .get(server.url("/api/v1/users?size=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}

/// `Some(reason to print)` when this process is not root, so a root-only fault test is
/// skipped with a stated reason instead of failing (CI and developer machines run as root).
fn needs_root(what: &str) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    (!root).then(|| format!("skipped: {what} needs root, and this test runs as another user"))
}
