//! `mock-server` binary: parses flags and runs the server. Exit codes: 0 clean shutdown, 2 error.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = mock_server::Args::from_env();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-server: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(mock_server::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-server: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
