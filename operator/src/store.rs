//! The controller's [`MetadataStore`] in Kubernetes, for one `Cluster`:
//!
//! - each topic's partitions (replicas, leader, epochs, ISR), id and config in its `Topic`'s
//!   status; a topic the controller made (through the admin API, or `__consumer_offsets`)
//!   gets a `Topic` of its own;
//! - the broker registrations, the controller epoch and the next producer id in the
//!   `Cluster`'s status.
//!
//! Every write is a merge patch carrying the resourceVersion just read, after checking that
//! no newer controller epoch is stored on that object (or on the `Cluster`). A new controller's
//! first write stamps its epoch on every `Topic` and then the `Cluster`, so a deposed
//! controller's late write to any of them is refused (and fences it); a write that lost only to
//! a reconciler's status update is read again and retried. Failures in between leave what was
//! written recorded, and the next write starts from there.
//! Kubernetes has no transaction over several objects, so one decision is written object by
//! object, topics first and the `Cluster` last: a controller that dies half-way leaves each
//! partition's state whole, and brokers it had declared dead still alive, so the next
//! controller declares them dead again (and elects again) rather than keeping a dead leader.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;
use weir_controller::model::{Broker, ClusterState, PartitionState, Topic as TopicState};
use weir_controller::{MetadataStore, StoreError, Version};

use crate::crd::{BrokerRegistration, Cluster, PartitionStatus, Topic, TopicSpec};

/// A label on every Topic the controller made itself.
pub const CLUSTER_LABEL: &str = "weir.dev/cluster";

/// The metadata of one `Cluster`, kept in its own and its `Topic`s' statuses.
#[derive(Debug)]
pub struct KubeStore {
    clusters: Api<Cluster>,
    topics: Api<Topic>,
    cluster: String,
    written: Mutex<Written>,
}

#[derive(Debug, Default)]
struct Written {
    /// The state as last loaded or stored.
    last: Option<ClusterState>,
    /// The `Topic` resource holding each topic.
    resources: BTreeMap<String, String>,
    /// Counts stores: the version handed to the controller.
    stores: u64,
}

fn remote(action: impl Into<String>) -> impl FnOnce(kube::Error) -> StoreError {
    let action = action.into();
    move |e| StoreError::Remote {
        action,
        message: e.to_string(),
    }
}

/// The topic a `Topic` resource names: `spec.topicName`, else its own name.
pub fn topic_name(topic: &Topic) -> String {
    topic
        .spec
        .topic_name
        .clone()
        .unwrap_or_else(|| topic.name_any())
}

impl KubeStore {
    pub fn new(client: Client, namespace: &str, cluster: &str) -> KubeStore {
        KubeStore {
            clusters: Api::namespaced(client.clone(), namespace),
            topics: Api::namespaced(client, namespace),
            cluster: cluster.to_string(),
            written: Mutex::new(Written::default()),
        }
    }

    /// The `Topic`s of this cluster.
    async fn cluster_topics(&self) -> Result<Vec<Topic>, StoreError> {
        Ok(self
            .topics
            .list(&ListParams::default())
            .await
            .map_err(remote("list Topics"))?
            .items
            .into_iter()
            .filter(|t| t.spec.cluster == self.cluster)
            .collect())
    }

