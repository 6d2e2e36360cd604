//! Fetch: whole stored batches from the one holding each fetch offset, with the high
//! watermark and log start offset, under the response's and each partition's byte limits,
//! long-polling until `min_bytes` have arrived or `max_wait` has passed. Fetch sessions
//! (KIP-227) are declined (session id 0): every request names its partitions.
//!
//! The records a response carries are held against the listener's memory budget (the one
//! request frames are counted against, `queued_max_request_bytes`) until the response is
//! written: a pass reads only what the budget has room for, and with too little room (less than
//! a default-sized batch) it waits for some, up to the fetch's wait, rather than read. So many
//! clients asking for large fetches and not reading the answers cannot make the broker hold
//! more than the budget (but for a first batch larger than 1 MiB, returned whole as KIP-74
//! says, past what was reserved).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::time::Instant;

use super::errors;
use crate::node::{MAX_FETCH_BYTES, Node};
use crate::partition::Partition;

/// The least room a pass reads with: a batch of Kafka's default `max.message.bytes` fits,
/// so the first batch (always returned whole) rarely runs past what was reserved.
const FIRST_BATCH_ROOM: usize = 1 << 20;

/// Reserves up to `wanted` bytes of `memory`: the permit and its size (0: not enough room now,
/// less than `wanted` and [`FIRST_BATCH_ROOM`]).
fn reserve(memory: &Arc<Semaphore>, wanted: usize) -> (Option<OwnedSemaphorePermit>, usize) {
    let room = wanted.min(memory.available_permits());
    if room < wanted.min(FIRST_BATCH_ROOM) {
        return (None, 0);
    }
    let Ok(count) = u32::try_from(room) else {
        return (None, 0);
    };
    match Arc::clone(memory).try_acquire_many_owned(count) {
        Ok(permit) if room > 0 => (Some(permit), room),
        _ => (None, 0),
    }
}

/// The fetch's response, and the permit holding its records' bytes until it is written.
pub async fn fetch(
    node: &Node,
    request: FetchRequest,
    memory: &Arc<Semaphore>,
) -> (FetchResponse, Option<OwnedSemaphorePermit>) {
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
        .min(node.config.fetch_max_wait);
    let deadline = Instant::now() + max_wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let wanted = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .clamp(1, MAX_FETCH_BYTES);
    loop {
        let (mut permit, room) = reserve(memory, wanted);
        if room == 0 && !deadline.saturating_duration_since(Instant::now()).is_zero() {
            // No room for records now: look again shortly, within the fetch's wait.
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(5))).await;
            continue;
        }
        let pass = read_all(node, &request, room);
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
            // Hold what the records take; the rest of the reservation goes back now.
            if let Some(held) = permit.as_mut() {
                if pass.bytes == 0 {
                    permit = None;
                } else if pass.bytes < held.num_permits() {
                    drop(held.split(held.num_permits() - pass.bytes));
                }
            }
            return (pass.response, permit);
        }
        drop(permit);
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

/// Reads every partition asked for, at most `budget` bytes of records in all (0: none, only
/// the partitions' offsets).
fn read_all(node: &Node, request: &FetchRequest, budget: usize) -> Pass {
    let mut budget = budget;
    let readable = budget > 0;
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
            let room = if total == 0 && readable {
                limit.max(1)
            } else {
                limit
            };
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
