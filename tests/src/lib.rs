//! End-to-end tests across mock-server, loadgen and analyze live in `tests/tests/`; this library holds
//! what more than one of them needs.

use std::path::{Path, PathBuf};

/// Where `cargo test` put the workspace's binaries: beside the running test's own `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf();
    for b in ["loadgen", "analyze", "mock-server"] {
        assert!(
            dir.join(b).is_file(),
            "{} not built; run the suite with `cargo test --workspace`",
            dir.join(b).display()
        );
    }
    dir
}
