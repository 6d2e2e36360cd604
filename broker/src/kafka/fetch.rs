//! Fetch: whole stored batches from the one holding each fetch offset, with the high
//! watermark and log start offset, under the response's and each partition's byte limits,
//! long-polling until `min_bytes` have arrived or `max_wait` has passed. Fetch sessions
//! (KIP-227) are declined (session id 0): every request names its partitions.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::time::Instant;

use super::errors;
use crate::node::{MAX_FETCH_BYTES, Node};
use crate::partition::Partition;

pub async fn fetch(node: &Node, request: FetchRequest) -> FetchResponse {
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
        .min(node.config.fetch_max_wait);
    let deadline = Instant::now() + max_wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    loop {
        let pass = read_all(node, &request);
        let left = deadline.saturating_duration_since(Instant::now());
        // As Kafka's delayed fetch: answered once min_bytes are there, or a partition has more
        // than the byte limits let this pass return (waiting would not add any), or failed.
        if pass.bytes >= min_bytes
            || pass.held_back
            || pass.failed
            || left.is_zero()
            || pass.followed.is_empty()
        {
            for (topic, bytes, records) in pass.read {
                node.metrics.fetched(&topic, bytes, records);
            }
            return pass.response;
        }
        let followed = pass.followed;
        // Until any partition has more than this read saw, or the wait is over.
        let mut waits = tokio::task::JoinSet::new();
        for (partition, seen) in followed {
            waits.spawn(async move { partition.wait_past(seen, left).await });
        }
        let _ = tokio::time::timeout(left, waits.join_next()).await;
    }
}

/// One pass over every partition asked for.
struct Pass {
    response: FetchResponse,
    /// Record bytes in the response.
    bytes: usize,
    /// Each partition read, with the offset its next record would have.
    followed: Vec<(Arc<Partition>, i64)>,
    /// Per partition read: topic, bytes, offsets (for the metrics).
    read: Vec<(String, u64, i64)>,
    /// Some partition has records past what its byte limit let this pass return.
    held_back: bool,
    /// Some partition answered an error.
    failed: bool,
}

fn read_all(node: &Node, request: &FetchRequest) -> Pass {
    let mut budget = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .clamp(1, MAX_FETCH_BYTES);
    let mut total = 0;
    let mut followed = Vec::new();
    let mut read = Vec::new();
    let mut held_back = false;
    let mut response = FetchResponse::default();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for asked in &topic.partitions {
            let mut data = PartitionData::default().with_partition_index(asked.partition);
            let epoch = Some(asked.current_leader_epoch).filter(|e| *e >= 0);
            let limit = usize::try_from(asked.partition_max_bytes)
                .unwrap_or(0)
                .min(budget);
            // KIP-74: once the response has records, a partition over the budget waits for
            // the next fetch; the first one always gets at least one batch.
            let room = if total == 0 { limit.max(1) } else { limit };
            // With no room left, only the partition's offsets (from its leader) go back.
            let outcome = if room == 0 {
                node.partition(&name, asked.partition)
                    .and_then(|p| p.check_client_epoch(epoch).map(|()| (None, p)))
            } else {
                node.read(&name, asked.partition, asked.fetch_offset, room, epoch)
            };
            match outcome {
                Ok((slice, partition)) => {
                    let state = partition.state();
                    data.high_watermark = state.high_watermark;
                    data.last_stable_offset = state.high_watermark;
                    data.log_start_offset = state.log_start_offset;
                    let seen = slice.as_ref().map_or(asked.fetch_offset, |s| s.next_offset);
                    held_back |= seen < state.high_watermark;
                    if let Some(slice) = slice {
                        read.push((
                            name.clone(),
                            slice.bytes.len() as u64,
                            slice.next_offset - slice.first_offset,
                        ));
                        total += slice.bytes.len();
                        budget = budget.saturating_sub(slice.bytes.len());
                        data.records = Some(slice.bytes);
                    }
                    followed.push((partition, seen));
                }
                Err(f) => data.error_code = errors::code(&f),
            }
            partitions.push(data);
        }
        response.responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    let failed = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.error_code != errors::NONE);
    Pass {
        response,
        bytes: total,
        followed,
        read,
        held_back,
        failed,
    }
}
