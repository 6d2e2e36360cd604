//! Why the controller refused a request. Each maps to one of the wire's reasons.

use crate::model::BrokerId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error(transparent)]
    Config(#[from] crate::topic_config::ConfigError),
    #[error("{0:?} is an internal topic: only Weir changes it")]
    InternalTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("{0}")]
    InvalidPartitions(String),
    #[error(
        "replication factor {requested} is impossible: {alive} broker(s) are alive (it must be between 1 and the live brokers)"
    )]
    InvalidReplicationFactor { requested: usize, alive: usize },
    #[error("broker {0} is not registered (or registered again since): register first")]
    UnknownBroker(BrokerId),
    #[error("broker {broker} does not lead {topic}-{partition}; the leader is {leader:?}")]
    NotLeader {
        topic: String,
        partition: i32,
        broker: BrokerId,
        leader: Option<BrokerId>,
    },
    #[error(
        "stale state for {topic}-{partition}: asked with leader epoch {leader_epoch} and partition epoch {partition_epoch}, the controller has {current_leader_epoch} and {current_partition_epoch}"
    )]
    StaleEpoch {
        topic: String,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        current_leader_epoch: i32,
        current_partition_epoch: i32,
    },
    #[error("invalid replicas for {topic}-{partition}: {message}")]
    InvalidReplicas {
        topic: String,
        partition: i32,
        message: String,
    },
    #[error("invalid ISR for {topic}-{partition}: {message}")]
    InvalidIsr {
        topic: String,
        partition: i32,
        message: String,
    },
}
