//! The group coordinator: groups in memory ([`Group`]), persisted as records of the internal
//! topic `__consumer_offsets` and replayed from it on start.
//!
//! Groups speak Weir's protocol (`group`: members heartbeat and the coordinator assigns) or
//! Kafka's classic one (`classic`: JoinGroup and SyncGroup, the leader member assigns); one
//! group has members of one kind at a time, and both kinds keep their offsets the same way.
//! The records are in `records`.
//!
//! A group lives in the partition of `__consumer_offsets` its id hashes to (Kafka's murmur2),
//! so with replication its offsets move with that partition's leader.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_proto::Reason;
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;
use weir_storage::{BatchBuilder, Record, batch};

use crate::consumer_protocol;
use crate::failure::Failure;

mod classic;
mod records;

pub use classic::{ClassicMemberView, ClassicView, Refused};

use crate::group::{Group, Heartbeat, TopicPartition};
use crate::partition::Partition;
use crate::topic::Topic;
use records::apply;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of `__consumer_offsets` when the broker creates it.
pub const OFFSETS_PARTITIONS: i32 = 4;

/// What the coordinator needs of the broker it runs in: its topics and replicas, partition
/// offsets as their leaders have them, and appends to `__consumer_offsets`. The broker's
/// `Node` is the one implementation; the trait keeps the coordinator below it.
pub trait Replicas: Sync {
    /// # Errors
    /// `InvalidTopic`, `UnknownTopic`.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, Failure>;

    /// Each partition's (log start offset, high watermark), as its leader has it.
    fn ranges_from_leaders(
        &self,
        topic: &Topic,
    ) -> impl Future<Output = BTreeMap<i32, (i64, i64)>> + Send;

    /// Each partition's offset for `spec`, as its leader has it.
    fn offsets_from_leaders(
        &self,
        topic: &Topic,
        spec: v1::OffsetSpec,
        timestamp: i64,
    ) -> impl Future<Output = BTreeMap<i32, Option<i64>>> + Send;

    /// Appends `batches` to a partition this broker leads.
    fn append(
        &self,
        topic: &Topic,
        partition: i32,
        batches: Bytes,
        acks: v1::Acks,
    ) -> impl Future<Output = Result<(i64, i64), Failure>> + Send;
}

#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<BTreeMap<String, Group>>,
    /// Held by heartbeats, commits and resets from their checks to their writes.
    serial: tokio::sync::Mutex<()>,
    pub heartbeat_interval: Duration,
    pub default_session_timeout: Duration,
    /// The session timeouts a member may ask for (Kafka's `group.min.session.timeout.ms`
    /// and `group.max.session.timeout.ms`).
    pub session_timeouts: std::ops::RangeInclusive<Duration>,
    /// How long the first rebalance of an empty classic group waits for more members
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay: Duration,
    /// Classic requests waiting for their group's answer. Locked after `groups`.
    waiters: Mutex<classic::Waiters>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The group `id`, or `UnknownGroup`.
fn known<'a>(groups: &'a BTreeMap<String, Group>, id: &str) -> Result<&'a Group, Failure> {
    groups
        .get(id)
        .ok_or_else(|| Failure::new(Reason::UnknownGroup, format!("group {id:?} does not exist")))
}

fn failure((reason, message): (Reason, String)) -> Failure {
    Failure::new(reason, message)
}

impl Coordinator {
    pub fn new(
        heartbeat_interval: Duration,
        default_session_timeout: Duration,
        session_timeouts: std::ops::RangeInclusive<Duration>,
        initial_rebalance_delay: Duration,
    ) -> Self {
        Coordinator {
            groups: Mutex::new(BTreeMap::new()),
            serial: tokio::sync::Mutex::new(()),
            heartbeat_interval,
            default_session_timeout,
            session_timeouts,
            initial_rebalance_delay,
            waiters: Mutex::new(classic::Waiters::default()),
        }
    }

