//! OffsetForLeaderEpoch (KIP-101, KIP-320): where an epoch ended in the leader's log, so that
//! a consumer that saw records of an older leader can tell whether they were truncated.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::errors;
use crate::node::Node;

pub fn offset_for_leader_epoch(
    node: &Node,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let partitions = topic
            .partitions
            .iter()
            .map(|asked| {
                let mut answer = EpochEndOffset::default().with_partition(asked.partition);
                let epoch = Some(asked.current_leader_epoch).filter(|e| *e >= 0);
                let found = node
                    .partition(&name, asked.partition)
                    .and_then(|p| p.check_client_epoch(epoch).map(|()| p));
                match found {
                    Ok(partition) => match partition.end_offset_for_epoch(asked.leader_epoch) {
                        Some((leader_epoch, end_offset)) => {
                            answer.leader_epoch = leader_epoch;
                            answer.end_offset = end_offset;
                        }
                        // Kafka's answer for an epoch the log does not know.
                        None => {
                            answer.leader_epoch = -1;
                            answer.end_offset = -1;
                        }
                    },
                    Err(f) => answer.error_code = errors::code(&f),
                }
                answer
            })
            .collect();
        response.topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    response
}
