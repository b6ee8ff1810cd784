//! Whole-request timeout and body size limit.

use std::time::Duration;

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result, error::ReadBodyError,
    http::header,
};

use crate::error::{ApiError, ErrorCode};

/// Every request answers within `limit`, or 504 `request_timeout`.
pub struct Timeout {
    pub limit: Duration,
}

impl<E: Endpoint> Middleware<E> for Timeout {
    type Output = TimeoutEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        TimeoutEndpoint {
            inner,
            limit: self.limit,
        }
    }
}

pub struct TimeoutEndpoint<E> {
    inner: E,
    limit: Duration,
}

pub fn timeout_message(limit: Duration) -> String {
    format!("Request exceeded {:.1}s timeout", limit.as_secs_f64())
}

impl<E: Endpoint> Endpoint for TimeoutEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        match tokio::time::timeout(self.limit, self.inner.call(req)).await {
            Ok(result) => result.map(IntoResponse::into_response),
            Err(_) => {
                tracing::warn!(limit_secs = self.limit.as_secs_f64(), "request timed out");
                Err(ApiError::new(ErrorCode::RequestTimeout, timeout_message(self.limit)).into())
            }
        }
    }
}

/// Bodies over `max_bytes` get 413, whether announced by Content-Length or sent chunked.
pub struct BodyLimit {
    pub max_bytes: usize,
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    max_bytes: usize,
}

fn too_large(max_bytes: usize) -> poem::Error {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The request body exceeds the limit of {max_bytes} bytes."),
    )
    .into()
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_bytes as u64) {
            return Err(too_large(self.max_bytes));
        }
        let has_body = declared.is_some_and(|len| len > 0)
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if has_body {
            // Read at most the limit; the handlers parse JSON from memory anyway.
            match req.take_body().into_bytes_limit(self.max_bytes).await {
                Ok(bytes) => req.set_body(bytes),
                Err(ReadBodyError::PayloadTooLarge) => return Err(too_large(self.max_bytes)),
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorCode::BadRequest,
                        format!("The request body could not be read: {e}."),
                    )
                    .into());
                }
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_message_shows_one_decimal() {
        assert_eq!(
            timeout_message(Duration::from_secs(30)),
            "Request exceeded 30.0s timeout"
        );
        assert_eq!(
            timeout_message(Duration::from_millis(250)),
            "Request exceeded 0.2s timeout"
        );
    }
}