    /// Takes over the groups of one `__consumer_offsets` partition (this broker became its
    /// leader): forgets what it held of them and replays the partition's records. Members
    /// are not kept in the log: they join again.
    ///
    /// # Errors
    /// A log that cannot be read.
    pub fn load_partition(&self, replica: &Partition, partitions: u32) -> anyhow::Result<()> {
        let mut groups = lock(&self.groups);
        let index = replica.index;
        let mine = |group: &str| partition_for_key(group.as_bytes(), partitions) as i32 == index;
        groups.retain(|group, _| !mine(group));
        let mut loaded = BTreeMap::new();
        let mut records = 0;
        let mut offset = replica.state().log_start_offset;
        while let Some(slice) = replica.read_to_end(offset, 1 << 20)? {
            for batch in batch::batches(&slice.bytes) {
                let (_, batch) = batch?;
                for record in batch.records()? {
                    let Some(key) = record.key else {
                        continue;
                    };
                    apply(&mut loaded, key, record.value);
                    records += 1;
                }
            }
            offset = slice.next_offset;
        }
        loaded.retain(|group, _| mine(group));
        let count = loaded.len();
        groups.extend(loaded);
        tracing::info!(
            partition = index,
            groups = count,
            records,
            "coordinating the groups of a __consumer_offsets partition"
        );
        Ok(())
    }

    /// Removes members whose session expired, and ends classic join phases whose time is up.
    pub fn expire(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut groups = lock(&self.groups);
        let mut waiters = lock(&self.waiters);
        for group in groups.values_mut() {
            let mut gone = group.expire(now);
            gone.extend(group.classic.tick(now));
            for member in gone {
                tracing::info!(group = %group.id, member, "member session expired");
                expired.push((group.id.clone(), member));
            }
            classic::settle(group, &mut waiters);
        }
        expired
    }

    /// Handles a member's heartbeat.
    ///
    /// # Errors
    /// `UnknownMemberId`, `StaleMemberEpoch`, `InvalidRequest`, `StorageError`.
    pub async fn heartbeat(
        &self,
        node: &impl Replicas,
        request: v1::GroupHeartbeatRequest,
    ) -> Result<v1::GroupHeartbeatResponse, Failure> {
        if request.group_id.is_empty() {
            return Err(Failure::new(
                Reason::InvalidRequest,
                "a group id is required",
            ));
        }
        if request.member_epoch == 0 && request.topics.is_empty() {
            return Err(Failure::new(
                Reason::InvalidRequest,
                "a member joins with the topics it subscribes to",
            ));
        }
        for topic in &request.topics {
            node.topic(topic)?;
        }
        let session_timeout = match request.session_timeout_ms {
            ms if ms > 0 => Duration::from_millis(ms as u64),
            _ => self.default_session_timeout,
        };
        // What a member asks for is bounded; the broker's own default is the operator's call.
        if request.session_timeout_ms > 0 {
            self.check_session_timeout(session_timeout)?;
        }
        let heartbeat = Heartbeat {
            member_id: request.member_id,
            member_epoch: request.member_epoch,
            topics: request.topics,
            owned: flatten(&request.owned),
            session_timeout,
        };
        let partitions = |topic: &str| node.topic(topic).ok().map(|t| t.partition_count() as i32);
        let _one_at_a_time = self.serial.lock().await;
        let (answer, new_epoch, before) = {
            let mut groups = lock(&self.groups);
            // Only a join creates a group: a heartbeat for a group that is not there comes
            // from a member the broker forgot.
            if request.member_epoch != 0 && !groups.contains_key(&request.group_id) {
                return Err(Failure::new(
                    Reason::UnknownMemberId,
                    format!(
                        "group {:?} has no member {:?}; join again",
                        request.group_id, heartbeat.member_id
                    ),
                ));
            }
            let group = groups
                .entry(request.group_id.clone())
                .or_insert_with(|| Group::new(&request.group_id, 0));
            if !group.classic.is_empty() {
                return Err(Failure::new(
                    Reason::InvalidRequest,
                    format!(
                        "group {:?} has members that speak Kafka's classic group protocol; use another group id",
                        request.group_id
                    ),
                ));
            }
            let before = group.clone();
            let answer = group
                .heartbeat(heartbeat, Instant::now(), partitions)
                .map_err(failure)?;
            let changed = (group.epoch != before.epoch).then_some(group.epoch);
            (answer, changed, before)
        };
        if let Some(epoch) = new_epoch {
            let record = vec![(
                records::epoch_key(&request.group_id),
                Some(epoch.to_string()),
            )];
            if let Err(failure) = self.persist(node, &request.group_id, record).await {
                // The member was told nothing: the group goes back to what it was.
                lock(&self.groups).insert(request.group_id.clone(), before);
                return Err(failure);
            }
        }
        Ok(v1::GroupHeartbeatResponse {
            member_id: answer.member_id,
            member_epoch: answer.member_epoch,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as i32,
            assignment: group_by_topic(&answer.assignment),
        })
    }