    /// The `Topic` resource for `state`'s topic: one that names it, else a new one.
    async fn resource_for(&self, state: &TopicState) -> Result<String, StoreError> {
        let mut candidates: Vec<Topic> = self
            .cluster_topics()
            .await?
            .into_iter()
            .filter(|t| topic_name(t) == state.name)
            .collect();
        // A live resource before one being deleted; the one already holding this topic first.
        candidates.sort_by_key(|t| {
            (
                t.metadata.deletion_timestamp.is_some(),
                t.status.as_ref().and_then(|s| s.topic_id.as_ref()) != Some(&state.id),
                t.metadata.creation_timestamp.clone().map(|c| c.0),
            )
        });
        if let Some(existing) = candidates.first() {
            return Ok(existing.name_any());
        }
        let cluster = self
            .clusters
            .get(&self.cluster)
            .await
            .map_err(remote(format!("get Cluster {}", self.cluster)))?;
        let owner = OwnerReference {
            api_version: Cluster::api_version(&()).into_owned(),
            kind: Cluster::kind(&()).into_owned(),
            name: self.cluster.clone(),
            uid: cluster.metadata.uid.clone().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        };
        let mut name = resource_name(&self.cluster, &state.name);
        for attempt in 0..3 {
            let mut topic = Topic::new(
                &name,
                TopicSpec {
                    cluster: self.cluster.clone(),
                    topic_name: (name != state.name).then(|| state.name.clone()),
                    partitions: i32::try_from(state.partitions.len()).unwrap_or(i32::MAX),
                    replication_factor: i32::try_from(state.replication_factor())
                        .unwrap_or(i32::MAX),
                    config: state.config.clone(),
                },
            );
            topic.meta_mut().labels = Some(BTreeMap::from([(
                CLUSTER_LABEL.into(),
                self.cluster.clone(),
            )]));
            topic.meta_mut().annotations = Some(BTreeMap::from([(
                "weir.dev/created-by".into(),
                "controller".into(),
            )]));
            // Owned by its Cluster, so it goes with it (`__consumer_offsets` included);
            // not a controller reference, and not blocking the Cluster's deletion.
            topic.meta_mut().owner_references = Some(vec![owner.clone()]);
            match self.topics.create(&PostParams::default(), &topic).await {
                Ok(_) => {
                    tracing::info!(topic = %state.name, resource = %name, "created a Topic for a topic the controller made");
                    return Ok(name);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    name = format!("{}-{attempt}", resource_name(&self.cluster, &state.name));
                }
                Err(e) => return Err(remote(format!("create Topic {name}"))(e)),
            }
        }
        Err(StoreError::Remote {
            action: format!("create a Topic for {}", state.name),
            message: "every name tried is taken".into(),
        })
    }

    /// Merges `status(current object)` into the status of `name` (through `api`) if no
    /// newer controller than `epoch` wrote it, conditionally on the resourceVersion read.
    /// `false`: there is no such object.
    async fn write_status<K>(
        &self,
        api: &Api<K>,
        name: &str,
        epoch: i32,
        epoch_of: impl Fn(&K) -> Option<i32>,
        status: impl Fn(&K) -> serde_json::Value,
    ) -> Result<bool, StoreError>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for _ in 0..10 {
            let Some(current) = api
                .get_opt(name)
                .await
                .map_err(remote(format!("read {name}")))?
            else {
                return Ok(false);
            };
            if let Some(found) = epoch_of(&current).filter(|found| *found > epoch) {
                return Err(StoreError::Conflict {
                    expected: Some(Version(format!("controller epoch {epoch}"))),
                    found: Some(Version(format!("controller epoch {found} on {name}"))),
                });
            }
            let patch = json!({
                "metadata": { "resourceVersion": current.meta().resource_version },
                "status": status(&current),
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                // Someone wrote between the read and the write: read again.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(remote(format!("write the status of {name}"))(e)),
            }
        }
        Err(StoreError::Remote {
            action: format!("write the status of {name}"),
            message: "it kept changing under the write".into(),
        })
    }

    /// `false`: the resource is gone.
    async fn write_topic(
        &self,
        resource: &str,
        topic: &TopicState,
        epoch: i32,
    ) -> Result<bool, StoreError> {
        let partitions: Vec<PartitionStatus> = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionStatus {
                partition: i32::try_from(i).unwrap_or(i32::MAX),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                partition_epoch: p.partition_epoch,
                adding: p.adding.clone(),
                removing: p.removing.clone(),
            })
            .collect();
        let under = topic
            .partitions
            .iter()
            .filter(|p| p.isr.len() < p.replicas.len())
            .count();
        let leaders: Vec<String> = topic
            .partitions
            .iter()
            .map(|p| p.leader.map_or_else(|| "-".to_string(), |l| l.to_string()))
            .collect();
        let in_sync = format!(
            "{}/{}",
            topic.partitions.iter().map(|p| p.isr.len()).sum::<usize>(),
            topic
                .partitions
                .iter()
                .map(|p| p.replicas.len())
                .sum::<usize>()
        );
        let status = |current: &Topic| {
            // A merge patch merges maps: a key no longer set is removed by a null.
            let mut config: serde_json::Map<String, serde_json::Value> = current
                .status
                .iter()
                .flat_map(|s| s.config.keys())
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            for (k, v) in &topic.config {
                config.insert(k.clone(), json!(v));
            }
            json!({
                "topicId": topic.id,
                "config": config,
                "controllerEpoch": epoch,
                "partitions": partitions,
                "underReplicated": under,
                "leaders": leaders.join(","),
                "inSyncReplicas": in_sync,
            })
        };
        self.write_status(&self.topics, resource, epoch, topic_epoch, status)
            .await
    }
}

