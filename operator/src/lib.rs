//! weir-operator: CRD types and reconcilers for `Cluster`, `Topic` and `ConsumerGroup`.
//!
//! Empty until the operator issue.
