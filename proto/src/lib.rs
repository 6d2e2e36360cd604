//! weir-proto: the wire contract of Weir, gRPC package `weir.v1` (services `Weir`, `Admin`,
//! `Groups`, `Controller` and `Replication`), generated from `proto/weir/v1/weir.proto`.
//!
//! Also the stable error reasons that travel in the `weir-reason` metadata of a failed call's
//! status and in per-partition results, so that brokers and clients agree on them.

#[allow(
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    unreachable_pub
)]
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

pub mod codec;
pub mod partitioner;
pub mod report;
pub mod secret;

pub use report::{Chain, error_chain, status_text};
pub use secret::{ClusterSecret, SECRET_HEADER};

/// Batches a broker remembers per idempotent producer and partition, and so the most produce
/// requests such a producer may have in flight per partition (as Kafka's five).
pub const MAX_IN_FLIGHT: usize = 5;

/// The metadata key of a failed call's status that holds its [`Reason`].
pub const REASON_METADATA: &str = "weir-reason";

/// The request header naming the cluster (`namespace/name`) a broker belongs to, on every call
/// to a controller. The operator's controller endpoint serves every cluster it manages and
/// routes by it; a standalone `weir-controller` serves one cluster and ignores it.
pub const CLUSTER_HEADER: &str = "x-weir-cluster";

/// Why a request failed, as a stable machine-readable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownTopic,
    InvalidTopic,
    TopicExists,
    UnknownPartition,
    InvalidRecord,
    RecordTooLarge,
    CorruptRecord,
    OffsetOutOfRange,
    UnknownConfig,
    InvalidConfig,
    InvalidRequest,
    NotEnoughReplicas,
    /// Written on the leader, but not (yet) on enough replicas: it may or may not survive.
    NotEnoughReplicasAfterAppend,
    StorageError,
    ShuttingDown,
    UnknownMemberId,
    StaleMemberEpoch,
    GroupNotEmpty,
    UnknownGroup,
    OutOfOrderSequence,
    InvalidProducerEpoch,
    /// The broker does not lead (or, for a replica fetch, follow) the partition.
    NotLeader,
    /// The request's leader epoch is older than the partition's (KIP-320).
    FencedLeaderEpoch,
    /// The request's leader epoch is newer than the broker knows yet.
    UnknownLeaderEpoch,
    /// The partition has no leader now (its in-sync replicas are down).
    LeaderNotAvailable,
    /// The broker is not registered with the controller (or registered again since).
    UnknownBroker,
    /// Another controller took over; this one's decisions no longer count.
    NotController,
    InvalidReplicationFactor,
    /// An ISR change was computed from an older partition state (compare-and-set lost).
    StalePartitionEpoch,
    /// The broker does not coordinate the group: ask the leader of its `__consumer_offsets`
    /// partition.
    NotCoordinator,
    /// The call is for the cluster's brokers and controller, and lacked their secret.
    ClusterAuthorizationFailed,
    /// The broker is starting: it has not applied the cluster's metadata yet. Retriable.
    BrokerStarting,
    /// A member asked for a session timeout outside the broker's bounds.
    InvalidSessionTimeout,
}

