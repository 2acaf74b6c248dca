//! `loadgen` binary: parses flags, runs, maps the result to an exit code (see `loadgen --help`).

use std::process::ExitCode;

use clap::Parser;
use loadgen::Exit;

// mimalloc instead of glibc's allocator: loading a large tokenizer.json (before the first request) is
// allocation-bound, and so is a record per request (BENCHMARKS.md, start-up and CPU per event).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages (a process-wide flag, so every thread's heap): mimalloc asks for
    // them, and then each first touch of its heap zeroes 2 MiB. loadgen's heap is tens of MB, so
    // that bought little and cost start-up: on VMs that hand freed memory back to the host (free
    // page reporting, e.g. Firecracker), a launch after a pause of a few seconds took 145 ms at the
    // median to its first request instead of 45 (BENCHMARKS.md, start-up). If the call fails,
    // nothing else changes.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = loadgen::Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(Exit::Fatal as u8);
        }
    };
    match rt.block_on(loadgen::run(args)) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(Exit::Fatal as u8)
        }
    }
}