impl KubeStore {
    /// Writes what `state` changes from `done`, object by object (topics, then the Cluster),
    /// recording each write in `done` as it lands. A new controller epoch rewrites every
    /// topic, so that a deposed controller's late write to any of them is refused.
    async fn write_all(
        &self,
        resources: &mut BTreeMap<String, String>,
        done: &mut ClusterState,
        state: &ClusterState,
        first: bool,
    ) -> Result<(), StoreError> {
        let epoch = state.controller_epoch;
        let takeover = done.controller_epoch != epoch;
        for (name, topic) in &state.topics {
            if !takeover && done.topics.get(name) == Some(topic) {
                continue;
            }
            let mut resource = match resources.get(name) {
                Some(resource) => resource.clone(),
                None => self.resource_for(topic).await?,
            };
            if !self.write_topic(&resource, topic, epoch).await? {
                // Its resource went away (finalizer removed by hand): make another.
                resource = self.resource_for(topic).await?;
                if !self.write_topic(&resource, topic, epoch).await? {
                    return Err(StoreError::Remote {
                        action: format!("write the status of Topic {resource}"),
                        message: "it was deleted as it was made".into(),
                    });
                }
            }
            resources.insert(name.clone(), resource);
            done.topics.insert(name.clone(), topic.clone());
        }
        let gone: Vec<String> = done
            .topics
            .keys()
            .filter(|name| !state.topics.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(resource) = resources.get(&name).cloned() {
                let cleared = |_: &Topic| {
                    json!({
                        "topicId": null, "config": null, "partitions": [], "underReplicated": 0,
                        "leaders": null, "inSyncReplicas": null,
                        "controllerEpoch": epoch,
                    })
                };
                if self
                    .write_status(&self.topics, &resource, epoch, topic_epoch, cleared)
                    .await?
                {
                    // The topic is gone from the cluster: so is its resource (through its
                    // finalizer).
                    match self
                        .topics
                        .delete(&resource, &DeleteParams::default())
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(remote(format!("delete Topic {resource}"))(e)),
                    }
                }
                resources.remove(&name);
            }
            done.topics.remove(&name);
        }
        if takeover
            || first
            || state.brokers != done.brokers
            || state.next_producer_id != done.next_producer_id
        {
            let status = |_: &Cluster| {
                json!({
                    "controllerEpoch": epoch,
                    "brokers": broker_registrations(state),
                    "nextProducerId": state.next_producer_id,
                })
            };
            if !self
                .write_status(&self.clusters, &self.cluster, epoch, cluster_epoch, status)
                .await?
            {
                return Err(StoreError::Remote {
                    action: format!("write the status of Cluster {}", self.cluster),
                    message: "the Cluster is gone".into(),
                });
            }
            done.controller_epoch = epoch;
            done.brokers = state.brokers.clone();
            done.next_producer_id = state.next_producer_id;
        }
        Ok(())
    }
}

fn topic_epoch(topic: &Topic) -> Option<i32> {
    topic.status.as_ref().and_then(|s| s.controller_epoch)
}

fn cluster_epoch(cluster: &Cluster) -> Option<i32> {
    cluster.status.as_ref().and_then(|s| s.controller_epoch)
}

/// A Kubernetes name for a topic the controller made: `<cluster>-<topic>`, lower-cased, with
/// what Kubernetes does not allow made `-`, and a hash of the topic's name when that changed
/// anything (so `Orders` and `orders` get different resources).
pub fn resource_name(cluster: &str, topic: &str) -> String {
    let cleaned: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let mut name = format!("{cluster}-{cleaned}");
    if cleaned != topic {
        // FNV-1a: stable across versions and machines, unlike std's hasher.
        let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        name = format!("{}-{:08x}", name.trim_end_matches('-'), hash as u32);
    }
    name.truncate(240);
    name
}

