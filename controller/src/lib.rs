//! weir-controller: the cluster's metadata and every decision about it.
//!
//! - [`model`]: brokers, topics, partitions (replicas, leader, leader epoch, ISR, partition
//!   epoch) and the controller epoch.
//! - [`decide`]: registration, liveness loss, leader election from the ISR (unclean only
//!   where a topic allows it), ISR changes as compare-and-set on the partition epoch, topic
//!   creation, growth and deletion. Pure functions of the state, unit-tested.
//! - [`placement`]: replicas and leaders spread evenly over brokers and racks,
//!   deterministically.
//! - [`store`]: the [`MetadataStore`] trait (conditional writes) and its file-backed store.
//! - [`topic_config`]: topic names and configs with Kafka's rules: the one place they are
//!   checked.

pub mod decide;
pub mod error;
pub mod model;
pub mod placement;
pub mod reassign;
pub mod rebalance;
pub mod server;
pub mod store;
pub mod topic_config;

pub use decide::{PartitionRef, Registered};
pub use error::ControllerError;
pub use model::{Broker, BrokerId, ClusterState, PartitionState, Topic};
pub use placement::place;
pub use store::{FileStore, MetadataStore, StoreError, Version};
pub use topic_config::TopicConfig;
