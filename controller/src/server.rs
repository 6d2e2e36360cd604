//! The controller at run time: the decisions of [`crate::decide`] made one at a time, each
//! stored (conditionally) before it is announced, brokers' liveness tracked against their
//! heartbeats, and the metadata pushed to every watcher after each change.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use weir_proto::Reason;
use weir_proto::v1;

use crate::error::ControllerError;
use crate::model::{BrokerId, ClusterState};
use crate::store::{MetadataStore, StoreError, Version};

/// The most partitions a topic may have.
const MAX_PARTITIONS: usize = 10_000;
/// Partitions one reassignment call may move.
const MAX_REASSIGNMENTS: usize = 10_000;

/// How the controller judges liveness.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often brokers are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// A broker without a heartbeat for this long is dead.
    pub session_timeout: Duration,
    /// Extra time a new controller gives the brokers it inherits before their first
    /// heartbeat (they find it only after a failover: a Service's endpoints move, a client
    /// tries the next address).
    pub takeover_grace: Duration,
    /// How often leadership moves back to preferred replicas that are in sync again (Kafka's
    /// `leader.imbalance.check.interval.seconds`); `None`: never (`auto.leader.rebalance.enable`
    /// off).
    pub leader_rebalance_interval: Option<Duration>,
    /// The share of a broker's preferred partitions led elsewhere above which they move
    /// back (Kafka's `leader.imbalance.per.broker.percentage` / 100).
    pub leader_imbalance_threshold: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: Duration::from_millis(500),
            session_timeout: Duration::from_secs(3),
            takeover_grace: Duration::ZERO,
            leader_rebalance_interval: Some(Duration::from_secs(30)),
            leader_imbalance_threshold: 0.1,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: ClusterState,
    version: Option<Version>,
    /// Grows with every change this controller stores; watchers see it.
    changes: u64,
    /// When each live broker last heartbeated (or when this controller started).
    heard: HashMap<BrokerId, Instant>,
    /// Set when a write found another controller's: nothing more is decided here.
    fenced: bool,
}

/// The running controller: share it (it is cheap to clone) between the gRPC service and the
/// liveness task.
#[derive(Debug)]
pub struct Controller<S> {
    store: S,
    timing: Timing,
    inner: Mutex<Inner>,
    published: watch::Sender<Arc<v1::ClusterMetadata>>,
    /// Set at shutdown: metadata watches end, so the server can finish.
    stopping: watch::Sender<bool>,
}

impl<S: MetadataStore> Controller<S> {
    /// Loads the stored state and takes over as controller with the next epoch. Every broker
    /// the state holds as alive gets a full session from now to heartbeat.
    ///
    /// # Errors
    /// The store's: `Conflict` when another controller took over meanwhile.
    pub async fn start(store: S, timing: Timing) -> Result<Arc<Controller<S>>, StoreError> {
        Controller::start_at(store, timing, 0).await
    }

    /// [`Controller::start`] with an epoch of at least `min_epoch`: an election outside the
    /// store (the operator's Lease) already numbers its winners.
    ///
    /// # Errors
    /// The store's: `Conflict` when another controller took over meanwhile.
    pub async fn start_at(
        store: S,
        timing: Timing,
        min_epoch: i32,
    ) -> Result<Arc<Controller<S>>, StoreError> {
        let (mut state, version) = match store.load().await? {
            Some((state, version)) => (state, Some(version)),
            None => (ClusterState::default(), None),
        };
        state.controller_epoch = (state.controller_epoch + 1).max(min_epoch);
        let version = store.store(&state, version.as_ref()).await?;
        let now = Instant::now() + timing.takeover_grace;
        let heard = state.alive_brokers().map(|b| (b.id, now)).collect();
        tracing::info!(
            controller_epoch = state.controller_epoch,
            brokers = state.brokers.len(),
            topics = state.topics.len(),
            "controller started"
        );
        let (published, _) = watch::channel(Arc::new(to_wire(&state, 0)));
        Ok(Arc::new(Controller {
            store,
            timing,
            inner: Mutex::new(Inner {
                state,
                version: Some(version),
                changes: 0,
                heard,
                fenced: false,
            }),
            published,
            stopping: watch::channel(false).0,
        }))
    }

