//! The broker's part in a cluster: it registers with the controller and heartbeats, applies
//! the metadata the controller pushes, follows the leaders of the partitions it replicates,
//! and asks the controller for ISR changes of the partitions it leads.
//!
//! Every loop here runs until the broker stops, retries with a short pause after a failure
//! (the controller or a leader may be down for a while), and logs what it could not do.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use weir_proto::v1;
use weir_proto::v1::controller_client::ControllerClient;
use weir_proto::v1::replication_client::ReplicationClient;
use weir_proto::{ClusterSecret, Reason};

use crate::MAX_MESSAGE_SIZE;
use crate::node::Node;
use crate::partition::{Partition, ReplicaFetched};

/// The pause after a failed call before the next try.
const RETRY: Duration = Duration::from_millis(200);
/// The most bytes a follower asks for at once.
const REPLICA_FETCH_BYTES: i32 = 8 << 20;

/// A lazily connected gRPC channel to `address` (`host:port` or a URL).
///
/// # Errors
/// An address that is not a valid URI.
pub fn channel(address: &str) -> Result<Channel, tonic::transport::Error> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        // No call between brokers, or to the controller, waits for ever on a half-dead
        // connection: unary calls time out (a watch stream's headers come at once), and
        // keepalive pings find a silent peer.
        .timeout(Duration::from_secs(15))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(64 << 20))
        .connect_lazy())
}

/// What every call to the controller carries: the broker's cluster
/// ([`weir_proto::CLUSTER_HEADER`]) and the cluster secret ([`weir_proto::SECRET_HEADER`]).
#[derive(Debug, Clone)]
pub struct ClusterHeader {
    pub cluster: Option<MetadataValue<Ascii>>,
    pub secret: ClusterSecret,
}

impl Interceptor for ClusterHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(cluster) = &self.cluster {
            request
                .metadata_mut()
                .insert(weir_proto::CLUSTER_HEADER, cluster.clone());
        }
        self.secret.attach(&mut request);
        Ok(request)
    }
}

/// A client of the controller, naming the broker's cluster and holding its secret.
pub type Controller = ControllerClient<InterceptedService<Channel, ClusterHeader>>;

