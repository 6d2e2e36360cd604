//! This broker's state: its topics and their partitions, and the operations the API offers on
//! them. The gRPC layer (`service`) only translates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::Mutex;
use weir_proto::Reason;
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;
use weir_storage::batch::InvalidBatch;
use weir_storage::{BatchBuilder, Header, LogError, Record, SegmentSlice};

use crate::config::BrokerConfig;
use crate::coordinator::{Coordinator, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::metrics::Metrics;
use crate::partition::{AckLevel, Partition};
use crate::topic::{self, Metadata, TopicConfig, TopicRecord};

/// This broker's id while it runs alone (no controller assigns roles yet).
const LOCAL_BROKER: i32 = 0;
/// How long an `acks=all` produce waits for the ISR before answering that the batch may not
/// have reached enough replicas.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest fetch a client may ask for.
pub const MAX_FETCH_BYTES: usize = 32 << 20;

/// A failure to report to a client: a reason and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }

    pub fn status(&self) -> tonic::Status {
        self.reason.status(self.message.clone())
    }
}

impl From<LogError> for Failure {
    fn from(error: LogError) -> Self {
        let message = error_chain(&error);
        let reason = match &error {
            LogError::InvalidBatch {
                source: InvalidBatch::TooLarge { .. },
                ..
            } => Reason::RecordTooLarge,
            LogError::InvalidBatch { .. } | LogError::NonContiguousAppend { .. } => {
                Reason::InvalidRecord
            }
            LogError::OffsetOutOfRange { .. } => Reason::OffsetOutOfRange,
            LogError::Corrupt { .. } => Reason::CorruptRecord,
            _ => Reason::StorageError,
        };
        if reason == Reason::StorageError || reason == Reason::CorruptRecord {
            tracing::error!(error = %message, "storage failure");
        }
        Failure { reason, message }
    }
}

/// `error: cause: cause`, for messages a person reads.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A topic as served: replaced whole when it changes.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: String,
    pub config: TopicConfig,
    /// Only the keys set on this topic.
    pub overrides: BTreeMap<String, String>,
    pub partitions: Vec<Arc<Partition>>,
}

/// The broker's state, shared by every request.
#[derive(Debug)]
pub struct Node {
    pub config: BrokerConfig,
    defaults: TopicConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// The persisted metadata; held while a topic changes, so changes are one at a time.
    metadata: Mutex<Metadata>,
    pub metrics: Metrics,
    pub coordinator: Coordinator,
    /// Held by a topic change from reading the topic to publishing it, so that concurrent
    /// changes do not undo each other.
    admin: Mutex<()>,
    round_robin: AtomicU32,
}

