//! A small SMTP server for tests: it speaks enough of RFC 5321 for a real client (lettre)
//! to deliver to it, keeps every mail it accepted, and can be told to refuse mail (451)
//! or be stopped and started again on the same port, as a mail server that is down.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use base64::Engine;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// A mail as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub raw: String,
}

impl Received {
    /// A header's value, e.g. `Subject`.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next()?;
        head.lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_string())
    }

    /// The decoded bodies of the parts, with their content types.
    pub fn parts(&self) -> Vec<(String, String)> {
        let Some(boundary) = self.raw.split("boundary=").nth(1).map(|b| {
            b.trim_start_matches('"')
                .split(['"', '\r', '\n', ';'])
                .next()
                .unwrap_or_default()
                .to_string()
        }) else {
            return vec![("text/plain".into(), self.raw.clone())];
        };
        self.raw
            .split(&format!("--{boundary}"))
            .skip(1)
            .filter_map(|part| {
                let (head, body) = part.split_once("\r\n\r\n")?;
                let head_lower = head.to_ascii_lowercase();
                let content_type = head_lower
                    .lines()
                    .find(|l| l.starts_with("content-type:"))?
                    .trim_start_matches("content-type:")
                    .trim()
                    .split(';')
                    .next()?
                    .to_string();
                let body = if head_lower.contains("quoted-printable") {
                    decode_quoted_printable(body)
                } else if head_lower.contains("base64") {
                    let compact: String = body.split_whitespace().collect();
                    String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(compact)
                            .unwrap_or_default(),
                    )
                    .unwrap_or_default()
                } else {
                    body.to_string()
                };
                Some((content_type, body))
            })
            .collect()
    }

    pub fn part(&self, content_type: &str) -> String {
        self.parts()
            .into_iter()
            .find(|(t, _)| t == content_type)
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no {content_type} part in {}", self.raw))
    }

    /// The first link of the plain-text part that goes to an `/account/` page.
    pub fn link(&self) -> String {
        let text = self.part("text/plain");
        text.split_whitespace()
            .find(|w| w.starts_with("http") && w.contains("/account/"))
            .unwrap_or_else(|| panic!("no account link in {text}"))
            .to_string()
    }

    /// The `token` of the mail's link.
    pub fn token(&self) -> String {
        self.link()
            .split("token=")
            .nth(1)
            .expect("link has a token")
            .to_string()
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<Received>>,
    arrived: Notify,
    refusing: AtomicBool,
    attempts: std::sync::atomic::AtomicU64,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default()).await
    }

    async fn start_on(addr: SocketAddr, shared: Arc<Shared>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the SMTP sink");
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let state = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        tokio::spawn(serve(stream, state.clone()));
                    }
                }
            }
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// Stops listening: connections are refused, as by a server that is down.
    pub fn stop(mut self) -> (SocketAddr, SinkMemory) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (self.addr, SinkMemory(self.shared.clone()))
    }

    /// Listens again on the same port, keeping what was received.
    pub async fn resume(addr: SocketAddr, memory: SinkMemory) -> Self {
        // The old listener closes asynchronously; retry the bind briefly.
        for _ in 0..100 {
            if let Ok(probe) = std::net::TcpListener::bind(addr) {
                drop(probe);
                return Self::start_on(addr, memory.0).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot listen on {addr} again");
    }

    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    /// Answer 451 to every mail until told otherwise.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Mail transactions attempted (accepted or refused).
    pub fn attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.mails.lock().unwrap().clone()
    }

    /// Waits until `n` mails arrived (at most 15 s) and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let arrived = self.shared.arrived.notified();
            let mails = self.received();
            if mails.len() >= n {
                return mails;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("expected {n} mails, got {}: {:?}", mails.len(), mails);
            }
        }
    }

    /// The mails to `to`.
    pub fn to(&self, to: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }
}

/// What a stopped sink received, to hand to the sink that resumes.
pub struct SinkMemory(Arc<Shared>);

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let _ = write.write_all(b"220 sink.test ESMTP ready\r\n").await;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if command.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if command.starts_with("MAIL FROM") {
            shared.attempts.fetch_add(1, Ordering::SeqCst);
            to.clear();
            if shared.refusing.load(Ordering::SeqCst) {
                b"451 4.3.0 try again later\r\n"
            } else {
                b"250 OK\r\n"
            }
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..]
                .trim()
                .trim_start_matches(':')
                .trim()
                .trim_matches(['<', '>'])
                .to_string();
            to.push(address);
            b"250 OK\r\n"
        } else if command == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut raw = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" {
                    break;
                }
                raw.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            shared.mails.lock().unwrap().push(Received {
                to: std::mem::take(&mut to),
                raw,
            });
            shared.arrived.notify_waiters();
            b"250 OK queued\r\n"
        } else if command == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else if command.starts_with("RSET") || command.starts_with("NOOP") {
            b"250 OK\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
