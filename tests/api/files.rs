//! A SQLite file as the CLI handles it: one server owns it, a backup is a consistent copy
//! taken under load, a restore puts one back (never under a running server).

use serde_json::json;

use crate::{cli::roster, helpers::RosterProcess};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn serve(dir: &std::path::Path, db: &str) -> RosterProcess {
    RosterProcess::start(
        dir,
        &[
            ("DATABASE_URL", db),
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "root-password-1"),
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    )
}

async fn admin_token(client: &reqwest::Client, server: &RosterProcess) -> String {
    let login: serde_json::Value = client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "root@example.com", "password": "root-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_served_file_refuses_a_second_server_a_seed_and_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("owned.db").display());
    let mut server = serve(dir.path(), &db);
    for args in [
        &["serve"][..],
        &["seed", "--users", "5"],
        &["restore", "--from", "x.db"],
    ] {
        let out = roster(dir.path(), &db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("owned.db is in use by roster serve (pid "),
            "{args:?}: {err}"
        );
    }
    // Commands that share the file with a server are fine.
    assert!(roster(dir.path(), &db, &["migrate"]).status.success());
    assert_eq!(server.terminate().code(), Some(0));
    let seeded = roster(dir.path(), &db, &["seed", "--users", "5"]);
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));
}

#[tokio::test]
async fn a_backup_under_write_load_is_consistent_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("live.db").display());
    let mut server = serve(dir.path(), &db);
    let client = reqwest::Client::new();
    let token = admin_token(&client, &server).await;
    // Writers keep creating users while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, token, stop) = (client.clone(), token.clone(), stop.clone());
            let url = server.url("/api/v1/users");
            tokio::spawn(async move {
                let mut created = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"email": format!("w{w}-{created}@example.com"), "password": "user-password-1"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    created += 1;
                }
                created
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let backup_path = dir.path().join("copy.db");
    let (d, b, to) = (
        dir.path().to_path_buf(),
        db.clone(),
        backup_path.display().to_string(),
    );
    let out = tokio::task::spawn_blocking(move || roster(&d, &b, &["backup", "--to", &to]))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("integrity_check: ok"),
        "{}",
        text(&out.stdout)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "a backup holds password hashes");
    }
    let copy = rusqlite::Connection::open(&backup_path).unwrap();
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let in_copy: i64 = copy
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .unwrap();
    drop(copy);
    assert!(
        in_copy >= 1 && in_copy <= 1 + written as i64,
        "{in_copy} of {written}"
    );
    // A second backup to the same file is refused; the first is untouched.
    let again = roster(
        dir.path(),
        &db,
        &["backup", "--to", &backup_path.display().to_string()],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already exists"));

    assert_eq!(server.terminate().code(), Some(0));
    let restored = roster(
        dir.path(),
        &db,
        &["restore", "--from", &backup_path.display().to_string()],
    );
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    assert!(text(&restored.stdout).contains(&format!("{in_copy} users")));
    let server = serve(dir.path(), &db);
    let token = admin_token(&client, &server).await;
    let page: serde_json::Value = client
        .get(server.url("/api/v1/users?size=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"].as_i64(), Some(in_copy));
}

#[test]
fn restore_refuses_what_is_not_a_roster_backup_and_postgres_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("target.db").display());
    std::fs::write(dir.path().join("junk.db"), b"not a database").unwrap();
    let out = roster(dir.path(), &db, &["restore", "--from", "junk.db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a"), "{}", text(&out.stderr));
    let out = roster(
        dir.path(),
        "postgres://localhost/roster",
        &["backup", "--to", "x.dump"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pg_dump"),
        "{}",
        text(&out.stderr)
    );
}
