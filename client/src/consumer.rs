//! The consumer: reads the partitions assigned to it from chosen positions, fetching them
//! concurrently with a long poll, and decodes records without copying their bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_proto::v1;
use weir_record::{Batch, batches};

use crate::{Client, ClientError};

/// Where a consumer starts in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    Offset(i64),
    /// This many records before the high watermark (never before the log start).
    FromEnd(u64),
    /// The first record at or after this timestamp (ms since the Unix epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bytes asked for per partition per fetch.
    pub max_bytes: i32,
    /// How long a fetch waits on the broker for new records.
    pub max_wait: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_bytes: 4 << 20,
            max_wait: Duration::from_millis(500),
        }
    }
}

/// A record read from a partition. Key, value and header values share the fetched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Reads assigned partitions of one topic.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    topic: Arc<str>,
    config: ConsumerConfig,
    /// The next offset to read, per assigned partition.
    positions: BTreeMap<i32, i64>,
    /// The next round of fetches, sent when the last poll returned.
    prefetched: Option<tokio::task::JoinSet<Result<v1::FetchResponse, ClientError>>>,
    /// While fetches fail in ways that may pass (a leader restarting or moving): the pauses
    /// between rounds, and what was last said about it.
    rounds: crate::retry::Rounds,
}

impl Consumer {
    /// A consumer of `partitions` of `topic` (all of them when `None`), starting at `start`.
    ///
    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_TOPIC`; `InvalidArgument` for a partition the topic
    /// lacks.
    pub async fn assign(
        client: Client,
        topic: &str,
        partitions: Option<Vec<i32>>,
        start: StartAt,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let count = client.partition_count(topic).await? as i32;
        let partitions = partitions.unwrap_or_else(|| (0..count).collect());
        if let Some(bad) = partitions.iter().find(|&&p| p < 0 || p >= count) {
            return Err(ClientError::InvalidArgument(format!(
                "topic {topic:?} has {count} partitions; there is no partition {bad}"
            )));
        }
        let offsets_of = |spec, timestamp| {
            let client = client.clone();
            let partitions = partitions.clone();
            async move {
                let listed = client
                    .list_partition_offsets(topic, &partitions, spec, timestamp)
                    .await?;
                Ok::<_, ClientError>(
                    listed
                        .into_iter()
                        .map(|o| (o.partition, o.offset))
                        .collect::<BTreeMap<i32, Option<i64>>>(),
                )
            }
        };
        let positions: BTreeMap<i32, i64> = match start {
            StartAt::Offset(offset) => partitions.iter().map(|&p| (p, offset)).collect(),
            StartAt::Earliest | StartAt::Latest => {
                let spec = if start == StartAt::Earliest {
                    v1::OffsetSpec::Earliest
                } else {
                    v1::OffsetSpec::Latest
                };
                let offsets = offsets_of(spec, 0).await?;
                partitions
                    .iter()
                    .map(|&p| (p, offsets.get(&p).copied().flatten().unwrap_or(0)))
                    .collect()
            }
            StartAt::FromEnd(back) => {
                let starts = offsets_of(v1::OffsetSpec::Earliest, 0).await?;
                let ends = offsets_of(v1::OffsetSpec::Latest, 0).await?;
                partitions
                    .iter()
                    .map(|&p| {
                        let start = starts.get(&p).copied().flatten().unwrap_or(0);
                        let end = ends.get(&p).copied().flatten().unwrap_or(0);
                        let back = i64::try_from(back).unwrap_or(i64::MAX);
                        (p, end.saturating_sub(back).max(start))
                    })
                    .collect()
            }
            StartAt::Timestamp(timestamp) => {
                let found = offsets_of(v1::OffsetSpec::Timestamp, timestamp).await?;
                let ends = offsets_of(v1::OffsetSpec::Latest, 0).await?;
                partitions
                    .iter()
                    .map(|&p| {
                        // No record at or after the timestamp: start at the end.
                        let end = ends.get(&p).copied().flatten();
                        (p, found.get(&p).copied().flatten().or(end).unwrap_or(0))
                    })
                    .collect()
            }
        };
        Ok(Consumer {
            client,
            topic: topic.into(),
            config,
            positions,
            prefetched: None,
            rounds: Default::default(),
        })
    }

    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// Returns what the last round of fetches brought (each partition fetched concurrently,
    /// waiting up to `max_wait` for records), in offset order per partition, and sends the next
    /// round at once, so the broker works while the caller handles these records.
    ///
    /// # Errors
    /// The broker's error (e.g. `OFFSET_OUT_OF_RANGE` with the valid range in its message),
    /// or `InvalidBatch` if the broker sent bytes that are not valid batches.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        let mut fetches = match self.prefetched.take() {
            Some(fetches) => fetches,
            None => self.fetch_all(),
        };
        let mut responses = Vec::with_capacity(self.positions.len());
        let mut failure = None;
        let mut passing = None;
        while let Some(joined) = fetches.join_next().await {
            match joined {
                Ok(Ok(response)) => responses.push(response),
                // Leadership moved, or the leader restarts: this partition gives nothing
                // this time, and the next fetch asks where it lives now.
                Ok(Err(error)) if error.is_retryable() => {
                    self.client.forget(&self.topic);
                    passing.get_or_insert(error);
                }
                Ok(Err(error)) => {
                    failure.get_or_insert(error);
                }
                Err(e) => {
                    failure.get_or_insert(ClientError::InvalidArgument(format!(
                        "a fetch task failed: {e}"
                    )));
                }
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        let what = format!("waiting for the leaders of {}", self.topic);
        self.rounds
            .after(
                self.client.retry_policy(),
                &what,
                passing,
                responses.is_empty(),
            )
            .await;
        responses.sort_by_key(|r| r.partition);
        let mut records = Vec::new();
        // Positions move only once every answer decoded, so an error skips nothing.
        let mut moved = Vec::with_capacity(responses.len());
        for response in responses {
            let from = self
                .positions
                .get(&response.partition)
                .copied()
                .unwrap_or(0);
            decode(
                &self.topic,
                response.partition,
                &response.record_batches,
                from,
                &mut records,
            )?;
            moved.push((response.partition, response.next_offset.max(from)));
        }
        self.positions.extend(moved);
        self.prefetched = Some(self.fetch_all());
        Ok(records)
    }

    /// Sends one fetch per assigned partition from its position.
    fn fetch_all(&self) -> tokio::task::JoinSet<Result<v1::FetchResponse, ClientError>> {
        let mut fetches = tokio::task::JoinSet::new();
        for (&partition, &offset) in &self.positions {
            let client = self.client.clone();
            let topic = Arc::clone(&self.topic);
            let mut request = v1::FetchRequest {
                topic: self.topic.to_string(),
                partition,
                offset,
                max_bytes: self.config.max_bytes,
                min_bytes: 1,
                max_wait_ms: self.config.max_wait.as_millis() as i32,
                current_leader_epoch: None,
            };
            fetches.spawn(async move {
                let fetched = match client.leader_at(&topic, partition).await {
                    Ok((mut leader, address)) => {
                        // The epoch of the leader just looked up (the lookup may have
                        // refreshed the metadata).
                        request.current_leader_epoch = client.leader_epoch(&topic, partition);
                        leader
                            .fetch(request)
                            .await
                            .map_err(|s| ClientError::from(s).reaching(&address))
                    }
                    Err(e) => Err(e),
                };
                fetched
                    .map(tonic::Response::into_inner)
                    .map_err(|e| e.in_partition(&topic, partition))
            });
        }
        fetches
    }
}

/// The most a compressed batch's records may expand to: a batch is at most a fetch's bytes,
/// and compression rarely gains more than tenfold.
const MAX_DECOMPRESSED: usize = 256 << 20;

/// Decodes every record at or after `from` in `bytes` (whole batches, compressed by a Kafka
/// client or not) into `out`.
///
/// # Errors
/// `InvalidBatch` for bytes that are not valid batches, or that do not decompress.
pub fn decode(
    topic: &Arc<str>,
    partition: i32,
    bytes: &Bytes,
    from: i64,
    out: &mut Vec<ConsumedRecord>,
) -> Result<(), ClientError> {
    for batch in batches(bytes) {
        let (_, batch): (usize, Batch<'_>) = batch?;
        if batch.header.last_offset() < from {
            continue;
        }
        // Uncompressed records are shared with the fetched bytes; decompressed ones with
        // their own buffer.
        let section = match batch.records_section(MAX_DECOMPRESSED)? {
            std::borrow::Cow::Borrowed(section) => bytes.slice_ref(section),
            std::borrow::Cow::Owned(section) => Bytes::from(section),
        };
        for record in batch.records_in(&section) {
            let record = record.map_err(weir_record::InvalidBatch::from)?;
            if record.offset < from {
                continue;
            }
            let share = |slice: Option<&[u8]>| slice.map(|s| section.slice_ref(s));
            out.push(ConsumedRecord {
                topic: Arc::clone(topic),
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: share(record.key),
                value: share(record.value),
                headers: record
                    .headers
                    .iter()
                    .map(|h| (h.key.to_string(), share(h.value)))
                    .collect(),
            });
        }
    }
    Ok(())
}
