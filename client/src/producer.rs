//! The producer: records are encoded into one RecordBatch v2 per partition as they are sent.
//! Each partition has one sender that sends its batches in order, one request at a time, or up
//! to `max_in_flight` for an idempotent producer, whose sequence numbers let the broker restore
//! the order. A batch leaves when it reaches `batch_size`, or when the sender has room for
//! another request and the batch has waited `linger` (as Kafka's sender: while every request
//! is in flight, the open batch keeps growing, so batching follows the load and an idle
//! producer's record leaves at once with `linger` 0).

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use weir_proto::Reason;
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;
use weir_record::{BatchBuilder, Header, Record};

use crate::{Client, ClientError, RetryPolicy};

/// When the broker acknowledges a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Not at all: deliveries resolve without offsets.
    None,
    /// Once the leader has appended (and flushed, if the topic's policy says so).
    Leader,
    /// Once every in-sync replica has the records.
    All,
}

impl Acks {
    fn wire(self) -> v1::Acks {
        match self {
            Acks::None => v1::Acks::None,
            Acks::Leader => v1::Acks::Leader,
            Acks::All => v1::Acks::All,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records once the sender could send it.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes.
    pub batch_size: usize,
    /// How a batch that failed in a way that may pass (a broker restarting, a leader moving)
    /// is tried again. The deadline runs from the batch's first record: Kafka's
    /// `delivery.timeout.ms` (120 s); a deadline of zero sends each batch once.
    pub retry: RetryPolicy,
    /// Batches queued per partition before `send` waits.
    pub queued_batches: usize,
    /// Stamp batches with a producer id and per-partition sequences, so that a batch retried
    /// after a lost answer is written once (Kafka's `enable.idempotence`).
    pub idempotent: bool,
    /// Requests in flight per partition for an idempotent producer (Kafka's
    /// `max.in.flight.requests.per.connection`); 1 without idempotence, to keep order.
    pub max_in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::Leader,
            // Batches grow while requests are in flight, so waiting buys little under load
            // and costs latency when idle.
            linger: Duration::ZERO,
            batch_size: 256 * 1024,
            retry: RetryPolicy::default().with_deadline(Duration::from_secs(120)),
            queued_batches: 4,
            idempotent: true,
            max_in_flight: 5,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone)]
pub struct ProducerRecord {
    pub topic: Arc<str>,
    /// The partition; by the key's murmur2 hash when absent, or sticky round-robin without a key.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch; now when absent.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else set.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }
}

impl ProducerRecord {
    /// The record as a batch encodes it, at `timestamp`.
    fn encoded_as(&self, timestamp: i64) -> Record<'_> {
        Record {
            timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k,
                    value: v.as_deref(),
                })
                .collect(),
        }
    }
}

impl ProducerRecord {
    /// At least the record's encoded size in any batch, whatever its offset and timestamp
    /// deltas: every varint counted at its widest.
    fn size_bound(&self) -> usize {
        const VARLONG: usize = 10;
        const VARINT: usize = 5;
        let bytes = |b: Option<&[u8]>| VARINT + b.map_or(0, <[u8]>::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| bytes(Some(k.as_bytes())) + bytes(v.as_deref()))
            .sum();
        // length, attributes, timestamp delta, offset delta, key, value, header count.
        VARINT
            + 1
            + VARLONG
            + VARINT
            + bytes(self.key.as_deref())
            + bytes(self.value.as_deref())
            + VARINT
            + headers
    }
}

/// Where a sent record ended up, once its batch is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: i32,
    /// Absent with acks=0.
    pub offset: Option<i64>,
}

/// How a batch ended: its base offset (absent with acks=0), or why it failed.
type BatchResult = Result<Option<i64>, (Option<Reason>, tonic::Code, String)>;

#[derive(Debug, Default)]
struct Outcome {
    /// The result, and when it came.
    result: OnceLock<(BatchResult, Instant)>,
    done: Notify,
}

impl Outcome {
    fn finish(&self, result: BatchResult) {
        let _ = self.result.set((result, Instant::now()));
        self.done.notify_waiters();
    }
}