    /// What a member of a Weir group last said it owns (nothing for a member not known): for
    /// heartbeats that leave it unsaid (KIP-848's null `topic_partitions`: unchanged).
    pub fn owned_by(&self, group_id: &str, member_id: &str) -> Vec<v1::TopicPartitions> {
        lock(&self.groups)
            .get(group_id)
            .and_then(|g| g.members.get(member_id))
            .map(|m| group_by_topic(&m.owned))
            .unwrap_or_default()
    }

    /// Commits a member's offsets, fenced by its epoch.
    ///
    /// # Errors
    /// `UnknownGroup`, `UnknownMemberId`, `StaleMemberEpoch`, `UnknownTopic`, `StorageError`.
    pub async fn commit(
        &self,
        node: &impl Replicas,
        request: v1::CommitOffsetsRequest,
    ) -> Result<(), Failure> {
        // From the epoch check to the offsets in memory: a member fenced meanwhile cannot
        // write after its successor, and memory follows the log's order.
        let _one_at_a_time = self.serial.lock().await;
        {
            let groups = lock(&self.groups);
            let group = known(&groups, &request.group_id)?;
            group
                .check_commit(&request.member_id, request.member_epoch)
                .map_err(failure)?;
        }
        self.write_offsets(node, &request.group_id, &request.offsets)
            .await
    }

    /// Commits offsets of a group no member of which is here: Kafka's consumers that assign
    /// their partitions themselves and commit under a group id (generation -1, no member).
    ///
    /// # Errors
    /// `UnknownMemberId` while the group has members (they own its offsets); `UnknownTopic`,
    /// `StorageError`.
    pub async fn commit_standalone(
        &self,
        node: &impl Replicas,
        group_id: &str,
        offsets: &[v1::PartitionCommit],
    ) -> Result<(), Failure> {
        let _one_at_a_time = self.serial.lock().await;
        if lock(&self.groups)
            .get(group_id)
            .is_some_and(Group::has_members)
        {
            return Err(Failure::new(
                Reason::UnknownMemberId,
                format!("group {group_id:?} has members; only they commit its offsets"),
            ));
        }
        self.write_offsets(node, group_id, offsets).await
    }

