//! Security headers on every response (SPEC "Abuse resistance"): no MIME sniffing and no
//! referrer anywhere; no caching of API answers (tokens and user data); no framing and a
//! Content-Security-Policy for HTML pages (Swagger UI and the account pages).

use poem::{
    Response,
    http::{HeaderMap, HeaderValue, header},
};

/// Swagger UI is one inline script and one inline style, reading the spec from this origin.
pub const HTML_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn set_if_absent(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// `api`: the request's path is under `/api/`.
pub fn add_security_headers(api: bool, response: &mut Response) {
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
}
