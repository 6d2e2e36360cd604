//! Kafka's error codes for the broker core's failures. Each keeps Kafka's meaning, so a
//! client retries what Kafka's clients retry (leadership, availability, timeouts) and gives
//! up on the rest.

use weir_proto::Reason;

use crate::classic::Error as GroupError;

use crate::failure::Failure;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_CONFIG: i16 = 40;
pub const NOT_CONTROLLER: i16 = 41;
pub const INVALID_REQUEST: i16 = 42;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const STALE_MEMBER_EPOCH: i16 = 113;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;

/// The Kafka error code for a failure of the broker core.
pub fn code(failure: &Failure) -> i16 {
    match failure.reason {
        Reason::UnknownTopic | Reason::UnknownPartition => UNKNOWN_TOPIC_OR_PARTITION,
        Reason::InvalidTopic => INVALID_TOPIC_EXCEPTION,
        Reason::TopicExists => TOPIC_ALREADY_EXISTS,
        Reason::InvalidRecord | Reason::CorruptRecord => CORRUPT_MESSAGE,
        Reason::RecordTooLarge => MESSAGE_TOO_LARGE,
        Reason::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        Reason::UnknownConfig | Reason::InvalidConfig => INVALID_CONFIG,
        Reason::InvalidRequest => INVALID_REQUEST,
        Reason::NotEnoughReplicas => NOT_ENOUGH_REPLICAS,
        Reason::NotEnoughReplicasAfterAppend => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        Reason::StorageError => KAFKA_STORAGE_ERROR,
        Reason::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        Reason::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
        // Retriable: the client refreshes its metadata and tries the new leader.
        Reason::NotLeader | Reason::BrokerStarting | Reason::ShuttingDown => NOT_LEADER_OR_FOLLOWER,
        Reason::LeaderNotAvailable => LEADER_NOT_AVAILABLE,
        Reason::FencedLeaderEpoch => FENCED_LEADER_EPOCH,
        Reason::UnknownLeaderEpoch => UNKNOWN_LEADER_EPOCH,
        Reason::NotController => NOT_CONTROLLER,
        Reason::InvalidReplicationFactor => INVALID_REPLICATION_FACTOR,
        Reason::NotCoordinator => NOT_COORDINATOR,
        Reason::UnknownMemberId => UNKNOWN_MEMBER_ID,
        Reason::UnknownGroup => GROUP_ID_NOT_FOUND,
        Reason::GroupNotEmpty => NON_EMPTY_GROUP,
        Reason::InvalidSessionTimeout => INVALID_SESSION_TIMEOUT,
        Reason::StaleMemberEpoch => STALE_MEMBER_EPOCH,
        _ => UNKNOWN_SERVER_ERROR,
    }
}

/// The code for a failure of a request to a coordinator (of a group, or of producer ids):
/// one that cannot be reached yet is `COORDINATOR_NOT_AVAILABLE`, which Kafka's clients retry
/// after looking for the coordinator again.
pub fn coordinator_code(failure: &Failure) -> i16 {
    match failure.reason {
        Reason::NotController | Reason::LeaderNotAvailable | Reason::BrokerStarting => {
            COORDINATOR_NOT_AVAILABLE
        }
        // The coordinator's own `__consumer_offsets` partition moved away while it wrote.
        Reason::NotLeader => NOT_COORDINATOR,
        _ => code(failure),
    }
}

/// The code for a refusal of a classic group (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
/// a member's OffsetCommit).
pub fn group_code(refused: &GroupError) -> i16 {
    match refused {
        GroupError::UnknownMemberId => UNKNOWN_MEMBER_ID,
        GroupError::IllegalGeneration => ILLEGAL_GENERATION,
        GroupError::RebalanceInProgress => REBALANCE_IN_PROGRESS,
        GroupError::MemberIdRequired(_) => MEMBER_ID_REQUIRED,
        GroupError::FencedInstanceId => FENCED_INSTANCE_ID,
        GroupError::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
    }
}
