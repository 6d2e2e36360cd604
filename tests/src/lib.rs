//! weir-tests: multi-process integration and end-to-end tests.
//!
//! Storage crash and damage tests live with `weir-storage` (they need only one process and
//! the crate itself); this crate gets its tests when there are brokers to start.
