//! The cluster metadata the controller owns: brokers, topics and the state of every
//! partition. Plain data, serialized whole by a [`crate::MetadataStore`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A broker's id, as configured (`--id`).
pub type BrokerId = i32;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    pub id: BrokerId,
    /// Where clients and other brokers reach it (`host:port`).
    pub address: String,
    pub rack: Option<String>,
    /// Chosen anew by each start of the broker process: a registration with a new
    /// incarnation is a restart, whatever the broker held before is suspect.
    pub incarnation: u64,
    /// Heartbeating within its deadline. A dead broker leads nothing and is in no ISR it could
    /// leave (the last member of an ISR stays, see [`PartitionState::isr`]).
    pub alive: bool,
    /// Where Kafka clients reach it (`host:port`), when it serves the Kafka protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_address: Option<String>,
    /// Stopping cleanly (a controlled shutdown): it has handed its leaderships over and left
    /// the ISRs it could leave; until it registers again it leads nothing and joins no ISR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shutting_down: bool,
}

/// One partition's replicas, leader and in-sync replicas, as the controller decided them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The replicas in preference order: the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// `None` while the partition is offline (no eligible replica is alive).
    pub leader: Option<BrokerId>,
    /// Bumped on every change of leader (and when a partition goes offline), stamped on the
    /// batches a leader appends; fences stale leaders and followers (KIP-101, KIP-320).
    pub leader_epoch: i32,
    /// The in-sync replicas. Never empty: when the last in-sync replica dies it stays the ISR,
    /// so that only it (holding every acknowledged record) can lead again, unless the topic
    /// allows unclean election.
    pub isr: Vec<BrokerId>,
    /// Bumped on every change of this state; an ISR change names the epoch it was computed
    /// from and fails if the state moved (compare-and-set).
    pub partition_epoch: i32,
    /// A reassignment under way (Kafka's KIP-455): replicas being added, which follow and
    /// catch up before they may join the ISR. While a reassignment runs, `replicas` is the
    /// target followed by the replicas being removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<BrokerId>,
    /// Replicas dropped once every added replica is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<BrokerId>,
}

impl PartitionState {
    pub fn is_online(&self) -> bool {
        self.leader.is_some()
    }

    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment under way leads to (the replicas when none is).
    pub fn target(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Unique across the topic's re-creations under the same name.
    pub id: String,
    pub name: String,
    /// Topic config overrides, in Kafka's key names.
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

impl Topic {
    /// `unclean.leader.election.enable`: a replica outside the ISR may lead (and what only
    /// the lost ISR had is gone).
    pub fn unclean_election(&self) -> bool {
        self.config
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v == "true")
    }

    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// Everything the controller knows, stored whole.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterState {
    /// Bumped by every controller that takes over; brokers refuse decisions from an older
    /// one.
    pub controller_epoch: i32,
    pub brokers: BTreeMap<BrokerId, Broker>,
    pub topics: BTreeMap<String, Topic>,
    /// The next idempotent producer id to hand out.
    pub next_producer_id: i64,
}

impl ClusterState {
    pub fn alive_brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values().filter(|b| b.alive)
    }

    pub fn is_alive(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| b.alive)
    }

    /// Brokers that may lead and be let into an ISR: alive and not shutting down.
    pub fn electable(&self) -> Vec<BrokerId> {
        self.alive_brokers()
            .filter(|b| !b.shutting_down)
            .map(|b| b.id)
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }
}