pub fn controller_client(channel: Channel, cluster: ClusterHeader) -> Controller {
    ControllerClient::with_interceptor(channel, cluster)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// Whether a failed call to the controller should go to the next controller address: this
/// one is unreachable, or no longer (or not yet) the controller.
fn try_next_controller(node: &Node, failed: usize, status: &tonic::Status) {
    if status.code() == tonic::Code::Unavailable
        || Reason::of(status) == Some(Reason::NotController)
    {
        node.next_controller(failed);
    }
}

/// Registers (retrying until the controller answers), returns the heartbeat interval.
pub async fn register(node: &Node, stopped: &watch::Receiver<bool>) -> Option<Duration> {
    let request = v1::RegisterBrokerRequest {
        broker_id: node.config.broker_id,
        address: node.config.advertised(),
        rack: node.config.rack.clone(),
        incarnation: node.incarnation,
    };
    loop {
        if *stopped.borrow() {
            return None;
        }
        let (at, mut controller) = node.controller_at();
        match controller.register_broker(request.clone()).await {
            Ok(response) => {
                let r = response.into_inner();
                tracing::info!(
                    broker = request.broker_id,
                    controller_epoch = r.controller_epoch,
                    "registered with the controller"
                );
                return Some(Duration::from_millis(u64::from(
                    r.heartbeat_interval_ms.max(10),
                )));
            }
            Err(status) => {
                try_next_controller(node, at, &status);
                tracing::warn!(error = %weir_proto::status_text(&status), "registration failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Heartbeats every `interval`; registers again when the controller no longer knows this
/// broker (it was declared dead, or a new controller lost track of it).
pub async fn heartbeat(
    node: Arc<Node>,
    mut interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        let request = v1::BrokerHeartbeatRequest {
            broker_id: node.config.broker_id,
            incarnation: node.incarnation,
        };
        let (at, mut controller) = node.controller_at();
        match controller.broker_heartbeat(request).await {
            Ok(_) => {}
            Err(status) if Reason::of(&status) == Some(Reason::UnknownBroker) => {
                tracing::warn!(
                    "the controller does not know this broker (declared dead?): registering again"
                );
                match register(&node, &stopped).await {
                    Some(every) => interval = every,
                    None => return,
                }
            }
            Err(status) => {
                try_next_controller(&node, at, &status);
                tracing::debug!(error = %weir_proto::status_text(&status), "heartbeat failed");
            }
        }
    }
}

/// Applies every metadata the controller pushes, reconnecting when the stream ends.
pub async fn watch_metadata(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    loop {
        let request = v1::WatchMetadataRequest {
            broker_id: Some(node.config.broker_id),
        };
        let (at, mut controller) = node.controller_at();
        let stream = tokio::select! {
            r = controller.watch_metadata(request) => r,
            _ = stopped.changed() => return,
        };
        match stream {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = stopped.changed() => return,
                    };
                    match next {
                        Ok(Some(metadata)) => {
                            let node = Arc::clone(&node);
                            tokio::task::block_in_place(|| node.apply_metadata(&metadata));
                        }
                        Ok(None) => break,
                        Err(status) => {
                            try_next_controller(&node, at, &status);
                            tracing::warn!(error = %weir_proto::status_text(&status), "metadata watch failed");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                try_next_controller(&node, at, &status);
                tracing::debug!(error = %weir_proto::status_text(&status), "cannot watch the metadata yet")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Asks the controller for the ISR changes the leaders here want, a few times a second.
pub async fn propose_isr_changes(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let every = (node.config.replica_lag_time_max / 4)
        .clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        for (topic, partition) in node.led_partitions() {
            let Some((isr, leader_epoch, partition_epoch)) =
                partition.isr_proposal(node.config.replica_lag_time_max)
            else {
                continue;
            };
            let request = v1::AlterIsrRequest {
                broker_id: node.config.broker_id,
                incarnation: node.incarnation,
                topic: topic.clone(),
                partition: partition.index,
                leader_epoch,
                partition_epoch,
                isr: isr.clone(),
            };
            let (at, mut controller) = node.controller_at();
            match controller.alter_isr(request).await {
                Ok(committed) => {
                    let c = committed.into_inner();
                    tracing::info!(topic, partition = partition.index, isr = ?c.isr, "ISR changed");
                    node.metrics
                        .isr_changed(isr.len() < partition_isr_len(&partition));
                    partition.become_leader(
                        node.config.broker_id,
                        c.leader_epoch,
                        c.partition_epoch,
                        c.replicas,
                        c.isr,
                    );
                }
                Err(status)
                    if Reason::of(&status) == Some(Reason::StalePartitionEpoch)
                        || Reason::of(&status) == Some(Reason::NotController)
                        || status.code() == tonic::Code::Unavailable =>
                {
                    try_next_controller(&node, at, &status);
                    tracing::debug!(topic, partition = partition.index, error = %weir_proto::status_text(&status), "ISR change not made now")
                }
                Err(status) => {
                    tracing::warn!(topic, partition = partition.index, error = %weir_proto::status_text(&status), "ISR change refused")
                }
            }
        }
    }
}

fn partition_isr_len(partition: &Partition) -> usize {
    match partition.role_now() {
        crate::partition::Role::Leader(view) => view.isr.len(),
        _ => 0,
    }
}

/// Follows `leader` for one partition at `leader_epoch`, until the task is aborted (the
/// metadata moved on) or the partition stops following at that epoch.
pub async fn follow(
    node: Arc<Node>,
    partition: Arc<Partition>,
    leader_address: String,
    leader_epoch: i32,
) {
    let topic = partition.topic.clone();
    let Ok(channel) = node.peer_channel(&leader_address) else {
        tracing::error!(
            topic,
            partition = partition.index,
            leader_address,
            "the leader's address is not valid"
        );
        return;
    };
    let mut client = ReplicationClient::with_interceptor(channel, node.secret().presenter())
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let max_wait = i32::try_from(node.config.replica_fetch_wait.as_millis()).unwrap_or(500);
    // An answer later than the long poll plus this is a dead stream: open another.
    let answer_deadline = node.config.replica_fetch_wait + Duration::from_secs(10);
    let mut stream: Option<(
        tokio::sync::mpsc::Sender<v1::ReplicaFetchRequest>,
        tonic::Streaming<v1::ReplicaFetchResponse>,
    )> = None;
    loop {
        if stream.is_none() {
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            match client
                .replica_fetch(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
            {
                Ok(response) => stream = Some((sender, response.into_inner())),
                Err(status) => {
                    tracing::debug!(topic, partition = partition.index, error = %weir_proto::status_text(&status), "cannot open the replica stream");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let Some((sender, answers)) = stream.as_mut() else {
            continue;
        };
        let (fetch_offset, last_fetched_epoch) = partition.fetch_position();
        let request = v1::ReplicaFetchRequest {
            replica_id: node.config.broker_id,
            topic: topic.clone(),
            partition: partition.index,
            leader_epoch,
            fetch_offset,
            last_fetched_epoch,
            max_bytes: REPLICA_FETCH_BYTES,
            max_wait_ms: max_wait,
        };
        let answer = if sender.send(request).await.is_ok() {
            tokio::time::timeout(answer_deadline, answers.message()).await
        } else {
            Ok(Ok(None))
        };
        let fetched = match answer {
            Ok(Ok(Some(fetched))) => fetched,
            Ok(Ok(None)) => {
                stream = None;
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Ok(Err(status)) => {
                tracing::debug!(topic, partition = partition.index, error = %weir_proto::status_text(&status), "replica fetch failed");
                stream = None;
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    topic,
                    partition = partition.index,
                    "the leader did not answer a fetch in time; reconnecting"
                );
                stream = None;
                continue;
            }
        };
        if fetched.log_start_offset > fetch_offset && fetched.diverging.is_none() {
            // The leader no longer has what follows this log: start over where it starts.
            if let Err(f) = partition.restart_at(fetched.log_start_offset, leader_epoch) {
                tracing::error!(topic, partition = partition.index, error = %f.message, "cannot restart the log at the leader's start");
                tokio::time::sleep(RETRY).await;
            }
            continue;
        }
        let answer = match fetched.diverging {
            Some(d) => ReplicaFetched::Diverging {
                epoch: d.epoch,
                end_offset: d.end_offset,
            },
            None => ReplicaFetched::Batches {
                batches: fetched.record_batches,
                high_watermark: fetched.high_watermark,
                log_start_offset: fetched.log_start_offset,
                log_end_offset: fetched.log_end_offset,
            },
        };
        match partition.apply_fetched(answer, leader_epoch).await {
            Ok(()) => {}
            Err(f) if f.reason == Reason::NotLeader => return,
            Err(f) => {
                tracing::error!(topic, partition = partition.index, error = %f.message, "cannot apply what the leader sent");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
