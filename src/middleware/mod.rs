//! Layers every request passes through.

mod client_ip;
mod headers;
mod limits;
mod observe;
pub mod rate_limit;

pub use client_ip::client_ip;
pub use headers::SecurityHeaders;
pub use limits::{BodyLimit, Timeout, timeout_message};
pub use observe::Observe;
pub use rate_limit::{RateLimit, RateLimits};