impl Reason {
    pub const ALL: [Reason; 33] = [
        Reason::UnknownTopic,
        Reason::InvalidTopic,
        Reason::TopicExists,
        Reason::UnknownPartition,
        Reason::InvalidRecord,
        Reason::RecordTooLarge,
        Reason::CorruptRecord,
        Reason::OffsetOutOfRange,
        Reason::UnknownConfig,
        Reason::InvalidConfig,
        Reason::InvalidRequest,
        Reason::NotEnoughReplicas,
        Reason::NotEnoughReplicasAfterAppend,
        Reason::StorageError,
        Reason::ShuttingDown,
        Reason::UnknownMemberId,
        Reason::StaleMemberEpoch,
        Reason::GroupNotEmpty,
        Reason::UnknownGroup,
        Reason::OutOfOrderSequence,
        Reason::InvalidProducerEpoch,
        Reason::NotLeader,
        Reason::FencedLeaderEpoch,
        Reason::UnknownLeaderEpoch,
        Reason::LeaderNotAvailable,
        Reason::UnknownBroker,
        Reason::NotController,
        Reason::InvalidReplicationFactor,
        Reason::StalePartitionEpoch,
        Reason::NotCoordinator,
        Reason::ClusterAuthorizationFailed,
        Reason::BrokerStarting,
        Reason::InvalidSessionTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownTopic => "UNKNOWN_TOPIC",
            Reason::InvalidTopic => "INVALID_TOPIC",
            Reason::TopicExists => "TOPIC_EXISTS",
            Reason::UnknownPartition => "UNKNOWN_PARTITION",
            Reason::InvalidRecord => "INVALID_RECORD",
            Reason::RecordTooLarge => "RECORD_TOO_LARGE",
            Reason::CorruptRecord => "CORRUPT_RECORD",
            Reason::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            Reason::UnknownConfig => "UNKNOWN_CONFIG",
            Reason::InvalidConfig => "INVALID_CONFIG",
            Reason::InvalidRequest => "INVALID_REQUEST",
            Reason::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            Reason::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            Reason::StorageError => "STORAGE_ERROR",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            Reason::StaleMemberEpoch => "STALE_MEMBER_EPOCH",
            Reason::GroupNotEmpty => "GROUP_NOT_EMPTY",
            Reason::UnknownGroup => "UNKNOWN_GROUP",
            Reason::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            Reason::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            Reason::NotLeader => "NOT_LEADER_OR_FOLLOWER",
            Reason::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            Reason::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            Reason::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            Reason::UnknownBroker => "UNKNOWN_BROKER",
            Reason::NotController => "NOT_CONTROLLER",
            Reason::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            Reason::StalePartitionEpoch => "STALE_PARTITION_EPOCH",
            Reason::NotCoordinator => "NOT_COORDINATOR",
            Reason::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            Reason::BrokerStarting => "BROKER_STARTING",
            Reason::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The gRPC code a whole-request failure with this reason carries.
    pub fn code(self) -> tonic::Code {
        match self {
            Reason::UnknownTopic | Reason::UnknownPartition | Reason::UnknownGroup => {
                tonic::Code::NotFound
            }
            Reason::UnknownMemberId
            | Reason::StaleMemberEpoch
            | Reason::GroupNotEmpty
            | Reason::OutOfOrderSequence
            | Reason::InvalidProducerEpoch
            | Reason::FencedLeaderEpoch
            | Reason::UnknownBroker
            | Reason::StalePartitionEpoch => tonic::Code::FailedPrecondition,
            Reason::TopicExists => tonic::Code::AlreadyExists,
            Reason::OffsetOutOfRange => tonic::Code::OutOfRange,
            Reason::NotEnoughReplicas
            | Reason::NotEnoughReplicasAfterAppend
            | Reason::ShuttingDown
            | Reason::NotLeader
            | Reason::UnknownLeaderEpoch
            | Reason::LeaderNotAvailable
            | Reason::NotController
            | Reason::NotCoordinator
            | Reason::BrokerStarting => tonic::Code::Unavailable,
            Reason::ClusterAuthorizationFailed => tonic::Code::Unauthenticated,
            Reason::CorruptRecord => tonic::Code::DataLoss,
            Reason::StorageError => tonic::Code::Internal,
            Reason::InvalidTopic
            | Reason::InvalidRecord
            | Reason::RecordTooLarge
            | Reason::UnknownConfig
            | Reason::InvalidConfig
            | Reason::InvalidReplicationFactor
            | Reason::InvalidSessionTimeout
            | Reason::InvalidRequest => tonic::Code::InvalidArgument,
        }
    }

    /// A failed call's status: `message` for people, the reason in the metadata.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.code(), message);
        status.metadata_mut().insert(
            REASON_METADATA,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }

    /// The reason of a failed call's status, if the broker gave one.
    pub fn of(status: &tonic::Status) -> Option<Reason> {
        status
            .metadata()
            .get(REASON_METADATA)?
            .to_str()
            .ok()
            .and_then(Reason::parse)
    }

    /// A per-partition error.
    pub fn error(self, message: impl Into<String>) -> v1::Error {
        v1::Error {
            reason: self.as_str().to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_a_status_round_trip() {
        for reason in Reason::ALL {
            let status = reason.status("something went wrong");
            assert_eq!(Reason::of(&status), Some(reason));
            assert_eq!(status.code(), reason.code());
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }
}
