//! Where a group lives and its committed offsets: FindCoordinator, OffsetCommit and
//! OffsetFetch, on the same coordinator and `__consumer_offsets` as Weir's own groups, for
//! members of classic groups (fenced by their generation) and for consumers that assign their
//! partitions themselves and commit under a group id.

use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use weir_proto::{Reason, v1};

use super::errors::{self, INVALID_REQUEST};
use super::metadata::split_address;
use crate::coordinator::Refused;
use crate::failure::Failure;
use crate::node::Node;

/// Where the coordinator of group `key` is: its broker id and Kafka address.
async fn locate(node: &Node, key: &str) -> Result<(i32, String, i32), (i16, String)> {
    let id = node
        .coordinator_of(key)
        .await
        .map_err(|f| (errors::coordinator_code(&f), f.message))?;
    node.cluster_brokers()
        .into_iter()
        .find(|b| b.id == id)
        .and_then(|b| split_address(b.kafka_address.as_deref()?))
        .map(|(host, port)| (id, host, port))
        .ok_or_else(|| {
            let f = Failure::new(
                Reason::LeaderNotAvailable,
                format!("broker {id} coordinates the group but has no Kafka address"),
            );
            (errors::coordinator_code(&f), f.message)
        })
}

/// FindCoordinator: one key before v4, several from v4 (KIP-699), each answered on its own.
pub async fn find_coordinator(
    node: &Node,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    let keys: Vec<StrBytes> = if version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let mut answers = Vec::with_capacity(keys.len());
    for key in &keys {
        // Key type 1 is a transactional id: transactions are not served.
        let answer = if request.key_type != 0 {
            Err((
                INVALID_REQUEST,
                "only group coordinators are served (no transactions)".to_string(),
            ))
        } else {
            locate(node, key.as_str()).await
        };
        answers.push((key.clone(), answer));
    }
    if version >= 4 {
        response.coordinators = answers
            .into_iter()
            .map(|(key, answer)| {
                let found = Coordinator::default().with_key(key);
                match answer {
                    Ok((id, host, port)) => found
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port),
                    Err((code, message)) => found
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from_string(message))),
                }
            })
            .collect();
        return response;
    }
    match answers.pop().map(|(_, answer)| answer) {
        Some(Ok((id, host, port))) => {
            response.node_id = BrokerId(id);
            response.host = StrBytes::from_string(host);
            response.port = port;
        }
        Some(Err((code, message))) => {
            response.error_code = code;
            if version >= 1 {
                response.error_message = Some(StrBytes::from_string(message));
            }
            response.node_id = BrokerId(-1);
        }
        None => {}
    }
    response
}

pub async fn offset_commit(node: &Node, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let offsets: Vec<v1::PartitionCommit> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| v1::PartitionCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
            })
        })
        .collect();
    // One answer for every partition: the group's, or the first partition's that failed.
    let member = request.member_id.to_string();
    let instance = request
        .group_instance_id
        .as_ref()
        .map(ToString::to_string)
        .filter(|i| !i.is_empty());
    let committed = match node.group_coordinator(&group).await {
        Err(f) => Err(errors::coordinator_code(&f)),
        // A member, fenced by its generation (classic) or member epoch (KIP-848).
        Ok(()) if request.generation_id_or_member_epoch >= 0 || !member.is_empty() => node
            .coordinator
            .commit_member(
                node,
                &group,
                (
                    &member,
                    instance.as_deref(),
                    request.generation_id_or_member_epoch,
                ),
                &offsets,
            )
            .await
            .map_err(|refused| match refused {
                Refused::Group(e) => errors::group_code(&e),
                Refused::Core(f) => errors::coordinator_code(&f),
            }),
        // A consumer that assigns its partitions itself.
        Ok(()) => node
            .coordinator
            .commit_standalone(node, &group, &offsets)
            .await
            .map_err(|f| errors::coordinator_code(&f)),
    };
    let code = committed.err().unwrap_or(errors::NONE);
    let mut response = OffsetCommitResponse::default();
    response.topics = request
        .topics
        .into_iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    response
}

pub async fn offset_fetch(
    node: &Node,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    let mut response = OffsetFetchResponse::default();
    let refused = node
        .group_coordinator(&group)
        .await
        .err()
        .map(|f| errors::coordinator_code(&f));
    // v2 on: a group-level failure has the top-level code; before, every partition's.
    if let Some(code) = refused
        && version >= 2
    {
        response.error_code = code;
    }
    let committed = match refused {
        Some(_) => Vec::new(),
        None => node.coordinator.fetch(&group, &[]),
    };
    let answer = |topic: &str, partition: i32| {
        let offset = committed
            .iter()
            .find(|c| c.topic == topic && c.partition == partition)
            .map_or(-1, |c| c.offset);
        OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(offset)
            .with_error_code(refused.unwrap_or(errors::NONE))
    };
    response.topics = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                OffsetFetchResponseTopic::default()
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|p| answer(&name, *p))
                            .collect(),
                    )
                    .with_name(t.name)
            })
            .collect(),
        // Null (v2 on): every partition the group committed.
        None => {
            let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> =
                std::collections::BTreeMap::new();
            for c in &committed {
                by_topic.entry(&c.topic).or_default().push(c.partition);
            }
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                            name.to_string(),
                        )))
                        .with_partitions(partitions.iter().map(|p| answer(name, *p)).collect())
                })
                .collect()
        }
    };
    response
}
