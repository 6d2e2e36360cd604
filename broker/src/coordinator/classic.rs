//! Kafka's classic group protocol on the coordinator: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup and the commits of classic members. The decisions are `crate::classic`'s; here
//! requests that must wait (a JoinGroup until the generation starts, a follower's SyncGroup
//! until the leader's) wait for their answer, and a generation is recorded in
//! `__consumer_offsets` before its assignment is handed out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use weir_proto::{Reason, v1};

use super::{Coordinator, Replicas, lock, records};
use crate::classic::{Delivery, Error, Join, Joined, Reply, Sync};
use crate::failure::Failure;
use crate::group::Group;

/// Why a classic request was refused: by the group (one of Kafka's group errors), or by the
/// coordinator (not the coordinator, storage, a bad session timeout).
#[derive(Debug)]
pub enum Refused {
    Group(Error),
    Core(Failure),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused::Group(e)
    }
}

impl From<Failure> for Refused {
    fn from(f: Failure) -> Self {
        Refused::Core(f)
    }
}

/// The requests waiting for their group's answer, by (group, member).
#[derive(Debug, Default)]
pub struct Waiters {
    joins: HashMap<(String, String), oneshot::Sender<Result<Joined, Error>>>,
    syncs: HashMap<(String, String), oneshot::Sender<Result<Bytes, Error>>>,
}

impl Waiters {
    /// Passes a group's answers to the requests waiting for them.
    pub fn deliver(&mut self, group: &str, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            match delivery {
                Delivery::Join(member, answer) => {
                    if let Some(waiting) = self.joins.remove(&(group.to_string(), member)) {
                        let _ = waiting.send(answer);
                    }
                }
                Delivery::Sync(member, answer) => {
                    if let Some(waiting) = self.syncs.remove(&(group.to_string(), member)) {
                        let _ = waiting.send(answer);
                    }
                }
            }
        }
    }
}

/// Beyond its rebalance timeout, how long a request waits for an answer the group owes it
/// (the group's own deadlines answer it first; this only bounds the wait).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Waits for a group's answer; a request whose answer is dropped (a newer request of the
/// same member took its place) or late is told to join again.
async fn answer<T>(
    waiting: oneshot::Receiver<Result<T, Error>>,
    patience: Duration,
) -> Result<T, Refused> {
    match tokio::time::timeout(patience, waiting).await {
        Ok(Ok(answer)) => answer.map_err(Refused::Group),
        Ok(Err(_)) | Err(_) => Err(Refused::Group(Error::RebalanceInProgress)),
    }
}

/// The group a classic request names: made on a member's first join; refused while it has
/// members of Weir's own protocol.
fn classic_group<'a>(
    groups: &'a mut std::collections::BTreeMap<String, Group>,
    group_id: &str,
) -> Result<&'a mut Group, Refused> {
    if group_id.is_empty() {
        return Err(Failure::new(Reason::InvalidRequest, "a group id is required").into());
    }
    let group = groups
        .entry(group_id.to_string())
        .or_insert_with(|| Group::new(group_id, 0));
    if !group.members.is_empty() {
        return Err(Error::InconsistentGroupProtocol.into());
    }
    // A generation continues from the group's epoch, which the log keeps.
    if group.classic.is_empty() {
        group.classic.generation = group.classic.generation.max(group.epoch);
    }
    Ok(group)
}

/// The group's epoch follows its generation (and is what the log keeps).
pub(super) fn settle(group: &mut Group, waiters: &mut Waiters) {
    group.epoch = group.epoch.max(group.classic.generation);
    let deliveries = group.classic.take_deliveries();
    waiters.deliver(&group.id, deliveries);
}

