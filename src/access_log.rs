//! The access line, one per request. The binary's log (`telemetry::init`) has it written
//! straight into the log writer, in the same layout the subscriber gives every other line;
//! through the subscriber, its fields went through `fmt::Debug` visitors, and the line cost
//! ≈ 6% of `/health/live`'s throughput (BENCHMARKS.md). Where the binary's log is not
//! installed (tests in one process) or writes to a terminal (colours), the line goes
//! through `tracing` as any other.

use std::{
    cell::RefCell,
    io::Write,
    net::IpAddr,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::log_writer::BatchedWriter;

pub const TARGET: &str = "roster::access";

struct Direct {
    writer: BatchedWriter,
    json: bool,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Access lines go straight to `writer` from now on, as JSON or as plain text.
pub fn write_directly(writer: BatchedWriter, json: bool) {
    let _ = DIRECT.set(Direct { writer, json });
}

pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'static str,
    pub path: &'a str,
    pub status_code: u16,
    pub duration_ms: f64,
    pub client_ip: Option<IpAddr>,
    pub user_id: Option<i64>,
    /// Over SLOW_REQUEST_MS: logged at WARN as "slow request".
    pub slow: bool,
}

impl AccessLine<'_> {
    pub fn emit(&self) {
        let Some(direct) = DIRECT.get() else {
            return self.emit_through_tracing();
        };
        // RUST_LOG decides, as for every other line.
        let enabled = if self.slow {
            tracing::enabled!(target: TARGET, tracing::Level::WARN)
        } else {
            tracing::enabled!(target: TARGET, tracing::Level::INFO)
        };
        if !enabled {
            return;
        }
        let mut line = Vec::with_capacity(256);
        if direct.json {
            self.write_json(&mut line);
        } else {
            self.write_plain(&mut line);
        }
        let _ = (&direct.writer).write_all(&line);
    }

    fn level_and_message(&self) -> (&'static str, &'static str) {
        if self.slow {
            ("WARN", "slow request")
        } else {
            ("INFO", "request")
        }
    }

    /// As tracing-subscriber's full format without colours writes it.
    // The writers below put bytes in place rather than going through `core::fmt`: the
    // line is written once per request (it was half of the line's cost).
    fn write_plain(&self, out: &mut Vec<u8>) {
        let (level, message) = self.level_and_message();
        write_timestamp(out);
        for part in ["  ", level, " ", TARGET, ": ", message, " request_id="] {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b" method=");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b" path=");
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" status_code=");
        out.extend_from_slice(itoa::Buffer::new().format(self.status_code).as_bytes());
        out.extend_from_slice(b" duration_ms=");
        write_float(out, self.duration_ms);
        out.extend_from_slice(b" client_ip=");
        write_ip(out, self.client_ip);
        if let Some(user_id) = self.user_id {
            out.extend_from_slice(b" user_id=");
            out.extend_from_slice(itoa::Buffer::new().format(user_id).as_bytes());
        }
        out.push(b'\n');
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let (level, message) = self.level_and_message();
        out.extend_from_slice(br#"{"timestamp":""#);
        write_timestamp(out);
        for part in [r#"","level":""#, level, r#"","message":""#, message] {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(br#"","request_id":"#);
        let _ = serde_json::to_writer(&mut *out, self.request_id);
        out.extend_from_slice(br#","method":""#);
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(br#"","path":"#);
        let _ = serde_json::to_writer(&mut *out, self.path);
        out.extend_from_slice(br#","status_code":"#);
        out.extend_from_slice(itoa::Buffer::new().format(self.status_code).as_bytes());
        out.extend_from_slice(br#","duration_ms":"#);
        write_float(out, self.duration_ms);
        // An address has nothing to escape.
        out.extend_from_slice(br#","client_ip":""#);
        write_ip(out, self.client_ip);
        out.push(b'"');
        if let Some(user_id) = self.user_id {
            out.extend_from_slice(br#","user_id":"#);
            out.extend_from_slice(itoa::Buffer::new().format(user_id).as_bytes());
        }
        out.extend_from_slice(br#","target":""#);
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b"\"}\n");
    }

    fn emit_through_tracing(&self) {
        let AccessLine {
            request_id,
            method,
            path,
            status_code,
            duration_ms,
            client_ip,
            user_id,
            slow,
        } = *self;
        let client_ip = client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        if slow {
            tracing::warn!(target: TARGET, %request_id, %method, %path, status_code, duration_ms, %client_ip, user_id, "slow request");
        } else {
            tracing::info!(target: TARGET, %request_id, %method, %path, status_code, duration_ms, %client_ip, user_id, "request");
        }
    }
}

/// Now, as the subscriber writes it: RFC 3339 in UTC with microseconds. The part up to the
/// second is formatted once a second per thread, not once a line.
/// As `fmt::Debug` writes an `f64` (`2.0`, `0.491`), which is what the subscriber shows.
fn write_float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    } else {
        let _ = write!(out, "{value:?}");
    }
}

fn write_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    if let Some(ip) = ip {
        let _ = write!(out, "{ip}");
    }
}

/// Now, as the subscriber writes it: RFC 3339, UTC, microseconds. The date and time of
/// day change once a second and are formatted then.
fn write_timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *cached = secs;
            *text = chrono::DateTime::from_timestamp(secs as i64, 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
        }
        out.extend_from_slice(text.as_bytes());
    });
    let mut micros = itoa::Buffer::new();
    let micros = micros.format(now.subsec_micros());
    out.push(b'.');
    out.extend(std::iter::repeat_n(b'0', 6 - micros.len().min(6)));
    out.extend_from_slice(micros.as_bytes());
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(user_id: Option<i64>, slow: bool) -> AccessLine<'static> {
        AccessLine {
            request_id: "req-1",
            method: "GET",
            path: "/api/v1/users/\"7\"",
            status_code: 200,
            duration_ms: 2.0,
            client_ip: Some("127.0.0.1".parse().unwrap()),
            user_id,
            slow,
        }
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        for value in [
            0.0,
            0.001,
            0.491,
            2.0,
            12.5,
            1234.567,
            30000.0,
            1e-7,
            1e17,
            f64::NAN,
        ] {
            let mut out = Vec::new();
            write_float(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{value:?}"));
        }
    }

    #[test]
    fn the_timestamp_is_rfc3339_with_microseconds() {
        let before = chrono::Utc::now();
        let mut text = Vec::new();
        write_timestamp(&mut text);
        let text = String::from_utf8(text).unwrap();
        let after = chrono::Utc::now();
        assert_eq!(text.len(), 27, "{text}");
        assert!(text.ends_with('Z'), "{text}");
        let parsed = chrono::DateTime::parse_from_rfc3339(&text).unwrap();
        let floor = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
        assert!(
            floor(before) <= parsed.timestamp_micros() && parsed.timestamp_micros() <= floor(after),
            "{text}"
        );
    }

    /// What the subscriber writes for the same line, as the binary configures it.
    fn through_subscriber(line: &AccessLine<'_>, json: bool) -> String {
        let out = crate::log_writer::Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(out.clone());
        if json {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || line.emit_through_tracing());
        } else {
            tracing::subscriber::with_default(builder.finish(), || line.emit_through_tracing());
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn written(line: &AccessLine<'_>, json: bool) -> String {
        let mut out = Vec::new();
        if json {
            line.write_json(&mut out);
        } else {
            line.write_plain(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    /// The line written directly is byte for byte the subscriber's, its timestamp aside:
    /// plain and JSON, INFO and WARN, with and without a user, IPv4, IPv6 or no address.
    #[test]
    fn lines_are_the_subscribers_own() {
        let ipv6 = AccessLine {
            client_ip: Some("2001:db8::1".parse().unwrap()),
            duration_ms: 0.491,
            ..line(None, false)
        };
        let no_address = AccessLine {
            client_ip: None,
            status_code: 404,
            duration_ms: 12345.678,
            ..line(Some(1), false)
        };
        for access in [line(Some(7), false), line(None, true), ipv6, no_address] {
            let ours = written(&access, false);
            let theirs = through_subscriber(&access, false);
            assert_eq!(theirs.lines().count(), 1, "{theirs}");
            let (our_time, our_rest) = ours.split_once(' ').unwrap();
            let (their_time, their_rest) = theirs.split_once(' ').unwrap();
            assert_eq!(our_rest, their_rest);
            assert_eq!(
                our_time.len(),
                their_time.len(),
                "{our_time} / {their_time}"
            );

            let without_time = |text: &str| {
                let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
                let time = value.as_object_mut().unwrap().shift_remove("timestamp");
                assert_eq!(time.unwrap().as_str().unwrap().len(), 27, "{text}");
                // The field order too: serde_json keeps it here (preserve_order).
                serde_json::to_string(&value).unwrap()
            };
            let ours = written(&access, true);
            let theirs = through_subscriber(&access, true);
            assert!(ours.ends_with('\n') && theirs.ends_with('\n'));
            assert_eq!(without_time(&ours), without_time(&theirs));
        }
        assert!(written(&line(Some(7), false), false).ends_with(" user_id=7\n"));
        assert!(
            written(&line(None, true), true).contains(r#""level":"WARN","message":"slow request""#)
        );
    }
}
