//! Applying the controller's metadata. [`plan`] decides, from the topics held here and the
//! metadata, what changes: which topics go, which replicas open, stay or leave, with which role
//! and config. It is pure, so every case is a unit test. [`Node::apply_metadata`] carries the
//! plan out: it opens and removes replicas, gives them their roles, and starts and stops
//! followers' fetchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_proto::v1;

use super::Node;
use crate::config::BrokerConfig;
use crate::coordinator::OFFSETS_TOPIC;
use crate::failure::error_chain;
use crate::partition::Partition;
use crate::topic::Topic;
use crate::topic::{self, TopicConfig};

/// What the plan needs to know of a topic held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub id: String,
    pub overrides: BTreeMap<String, String>,
    pub unapplied: BTreeMap<String, String>,
    /// The partitions this broker holds a replica of.
    pub replicas: BTreeSet<i32>,
}

impl Held {
    pub fn of(topic: &Topic) -> Held {
        Held {
            id: topic.id.clone(),
            overrides: topic.overrides.clone(),
            unapplied: topic.unapplied.clone(),
            replicas: topic.replicas.keys().copied().collect(),
        }
    }
}

/// The changes one metadata update makes here.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Topics held here whose every replica goes, with whether the topic is deleted (rather
    /// than created again under the same name with a new id). Carried out first, so that a
    /// re-created topic's directories are free before its replicas open.
    pub dropped: Vec<(String, Dropped)>,
    /// One per topic of the metadata, in its order.
    pub topics: Vec<TopicPlan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Deleted,
    Recreated,
}

/// One topic of the metadata as this broker serves it.
#[derive(Debug, PartialEq)]
pub struct TopicPlan {
    /// The topic's config: the defaults with every override this broker can apply.
    pub config: TopicConfig,
    pub overrides: BTreeMap<String, String>,
    /// Overrides this broker cannot apply, with why (the default stands for each).
    pub unapplied: BTreeMap<String, String>,
    /// Whether the unapplied keys are new, so worth an error in the log.
    pub report_unapplied: bool,
    /// Whether replicas kept from before get the new config.
    pub reconfigure: bool,
    /// The partitions with a replica here: their index in the topic's partition list, and
    /// what to do with the replica.
    pub replicas: Vec<(usize, Replica)>,
    /// Replicas held here that the topic no longer places here.
    pub moved_away: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// Whether the replica is held already (else it opens).
    pub held: bool,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Lead,
    Follow {
        leader: i32,
    },
    /// No leader now: the replica neither serves nor fetches.
    Offline,
}

/// Decides what `metadata` changes for broker `me`, holding `held`.
pub fn plan(
    me: i32,
    defaults: &TopicConfig,
    held: &BTreeMap<String, Held>,
    metadata: &v1::ClusterMetadata,
) -> Plan {
    let named: BTreeMap<&str, &v1::ClusterTopic> = metadata
        .topics
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let dropped = held
        .iter()
        .filter_map(|(name, h)| match named.get(name.as_str()) {
            None => Some((name.clone(), Dropped::Deleted)),
            Some(wire) if wire.id != h.id => Some((name.clone(), Dropped::Recreated)),
            Some(_) => None,
        })
        .collect();
    let topics = metadata
        .topics
        .iter()
        .map(|wire| {
            let old = held.get(&wire.name).filter(|h| h.id == wire.id);
            let overrides: BTreeMap<String, String> = wire.config.clone().into_iter().collect();
            // Key by key: one key this broker cannot apply costs only itself.
            let (config, refused) = TopicConfig::apply(defaults, &overrides);
            let unapplied: BTreeMap<String, String> = refused
                .iter()
                .map(|e| (e.key().to_string(), e.to_string()))
                .collect();
            let replicas: Vec<(usize, Replica)> = wire
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.replicas.contains(&me))
                .map(|(i, p)| {
                    let role = match p.leader {
                        Some(leader) if leader == me => Role::Lead,
                        Some(leader) => Role::Follow { leader },
                        None => Role::Offline,
                    };
                    let held = old.is_some_and(|h| h.replicas.contains(&p.partition));
                    (i, Replica { held, role })
                })
                .collect();
            let here: BTreeSet<i32> = replicas
                .iter()
                .map(|(i, _)| wire.partitions[*i].partition)
                .collect();
            TopicPlan {
                report_unapplied: old.is_none_or(|h| h.unapplied != unapplied),
                reconfigure: old.is_some_and(|h| h.overrides != overrides),
                moved_away: old.map_or_else(Vec::new, |h| {
                    h.replicas.difference(&here).copied().collect()
                }),
                config,
                overrides,
                unapplied,
                replicas,
            }
        })
        .collect();
    Plan { dropped, topics }
}

