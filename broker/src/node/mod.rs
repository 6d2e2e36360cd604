//! This broker's state: its topics and their partitions, and the operations both front doors
//! (gRPC in `service`, the Kafka listener next) call. Each job is a module of its own; this
//! one holds the state and finds topics and partitions in it.
//!
//! - `metadata`: applying the controller's decisions (a pure plan, then its execution);
//! - `replication`: following leaders;
//! - `admin`: topic changes and producer ids, through the controller;
//! - `groups`: where groups are coordinated;
//! - `offsets`: partition offsets as their leaders have them;
//! - `records`: append, encode and fetch;
//! - `maintenance`: retention, flushes, gauges.

mod admin;
mod groups;
mod maintenance;
pub mod metadata;
mod offsets;
mod records;
mod replication;

pub use records::MAX_FETCH_BYTES;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tonic::transport::Channel;
use weir_proto::Reason;
use weir_proto::v1;

use crate::config::BrokerConfig;
use crate::coordinator::Coordinator;
use crate::failure::{Failure, error_chain};
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::topic::{self, Topic, TopicConfig, is_internal, local_replica};

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
    controllers: Vec<(String, std::sync::Mutex<crate::links::Controller>)>,
    cluster_header: crate::links::ClusterHeader,
    current_controller: std::sync::atomic::AtomicUsize,
    /// The brokers as the controller last told them.
    brokers: RwLock<BTreeMap<i32, v1::ClusterBroker>>,
    /// The newest controller epoch seen: metadata from an older controller is ignored.
    controller_epoch: AtomicI32,
    /// Counts applied metadata: admin calls wait for their change to arrive here.
    applied: watch::Sender<u64>,
    /// The follower task of each partition followed here, with the leader epoch it follows.
    fetchers: std::sync::Mutex<Fetchers>,
    /// Holds the replicas a reassignment adds here to `reassignment_throttle`.
    pub(crate) throttle: crate::throttle::Throttle,
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
        let header = crate::links::ClusterHeader {
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
                let channel = crate::links::channel(address)
                    .map_err(|e| anyhow::anyhow!("controller address {address:?}: {e}"))?;
                Ok((
                    address.to_string(),
                    std::sync::Mutex::new(crate::links::controller_client(channel, header.clone())),
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
            config.group_initial_rebalance_delay,
        );
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        let segment_files = Arc::new(weir_storage::SegmentFileCache::new(
            config.max_open_segments,
        ));
        let throttle = crate::throttle::Throttle::new(config.reassignment_throttle);
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
            throttle,
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

    pub fn controller(&self) -> crate::links::Controller {
        self.controller_at().1
    }

    /// The current controller address's index, and a client of it.
    pub fn controller_at(&self) -> (usize, crate::links::Controller) {
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
        if let Ok(channel) = crate::links::channel(address) {
            *client.lock().unwrap_or_else(|p| p.into_inner()) =
                crate::links::controller_client(channel, self.cluster_header.clone());
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

    /// The topic with id `id` (its stable UUID), if this broker knows it.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.topics()
            .values()
            .find(|t| uuid::Uuid::parse_str(&t.id).is_ok_and(|u| u == id))
            .cloned()
    }

    /// The topic config a topic has where it overrides nothing: Weir's defaults under this
    /// broker's `topic_defaults`.
    pub fn topic_defaults(&self) -> &TopicConfig {
        &self.defaults
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
    pub(crate) async fn wait_for(&self, done: impl Fn(&Node) -> bool) -> Result<(), Failure> {
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
            ..Default::default()
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
