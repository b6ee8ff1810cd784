//! Realistic examples of every request and response body, shown by Swagger UI and
//! prefilled in its "Try it out" forms. The compiler keeps them in step with the types.

use chrono::{DateTime, Utc};
use poem_openapi::types::{Example, MaybeUndefined};

use super::{
    account_pages::PasswordForm,
    dto::{
        AcceptInviteRequest, AcceptedOut, AuditEventOut, AuditPageOut, BulkCreate, BulkCreated,
        DashboardStatsOut, EmailRequest, InviteRequest, LoginRequest, MeUpdate,
        PasswordResetConfirm, RefreshRequest, RegisterRequest, SessionList, SessionOut,
        TokenResponse, UserCreate, UserOut, UserPage, UserUpdate, VerifyEmailRequest,
    },
    health::{
        CacheCheck, DatabaseCheck, HealthChecks, HealthReport, ProbeStatus, RateLimiterCheck,
    },
    metrics::{CacheFigures, CacheMetrics, DatabaseMetrics},
};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.to_utc())
        .unwrap_or_default()
}

const TOKEN: &str = "kQ3v9_x2Lr7mTz0aYc5HdE1uWp8sNf4bJg6iOq2XeVk";
const CURSOR: &str = "eyJsIjoiNGE3YjFjMmQiLCJ0IjpudWxsLCJzIjoiYWRhQGV4YW1wbGUuY29tIiwiaSI6NDJ9.pZ6v0bq0Z9yS3oW3m8cU1fH2kR7dT4aL5nE9gX1jQwY";

impl Example for UserOut {
    fn example() -> Self {
        Self {
            id: 42,
            email: "ada@example.com".into(),
            full_name: Some("Ada Lovelace".into()),
            is_active: true,
            is_superuser: false,
            email_verified: true,
            created_at: at("2026-11-02T09:30:00Z"),
            updated_at: at("2026-11-28T16:05:12Z"),
        }
    }
}

impl Example for UserPage {
    fn example() -> Self {
        Self {
            items: vec![UserOut::example()],
            total: Some(1),
            page: Some(1),
            size: 50,
            pages: Some(1),
            next_cursor: None,
        }
    }
}

impl Example for SessionList {
    fn example() -> Self {
        Self {
            items: vec![SessionOut::example()],
        }
    }
}

impl Example for LoginRequest {
    fn example() -> Self {
        Self {
            email: "admin@example.com".into(),
            password: "the password printed at first start".into(),
        }
    }
}

impl Example for RefreshRequest {
    fn example() -> Self {
        Self {
            refresh_token: TOKEN.into(),
        }
    }
}

impl Example for EmailRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
        }
    }
}

impl Example for AcceptedOut {
    fn example() -> Self {
        Self {
            message: "If an account uses this address, a password reset link is on its way.".into(),
        }
    }
}

impl Example for PasswordResetConfirm {
    fn example() -> Self {
        Self {
            token: TOKEN.into(),
            new_password: "correct horse battery staple".into(),
        }
    }
}

impl Example for VerifyEmailRequest {
    fn example() -> Self {
        Self {
            token: TOKEN.into(),
        }
    }
}

impl Example for AcceptInviteRequest {
    fn example() -> Self {
        Self {
            token: TOKEN.into(),
            password: "correct horse battery staple".into(),
        }
    }
}

impl Example for InviteRequest {
    fn example() -> Self {
        Self {
            email: "grace@example.com".into(),
            full_name: Some("Grace Hopper".into()),
            is_superuser: Some(false),
        }
    }
}

impl Example for TokenResponse {
    fn example() -> Self {
        Self {
            access_token: "eyJhbGciOiJIUzI1NiIsImtpZCI6IjNmOWE4YzFkIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiIsInNpZCI6IjNxMi03d0VBQUFBIiwiZXhwIjoxNzk2MDAwMDAwfQ.Yk3u2mQ9wX1aB7cD5eF0gH4iJ6kL8mN2oP1qR3sT5uV".into(),
            refresh_token: TOKEN.into(),
            token_type: "bearer".into(),
            expires_in: 1800,
        }
    }
}

impl Example for RegisterRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: "correct horse battery staple".into(),
            full_name: Some("Ada Lovelace".into()),
        }
    }
}

impl Example for UserCreate {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: "correct horse battery staple".into(),
            full_name: Some("Ada Lovelace".into()),
            is_active: Some(true),
            is_superuser: Some(false),
            email_verified: Some(false),
        }
    }
}

impl Example for BulkCreate {
    fn example() -> Self {
        let second = UserCreate {
            email: "grace@example.com".into(),
            full_name: Some("Grace Hopper".into()),
            ..UserCreate::example()
        };
        Self {
            users: vec![UserCreate::example(), second],
        }
    }
}

impl Example for BulkCreated {
    fn example() -> Self {
        Self {
            created: 1,
            items: vec![UserOut::example()],
        }
    }
}

impl Example for UserUpdate {
    fn example() -> Self {
        Self {
            email: None,
            full_name: MaybeUndefined::Value("Ada King".into()),
            password: None,
            is_active: Some(false),
            is_superuser: None,
            email_verified: None,
        }
    }
}

impl Example for MeUpdate {
    fn example() -> Self {
        Self {
            email: Some("ada.king@example.com".into()),
            full_name: MaybeUndefined::Undefined,
            password: None,
            current_password: Some("correct horse battery staple".into()),
        }
    }
}

impl Example for DashboardStatsOut {
    fn example() -> Self {
        Self {
            total_users: 1_204,
            active_users: 1_150,
            inactive_users: 54,
            superusers: 3,
            new_users_today: 12,
            new_users_week: 87,
            generated_at: at("2026-11-30T09:15:00Z"),
        }
    }
}

impl Example for AuditPageOut {
    fn example() -> Self {
        Self {
            items: vec![AuditEventOut::example()],
            next_cursor: Some(CURSOR.into()),
            size: 50,
        }
    }
}

impl Example for HealthReport {
    fn example() -> Self {
        Self {
            status: "healthy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: 3_600.5,
            checks: HealthChecks {
                database: DatabaseCheck {
                    status: "healthy".into(),
                    latency_ms: 0.4,
                    backend: "sqlite".into(),
                    error: None,
                },
                cache: CacheCheck {
                    status: "healthy".into(),
                    entries: 1_830,
                    hit_rate: 0.94,
                    invalidation: "local".into(),
                },
                rate_limiter: RateLimiterCheck {
                    status: "healthy".into(),
                    tracked_clients: 17,
                },
            },
        }
    }
}

impl Example for ProbeStatus {
    fn example() -> Self {
        Self {
            status: "ready".into(),
            reason: None,
        }
    }
}

impl Example for DatabaseMetrics {
    fn example() -> Self {
        Self {
            backend: "postgres".into(),
            pool_size: 5,
            checked_in: 4,
            checked_out: 1,
            overflow: 0,
            total_connections: 5,
        }
    }
}

impl Example for CacheMetrics {
    fn example() -> Self {
        let figures = |entries, hits, misses| CacheFigures {
            entries,
            hits,
            misses,
            hit_rate: hits as f64 / (hits + misses) as f64,
        };
        Self {
            enabled: true,
            dashboard: figures(1, 9_812, 163),
            users: figures(1_204, 48_220, 1_315),
            sessions: figures(220, 120_400, 902),
        }
    }
}

impl Example for PasswordForm {
    fn example() -> Self {
        Self {
            token: Some(TOKEN.into()),
            password: Some("correct horse battery staple".into()),
            confirm_password: Some("correct horse battery staple".into()),
        }
    }
}
