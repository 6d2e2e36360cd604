//! ListOffsets: a partition's earliest offset (-2), its latest (-1: the high watermark), the
//! record with the largest timestamp (-3), or the first offset at or after a timestamp, from
//! the leader's replica here.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::errors::{self, INVALID_REQUEST};
use crate::failure::Failure;
use crate::node::Node;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// The record with the largest timestamp (KIP-734, v7 on).
const MAX_TIMESTAMP: i64 = -3;

pub fn list_offsets(node: &Node, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partitions
            .iter()
            .map(|asked| {
                let mut answer = ListOffsetsPartitionResponse::default()
                    .with_partition_index(asked.partition_index);
                let epoch = Some(asked.current_leader_epoch).filter(|e| *e >= 0);
                match offset(node, &name, asked.partition_index, asked.timestamp, epoch) {
                    Ok((offset, timestamp, leader_epoch)) => {
                        answer.offset = offset;
                        answer.timestamp = timestamp;
                        // A field of v4 on: set in an older version, it cannot be encoded.
                        if version >= 4 {
                            answer.leader_epoch = leader_epoch;
                        }
                    }
                    Err(code) => answer.error_code = code,
                }
                answer
            })
            .collect();
        response.topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    response
}

/// The offset, its timestamp (-1 for earliest and latest) and the leader epoch.
fn offset(
    node: &Node,
    topic: &str,
    partition: i32,
    timestamp: i64,
    epoch: Option<i32>,
) -> Result<(i64, i64, i32), i16> {
    let code = |f: Failure| errors::code(&f);
    let replica = node.partition(topic, partition).map_err(code)?;
    replica.check_client_epoch(epoch).map_err(code)?;
    let leader_epoch = replica.leading_epoch().map_err(code)?;
    let state = replica.state();
    match timestamp {
        EARLIEST => Ok((state.log_start_offset, -1, leader_epoch)),
        LATEST => Ok((state.high_watermark, -1, leader_epoch)),
        t if t >= 0 => match replica.offset_for_timestamp(t) {
            // Only what consumers may read.
            Ok(Some((offset, at))) if offset < state.high_watermark => {
                Ok((offset, at, leader_epoch))
            }
            Ok(_) => Ok((-1, -1, leader_epoch)),
            Err(e) => Err(errors::code(&Failure::from(e))),
        },
        MAX_TIMESTAMP => match replica.offset_of_max_timestamp() {
            Ok(Some((offset, at))) => Ok((offset, at, leader_epoch)),
            Ok(None) => Ok((-1, -1, leader_epoch)),
            Err(e) => Err(errors::code(&Failure::from(e))),
        },
        _ => Err(INVALID_REQUEST),
    }
}
