//! Where consumer groups live: `__consumer_offsets`, made by the controller when first
//! needed, and which broker coordinates a group (the leader of its partition).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use weir_proto::Reason;
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;

use super::Node;
use crate::coordinator::{OFFSETS_TOPIC, Replicas};
use crate::failure::{Failure, from_controller};
use crate::topic::Topic;

impl Replicas for Node {
    fn topic(&self, name: &str) -> Result<Arc<Topic>, Failure> {
        Node::topic(self, name)
    }

    async fn ranges_from_leaders(&self, topic: &Topic) -> BTreeMap<i32, (i64, i64)> {
        Node::ranges_from_leaders(self, topic).await
    }

    async fn offsets_from_leaders(
        &self,
        topic: &Topic,
        spec: v1::OffsetSpec,
        timestamp: i64,
    ) -> BTreeMap<i32, Option<i64>> {
        Node::offsets_from_leaders(self, topic, spec, timestamp).await
    }

    async fn append(
        &self,
        topic: &Topic,
        partition: i32,
        batches: Bytes,
        acks: v1::Acks,
    ) -> Result<(i64, i64), Failure> {
        Node::append(self, topic, partition, batches, acks, None).await
    }
}

impl Node {
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

    /// The broker that coordinates `group` (the leader of its `__consumer_offsets`
    /// partition), creating `__consumer_offsets` first if need be.
    ///
    /// # Errors
    /// The controller's; `CoordinatorNotAvailable`-like `LeaderNotAvailable` while that
    /// partition has no leader.
    pub async fn coordinator_of(&self, group: &str) -> Result<i32, Failure> {
        self.ensure_offsets_topic().await?;
        let topic = self.topic(OFFSETS_TOPIC)?;
        let count = topic.partition_count() as u32;
        let index = partition_for_key(group.as_bytes(), count) as usize;
        topic
            .layout
            .get(index)
            .and_then(|p| p.leader)
            .ok_or_else(|| {
                Failure::new(
                    Reason::LeaderNotAvailable,
                    format!(
                        "{OFFSETS_TOPIC}-{index}, where group {group:?} lives, has no leader now"
                    ),
                )
            })
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
}
