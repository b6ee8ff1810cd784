//! `ApiError`: the one place where failures (of the services, the store, poem's own parsing
//! and routing) become HTTP statuses and the SPEC's JSON error body.

use poem::{
    error::{MethodNotAllowedError, NotFoundError, ReadBodyError},
    http::StatusCode,
};
use poem_openapi::{
    ApiResponse, Object,
    error::{
        AuthorizationError, ContentTypeError, ParseMultipartError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    },
    payload::Json,
};
use serde_json::{Value, json};

use crate::{
    domain::{FieldError, MAX_PAGE_SIZE, SORT_KEYS},
    request_context::current_request_id,
    service::ServiceError,
    store::StoreError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidToken,
    Unauthorized,
    InvalidCredentials,
    Forbidden,
    InactiveUser,
    EmailNotVerified,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
    RateLimited,
    InternalError,
    ServiceUnavailable,
    RequestTimeout,
}

impl ErrorCode {
    pub const ALL: [Self; 18] = [
        Self::BadRequest,
        Self::InvalidToken,
        Self::Unauthorized,
        Self::InvalidCredentials,
        Self::Forbidden,
        Self::InactiveUser,
        Self::EmailNotVerified,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::EmailTaken,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationError,
        Self::RateLimited,
        Self::InternalError,
        Self::ServiceUnavailable,
        Self::RequestTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidToken => "invalid_token",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::InactiveUser => "inactive_user",
            Self::EmailNotVerified => "email_not_verified",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::EmailTaken => "email_taken",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ValidationError => "validation_error",
            Self::RateLimited => "rate_limited",
            Self::InternalError => "internal_error",
            Self::ServiceUnavailable => "service_unavailable",
            Self::RequestTimeout => "request_timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidToken => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::InactiveUser | Self::EmailNotVerified => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken | Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Machine-readable snake_case code, e.g. `validation_error`.
    pub error: String,
    /// A sentence for humans.
    pub message: String,
    /// The request's id, also sent as the `X-Request-ID` header.
    pub request_id: String,
    /// Extra facts: for `validation_error` a list of `{field, message}` (bulk adds `index`);
    /// for `email_taken` on bulk `{"emails": [...]}`.
    #[oai(skip_serializing_if_is_none)]
    pub details: Option<Value>,
}

/// Every failure an endpoint can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Malformed request, e.g. a body that is not JSON.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, invalid or expired credentials.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// Authenticated but not allowed, or the account is inactive.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The path does not serve this method.
    #[oai(status = 405)]
    MethodNotAllowed(Json<ErrorBody>),
    /// The request conflicts with the current state, e.g. a taken email.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The body is larger than the configured limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Well-formed input that breaks a rule; `details` lists each field.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// Too many requests from this client; retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until a retry may succeed.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// An unexpected failure on the server.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds until a retry may succeed, when known.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// The request took longer than the configured timeout.
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::build(code, message.into(), None)
    }

    pub fn with_details(code: ErrorCode, message: impl Into<String>, details: Value) -> Self {
        Self::build(code, message.into(), Some(details))
    }

    pub fn validation(errors: &[FieldError]) -> Self {
        let details = errors
            .iter()
            .map(|e| match e.index {
                Some(index) => json!({"index": index, "field": e.field, "message": e.message}),
                None => json!({"field": e.field, "message": e.message}),
            })
            .collect();
        let summary = errors
            .iter()
            .map(|e| match e.index {
                Some(index) => format!("[{index}] {} {}", e.field, e.message),
                None => format!("{} {}", e.field, e.message),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self::with_details(
            ErrorCode::ValidationError,
            format!("Invalid input: {summary}."),
            Value::Array(details),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// Logs the detail; the client sees only a generic sentence.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::InternalError, "An internal error occurred.")
    }

    fn build(code: ErrorCode, message: String, details: Option<Value>) -> Self {
        let body = Json(ErrorBody {
            error: code.as_str().to_string(),
            message,
            request_id: current_request_id(),
            details,
        });
        match code.status().as_u16() {
            400 => Self::BadRequest(body),
            401 => Self::Unauthorized(body),
            403 => Self::Forbidden(body),
            404 => Self::NotFound(body),
            405 => Self::MethodNotAllowed(body),
            409 => Self::Conflict(body),
            413 => Self::PayloadTooLarge(body),
            415 => Self::UnsupportedMediaType(body),
            422 => Self::Unprocessable(body),
            429 => Self::TooManyRequests(body, None),
            503 => Self::Unavailable(body, None),
            504 => Self::Timeout(body),
            _ => Self::Internal(body),
        }
    }

    /// Adds `Retry-After` to a 429 or 503.
    pub fn retry_after(self, seconds: u64) -> Self {
        match self {
            Self::TooManyRequests(body, _) => Self::TooManyRequests(body, Some(seconds.max(1))),
            Self::Unavailable(body, _) => Self::Unavailable(body, Some(seconds.max(1))),
            other => other,
        }
    }

    pub fn body(&self) -> &ErrorBody {
        match self {
            Self::BadRequest(b)
            | Self::Unauthorized(b)
            | Self::Forbidden(b)
            | Self::NotFound(b)
            | Self::MethodNotAllowed(b)
            | Self::Conflict(b)
            | Self::PayloadTooLarge(b)
            | Self::UnsupportedMediaType(b)
            | Self::Unprocessable(b)
            | Self::TooManyRequests(b, _)
            | Self::Internal(b)
            | Self::Unavailable(b, _)
            | Self::Timeout(b) => b,
        }
    }

    /// Translates poem's and poem-openapi's own errors (routing, parsing, content type,
    /// missing credentials, body limits) into our error body.
    pub fn from_poem(err: &poem::Error) -> Self {
        if err.is::<NotFoundError>() {
            return Self::not_found("No such route.");
        }
        if err.is::<MethodNotAllowedError>() {
            return Self::new(
                ErrorCode::MethodNotAllowed,
                "This path does not serve that method.",
            );
        }
        if let Some(e) = err.downcast_ref::<ParseParamError>() {
            return Self::validation(&[FieldError::new(e.name, param_message(e.name, &e.reason))]);
        }
        if err.is::<ParsePathError>() {
            // poem-openapi names path parameters by position; every Roster path has one, `{id}`.
            return Self::validation(&[FieldError::new("id", "must be an integer")]);
        }
        if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
            return Self::new(
                ErrorCode::BadRequest,
                format!(
                    "The request body could not be parsed: {}.",
                    clean_reason(&e.reason)
                ),
            );
        }
        if err.is::<ParseMultipartError>() {
            return Self::new(
                ErrorCode::BadRequest,
                "The request body could not be parsed.",
            );
        }
        if let Some(e) = err.downcast_ref::<ContentTypeError>() {
            let message = match e {
                ContentTypeError::ExpectContentType => {
                    "This endpoint takes a JSON body; send Content-Type: application/json."
                        .to_string()
                }
                ContentTypeError::NotSupported { content_type } => format!(
                    "Content-Type `{content_type}` is not supported; send application/json."
                ),
            };
            return Self::new(ErrorCode::UnsupportedMediaType, message);
        }
        if err.is::<AuthorizationError>() {
            return Self::unauthorized("Missing or malformed bearer token.");
        }
        if let Some(ReadBodyError::PayloadTooLarge) = err.downcast_ref::<ReadBodyError>() {
            return Self::new(ErrorCode::PayloadTooLarge, "The request body is too large.");
        }
        match err.status() {
            StatusCode::BAD_REQUEST => Self::new(
                ErrorCode::BadRequest,
                "The request could not be understood.",
            ),
            StatusCode::UNAUTHORIZED => Self::unauthorized("Authentication required."),
            StatusCode::FORBIDDEN => Self::forbidden("Not allowed."),
            StatusCode::NOT_FOUND => Self::not_found("Not found."),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                ErrorCode::MethodNotAllowed,
                "This path does not serve that method.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::LENGTH_REQUIRED => {
                Self::new(ErrorCode::PayloadTooLarge, "The request body is too large.")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                ErrorCode::UnsupportedMediaType,
                "Unsupported Content-Type; send application/json.",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                Self::new(ErrorCode::ValidationError, "Invalid input.")
            }
            status if status.is_client_error() => Self::new(
                ErrorCode::BadRequest,
                "The request could not be understood.",
            ),
            _ => Self::internal(err),
        }
    }
}

