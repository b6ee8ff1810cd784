//! The outermost layer: request id, error bodies for poem's own errors, and the access log.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    error::MethodNotAllowedError,
    http::{HeaderValue, header},
};

use super::client_ip;
use crate::{
    access_log::AccessLine,
    error::ApiError,
    metrics::AppMetrics,
    request_context::{self, RequestContext, is_valid_request_id},
    routes::RouteTable,
};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub struct Observe {
    pub trust_proxy_headers: bool,
    pub slow_request: Duration,
    pub metrics: Arc<AppMetrics>,
    pub routes: Arc<RouteTable>,
}

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = ObserveEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ObserveEndpoint {
            inner,
            trust_proxy_headers: self.trust_proxy_headers,
            slow_request: self.slow_request,
            metrics: self.metrics.clone(),
            routes: self.routes.clone(),
        }
    }
}

pub struct ObserveEndpoint<E> {
    inner: E,
    trust_proxy_headers: bool,
    slow_request: Duration,
    metrics: Arc<AppMetrics>,
    routes: Arc<RouteTable>,
}

impl<E: Endpoint> Endpoint for ObserveEndpoint<E> {
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
        let ip = client_ip(&req, self.trust_proxy_headers);
        let client_ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
        // Lines logged while the request runs carry the context's request id (`telemetry`).
        let ctx = RequestContext::new(request_id.clone(), ip);

        let mut response = request_context::scope(ctx.clone(), async {
            match self.inner.call(req).await {
                Ok(output) => output.into_response(),
                Err(err) if err.is_from_response() => err.into_response(),
                Err(err) => {
                    let mut response = ApiError::from_poem(&err).into_response();
                    // RFC 9110: a 405 names the methods the path does serve.
                    if err.is::<MethodNotAllowedError>()
                        && let Some(allow) = self.routes.allowed_methods(&path)
                        && let Ok(value) = HeaderValue::from_str(&allow)
                    {
                        response.headers_mut().insert(header::ALLOW, value);
                    }
                    response
                }
            }
        })
        .await;

        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let elapsed = started.elapsed();
        // Microsecond precision: 0.491, not 0.49098900000000006.
        let duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        let status_code = response.status().as_u16();
        self.metrics
            .record_request(method, &path, status_code, elapsed);
        // Outside the request's span: the line carries every field itself.
        AccessLine {
            request_id: &request_id,
            method,
            path: &path,
            status_code,
            duration_ms,
            client_ip: &client_ip,
            user_id: ctx.user_id(),
            slow: elapsed >= self.slow_request,
        }
        .emit();
        Ok(response)
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
