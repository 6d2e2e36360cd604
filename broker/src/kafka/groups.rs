//! The groups this broker coordinates, for Kafka's admin tools: ListGroups, DescribeGroups and
//! DeleteGroups, over the same coordinator as `weir group`. A classic group's members show as
//! they joined; a Weir group's members with their subscription and assignment in the consumer
//! protocol's encoding, as Kafka's tools decode them.

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
use crate::consumer_protocol;
use crate::coordinator::ClassicMemberView;
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
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group in request.groups {
        let mut described = DescribedGroup::default().with_group_id(group.clone());
        let found = match node.group_coordinator(&group.0).await {
            Ok(()) => node.coordinator.describe(node, &group.0).await,
            Err(f) => Err(f),
        };
        // A classic group shows as its members gave themselves: client, protocol, metadata.
        if found.is_ok()
            && let Some(classic) = node.coordinator.classic_members(&group.0)
        {
            described.group_state = StrBytes::from_static_str(classic.state);
            described.protocol_type = StrBytes::from_string(classic.protocol_type);
            described.protocol_data = StrBytes::from_string(classic.protocol);
            described.members = classic
                .members
                .into_iter()
                .map(|m| classic_member(m, version))
                .collect();
            response.groups.push(described);
            continue;
        }
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

fn classic_member(m: ClassicMemberView, version: i16) -> DescribedGroupMember {
    DescribedGroupMember::default()
        .with_member_id(StrBytes::from_string(m.member_id))
        // From v4.
        .with_group_instance_id(
            m.instance_id
                .filter(|_| version >= 4)
                .map(StrBytes::from_string),
        )
        .with_client_id(StrBytes::from_string(m.client_id))
        .with_client_host(StrBytes::from_string(m.client_host))
        .with_member_metadata(m.metadata)
        .with_member_assignment(m.assignment)
}

fn member(m: &v1::GroupMember) -> DescribedGroupMember {
    DescribedGroupMember::default()
        .with_member_id(StrBytes::from_string(m.member_id.clone()))
        .with_client_id(StrBytes::from_static_str("weir"))
        .with_member_metadata(consumer_protocol::subscription(&m.topics))
        .with_member_assignment(consumer_protocol::assignment(
            m.assignment
                .iter()
                .map(|t| (t.topic.as_str(), t.partitions.as_slice())),
        ))
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