impl Coordinator {
    /// Handles a JoinGroup: waits for the generation to start.
    ///
    /// # Errors
    /// The group's refusals; `InvalidSessionTimeout`.
    pub async fn join(&self, group_id: &str, join: Join) -> Result<Joined, Refused> {
        self.check_session_timeout(join.session_timeout)?;
        let patience = join.rebalance_timeout.max(self.initial_rebalance_delay) + ANSWER_MARGIN;
        let waiting = {
            let mut groups = lock(&self.groups);
            let group = classic_group(&mut groups, group_id)?;
            let reply = group
                .classic
                .join(join, Instant::now(), self.initial_rebalance_delay);
            let mut waiters = lock(&self.waiters);
            let waiting = match reply {
                Reply::Now(answer) => {
                    settle(group, &mut waiters);
                    return answer.map_err(Refused::Group);
                }
                Reply::Wait(member) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.joins.insert((group_id.to_string(), member), tx);
                    rx
                }
            };
            settle(group, &mut waiters);
            waiting
        };
        answer(waiting, patience).await
    }

    /// Handles a SyncGroup: the member's assignment, once the leader has given it. The
    /// leader's records the generation first.
    ///
    /// # Errors
    /// The group's refusals; `StorageError` and `NotCoordinator` from recording it.
    pub async fn sync(
        &self,
        node: &impl Replicas,
        group_id: &str,
        sync: Sync,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, Refused> {
        let (completes, patience) = {
            let groups = lock(&self.groups);
            let group = groups.get(group_id).ok_or(Error::UnknownMemberId)?;
            let patience = group
                .classic
                .members
                .get(&sync.member_id)
                .map_or(Duration::ZERO, |m| m.rebalance_timeout)
                + ANSWER_MARGIN;
            (group.classic.completes_generation(&sync), patience)
        };
        if completes {
            let _one_at_a_time = self.serial.lock().await;
            let record = (
                records::epoch_key(group_id),
                Some(sync.generation.to_string()),
            );
            self.persist(node, group_id, vec![record]).await?;
        }
        let waiting = {
            let mut groups = lock(&self.groups);
            let group = groups.get_mut(group_id).ok_or(Error::UnknownMemberId)?;
            let reply = group.classic.sync(&sync, &assignments, Instant::now());
            let mut waiters = lock(&self.waiters);
            let waiting = match reply {
                Some(answer) => {
                    settle(group, &mut waiters);
                    return answer.map_err(Refused::Group);
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    waiters
                        .syncs
                        .insert((group_id.to_string(), sync.member_id.clone()), tx);
                    rx
                }
            };
            settle(group, &mut waiters);
            waiting
        };
        answer(waiting, patience).await
    }

    /// Handles a Heartbeat.
    ///
    /// # Errors
    /// The group's refusals (`RebalanceInProgress` tells the member to join again).
    pub fn classic_heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), Refused> {
        let mut groups = lock(&self.groups);
        let group = groups.get_mut(group_id).ok_or(Error::UnknownMemberId)?;
        let beat = group
            .classic
            .heartbeat(member_id, instance_id, generation, Instant::now());
        settle(group, &mut lock(&self.waiters));
        Ok(beat?)
    }

    /// Handles a LeaveGroup: each member's answer, in order.
    ///
    /// # Errors
    /// An unknown group.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), Error>>, Refused> {
        let mut groups = lock(&self.groups);
        let group = groups.get_mut(group_id).ok_or(Error::UnknownMemberId)?;
        let now = Instant::now();
        let answers = members
            .iter()
            .map(|(member, instance)| {
                let left = group.classic.leave(member, instance.as_deref(), now);
                if left.is_ok() {
                    tracing::info!(group = group_id, member, "member left");
                }
                left
            })
            .collect();
        settle(group, &mut lock(&self.waiters));
        Ok(answers)
    }

    /// Commits the offsets of a member through Kafka's OffsetCommit, whichever protocol it
    /// speaks: a member of a Weir group (a KIP-848 consumer) by its member epoch, a classic
    /// member by its generation.
    ///
    /// # Errors
    /// As [`Coordinator::commit`] and [`Coordinator::commit_classic`].
    pub async fn commit_member(
        &self,
        node: &impl Replicas,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        offsets: &[v1::PartitionCommit],
    ) -> Result<(), Refused> {
        let native = lock(&self.groups)
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty());
        if native {
            let request = v1::CommitOffsetsRequest {
                group_id: group_id.to_string(),
                member_id: member.0.to_string(),
                member_epoch: member.2,
                offsets: offsets.to_vec(),
            };
            return Ok(self.commit(node, request).await?);
        }
        self.commit_classic(node, group_id, member, offsets).await
    }

    /// Commits the offsets of a classic member, fenced by its generation.
    ///
    /// # Errors
    /// The group's refusals; `UnknownTopic`, `StorageError`.
    async fn commit_classic(
        &self,
        node: &impl Replicas,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        offsets: &[v1::PartitionCommit],
    ) -> Result<(), Refused> {
        let (member_id, instance_id, generation) = member;
        // From the generation check to the offsets in memory, as for Weir's members.
        let _one_at_a_time = self.serial.lock().await;
        {
            let groups = lock(&self.groups);
            let group = groups.get(group_id).ok_or(Error::UnknownMemberId)?;
            group
                .classic
                .check_commit(member_id, instance_id, generation)?;
        }
        Ok(self.write_offsets(node, group_id, offsets).await?)
    }

    /// A classic group's members with their metadata for the group's protocol, its protocol
    /// type and protocol, for Kafka's DescribeGroups; `None` unless the group has classic
    /// members.
    pub fn classic_members(&self, group_id: &str) -> Option<ClassicView> {
        let groups = lock(&self.groups);
        let group = groups.get(group_id)?;
        let classic = &group.classic;
        if classic.is_empty() {
            return None;
        }
        Some(ClassicView {
            state: classic.state.name(),
            protocol_type: classic.protocol_type.clone().unwrap_or_default(),
            protocol: classic.protocol.clone().unwrap_or_default(),
            members: classic
                .members
                .values()
                .map(|m| ClassicMemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: classic
                        .protocol
                        .as_deref()
                        .and_then(|p| m.metadata(p))
                        .cloned()
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Refuses a session timeout outside the broker's bounds.
    ///
    /// # Errors
    /// `InvalidSessionTimeout`.
    pub(super) fn check_session_timeout(&self, timeout: Duration) -> Result<(), Failure> {
        if self.session_timeouts.contains(&timeout) {
            return Ok(());
        }
        Err(Failure::new(
            Reason::InvalidSessionTimeout,
            format!(
                "a session timeout of {} ms is outside what this broker allows ({} to {} ms: group_min_session_timeout, group_max_session_timeout)",
                timeout.as_millis(),
                self.session_timeouts.start().as_millis(),
                self.session_timeouts.end().as_millis()
            ),
        ))
    }
}

/// A classic group as Kafka's DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct ClassicView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<ClassicMemberView>,
}

#[derive(Debug, Clone)]
pub struct ClassicMemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}
