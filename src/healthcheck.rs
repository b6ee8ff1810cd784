//! `roster healthcheck`: asks a running Roster whether it is ready, for Docker's HEALTHCHECK.
//! A plain HTTP/1.0 GET over a socket: no HTTP client library for one local probe.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(3);

/// The readiness URL of a server listening on `bind` (a wildcard address means this host).
pub fn default_url(bind: SocketAddr) -> String {
    let host = match bind.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        ip if ip.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/health/ready", bind.port())
}

/// `Ok` when the URL answers 200; otherwise the reason, in one line.
pub fn check(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, got {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: roster-healthcheck\r\n\r\n"
    )
    .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("no answer from {url}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{url} answered {}",
            if status.is_empty() {
                "nothing usable"
            } else {
                status
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        assert_eq!(
            default_url("0.0.0.0:8000".parse().unwrap()),
            "http://127.0.0.1:8000/health/ready"
        );
        assert_eq!(
            default_url("127.0.0.1:9000".parse().unwrap()),
            "http://127.0.0.1:9000/health/ready"
        );
        assert_eq!(
            default_url("[::]:8000".parse().unwrap()),
            "http://[::1]:8000/health/ready"
        );
    }

    #[test]
    fn unreachable_servers_fail_with_a_reason() {
        let err = check("http://127.0.0.1:1/health/ready").unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(
            check("https://example.com")
                .unwrap_err()
                .contains("http://")
        );
    }
}
