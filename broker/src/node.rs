//! This broker's state: its topics and their partitions, and the operations the API offers on
//! them. The gRPC layer (`service`) only translates.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tonic::transport::Channel;
use weir_proto::Reason;
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;
use weir_storage::batch::InvalidBatch;
use weir_storage::{BatchBuilder, Header, LogError, Record, SegmentSlice};

use crate::config::BrokerConfig;
use crate::coordinator::{Coordinator, OFFSETS_TOPIC};
use crate::metrics::Metrics;
use crate::partition::{AckLevel, Partition};
use crate::topic::{self, TopicConfig, is_internal};
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

/// The partitions `me` is a replica of, led by another broker, whose ISR lacks `me`. An
/// offline partition (no leader) does not count: no catching up is possible.
pub fn out_of_sync<'a>(
    me: i32,
    topics: impl Iterator<Item = (&'a str, &'a [v1::ClusterPartition])>,
) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, layout)| {
            layout
                .iter()
                .filter(move |p| {
                    p.replicas.contains(&me)
                        && p.leader.is_some_and(|l| l != me)
                        && !p.isr.contains(&me)
                })
                .map(move |p| (name.to_string(), p.partition))
        })
        .collect()
}

pub use weir_proto::error_chain;

/// A topic as served: replaced whole when it changes.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: String,
    pub config: TopicConfig,
    /// Only the keys set on this topic.
    pub overrides: BTreeMap<String, String>,
    /// Every partition as the controller decided it (replicas, leader, epochs, ISR).
    pub layout: Vec<v1::ClusterPartition>,
    /// The replicas this broker holds, by partition index.
    pub replicas: BTreeMap<i32, Arc<Partition>>,
    /// The replicas this broker should hold but could not open, with why: requests for them
    /// fail with the cause, and the broker is not ready while any is here.
    pub failed: BTreeMap<i32, String>,
    /// Override keys this broker could not apply (unknown here, or a value it refuses), with
    /// why; the topic runs with the default for each, and every other override applies.
    pub unapplied: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition_count(&self) -> usize {
        self.layout.len()
    }
}

/// The broker's state, shared by every request.
#[derive(Debug)]
pub struct Node {
    pub config: BrokerConfig,
    defaults: TopicConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    pub metrics: Metrics,
    pub coordinator: Coordinator,
    round_robin: AtomicU32,
    /// New at every start: the controller tells a restart from a late heartbeat by it.
    pub incarnation: u64,
    /// A client per controller address; calls go to `current_controller`, and move on to
    /// the next address when it fails.
    controllers: Vec<(String, std::sync::Mutex<crate::cluster::Controller>)>,
    cluster_header: crate::cluster::ClusterHeader,
    current_controller: std::sync::atomic::AtomicUsize,
    /// The brokers as the controller last told them.
    brokers: RwLock<BTreeMap<i32, v1::ClusterBroker>>,
    /// The newest controller epoch seen: metadata from an older controller is ignored.
    controller_epoch: AtomicI32,
    /// Counts applied metadata: admin calls wait for their change to arrive here.
    applied: watch::Sender<u64>,
    /// The follower task of each partition followed here, with the leader epoch it follows.
    fetchers: std::sync::Mutex<Fetchers>,
    /// Serializes metadata application.
    applying: std::sync::Mutex<()>,
    /// One channel per other broker's address, shared by the fetchers that follow it (HTTP/2
    /// carries every partition's stream on one connection).
    peers: std::sync::Mutex<HashMap<String, Channel>>,
    /// The producer ids this broker may still give: `(next, end)`.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Replicas of deleted topics whose data could not be removed, by (topic id, partition),
    /// with why: reported to the deletion that asked.
    failed_deletions: std::sync::Mutex<BTreeMap<(String, i32), String>>,
    /// Closed segments' open files, shared by every replica here: bounds the descriptors.
    pub segment_files: Arc<weir_storage::SegmentFileCache>,
}

/// Each followed partition's fetcher task, with the leader epoch it follows.
type Fetchers = HashMap<(String, i32), (i32, Arc<Partition>, tokio::task::JoinHandle<()>)>;

/// Producer ids a broker asks the controller for at once.
const PRODUCER_ID_BLOCK: i32 = 1000;

