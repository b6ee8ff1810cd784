//! Where log lines go: appended to a shared buffer that a thread of its own writes out
//! 10 ms after the first line of each batch.
//!
//! A request never waits on the write syscall, and — unlike tracing-appender's channel,
//! whose writer thread sleeps between lines and was woken (a futex call and a context
//! switch on one of the two cores) for nearly every access line — logging a line costs a
//! lock and a copy. Not lossy: when the buffer is full because the output is slower than
//! the lines, logging waits for the writer rather than dropping lines.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait before it is written: the writer gathers this long after the
/// first line of a batch, so a busy server writes about a hundred batches a second.
const GATHER_FOR: Duration = Duration::from_millis(10);
/// Past this, loggers wait for the writer (≈ 16k access lines).
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;
/// How long shutdown waits for the last lines: an output nobody reads (a full pipe) must
/// not hang the exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The writer waits for a first line; the logger that brings it wakes the writer.
    writer_idle: bool,
    closing: bool,
    /// The writer wrote everything and stopped.
    finished: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled by the first line after a quiet spell, and at shutdown.
    wake_writer: Condvar,
    /// Signalled when the writer has taken the pending lines, and when it stops.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave the bytes inconsistent; keep logging.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` for the subscriber: each line is one `write` into the shared buffer.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Writes out what is pending and stops the writer thread when dropped (waiting at most
/// `SHUTDOWN_WAIT`): hold it until the program ends.
pub struct FlushGuard {
    shared: Arc<Shared>,
}

/// Starts the writer thread for `output`.
pub fn batched<W: Write + Send + 'static>(output: W) -> (BatchedWriter, FlushGuard) {
    let shared = Arc::new(Shared::default());
    let started = std::thread::Builder::new()
        .name("roster-log".into())
        .spawn({
            let shared = shared.clone();
            move || {
                write_out(&shared, output);
                shared.lock().finished = true;
                shared.drained.notify_all();
            }
        });
    if started.is_err() {
        // No thread to write: lines are dropped rather than piling up.
        let mut pending = shared.lock();
        pending.closing = true;
        pending.finished = true;
    }
    let writer = BatchedWriter {
        shared: shared.clone(),
    };
    (writer, FlushGuard { shared })
}

fn write_out<W: Write>(shared: &Shared, mut output: W) {
    let mut batch = Vec::new();
    loop {
        let closing = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closing {
                pending.writer_idle = true;
                pending = shared
                    .wake_writer
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            pending.closing
        };
        if !closing {
            std::thread::sleep(GATHER_FOR);
        }
        let closing = {
            let mut pending = shared.lock();
            // Swap, keeping both buffers' capacity: no allocation once warmed up.
            std::mem::swap(&mut batch, &mut pending.bytes);
            pending.closing
        };
        shared.drained.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failed log write; the lines are dropped, not retried.
            let _ = output.write_all(&batch).and_then(|()| output.flush());
            batch.clear();
        } else if closing {
            return;
        }
    }
}

impl Write for &BatchedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.finished {
            // After shutdown nothing writes lines out any more.
            return Ok(line.len());
        }
        while pending.bytes.len() >= MAX_PENDING_BYTES && !pending.closing {
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        pending.bytes.extend_from_slice(line);
        if pending.writer_idle {
            pending.writer_idle = false;
            self.shared.wake_writer.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = &'a BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closing = true;
        self.shared.wake_writer.notify_one();
        let _ = self
            .shared
            .drained
            .wait_timeout_while(pending, SHUTDOWN_WAIT, |p| !p.finished);
    }
}

/// An output a test can read back (these tests, and `access_log`'s through a subscriber).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_from_every_thread_is_written_whole_and_by_shutdown() {
        let output = Captured::default();
        let (writer, guard) = batched(output.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("thread {t} line {i} {}\n", "x".repeat(i % 200));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 80_000);
        for t in 0..4 {
            let mut next = 0;
            for line in lines
                .iter()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
            {
                let expected = format!("thread {t} line {next} {}", "x".repeat(next % 200));
                assert_eq!(
                    *line, expected,
                    "lines of one thread stay whole and in order"
                );
                next += 1;
            }
            assert_eq!(next, 20_000);
        }
    }

    #[test]
    fn a_quiet_line_is_written_without_waiting_for_more() {
        let output = Captured::default();
        let (writer, _guard) = batched(output.clone());
        writer.make_writer().write_all(b"one line\n").unwrap();
        let started = std::time::Instant::now();
        while output.0.lock().unwrap().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(output.0.lock().unwrap().as_slice(), b"one line\n");
    }

    /// An output that never returns from a write, like a pipe nobody reads.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shutdown_does_not_hang_on_an_output_that_never_drains() {
        let (writer, guard) = batched(Stuck);
        writer.make_writer().write_all(b"never written\n").unwrap();
        std::thread::sleep(GATHER_FOR * 3);
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(
            waited >= SHUTDOWN_WAIT / 2 && waited < SHUTDOWN_WAIT * 3,
            "{waited:?}"
        );
    }
}