    /// Ends every metadata watch (at shutdown).
    pub fn stop_watches(&self) {
        self.stopping.send_replace(true);
    }

    /// The state as last stored.
    pub async fn state(&self) -> ClusterState {
        self.inner.lock().await.state.clone()
    }

    /// Whether another controller's write was found: this one decides nothing more.
    pub async fn is_fenced(&self) -> bool {
        self.inner.lock().await.fenced
    }

    /// The metadata as last published.
    pub fn metadata(&self) -> Arc<v1::ClusterMetadata> {
        self.published.borrow().clone()
    }

    /// Applies `decide` to a copy of the state, stores the copy, then makes it current and
    /// publishes it. A refused decision or a failed write changes nothing.
    async fn change<T>(
        &self,
        decide: impl FnOnce(&mut ClusterState) -> Result<T, ControllerError>,
    ) -> Result<T, Status> {
        let mut inner = self.inner.lock().await;
        self.change_locked(&mut inner, decide).await
    }

    /// [`Controller::change`] with the state already locked.
    async fn change_locked<T>(
        &self,
        inner: &mut Inner,
        decide: impl FnOnce(&mut ClusterState) -> Result<T, ControllerError>,
    ) -> Result<T, Status> {
        if inner.fenced {
            return Err(Reason::NotController
                .status("another controller took over; this one no longer decides anything"));
        }
        let mut next = inner.state.clone();
        let outcome = decide(&mut next).map_err(|e| status_of(&e))?;
        if next == inner.state {
            return Ok(outcome);
        }
        match self.store.store(&next, inner.version.as_ref()).await {
            Ok(version) => {
                inner.version = Some(version);
                inner.changes += 1;
                inner.state = next;
                self.published
                    .send_replace(Arc::new(to_wire(&inner.state, inner.changes)));
                Ok(outcome)
            }
            Err(e @ StoreError::Conflict { .. }) => {
                tracing::error!(error = %weir_proto::Chain(&e), "fenced: another controller wrote the metadata");
                inner.fenced = true;
                Err(Reason::NotController.status(weir_proto::error_chain(&e)))
            }
            Err(e) => {
                let why = weir_proto::error_chain(&e);
                tracing::error!(error = %why, "could not store the metadata");
                Err(Reason::StorageError.status(format!(
                    "the controller could not store its decision: {why}"
                )))
            }
        }
    }

    /// Declares dead every broker whose last heartbeat is older than the session timeout.
    /// Called by [`Controller::run_liveness`]; public for tests.
    pub async fn expire_sessions(&self) {
        let now = Instant::now();
        let expired: Vec<BrokerId> = {
            let inner = self.inner.lock().await;
            inner
                .state
                .alive_brokers()
                .filter(|b| {
                    inner
                        .heard
                        .get(&b.id)
                        .is_none_or(|at| now.duration_since(*at) > self.timing.session_timeout)
                })
                .map(|b| b.id)
                .collect()
        };
        for id in expired {
            let mut inner = self.inner.lock().await;
            // It may have heartbeated or registered again since the list was made.
            let stale = inner
                .heard
                .get(&id)
                .is_none_or(|at| Instant::now().duration_since(*at) > self.timing.session_timeout);
            if !stale {
                continue;
            }
            let result = self
                .change_locked(&mut inner, |state| {
                    Ok(if state.is_alive(id) {
                        state.broker_lost(id)
                    } else {
                        Vec::new()
                    })
                })
                .await;
            drop(inner);
            match result {
                Ok(changed) => tracing::warn!(
                    broker = id,
                    partitions = changed.len(),
                    "broker missed its heartbeat deadline: declared dead"
                ),
                Err(e) => {
                    tracing::error!(broker = id, error = %e.message(), "could not declare a broker dead")
                }
            }
        }
    }