/// A sent record's future place in the log.
#[derive(Debug)]
pub struct Delivery {
    outcome: Arc<Outcome>,
    partition: i32,
    index: i64,
}

impl Delivery {
    /// Identifies the record's batch: deliveries with the same id resolve together.
    pub fn batch_id(&self) -> usize {
        Arc::as_ptr(&self.outcome) as usize
    }

    /// Waits for the record's batch to be acknowledged.
    ///
    /// # Errors
    /// Why the batch was not written (after the producer's retries).
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        self.wait_timed().await.0
    }

    /// As [`Delivery::wait`], with the moment the answer came (for latency measurements that
    /// should not count the time the caller took to look).
    pub async fn wait_timed(self) -> (Result<RecordMetadata, ClientError>, Instant) {
        loop {
            let notified = self.outcome.done.notified();
            if let Some((result, at)) = self.outcome.result.get() {
                let result = match result {
                    Ok(base) => Ok(RecordMetadata {
                        partition: self.partition,
                        offset: base.map(|b| b + self.index),
                    }),
                    Err((reason, code, message)) => Err(ClientError::Broker {
                        reason: *reason,
                        code: *code,
                        message: message.clone(),
                    }),
                };
                return (result, *at);
            }
            notified.await;
        }
    }
}

struct Pending {
    builder: BatchBuilder,
    outcome: Arc<Outcome>,
    opened: Instant,
}

struct Ready {
    bytes: Bytes,
    outcome: Arc<Outcome>,
    /// When its first record came: its delivery deadline runs from here.
    created: Instant,
    /// The producer id and epoch it is stamped with (idempotent producers).
    identity: Option<(i64, i16)>,
    records: i32,
}

