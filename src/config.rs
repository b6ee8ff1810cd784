//! Typed settings from the environment (and `.env`), validated once at start-up.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

pub use crate::secret::Secret;

/// Where an SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    File(PathBuf),
    Memory,
}

/// Where the data lives, chosen by the scheme of DATABASE_URL. Only the backends compiled
/// into this build exist, so a URL for a missing one is refused here, once, naming the
/// cargo feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteLocation),
    #[cfg(feature = "postgres")]
    Postgres(Secret),
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://roster.db";
pub const DEFAULT_MAIL_FROM: &str = "Roster <no-reply@localhost>";

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("sqlite:") {
            let location = if rest == ":memory:" || rest == "//:memory:" {
                SqliteLocation::Memory
            } else {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err("sqlite URL has no file path (expected sqlite://PATH)".into());
                }
                SqliteLocation::File(PathBuf::from(path))
            };
            #[cfg(feature = "sqlite")]
            return Ok(Self::Sqlite(location));
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = location;
                return Err(not_compiled_in("sqlite"));
            }
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            return Ok(Self::Postgres(Secret::new(raw)));
            #[cfg(not(feature = "postgres"))]
            return Err(not_compiled_in("postgres"));
        }
        Err(format!(
            "unknown scheme in `{}` (expected sqlite://PATH, sqlite::memory: or postgres://…)",
            raw.split("://").next().unwrap_or(raw)
        ))
    }
}

/// The one message for a backend this build lacks.
#[allow(dead_code)] // unused when both backends are compiled in
fn not_compiled_in(backend: &str) -> String {
    format!(
        "the {backend} backend is not compiled into this build; rebuild with `--features {backend}`"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// CACHE_ENABLED, DASHBOARD_CACHE_TTL, USER_CACHE_TTL, CACHE_MAX_ENTRIES: what the caches
/// need, and nothing else.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub dashboard_ttl: Duration,
    pub user_ttl: Duration,
    pub max_entries: u64,
}

/// RATE_LIMIT_ENABLED, RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST, LOGIN_RATE_LIMIT_PER_MINUTE.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_second: u32,
    pub burst: u32,
    pub login_per_minute: u32,
}

/// How mail leaves: MAIL_TRANSPORT and SMTP_URL.
#[derive(Debug, Clone)]
pub enum MailTransport {
    Log,
    Smtp(Secret),
}

/// Everything the account-lifecycle mails and their outbox need.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub transport: MailTransport,
    /// MAIL_FROM, checked to be a mailbox.
    pub from: String,
    /// PUBLIC_URL without a trailing slash: the base of links in mails. Unset, it is
    /// `http://` + the address the server is bound to (known once bound: BIND_ADDR may
    /// name port 0).
    pub public_url: Option<String>,
    pub password_reset_ttl: Duration,
    pub email_verify_ttl: Duration,
    pub invite_ttl: Duration,
    /// OUTBOX_RETRY_BASE_MS / OUTBOX_RETRY_MAX_SECS: the first retry's delay, doubling up to
    /// the cap.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_EVENTS and AUDIT_RETENTION_DAYS.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub retention: Duration,
    /// Where events are POSTed, signed with the secret; `None`: no webhooks.
    pub webhook: Option<WebhookTarget>,
    /// Event kinds delivered: exact names, `prefix.*`, or `*`.
    pub webhook_events: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub bind_addr: SocketAddr,
    pub db_pool_size: u32,
    pub jwt_secret: Option<Secret>,
    /// Keys still accepted for verification (JWT_PREVIOUS_SECRETS).
    pub jwt_previous_secrets: Vec<Secret>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_max_lifetime: Duration,
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
    pub hash_concurrency: usize,
    pub hash_queue_max: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub cache: CacheSettings,
    pub request_timeout: Duration,
    pub rate_limit: RateLimitSettings,
    pub trust_proxy_headers: bool,
    pub max_body_bytes: usize,
    pub bulk_max_users: usize,
    pub slow_request: Duration,
    pub log_format: LogFormat,
    pub allow_registration: bool,
    pub require_email_verification: bool,
    pub first_superuser_email: Option<String>,
    pub first_superuser_password: Option<Secret>,
    pub argon2: Argon2Cost,
    pub mail: MailSettings,
    pub audit: AuditSettings,
}

