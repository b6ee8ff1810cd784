//! Per-request facts (request id, client address, authenticated user) reachable from any
//! layer of the request.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use crate::domain::UserId;

pub struct RequestContext {
    pub request_id: String,
    /// Resolved once (X-Forwarded-For only when trusted), for the log and the rate limits.
    pub client_ip: Option<IpAddr>,
    user_id: AtomicI64,
}

const NO_USER: i64 = i64::MIN;

impl RequestContext {
    pub fn new(request_id: String, client_ip: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            request_id,
            client_ip,
            user_id: AtomicI64::new(NO_USER),
        })
    }

    pub fn user_id(&self) -> Option<UserId> {
        let id = self.user_id.load(Ordering::Relaxed);
        (id != NO_USER).then_some(id)
    }
}

tokio::task_local! {
    static CONTEXT: Arc<RequestContext>;
}

/// Runs `fut` with `ctx` as the current request context.
pub async fn scope<F: Future>(ctx: Arc<RequestContext>, fut: F) -> F::Output {
    CONTEXT.scope(ctx, fut).await
}

/// The context of the request being served, to carry onto a blocking thread or a task.
pub fn current() -> Option<Arc<RequestContext>> {
    CONTEXT.try_with(Arc::clone).ok()
}

/// Runs `f` (on a blocking thread) as part of `ctx`'s request: its log lines carry its id.
pub fn sync_scope<R>(ctx: Option<Arc<RequestContext>>, f: impl FnOnce() -> R) -> R {
    match ctx {
        Some(ctx) => CONTEXT.sync_scope(ctx, f),
        None => f(),
    }
}

/// `scope` for a spawned task that continues a request, when there is one.
pub async fn continue_scope<F: Future>(ctx: Option<Arc<RequestContext>>, fut: F) -> F::Output {
    match ctx {
        Some(ctx) => scope(ctx, fut).await,
        None => fut.await,
    }
}

/// The id of the request being served, or an empty string outside a request.
pub fn current_request_id() -> String {
    CONTEXT
        .try_with(|c| c.request_id.clone())
        .unwrap_or_default()
}

/// The client address of the request being served.
pub fn current_client_ip() -> Option<IpAddr> {
    CONTEXT.try_with(|c| c.client_ip).ok().flatten()
}

/// Remembers who made the request, for the access log.
pub fn record_user_id(id: UserId) {
    let _ = CONTEXT.try_with(|c| c.user_id.store(id, Ordering::Relaxed));
}

/// A client-supplied request id is kept only if it is 1–128 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert!(is_valid_request_id("abc-123_x.y"));
        assert!(is_valid_request_id(&"a".repeat(128)));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id("ünïcode"));
        assert!(!is_valid_request_id("line\nbreak"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn request_ids_are_kept_only_when_safe(id in ".{0,200}") {
            let safe = !id.is_empty() && id.len() <= 128
                && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            prop_assert_eq!(is_valid_request_id(&id), safe);
        }

        #[test]
        fn every_safe_request_id_is_kept(id in "[A-Za-z0-9._-]{1,128}") {
            prop_assert!(is_valid_request_id(&id));
        }
    }
}
