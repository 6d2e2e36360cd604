//! The groups this broker coordinates, for Kafka's admin tools: ListGroups, DescribeGroups and
//! DeleteGroups, over the same coordinator as `weir group`. A Weir group's members show with
//! their subscription and assignment in the consumer protocol's encoding, as Kafka's tools
//! decode them.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use weir_proto::{Reason, v1};

use super::errors;
use crate::node::Node;

/// Kafka's protocol type of consumer groups.
const CONSUMER: &str = "consumer";

/// A Weir group's state as Kafka's tools name group states: a group whose members are
/// still taking up their assignment is completing its rebalance.
fn kafka_state(state: &str) -> &str {
    match state {
        "Reconciling" => "CompletingRebalance",
        other => other,
    }
}

pub fn list_groups(node: &Node, request: ListGroupsRequest) -> ListGroupsResponse {
    let wanted: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string().to_ascii_lowercase())
        .collect();
    let mut response = ListGroupsResponse::default();
    response.groups = node
        .coordinator
        .list()
        .into_iter()
        .filter(|g| node.coordinates(&g.group_id))
        .filter(|g| {
            wanted.is_empty() || wanted.contains(&kafka_state(&g.state).to_ascii_lowercase())
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_static_str(CONSUMER))
                .with_group_state(StrBytes::from_string(kafka_state(&g.state).to_string()))
        })
        .collect();
    response
}

pub async fn describe_groups(
    node: &Node,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group in request.groups {
        let mut described = DescribedGroup::default().with_group_id(group.clone());
        let found = match node.group_coordinator(&group.0).await {
            Ok(()) => node.coordinator.describe(node, &group.0).await,
            Err(f) => Err(f),
        };
        match found {
            Ok(g) => {
                described.group_state = StrBytes::from_string(kafka_state(&g.state).to_string());
                described.protocol_type = StrBytes::from_static_str(CONSUMER);
                described.members = g.members.iter().map(member).collect();
            }
            // Kafka answers an unknown group as a dead one, not as an error.
            Err(f) if f.reason == Reason::UnknownGroup => {
                described.group_state = StrBytes::from_static_str("Dead");
            }
            Err(f) => described.error_code = errors::coordinator_code(&f),
        }
        response.groups.push(described);
    }
    response
}

fn member(m: &v1::GroupMember) -> DescribedGroupMember {
    DescribedGroupMember::default()
        .with_member_id(StrBytes::from_string(m.member_id.clone()))
        .with_client_id(StrBytes::from_static_str("weir"))
        .with_member_metadata(subscription(&m.topics))
        .with_member_assignment(assignment(&m.assignment))
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
    out.put_slice(s.as_bytes());
}

/// ConsumerProtocolSubscription v0: the topics, no user data.
fn subscription(topics: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(topics.len() as i32);
    for topic in topics {
        put_string(&mut out, topic);
    }
    out.put_i32(-1);
    out.freeze()
}

/// ConsumerProtocolAssignment v0: the partitions of each topic, no user data.
fn assignment(assigned: &[v1::TopicPartitions]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(assigned.len() as i32);
    for topic in assigned {
        put_string(&mut out, &topic.topic);
        out.put_i32(topic.partitions.len() as i32);
        for partition in &topic.partitions {
            out.put_i32(*partition);
        }
    }
    out.put_i32(-1);
    out.freeze()
}

pub async fn delete_groups(node: &Node, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group in request.groups_names {
        let deleted = match node.group_coordinator(&group.0).await {
            Ok(()) => node.coordinator.delete(node, &group.0).await,
            Err(f) => Err(f),
        };
        let mut result = DeletableGroupResult::default().with_group_id(group);
        if let Err(f) = deleted {
            result.error_code = errors::coordinator_code(&f);
        }
        response.results.push(result);
    }
    response
}
