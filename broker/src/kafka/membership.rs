//! Group membership under Kafka's classic protocol: JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup, on the same coordinator (and `__consumer_offsets`) as Weir's own groups. The
//! rules are the coordinator's (`crate::classic`); this module only translates.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use crate::classic::{Join, Sync};
use crate::coordinator::Refused;
use crate::node::Node;

fn text(s: &StrBytes) -> String {
    s.to_string()
}

fn optional(s: Option<&StrBytes>) -> Option<String> {
    s.map(text).filter(|s| !s.is_empty())
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The Kafka error code of a refusal.
fn code(refused: &Refused) -> i16 {
    match refused {
        Refused::Group(e) => errors::group_code(e),
        Refused::Core(f) => errors::coordinator_code(f),
    }
}

/// A JoinGroup waits here until the group's next generation starts.
pub async fn join_group(
    node: &Node,
    request: JoinGroupRequest,
    version: i16,
    client: (&str, &str),
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    let join = Join {
        member_id: text(&request.member_id),
        instance_id: optional(request.group_instance_id.as_ref()),
        client_id: client.0.to_string(),
        client_host: client.1.to_string(),
        session_timeout: millis(request.session_timeout_ms),
        // Before v1 the session timeout was the rebalance timeout too.
        rebalance_timeout: millis(if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        }),
        protocol_type: text(&request.protocol_type),
        protocols: request
            .protocols
            .iter()
            .map(|p| (text(&p.name), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let joined = match node.group_coordinator(&group).await {
        Ok(()) => node.coordinator.join(&group, join).await,
        Err(f) => Err(Refused::Core(f)),
    };
    let mut response = JoinGroupResponse::default();
    match joined {
        Ok(joined) => {
            response.generation_id = joined.generation;
            response.protocol_type = joined.protocol_type.map(StrBytes::from_string);
            response.protocol_name = joined.protocol.map(StrBytes::from_string);
            response.leader = StrBytes::from_string(joined.leader);
            response.member_id = StrBytes::from_string(joined.member_id);
            response.members = joined
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(
                            instance.filter(|_| version >= 5).map(StrBytes::from_string),
                        )
                        .with_metadata(metadata)
                })
                .collect();
        }
        Err(refused) => {
            response.error_code = code(&refused);
            response.generation_id = -1;
            if let Refused::Group(crate::classic::Error::MemberIdRequired(id)) = refused {
                response.member_id = StrBytes::from_string(id);
            }
        }
    }
    // Before v7 the protocol name is not nullable.
    if version < 7 && response.protocol_name.is_none() {
        response.protocol_name = Some(StrBytes::default());
    }
    if version < 7 {
        response.protocol_type = None;
    }
    response
}

/// A SyncGroup: the leader's hands the assignment out; a follower's waits for it.
pub async fn sync_group(node: &Node, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let sync = Sync {
        member_id: text(&request.member_id),
        instance_id: optional(request.group_instance_id.as_ref()),
        generation: request.generation_id,
        protocol_type: optional(request.protocol_type.as_ref()),
        protocol: optional(request.protocol_name.as_ref()),
    };
    let assignments: Vec<(String, Bytes)> = request
        .assignments
        .iter()
        .map(|a| (text(&a.member_id), a.assignment.clone()))
        .collect();
    let synced = match node.group_coordinator(&group).await {
        Ok(()) => {
            node.coordinator
                .sync(node, &group, sync.clone(), assignments)
                .await
        }
        Err(f) => Err(Refused::Core(f)),
    };
    let mut response = SyncGroupResponse::default();
    match synced {
        Ok(assignment) => {
            response.assignment = assignment;
            response.protocol_type = request.protocol_type;
            response.protocol_name = request.protocol_name;
        }
        Err(refused) => response.error_code = code(&refused),
    }
    response
}

pub async fn heartbeat(node: &Node, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    let beat = match node.group_coordinator(&group).await {
        Ok(()) => node.coordinator.classic_heartbeat(
            &group,
            &text(&request.member_id),
            optional(request.group_instance_id.as_ref()).as_deref(),
            request.generation_id,
        ),
        Err(f) => Err(Refused::Core(f)),
    };
    let mut response = HeartbeatResponse::default();
    if let Err(refused) = beat {
        response.error_code = code(&refused);
    }
    response
}

/// A LeaveGroup: one member (before v3) or several, each with its own answer.
pub async fn leave_group(
    node: &Node,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version < 3 {
        vec![(text(&request.member_id), None)]
    } else {
        request
            .members
            .iter()
            .map(|m| (text(&m.member_id), optional(m.group_instance_id.as_ref())))
            .collect()
    };
    let left = match node.group_coordinator(&group).await {
        Ok(()) => node.coordinator.leave(&group, &members),
        Err(f) => Err(Refused::Core(f)),
    };
    let mut response = LeaveGroupResponse::default();
    match left {
        Ok(answers) => {
            let codes: Vec<i16> = answers
                .iter()
                .map(|a| {
                    a.as_ref()
                        .map_or_else(errors::group_code, |()| errors::NONE)
                })
                .collect();
            if version < 3 {
                response.error_code = codes.first().copied().unwrap_or(errors::NONE);
            } else {
                response.members = request
                    .members
                    .into_iter()
                    .zip(codes)
                    .map(|(m, code)| {
                        MemberResponse::default()
                            .with_member_id(m.member_id)
                            .with_group_instance_id(m.group_instance_id)
                            .with_error_code(code)
                    })
                    .collect();
            }
        }
        Err(refused) => response.error_code = code(&refused),
    }
    response
}