/// One partition's batches: the open one and those waiting for the sender, in order. Both
/// change only under the producer's lock, so batches are sent in the order they were sealed.
struct Lane {
    open: Option<Pending>,
    /// The sequence the next batch starts at (idempotent producers).
    next_sequence: i32,
    /// The producer id and epoch this partition's batches carry: the producer's, until a
    /// batch fails for good, after which the partition starts over under a new one (the
    /// broker would otherwise refuse every later batch as out of sequence).
    identity: Option<(i64, i16)>,
    /// Set while a new identity is being fetched: nothing is sent meanwhile.
    resetting: bool,
    /// Batches of this partition waiting to be tried again. While any is, no new batch is
    /// sent (as Kafka's sender mutes the partition): a batch written whose answer was lost
    /// must be retried while the broker still remembers its sequence (the last five batches),
    /// not after newer batches have pushed it out.
    retrying: usize,
    ready: std::collections::VecDeque<Ready>,
    /// Wakes the partition's sender when a batch is ready.
    wake: Arc<Notify>,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    lanes: Mutex<HashMap<Arc<str>, HashMap<i32, Lane>>>,
    /// Wakes senders waiting for room in a lane's queue.
    room: Notify,
    /// The partition keyless records go to, per topic, until its batch leaves.
    /// Per topic: the partition keyless records go to, and the topic's partition count.
    sticky: Mutex<HashMap<Arc<str>, (u32, u32)>>,
    senders: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The producer id and epoch of an idempotent producer, asked for at the first send.
    identity: tokio::sync::OnceCell<(i64, i16)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends records in batches. Dropping it without [`Producer::close`] abandons unsent batches.
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("address", &self.inner.client.address())
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let inner = Arc::new(Inner {
            client,
            config,
            lanes: Mutex::new(HashMap::default()),
            room: Notify::new(),
            sticky: Mutex::new(HashMap::default()),
            senders: Mutex::new(Vec::new()),
            identity: tokio::sync::OnceCell::new(),
        });
        Producer { inner }
    }

    /// Adds a record to its partition's batch; waits only while that partition already has
    /// `queued_batches` batches waiting. The returned [`Delivery`] resolves once the batch is
    /// acknowledged.
    ///
    /// # Errors
    /// The broker's error for an unknown topic; `InvalidArgument` for a partition the topic
    /// lacks; `RECORD_TOO_LARGE` for a record that cannot fit the topic's
    /// `max.message.bytes` (refused here, so it never costs an idempotent partition its
    /// sequence).
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery, ClientError> {
        // A loop of sends that never waits would otherwise keep its worker thread until it
        // ends, and the partition senders it wakes (queued behind it on that thread) with it.
        tokio::task::coop::consume_budget().await;
        let inner = &self.inner;
        let limits = inner.client.topic_limits(&record.topic).await?;
        let count = limits.partitions;
        // An upper bound costs a few additions; the exact size, which walks every field's
        // varint, is only worth computing for a record near the limit.
        let bound = record.size_bound();
        // The broker's own rule: a batch of this record alone must fit max.message.bytes.
        if weir_record::batch::HEADER_LEN + bound > limits.max_batch_size {
            let alone = weir_record::batch::HEADER_LEN + record_size(&record);
            if alone > limits.max_batch_size {
                return Err(ClientError::Broker {
                    reason: Some(Reason::RecordTooLarge),
                    code: tonic::Code::InvalidArgument,
                    message: format!(
                        "a record of {alone} bytes (in a batch of its own) is larger than max.message.bytes ({}) of topic {:?}",
                        limits.max_batch_size, record.topic
                    ),
                });
            }
        }
        let batch_size = inner.config.batch_size.min(limits.max_batch_size);
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p >= 0 && (p as u32) < count => p,
            (Some(p), _) => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {:?} has {count} partitions; there is no partition {p}",
                    record.topic
                )));
            }
            (None, Some(key)) => partition_for_key(key, count) as i32,
            (None, None) => {
                let mut sticky = lock(&inner.sticky);
                let entry = sticky
                    .entry(Arc::clone(&record.topic))
                    .or_insert_with(|| (random_start() % count, count));
                entry.1 = count;
                (entry.0 % count) as i32
            }
        };
        let identity = if inner.config.idempotent {
            let client = &inner.client;
            Some(
                *inner
                    .identity
                    .get_or_try_init(|| client.init_producer_id())
                    .await?,
            )
        } else {
            None
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let (delivery, must_wait) =
            {
                let mut lanes = lock(&inner.lanes);
                let lane = inner.lane(&mut lanes, &record.topic, partition);
                // Seal before a record that would carry the batch past batch_size, so batches
                // stay under the broker's max.message.bytes when batch_size does.
                if lane.open.as_ref().is_some_and(|b| {
                    // The bound holds whatever the record's offset and timestamp deltas.
                    !b.builder.is_empty() && b.builder.size() + bound > batch_size
                }) {
                    inner.seal(lane, &record.topic, partition);
                }
                let next_sequence = lane.next_sequence;
                let identity = match identity {
                    Some(identity) => Some(*lane.identity.get_or_insert(identity)),
                    None => None,
                };
                if lane.open.is_none() {
                    // The sender starts the batch's linger.
                    lane.wake.notify_one();
                }
                let batch =
                    lane.open.get_or_insert_with(|| Pending {
                        builder: match identity {
                            Some((id, epoch)) => BatchBuilder::with_capacity(0, batch_size)
                                .producer(id, epoch, next_sequence),
                            None => BatchBuilder::with_capacity(0, batch_size),
                        },
                        outcome: Arc::default(),
                        opened: Instant::now(),
                    });
                batch.builder.push(&record.encoded_as(timestamp));
                let delivery = Delivery {
                    outcome: Arc::clone(&batch.outcome),
                    partition,
                    index: batch.builder.len() as i64 - 1,
                };
                if batch.builder.size() >= batch_size {
                    inner.seal(lane, &record.topic, partition);
                }
                (delivery, lane.ready.len() > inner.config.queued_batches)
            };
        // Back-pressure: wait while this partition has too many batches waiting.
        if must_wait {
            loop {
                let room = inner.room.notified();
                let queued = lock(&inner.lanes)
                    .get(&*record.topic)
                    .and_then(|l| l.get(&partition))
                    .map_or(0, |l| l.ready.len());
                if queued <= inner.config.queued_batches {
                    break;
                }
                room.await;
            }
        }
        Ok(delivery)
    }

    /// Sends every open batch now and waits until all sent batches are answered.
    pub async fn flush(&self) {
        let markers: Vec<Arc<Outcome>> = {
            let mut lanes = lock(&self.inner.lanes);
            let mut markers = Vec::new();
            for (topic, by_partition) in lanes.iter_mut() {
                for (&partition, lane) in by_partition.iter_mut() {
                    self.inner.seal(lane, topic, partition);
                    // A marker: answered only after every batch queued before it.
                    let outcome = Arc::new(Outcome::default());
                    lane.ready.push_back(Ready {
                        bytes: Bytes::new(),
                        outcome: Arc::clone(&outcome),
                        created: Instant::now(),
                        identity: None,
                        records: 0,
                    });
                    lane.wake.notify_one();
                    markers.push(outcome);
                }
            }
            markers
        };
        for outcome in markers {
            let _ = Delivery {
                outcome,
                partition: 0,
                index: 0,
            }
            .wait()
            .await;
        }
    }

    /// Flushes, then stops.
    pub async fn close(self) {
        self.flush().await;
    }
}

