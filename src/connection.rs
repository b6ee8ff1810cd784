//! Connection-level limits: a client must send a request's header block within
//! HEADER_READ_TIMEOUT_SECS of opening the connection (or of starting its next request),
//! and a connection with no traffic for IDLE_TIMEOUT_SECS between requests is closed, so
//! slow, silent or idle clients cannot hold connections (and their memory) forever.
//!
//! Both deadlines share one timer per connection that is re-armed lazily: activity only
//! moves a recorded instant, and when the timer fires early it is pushed to the deadline
//! that instant implies. poem's own idle timeout woke a watcher task and re-registered a
//! timer on every read and write — three timer-wheel operations and a task wake-up per
//! request (≈ 8% of `/health/live`'s throughput, BENCHMARKS.md); this costs a clock read.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use poem::{
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// Wraps an acceptor so every connection it yields enforces both deadlines.
pub struct ConnectionDeadlines<A> {
    pub inner: A,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl<A: Acceptor> Acceptor for ConnectionDeadlines<A> {
    type Io = Guarded<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let io = Guarded::new(io, self.header_timeout, self.idle_timeout);
        Ok((io, local, remote, scheme))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a header block, against the header deadline.
    Headers,
    /// Headers complete; the body and the handler are bounded by the request timeout.
    Request,
    /// A response is being written or was written; the next byte read starts the next
    /// request's headers. Bounded by the idle timeout.
    Answered,
}

const END_OF_HEADERS: &[u8; 4] = b"\r\n\r\n";

pub struct Guarded<IO> {
    io: IO,
    header_timeout: Duration,
    idle_timeout: Duration,
    phase: Phase,
    /// How much of `\r\n\r\n` the bytes read so far end with.
    matched: usize,
    /// When the current header block began (the connection opened, or its first byte came).
    headers_started: Instant,
    /// The last read or write that moved bytes.
    last_activity: Instant,
    /// Armed for the earliest deadline seen; may fire early (see the module docs).
    timer: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, header_timeout: Duration, idle_timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            io,
            header_timeout,
            idle_timeout,
            phase: Phase::Headers,
            matched: 0,
            headers_started: now,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(
                now + header_timeout.min(idle_timeout),
            )),
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.matched = if b == END_OF_HEADERS[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == END_OF_HEADERS.len() {
                self.phase = Phase::Request;
                self.matched = 0;
                return;
            }
        }
    }

    /// When the connection is closed unless more traffic comes; none while a request is
    /// being handled (the request timeout bounds that).
    fn due(&self) -> Option<Instant> {
        let idle = self.last_activity + self.idle_timeout;
        match self.phase {
            Phase::Headers => Some((self.headers_started + self.header_timeout).min(idle)),
            Phase::Request => None,
            Phase::Answered => Some(idle),
        }
    }

    /// Called when the connection waits on I/O: the error that closes it once its
    /// deadline has passed, else Pending with the timer set to wake it by then.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(due) = self.due() else {
            return Poll::Pending;
        };
        if self.timer.deadline() > due {
            self.timer.as_mut().reset(due);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                let reason = match self.phase {
                    Phase::Headers => "request headers not received in time",
                    _ => "connection idle",
                };
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, reason));
            }
            // Fired for an earlier deadline that traffic has since moved on.
            self.timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.last_activity = Instant::now();
                    if this.phase == Phase::Answered {
                        this.phase = Phase::Headers;
                        this.matched = 0;
                        this.headers_started = this.last_activity;
                    }
                    if this.phase == Phase::Headers {
                        this.scan(read);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_expired(cx).map(Err),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.phase == Phase::Request {
            this.phase = Phase::Answered;
            // hyper polled its read before this write and will not poll it again until
            // the socket has bytes: the idle deadline has to be armed from here.
            if let Poll::Ready(e) = this.poll_expired(cx) {
                return Poll::Ready(Err(e));
            }
        }
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                this.last_activity = Instant::now();
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // A client that stops reading its response idles too.
            Poll::Pending => this.poll_expired(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.poll_expired(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_end_of_a_header_block_is_found_across_reads() {
        let mut g = Guarded::new((), Duration::from_secs(1), Duration::from_secs(1));
        g.scan(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(g.phase, Phase::Headers);
        g.scan(b"\n\r");
        assert_eq!(g.phase, Phase::Headers);
        g.scan(b"\n");
        assert_eq!(g.phase, Phase::Request);
        let mut g = Guarded::new((), Duration::from_secs(1), Duration::from_secs(1));
        g.scan(b"\r\r\n\r\n");
        assert_eq!(g.phase, Phase::Request, "a stray CR restarts the match");
    }

    /// Server side of a connection whose client is the returned stream.
    fn connection(
        header: Duration,
        idle: Duration,
    ) -> (Guarded<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(4096);
        (Guarded::new(server, header, idle), client)
    }

    async fn serve_one(server: &mut Guarded<tokio::io::DuplexStream>) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 256];
        let read = server.read(&mut buf).await?;
        assert!(read > 0, "a request");
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
    }

    #[tokio::test]
    async fn requests_that_keep_coming_keep_the_connection_and_silence_closes_it() {
        use tokio::io::AsyncWriteExt;
        let idle = Duration::from_millis(150);
        let (mut server, mut client) = connection(Duration::from_secs(10), idle);
        // Eight requests 60 ms apart: 480 ms in all, far past one idle period.
        for _ in 0..8 {
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            serve_one(&mut server).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let err = tokio::io::AsyncReadExt::read(&mut server, &mut buf)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "connection idle");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(80) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_header_block_sent_too_slowly_closes_the_connection() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) =
            connection(Duration::from_millis(200), Duration::from_secs(10));
        let started = Instant::now();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match tokio::io::AsyncReadExt::read(&mut server, &mut buf).await {
                    Ok(0) => return None,
                    Ok(_) => continue,
                    Err(e) => return Some(e),
                }
            }
        });
        // A byte every 50 ms: traffic, but never a whole header block.
        for byte in b"GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaa" {
            if client.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if reader.is_finished() {
                break;
            }
        }
        let err = reader
            .await
            .unwrap()
            .expect("closed by the deadline, not by the client");
        assert_eq!(err.to_string(), "request headers not received in time");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(180) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
