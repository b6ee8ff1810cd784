//! `roster`: the binary. Parses the command line, builds the runtime, hands over to `cli`.

use clap::Parser;
use mimalloc::MiMalloc;
use roster::cli::{Cli, run};

/// Request handling allocates many small, short-lived objects (rows, JSON values); glibc's
/// allocator spent ~15% of the CPU on them under load.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    // Blocking work (SQLite, argon2) waits for a database slot before it takes a thread,
    // so a modest ceiling is plenty and bounds the memory of idle threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
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