/// The machine's cores: the default of HASH_CONCURRENCY.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Every bad variable found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads variables one by one and remembers every failure instead of stopping at the first.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T>(
        &mut self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match self.raw(name) {
            None => default,
            Some(value) => match parse(value.trim()) {
                Ok(v) => v,
                Err(why) => {
                    let shown = if is_sensitive(name) {
                        String::new()
                    } else {
                        format!(" (got `{}`)", value.trim())
                    };
                    self.errors.push(format!("{name}: {why}{shown}"));
                    default
                }
            },
        }
    }

    fn number<T>(&mut self, name: &str, default: T, min: T) -> T
    where
        T: std::str::FromStr + PartialOrd + Copy + fmt::Display,
    {
        self.parsed(name, default, |v| match v.parse::<T>() {
            Ok(n) if n >= min => Ok(n),
            Ok(_) => Err(format!("must be at least {min}")),
            Err(_) => Err("not a valid whole number".into()),
        })
    }

    fn seconds(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(self.number(name, default, 1))
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        self.parsed(name, default, parse_bool)
    }
}

/// Values of these variables may hold credentials and are never echoed back.
fn is_sensitive(name: &str) -> bool {
    name.contains("SECRET")
        || name.contains("PASSWORD")
        || name == "DATABASE_URL"
        || name == "SMTP_URL"
}

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

