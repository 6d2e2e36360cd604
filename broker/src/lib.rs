//! weir-broker: the data plane (partitions, replication, consumer groups, the gRPC server).
//!
//! Empty until the single-node broker issue. Partition logs come from `weir-storage`.
