//! weir-controller: the metadata state machine, placement and leader election.
//!
//! Empty until the replication issue.