    async fn write_offsets(
        &self,
        node: &impl Replicas,
        group_id: &str,
        offsets: &[v1::PartitionCommit],
    ) -> Result<(), Failure> {
        for commit in offsets {
            // The partition exists (wherever its replicas are: not necessarily here).
            let topic = node.topic(&commit.topic)?;
            let count = i32::try_from(topic.partition_count()).unwrap_or(i32::MAX);
            if !(0..count).contains(&commit.partition) {
                return Err(Failure::new(
                    Reason::UnknownPartition,
                    format!(
                        "topic {:?} has no partition {}",
                        commit.topic, commit.partition
                    ),
                ));
            }
            if commit.offset < 0 {
                return Err(Failure::new(
                    Reason::InvalidRequest,
                    format!("offset {} is negative", commit.offset),
                ));
            }
        }
        let records = offsets
            .iter()
            .map(|c| {
                (
                    records::offset_key(group_id, &c.topic, c.partition),
                    Some(c.offset.to_string()),
                )
            })
            .collect();
        self.persist(node, group_id, records).await?;
        let mut groups = lock(&self.groups);
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, 0));
        for commit in offsets {
            group
                .offsets
                .insert((commit.topic.clone(), commit.partition), commit.offset);
        }
        Ok(())
    }

    /// Committed offsets of a group (of `topics`, or all).
    pub fn fetch(&self, group_id: &str, topics: &[String]) -> Vec<v1::PartitionCommit> {
        let groups = lock(&self.groups);
        let Some(group) = groups.get(group_id) else {
            return Vec::new();
        };
        group
            .offsets
            .iter()
            .filter(|((topic, _), _)| topics.is_empty() || topics.contains(topic))
            .map(|((topic, partition), &offset)| v1::PartitionCommit {
                topic: topic.clone(),
                partition: *partition,
                offset,
            })
            .collect()
    }

    pub fn list(&self) -> Vec<v1::GroupSummary> {
        lock(&self.groups)
            .values()
            .map(|g| v1::GroupSummary {
                group_id: g.id.clone(),
                state: g.state().to_string(),
                members: g.member_count() as i32,
            })
            .collect()
    }

    /// A group's members, assignment, committed offsets and lag, against the log start and
    /// high watermark of each partition as its leader has them.
    ///
    /// # Errors
    /// `UnknownGroup`.
    pub async fn describe(
        &self,
        node: &impl Replicas,
        group_id: &str,
    ) -> Result<v1::GroupDescription, Failure> {
        let topics = self.group_topics(group_id)?;
        let mut bounds = BTreeMap::new();
        for topic in topics {
            let Ok(described) = node.topic(&topic) else {
                continue;
            };
            for (partition, range) in node.ranges_from_leaders(&described).await {
                bounds.insert((topic.clone(), partition), range);
            }
        }
        self.describe_with(group_id, &bounds)
    }

    /// [`Coordinator::describe`] against this broker's own replicas (for its metrics: no
    /// call to other brokers).
    ///
    /// # Errors
    /// `UnknownGroup`.
    pub fn describe_local(
        &self,
        node: &impl Replicas,
        group_id: &str,
    ) -> Result<v1::GroupDescription, Failure> {
        let mut bounds = BTreeMap::new();
        for topic in self.group_topics(group_id)? {
            let Ok(described) = node.topic(&topic) else {
                continue;
            };
            for partition in described.replicas.values() {
                let state = partition.state();
                bounds.insert(
                    (topic.clone(), partition.index),
                    (state.log_start_offset, state.high_watermark),
                );
            }
        }
        self.describe_with(group_id, &bounds)
    }

    /// The topics a group subscribes to or has offsets in.
    fn group_topics(&self, group_id: &str) -> Result<BTreeSet<String>, Failure> {
        let groups = lock(&self.groups);
        let group = known(&groups, group_id)?;
        let mut topics: BTreeSet<String> = group
            .members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        topics.extend(classic_members(group).into_iter().flat_map(|m| m.topics));
        topics.extend(group.offsets.keys().map(|(t, _)| t.clone()));
        Ok(topics)
    }

    /// The description of a group, given each partition's `(log start, high watermark)`.
    fn describe_with(
        &self,
        group_id: &str,
        bounds: &BTreeMap<(String, i32), (i64, i64)>,
    ) -> Result<v1::GroupDescription, Failure> {
        let groups = lock(&self.groups);
        let group = known(&groups, group_id)?;
        let partitions = bounds
            .iter()
            .map(|((topic, partition), (start, end))| {
                let committed = group.offsets.get(&(topic.clone(), *partition)).copied();
                let position = committed.unwrap_or(*start);
                v1::GroupPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    committed_offset: committed,
                    log_end_offset: *end,
                    lag: (end - position).max(0),
                }
            })
            .collect();
        let members = group
            .members
            .values()
            .map(|m| v1::GroupMember {
                member_id: m.id.clone(),
                member_epoch: m.epoch,
                topics: m.topics.iter().cloned().collect(),
                assignment: group_by_topic(&m.assigned),
            })
            .chain(classic_members(group))
            .collect();
        Ok(v1::GroupDescription {
            group_id: group.id.clone(),
            state: group.state().to_string(),
            group_epoch: group.epoch,
            members,
            partitions,
        })
    }

    /// Moves a group's offsets of `topic` (only while the group has no members).
    ///
    /// # Errors
    /// `GroupNotEmpty`, `UnknownTopic`, `StorageError`.
    /// Deletes a group without members: tombstones for its epoch and every committed offset
    /// in `__consumer_offsets`, then the group is forgotten here.
    ///
    /// # Errors
    /// `UnknownGroup`, `GroupNotEmpty`, `StorageError`.
    pub async fn delete(&self, node: &impl Replicas, group_id: &str) -> Result<(), Failure> {
        let _one_at_a_time = self.serial.lock().await;
        let keys: Vec<(String, Option<String>)> = {
            let groups = lock(&self.groups);
            let group = known(&groups, group_id)?;
            if group.has_members() {
                return Err(Failure::new(
                    Reason::GroupNotEmpty,
                    format!(
                        "group {group_id:?} has {} members; stop them before deleting it",
                        group.member_count()
                    ),
                ));
            }
            std::iter::once(records::epoch_key(group_id))
                .chain(
                    group
                        .offsets
                        .keys()
                        .map(|(topic, partition)| records::offset_key(group_id, topic, *partition)),
                )
                .map(|key| (key, None))
                .collect()
        };
        self.persist(node, group_id, keys).await?;
        lock(&self.groups).remove(group_id);
        tracing::info!(group = group_id, "group deleted");
        Ok(())
    }

    pub async fn reset(
        &self,
        node: &impl Replicas,
        request: v1::ResetOffsetsRequest,
    ) -> Result<(), Failure> {
        let _one_at_a_time = self.serial.lock().await;
        if let Some(group) = lock(&self.groups).get(&request.group_id)
            && group.has_members()
        {
            return Err(Failure::new(
                Reason::GroupNotEmpty,
                format!(
                    "group {:?} has {} members; stop them before resetting its offsets",
                    request.group_id,
                    group.member_count()
                ),
            ));
        }
        let topic = node.topic(&request.topic)?;
        let spec = v1::OffsetSpec::try_from(request.spec)
            .map_err(|_| Failure::new(Reason::InvalidRequest, "unknown offset spec"))?;
        let count = i32::try_from(topic.partition_count()).unwrap_or(i32::MAX);
        if let Some(index) = request
            .partition_offsets
            .keys()
            .find(|index| !(0..count).contains(*index))
        {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!(
                    "topic {:?} has partitions 0 to {}, not {index}",
                    request.topic,
                    count - 1
                ),
            ));
        }
        // Every partition's range as its leader has it, wherever the group's coordinator is.
        let ranges = node.ranges_from_leaders(&topic).await;
        let at_timestamp = if request.partition_offsets.is_empty()
            && request.offset.is_none()
            && spec == v1::OffsetSpec::Timestamp
        {
            node.offsets_from_leaders(&topic, spec, request.timestamp)
                .await
        } else {
            BTreeMap::new()
        };
        let mut offsets = Vec::new();
        for partition in 0..count {
            let Some(&(start, end)) = ranges.get(&partition) else {
                return Err(Failure::new(
                    Reason::LeaderNotAvailable,
                    format!(
                        "partition {partition} of {:?} has no reachable leader; nothing was reset",
                        request.topic
                    ),
                ));
            };
            let offset = if request.partition_offsets.is_empty() {
                match (request.offset, spec) {
                    (Some(offset), _) => offset.clamp(start, end),
                    (None, v1::OffsetSpec::Earliest) => start,
                    (None, v1::OffsetSpec::Latest) => end,
                    (None, v1::OffsetSpec::Timestamp) => at_timestamp
                        .get(&partition)
                        .copied()
                        .flatten()
                        .unwrap_or(end),
                }
            } else {
                match request.partition_offsets.get(&partition) {
                    Some(offset) => (*offset).clamp(start, end),
                    None => continue,
                }
            };
            offsets.push(v1::PartitionCommit {
                topic: topic.name.clone(),
                partition,
                offset,
            });
        }
        self.write_offsets(node, &request.group_id, &offsets)
            .await?;
        tracing::info!(group = %request.group_id, topic = %request.topic, "offsets reset");
        Ok(())
    }

    /// Appends records to the group's partition of `__consumer_offsets`.
    async fn persist(
        &self,
        node: &impl Replicas,
        group_id: &str,
        records: Vec<(String, Option<String>)>,
    ) -> Result<(), Failure> {
        let topic = node.topic(OFFSETS_TOPIC)?;
        let partition =
            partition_for_key(group_id.as_bytes(), topic.partition_count() as u32) as i32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut builder = BatchBuilder::new(0);
        for (key, value) in &records {
            builder.push(&Record {
                timestamp: now,
                key: Some(key.as_bytes()),
                value: value.as_deref().map(str::as_bytes),
                headers: Vec::new(),
            });
        }
        node.append(
            &topic,
            partition,
            Bytes::from(builder.build()),
            v1::Acks::All,
        )
        .await
        .map(|_| ())
    }
}

/// A group's classic members as Weir describes members: the topics of their subscription and
/// the partitions of their assignment (read from the consumer protocol; empty for another).
fn classic_members(group: &Group) -> Vec<v1::GroupMember> {
    let classic = &group.classic;
    classic
        .members
        .values()
        .map(|m| {
            let subscription = match classic.protocol.as_deref() {
                Some(p) => m.metadata(p),
                None => m.protocols.first().map(|(_, metadata)| metadata),
            };
            v1::GroupMember {
                member_id: m.id.clone(),
                member_epoch: classic.generation,
                topics: subscription
                    .and_then(|s| consumer_protocol::subscribed_topics(s))
                    .unwrap_or_default(),
                assignment: consumer_protocol::assigned_partitions(&m.assignment)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, partitions)| v1::TopicPartitions { topic, partitions })
                    .collect(),
            }
        })
        .collect()
}

fn flatten(partitions: &[v1::TopicPartitions]) -> Vec<TopicPartition> {
    partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.clone(), p)))
        .collect()
}

fn group_by_topic(partitions: &BTreeSet<TopicPartition>) -> Vec<v1::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| v1::TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}
