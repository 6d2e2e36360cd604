//! weir-tests: multi-process integration tests. The tests live in `tests/`; their harness
//! starts the `weir-broker-under-test` and `weir-under-test` binaries this package builds
//! from the broker's and the CLI's own `main.rs`.
