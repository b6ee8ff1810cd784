//! A SQLite database as files: who owns it (one `roster serve` at a time), a consistent
//! online copy (`roster backup`), and putting a copy back (`roster restore`).

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::migrations::{SQLITE, VERSION_TABLE, latest_version};

/// Holds a database file for this process; released when dropped or when the process
/// ends, however it ends (an advisory lock on `<file>.lock`).
#[derive(Debug)]
pub struct Owner {
    _lock: File,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes ownership of `db` for `what` (e.g. `roster serve`); refuses, naming the holder,
/// when another process has it.
pub fn claim(db: &Path, what: &str) -> Result<Owner, String> {
    let path = lock_path(db);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut lock = options
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if let Err(e) = lock.try_lock() {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        let holder = match holder.trim() {
            "" => "another process".to_string(),
            named => named.to_string(),
        };
        return Err(match e {
            fs::TryLockError::WouldBlock => format!(
                "{} is in use by {holder}: a SQLite database is served by one roster at a time; stop it first",
                db.display()
            ),
            fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", path.display()),
        });
    }
    lock.set_len(0)
        .and_then(|()| write!(lock, "{what} (pid {})", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Owner { _lock: lock })
}

fn open_read_only(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// A Roster database that passes `integrity_check`, with its schema version and users.
fn inspect(path: &Path) -> Result<(i64, u64), String> {
    let conn = open_read_only(path)?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("{} is not a SQLite database: {e}", path.display()))?;
    if check != "ok" {
        return Err(format!("{} fails integrity_check: {check}", path.display()));
    }
    let version: Option<i64> = conn
        .query_row(
            &format!("SELECT MAX(version) FROM {VERSION_TABLE}"),
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|_| format!("{} is not a Roster database", path.display()))?
        .flatten();
    let version = version.ok_or_else(|| format!("{} is not a Roster database", path.display()))?;
    let users: i64 = conn
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .map_err(|_| format!("{} is not a Roster database", path.display()))?;
    Ok((version, u64::try_from(users).unwrap_or(0)))
}

/// Creates an empty file readable by its owner only (a copy holds password hashes).
fn create_private(path: &Path) -> Result<File, String> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{} already exists; choose a new file", path.display())
        }
        _ => format!("cannot create {}: {e}", path.display()),
    })
}

/// What a backup or restore copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub users: u64,
    pub schema_version: i64,
}

/// A consistent copy of `db` at `to`, taken while it may be served (one read transaction,
/// `VACUUM INTO`), then checked with `integrity_check`.
pub fn backup(db: &Path, to: &Path) -> Result<Copied, String> {
    if !db.exists() {
        return Err(format!("{} does not exist", db.display()));
    }
    create_private(to)?;
    let copy = (|| {
        let conn = open_read_only(db)?;
        let target = to
            .to_str()
            .ok_or_else(|| format!("{} is not a UTF-8 path", to.display()))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(|e| format!("backup failed: {e}"))?;
        let (schema_version, users) = inspect(to)?;
        Ok(Copied {
            users,
            schema_version,
        })
    })();
    if copy.is_err() {
        let _ = fs::remove_file(to);
    }
    copy
}

/// Replaces `db` with the checked copy `from`. The caller owns `db` (no server runs on it).
pub fn restore(from: &Path, db: &Path, _owner: &Owner) -> Result<Copied, String> {
    let (schema_version, users) = inspect(from)?;
    let known = latest_version(SQLITE);
    if schema_version > known {
        return Err(format!(
            "{} has schema version {schema_version}, newer than this binary knows ({known})",
            from.display()
        ));
    }
    let mut staging = db.as_os_str().to_owned();
    staging.push(".restoring");
    let staging = PathBuf::from(staging);
    let _ = fs::remove_file(&staging);
    let mut target = create_private(&staging)?;
    let result = (|| {
        let mut source =
            File::open(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        std::io::copy(&mut source, &mut target)
            .and_then(|_| target.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", staging.display()))?;
        // The old database's journal must not be replayed onto the restored file.
        for suffix in ["-wal", "-shm"] {
            let mut side = db.as_os_str().to_owned();
            side.push(suffix);
            match fs::remove_file(PathBuf::from(side)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove the old journal: {e}")),
            }
        }
        fs::rename(&staging, db).map_err(|e| format!("cannot replace {}: {e}", db.display()))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&staging);
        return Err(e);
    }
    Ok(Copied {
        users,
        schema_version,
    })
}
