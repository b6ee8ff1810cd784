//! Per-client-IP rate limits (governor): one bucket for the API, a stricter one shared by
//! login, refresh and register. Health routes are exempt.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use poem::{IntoResponse, Response, http::HeaderValue};

use crate::{
    config::RateLimitSettings,
    error::{ApiError, ErrorCode},
};

type KeyedLimiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// How often idle clients' state is dropped, so memory follows active clients only.
const RETAIN_EVERY: Duration = Duration::from_secs(30);

pub struct RateLimits {
    enabled: bool,
    api: KeyedLimiter,
    api_bucket: u32,
    login: KeyedLimiter,
    login_bucket: u32,
    /// The routes sharing the stricter bucket (the API layer names them).
    login_paths: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Api,
    Login,
}

impl Bucket {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Login => "login",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        bucket: Bucket,
        limit: u32,
        remaining: u32,
    },
    Limited {
        bucket: Bucket,
        limit: u32,
        retry_after_secs: u64,
    },
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings, login_paths: &'static [&'static str]) -> Self {
        let api_quota =
            Quota::per_second(non_zero(settings.per_second)).allow_burst(non_zero(settings.burst));
        let login_quota = Quota::per_minute(non_zero(settings.login_per_minute));
        Self {
            enabled: settings.enabled,
            api: DefaultKeyedRateLimiter::keyed(api_quota)
                .with_middleware::<StateInformationMiddleware>(),
            api_bucket: settings.burst.max(1),
            login: DefaultKeyedRateLimiter::keyed(login_quota)
                .with_middleware::<StateInformationMiddleware>(),
            login_bucket: settings.login_per_minute.max(1),
            login_paths,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Clients with live state in either bucket.
    pub fn tracked_clients(&self) -> usize {
        self.api.len() + self.login.len()
    }

    /// Forgets clients whose buckets have refilled: their state equals a fresh one.
    pub fn retain_recent(&self) {
        self.api.retain_recent();
        self.api.shrink_to_fit();
        self.login.retain_recent();
        self.login.shrink_to_fit();
    }

    /// Drops idle clients periodically for as long as the limits are alive.
    pub fn spawn_janitor(limits: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(limits);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETAIN_EVERY).await;
                match weak.upgrade() {
                    Some(limits) => limits.retain_recent(),
                    None => break,
                }
            }
        });
    }

    /// `None` when limits are off or the path is exempt.
    pub fn check(&self, ip: IpAddr, path: &str) -> Option<Verdict> {
        let ip = client_key(ip);
        if !self.enabled || path == "/health" || path.starts_with("/health/") {
            return None;
        }
        let api = Self::decide(&self.api, Bucket::Api, self.api_bucket, ip);
        if !self.login_paths.contains(&path) || matches!(api, Verdict::Limited { .. }) {
            return Some(api);
        }
        Some(Self::decide(
            &self.login,
            Bucket::Login,
            self.login_bucket,
            ip,
        ))
    }

    fn decide(limiter: &KeyedLimiter, bucket: Bucket, limit: u32, ip: IpAddr) -> Verdict {
        match limiter.check_key(&ip) {
            Ok(snapshot) => Verdict::Allowed {
                bucket,
                limit,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Verdict::Limited {
                    bucket,
                    limit,
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }
}

/// The key a client is limited by: its IPv4 address, or the /64 of its IPv6 address (one
/// host usually holds a whole /64, so single addresses would be free to rotate).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

fn set_header(resp: &mut Response, name: &'static str, value: u32) {
    resp.headers_mut().insert(name, HeaderValue::from(value));
}

/// The 429 for a client over its limit.
pub fn limited_response(limit: u32, retry_after_secs: u64) -> Response {
    let mut resp = ApiError::new(
        ErrorCode::RateLimited,
        format!("Too many requests; retry in {retry_after_secs} s."),
    )
    .retry_after(retry_after_secs)
    .into_response();
    add_headers(limit, 0, &mut resp);
    resp
}

/// The client's bucket size and what is left of it.
pub fn add_headers(limit: u32, remaining: u32, resp: &mut Response) {
    set_header(resp, "x-ratelimit-limit", limit);
    set_header(resp, "x-ratelimit-remaining", remaining);
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv4Addr};

    use super::*;

    fn limits(pairs: &[(&str, &str)]) -> RateLimits {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RateLimits::new(
            &crate::config::Settings::from_map(&map).unwrap().rate_limit,
            &[
                "/api/v1/auth/login",
                "/api/v1/auth/refresh",
                "/api/v1/auth/register",
            ],
        )
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn the_burst_passes_then_the_client_is_limited() {
        let l = limits(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "3")]);
        let remaining: Vec<_> = (0..3)
            .map(|_| match l.check(ip(1), "/api/v1/users") {
                Some(Verdict::Allowed {
                    remaining, limit, ..
                }) => (limit, remaining),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [(3, 2), (3, 1), (3, 0)]);
        assert!(matches!(
            l.check(ip(1), "/api/v1/users"),
            Some(Verdict::Limited {
                retry_after_secs: 1,
                ..
            })
        ));
        assert!(
            matches!(
                l.check(ip(2), "/api/v1/users"),
                Some(Verdict::Allowed { .. })
            ),
            "another client has its own bucket"
        );
        assert_eq!(l.check(ip(1), "/health"), None);
        assert_eq!(l.check(ip(1), "/health/ready"), None);
    }

    #[test]
    fn login_refresh_and_register_share_the_stricter_bucket() {
        let l = limits(&[("LOGIN_RATE_LIMIT_PER_MINUTE", "2")]);
        assert!(matches!(
            l.check(ip(1), "/api/v1/auth/login"),
            Some(Verdict::Allowed {
                bucket: Bucket::Login,
                ..
            })
        ));
        assert!(matches!(
            l.check(ip(1), "/api/v1/auth/refresh"),
            Some(Verdict::Allowed { .. })
        ));
        match l.check(ip(1), "/api/v1/auth/register") {
            Some(Verdict::Limited {
                bucket: Bucket::Login,
                retry_after_secs,
                ..
            }) => assert!((1..=30).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            l.check(ip(1), "/api/v1/auth/logout"),
            Some(Verdict::Allowed {
                bucket: Bucket::Api,
                ..
            })
        ));
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let l = limits(&[("RATE_LIMIT_PER_SECOND", "1000"), ("RATE_LIMIT_BURST", "1")]);
        for n in 0..5000 {
            l.check(ip(n), "/api/v1/users");
        }
        assert_eq!(l.tracked_clients(), 5000);
        std::thread::sleep(Duration::from_millis(5)); // one cell refills in 1 ms
        l.retain_recent();
        assert_eq!(l.tracked_clients(), 0);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = limits(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "1")]);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(matches!(
            l.check(a, "/api/v1/users"),
            Some(Verdict::Allowed { .. })
        ));
        assert!(matches!(
            l.check(b, "/api/v1/users"),
            Some(Verdict::Limited { .. })
        ));
        assert!(matches!(
            l.check(elsewhere, "/api/v1/users"),
            Some(Verdict::Allowed { .. })
        ));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn disabled_limits_check_nothing() {
        let l = limits(&[("RATE_LIMIT_ENABLED", "false"), ("RATE_LIMIT_BURST", "1")]);
        assert_eq!(l.check(ip(1), "/api/v1/users"), None);
        assert_eq!(l.check(ip(1), "/api/v1/users"), None);
    }
}