impl Settings {
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|name| vars.get(name).cloned())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
        };
        if lookup("DATABASE_URL").is_some_and(|v| v.trim().is_empty()) {
            r.errors.push(
                "DATABASE_URL: is set but empty; unset it for the default sqlite://roster.db"
                    .into(),
            );
        }
        let database_url = r.parsed("DATABASE_URL", None, |v| DatabaseUrl::parse(v).map(Some));
        let database_url = match database_url {
            Some(url) => Some(url),
            None if r.raw("DATABASE_URL").is_some() => None, // already reported
            None => DatabaseUrl::parse(DEFAULT_DATABASE_URL)
                .map_err(|why| r.errors.push(format!("DATABASE_URL: not set, and {why}")))
                .ok(),
        };
        let bind_addr = r.parsed("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)), |v| {
            // An address, or a name such as localhost:8000 (its first address).
            v.parse().or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(v)
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| "expected HOST:PORT, e.g. 127.0.0.1:8000".to_string())
            })
        });
        let db_pool_size = r.number("DB_POOL_SIZE", 5u32, 1);
        let jwt_secret = r.parsed("JWT_SECRET", None, |v| {
            if v.len() >= 32 {
                Ok(Some(Secret::new(v)))
            } else {
                Err(format!("must be at least 32 bytes, has {}", v.len()))
            }
        });
        let jwt_previous_secrets = r.parsed("JWT_PREVIOUS_SECRETS", Vec::new(), |v| {
            v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| {
                    if k.len() >= 32 {
                        Ok(Secret::new(k))
                    } else {
                        Err(format!(
                            "every key must be at least 32 bytes, one has {}",
                            k.len()
                        ))
                    }
                })
                .collect()
        });
        let access_token_ttl = r.seconds("ACCESS_TOKEN_TTL_SECS", 1800);
        let refresh_token_ttl = r.seconds("REFRESH_TOKEN_TTL_SECS", 1_209_600);
        let session_max_lifetime = r.seconds("SESSION_MAX_LIFETIME_SECS", 2_592_000);
        let login_max_failures = r.number("LOGIN_MAX_FAILURES", 10u32, 1);
        let login_failure_window = r.seconds("LOGIN_FAILURE_WINDOW_SECS", 900);
        let hash_concurrency = r.number("HASH_CONCURRENCY", cores(), 1);
        let hash_queue_max = r.number("HASH_QUEUE_MAX", 64usize, 0);
        let header_read_timeout = r.seconds("HEADER_READ_TIMEOUT_SECS", 10);
        let idle_timeout = r.seconds("IDLE_TIMEOUT_SECS", 60);
        let cache_enabled = r.flag("CACHE_ENABLED", true);
        let dashboard_cache_ttl = r.seconds("DASHBOARD_CACHE_TTL", 60);
        let user_cache_ttl = r.seconds("USER_CACHE_TTL", 300);
        let cache_max_entries = r.number("CACHE_MAX_ENTRIES", 100_000u64, 1);
        let request_timeout =
            r.parsed(
                "REQUEST_TIMEOUT_SECS",
                Duration::from_secs(30),
                |v| match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                        Ok(Duration::from_secs_f64(s))
                    }
                    _ => Err("expected a number of seconds above 0".into()),
                },
            );
        let rate_limit_enabled = r.flag("RATE_LIMIT_ENABLED", true);
        let rate_limit_per_second = r.number("RATE_LIMIT_PER_SECOND", 100u32, 1);
        let rate_limit_burst = r.number("RATE_LIMIT_BURST", 200u32, 1);
        let login_rate_limit_per_minute = r.number("LOGIN_RATE_LIMIT_PER_MINUTE", 10u32, 1);
        let trust_proxy_headers = r.flag("TRUST_PROXY_HEADERS", false);
        let max_body_bytes = r.number("MAX_BODY_BYTES", 1_048_576usize, 1);
        let bulk_max_users = r.number("BULK_MAX_USERS", 1000usize, 1);
        let slow_request = Duration::from_millis(r.number("SLOW_REQUEST_MS", 500u64, 0));
        let log_format = r.parsed("LOG_FORMAT", LogFormat::Pretty, |v| {
            match v.to_ascii_lowercase().as_str() {
                "pretty" => Ok(LogFormat::Pretty),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected pretty or json".into()),
            }
        });
        let allow_registration = r.flag("ALLOW_REGISTRATION", false);
        let require_email_verification = r.flag("REQUIRE_EMAIL_VERIFICATION", false);
        let first_superuser_email = r.raw("FIRST_SUPERUSER_EMAIL").map(|v| v.trim().to_string());
        let first_superuser_password = r.raw("FIRST_SUPERUSER_PASSWORD").map(Secret::new);
        if first_superuser_email.is_some() != first_superuser_password.is_some() {
            r.errors.push(
                "FIRST_SUPERUSER_EMAIL / FIRST_SUPERUSER_PASSWORD: set both or neither".into(),
            );
        }
        let argon2 = Argon2Cost {
            memory_kib: r.number("ARGON2_MEMORY_KIB", 19_456u32, 8),
            iterations: r.number("ARGON2_ITERATIONS", 2u32, 1),
            parallelism: r.number("ARGON2_PARALLELISM", 1u32, 1),
        };
        if argon2.memory_kib < 8 * argon2.parallelism {
            r.errors
                .push("ARGON2_MEMORY_KIB: must be at least 8 × ARGON2_PARALLELISM".into());
        }

        let transport = r.parsed("MAIL_TRANSPORT", "log".to_string(), |v| {
            match v.to_ascii_lowercase().as_str() {
                t @ ("log" | "smtp") => Ok(t.to_string()),
                _ => Err("expected log or smtp".into()),
            }
        });
        let smtp_url = r.parsed("SMTP_URL", None, |v| {
            if v.starts_with("smtp://") || v.starts_with("smtps://") {
                Ok(Some(Secret::new(v)))
            } else {
                Err("expected smtp://[user:pass@]host[:port] or smtps://…".into())
            }
        });
        let transport = match (transport.as_str(), smtp_url) {
            ("smtp", Some(url)) => MailTransport::Smtp(url),
            ("smtp", None) => {
                if r.raw("SMTP_URL").is_none() {
                    r.errors
                        .push("SMTP_URL: required when MAIL_TRANSPORT=smtp".into());
                }
                MailTransport::Log
            }
            _ => MailTransport::Log,
        };
        let mail_from =
            r.parsed(
                "MAIL_FROM",
                DEFAULT_MAIL_FROM.to_string(),
                |v| match crate::mail::parse_from(v) {
                    Ok(_) => Ok(v.to_string()),
                    Err(_) => Err("expected a mailbox like `Roster <no-reply@example.com>`".into()),
                },
            );
        let public_url = r.parsed("PUBLIC_URL", None, |v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(Some(v.trim_end_matches('/').to_string()))
            } else {
                Err("expected an http:// or https:// URL".into())
            }
        });
        let mail = MailSettings {
            transport,
            from: mail_from,
            public_url,
            password_reset_ttl: r.seconds("PASSWORD_RESET_TTL_SECS", 900),
            email_verify_ttl: r.seconds("EMAIL_VERIFY_TTL_SECS", 86_400),
            invite_ttl: r.seconds("INVITE_TTL_SECS", 604_800),
            retry_base: Duration::from_millis(r.number("OUTBOX_RETRY_BASE_MS", 2_000u64, 1)),
            retry_max: r.seconds("OUTBOX_RETRY_MAX_SECS", 900),
        };
        let retention_days = r.number("AUDIT_RETENTION_DAYS", 90u64, 1);
        let webhook_url = r.parsed("WEBHOOK_URL", None, |v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(Some(v.to_string()))
            } else {
                Err("expected an http:// or https:// URL".into())
            }
        });
        let webhook_secret = r.raw("WEBHOOK_SECRET").map(Secret::new);
        let webhook = match (webhook_url, webhook_secret) {
            (Some(url), Some(secret)) => Some(WebhookTarget { url, secret }),
            (Some(_), None) => {
                r.errors
                    .push("WEBHOOK_SECRET: required when WEBHOOK_URL is set".into());
                None
            }
            _ => None,
        };
        let webhook_events = r.parsed("WEBHOOK_EVENTS", vec!["*".to_string()], |v| {
            let kinds: Vec<String> = v
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
            let valid = |k: &String| {
                k == "*"
                    || k.trim_end_matches(".*")
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            };
            match kinds.iter().all(valid) && !kinds.is_empty() {
                true => Ok(kinds),
                false => Err("expected event kinds like `user.*,login.failed` or `*`".into()),
            }
        });
        let audit = AuditSettings {
            retention: Duration::from_secs(retention_days.saturating_mul(86_400)),
            webhook,
            webhook_events,
        };

        let database_url = match database_url {
            Some(url) if r.errors.is_empty() => url,
            _ => return Err(ConfigErrors(r.errors)),
        };
        Ok(Settings {
            database_url,
            bind_addr,
            db_pool_size,
            jwt_secret,
            jwt_previous_secrets,
            access_token_ttl,
            refresh_token_ttl,
            session_max_lifetime,
            login_max_failures,
            login_failure_window,
            hash_concurrency,
            hash_queue_max,
            header_read_timeout,
            idle_timeout,
            cache: CacheSettings {
                enabled: cache_enabled,
                dashboard_ttl: dashboard_cache_ttl,
                user_ttl: user_cache_ttl,
                max_entries: cache_max_entries,
            },
            request_timeout,
            rate_limit: RateLimitSettings {
                enabled: rate_limit_enabled,
                per_second: rate_limit_per_second,
                burst: rate_limit_burst,
                login_per_minute: login_rate_limit_per_minute,
            },
            trust_proxy_headers,
            max_body_bytes,
            bulk_max_users,
            slow_request,
            log_format,
            allow_registration,
            require_email_verification,
            first_superuser_email,
            first_superuser_password,
            argon2,
            mail,
            audit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_map(&map)
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = settings(&[]).unwrap();
        #[cfg(feature = "sqlite")]
        assert_eq!(
            s.database_url,
            DatabaseUrl::Sqlite(SqliteLocation::File("roster.db".into()))
        );
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.db_pool_size, 5);
        assert_eq!(s.access_token_ttl, Duration::from_secs(1800));
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(s.max_body_bytes, 1_048_576);
        assert!(!s.allow_registration);
        assert!(matches!(s.mail.transport, MailTransport::Log));
        assert_eq!(s.mail.from, "Roster <no-reply@localhost>");
        assert_eq!(
            s.mail.public_url, None,
            "resolved from the bound address at launch"
        );
        assert_eq!(s.mail.password_reset_ttl, Duration::from_secs(900));
        assert_eq!(s.mail.email_verify_ttl, Duration::from_secs(86_400));
        assert_eq!(s.mail.invite_ttl, Duration::from_secs(604_800));
    }

    #[test]
    fn host_names_bind_and_an_empty_database_url_is_an_error() {
        let s = settings(&[("BIND_ADDR", "localhost:8123")]).unwrap();
        assert_eq!(s.bind_addr.port(), 8123);
        assert!(s.bind_addr.ip().is_loopback());
        let err = settings(&[("DATABASE_URL", "")]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].starts_with("DATABASE_URL: is set but empty"));
    }

    #[test]
    fn mail_settings_are_checked_and_smtp_urls_never_echoed() {
        let err = settings(&[("MAIL_TRANSPORT", "smtp")]).unwrap_err();
        assert_eq!(err.0, ["SMTP_URL: required when MAIL_TRANSPORT=smtp"]);
        let err = settings(&[
            ("MAIL_TRANSPORT", "pigeon"),
            ("SMTP_URL", "http://user:hunter2@mail"),
            ("MAIL_FROM", "nobody"),
            ("PUBLIC_URL", "roster.example.org"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let s = settings(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", "smtps://u:p@mail.example.org"),
            ("PUBLIC_URL", "https://roster.example.org/"),
        ])
        .unwrap();
        assert!(matches!(s.mail.transport, MailTransport::Smtp(_)));
        assert_eq!(
            s.mail.public_url.as_deref(),
            Some("https://roster.example.org")
        );
    }

    #[test]
    fn every_bad_variable_is_reported_on_its_own_line() {
        let err = settings(&[
            ("DB_POOL_SIZE", "many"),
            ("DATABASE_URL", "mysql://x"),
            ("JWT_SECRET", "short"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0[0].starts_with("DATABASE_URL:"));
        assert!(err.0[1].starts_with("DB_POOL_SIZE:"));
        assert!(err.0[2].starts_with("JWT_SECRET:"));
        assert!(
            !err.to_string().contains("short`"),
            "a secret is never echoed: {err}"
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_urls_are_understood() {
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap(),
            DatabaseUrl::Sqlite(SqliteLocation::Memory)
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///data/roster.db").unwrap(),
            DatabaseUrl::Sqlite(SqliteLocation::File("/data/roster.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://roster.db").unwrap(),
            DatabaseUrl::Sqlite(SqliteLocation::File("roster.db".into()))
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = settings(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")]).unwrap();
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn a_postgres_url_without_the_feature_names_the_feature() {
        let err = DatabaseUrl::parse("postgres://localhost/roster").unwrap_err();
        assert!(err.contains("`--features postgres`"), "{err}");
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn a_sqlite_url_without_the_feature_names_the_feature() {
        let err = DatabaseUrl::parse("sqlite://roster.db").unwrap_err();
        assert!(err.contains("`--features sqlite`"), "{err}");
    }
}
