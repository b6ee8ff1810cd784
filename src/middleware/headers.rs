//! Security headers on every response (SPEC "Abuse resistance"): no MIME sniffing and no
//! referrer anywhere; no caching of API answers (tokens and user data); no framing and a
//! Content-Security-Policy for HTML pages (Swagger UI and the account pages).

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    http::{HeaderMap, HeaderValue, header},
};

/// Swagger UI is one inline script and one inline style, reading the spec from this origin.
pub const HTML_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub struct SecurityHeaders;

impl<E: Endpoint> Middleware<E> for SecurityHeaders {
    type Output = SecurityHeadersEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        SecurityHeadersEndpoint { inner }
    }
}

pub struct SecurityHeadersEndpoint<E> {
    inner: E,
}

fn set_if_absent(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

impl<E: Endpoint> Endpoint for SecurityHeadersEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let api = req.uri().path().starts_with("/api/");
        let mut response = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => err.into_response(),
        };
        let html = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        let headers = response.headers_mut();
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if api {
            // Tokens, users, sessions, exports: nothing of the API belongs in a cache.
            set_if_absent(headers, header::CACHE_CONTROL, "no-store");
        }
        if html {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            set_if_absent(headers, header::CONTENT_SECURITY_POLICY, HTML_CSP);
            set_if_absent(headers, header::CACHE_CONTROL, "no-store");
        }
        Ok(response)
    }
}
