//! End-to-end tests across mock-server, loadgen and analyze live in `tests/tests/`; this library holds
//! nothing but this note, so the crate has a target that `cargo test --workspace` can build.
