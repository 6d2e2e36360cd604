//! ConsumerGroupHeartbeat (KIP-848): Kafka consumers with `group.protocol=consumer` are members
//! of Weir's own groups, whose protocol KIP-848 is (the coordinator assigns, revokes before it
//! reassigns, fences by member epoch), through the same coordinator heartbeat as
//! `weir consume --group`. Topics travel by id on this API, by name in the coordinator.

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use weir_proto::{Reason, v1};

use super::errors::{self, FENCED_MEMBER_EPOCH, INVALID_REQUEST};
use crate::failure::Failure;
use crate::node::Node;

/// A static member leaving for now (KIP-848): it leaves, as a dynamic one does.
const STATIC_LEAVE: i32 = -2;

fn heartbeat_code(failure: &Failure) -> i16 {
    match failure.reason {
        Reason::StaleMemberEpoch => FENCED_MEMBER_EPOCH,
        _ => errors::coordinator_code(failure),
    }
}

pub async fn consumer_group_heartbeat(
    node: &Node,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let mut response = ConsumerGroupHeartbeatResponse::default();
    let group = request.group_id.0.to_string();
    if request
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        response.error_code = INVALID_REQUEST;
        response.error_message = Some(StrBytes::from_static_str(
            "subscribing by regular expression is not served: name the topics",
        ));
        return response;
    }
    // What the member owns, by name (ids of topics this broker does not know are left out);
    // null: unchanged since its last heartbeat.
    let owned = match &request.topic_partitions {
        Some(owned) => owned
            .iter()
            .filter_map(|owned| {
                node.topic_by_id(owned.topic_id)
                    .map(|topic| v1::TopicPartitions {
                        topic: topic.name.clone(),
                        partitions: owned.partitions.clone(),
                    })
            })
            .collect(),
        None => node
            .coordinator
            .owned_by(&group, request.member_id.as_str()),
    };
    let heartbeat = v1::GroupHeartbeatRequest {
        group_id: group.clone(),
        member_id: request.member_id.to_string(),
        member_epoch: match request.member_epoch {
            STATIC_LEAVE => -1,
            epoch => epoch,
        },
        topics: request
            .subscribed_topic_names
            .iter()
            .flatten()
            .map(|t| t.0.to_string())
            .collect(),
        owned,
        session_timeout_ms: 0,
    };
    let answer = match node.group_coordinator(&group).await {
        Ok(()) => node.coordinator.heartbeat(node, heartbeat).await,
        Err(f) => Err(f),
    };
    match answer {
        Ok(answer) => {
            response.member_id = Some(StrBytes::from_string(answer.member_id));
            response.member_epoch = answer.member_epoch;
            response.heartbeat_interval_ms = answer.heartbeat_interval_ms;
            if answer.member_epoch >= 0 {
                let topic_partitions = answer
                    .assignment
                    .into_iter()
                    .filter_map(|assigned| {
                        let topic = node.topic(&assigned.topic).ok()?;
                        let id = uuid::Uuid::parse_str(&topic.id).ok()?;
                        Some(
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(assigned.partitions),
                        )
                    })
                    .collect();
                response.assignment =
                    Some(Assignment::default().with_topic_partitions(topic_partitions));
            }
        }
        Err(f) => {
            tracing::debug!(group, error = %f.message, "ConsumerGroupHeartbeat refused");
            response.error_code = heartbeat_code(&f);
            response.error_message = Some(StrBytes::from_string(f.message));
        }
    }
    response
}
