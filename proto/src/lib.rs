//! weir-proto: the wire contract of Weir (gRPC services and messages, package `weir.v1`).
//!
//! Empty until the single-node broker issue: the `.proto` files and their generated code
//! land here, and nothing else does.
