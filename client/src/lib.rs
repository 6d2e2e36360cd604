//! weir-client: producer, consumer and admin clients for Weir's gRPC API.
//!
//! Empty until the single-node broker issue.
