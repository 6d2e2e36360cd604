//! Following leaders: one fetcher task per partition this broker follows, started and
//! stopped as metadata moves leadership, each on a long-lived replica-fetch stream to its
//! leader over one shared channel per peer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use weir_proto::Reason;
use weir_proto::v1;
use weir_proto::v1::replication_client::ReplicationClient;

use super::Node;
use crate::MAX_MESSAGE_SIZE;
use crate::links::RETRY;
use crate::partition::{Partition, ReplicaFetched};

/// The most bytes a follower asks for at once.
const REPLICA_FETCH_BYTES: i32 = 8 << 20;

impl Node {
    /// Starts a fetcher for every partition followed at a new leader epoch, stops the rest.
    pub(super) fn update_fetchers(
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
            let task = tokio::spawn(follow(
                Arc::clone(self),
                Arc::clone(&partition),
                address,
                epoch,
            ));
            fetchers.insert(key, (epoch, partition, task));
        }
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
        let channel = crate::links::channel(address)?;
        peers.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Whether a reassignment is adding this broker's replica of `topic`-`partition` (it is
    /// copying the partition, not catching up after a restart).
    pub fn is_being_added(&self, topic: &str, partition: i32) -> bool {
        let me = self.config.broker_id;
        self.topics().get(topic).is_some_and(|t| {
            t.layout
                .iter()
                .any(|p| p.partition == partition && p.adding.contains(&me))
        })
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
        // A replica a reassignment is adding copies at the throttled rate.
        let copied = fetched.record_batches.len();
        if copied > 0 && node.is_being_added(&topic, partition.index) {
            let wait = node.throttle.take(copied, std::time::Instant::now());
            if !wait.is_zero() {
                tracing::trace!(
                    topic,
                    partition = partition.index,
                    ?wait,
                    "reassignment throttled"
                );
                tokio::time::sleep(wait).await;
            }
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
