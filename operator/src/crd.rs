//! The custom resources (group `weir.dev`, version `v1alpha1`): what users declare, and the
//! status the operator reports. The CRDs in `crds/` are generated from these types by
//! `crdgen`; never edit them by hand.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Weir cluster: brokers as a StatefulSet, each with its own volume.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "wcl",
    printcolumn = r#"{"name":"Brokers","type":"integer","jsonPath":".spec.brokers"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyBrokers"}"#,
    printcolumn = r#"{"name":"Registered","type":"integer","jsonPath":".status.registeredBrokers"}"#,
    printcolumn = r#"{"name":"Controller","type":"string","jsonPath":".status.controller"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// How many brokers.
    #[schemars(range(min = 1, max = 1000))]
    pub brokers: i32,
    /// The broker image; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub storage: StorageSpec,
    /// CPU and memory for each broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Spread replicas over racks: each broker's rack is its node's value of this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<RackSpec>,
    /// Defaults of topic configs, with Kafka's key names (`retention.ms`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_defaults: BTreeMap<String, String>,
    /// Broker settings beyond these (keys of the broker's config file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortsSpec>,
    /// Give brokers added by a scale-up their share of replicas (a rebalance plan, as
    /// `weir cluster rebalance`); true when absent. Scaling down always drains first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rebalance: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// The volume of each broker, as a Kubernetes quantity (`10Gi`).
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RackSpec {
    /// The node label whose value is a broker's rack, e.g. `topology.kubernetes.io/zone`.
    pub topology_key: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortsSpec {
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
    /// The Kafka protocol port; 9092 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub kafka: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default)]
    pub desired_brokers: i32,
    #[serde(default)]
    pub ready_brokers: i32,
    /// Brokers registered with the controller.
    #[serde(default)]
    pub registered_brokers: i32,
    /// The operator replica holding the controller Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The epoch of the controller that last wrote this cluster's metadata; a controller
    /// never writes over a newer one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_epoch: Option<i32>,
    /// The brokers as registered with the controller (written by it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerRegistration>,
    /// The next idempotent producer id the controller hands out (written by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_producer_id: Option<i64>,
    /// Ready, Progressing, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A broker registered with the controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerRegistration {
    pub id: i32,
    /// Where clients and other brokers reach it.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Which start of the broker process registered (a restart registers anew).
    pub incarnation: String,
    /// Heartbeating within its session timeout.
    pub alive: bool,
    /// Where Kafka clients reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_address: Option<String>,
    /// In a controlled shutdown: its leaderships handed over, in no ISR it could leave.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shutting_down: bool,
}

/// A topic of a cluster. Partitions may grow in place (shrinking them is refused with a
/// condition); a new replication factor reassigns the partitions' replicas.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "wt",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicationFactor"}"#,
    printcolumn = r#"{"name":"Leaders","type":"string","jsonPath":".status.leaders"}"#,
    printcolumn = r#"{"name":"In-sync","type":"string","jsonPath":".status.inSyncReplicas"}"#,
    printcolumn = r#"{"name":"Under-replicated","type":"integer","jsonPath":".status.underReplicated"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The Cluster (in this namespace) the topic lives in.
    pub cluster: String,
    /// The topic's name in the cluster, when it is not the resource's name (Kafka allows
    /// names Kubernetes does not, such as `__consumer_offsets` or `Orders_v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic_name: Option<String>,
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    #[schemars(range(min = 1, max = 10))]
    pub replication_factor: i32,
    /// Topic config with Kafka's key names (`retention.ms`, `min.insync.replicas`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The topic's id in the cluster, once the controller created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// The topic config in effect (the keys set on the topic).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// The epoch of the controller that last wrote the partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_epoch: Option<i32>,
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
    /// Each partition's leader in partition order (`-`: none), for `kubectl get topics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaders: Option<String>,
    /// Replicas in sync over all replicas (`17/18`), for `kubectl get topics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_replicas: Option<String>,
    /// Partitions whose ISR is smaller than their replica list.
    #[serde(default)]
    pub under_replicated: i32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    pub partition: i32,
    /// Absent while the partition has no leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The controller's compare-and-set version of this partition's state.
    pub partition_epoch: i32,
    /// A reassignment under way: replicas being added (catching up before they join the ISR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    /// Replicas dropped once every added replica is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

/// A consumer group: its offsets can be reset declaratively while it has no members, and its
/// lag is reported.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    status = "ConsumerGroupStatus",
    shortname = "wcg",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.members"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.totalLag"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    pub cluster: String,
    /// The group id; the resource's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Topics to report lag for (all the group has offsets in when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// A reset of committed offsets, applied once (while the group has no members); to apply
    /// the same reset again, remove it and add it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_offsets: Option<ResetOffsets>,
}

/// Where to move a group's committed offsets of a topic.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetOffsets {
    pub topic: String,
    pub to: ResetTarget,
    /// Milliseconds since the Unix epoch, for `to: timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Partition → offset, for `to: offsets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offsets: BTreeMap<String, i64>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResetTarget {
    Earliest,
    Latest,
    Timestamp,
    Offsets,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub members: i32,
    #[serde(default)]
    pub total_lag: i64,
    #[serde(default)]
    pub lag: Vec<TopicLag>,
    /// The generation of the resource whose `resetOffsets` was applied last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_reset_generation: Option<i64>,
    /// The reset applied last; cleared when `resetOffsets` is removed, so that the same reset
    /// may be asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_reset: Option<ResetOffsets>,
    /// When the lag was measured (the rate behind `approximateSeconds` is measured between
    /// two such times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicLag {
    pub topic: String,
    /// Records between the committed offsets and the high watermarks.
    pub messages: i64,
    /// The sum of the committed offsets (the consumption rate is its growth).
    #[serde(default)]
    pub committed: i64,
    /// About how long the group would take to catch up at its recent rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_seconds: Option<i64>,
}
