//! Layers every request passes through.

mod client_ip;
mod observe;
pub mod request_context;

pub use client_ip::client_ip;
pub use observe::Observe;
