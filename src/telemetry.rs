//! Log output: human-readable or JSON lines, level from RUST_LOG (default info).

use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    access_log,
    config::LogFormat,
    log_writer::{self, FlushGuard},
};

/// Installs the subscriber; the returned guard flushes the log when dropped, so the caller
/// holds it until the program ends.
pub fn init(format: LogFormat) -> FlushGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log redirected to a file or a collector stays plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Lines are written by a thread of their own, in batches (`log_writer`).
    let (writer, guard) = log_writer::batched(std::io::stdout());
    if !ansi {
        access_log::write_directly(writer.clone(), matches!(format, LogFormat::Json));
    }
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
