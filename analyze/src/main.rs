//! `analyze` binary: parses flags, runs, prints the whole error chain. Exit codes: 0 ok, 2 error.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match analyze::run(analyze::Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("analyze: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
