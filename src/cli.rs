//! The command line: `roster [serve|migrate|create-superuser|openapi]`.

use std::{collections::HashMap, io::Write};

use clap::{Parser, Subcommand};

use crate::{
    api, app,
    auth::PasswordHasher,
    config::Settings,
    healthcheck,
    seed::{self, SeedOptions},
    service::{Clock, ServiceError, Services, keys},
    store, telemetry,
};

const ENVIRONMENT_HELP: &str = "\
Configuration comes from the environment (and a .env file); the main variables:
  DATABASE_URL      sqlite://roster.db (default), sqlite::memory:, postgres://…
  BIND_ADDR         127.0.0.1:8000
  JWT_SECRET        generated once and stored in the database when unset
  FIRST_SUPERUSER_EMAIL / FIRST_SUPERUSER_PASSWORD
  ALLOW_REGISTRATION, REQUIRE_EMAIL_VERIFICATION
  MAIL_TRANSPORT (log|smtp), SMTP_URL, MAIL_FROM, PUBLIC_URL
  WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_EVENTS, AUDIT_RETENTION_DAYS
  LOG_FORMAT (pretty|json), RUST_LOG
The README lists every variable with its default.";

#[derive(Debug, Parser)]
#[command(
    name = "roster",
    version,
    about = "Self-hosted user-management REST API",
    long_about = None,
    after_help = ENVIRONMENT_HELP
)]
pub struct Cli {
    /// Overrides DATABASE_URL (sqlite://PATH, sqlite::memory:, postgres://…) for `roster`
    /// without a command (= serve).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Overrides BIND_ADDR (HOST:PORT) for `roster` without a command (= serve).
    #[arg(long)]
    pub bind: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The database a command works on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Database {
    /// Overrides DATABASE_URL (sqlite://PATH, sqlite::memory:, postgres://…).
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve {
        #[command(flatten)]
        db: Database,
        /// Overrides BIND_ADDR (HOST:PORT).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: Database,
    },
    /// Create an active superuser.
    CreateSuperuser {
        #[command(flatten)]
        db: Database,
        #[arg(long)]
        email: String,
        /// The password; else ROSTER_PASSWORD; else asked for on the terminal.
        #[arg(long, env = "ROSTER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Replace the stored JWT signing key; tokens signed with the old one keep working
    /// until they expire (one ACCESS_TOKEN_TTL_SECS). Restart running servers afterwards.
    RotateJwtSecret {
        #[command(flatten)]
        db: Database,
    },
    /// Exit 0 if a running server answers 200 on /health/ready, 1 otherwise (for Docker).
    Healthcheck {
        /// Default: /health/ready on BIND_ADDR (a wildcard address is probed on loopback).
        #[arg(long)]
        url: Option<String>,
    },
    /// Copy a SQLite database to FILE while it may be served (consistent; checked with
    /// integrity_check). On PostgreSQL use pg_dump.
    Backup {
        #[command(flatten)]
        db: Database,
        /// A new file for the copy.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Replace the SQLite database with a backup (refused while a server holds the file).
    Restore {
        #[command(flatten)]
        db: Database,
        /// The backup to restore.
        #[arg(long)]
        from: std::path::PathBuf,
    },
    /// Insert realistic TEST data fast (benchmarks, demos). Every seeded user gets the
    /// password "seeded-password", from one hash computed once: never use on real data.
    Seed {
        #[command(flatten)]
        db: Database,
        /// How many users to insert.
        #[arg(long)]
        users: u64,
        /// Share of superusers, in percent (0 to 100).
        #[arg(long, default_value_t = 2.0, value_parser = percent)]
        superusers_pct: f64,
        /// Share of inactive users, in percent (0 to 100).
        #[arg(long, default_value_t = 10.0, value_parser = percent)]
        inactive_pct: f64,
        /// Spread creation times over this many days before now.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// A share in percent, 0 to 100.
fn percent(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{raw}` is not a percentage from 0 to 100")),
    }
}

/// Runs the command; `Err` holds the message for stderr and means exit code 1.
pub async fn run(cli: Cli) -> Result<(), String> {
    if cli.command.is_some() && (cli.database_url.is_some() || cli.bind.is_some()) {
        return Err(
            "--database-url and --bind go after the command they are for, e.g. `roster migrate --database-url …`"
                .into(),
        );
    }
    let command = cli.command.unwrap_or(Command::Serve {
        db: Database {
            database_url: cli.database_url,
        },
        bind: cli.bind,
    });
    if let Command::Openapi = command {
        print!("{}", api::spec_json());
        return std::io::stdout().flush().map_err(|e| e.to_string());
    }
    let mut overrides = HashMap::new();
    let (db, bind) = match &command {
        Command::Serve { db, bind } => (Some(db), bind.clone()),
        Command::Migrate { db }
        | Command::CreateSuperuser { db, .. }
        | Command::RotateJwtSecret { db }
        | Command::Backup { db, .. }
        | Command::Restore { db, .. }
        | Command::Seed { db, .. } => (Some(db), None),
        Command::Openapi | Command::Healthcheck { .. } => (None, None),
    };
    if let Some(url) = db.and_then(|d| d.database_url.clone()) {
        overrides.insert("DATABASE_URL", url);
    }
    if let Some(bind) = bind {
        overrides.insert("BIND_ADDR", bind);
    }
    if let Command::Healthcheck { url: Some(url) } = &command {
        return probe(url);
    }
    let _ = dotenvy::dotenv();
    let settings = Settings::from_lookup(&|name| {
        overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    })
    .map_err(|errors| format!("invalid configuration:\n{errors}"))?;
    if let Command::Healthcheck { .. } = command {
        return probe(&healthcheck::default_url(settings.bind_addr));
    }
    let _log = telemetry::init(settings.log_format);
    match command {
        Command::Serve { .. } => serve(settings).await,
        Command::Migrate { .. } => migrate(settings).await,
        Command::CreateSuperuser {
            email, password, ..
        } => create_superuser(settings, &email, password).await,
        Command::Seed {
            users,
            superusers_pct,
            inactive_pct,
            days,
            ..
        } => {
            let options = SeedOptions {
                users,
                superusers_pct,
                inactive_pct,
                days,
            };
            seed_users(settings, &options).await
        }
        Command::RotateJwtSecret { .. } => rotate_jwt_secret(settings).await,
        Command::Backup { to, .. } => backup(&settings, &to),
        Command::Restore { from, .. } => restore(&settings, &from),
        Command::Openapi | Command::Healthcheck { .. } => Ok(()),
    }
}

fn probe(url: &str) -> Result<(), String> {
    healthcheck::check(url).map_err(|reason| format!("unhealthy: {reason}"))?;
    println!("ready: {url} answered 200");
    Ok(())
}

async fn serve(settings: Settings) -> Result<(), String> {
    let _owner = own(&settings, "roster serve")?;
    let bind_addr = settings.bind_addr;
    // Bind first: a bootstrap admin whose password could not be shown would lock users out.
    let acceptor = app::bind(bind_addr)
        .await
        .map_err(|e| format!("cannot listen on {bind_addr}: {e}"))?;
    let launched = app::launch(
        settings,
        acceptor,
        app::LaunchOptions::default(),
        shutdown_signal(),
    )
    .await?;
    let local = launched.addr;
    if let Some(admin) = &launched.bootstrap {
        println!(
            "\n  Created the first superuser (shown once):\n    email:    {}\n    password: {}\n  Sign in at http://{local}/admin to manage users (the API: http://{local}/docs),\n  and change it.\n",
            admin.email, admin.password
        );
    }
    let operations = &launched.state.services.operations;
    tracing::info!(addr = %local, backend = operations.backend(), "roster listening");
    launched
        .server
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    operations.close().await;
    tracing::info!("roster stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

async fn migrate(settings: Settings) -> Result<(), String> {
    let store = open_store(&settings).await?;
    let report = store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    if report.applied.is_empty() {
        println!("Schema is up to date (version {}).", report.current_version);
    } else {
        println!(
            "Applied migrations {:?}; schema is now at version {}.",
            report.applied, report.current_version
        );
    }
    Ok(())
}

async fn open_store(settings: &Settings) -> Result<std::sync::Arc<dyn store::UserStore>, String> {
    store::connect(&settings.database_url, settings.db_pool_size)
        .await
        .map_err(|e| e.to_string())
}

async fn seed_users(settings: Settings, options: &SeedOptions) -> Result<(), String> {
    let _owner = own(&settings, "roster seed")?;
    let store = open_store(&settings).await?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let hasher = PasswordHasher::new(&settings.argon2)?;
    let (count, took) = seed::seed(store.as_ref(), &hasher, options).await?;
    let secs = took.as_secs_f64();
    println!(
        "Seeded {count} users in {secs:.1} s ({:.0} users/s; password: {}).",
        count as f64 / secs.max(0.001),
        seed::SEED_PASSWORD
    );
    store.close().await;
    Ok(())
}

/// The SQLite file of the configuration, when it is one.
fn sqlite_file(settings: &Settings) -> Option<&std::path::Path> {
    match &settings.database_url {
        #[cfg(feature = "sqlite")]
        crate::config::DatabaseUrl::Sqlite(crate::config::SqliteLocation::File(path)) => {
            Some(path.as_path())
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Holds the SQLite file for a command that must be alone on it (serve, seed, restore);
/// nothing to hold for PostgreSQL or an in-memory database.
fn own(settings: &Settings, what: &str) -> Result<Option<Box<dyn std::any::Any>>, String> {
    #[cfg(feature = "sqlite")]
    if let Some(path) = sqlite_file(settings) {
        return Ok(Some(Box::new(store::sqlite_files::claim(path, what)?)));
    }
    let _ = (settings, what);
    Ok(None)
}

const PG_DUMP_HINT: &str = "on PostgreSQL use its own tools: pg_dump --format=custom --file=roster.dump \"$DATABASE_URL\", and pg_restore --clean --dbname=\"$DATABASE_URL\" roster.dump";

fn backup(settings: &Settings, to: &std::path::Path) -> Result<(), String> {
    let Some(db) = sqlite_file(settings) else {
        return Err(format!("roster backup copies SQLite files; {PG_DUMP_HINT}"));
    };
    #[cfg(feature = "sqlite")]
    {
        let copied = store::sqlite_files::backup(db, to)?;
        println!(
            "Backed up {} to {} ({} users, schema version {}; integrity_check: ok).",
            db.display(),
            to.display(),
            copied.users,
            copied.schema_version
        );
        Ok(())
    }
    #[cfg(not(feature = "sqlite"))]
    {
        let _ = (db, to);
        Err(PG_DUMP_HINT.into())
    }
}

fn restore(settings: &Settings, from: &std::path::Path) -> Result<(), String> {
    let Some(db) = sqlite_file(settings) else {
        return Err(format!(
            "roster restore replaces SQLite files; {PG_DUMP_HINT}"
        ));
    };
    #[cfg(feature = "sqlite")]
    {
        let owner = store::sqlite_files::claim(db, "roster restore")?;
        let copied = store::sqlite_files::restore(from, db, &owner)?;
        println!(
            "Restored {} from {} ({} users, schema version {}).",
            db.display(),
            from.display(),
            copied.users,
            copied.schema_version
        );
        Ok(())
    }
    #[cfg(not(feature = "sqlite"))]
    {
        let _ = (db, from);
        Err(PG_DUMP_HINT.into())
    }
}

async fn rotate_jwt_secret(settings: Settings) -> Result<(), String> {
    let store = open_store(&settings).await?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let rotated = keys::rotate(&settings, &store, chrono::Utc::now()).await;
    store.close().await;
    let rotated = rotated?;
    match rotated.old_kid {
        Some(old) => println!(
            "Rotated the JWT signing key: {old} -> {}. Tokens signed with {old} verify until {}; restart running servers to sign with the new key.",
            rotated.new_kid,
            rotated.old_verifies_until.to_rfc3339()
        ),
        None => println!("Stored a new JWT signing key {}.", rotated.new_kid),
    }
    Ok(())
}

async fn create_superuser(
    settings: Settings,
    email: &str,
    password: Option<String>,
) -> Result<(), String> {
    let password = match password {
        Some(p) => p,
        None => rpassword::prompt_password("Password for the new superuser: ").map_err(|e| {
            format!("cannot read a password (use --password or ROSTER_PASSWORD): {e}")
        })?,
    };
    let store = open_store(&settings).await?;
    let services = Services::start(&settings, store, Clock::system()).await?;
    let created = services.users.create_superuser(email, &password).await;
    services.operations.close().await;
    match created {
        Ok(true) => {
            println!("Created superuser {}.", email.trim());
            Ok(())
        }
        Ok(false) => Err(format!("a user with email {} already exists", email.trim())),
        Err(ServiceError::Invalid(errors)) => Err(errors
            .iter()
            .map(|e| match e.field.as_str() {
                "email" => format!("--email: {}", e.message),
                field => format!("{field}: {}", e.message),
            })
            .collect::<Vec<_>>()
            .join("; ")),
        Err(e) => Err(e.to_string()),
    }
}
