//! The client address of a request, from the peer or (when trusted) X-Forwarded-For.

use std::net::IpAddr;

use poem::Request;

/// The caller's address: the leftmost `X-Forwarded-For` entry when proxy headers are
/// trusted and it parses, else the peer address.
pub fn client_ip(req: &Request, trust_proxy_headers: bool) -> Option<IpAddr> {
    if trust_proxy_headers {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.remote_addr().as_socket_addr().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let req = Request::builder()
            .header("X-Forwarded-For", "203.0.113.7, 10.0.0.1")
            .finish();
        assert_eq!(client_ip(&req, true), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(client_ip(&req, false), None);
    }
}