fn broker_registrations(state: &ClusterState) -> Vec<BrokerRegistration> {
    state
        .brokers
        .values()
        .map(|b| BrokerRegistration {
            id: b.id,
            address: b.address.clone(),
            rack: b.rack.clone(),
            incarnation: b.incarnation.to_string(),
            alive: b.alive,
            kafka_address: b.kafka_address.clone(),
            shutting_down: b.shutting_down,
        })
        .collect()
}

impl MetadataStore for KubeStore {
    async fn load(&self) -> Result<Option<(ClusterState, Version)>, StoreError> {
        let cluster = self
            .clusters
            .get(&self.cluster)
            .await
            .map_err(remote(format!("read Cluster {}", self.cluster)))?;
        let status = cluster.status.unwrap_or_default();
        let mut state = ClusterState {
            controller_epoch: status.controller_epoch.unwrap_or(0),
            next_producer_id: status.next_producer_id.unwrap_or(0),
            ..ClusterState::default()
        };
        for b in status.brokers {
            state.brokers.insert(
                b.id,
                Broker {
                    id: b.id,
                    address: b.address,
                    rack: b.rack,
                    incarnation: b.incarnation.parse().unwrap_or(0),
                    alive: b.alive,
                    kafka_address: b.kafka_address,
                    shutting_down: b.shutting_down,
                },
            );
        }
        let mut resources = BTreeMap::new();
        let topics = self.cluster_topics().await?;
        // A Topic may carry a newer epoch than the Cluster (a Cluster made again, a status
        // restored from a backup): start past every epoch seen.
        let topic_epochs = topics.iter().filter_map(topic_epoch).max().unwrap_or(0);
        state.controller_epoch = state.controller_epoch.max(topic_epochs);
        for topic in topics {
            let name = topic_name(&topic);
            let Some(status) = topic.status.as_ref() else {
                continue;
            };
            let Some(id) = status.topic_id.clone() else {
                continue;
            };
            let mut partitions = status.partitions.clone();
            partitions.sort_by_key(|p| p.partition);
            state.topics.insert(
                name.clone(),
                TopicState {
                    id,
                    name: name.clone(),
                    config: status.config.clone(),
                    partitions: partitions
                        .into_iter()
                        .map(|p| PartitionState {
                            replicas: p.replicas,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            isr: p.isr,
                            partition_epoch: p.partition_epoch,
                            adding: p.adding,
                            removing: p.removing,
                        })
                        .collect(),
                },
            );
            resources.insert(name, topic.name_any());
        }
        let mut written = self.written.lock().await;
        written.last = Some(state.clone());
        written.resources = resources;
        written.stores += 1;
        Ok(Some((state, Version(written.stores.to_string()))))
    }

    async fn store(
        &self,
        state: &ClusterState,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let mut written = self.written.lock().await;
        let mine = Version(written.stores.to_string());
        if expected != Some(&mine) {
            return Err(StoreError::Conflict {
                expected: expected.cloned(),
                found: Some(mine),
            });
        }
        let epoch = state.controller_epoch;
        let cluster = self
            .clusters
            .get(&self.cluster)
            .await
            .map_err(remote(format!("read Cluster {}", self.cluster)))?;
        if let Some(found) = cluster_epoch(&cluster).filter(|found| *found > epoch) {
            return Err(StoreError::Conflict {
                expected: Some(Version(format!("controller epoch {epoch}"))),
                found: Some(Version(format!("controller epoch {found}"))),
            });
        }
        // What is written so far: kept on every return, so that after a failure half-way the
        // next store rewrites exactly what differs from what Kubernetes holds.
        let first = written.last.is_none();
        let mut done = written.last.clone().unwrap_or_default();
        let result = self
            .write_all(&mut written.resources, &mut done, state, first)
            .await;
        written.last = Some(done);
        result?;
        written.last = Some(state.clone());
        written.stores += 1;
        Ok(Version(written.stores.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_valid_and_distinct() {
        assert_eq!(resource_name("main", "orders"), "main-orders");
        let offsets = resource_name("main", "__consumer_offsets");
        assert!(offsets.starts_with("main-consumer-offsets-"), "{offsets}");
        assert_ne!(
            resource_name("main", "Orders"),
            resource_name("main", "orders")
        );
        for name in [offsets, resource_name("main", "Orders_v2.x")] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-') && name.len() <= 253, "{name}");
        }
    }
}
