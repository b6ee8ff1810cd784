//! `roster`: the binary. Parses the command line, builds the runtime, hands over to `cli`.

use clap::Parser;
use mimalloc::MiMalloc;
use roster::cli::{Cli, run};

/// Request handling allocates many small, short-lived objects (rows, JSON values); glibc's
/// allocator spent ~15% of the CPU on them under load.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (libmimalloc-sys builds v2 unless
/// its `v3` feature is on; it does not name this option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Give freed memory back to the system at once rather than after mimalloc's 10-100 ms
    // delay, which only runs on later allocations: an argon2 hash (19 MiB) or a burst of
    // requests otherwise stays resident while the process idles. Measured: 66 → 24 MB
    // anonymous memory after start-up, no loss of throughput (BENCHMARKS.md).
    // SAFETY: sets a plain integer option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // Blocking work (SQLite) waits for a database slot before it takes a thread, so at most
    // a dozen run at once; a slot freed just before its thread is idle again makes tokio
    // start another, and each thread keeps allocator pages of its own. 64 let 41 threads
    // accumulate under mixed load (130 MB anonymous); 16 keep it near 90 MB, no slower.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roster: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("roster: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
