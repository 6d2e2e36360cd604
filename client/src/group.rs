//! A consumer in a group: the broker assigns it partitions (KIP-848 style), it reads them from
//! the group's committed offsets, and commits what it has returned.
//!
//! Heartbeats happen inside [`GroupConsumer::poll`], so a consumer that stops polling leaves
//! the group after its session timeout, as Kafka's does after `max.poll.interval.ms`.
//!
//! # Guarantees
//! With auto-commit, a revoked partition's position (the offset after the last record `poll`
//! returned) is committed before the consumer tells the broker it released the partition, so
//! the next owner starts exactly there: in a group, every record is returned once as long as
//! no member crashes (a crash replays from the last commit: at least once).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_proto::Reason;
use weir_proto::v1;

use crate::consumer::decode;
use crate::{Client, ClientError, ConsumedRecord, StartAt};

#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Commit positions every `auto_commit_interval`, on revocation and on close.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// Where to start in a partition the group has no offset for (Earliest or Latest).
    pub reset: StartAt,
    pub session_timeout: Duration,
    pub max_bytes: i32,
    pub max_wait: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            reset: StartAt::Latest,
            session_timeout: Duration::from_secs(10),
            max_bytes: 4 << 20,
            max_wait: Duration::from_millis(500),
        }
    }
}

type Partition = (Arc<str>, i32);

/// A member of a consumer group.
#[derive(Debug)]
pub struct GroupConsumer {
    client: Client,
    group: String,
    topics: Vec<String>,
    config: GroupConfig,
    member_id: String,
    member_epoch: i32,
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    last_commit: Instant,
    /// The partitions this member owns, with the next offset to return.
    positions: BTreeMap<Partition, i64>,
    /// Positions already committed, to skip commits that would change nothing.
    committed: BTreeMap<Partition, i64>,
    /// Polls so far, to rotate which partition comes first.
    polls: usize,
    /// While fetches fail in ways that may pass: the pauses between rounds.
    rounds: crate::retry::Rounds,
}

