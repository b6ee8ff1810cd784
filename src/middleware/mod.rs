//! The layer every request passes through (`edge`) and its parts.

mod client_ip;
mod edge;
mod headers;
mod limits;
pub mod rate_limit;

pub use client_ip::client_ip;
pub use edge::Edge;
pub use limits::timeout_message;
pub use rate_limit::RateLimits;
