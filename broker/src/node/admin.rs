//! Topic administration and producer ids: each change is the controller's decision; the
//! broker fills in its defaults, asks, and waits until the change has reached it.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_proto::Reason;
use weir_proto::v1;

use super::{Node, PRODUCER_ID_BLOCK};
use crate::failure::{Failure, from_controller};
use crate::topic::Topic;

impl Node {
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

    /// Deletes the records of one partition below `offset` (-1: the high watermark), on its
    /// leader; returns the partition's new log start.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownPartition`, `NotLeader`; `InvalidTopic` for an internal topic
    /// (its records are the coordinator's); `OffsetOutOfRange` past the high watermark;
    /// `StorageError`.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, Failure> {
        if weir_controller::topic_config::is_internal(topic) {
            return Err(Failure::new(
                Reason::InvalidTopic,
                format!("{topic:?} is internal: its records are not deleted by clients"),
            ));
        }
        let start = self.partition(topic, partition)?.delete_records(offset)?;
        tracing::info!(
            topic,
            partition,
            log_start_offset = start,
            "records deleted"
        );
        Ok(start)
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

    /// Moves partitions to new replica sets, or cancels their moves (an empty replica list),
    /// through the controller; per-partition results. Topic names are checked here as for
    /// every admin call; replica lists by the controller.
    ///
    /// # Errors
    /// The controller's, when the call as a whole is refused.
    pub async fn alter_reassignments(
        &self,
        request: v1::AlterReassignmentsRequest,
    ) -> Result<v1::AlterReassignmentsResponse, Failure> {
        for m in &request.reassignments {
            self.topic(&m.topic)?;
        }
        self.controller()
            .alter_reassignments(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| from_controller(&s))
    }

    /// The reassignments under way, as the controller has them.
    ///
    /// # Errors
    /// The controller's.
    pub async fn list_reassignments(&self) -> Result<v1::ListReassignmentsResponse, Failure> {
        self.controller()
            .list_reassignments(v1::ListReassignmentsRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| from_controller(&s))
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
}