    /// Checks liveness for ever, a few times per heartbeat interval, and moves leadership
    /// back to preferred replicas every rebalance interval.
    pub async fn run_liveness(self: Arc<Self>) {
        let tick = (self.timing.heartbeat_interval / 2).max(Duration::from_millis(10));
        let mut last_rebalance = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            self.expire_sessions().await;
            if let Some(interval) = self.timing.leader_rebalance_interval
                && last_rebalance.elapsed() >= interval
            {
                last_rebalance = Instant::now();
                self.rebalance_leaders().await;
            }
        }
    }

    /// Moves leadership back to preferred replicas that are in sync again, where a broker's
    /// imbalance is above the threshold. Called by [`Controller::run_liveness`]; public for
    /// tests.
    pub async fn rebalance_leaders(&self) {
        let threshold = self.timing.leader_imbalance_threshold;
        match self
            .change(|state| Ok(state.rebalance_leaders(threshold)))
            .await
        {
            Ok(moved) if !moved.is_empty() => tracing::info!(
                partitions = moved.len(),
                "leadership moved back to preferred replicas"
            ),
            Ok(_) => {}
            Err(status) => tracing::warn!(
                error = %weir_proto::status_text(&status),
                "could not move leadership back to preferred replicas"
            ),
        }
    }

    /// Starts (or, with an empty replica list, cancels) partition moves, in one decision;
    /// a result per move, with an empty `error` where accepted. The operator calls this
    /// directly; brokers through the `AlterReassignments` call.
    ///
    /// # Errors
    /// When the decision cannot be stored (another controller took over, the store failed).
    pub async fn alter_reassignments(
        &self,
        moves: &[v1::PartitionReassignment],
    ) -> Result<Vec<v1::ReassignmentResult>, Status> {
        let results = self
            .change(|state| {
                let results: Vec<v1::ReassignmentResult> = moves
                    .iter()
                    .map(|m| {
                        let outcome = if m.replicas.is_empty() {
                            state.cancel_reassignment(&m.topic, m.partition).map(|_| ())
                        } else {
                            state
                                .reassign(&m.topic, m.partition, &m.replicas)
                                .map(|_| ())
                        };
                        v1::ReassignmentResult {
                            topic: m.topic.clone(),
                            partition: m.partition,
                            error: outcome.err().map(|e| e.to_string()).unwrap_or_default(),
                        }
                    })
                    .collect();
                // A move that copies nothing, or whose replicas are in sync already, is done.
                state.complete_reassignments();
                Ok(results)
            })
            .await?;
        for result in &results {
            if result.error.is_empty() {
                tracing::info!(topic = %result.topic, partition = result.partition, "reassignment accepted");
            } else {
                tracing::warn!(topic = %result.topic, partition = result.partition, error = %result.error, "reassignment refused");
            }
        }
        Ok(results)
    }

    /// Forgets a broker that is gone for good (scaled away): dead and holding no replica.
    /// Returns whether it was forgotten.
    ///
    /// # Errors
    /// When the decision cannot be stored.
    pub async fn forget_broker(&self, id: BrokerId) -> Result<bool, Status> {
        self.change(|state| Ok(state.forget_broker(id))).await
    }

    async fn epoch(&self) -> i32 {
        self.inner.lock().await.state.controller_epoch
    }
}

/// The gRPC face of a [`Controller`].
#[derive(Debug)]
pub struct ControllerService<S>(pub Arc<Controller<S>>);

impl<S> Clone for ControllerService<S> {
    fn clone(&self) -> Self {
        ControllerService(Arc::clone(&self.0))
    }
}