impl Drop for Producer {
    /// Batches not yet sent are abandoned: their deliveries resolve with an error rather than
    /// wait for ever. Requests already sent finish on their own.
    fn drop(&mut self) {
        for sender in lock(&self.inner.senders).drain(..) {
            sender.abort();
        }
        let abandoned = || {
            Err((
                None,
                tonic::Code::Cancelled,
                "the producer was dropped before this record was sent".to_string(),
            ))
        };
        for lane in lock(&self.inner.lanes)
            .values_mut()
            .flat_map(HashMap::values_mut)
        {
            if let Some(batch) = lane.open.take() {
                batch.outcome.finish(abandoned());
            }
            for ready in lane.ready.drain(..) {
                ready.outcome.finish(abandoned());
            }
        }
    }
}

impl Inner {
    /// The lane of a partition, starting its sender the first time.
    fn lane<'a>(
        self: &Arc<Self>,
        lanes: &'a mut HashMap<Arc<str>, HashMap<i32, Lane>>,
        topic: &Arc<str>,
        partition: i32,
    ) -> &'a mut Lane {
        if !lanes.contains_key(topic) {
            lanes.insert(Arc::clone(topic), HashMap::default());
        }
        let by_partition = lanes.get_mut(topic).expect("inserted above");
        by_partition.entry(partition).or_insert_with(|| {
            let wake = Arc::new(Notify::new());
            let sender = tokio::spawn(send_loop(
                Arc::clone(self),
                Arc::clone(topic),
                partition,
                Arc::clone(&wake),
            ));
            lock(&self.senders).push(sender);
            Lane {
                open: None,
                next_sequence: 0,
                identity: None,
                resetting: false,
                retrying: 0,
                ready: Default::default(),
                wake,
            }
        })
    }

    /// Moves a lane's open batch to its ready queue and wakes its sender. Keyless records
    /// move on to the next partition once a batch leaves (sticky partitioning).
    fn seal(&self, lane: &mut Lane, topic: &str, partition: i32) {
        let Some(batch) = lane.open.take() else {
            return;
        };
        // Sequences wrap to 0 after i32::MAX, as Kafka's.
        lane.next_sequence = ((i64::from(lane.next_sequence) + batch.builder.len() as i64)
            % (i64::from(i32::MAX) + 1)) as i32;
        let records = i32::try_from(batch.builder.len()).unwrap_or(i32::MAX);
        lane.ready.push_back(Ready {
            bytes: Bytes::from(batch.builder.build()),
            outcome: batch.outcome,
            created: batch.opened,
            identity: lane.identity,
            records,
        });
        lane.wake.notify_one();
        if let Some((current, partitions)) = lock(&self.sticky).get_mut(topic)
            && *current as i32 == partition
        {
            *current = (*current + 1) % (*partitions).max(1);
        }
    }

    /// The partition's next batch to send: the first ready one, else the open one once it has
    /// waited `linger`. Otherwise how long until the open batch is due (`None`: no batch).
    fn next_batch(&self, topic: &Arc<str>, partition: i32) -> Result<Ready, Option<Duration>> {
        let mut lanes = lock(&self.lanes);
        let Some(lane) = lanes.get_mut(topic).and_then(|l| l.get_mut(&partition)) else {
            return Err(None);
        };
        if lane.resetting || lane.retrying > 0 {
            return Err(None);
        }
        if let Some(ready) = lane.ready.pop_front() {
            return Ok(ready);
        }
        let age = match &lane.open {
            Some(open) if !open.builder.is_empty() => open.opened.elapsed(),
            _ => return Err(None),
        };
        if age < self.config.linger {
            return Err(Some(self.config.linger - age));
        }
        self.seal(lane, topic, partition);
        lane.ready.pop_front().ok_or(None)
    }

    /// One batch produced, tried again (as the retry policy says, until the batch's
    /// delivery deadline) while the failure may pass.
    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        bytes: Bytes,
        created: Instant,
        identity: Option<(i64, i16)>,
    ) -> BatchResult {
        let mut request = v1::ProduceRequest {
            topic: topic.to_string(),
            acks: self.config.acks.wire() as i32,
            batches: vec![v1::PartitionBatches {
                partition,
                record_batches: bytes,
                leader_epoch: None,
            }],
            records: Vec::new(),
        };
        let what = format!("producing to {topic}-{partition}");
        let mut retry = self.config.retry.start_at(created);
        let mut muted: Option<Unmute<'_>> = None;
        // A batch that waited past its delivery timeout before its first send is not sent.
        if !self.config.retry.deadline.is_zero() && retry.left().is_zero() {
            return Err((
                None,
                tonic::Code::DeadlineExceeded,
                format!(
                    "not sent within the delivery timeout ({}s)",
                    self.config.retry.deadline.as_secs()
                ),
            ));
        }
        loop {
            let left = retry.left();
            let attempt = async {
                // Finding the leader retries on its own, but not past the batch's deadline.
                let (mut leader, address) =
                    tokio::time::timeout(left, self.client.leader_at(topic, partition))
                        .await
                        .map_err(|_| ClientError::Broker {
                            reason: Some(Reason::LeaderNotAvailable),
                            code: tonic::Code::DeadlineExceeded,
                            message: format!(
                                "no leader of {topic}-{partition} found within the delivery timeout"
                            ),
                        })??;
                // The epoch this leader was named at: a deposed one is told apart.
                request.batches[0].leader_epoch = self.client.leader_epoch(topic, partition);
                let response = leader
                    .produce(request.clone())
                    .await
                    .map_err(|s| ClientError::from(s).reaching(&address))?;
                let result = response
                    .into_inner()
                    .results
                    .into_iter()
                    .find(|r| r.partition == partition);
                match result {
                    Some(v1::PartitionProduceResult { error: Some(e), .. }) => {
                        Err(ClientError::Broker {
                            reason: Reason::parse(&e.reason),
                            code: tonic::Code::Aborted,
                            message: e.message,
                        })
                    }
                    Some(result) => Ok(result.base_offset),
                    None => Err(ClientError::InvalidArgument(format!(
                        "the broker did not answer for partition {partition}"
                    ))),
                }
            };
            // The deadline decides whether another try starts; a try under way finishes (each
            // call is bounded by the channel's own timeout).
            let error = match attempt.await {
                Ok(base_offset) => return Ok(base_offset),
                Err(error) => error,
            };
            if error.is_retryable() {
                // Leadership may have moved: ask again where the partition lives.
                self.client.forget(topic);
            }
            // Out of sequence: an earlier batch of this partition is still on its way (retries
            // reorder pipelined batches), so this one's turn may come; unless an earlier one
            // failed for good and the partition started over under a new id.
            let waiting_for_earlier = error.reason() == Some(Reason::OutOfOrderSequence)
                && identity.is_some()
                && self.lane_identity(topic, partition) == identity;
            let retriable = if waiting_for_earlier {
                ClientError::Broker {
                    reason: None,
                    code: tonic::Code::Unavailable,
                    message: error.to_string(),
                }
            } else {
                error
            };
            // From its first failure until it resolves, the batch mutes its partition.
            if muted.is_none() {
                self.mark_retrying(topic, partition, 1);
                muted = Some(Unmute {
                    inner: self,
                    topic,
                    partition,
                });
            }
            if retry.pause(&what, &retriable).await {
                continue;
            }
            let error = retriable;
            let code = match &error {
                ClientError::Broker { code, .. } => *code,
                _ => tonic::Code::Unknown,
            };
            return Err((error.reason(), code, error.to_string()));
        }
    }

    /// Counts a batch of the partition into (`1`) or out of (`-1`) its retry pause; the
    /// partition's sender resumes once none is pausing.
    fn mark_retrying(&self, topic: &str, partition: i32, change: isize) {
        let mut lanes = lock(&self.lanes);
        if let Some(lane) = lanes.get_mut(topic).and_then(|l| l.get_mut(&partition)) {
            lane.retrying = lane.retrying.saturating_add_signed(change);
            if lane.retrying == 0 {
                lane.wake.notify_one();
            }
        }
    }

    /// The producer id and epoch a partition's batches carry now.
    fn lane_identity(&self, topic: &str, partition: i32) -> Option<(i64, i16)> {
        lock(&self.lanes)
            .get(topic)
            .and_then(|l| l.get(&partition))
            .and_then(|lane| lane.identity)
    }

    /// After a batch stamped with `failed` failed for good: this partition starts over under
    /// a new producer id, its waiting batches restamped in order from sequence 0, so that
    /// the broker takes them (it would refuse them as out of sequence after the gap).
    async fn start_over(&self, topic: &Arc<str>, partition: i32, failed: (i64, i16)) {
        {
            let mut lanes = lock(&self.lanes);
            let Some(lane) = lanes.get_mut(topic).and_then(|l| l.get_mut(&partition)) else {
                return;
            };
            // Another failed batch of the same identity started it over already.
            if lane.identity != Some(failed) || lane.resetting {
                return;
            }
            lane.resetting = true;
        }
        // Not longer than a batch may wait (the partition sends nothing meanwhile).
        let bound = self.config.retry.deadline.max(Duration::from_secs(1));
        let fresh = match tokio::time::timeout(bound, self.client.init_producer_id()).await {
            Ok(Ok(identity)) => Some(identity),
            Err(_) => {
                tracing::warn!(topic = %topic, partition, "no new producer id within the delivery timeout; later batches of this partition may be refused as out of sequence");
                None
            }
            Ok(Err(error)) => {
                tracing::warn!(topic = %topic, partition, error = %error, "no new producer id; later batches of this partition may be refused as out of sequence");
                None
            }
        };
        let mut lanes = lock(&self.lanes);
        let Some(lane) = lanes.get_mut(topic).and_then(|l| l.get_mut(&partition)) else {
            return;
        };
        lane.resetting = false;
        lane.wake.notify_one();
        let Some((id, epoch)) = fresh else {
            return;
        };
        tracing::info!(topic = %topic, partition, producer_id = id, "a batch failed for good: this partition's later batches go under a new producer id");
        lane.identity = Some((id, epoch));
        let mut sequence = 0i32;
        for ready in lane.ready.iter_mut().filter(|r| !r.bytes.is_empty()) {
            let mut bytes = bytes::BytesMut::from(std::mem::take(&mut ready.bytes));
            weir_record::batch::set_producer(&mut bytes, id, epoch, sequence);
            ready.bytes = bytes.freeze();
            ready.identity = Some((id, epoch));
            sequence = sequence.wrapping_add(ready.records).max(0);
        }
        if let Some(open) = lane.open.as_mut() {
            open.builder.set_producer(id, epoch, sequence);
        }
        lane.next_sequence = sequence;
    }
}

