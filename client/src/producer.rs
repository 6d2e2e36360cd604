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

use crate::{Client, ClientError};

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
    /// Attempts after the first for a batch that failed in a way that may pass.
    pub retries: u32,
    pub retry_backoff: Duration,
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
            // About ten seconds of retries: long enough to ride out a leader's failover
            // (the controller's session timeout is 3 s by default).
            retries: 100,
            retry_backoff: Duration::from_millis(100),
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
}

/// One partition's batches: the open one and those waiting for the sender, in order. Both
/// change only under the producer's lock, so batches are sent in the order they were sealed.
struct Lane {
    open: Option<Pending>,
    /// The sequence the next batch starts at (idempotent producers).
    next_sequence: i32,
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
        let size = record_size(&record);
        if weir_record::batch::HEADER_LEN + size > limits.max_batch_size {
            return Err(ClientError::Broker {
                reason: Some(Reason::RecordTooLarge),
                code: tonic::Code::InvalidArgument,
                message: format!(
                    "a record of about {size} bytes is larger than max.message.bytes ({}) of topic {:?}",
                    limits.max_batch_size, record.topic
                ),
            });
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
                if lane
                    .open
                    .as_ref()
                    .is_some_and(|b| !b.builder.is_empty() && b.builder.size() + size > batch_size)
                {
                    inner.seal(lane, &record.topic, partition);
                }
                let next_sequence = lane.next_sequence;
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
                let headers = record
                    .headers
                    .iter()
                    .map(|(k, v)| Header {
                        key: k,
                        value: v.as_deref(),
                    })
                    .collect();
                batch.builder.push(&Record {
                    timestamp,
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers,
                });
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
        lane.ready.push_back(Ready {
            bytes: Bytes::from(batch.builder.build()),
            outcome: batch.outcome,
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

    /// One produce call with the producer's retries.
    async fn produce(&self, topic: &str, partition: i32, bytes: Bytes) -> BatchResult {
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
        let mut attempt = 0;
        loop {
            let leader = match self.client.leader(topic, partition).await {
                Ok(leader) => Ok(leader),
                Err(e) if e.is_retryable() && attempt < self.config.retries => {
                    attempt += 1;
                    tokio::time::sleep(self.config.retry_backoff).await;
                    continue;
                }
                Err(e) => Err(e),
            };
            let answer = match leader {
                Ok(mut leader) => {
                    // The epoch this leader was named at: a deposed one is told apart.
                    request.batches[0].leader_epoch = self.client.leader_epoch(topic, partition);
                    leader.produce(request.clone()).await
                }
                Err(e) => {
                    let code = match &e {
                        ClientError::Broker { code, .. } => *code,
                        _ => tonic::Code::Unknown,
                    };
                    return Err((e.reason(), code, e.to_string()));
                }
            };
            let error = match answer {
                Ok(response) => {
                    let result = response
                        .into_inner()
                        .results
                        .into_iter()
                        .find(|r| r.partition == partition);
                    match result {
                        Some(v1::PartitionProduceResult { error: Some(e), .. }) => {
                            ClientError::Broker {
                                reason: Reason::parse(&e.reason),
                                code: tonic::Code::Aborted,
                                message: e.message,
                            }
                        }
                        Some(result) => return Ok(result.base_offset),
                        None => ClientError::InvalidArgument(format!(
                            "the broker did not answer for partition {partition}"
                        )),
                    }
                }
                Err(status) => ClientError::from(status),
            };
            if error.is_retryable() {
                // Leadership may have moved: ask again where the partition lives.
                self.client.forget(topic);
            }
            if attempt < self.config.retries && error.is_retryable() {
                attempt += 1;
                tracing::debug!(topic, partition, attempt, error = %error, "retrying a batch");
                tokio::time::sleep(self.config.retry_backoff).await;
                continue;
            }
            let code = match &error {
                ClientError::Broker { code, .. } => *code,
                _ => tonic::Code::Unknown,
            };
            return Err((error.reason(), code, error.to_string()));
        }
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
            let result = inner.produce(&topic, partition, ready.bytes).await;
            ready.outcome.finish(result);
            drop(permit);
        });
    }
}

/// An upper bound of a record's encoded size: its bytes plus the largest varints and fields.
fn record_size(record: &ProducerRecord) -> usize {
    let bytes = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len) + 5;
    32 + bytes(&record.key)
        + bytes(&record.value)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + 5 + bytes(v))
            .sum::<usize>()
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
