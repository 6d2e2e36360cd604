//! Metadata: the brokers (their Kafka addresses) and the topics with each partition's leader,
//! leader epoch, replicas and ISR, as this broker last heard them from the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{self, LEADER_NOT_AVAILABLE, NONE};
use crate::node::Node;
use crate::topic::{Topic, is_internal};

/// Topics are not created by asking for their metadata (Kafka's
/// `auto.create.topics.enable=false`): a name nobody created is `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn metadata(node: &Node, request: MetadataRequest, version: i16) -> MetadataResponse {
    let brokers = node.cluster_brokers();
    let mut response = MetadataResponse::default();
    response.brokers = kafka_brokers(&brokers)
        .map(|(id, host, port, rack)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = id;
            broker.host = host;
            broker.port = port;
            broker.rack = rack;
            broker
        })
        .collect();
    response.cluster_id = Some(cluster_id(node));
    // Every broker forwards admin requests to the controller: clients may send them here.
    response.controller_id = BrokerId(node.config.broker_id);
    let alive: Vec<i32> = brokers.iter().filter(|b| b.alive).map(|b| b.id).collect();
    let mut by_id = Vec::new();
    let names: Vec<String> = match request.topics {
        // Null (or, before v1, empty): every topic.
        None => node.topic_names(),
        Some(topics) if topics.is_empty() && version == 0 => node.topic_names(),
        Some(topics) => topics
            .into_iter()
            .filter_map(|t| match t.name {
                Some(name) => Some(name.0.to_string()),
                None => {
                    by_id.push(t.topic_id);
                    None
                }
            })
            .collect(),
    };
    response.topics = names
        .into_iter()
        .map(|name| match node.topic(&name) {
            Ok(topic) => describe(&topic, &alive),
            Err(failure) => {
                let mut unknown = MetadataResponseTopic::default();
                unknown.name = Some(TopicName(StrBytes::from_string(name)));
                unknown.error_code = errors::code(&failure);
                unknown
            }
        })
        .collect();
    // v10 on, a topic may be asked for by id.
    for id in by_id {
        response.topics.push(match node.topic_by_id(id) {
            Some(topic) => describe(&topic, &alive),
            None => {
                let mut unknown = MetadataResponseTopic::default();
                unknown.topic_id = id;
                unknown.error_code = errors::UNKNOWN_TOPIC_ID;
                unknown
            }
        });
    }
    response
}

fn describe(topic: &Topic, alive: &[i32]) -> MetadataResponseTopic {
    let mut described = MetadataResponseTopic::default();
    described.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    described.topic_id = uuid::Uuid::parse_str(&topic.id).unwrap_or_default();
    described.is_internal = is_internal(&topic.name);
    described.partitions = topic
        .layout
        .iter()
        .map(|p| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = p.partition;
            partition.error_code = if p.leader.is_some() {
                NONE
            } else {
                LEADER_NOT_AVAILABLE
            };
            partition.leader_id = BrokerId(p.leader.unwrap_or(-1));
            partition.leader_epoch = p.leader_epoch;
            partition.replica_nodes = p.replicas.iter().copied().map(BrokerId).collect();
            partition.isr_nodes = p.isr.iter().copied().map(BrokerId).collect();
            partition.offline_replicas = p
                .replicas
                .iter()
                .filter(|r| !alive.contains(r))
                .copied()
                .map(BrokerId)
                .collect();
            partition
        })
        .collect();
    described
}

/// DescribeCluster: the brokers at their Kafka addresses, the cluster id and this broker as
/// the one that takes admin requests.
pub fn describe_cluster(node: &Node) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = cluster_id(node);
    response.controller_id = BrokerId(node.config.broker_id);
    response.brokers = kafka_brokers(&node.cluster_brokers())
        .map(|(id, host, port, rack)| {
            let mut broker = DescribeClusterBroker::default();
            broker.broker_id = id;
            broker.host = host;
            broker.port = port;
            broker.rack = rack;
            broker
        })
        .collect();
    response
}

/// The cluster's id as Kafka clients see it: its name (the operator's `namespace/name`), or
/// `weir` for a broker of its own.
fn cluster_id(node: &Node) -> StrBytes {
    StrBytes::from_string(
        node.config
            .cluster
            .clone()
            .unwrap_or_else(|| "weir".to_string()),
    )
}

/// Each broker with a Kafka address: its id, host, port and rack.
fn kafka_brokers(
    brokers: &[weir_proto::v1::ClusterBroker],
) -> impl Iterator<Item = (BrokerId, StrBytes, i32, Option<StrBytes>)> + '_ {
    brokers.iter().filter_map(|b| {
        let (host, port) = split_address(b.kafka_address.as_deref()?)?;
        Some((
            BrokerId(b.id),
            StrBytes::from_string(host),
            port,
            b.rack.clone().map(StrBytes::from_string),
        ))
    })
}

/// `host:port` (the host may be a bracketed IPv6 address).
pub(super) fn split_address(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}