impl Node {
    /// Applies the controller's metadata (as [`plan`] decides): opens the replicas this
    /// broker holds, gives each its role (leader, follower), starts and stops followers'
    /// fetchers, drops deleted topics. Metadata from an older controller is ignored.
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
        let held = current
            .iter()
            .map(|(name, t)| (name.clone(), Held::of(t)))
            .collect();
        let plan = plan(me, &self.defaults, &held, metadata);
        debug_assert_eq!(plan.topics.len(), metadata.topics.len());

        for (name, how) in &plan.dropped {
            let topic = &current[name];
            self.remove_replicas(topic, topic.replicas.keys().copied());
            if *how == Dropped::Deleted {
                self.metrics
                    .forget_topic(name, topic.partition_count() as i32);
                tracing::info!(topic = %name, "topic deleted");
            }
        }
        let mut next = BTreeMap::new();
        let mut followed = HashMap::new();
        for (wire, planned) in metadata.topics.iter().zip(plan.topics) {
            let old = current.get(&wire.name).filter(|t| t.id == wire.id);
            if planned.report_unapplied {
                for (key, why) in &planned.unapplied {
                    tracing::error!(topic = %wire.name, key, error = %why, "a topic config override cannot be applied here; the default stands for it, every other override applies");
                }
            }
            self.metrics
                .unapplied_config(&wire.name, planned.unapplied.len());
            let mut replicas = BTreeMap::new();
            let mut failed = BTreeMap::new();
            for (i, what) in &planned.replicas {
                let p = &wire.partitions[*i];
                let kept = old
                    .filter(|_| what.held)
                    .and_then(|t| t.replicas.get(&p.partition));
                let replica = match kept {
                    Some(replica) => {
                        if planned.reconfigure {
                            replica.set_config(topic::log_config(&planned.config));
                        }
                        Arc::clone(replica)
                    }
                    None => match open_partition(
                        &self.config,
                        &self.segment_files,
                        &wire.name,
                        &wire.id,
                        p.partition,
                        &planned.config,
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
                match what.role {
                    Role::Lead => {
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
                    Role::Follow { leader } => {
                        replica.become_follower(leader, p.leader_epoch);
                        followed.insert(
                            (wire.name.clone(), p.partition),
                            (leader, p.leader_epoch, Arc::clone(&replica)),
                        );
                    }
                    Role::Offline => replica.become_none(),
                }
                replicas.insert(p.partition, replica);
            }
            if let Some(old) = old {
                self.remove_replicas(old, planned.moved_away.into_iter());
            }
            next.insert(
                wire.name.clone(),
                Arc::new(Topic {
                    name: wire.name.clone(),
                    id: wire.id.clone(),
                    config: planned.config,
                    overrides: planned.overrides,
                    layout: wire.partitions.clone(),
                    replicas,
                    failed,
                    unapplied: planned.unapplied,
                }),
            );
        }
        *self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        self.update_fetchers(followed);
        self.applied.send_modify(|n| *n += 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(index: i32, leader: Option<i32>, replicas: &[i32]) -> v1::ClusterPartition {
        v1::ClusterPartition {
            partition: index,
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 3,
            isr: replicas.to_vec(),
            partition_epoch: 1,
            ..Default::default()
        }
    }

    fn topic(name: &str, id: &str, partitions: Vec<v1::ClusterPartition>) -> v1::ClusterTopic {
        v1::ClusterTopic {
            name: name.to_string(),
            id: id.to_string(),
            partitions,
            ..Default::default()
        }
    }

    fn metadata(topics: Vec<v1::ClusterTopic>) -> v1::ClusterMetadata {
        v1::ClusterMetadata {
            topics,
            ..Default::default()
        }
    }

    fn held(id: &str, replicas: &[i32]) -> Held {
        Held {
            id: id.to_string(),
            overrides: BTreeMap::new(),
            unapplied: BTreeMap::new(),
            replicas: replicas.iter().copied().collect(),
        }
    }

    #[test]
    fn roles_follow_the_leader_and_only_local_replicas_count() {
        let metadata = metadata(vec![topic(
            "orders",
            "id1",
            vec![
                partition(0, Some(2), &[2, 3]),
                partition(1, Some(3), &[3, 2]),
                partition(2, None, &[2]),
                partition(3, Some(1), &[1, 3]),
            ],
        )]);
        let plan = plan(2, &TopicConfig::default(), &BTreeMap::new(), &metadata);
        assert!(plan.dropped.is_empty());
        let [orders] = &plan.topics[..] else {
            panic!("{plan:?}")
        };
        let fresh = |role| Replica { held: false, role };
        assert_eq!(
            orders.replicas,
            [
                (0, fresh(Role::Lead)),
                (1, fresh(Role::Follow { leader: 3 })),
                (2, fresh(Role::Offline)),
            ]
        );
        assert!(orders.moved_away.is_empty() && !orders.reconfigure);
    }

    #[test]
    fn a_topic_recreated_under_its_name_drops_the_old_replicas_and_opens_new_ones() {
        let held = BTreeMap::from([
            ("orders".to_string(), held("old-id", &[0, 1])),
            ("gone".to_string(), held("g", &[0])),
        ]);
        let metadata = metadata(vec![topic(
            "orders",
            "new-id",
            vec![partition(0, Some(1), &[1])],
        )]);
        let plan = plan(1, &TopicConfig::default(), &held, &metadata);
        assert_eq!(
            plan.dropped,
            [
                ("gone".to_string(), Dropped::Deleted),
                ("orders".to_string(), Dropped::Recreated)
            ]
        );
        assert_eq!(
            plan.topics[0].replicas,
            [(
                0,
                Replica {
                    held: false,
                    role: Role::Lead
                }
            )]
        );
        // The old replicas went with the dropped topic, not as moved ones.
        assert!(plan.topics[0].moved_away.is_empty());
    }

    #[test]
    fn replicas_placed_elsewhere_leave_and_kept_ones_get_a_changed_config() {
        let mut was = held("id", &[0, 1, 2]);
        was.overrides = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let held = BTreeMap::from([("orders".to_string(), was)]);
        let mut wire = topic(
            "orders",
            "id",
            vec![
                partition(0, Some(1), &[1, 2]),
                partition(1, Some(3), &[3, 4]),
                partition(2, Some(2), &[2, 1]),
            ],
        );
        wire.config = [("retention.ms".to_string(), "2000".to_string())].into();
        let plan = plan(1, &TopicConfig::default(), &held, &metadata(vec![wire]));
        let orders = &plan.topics[0];
        assert_eq!(orders.moved_away, [1]);
        assert!(orders.reconfigure);
        assert_eq!(
            orders.config.retention_age,
            Some(std::time::Duration::from_millis(2000))
        );
        assert!(orders.replicas.iter().all(|(_, r)| r.held));
    }

    #[test]
    fn an_override_this_broker_cannot_apply_is_reported_once_and_costs_only_itself() {
        let mut wire = topic("orders", "id", vec![partition(0, Some(1), &[1])]);
        wire.config = [
            ("flush.messages".to_string(), "1".to_string()),
            ("some.future.key".to_string(), "x".to_string()),
        ]
        .into();
        let metadata = metadata(vec![wire]);
        let first = plan(1, &TopicConfig::default(), &BTreeMap::new(), &metadata);
        let orders = &first.topics[0];
        assert_eq!(orders.config.flush_messages, Some(1));
        assert!(orders.unapplied.contains_key("some.future.key"));
        assert!(orders.report_unapplied);
        // Held with the same refusal: not reported again.
        let mut was = held("id", &[0]);
        was.overrides = orders.overrides.clone();
        was.unapplied = orders.unapplied.clone();
        let again = plan(
            1,
            &TopicConfig::default(),
            &BTreeMap::from([("orders".to_string(), was)]),
            &metadata,
        );
        assert!(!again.topics[0].report_unapplied);
        assert!(!again.topics[0].reconfigure);
    }
}