impl Node {
    /// Prepares the data directory (removing directories of deletions a crash interrupted)
    /// and a client of the controller at `controller`; partitions open as the controller's
    /// metadata names them.
    ///
    /// # Errors
    /// Bad config, or a data directory that cannot be made.
    pub fn open(
        config: BrokerConfig,
        controller: &str,
        secret: weir_proto::ClusterSecret,
    ) -> anyhow::Result<Node> {
        config.validate()?;
        let defaults = config.topic_defaults()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let removed = weir_storage::layout::remove_deleted(&config.data_dir)?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the directories of deletions a stop interrupted"
            );
        }
        let header = crate::cluster::ClusterHeader {
            cluster: config
                .cluster
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("cluster name: {e}"))?,
            secret,
        };
        let controllers = controller
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|address| {
                let channel = crate::cluster::channel(address)
                    .map_err(|e| anyhow::anyhow!("controller address {address:?}: {e}"))?;
                Ok((
                    address.to_string(),
                    std::sync::Mutex::new(crate::cluster::controller_client(
                        channel,
                        header.clone(),
                    )),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if controllers.is_empty() {
            anyhow::bail!("no controller address in {controller:?}");
        }
        let coordinator = Coordinator::new(
            config.group_heartbeat_interval,
            config.group_session_timeout,
            config.group_min_session_timeout..=config.group_max_session_timeout,
        );
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        let segment_files = Arc::new(weir_storage::SegmentFileCache::new(
            config.max_open_segments,
        ));
        Ok(Node {
            config,
            defaults,
            topics: RwLock::new(BTreeMap::new()),
            metrics: Metrics::default(),
            coordinator,
            round_robin: AtomicU32::new(0),
            incarnation,
            controllers,
            cluster_header: header,
            current_controller: std::sync::atomic::AtomicUsize::new(0),
            brokers: RwLock::new(BTreeMap::new()),
            controller_epoch: AtomicI32::new(-1),
            applied: watch::channel(0).0,
            fetchers: std::sync::Mutex::new(HashMap::new()),
            applying: std::sync::Mutex::new(()),
            peers: std::sync::Mutex::new(HashMap::new()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            failed_deletions: std::sync::Mutex::new(BTreeMap::new()),
            segment_files,
        })
    }

    /// The cluster secret: presented to the controller and to leaders, required of
    /// followers.
    pub fn secret(&self) -> &weir_proto::ClusterSecret {
        &self.cluster_header.secret
    }

    pub fn controller(&self) -> crate::cluster::Controller {
        self.controller_at().1
    }

    /// The current controller address's index, and a client of it.
    pub fn controller_at(&self) -> (usize, crate::cluster::Controller) {
        let i = self.current_controller.load(Ordering::Acquire) % self.controllers.len();
        let client = self.controllers[i]
            .1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (i, client)
    }

    /// After a call to the address at `failed` failed: moves calls to the next address, on a
    /// new connection (behind one address, a Service, a new connection may reach another
    /// replica, the one now leading). Several loops failing together move it once.
    pub fn next_controller(&self, failed: usize) {
        let next = (failed + 1) % self.controllers.len();
        if self
            .current_controller
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let (address, client) = &self.controllers[failed];
        if let Ok(channel) = crate::cluster::channel(address) {
            *client.lock().unwrap_or_else(|p| p.into_inner()) =
                crate::cluster::controller_client(channel, self.cluster_header.clone());
        }
        if self.controllers.len() > 1 {
            tracing::info!(
                controller = %self.controllers[next].0,
                "trying the next controller address"
            );
        }
    }

    /// Waits (up to `timeout`) until some metadata has been applied.
    pub async fn wait_for_metadata(&self, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|&n| n > 0))
            .await
            .is_ok()
    }

    /// A broker with its own embedded controller creates `__consumer_offsets` at start; in a
    /// cluster it is created when the first group needs it, once brokers have joined. The
    /// groups of each of its partitions load when this broker becomes that partition's
    /// leader.
    ///
    /// # Errors
    /// The topic cannot be created.
    pub async fn start_coordinator(&self) -> anyhow::Result<()> {
        if self.config.controller.is_none() {
            self.ensure_offsets_topic()
                .await
                .map_err(|f| anyhow::anyhow!("create {OFFSETS_TOPIC}: {}", f.message))?;
        }
        Ok(())
    }

    /// Asks the controller for `__consumer_offsets` unless it exists (the controller shapes
    /// it: every commit fsynced, kept forever until compaction exists, as many replicas as
    /// brokers are alive, up to three), and waits for it to arrive here.
    ///
    /// # Errors
    /// The controller's.
    pub async fn ensure_offsets_topic(&self) -> Result<(), Failure> {
        if self.topic(OFFSETS_TOPIC).is_err() {
            let made = self
                .controller()
                .ensure_internal_topic(v1::EnsureInternalTopicRequest {
                    name: OFFSETS_TOPIC.to_string(),
                })
                .await
                .map_err(|s| from_controller(&s))?
                .into_inner();
            self.wait_for(|node| node.topic(OFFSETS_TOPIC).is_ok_and(|t| t.id == made.id))
                .await?;
        }
        Ok(())
    }

    /// Whether this broker coordinates `group`: it leads the group's partition of
    /// `__consumer_offsets`.
    pub fn coordinates(&self, group: &str) -> bool {
        self.check_coordinator(group).is_ok()
    }

    /// Checks that this broker coordinates `group` (creating `__consumer_offsets` first if
    /// need be).
    ///
    /// # Errors
    /// `NotCoordinator`, naming the broker that does when it is known.
    pub async fn group_coordinator(&self, group: &str) -> Result<(), Failure> {
        self.ensure_offsets_topic().await?;
        self.check_coordinator(group)
    }

    fn check_coordinator(&self, group: &str) -> Result<(), Failure> {
        let topic = self.topic(OFFSETS_TOPIC)?;
        let count = topic.partition_count() as u32;
        let index = partition_for_key(group.as_bytes(), count) as i32;
        let leads = topic
            .replicas
            .get(&index)
            .is_some_and(|r| r.leading_epoch().is_ok());
        if leads {
            return Ok(());
        }
        let leader = usize::try_from(index)
            .ok()
            .and_then(|i| topic.layout.get(i))
            .and_then(|p| p.leader);
        Err(Failure::new(
            Reason::NotCoordinator,
            format!(
                "broker {} does not coordinate group {group:?}; the leader of {OFFSETS_TOPIC}-{index} does ({})",
                self.config.broker_id,
                leader.map_or_else(|| "none now".to_string(), |l| format!("broker {l}"))
            ),
        ))
    }

    /// The partitions this broker follows without being in their ISR (it is catching up), as
    /// the controller last said.
    pub fn out_of_sync(&self) -> Vec<(String, i32)> {
        let me = self.config.broker_id;
        let topics = self.topics();
        out_of_sync(
            me,
            topics
                .values()
                .map(|t| (t.name.as_str(), t.layout.as_slice())),
        )
    }

    /// The replicas this broker should hold but could not open, with why.
    pub fn offline_replicas(&self) -> Vec<(String, i32, String)> {
        self.topics()
            .values()
            .flat_map(|t| {
                t.failed
                    .iter()
                    .map(|(p, why)| (t.name.clone(), *p, why.clone()))
            })
            .collect()
    }

    fn topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn brokers(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i32, v1::ClusterBroker>> {
        self.brokers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The brokers as the controller last told them.
    pub fn cluster_brokers(&self) -> Vec<v1::ClusterBroker> {
        self.brokers().values().cloned().collect()
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

    /// This broker's replica of a partition.
    ///
    /// # Errors
    /// As [`Node::topic`]; `UnknownPartition`; `NotLeader` when another broker holds it.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, Failure> {
        let topic = self.topic(topic)?;
        local_replica(&topic, partition)
    }

    /// The replicas this broker leads, with their topics.
    pub fn led_partitions(&self) -> Vec<(String, Arc<Partition>)> {
        self.topics()
            .values()
            .flat_map(|t| t.replicas.values().map(|p| (t.name.clone(), Arc::clone(p))))
            .filter(|(_, p)| p.leading_epoch().is_ok())
            .collect()
    }

    /// Waits until `done` holds after some metadata is applied (or already holds), for at
    /// most 10 s.
    async fn wait_for(&self, done: impl Fn(&Node) -> bool) -> Result<(), Failure> {
        let mut applied = self.applied.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if done(self) {
                    return;
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.map_err(|_| {
            Failure::new(
                Reason::NotController,
                "the controller decided, but its metadata has not reached this broker within 10 s",
            )
        })
    }

    /// Applies the controller's metadata: opens the replicas this broker holds, gives each its
    /// role (leader, follower), starts and stops followers' fetchers, drops deleted topics.
    /// Metadata from an older controller is ignored.
    pub fn apply_metadata(self: &Arc<Self>, metadata: &v1::ClusterMetadata) {
        let _one_at_a_time = self
            .applying
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seen = self.controller_epoch.load(Ordering::Acquire);
        if metadata.controller_epoch < seen {
            tracing::warn!(
                controller_epoch = metadata.controller_epoch,
                newest = seen,
                "ignored metadata from an older controller"
            );
            return;
        }
        self.controller_epoch
            .store(metadata.controller_epoch, Ordering::Release);
        *self
            .brokers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            metadata.brokers.iter().map(|b| (b.id, b.clone())).collect();
        let me = self.config.broker_id;
        let current: BTreeMap<String, Arc<Topic>> = self.topics().clone();
        let mut next = BTreeMap::new();
        let mut followed = HashMap::new();
        for wire in &metadata.topics {
            let old = current.get(&wire.name).filter(|t| t.id == wire.id);
            if let Some(gone) = current.get(&wire.name).filter(|t| t.id != wire.id) {
                self.remove_replicas(gone, gone.replicas.keys().copied());
            }
            let overrides: BTreeMap<String, String> = wire.config.clone().into_iter().collect();
            // Key by key: one key this broker cannot apply costs only itself.
            let (config, refused) = TopicConfig::apply(&self.defaults, &overrides);
            let unapplied: BTreeMap<String, String> = refused
                .iter()
                .map(|e| (e.key().to_string(), e.to_string()))
                .collect();
            if old.is_none_or(|t| t.unapplied != unapplied) {
                for (key, why) in &unapplied {
                    tracing::error!(topic = %wire.name, key, error = %why, "a topic config override cannot be applied here; the default stands for it, every other override applies");
                }
            }
            self.metrics.unapplied_config(&wire.name, unapplied.len());
            let mut replicas = BTreeMap::new();
            let mut failed = BTreeMap::new();
            for p in &wire.partitions {
                if !p.replicas.contains(&me) {
                    continue;
                }
                let replica = match old.and_then(|t| t.replicas.get(&p.partition)) {
                    Some(replica) => {
                        if old.is_some_and(|t| t.overrides != overrides) {
                            replica.set_config(topic::log_config(&config));
                        }
                        Arc::clone(replica)
                    }
                    None => match open_partition(
                        &self.config,
                        &self.segment_files,
                        &wire.name,
                        &wire.id,
                        p.partition,
                        &config,
                    ) {
                        Ok(replica) => replica,
                        Err(e) => {
                            let why = error_chain(&*e);
                            tracing::error!(topic = %wire.name, partition = p.partition, error = %why, "cannot open a replica; the broker is not ready while it stays closed");
                            failed.insert(p.partition, why);
                            continue;
                        }
                    },
                };
                match p.leader {
                    Some(leader) if leader == me => {
                        let took_over = replica.leading_epoch().ok() != Some(p.leader_epoch);
                        replica.become_leader(
                            me,
                            p.leader_epoch,
                            p.partition_epoch,
                            p.replicas.clone(),
                            p.isr.clone(),
                        );
                        if took_over && wire.name == OFFSETS_TOPIC {
                            let count = wire.partitions.len() as u32;
                            if let Err(e) = self.coordinator.load_partition(&replica, count) {
                                tracing::error!(partition = p.partition, error = %format!("{e:#}"), "cannot load the groups of a __consumer_offsets partition");
                            }
                        }
                    }
                    Some(leader) => {
                        replica.become_follower(leader, p.leader_epoch);
                        followed.insert(
                            (wire.name.clone(), p.partition),
                            (leader, p.leader_epoch, Arc::clone(&replica)),
                        );
                    }
                    None => replica.become_none(),
                }
                replicas.insert(p.partition, replica);
            }
            if let Some(old) = old {
                let moved: Vec<i32> = old
                    .replicas
                    .keys()
                    .copied()
                    .filter(|p| !replicas.contains_key(p))
                    .collect();
                self.remove_replicas(old, moved.into_iter());
            }
            next.insert(
                wire.name.clone(),
                Arc::new(Topic {
                    name: wire.name.clone(),
                    id: wire.id.clone(),
                    config,
                    overrides,
                    layout: wire.partitions.clone(),
                    replicas,
                    failed,
                    unapplied,
                }),
            );
        }
        for (name, topic) in &current {
            if !next.contains_key(name) {
                self.remove_replicas(topic, topic.replicas.keys().copied());
                self.metrics
                    .forget_topic(name, topic.partition_count() as i32);
                tracing::info!(topic = %name, "topic deleted");
            }
        }
        *self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        self.update_fetchers(followed);
        self.applied.send_modify(|n| *n += 1);
    }

    /// Starts a fetcher for every partition followed at a new leader epoch, stops the rest.
    fn update_fetchers(
        self: &Arc<Self>,
        followed: HashMap<(String, i32), (i32, i32, Arc<Partition>)>,
    ) {
        let brokers = self.brokers().clone();
        let mut fetchers = self
            .fetchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        fetchers.retain(|key, (epoch, replica, task)| {
            // The same replica (a topic deleted and created again is a new one) at the same
            // epoch, still running.
            let keep = followed
                .get(key)
                .is_some_and(|(_, e, p)| e == epoch && Arc::ptr_eq(p, replica))
                && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (leader, epoch, partition)) in followed {
            if fetchers.contains_key(&key) {
                continue;
            }
            let Some(address) = brokers.get(&leader).map(|b| b.address.clone()) else {
                tracing::warn!(topic = %key.0, partition = key.1, leader, "the leader's address is unknown");
                continue;
            };
            let task = tokio::spawn(crate::cluster::follow(
                Arc::clone(self),
                Arc::clone(&partition),
                address,
                epoch,
            ));
            fetchers.insert(key, (epoch, partition, task));
        }
    }

    /// Each partition's offset for `spec` (earliest, latest = high watermark, or the first at
    /// or after `timestamp`), as its leader has it: from the replica here when this broker
    /// leads it, else asked of the leader. A partition whose leader cannot answer is given
    /// from the replica here, if there is one, and otherwise left out; `None`: no record at or
    /// after the timestamp.
    pub async fn offsets_from_leaders(
        &self,
        topic: &Topic,
        spec: v1::OffsetSpec,
        timestamp: i64,
    ) -> BTreeMap<i32, Option<i64>> {
        let local = |index: i32| -> Option<Option<i64>> {
            let partition = topic.replicas.get(&index)?;
            let state = partition.state();
            Some(match spec {
                v1::OffsetSpec::Earliest => Some(state.log_start_offset),
                v1::OffsetSpec::Latest => Some(state.high_watermark),
                v1::OffsetSpec::Timestamp => partition
                    .offset_for_timestamp(timestamp)
                    .ok()
                    .flatten()
                    .map(|(offset, _)| offset),
            })
        };
        let me = self.config.broker_id;
        let mut offsets = BTreeMap::new();
        let mut remote: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        {
            let brokers = self.brokers();
            for p in &topic.layout {
                match p.leader.filter(|l| *l != me).and_then(|l| brokers.get(&l)) {
                    Some(leader) => remote
                        .entry(leader.address.clone())
                        .or_default()
                        .push(p.partition),
                    None => {
                        if let Some(offset) = local(p.partition) {
                            offsets.insert(p.partition, offset);
                        }
                    }
                }
            }
        }
        for (address, partitions) in remote {
            let request = v1::ListOffsetsRequest {
                topic: topic.name.clone(),
                partitions: partitions.clone(),
                spec: spec as i32,
                timestamp,
            };
            let answer = match self.peer_channel(&address) {
                Ok(channel) => v1::weir_client::WeirClient::new(channel)
                    .list_offsets(request)
                    .await
                    .map_err(|s| weir_proto::status_text(&s)),
                Err(e) => Err(error_chain(&e)),
            };
            match answer {
                Ok(answer) => {
                    for o in answer.into_inner().offsets {
                        offsets.insert(o.partition, o.offset);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic.name, leader = %address, error = %e, "cannot ask a leader for offsets; using this broker's replicas");
                    for index in partitions {
                        if let Some(offset) = local(index) {
                            offsets.insert(index, offset);
                        }
                    }
                }
            }
        }
        offsets
    }

    /// Each partition's range (log start offset, high watermark) as its leader has it, for the
    /// partitions whose leader (or the replica here) answered both.
    pub async fn ranges_from_leaders(&self, topic: &Topic) -> BTreeMap<i32, (i64, i64)> {
        let starts = self
            .offsets_from_leaders(topic, v1::OffsetSpec::Earliest, 0)
            .await;
        let ends = self
            .offsets_from_leaders(topic, v1::OffsetSpec::Latest, 0)
            .await;
        ends.into_iter()
            .filter_map(|(partition, end)| match (starts.get(&partition), end) {
                (Some(Some(start)), Some(end)) => Some((partition, (*start, end))),
                _ => None,
            })
            .collect()
    }

    /// The channel to the broker at `address`, made the first time it is needed.
    ///
    /// # Errors
    /// An address that is not a valid URI.
    pub fn peer_channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = peers.get(address) {
            return Ok(channel.clone());
        }
        let channel = crate::cluster::channel(address)?;
        peers.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Stops every follower's fetcher (at shutdown).
    pub fn stop_fetchers(&self) {
        for (_, (_, _, task)) in self
            .fetchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
        {
            task.abort();
        }
    }

    /// Closes and deletes this broker's replicas of `partitions` of a topic that is gone (or
    /// moved away). Each directory is renamed to a hidden `.delete` name first, so a crash
    /// halfway leaves only names the next start removes; a directory that cannot be removed
    /// stays under its name, where a topic created later under the same name finds another
    /// topic id and removes it before use (`weir_storage::layout`). Failures are logged with
    /// their cause, counted, and kept for the admin call that asked for the deletion.
    fn remove_replicas(&self, topic: &Topic, partitions: impl Iterator<Item = i32>) {
        for index in partitions {
            if let Some(replica) = topic.replicas.get(&index) {
                replica.become_none();
            }
            if let Err(e) = weir_storage::layout::delete_partition_dir(
                &self.config.data_dir,
                &topic.name,
                index,
            ) {
                let why = error_chain(&e);
                tracing::error!(topic = %topic.name, partition = index, error = %why, "could not remove a deleted replica's data; a topic created under this name will not see it");
                self.metrics.deletion_failed();
                self.failed_deletions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((topic.id.clone(), index), why);
            }
        }
    }

    /// Creates a topic. The controller checks the name and every config override; this
    /// broker fills in its defaults for the partition count and the replication factor.
    ///
    /// # Errors
    /// `InvalidRequest` (partitions), `InvalidReplicationFactor`, or the controller's
    /// (`InvalidTopic`, `TopicExists`, `UnknownConfig`, `InvalidConfig`, ...).
    pub async fn create_topic(
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
        let replication_factor = if replication_factor == 0 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if replication_factor < 1 {
            return Err(Failure::new(
                Reason::InvalidReplicationFactor,
                format!("a replication factor must be at least 1, not {replication_factor}"),
            ));
        }
        let created = self
            .controller()
            .create_topic(v1::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                replication_factor,
                config: overrides.into_iter().collect(),
            })
            .await
            .map_err(|s| from_controller(&s))?
            .into_inner();
        self.wait_for(|node| node.topic(name).is_ok_and(|t| t.id == created.id))
            .await?;
        tracing::info!(
            topic = name,
            partitions,
            replication_factor,
            "topic created"
        );
        self.topic(name)
    }

    /// Deletes a topic and its data. The controller refuses internal topics.
    ///
    /// # Errors
    /// `InvalidTopic`, `UnknownTopic`, the controller's, or `StorageError` when the topic is
    /// gone but this broker could not remove its data (removed at its next start, and never
    /// seen by a topic created later under the same name).
    pub async fn delete_topic(&self, name: &str) -> Result<(), Failure> {
        let topic = self.topic(name)?;
        self.controller()
            .delete_topic(v1::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|s| from_controller(&s))?;
        self.wait_for(|node| node.topic(name).is_err()).await?;
        let failed: Vec<String> = {
            let mut failures = self
                .failed_deletions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mine: Vec<(String, i32)> = failures
                .keys()
                .filter(|(id, _)| *id == topic.id)
                .cloned()
                .collect();
            mine.into_iter()
                .filter_map(|key| failures.remove(&key))
                .collect()
        };
        if failed.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            Reason::StorageError,
            format!(
                "topic {name:?} is deleted, but broker {} could not remove its data ({}); it is removed at the broker's next start, and a topic created under this name does not see it",
                self.config.broker_id,
                failed.join("; ")
            ),
        ))
    }

    /// Sets and removes topic config keys; the controller checks them.
    ///
    /// # Errors
    /// `UnknownTopic`, or the controller's (`UnknownConfig`, `InvalidConfig`, internal
    /// topics).
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<Arc<Topic>, Failure> {
        self.topic(name)?;
        let changed = self
            .controller()
            .alter_topic_config(v1::AlterTopicConfigRequest {
                name: name.to_string(),
                set: set.into_iter().collect(),
                delete,
            })
            .await
            .map_err(|s| from_controller(&s))?
            .into_inner();
        let overrides: BTreeMap<String, String> = changed.config.into_iter().collect();
        self.wait_for(|node| node.topic(name).is_ok_and(|t| t.overrides == overrides))
            .await?;
        tracing::info!(topic = name, "topic config changed");
        self.topic(name)
    }

    /// Raises a topic's partition count to `total`.
    ///
    /// # Errors
    /// `UnknownTopic`, `InvalidRequest` when `total` is not more than now, or the
    /// controller's.
    pub async fn add_partitions(&self, name: &str, total: i32) -> Result<Arc<Topic>, Failure> {
        let current = self.topic(name)?;
        let have = current.partition_count() as i32;
        if total <= have || total > 10_000 {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!(
                    "topic {name:?} has {have} partitions; the new count must be more, and at most 10000, not {total}"
                ),
            ));
        }
        self.controller()
            .add_partitions(v1::AddPartitionsRequest {
                name: name.to_string(),
                partitions: total,
            })
            .await
            .map_err(|s| from_controller(&s))?;
        self.wait_for(|node| {
            node.topic(name)
                .is_ok_and(|t| t.partition_count() as i32 >= total)
        })
        .await?;
        tracing::info!(topic = name, partitions = total, "partitions added");
        self.topic(name)
    }

    /// A new producer id (and epoch 0) for an idempotent producer, never given twice, even
    /// across restarts: from a block the controller gave this broker, so that producers can
    /// start while the controller is away (a new block is asked for when one runs out).
    ///
    /// # Errors
    /// The controller's, when a new block is needed and it cannot give one.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), Failure> {
        let mut block = self.producer_ids.lock().await;
        Self::refill_producer_ids(self, &mut block).await?;
        let id = block.0;
        block.0 += 1;
        Ok((id, 0))
    }

    /// Asks for a block of producer ids now unless this broker has some left (at start, so
    /// that producers can begin while the controller is away).
    ///
    /// # Errors
    /// The controller's.
    pub async fn reserve_producer_ids(&self) -> Result<(), Failure> {
        let mut block = self.producer_ids.lock().await;
        Self::refill_producer_ids(self, &mut block).await
    }

    async fn refill_producer_ids(&self, block: &mut (i64, i64)) -> Result<(), Failure> {
        if block.0 >= block.1 {
            let given = self
                .controller()
                .allocate_producer_ids(v1::AllocateProducerIdsRequest {
                    broker_id: self.config.broker_id,
                    count: PRODUCER_ID_BLOCK,
                })
                .await
                .map_err(|s| from_controller(&s))?
                .into_inner();
            *block = (given.first_id, given.first_id + i64::from(given.count));
        }
        Ok(())
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
        let target = self.partition(topic, partition)?;
        // Consumers read from leaders only, at the epoch they believe in.
        target.check_client_epoch(leader_epoch)?;
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
            for partition in topic.replicas.into_values() {
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
            .filter_map(|g| self.coordinator.describe_local(self, &g.group_id).ok())
            .collect();
        self.metrics.set_group_lags(described.iter().flat_map(|d| {
            d.partitions
                .iter()
                .map(move |p| (d.group_id.as_str(), p.topic.as_str(), p.partition, p.lag))
        }));
        let topics: Vec<Arc<Topic>> = self.topics().values().cloned().collect();
        let me = self.config.broker_id;
        let under_replicated = topics
            .iter()
            .flat_map(|t| &t.layout)
            .filter(|p| p.leader == Some(me) && p.isr.len() < p.replicas.len())
            .count();
        self.metrics.set_under_replicated(under_replicated);
        self.metrics
            .set_offline_replicas(topics.iter().map(|t| t.failed.len()).sum::<usize>());
        self.metrics
            .set_open_segment_files(self.segment_files.open_segments());
        for topic in topics {
            for partition in topic.replicas.values() {
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

fn open_partition(
    config: &BrokerConfig,
    segment_files: &Arc<weir_storage::SegmentFileCache>,
    topic: &str,
    topic_id: &str,
    index: i32,
    topic_config: &TopicConfig,
) -> anyhow::Result<Arc<Partition>> {
    let dir = weir_storage::layout::claim_partition_dir(&config.data_dir, topic, index, topic_id)
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))?;
    let options = weir_storage::LogOptions {
        files: Arc::clone(segment_files),
        ..Default::default()
    };
    let (partition, report) =
        Partition::open(&dir, topic, index, topic::log_config(topic_config), options)
            .map_err(|e| anyhow::anyhow!("open partition {topic}-{index}: {}", error_chain(&e)))?;
    if !report.clean_shutdown && report.recovered_segments > 0 {
        tracing::info!(topic, partition = index, ?report, "partition recovered");
    }
    Ok(Arc::new(partition))
}

/// This broker's replica of partition `index` of `topic`.
///
/// # Errors
/// `UnknownPartition`; `StorageError` when this broker could not open its replica;
/// `NotLeader` when the partition exists but lives on other brokers.
pub fn local_replica(topic: &Topic, index: i32) -> Result<Arc<Partition>, Failure> {
    if let Some(replica) = topic.replicas.get(&index) {
        return Ok(Arc::clone(replica));
    }
    if let Some(why) = topic.failed.get(&index) {
        return Err(Failure::new(
            Reason::StorageError,
            format!(
                "this broker could not open its replica of {}-{index}: {why}",
                topic.name
            ),
        ));
    }
    match usize::try_from(index)
        .ok()
        .and_then(|i| topic.layout.get(i))
    {
        Some(p) => Err(Failure::new(
            Reason::NotLeader,
            format!(
                "this broker holds no replica of {}-{index}; its leader is {}",
                topic.name,
                p.leader
                    .map_or_else(|| "none now".to_string(), |l| format!("broker {l}"))
            ),
        )),
        None => Err(Failure::new(
            Reason::UnknownPartition,
            format!(
                "topic {:?} has {} partitions; there is no partition {index}",
                topic.name,
                topic.partition_count()
            ),
        )),
    }
}

/// A controller's refusal as this broker reports it.
fn from_controller(status: &tonic::Status) -> Failure {
    match Reason::of(status) {
        Some(reason) => Failure::new(reason, status.message()),
        None if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ) =>
        {
            Failure::new(
                Reason::NotController,
                format!(
                    "the controller cannot be reached: {}",
                    weir_proto::status_text(status)
                ),
            )
        }
        None => Failure::new(
            Reason::NotController,
            format!("the controller failed the request: {}", status.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(
        index: i32,
        leader: Option<i32>,
        replicas: &[i32],
        isr: &[i32],
    ) -> v1::ClusterPartition {
        v1::ClusterPartition {
            partition: index,
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 1,
            isr: isr.to_vec(),
            partition_epoch: 1,
        }
    }

    #[test]
    fn a_follower_outside_the_isr_is_catching_up() {
        let layout = [
            // Followed and in sync.
            partition(0, Some(1), &[1, 2, 3], &[1, 2, 3]),
            // Followed, not in sync: catching up.
            partition(1, Some(1), &[1, 2, 3], &[1, 3]),
            // Led here.
            partition(2, Some(2), &[2, 3], &[2]),
            // Offline: nothing to catch up with.
            partition(3, None, &[1, 2], &[1]),
            // Not a replica here.
            partition(4, Some(1), &[1, 3], &[1]),
        ];
        assert_eq!(
            out_of_sync(2, [("orders", &layout[..])].into_iter()),
            [("orders".to_string(), 1)]
        );
        assert!(out_of_sync(1, [("orders", &layout[..])].into_iter()).is_empty());
    }
}
