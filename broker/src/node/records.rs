//! The data path of both front doors: append to a partition this broker leads, encode
//! records given one by one into batches, and long-poll fetches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use weir_proto::Reason;
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;
use weir_storage::{BatchBuilder, Header, Record, SegmentSlice};

use super::Node;
use crate::failure::Failure;
use crate::partition::{AckLevel, Partition};
use crate::topic::is_internal;
use crate::topic::{Topic, local_replica};

/// The largest fetch a client may ask for.
pub const MAX_FETCH_BYTES: usize = 32 << 20;

impl Node {
    /// Appends to one partition; returns its first and last offsets.
    ///
    /// # Errors
    /// `UnknownPartition`, `InvalidRecord`, `RecordTooLarge`, `StorageError`.
    pub async fn append(
        &self,
        topic: &Topic,
        partition: i32,
        batches: Bytes,
        acks: v1::Acks,
        leader_epoch: Option<i32>,
    ) -> Result<(i64, i64), Failure> {
        let target = local_replica(topic, partition)?;
        target.check_client_epoch(leader_epoch)?;
        let size = batches.len();
        // Unique bytes are reused in place; shared ones are copied once.
        let mut bytes = BytesMut::from(batches);
        let level = match acks {
            v1::Acks::All => AckLevel::All {
                min_insync_replicas: usize::try_from(topic.config.min_insync_replicas).unwrap_or(1),
                timeout: self.config.replication_timeout,
            },
            v1::Acks::Leader | v1::Acks::None => AckLevel::Leader,
        };
        let appended = target.append(&mut bytes, level).await?;
        // The broker's own writes (group offsets) are not client traffic.
        if !is_internal(&topic.name) {
            self.metrics
                .produced(&topic.name, size as u64, appended.records);
        }
        Ok((appended.first_offset, appended.last_offset))
    }

    /// Encodes records of the simple form into one batch per partition: the given partition,
    /// else the key's murmur2 partition, else round-robin.
    ///
    /// # Errors
    /// `UnknownPartition` for a partition the topic lacks, `InvalidRecord` for a header key
    /// that is not UTF-8 or a negative timestamp.
    pub fn encode_records(
        &self,
        topic: &Topic,
        records: &[v1::ProduceRecord],
    ) -> Result<BTreeMap<i32, Bytes>, Failure> {
        let count = topic.partition_count() as u32;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let sticky = self.round_robin.fetch_add(1, Ordering::Relaxed) % count;
        let mut builders: BTreeMap<i32, BatchBuilder> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            if let Some(timestamp) = record.timestamp.filter(|t| *t < 0) {
                return Err(Failure::new(
                    Reason::InvalidRecord,
                    format!(
                        "record {i} has timestamp {timestamp}: a timestamp is milliseconds since the Unix epoch (0 or more), or absent for the broker's clock"
                    ),
                ));
            }
            let partition = match (record.partition, &record.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, count) as i32,
                (None, None) => sticky as i32,
            };
            if !(0..count as i32).contains(&partition) {
                return Err(Failure::new(
                    Reason::UnknownPartition,
                    format!(
                        "topic {:?} has {count} partitions; there is no partition {partition}",
                        topic.name
                    ),
                ));
            }
            let headers = record
                .headers
                .iter()
                .map(|h| Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                })
                .collect();
            builders.entry(partition).or_default().push(&Record {
                timestamp: record.timestamp.unwrap_or(now),
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers,
            });
        }
        Ok(builders
            .into_iter()
            .map(|(p, b)| (p, Bytes::from(b.build())))
            .collect())
    }

    /// Reads from one partition, waiting up to `max_wait` for at least `min_bytes`.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownPartition`, `OffsetOutOfRange`, `CorruptRecord`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one per field of the fetch request it serves"
    )]
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
        leader_epoch: Option<i32>,
    ) -> Result<(Option<SegmentSlice>, Arc<Partition>), Failure> {
        let deadline = Instant::now() + max_wait;
        loop {
            let (slice, target) = self.read(topic, partition, offset, max_bytes, leader_epoch)?;
            let have = slice.as_ref().map_or(0, |s| s.bytes.len());
            let left = deadline.saturating_duration_since(Instant::now());
            if have >= min_bytes.max(1) || have >= max_bytes || left.is_zero() {
                self.count_fetched(topic, slice.as_ref());
                return Ok((slice, target));
            }
            // Wait for anything past what this read saw, then read again from `offset`.
            let seen = slice.map_or(offset, |s| s.next_offset);
            target.wait_past(seen, left).await;
        }
    }

    /// Reads from one partition this broker leads, without waiting: whole batches from the
    /// one holding `offset`, up to `max_bytes` (at least one batch, however large). The
    /// caller counts what it returns to the client ([`Node::count_fetched`]).
    ///
    /// # Errors
    /// As [`Node::fetch`]; `NotLeader`, `FencedLeaderEpoch`, `UnknownLeaderEpoch`.
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        leader_epoch: Option<i32>,
    ) -> Result<(Option<SegmentSlice>, Arc<Partition>), Failure> {
        let target = self.partition(topic, partition)?;
        // Consumers read from leaders only, at the epoch they believe in.
        target.check_client_epoch(leader_epoch)?;
        let slice = target.read(offset, max_bytes.clamp(1, MAX_FETCH_BYTES))?;
        Ok((slice, target))
    }

    /// Counts a read returned to a client in the fetch metrics.
    pub fn count_fetched(&self, topic: &str, slice: Option<&SegmentSlice>) {
        if let Some(slice) = slice {
            self.metrics.fetched(
                topic,
                slice.bytes.len() as u64,
                slice.next_offset - slice.first_offset,
            );
        }
    }
}
