//! Connection-level limits: a client must send a request's header block within
//! HEADER_READ_TIMEOUT_SECS of opening the connection (or of starting its next request),
//! so slow or silent clients cannot hold connections (and their memory) forever. Idle
//! keep-alive connections are closed by poem's idle timeout (IDLE_TIMEOUT_SECS).

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
    time::Sleep,
};

/// Wraps an acceptor so every connection it yields enforces the header deadline.
pub struct HeaderDeadline<A> {
    pub inner: A,
    pub timeout: Duration,
}

impl<A: Acceptor> Acceptor for HeaderDeadline<A> {
    type Io = Guarded<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((Guarded::new(io, self.timeout), local, remote, scheme))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a header block, against the deadline.
    Headers,
    /// Headers complete; the body and the handler are bounded by the request timeout.
    Request,
    /// A response was written; the next byte read starts the next request's headers.
    Answered,
}

const END_OF_HEADERS: &[u8; 4] = b"\r\n\r\n";

pub struct Guarded<IO> {
    io: IO,
    timeout: Duration,
    phase: Phase,
    /// How much of `\r\n\r\n` the bytes read so far end with.
    matched: usize,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            phase: Phase::Headers,
            matched: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
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
                self.deadline = None;
                self.matched = 0;
                return;
            }
        }
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
                    if this.phase == Phase::Answered {
                        this.phase = Phase::Headers;
                        this.matched = 0;
                        this.deadline = Some(Box::pin(tokio::time::sleep(this.timeout)));
                    }
                    if this.phase == Phase::Headers {
                        this.scan(read);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut() {
                Some(deadline) if this.phase == Phase::Headers => {
                    match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request headers not received in time",
                        ))),
                        Poll::Pending => Poll::Pending,
                    }
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::Request {
            self.phase = Phase::Answered;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
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
        let mut g = Guarded::new((), Duration::from_secs(1));
        g.scan(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(g.phase, Phase::Headers);
        g.scan(b"\n\r");
        assert_eq!(g.phase, Phase::Headers);
        g.scan(b"\n");
        assert_eq!(g.phase, Phase::Request);
        let mut g = Guarded::new((), Duration::from_secs(1));
        g.scan(b"\r\r\n\r\n");
        assert_eq!(g.phase, Phase::Request, "a stray CR restarts the match");
    }
}