/// Unmutes a partition when a batch that muted it resolves (however its task ends).
struct Unmute<'a> {
    inner: &'a Inner,
    topic: &'a str,
    partition: i32,
}

impl Drop for Unmute<'_> {
    fn drop(&mut self) {
        self.inner.mark_retrying(self.topic, self.partition, -1);
    }
}

/// Sends one partition's ready batches in order, one at a time.
async fn send_loop(inner: Arc<Inner>, topic: Arc<str>, partition: i32, wake: Arc<Notify>) {
    // An idempotent producer may pipeline: the broker appends its batches in sequence order
    // whatever order they arrive in. Without sequences, order needs one request at a time.
    let in_flight = if inner.config.idempotent {
        inner
            .config
            .max_in_flight
            .clamp(1, weir_proto::MAX_IN_FLIGHT)
    } else {
        1
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    loop {
        // Room for a request first: until there is, the open batch keeps growing.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let ready = loop {
            match inner.next_batch(&topic, partition) {
                Ok(ready) => break ready,
                Err(Some(due)) => {
                    let _ = tokio::time::timeout(due, wake.notified()).await;
                }
                Err(None) => wake.notified().await,
            }
        };
        inner.room.notify_waiters();
        if ready.bytes.is_empty() {
            // A flush marker: answered once every batch before it is.
            drop(permit);
            let Ok(_all) = permits.acquire_many(in_flight as u32).await else {
                return;
            };
            ready.outcome.finish(Ok(None));
            continue;
        }
        let (inner, topic) = (Arc::clone(&inner), Arc::clone(&topic));
        tokio::spawn(async move {
            let result = inner
                .produce(
                    &topic,
                    partition,
                    ready.bytes,
                    ready.created,
                    ready.identity,
                )
                .await;
            let failed = result.is_err();
            ready.outcome.finish(result);
            drop(permit);
            if let (true, Some(identity)) = (failed, ready.identity) {
                inner.start_over(&topic, partition, identity).await;
            }
        });
    }
}