impl Node {
    /// Opens every partition of every topic in the metadata, recovering logs that were not
    /// closed cleanly, and removes the directories of topics whose deletion was interrupted.
    ///
    /// # Errors
    /// Bad config, unreadable metadata, or a log that cannot be opened.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Node> {
        config.validate()?;
        let defaults = config.topic_defaults()?;
        std::fs::create_dir_all(&config.data_dir)?;
        remove_deleted_dirs(&config.data_dir)?;
        let metadata = Metadata::load(&config.data_dir)?;
        let metrics = Metrics::default();
        let mut topics = BTreeMap::new();
        for (name, record) in &metadata.topics {
            let topic_config = TopicConfig::with_overrides(&defaults, &record.config)
                .map_err(|e| anyhow::anyhow!("topic {name}: {e}"))?;
            let partitions = (0..record.partitions)
                .map(|index| open_partition(&config, name, index, &topic_config))
                .collect::<anyhow::Result<Vec<_>>>()?;
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name: name.clone(),
                    id: record.id.clone(),
                    config: topic_config,
                    overrides: record.config.clone(),
                    partitions,
                }),
            );
        }
        tracing::info!(topics = topics.len(), data_dir = %config.data_dir.display(), "broker state loaded");
        let coordinator = Coordinator::new(
            config.group_heartbeat_interval,
            config.group_session_timeout,
        );
        Ok(Node {
            config,
            defaults,
            topics: RwLock::new(topics),
            metadata: Mutex::new(metadata),
            metrics,
            coordinator,
            admin: Mutex::new(()),
            round_robin: AtomicU32::new(0),
        })
    }

    /// Creates `__consumer_offsets` if it does not exist yet (every commit fsynced, kept
    /// forever until compaction exists), then loads the groups it holds.
    ///
    /// # Errors
    /// The topic cannot be created or read.
    pub async fn start_coordinator(&self) -> anyhow::Result<()> {
        let topic = match self.topic(OFFSETS_TOPIC) {
            Ok(topic) => topic,
            Err(_) => {
                let config = BTreeMap::from([
                    ("flush.messages".to_string(), "1".to_string()),
                    ("retention.ms".to_string(), "-1".to_string()),
                ]);
                self.create_topic_unchecked(OFFSETS_TOPIC, OFFSETS_PARTITIONS, 1, config)
                    .await
                    .map_err(|f| anyhow::anyhow!("create {OFFSETS_TOPIC}: {}", f.message))?
            }
        };
        let coordinator = &self.coordinator;
        tokio::task::block_in_place(|| coordinator.load(&topic))
    }

    fn topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, topic: Option<Arc<Topic>>, name: &str) {
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match topic {
            Some(topic) => topics.insert(name.to_string(), topic),
            None => topics.remove(name),
        };
    }

    /// The topic called `name`.
    ///
    /// # Errors
    /// `InvalidTopic` or `UnknownTopic`.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, Failure> {
        topic::validate_name(name).map_err(|m| Failure::new(Reason::InvalidTopic, m))?;
        self.topics().get(name).cloned().ok_or_else(|| {
            Failure::new(
                Reason::UnknownTopic,
                format!("topic {name:?} does not exist"),
            )
        })
    }

    /// A topic clients may change: not one of Weir's own.
    ///
    /// # Errors
    /// As [`Node::topic`], or `InvalidRequest` for an internal topic.
    pub fn client_topic(&self, name: &str) -> Result<Arc<Topic>, Failure> {
        let topic = self.topic(name)?;
        if is_internal(name) {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!("{name:?} is an internal topic; only the broker changes it"),
            ));
        }
        Ok(topic)
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.topics().keys().cloned().collect()
    }

    /// # Errors
    /// As [`Node::topic`], or `UnknownPartition`.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, Failure> {
        let topic = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    Reason::UnknownPartition,
                    format!(
                        "topic {:?} has {} partitions; there is no partition {partition}",
                        topic.name,
                        topic.partitions.len()
                    ),
                )
            })
    }

    /// Creates a topic.
    ///
    /// # Errors
    /// `InvalidTopic`, `TopicExists`, `InvalidRequest` (partitions, replication factor),
    /// `UnknownConfig`, `InvalidConfig`, `StorageError`.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, Failure> {
        topic::validate_name(name).map_err(|m| Failure::new(Reason::InvalidTopic, m))?;
        if is_internal(name) {
            return Err(Failure::new(
                Reason::InvalidTopic,
                format!("topic names starting with \"__\" are for Weir's own topics, not {name:?}"),
            ));
        }
        self.create_topic_unchecked(name, partitions, replication_factor, overrides)
            .await
    }

    async fn create_topic_unchecked(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, Failure> {
        let partitions = if partitions == 0 {
            self.config.default_partitions
        } else {
            partitions
        };
        if !(1..=10_000).contains(&partitions) {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!("a topic needs 1 to 10000 partitions, not {partitions}"),
            ));
        }
        if replication_factor > 1 {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!(
                    "replication factor {replication_factor} is more than the 1 broker of this cluster"
                ),
            ));
        }
        let config = topic_config(&self.defaults, &overrides)?;
        let mut metadata = self.metadata.lock().await;
        if metadata.topics.contains_key(name) {
            return Err(Failure::new(
                Reason::TopicExists,
                format!("topic {name:?} already exists"),
            ));
        }
        let opened = (0..partitions)
            .map(|index| open_partition(&self.config, name, index, &config))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| Failure::new(Reason::StorageError, format!("{e:#}")))?;
        let id = topic_id();
        metadata.topics.insert(
            name.to_string(),
            TopicRecord {
                id: id.clone(),
                partitions,
                config: overrides.clone(),
            },
        );
        if let Err(e) = metadata.save(&self.config.data_dir) {
            metadata.topics.remove(name);
            return Err(Failure::new(Reason::StorageError, error_chain(&e)));
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            config,
            overrides,
            partitions: opened,
        });
        self.publish(Some(Arc::clone(&topic)), name);
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// `InvalidTopic`, `UnknownTopic`, `StorageError`.
    pub async fn delete_topic(&self, name: &str) -> Result<(), Failure> {
        let _one_at_a_time = self.admin.lock().await;
        let topic = self.client_topic(name)?;
        let mut metadata = self.metadata.lock().await;
        let record = metadata.topics.remove(name);
        if let Err(e) = metadata.save(&self.config.data_dir) {
            if let Some(record) = record {
                metadata.topics.insert(name.to_string(), record);
            }
            return Err(Failure::new(Reason::StorageError, error_chain(&e)));
        }
        self.publish(None, name);
        drop(metadata);
        // The directories are renamed first, so a crash halfway leaves only `-delete` names,
        // which the next start removes.
        for partition in &topic.partitions {
            let dir = topic::partition_dir(&self.config.data_dir, name, partition.index);
            let doomed = dir.with_file_name(format!(
                "{}.{}-delete",
                dir.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                topic.id
            ));
            if let Err(e) =
                std::fs::rename(&dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed))
            {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted partition's directory");
            }
        }
        self.metrics
            .forget_topic(name, topic.partitions.len() as i32);
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Sets and removes topic config keys.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownConfig`, `InvalidConfig`, `StorageError`.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<Arc<Topic>, Failure> {
        let _one_at_a_time = self.admin.lock().await;
        let current = self.client_topic(name)?;
        let mut overrides = current.overrides.clone();
        for key in &delete {
            if !TopicConfig::default().to_properties().contains_key(key) {
                return Err(Failure::new(
                    Reason::UnknownConfig,
                    format!("unknown config key {key:?}"),
                ));
            }
            overrides.remove(key);
        }
        overrides.extend(set);
        let config = topic_config(&self.defaults, &overrides)?;
        self.replace_topic(
            name,
            |record| record.config = overrides.clone(),
            |topic| Topic {
                config: config.clone(),
                overrides: overrides.clone(),
                ..topic
            },
        )
        .await
        .inspect(|topic| {
            for partition in &topic.partitions {
                partition.set_config(config.log.clone());
            }
            tracing::info!(topic = name, "topic config changed");
        })
    }

    /// Raises a topic's partition count to `total`.
    ///
    /// # Errors
    /// `UnknownTopic`, `InvalidRequest` when `total` is not more than now, `StorageError`.
    pub async fn add_partitions(&self, name: &str, total: i32) -> Result<Arc<Topic>, Failure> {
        let _one_at_a_time = self.admin.lock().await;
        let current = self.client_topic(name)?;
        let have = current.partitions.len() as i32;
        if total <= have || total > 10_000 {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!(
                    "topic {name:?} has {have} partitions; the new count must be more, and at most 10000, not {total}"
                ),
            ));
        }
        let added = (have..total)
            .map(|index| open_partition(&self.config, name, index, &current.config))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| Failure::new(Reason::StorageError, format!("{e:#}")))?;
        self.replace_topic(
            name,
            |record| record.partitions = total,
            |topic| {
                let mut partitions = topic.partitions;
                partitions.extend(added.iter().cloned());
                Topic {
                    partitions,
                    ..topic
                }
            },
        )
        .await
        .inspect(|_| tracing::info!(topic = name, partitions = total, "partitions added"))
    }

    /// Saves a change to a topic's record, then publishes the changed topic.
    async fn replace_topic(
        &self,
        name: &str,
        change_record: impl FnOnce(&mut TopicRecord),
        change_topic: impl FnOnce(Topic) -> Topic,
    ) -> Result<Arc<Topic>, Failure> {
        let mut metadata = self.metadata.lock().await;
        let current = self.topic(name)?;
        let Some(record) = metadata.topics.get_mut(name) else {
            return Err(Failure::new(
                Reason::UnknownTopic,
                format!("topic {name:?} does not exist"),
            ));
        };
        let before = record.clone();
        change_record(record);
        if let Err(e) = metadata.save(&self.config.data_dir) {
            metadata.topics.insert(name.to_string(), before);
            return Err(Failure::new(Reason::StorageError, error_chain(&e)));
        }
        let topic = Arc::new(change_topic(Topic {
            name: current.name.clone(),
            id: current.id.clone(),
            config: current.config.clone(),
            overrides: current.overrides.clone(),
            partitions: current.partitions.clone(),
        }));
        self.publish(Some(Arc::clone(&topic)), name);
        Ok(topic)
    }

    /// A new producer id (and epoch 0) for an idempotent producer; never given twice, even
    /// across restarts.
    ///
    /// # Errors
    /// `StorageError` when the metadata cannot be saved.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), Failure> {
        let mut metadata = self.metadata.lock().await;
        let id = metadata.next_producer_id;
        metadata.next_producer_id += 1;
        if let Err(e) = metadata.save(&self.config.data_dir) {
            metadata.next_producer_id -= 1;
            return Err(Failure::new(Reason::StorageError, error_chain(&e)));
        }
        Ok((id, 0))
    }

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
    ) -> Result<(i64, i64), Failure> {
        let Some(target) = usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
        else {
            return Err(Failure::new(
                Reason::UnknownPartition,
                format!(
                    "topic {:?} has {} partitions; there is no partition {partition}",
                    topic.name,
                    topic.partitions.len()
                ),
            ));
        };
        let size = batches.len();
        // Unique bytes are reused in place; shared ones are copied once.
        let mut bytes = BytesMut::from(batches);
        let level = match acks {
            v1::Acks::All => AckLevel::All {
                min_insync_replicas: usize::try_from(topic.config.min_insync_replicas).unwrap_or(1),
                timeout: REPLICATION_TIMEOUT,
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
    /// that is not UTF-8.
    pub fn encode_records(
        &self,
        topic: &Topic,
        records: &[v1::ProduceRecord],
    ) -> Result<BTreeMap<i32, Bytes>, Failure> {
        let count = topic.partitions.len() as u32;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let sticky = self.round_robin.fetch_add(1, Ordering::Relaxed) % count;
        let mut builders: BTreeMap<i32, BatchBuilder> = BTreeMap::new();
        for record in records {
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
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<(Option<SegmentSlice>, Arc<Partition>), Failure> {
        let target = self.partition(topic, partition)?;
        let max_bytes = max_bytes.clamp(1, MAX_FETCH_BYTES);
        let deadline = Instant::now() + max_wait;
        loop {
            let slice = target.read(offset, max_bytes)?;
            let have = slice.as_ref().map_or(0, |s| s.bytes.len());
            let left = deadline.saturating_duration_since(Instant::now());
            if have >= min_bytes.max(1) || have >= max_bytes || left.is_zero() {
                if let Some(slice) = &slice {
                    self.metrics.fetched(
                        topic,
                        slice.bytes.len() as u64,
                        slice.next_offset - slice.first_offset,
                    );
                }
                return Ok((slice, target));
            }
            // Wait for anything past what this read saw, then read again from `offset`.
            let seen = slice.map_or(offset, |s| s.next_offset);
            target.wait_past(seen, left).await;
        }
    }

    /// Closes every partition cleanly. Requests still holding a partition keep it open; that
    /// partition then recovers on the next start.
    pub fn close(self) {
        let topics = std::mem::take(
            &mut *self
                .topics
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let mut closed = 0;
        for (_, topic) in topics {
            let Ok(topic) = Arc::try_unwrap(topic) else {
                tracing::warn!(
                    "a topic is still in use at shutdown; its logs will recover on the next start"
                );
                continue;
            };
            for partition in topic.partitions {
                match Arc::try_unwrap(partition) {
                    Ok(partition) => match partition.close() {
                        Ok(()) => closed += 1,
                        Err(e) => {
                            tracing::error!(error = %error_chain(&e), "closing a partition failed")
                        }
                    },
                    Err(partition) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.index, "partition still in use at shutdown; it will recover on the next start");
                    }
                }
            }
        }
        tracing::info!(partitions = closed, "partitions closed cleanly");
    }

    /// Runs retention, `flush.ms` flushes and recovery-point checkpoints on every partition,
    /// and refreshes the log gauges.
    pub fn maintain(&self, retention: bool) {
        self.coordinator.expire();
        let described: Vec<v1::GroupDescription> = self
            .coordinator
            .list()
            .iter()
            .filter_map(|g| self.coordinator.describe(self, &g.group_id).ok())
            .collect();
        self.metrics.set_group_lags(described.iter().flat_map(|d| {
            d.partitions
                .iter()
                .map(move |p| (d.group_id.as_str(), p.topic.as_str(), p.partition, p.lag))
        }));
        let topics: Vec<Arc<Topic>> = self.topics().values().cloned().collect();
        for topic in topics {
            for partition in &topic.partitions {
                if retention && let Err(e) = partition.apply_retention() {
                    tracing::error!(topic = %topic.name, partition = partition.index, error = %error_chain(&e), "retention failed");
                }
                if let Err(e) = partition.maintain() {
                    tracing::error!(topic = %topic.name, partition = partition.index, error = %error_chain(&e), "flush failed");
                }
                self.metrics
                    .log_state(&topic.name, partition.index, &partition.state());
            }
        }
    }
}

/// Weir's own topics (`__consumer_offsets`): written by the broker, not by clients.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

fn topic_config(
    defaults: &TopicConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicConfig, Failure> {
    TopicConfig::with_overrides(defaults, overrides).map_err(|e| {
        let reason = match e {
            weir_storage::ConfigError::UnknownKey { .. } => Reason::UnknownConfig,
            weir_storage::ConfigError::InvalidValue { .. } => Reason::InvalidConfig,
        };
        Failure::new(reason, e.to_string())
    })
}

fn open_partition(
    config: &BrokerConfig,
    topic: &str,
    index: i32,
    topic_config: &TopicConfig,
) -> anyhow::Result<Arc<Partition>> {
    let dir = topic::partition_dir(&config.data_dir, topic, index);
    let (partition, report) = Partition::open(&dir, topic, index, topic_config.log.clone())
        .map_err(|e| anyhow::anyhow!("open partition {topic}-{index}: {}", error_chain(&e)))?;
    if !report.clean_shutdown && report.recovered_segments > 0 {
        tracing::info!(topic, partition = index, ?report, "partition recovered");
    }
    // Alone, this broker leads every partition it has.
    partition.become_leader(LOCAL_BROKER, 0, 0, vec![LOCAL_BROKER], vec![LOCAL_BROKER]);
    Ok(Arc::new(partition))
}

/// Removes the directories a deletion renamed but did not get to remove.
fn remove_deleted_dirs(data_dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with("-delete") && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// A new topic id: unique per creation (time and a counter), 32 hex digits.
fn topic_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:024x}{:08x}",
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed) ^ std::process::id()
    )
}
