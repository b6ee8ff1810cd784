//! The one layer around the application. What a request meets, in order: its request id
//! and client address (the request context), the rate limit, the panic guard, the timeout,
//! the body limit, then the routes; on the way out: poem's own errors turned into the
//! error body, the rate-limit and security headers, the request id header, the metrics
//! and the access line.
//!
//! One layer rather than six: each poem middleware is a future holding the request and the
//! next future, moved into place on every call; one async function moves the request once.

use std::{
    net::{IpAddr, Ipv4Addr},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    error::MethodNotAllowedError,
    http::{HeaderValue, header},
};

use super::{
    client_ip, headers, limits,
    rate_limit::{self, RateLimits, Verdict},
};
use crate::{
    access_log::AccessLine,
    error::ApiError,
    metrics::AppMetrics,
    request_context::{self, RequestContext, is_valid_request_id},
    routes::RouteTable,
};

const REQUEST_ID_HEADER: &str = "x-request-id";

/// The settings and shared state the layer reads.
#[derive(Clone)]
pub struct Edge {
    pub trust_proxy_headers: bool,
    pub slow_request: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub rate_limits: Arc<RateLimits>,
    pub metrics: Arc<AppMetrics>,
    pub routes: Arc<RouteTable>,
}

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint {
            inner,
            edge: self.clone(),
        }
    }
}

pub struct EdgeEndpoint<E> {
    inner: E,
    edge: Edge,
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_valid_request_id(id))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let method = method_label(req.method());
        let path = req.uri().path().to_string();
        let ip = client_ip(&req, self.edge.trust_proxy_headers);
        // Lines logged while the request runs carry the context's request id (`telemetry`).
        let ctx = RequestContext::new(request_id, ip);

        let mut response = request_context::scope(ctx.clone(), self.respond(req, &path, ip)).await;

        headers::add_security_headers(path.starts_with("/api/"), &mut response);
        if let Ok(value) = HeaderValue::from_str(&ctx.request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let elapsed = started.elapsed();
        // Microsecond precision: 0.491, not 0.49098900000000006.
        let duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        let status_code = response.status().as_u16();
        self.edge
            .metrics
            .record_request(method, &path, status_code, elapsed);
        AccessLine {
            request_id: &ctx.request_id,
            method,
            path: &path,
            status_code,
            duration_ms,
            client_ip: ip,
            user_id: ctx.user_id(),
            slow: elapsed >= self.edge.slow_request,
        }
        .emit();
        Ok(response)
    }
}

impl<E: Endpoint> EdgeEndpoint<E> {
    /// The response, within the request context: every error body names the request id.
    async fn respond(&self, req: Request, path: &str, ip: Option<IpAddr>) -> Response {
        let client = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let verdict = self.edge.rate_limits.check(client, path);
        if let Some(Verdict::Limited {
            bucket,
            limit,
            retry_after_secs,
        }) = verdict
        {
            self.edge.metrics.record_rate_limited(bucket.as_label());
            return rate_limit::limited_response(limit, retry_after_secs);
        }
        let served = AssertUnwindSafe(tokio::time::timeout(
            self.edge.request_timeout,
            self.serve(req),
        ))
        .catch_unwind()
        .await;
        let mut response = match served {
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(err))) => self.error_response(err, path),
            Ok(Err(_elapsed)) => limits::timed_out(self.edge.request_timeout).into_response(),
            Err(_panic) => ApiError::internal("handler panicked").into_response(),
        };
        if let Some(Verdict::Allowed {
            limit, remaining, ..
        }) = verdict
        {
            rate_limit::add_headers(limit, remaining, &mut response);
        }
        response
    }

    async fn serve(&self, mut req: Request) -> Result<Response> {
        limits::read_body(&mut req, self.edge.max_body_bytes).await?;
        self.inner.call(req).await.map(IntoResponse::into_response)
    }

    /// poem's own errors (no route, wrong method, bad path parameter) in the error body.
    fn error_response(&self, err: poem::Error, path: &str) -> Response {
        if err.is_from_response() {
            return err.into_response();
        }
        let mut response = ApiError::from_poem(&err).into_response();
        // RFC 9110: a 405 names the methods the path does serve.
        if err.is::<MethodNotAllowedError>()
            && let Some(allow) = self.edge.routes.allowed_methods(path)
            && let Ok(value) = HeaderValue::from_str(&allow)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        response
    }
}

/// The method as a metric label and in the log: one of the standard methods, or `OTHER`,
/// so no request can add a series (or a 20 kB log field) of its own.
pub fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}
