//! Log output: human-readable or JSON lines, level from RUST_LOG (default info).

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Lines waiting for the log thread (≈ 300 bytes each).
const LOG_QUEUE_LINES: usize = 16_384;
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Installs the subscriber; the returned guard flushes the log when dropped, so the caller
/// holds it until the program ends.
pub fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log redirected to a file or a collector stays plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Lines are written by a thread of their own: a request never waits on the write
    // syscall. That thread drains every queued line into a buffer and flushes once, so a
    // burst costs a few syscalls, not one per line (unbuffered, it fell behind under load
    // and its queue held tens of MB). Not lossy: when the queue is full, logging waits
    // rather than drops lines; the bound keeps the queue's memory to a few MB.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stdout(),
        ));
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    guard
}