type MetadataStream =
    Pin<Box<dyn Stream<Item = Result<v1::ClusterMetadata, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S: MetadataStore + 'static> v1::controller_server::Controller for ControllerService<S> {
    async fn register_broker(
        &self,
        request: Request<v1::RegisterBrokerRequest>,
    ) -> Result<Response<v1::RegisterBrokerResponse>, Status> {
        let r = request.into_inner();
        if r.address.is_empty() {
            return Err(Reason::InvalidRequest.status("a broker registers with its address"));
        }
        let controller = &self.0;
        // Heard first: the liveness check must not find it registered but never heard.
        controller
            .inner
            .lock()
            .await
            .heard
            .insert(r.broker_id, Instant::now());
        let registered = controller
            .change(|state| {
                let registered = state.register(
                    r.broker_id,
                    r.address.clone(),
                    r.rack.clone(),
                    r.incarnation,
                );
                if let Some(broker) = state.brokers.get_mut(&r.broker_id) {
                    broker.kafka_address = r.kafka_address.clone();
                }
                Ok(registered)
            })
            .await?;
        tracing::info!(
            broker = r.broker_id,
            address = %r.address,
            incarnation = r.incarnation,
            restarted = registered.restarted,
            partitions = registered.changed.len(),
            "broker registered"
        );
        Ok(Response::new(v1::RegisterBrokerResponse {
            controller_epoch: controller.epoch().await,
            heartbeat_interval_ms: millis(controller.timing.heartbeat_interval),
            session_timeout_ms: millis(controller.timing.session_timeout),
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<v1::BrokerHeartbeatRequest>,
    ) -> Result<Response<v1::BrokerHeartbeatResponse>, Status> {
        let r = request.into_inner();
        let mut inner = self.0.inner.lock().await;
        if inner.fenced {
            return Err(Reason::NotController.status("another controller took over"));
        }
        inner
            .state
            .heartbeat(r.broker_id, r.incarnation)
            .map_err(|e| status_of(&e))?;
        inner.heard.insert(r.broker_id, Instant::now());
        Ok(Response::new(v1::BrokerHeartbeatResponse {
            controller_epoch: inner.state.controller_epoch,
        }))
    }

    async fn alter_isr(
        &self,
        request: Request<v1::AlterIsrRequest>,
    ) -> Result<Response<v1::ClusterPartition>, Status> {
        let r = request.into_inner();
        let partition = self
            .0
            .change(|state| {
                state.heartbeat(r.broker_id, r.incarnation)?;
                state.alter_isr(
                    &r.topic,
                    r.partition,
                    r.broker_id,
                    r.leader_epoch,
                    r.partition_epoch,
                    &r.isr,
                )
            })
            .await?;
        tracing::info!(topic = %r.topic, partition = r.partition, isr = ?partition.isr, partition_epoch = partition.partition_epoch, "ISR changed");
        // An added replica that caught up may complete its partition's reassignment: a
        // decision of its own, after the leader's answer (which is the state it asked for;
        // the leader learns of the move, with a new leader epoch, from the metadata).
        if partition.is_reassigning() {
            match self
                .0
                .change(|state| Ok(state.complete_reassignments()))
                .await
            {
                Ok(done) => {
                    for (topic, index) in done {
                        tracing::info!(topic = %topic, partition = index, "reassignment completed");
                    }
                }
                Err(status) => {
                    tracing::warn!(error = %weir_proto::status_text(&status), "could not complete a reassignment now; the next ISR change retries")
                }
            }
        }
        Ok(Response::new(partition_to_wire(r.partition, &partition)))
    }

    type WatchMetadataStream = MetadataStream;

    async fn watch_metadata(
        &self,
        request: Request<v1::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        if let Some(broker) = request.into_inner().broker_id {
            tracing::debug!(broker, "metadata watcher connected");
        }
        // A task forwards each new metadata until the watcher leaves or the controller stops.
        let mut updates = self.0.published.subscribe();
        let mut stopping = self.0.stopping.subscribe();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let metadata = (**updates.borrow_and_update()).clone();
                if sender.send(Ok(metadata)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = stopping.wait_for(|&stop| stop) => return,
                    () = sender.closed() => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<v1::AllocateProducerIdsRequest>,
    ) -> Result<Response<v1::AllocateProducerIdsResponse>, Status> {
        let count = request.into_inner().count.clamp(1, 1_000_000);
        let first_id = self
            .0
            .change(|state| Ok(state.allocate_producer_ids(i64::from(count))))
            .await?;
        Ok(Response::new(v1::AllocateProducerIdsResponse {
            first_id,
            count,
        }))
    }

    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        let r = request.into_inner();
        let partitions = usize::try_from(r.partitions)
            .ok()
            .filter(|p| (1..=MAX_PARTITIONS).contains(p))
            .ok_or_else(|| {
                Reason::InvalidRequest.status(format!(
                    "a topic needs 1 to {MAX_PARTITIONS} partitions, not {}",
                    r.partitions
                ))
            })?;
        let replication_factor = usize::try_from(r.replication_factor).map_err(|_| {
            Reason::InvalidReplicationFactor.status("a negative replication factor")
        })?;
        let config: BTreeMap<String, String> = r.config.into_iter().collect();
        let topic = self
            .0
            .change(|state| {
                state
                    .create_topic(&r.name, topic_id(), partitions, replication_factor, config)
                    .cloned()
            })
            .await?;
        tracing::info!(topic = %r.name, partitions, replication_factor, "topic created");
        Ok(Response::new(topic_to_wire(&topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        self.0.change(|state| state.delete_topic(&name)).await?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        let r = request.into_inner();
        let topic = self
            .0
            .change(|state| {
                let mut config = state
                    .topics
                    .get(&r.name)
                    .ok_or_else(|| ControllerError::UnknownTopic(r.name.clone()))?
                    .config
                    .clone();
                for key in &r.delete {
                    if !crate::topic_config::KEYS.contains(&key.as_str()) {
                        return Err(crate::topic_config::ConfigError::UnknownKey {
                            key: key.clone(),
                        }
                        .into());
                    }
                    config.remove(key);
                }
                config.extend(r.set.clone());
                state.set_topic_config(&r.name, config)?;
                Ok(state.topics[&r.name].clone())
            })
            .await?;
        Ok(Response::new(topic_to_wire(&topic)))
    }

    async fn ensure_internal_topic(
        &self,
        request: Request<v1::EnsureInternalTopicRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        let name = request.into_inner().name;
        let topic = self
            .0
            .change(|state| state.ensure_internal_topic(&name, topic_id()).cloned())
            .await?;
        Ok(Response::new(topic_to_wire(&topic)))
    }

    async fn controlled_shutdown(
        &self,
        request: Request<v1::ControlledShutdownRequest>,
    ) -> Result<Response<v1::ControlledShutdownResponse>, Status> {
        let r = request.into_inner();
        let (changed, still_led) = self
            .0
            .change(|state| state.controlled_shutdown(r.broker_id, r.incarnation))
            .await?;
        tracing::info!(
            broker = r.broker_id,
            partitions = changed.len(),
            still_led,
            "controlled shutdown: leaderships handed over"
        );
        Ok(Response::new(v1::ControlledShutdownResponse {
            partitions_changed: i32::try_from(changed.len()).unwrap_or(i32::MAX),
            partitions_still_led: i32::try_from(still_led).unwrap_or(i32::MAX),
        }))
    }

    async fn alter_reassignments(
        &self,
        request: Request<v1::AlterReassignmentsRequest>,
    ) -> Result<Response<v1::AlterReassignmentsResponse>, Status> {
        let r = request.into_inner();
        if r.reassignments.len() > MAX_REASSIGNMENTS {
            return Err(Reason::InvalidRequest.status(format!(
                "at most {MAX_REASSIGNMENTS} partitions per call, not {}",
                r.reassignments.len()
            )));
        }
        let results = self.0.alter_reassignments(&r.reassignments).await?;
        Ok(Response::new(v1::AlterReassignmentsResponse { results }))
    }

    async fn list_reassignments(
        &self,
        _request: Request<v1::ListReassignmentsRequest>,
    ) -> Result<Response<v1::ListReassignmentsResponse>, Status> {
        let state = self.0.state().await;
        let reassignments = state
            .reassignments()
            .into_iter()
            .map(|(topic, partition, p)| v1::ReassignmentStatus {
                topic,
                partition,
                target: p.target(),
                adding: p.adding,
                removing: p.removing,
                isr: p.isr,
            })
            .collect();
        Ok(Response::new(v1::ListReassignmentsResponse {
            reassignments,
        }))
    }

    async fn add_partitions(
        &self,
        request: Request<v1::AddPartitionsRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        let r = request.into_inner();
        let total = usize::try_from(r.partitions)
            .ok()
            .filter(|p| (1..=MAX_PARTITIONS).contains(p))
            .ok_or_else(|| {
                Reason::InvalidRequest.status(format!(
                    "a topic can have 1 to {MAX_PARTITIONS} partitions, not {}",
                    r.partitions
                ))
            })?;
        let topic = self
            .0
            .change(|state| {
                state.add_partitions(&r.name, total)?;
                Ok(state.topics[&r.name].clone())
            })
            .await?;
        Ok(Response::new(topic_to_wire(&topic)))
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A topic id unique across re-creations of a name: a random UUID (Kafka's topic ids are
/// UUIDs too, KIP-516).
pub fn topic_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The status a refused decision travels as.
pub fn status_of(error: &ControllerError) -> Status {
    let reason = match error {
        ControllerError::UnknownTopic(_) => Reason::UnknownTopic,
        ControllerError::TopicExists(_) => Reason::TopicExists,
        ControllerError::UnknownPartition { .. } => Reason::UnknownPartition,
        ControllerError::InvalidPartitions(_) => Reason::InvalidRequest,
        ControllerError::InvalidReplicationFactor { .. } => Reason::InvalidReplicationFactor,
        ControllerError::UnknownBroker(_) => Reason::UnknownBroker,
        ControllerError::NotLeader { .. } => Reason::NotLeader,
        ControllerError::StaleEpoch { .. } => Reason::StalePartitionEpoch,
        ControllerError::InvalidIsr { .. } => Reason::InvalidRequest,
        ControllerError::InvalidReplicas { .. } => Reason::InvalidRequest,
        ControllerError::InvalidTopic(_) => Reason::InvalidTopic,
        ControllerError::Config(crate::topic_config::ConfigError::UnknownKey { .. }) => {
            Reason::UnknownConfig
        }
        ControllerError::Config(crate::topic_config::ConfigError::InvalidValue { .. }) => {
            Reason::InvalidConfig
        }
        ControllerError::InternalTopic(_) => Reason::InvalidRequest,
    };
    reason.status(error.to_string())
}

/// The metadata as the wire carries it.
pub fn to_wire(state: &ClusterState, version: u64) -> v1::ClusterMetadata {
    v1::ClusterMetadata {
        controller_epoch: state.controller_epoch,
        version,
        brokers: state
            .brokers
            .values()
            .map(|b| v1::ClusterBroker {
                id: b.id,
                address: b.address.clone(),
                rack: b.rack.clone(),
                incarnation: b.incarnation,
                alive: b.alive,
                kafka_address: b.kafka_address.clone(),
                shutting_down: b.shutting_down,
            })
            .collect(),
        topics: state.topics.values().map(topic_to_wire).collect(),
    }
}

fn topic_to_wire(topic: &crate::model::Topic) -> v1::ClusterTopic {
    v1::ClusterTopic {
        name: topic.name.clone(),
        id: topic.id.clone(),
        config: topic.config.clone().into_iter().collect(),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_to_wire(i as i32, p))
            .collect(),
    }
}

fn partition_to_wire(index: i32, p: &crate::model::PartitionState) -> v1::ClusterPartition {
    v1::ClusterPartition {
        partition: index,
        replicas: p.replicas.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        isr: p.isr.clone(),
        partition_epoch: p.partition_epoch,
        adding: p.adding.clone(),
        removing: p.removing.clone(),
    }
}

/// Runs a controller on `listener` until `shutdown` completes. Every call must carry
/// `secret` ([`weir_proto::secret`]): only the cluster's brokers hold it.
///
/// # Errors
/// The store's at start, or the server's.
pub async fn serve<S: MetadataStore + 'static>(
    store: S,
    timing: Timing,
    listener: tokio::net::TcpListener,
    secret: weir_proto::ClusterSecret,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let controller = Controller::start(store, timing).await?;
    let liveness = tokio::spawn(Arc::clone(&controller).run_liveness());
    tracing::info!(%address, "controller listening");
    println!("ready grpc={address}");
    let result = serve_controller(controller, listener, secret, shutdown).await;
    liveness.abort();
    result.map_err(Into::into)
}

/// Serves a running controller on `listener`, guarded by `secret`, until `shutdown`
/// completes; then ends its metadata watches.
///
/// # Errors
/// The server's.
pub async fn serve_controller<S: MetadataStore + 'static>(
    controller: Arc<Controller<S>>,
    listener: tokio::net::TcpListener,
    secret: weir_proto::ClusterSecret,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let watches = Arc::clone(&controller);
    let shutdown = async move {
        shutdown.await;
        watches.stop_watches();
    };
    tonic::transport::Server::builder()
        .add_service(v1::controller_server::ControllerServer::with_interceptor(
            ControllerService(controller),
            secret.guard(),
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
