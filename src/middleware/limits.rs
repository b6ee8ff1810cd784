//! The whole-request timeout's answer and the body size limit.

use std::time::Duration;

use poem::{Request, Result, error::ReadBodyError, http::header};

use crate::error::{ApiError, ErrorCode};

pub fn timeout_message(limit: Duration) -> String {
    format!("Request exceeded {:.1}s timeout", limit.as_secs_f64())
}

/// The 504 for a request that did not answer within `limit`.
pub fn timed_out(limit: Duration) -> ApiError {
    tracing::warn!(limit_secs = limit.as_secs_f64(), "request timed out");
    ApiError::new(ErrorCode::RequestTimeout, timeout_message(limit))
}

fn too_large(max_bytes: usize) -> poem::Error {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The request body exceeds the limit of {max_bytes} bytes."),
    )
    .into()
}

/// Reads the body into memory, refusing more than `max_bytes` (413) whether announced by
/// Content-Length or sent chunked; the handlers parse JSON from memory anyway.
pub async fn read_body(req: &mut Request, max_bytes: usize) -> Result<()> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large(max_bytes));
    }
    let has_body = declared.is_some_and(|len| len > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body {
        match req.take_body().into_bytes_limit(max_bytes).await {
            Ok(bytes) => req.set_body(bytes),
            Err(ReadBodyError::PayloadTooLarge) => return Err(too_large(max_bytes)),
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("The request body could not be read: {e}."),
                )
                .into());
            }
        }
    }
    Ok(())
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