/// What a query parameter must look like, in words; poem-openapi's own reasons name
/// internal type names and validator syntax.
fn param_message(name: &str, reason: &str) -> String {
    match name {
        "page" => "must be an integer of at least 1".into(),
        "size" => format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
        "is_active" | "is_superuser" => "must be true or false".into(),
        "created_after" | "created_before" => {
            "must be an RFC 3339 date-time, e.g. 2026-01-31T00:00:00Z".into()
        }
        "sort" => format!(
            "must be one of {}",
            SORT_KEYS
                .iter()
                .flat_map(|k| [k.to_string(), format!("-{k}")])
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "format" => "must be csv or ndjson".into(),
        _ => clean_reason(reason),
    }
}

fn clean_reason(reason: &str) -> String {
    reason.trim().trim_end_matches('.').to_string()
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(errors) => Self::validation(&errors),
            ServiceError::InvalidCredentials => Self::new(
                ErrorCode::InvalidCredentials,
                "Incorrect email or password.",
            ),
            ServiceError::Unauthenticated(message) => Self::unauthorized(message),
            ServiceError::Forbidden(message) => Self::forbidden(message),
            ServiceError::InactiveUser => {
                Self::new(ErrorCode::InactiveUser, "This account is inactive.")
            }
            ServiceError::EmailNotVerified => Self::new(
                ErrorCode::EmailNotVerified,
                "Verify your email address first: follow the link sent to it.",
            ),
            ServiceError::NotFound(message) => Self::not_found(message),
            ServiceError::EmailTaken => Self::new(
                ErrorCode::EmailTaken,
                "A user with this email already exists.",
            ),
            ServiceError::EmailsTaken(emails) => Self::with_details(
                ErrorCode::EmailTaken,
                format!(
                    "{} email(s) of the batch are already taken; nothing was created.",
                    emails.len()
                ),
                json!({ "emails": emails }),
            ),
            ServiceError::Conflict(message) => Self::new(ErrorCode::Conflict, message),
            ServiceError::Locked { retry_after_secs } => Self::new(
                ErrorCode::RateLimited,
                format!(
                    "Too many failed password checks for this account; retry in {retry_after_secs} s."
                ),
            )
            .retry_after(retry_after_secs),
            ServiceError::Busy { retry_after_secs } => Self::new(
                ErrorCode::ServiceUnavailable,
                "The server is busy checking passwords; retry shortly.",
            )
            .retry_after(retry_after_secs),
            ServiceError::InvalidToken => Self::new(
                ErrorCode::InvalidToken,
                "This link is invalid, has expired, or was already used; ask for a new one.",
            ),
            ServiceError::Store(err) => err.into(),
            ServiceError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found(crate::service::USER_NOT_FOUND),
            StoreError::EmailTaken => Self::new(
                ErrorCode::EmailTaken,
                "A user with this email already exists.",
            ),
            StoreError::LastActiveSuperuser => {
                Self::new(ErrorCode::Conflict, crate::service::LAST_SUPERUSER)
            }
            StoreError::TokenInvalid => ServiceError::InvalidToken.into(),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                Self::new(
                    ErrorCode::ServiceUnavailable,
                    "The database is unavailable; try again shortly.",
                )
            }
            StoreError::SchemaTooNew { .. } => {
                tracing::error!(error = %err, "schema mismatch");
                Self::new(
                    ErrorCode::ServiceUnavailable,
                    "The database schema does not match this server.",
                )
            }
            StoreError::Other(detail) => Self::internal(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameter_messages_are_plain_words() {
        assert_eq!(
            param_message(
                "size",
                "verification failed. maximum(100, exclusive: false)"
            ),
            "must be an integer from 1 to 100"
        );
        assert_eq!(param_message("other", "odd thing."), "odd thing");
    }

    #[test]
    fn every_code_maps_to_the_spec_status_and_response_variant() {
        let table = [
            ("bad_request", 400),
            ("invalid_token", 400),
            ("unauthorized", 401),
            ("invalid_credentials", 401),
            ("forbidden", 403),
            ("inactive_user", 403),
            ("email_not_verified", 403),
            ("not_found", 404),
            ("method_not_allowed", 405),
            ("email_taken", 409),
            ("conflict", 409),
            ("payload_too_large", 413),
            ("unsupported_media_type", 415),
            ("validation_error", 422),
            ("rate_limited", 429),
            ("internal_error", 500),
            ("service_unavailable", 503),
            ("request_timeout", 504),
        ];
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            seen.insert(code.as_str());
            let (_, status) = table
                .iter()
                .find(|(name, _)| *name == code.as_str())
                .unwrap_or_else(|| panic!("{} is not in the SPEC table", code.as_str()));
            assert_eq!(code.status().as_u16(), *status, "{}", code.as_str());
            let error = ApiError::new(code, "x");
            assert_eq!(error.body().error, code.as_str());
            let response = poem::IntoResponse::into_response(error);
            assert_eq!(response.status().as_u16(), *status, "{}", code.as_str());
        }
        assert_eq!(seen.len(), table.len(), "every SPEC code has an ErrorCode");
    }

    #[test]
    fn service_errors_keep_their_meaning() {
        let status = |e: ServiceError| ApiError::from(e).body().error.clone();
        assert_eq!(
            status(ServiceError::InvalidCredentials),
            "invalid_credentials"
        );
        assert_eq!(status(ServiceError::InactiveUser), "inactive_user");
        assert_eq!(status(ServiceError::InvalidToken), "invalid_token");
        assert_eq!(
            ApiError::from(StoreError::TokenInvalid).body().error,
            "invalid_token"
        );
        assert_eq!(
            status(ServiceError::EmailsTaken(vec!["a@b.c".into()])),
            "email_taken"
        );
        assert_eq!(
            status(ServiceError::Store(StoreError::Unavailable("x".into()))),
            "service_unavailable"
        );
        assert_eq!(status(StoreError::LastActiveSuperuser.into()), "conflict");
        assert_eq!(status(StoreError::NotFound.into()), "not_found");
    }
}