impl GroupConsumer {
    /// Joins `group` subscribed to `topics`.
    ///
    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_TOPIC`.
    pub async fn join(
        client: Client,
        group: &str,
        topics: &[&str],
        config: GroupConfig,
    ) -> Result<GroupConsumer, ClientError> {
        let mut consumer = GroupConsumer {
            client,
            group: group.to_string(),
            topics: topics.iter().map(ToString::to_string).collect(),
            config,
            member_id: String::new(),
            member_epoch: 0,
            heartbeat_interval: Duration::from_secs(1),
            next_heartbeat: Instant::now(),
            last_commit: Instant::now(),
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            polls: 0,
            rounds: Default::default(),
        };
        consumer.heartbeat().await?;
        Ok(consumer)
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.positions
            .keys()
            .map(|(t, p)| (t.to_string(), *p))
            .collect()
    }

    /// Heartbeats when due, then fetches every owned partition once (waiting up to
    /// `max_wait`); returns what arrived.
    ///
    /// # Errors
    /// The broker's error; a fenced member rejoins by itself rather than failing.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        self.poll_up_to(usize::MAX).await
    }

    /// [`GroupConsumer::poll`], returning at most `limit` records (Kafka's
    /// `max.poll.records`): a partition's position moves only past what is returned, so a
    /// commit never covers a record the caller did not get.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub async fn poll_up_to(&mut self, limit: usize) -> Result<Vec<ConsumedRecord>, ClientError> {
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat().await?;
        }
        if self.config.auto_commit && self.last_commit.elapsed() >= self.config.auto_commit_interval
        {
            self.commit().await?;
        }
        if self.positions.is_empty() {
            // Nothing to read until the group hands this member partitions.
            tokio::time::sleep(self.heartbeat_interval.min(self.config.max_wait)).await;
            return Ok(Vec::new());
        }
        let wait = self.config.max_wait.min(
            self.next_heartbeat
                .saturating_duration_since(Instant::now()),
        );
        let mut fetches = tokio::task::JoinSet::new();
        for ((topic, partition), &offset) in &self.positions {
            let client = self.client.clone();
            let mut request = v1::FetchRequest {
                topic: topic.to_string(),
                partition: *partition,
                offset,
                max_bytes: self.config.max_bytes,
                min_bytes: 1,
                max_wait_ms: wait.as_millis() as i32,
                current_leader_epoch: None,
            };
            let topic = Arc::clone(topic);
            let partition = *partition;
            fetches.spawn(async move {
                let fetched = match client.leader(&topic, request.partition).await {
                    Ok(mut leader) => {
                        request.current_leader_epoch =
                            client.leader_epoch(&topic, request.partition);
                        leader
                            .fetch(request)
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(ClientError::from)
                    }
                    Err(e) => Err(e),
                };
                let fetched = fetched.map_err(|e| e.in_partition(&topic, partition));
                (topic, fetched)
            });
        }
        // Every answer first: on any failure no position moves, so nothing is skipped. A
        // partition whose leader restarts or moves gives nothing this time.
        let mut responses = Vec::with_capacity(self.positions.len());
        let mut passing = None;
        while let Some(joined) = fetches.join_next().await {
            let (topic, result) = joined
                .map_err(|e| ClientError::InvalidArgument(format!("a fetch task failed: {e}")))?;
            match result {
                Ok(response) => responses.push((topic, response)),
                Err(error) if error.is_retryable() => {
                    self.client.forget(&topic);
                    passing.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        let what = format!("group {:?}: waiting for partition leaders", self.group);
        self.rounds
            .after(
                self.client.retry_policy(),
                &what,
                passing,
                responses.is_empty(),
            )
            .await;
        // The partition that goes first rotates, so that a backlog in one cannot starve the
        // others when `limit` cuts the poll short.
        self.polls = self.polls.wrapping_add(1);
        let count = responses.len().max(1);
        let rotation = self.polls % count;
        responses.sort_by_key(|(topic, r)| (Arc::clone(topic), r.partition));
        responses.rotate_left(rotation);
        let mut records = Vec::new();
        let mut moved = Vec::with_capacity(responses.len());
        for (topic, response) in responses {
            let key = (topic, response.partition);
            let Some(&from) = self.positions.get(&key) else {
                continue;
            };
            decode(
                &key.0,
                response.partition,
                &response.record_batches,
                from,
                &mut records,
            )?;
            moved.push((key, response.next_offset.max(from)));
        }
        if records.len() > limit {
            // Each partition goes only as far as its first record not returned.
            for record in records.drain(limit..).rev() {
                let key = (Arc::clone(&record.topic), record.partition);
                if let Some(entry) = moved.iter_mut().find(|(k, _)| *k == key) {
                    entry.1 = record.offset;
                }
            }
        }
        self.positions.extend(moved);
        Ok(records)
    }

    /// Commits the position of every owned partition.
    ///
    /// # Errors
    /// `STALE_MEMBER_EPOCH` or `UNKNOWN_MEMBER_ID` when the group moved on without this
    /// member; the broker's error otherwise.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let changed: Vec<(Partition, i64)> = self
            .positions
            .iter()
            .filter(|(k, v)| self.committed.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        self.commit_positions(changed).await
    }

    async fn commit_positions(
        &mut self,
        positions: Vec<(Partition, i64)>,
    ) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        if positions.is_empty() {
            return Ok(());
        }
        let request = v1::CommitOffsetsRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            offsets: positions
                .iter()
                .map(|((topic, partition), offset)| v1::PartitionCommit {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        };
        let committed = self
            .client
            .with_coordinator(&self.group, |mut c| {
                let request = request.clone();
                async move { c.commit_offsets(request).await }
            })
            .await;
        match committed {
            Ok(_) => {
                self.committed.extend(positions);
                Ok(())
            }
            // The group no longer knows this member (its coordinator moved or restarted and
            // membership is kept in memory, or the session expired): as Kafka's consumer, it
            // joins again; what it read since its last commit is read again by the partitions'
            // next owner (at least once, never lost).
            Err(error) if is_fenced(&error) => {
                self.fenced(&error);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Forgets what this member owned and joins again at the next poll.
    fn fenced(&mut self, error: &ClientError) {
        tracing::warn!(group = %self.group, member = %self.member_id, error = %error, "fenced; joining again");
        self.positions.clear();
        self.committed.clear();
        self.member_id.clear();
        self.member_epoch = 0;
        self.next_heartbeat = Instant::now();
    }

    /// Commits (with auto-commit) and leaves the group, so its partitions move at once.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed = if self.config.auto_commit {
            self.commit().await
        } else {
            Ok(())
        };
        // Leave even when the commit failed, so the partitions move at once rather than after
        // the session timeout.
        let request = v1::GroupHeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: -1,
            ..Default::default()
        };
        let left = self
            .client
            .with_coordinator(&self.group, |mut c| {
                let request = request.clone();
                async move { c.heartbeat(request).await }
            })
            .await;
        committed?;
        match left {
            // Not a member any more (fenced, or its coordinator moved): nothing to leave.
            Err(error) if !is_fenced(&error) => Err(error),
            _ => Ok(()),
        }
    }

    async fn heartbeat(&mut self) -> Result<(), ClientError> {
        let joining = self.member_epoch == 0;
        let owned: BTreeMap<&str, Vec<i32>> =
            self.positions
                .keys()
                .fold(BTreeMap::new(), |mut by_topic, (t, p)| {
                    by_topic.entry(&**t).or_default().push(*p);
                    by_topic
                });
        let request = v1::GroupHeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            topics: if joining {
                self.topics.clone()
            } else {
                Vec::new()
            },
            owned: owned
                .into_iter()
                .map(|(t, p)| v1::TopicPartitions {
                    topic: t.to_string(),
                    partitions: p,
                })
                .collect(),
            session_timeout_ms: self.config.session_timeout.as_millis() as i32,
        };
        let answer = match self
            .client
            .with_coordinator(&self.group, |mut c| {
                let request = request.clone();
                async move { c.heartbeat(request).await }
            })
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                if is_fenced(&error) {
                    // Whatever this member owned belongs to others now.
                    self.fenced(&error);
                    return Ok(());
                }
                return Err(error);
            }
        };
        self.member_id = answer.member_id;
        self.member_epoch = answer.member_epoch;
        self.heartbeat_interval =
            Duration::from_millis(answer.heartbeat_interval_ms.max(10) as u64);
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        let assigned: BTreeSet<Partition> = answer
            .assignment
            .iter()
            .flat_map(|t| {
                let topic: Arc<str> = t.topic.as_str().into();
                t.partitions.iter().map(move |&p| (Arc::clone(&topic), p))
            })
            .collect();
        let revoked: Vec<Partition> = self
            .positions
            .keys()
            .filter(|k| !assigned.contains(*k))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if self.config.auto_commit {
                let positions = revoked
                    .iter()
                    .filter_map(|k| self.positions.get(k).map(|o| (k.clone(), *o)))
                    .collect();
                self.commit_positions(positions).await?;
            }
            for key in &revoked {
                self.positions.remove(key);
                self.committed.remove(key);
            }
            // Tell the group at once, so the partitions can move.
            self.next_heartbeat = Instant::now();
        }
        let added: Vec<Partition> = assigned
            .into_iter()
            .filter(|k| !self.positions.contains_key(k))
            .collect();
        if !added.is_empty() {
            self.start_positions(added).await?;
        }
        Ok(())
    }

    /// Positions for newly assigned partitions: the group's committed offsets, else `reset`.
    async fn start_positions(&mut self, added: Vec<Partition>) -> Result<(), ClientError> {
        let topics: BTreeSet<String> = added.iter().map(|(t, _)| t.to_string()).collect();
        let request = v1::FetchOffsetsRequest {
            group_id: self.group.clone(),
            topics: topics.iter().cloned().collect(),
        };
        let committed = self
            .client
            .with_coordinator(&self.group, |mut c| {
                let request = request.clone();
                async move { c.fetch_offsets(request).await }
            })
            .await?
            .offsets;
        let spec = match self.config.reset {
            StartAt::Earliest => v1::OffsetSpec::Earliest,
            _ => v1::OffsetSpec::Latest,
        };
        let mut resets: BTreeMap<String, Vec<v1::PartitionOffset>> = BTreeMap::new();
        for topic in &topics {
            resets.insert(
                topic.clone(),
                self.client.list_offsets(topic, spec, 0).await?,
            );
        }
        for key in added {
            let found = committed
                .iter()
                .find(|c| *c.topic == *key.0 && c.partition == key.1)
                .map(|c| c.offset);
            let offset = match found {
                Some(offset) => {
                    self.committed.insert(key.clone(), offset);
                    offset
                }
                None => resets
                    .get(&*key.0)
                    .and_then(|offsets| offsets.iter().find(|o| o.partition == key.1))
                    .and_then(|o| o.offset)
                    .unwrap_or(0),
            };
            self.positions.insert(key, offset);
        }
        Ok(())
    }
}

/// The group no longer knows this member, or knows a newer epoch of it.
fn is_fenced(error: &ClientError) -> bool {
    matches!(
        error.reason(),
        Some(Reason::UnknownMemberId | Reason::StaleMemberEpoch)
    )
}
