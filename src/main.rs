//! `roster`: the binary. Parses the command line, builds the runtime, hands over to `cli`.

use clap::Parser;
use mimalloc::MiMalloc;
use roster::cli::{Cli, run};

/// Request handling allocates many small, short-lived objects (rows, JSON values); glibc's
/// allocator spent ~15% of the CPU on them under load.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (libmimalloc-sys builds v3 unless
/// its `v2` feature is on; it does not name this option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages stay mapped before they are given back (mimalloc multiplies it by
/// ten for its arenas: about a second). Purging at once (0) made a page that emptied and
/// filled again between requests cost a `madvise` and a fault per refill: 1.2 page faults
/// per request on PostgreSQL's cached paths, whose requests wait at the read barrier and
/// so hold their memory across more allocations; ≈ 10% of the CPU (BENCHMARKS.md).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// mimalloc purges only when it allocates or frees, so a process that goes idle right
/// after a burst (or an argon2 hash, 19 MiB) would keep that memory; a thread asks it to
/// purge what has expired once a second. The purge is program-wide (mimalloc's arenas).
fn purge_idle_memory() {
    let spawned = std::thread::Builder::new()
        .name("roster-mem-purge".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                // SAFETY: mimalloc's collect is thread-safe and may be called at any time.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = spawned {
        eprintln!("roster: memory is not given back while idle: {e}");
    }
}

fn main() -> std::process::ExitCode {
    // SAFETY: sets a plain integer option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    purge_idle_memory();
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