/// A record's exact size in a batch of its own, the size the broker checks against
/// `max.message.bytes` for a record alone.
fn record_size(record: &ProducerRecord) -> usize {
    record.encoded_as(0).encoded_len(0, 0)
}

/// Where keyless records of a topic start, so that producers do not all pile onto partition 0.
fn random_start() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seal and size checks rely on the bound never being below the exact size, at any
    /// offset and timestamp delta a batch can give the record.
    #[test]
    fn size_bound_covers_the_encoded_size_at_any_delta() {
        let deltas = [
            (0, 0),
            (1, 1),
            (i32::MAX, i64::MAX),
            (i32::MIN, i64::MIN),
            (-1, -1),
        ];
        for len in [0usize, 1, 63, 64, 127, 128, 8191, 8192, 1 << 20] {
            let blob = Bytes::from(vec![7u8; len]);
            let mut records = vec![
                ProducerRecord::new("t", blob.clone()),
                ProducerRecord {
                    key: Some(blob.clone()),
                    value: None,
                    ..ProducerRecord::new("t", Bytes::new())
                },
            ];
            let mut with_headers = ProducerRecord::new("t", blob.clone());
            with_headers.headers = vec![
                ("h".repeat(len.min(300)), Some(blob.clone())),
                (String::new(), None),
            ];
            records.push(with_headers);
            for record in &records {
                let bound = record.size_bound();
                for (offset_delta, timestamp_delta) in deltas {
                    let exact = record
                        .encoded_as(0)
                        .encoded_len(offset_delta, timestamp_delta);
                    assert!(
                        bound >= exact,
                        "bound {bound} < exact {exact} for a {len}-byte field at deltas ({offset_delta}, {timestamp_delta})"
                    );
                }
                // Close enough that batches are not sealed far below batch_size: each varint
                // counted at its widest, a few bytes each.
                assert!(bound <= record_size(record) + 29 + 8 * record.headers.len());
            }
        }
    }
}
