//! One consumer group's membership and assignment, as pure decisions (Kafka's KIP-848, in
//! small): members heartbeat with what they own; the group computes a target assignment when
//! it changes; a member is given a partition only once no other member holds it, so a
//! partition is revoked before it is reassigned; a member's epoch catches up with the group's
//! once it owns exactly its target, and commits from an older epoch are fenced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weir_proto::Reason;

use crate::classic::{ClassicGroup, State};

/// A topic partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// The group's target epoch once the member holds nothing outside its target (it may
    /// still wait for partitions others are revoking).
    pub epoch: i32,
    /// The epoch before, still accepted once in case the answer that moved it was lost.
    pub previous_epoch: i32,
    pub topics: BTreeSet<String>,
    /// What the member said it owns in its last heartbeat.
    pub owned: BTreeSet<TopicPartition>,
    /// What the member was last told it may own.
    pub assigned: BTreeSet<TopicPartition>,
    pub session_timeout: Duration,
    pub deadline: Instant,
}

impl Member {
    /// Owned, or told it may own: either way nobody else may have it yet.
    fn holds(&self, partition: &TopicPartition) -> bool {
        self.owned.contains(partition) || self.assigned.contains(partition)
    }
}

/// A heartbeat as the group sees it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub topics: Vec<String>,
    pub owned: Vec<TopicPartition>,
    pub session_timeout: Duration,
}

/// What the group answers a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: BTreeSet<TopicPartition>,
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    pub id: String,
    /// Bumped by every change of membership, subscriptions or partition counts.
    pub epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// The epoch `target` was computed at.
    pub target_epoch: i32,
    pub target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// Partition counts of the subscribed topics when the target was computed.
    universe: BTreeMap<String, i32>,
    /// Committed offsets.
    pub offsets: BTreeMap<TopicPartition, i64>,
    next_member: u64,
    /// Members that speak Kafka's classic protocol (none while `members` has some, and the
    /// other way round).
    pub classic: ClassicGroup,
}

impl Group {
    pub fn new(id: &str, epoch: i32) -> Self {
        Group {
            id: id.to_string(),
            epoch,
            target_epoch: epoch,
            ..Group::default()
        }
    }

    /// Whether the group has members, of either protocol.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty() || !self.classic.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len() + self.classic.members.len()
    }

    /// "Empty", "Stable" (every member owns exactly its target) or "Reconciling"; a group of
    /// classic members is in one of Kafka's classic states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty()
            && (!self.classic.is_empty() || self.classic.state != State::Empty)
        {
            return self.classic.state.name();
        }
        let settled = |m: &Member| {
            let target = self.target.get(&m.id);
            m.epoch == self.epoch && target == Some(&m.owned) && target == Some(&m.assigned)
        };
        if self.members.is_empty() {
            "Empty"
        } else if self.members.values().all(settled) {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Handles a heartbeat at `now`; `partitions` gives a topic's partition count (None when
    /// it does not exist).
    ///
    /// # Errors
    /// `UnknownMemberId` for a member the group does not know (it must join again with epoch
    /// 0), `StaleMemberEpoch` for an epoch the member is past.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        now: Instant,
        partitions: impl Fn(&str) -> Option<i32>,
    ) -> Result<Answer, (Reason, String)> {
        match request.member_epoch {
            -1 => {
                if self.members.remove(&request.member_id).is_some() {
                    self.epoch += 1;
                }
                return Ok(Answer {
                    member_id: request.member_id,
                    member_epoch: -1,
                    assignment: BTreeSet::new(),
                });
            }
            0 => {
                let id = if request.member_id.is_empty() {
                    // The wall clock and a counter: unique across restarts of the broker too.
                    self.next_member += 1;
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    format!("{}-{nanos:x}-{}", self.id, self.next_member)
                } else {
                    request.member_id.clone()
                };
                // A member that joins again starts over: what it held is released.
                self.members.insert(
                    id.clone(),
                    Member {
                        id: id.clone(),
                        epoch: 0,
                        previous_epoch: 0,
                        topics: request.topics.iter().cloned().collect(),
                        owned: BTreeSet::new(),
                        assigned: BTreeSet::new(),
                        session_timeout: request.session_timeout,
                        deadline: now + request.session_timeout,
                    },
                );
                self.epoch += 1;
                return Ok(self.reconcile(&id, now, &partitions));
            }
            _ => {}
        }
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return Err((
                Reason::UnknownMemberId,
                format!(
                    "member {:?} is not in group {:?}; join again",
                    request.member_id, self.id
                ),
            ));
        };
        if request.member_epoch != member.epoch && request.member_epoch != member.previous_epoch {
            return Err((
                Reason::StaleMemberEpoch,
                format!(
                    "member epoch {} is not {} (the member's current epoch)",
                    request.member_epoch, member.epoch
                ),
            ));
        }
        member.owned = request.owned.into_iter().collect();
        member.deadline = now + member.session_timeout;
        let topics: BTreeSet<String> = request.topics.into_iter().collect();
        if !topics.is_empty() && topics != member.topics {
            member.topics = topics;
            self.epoch += 1;
        }
        Ok(self.reconcile(&request.member_id, now, &partitions))
    }

    /// Removes members whose session expired; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.epoch += 1;
        }
        expired
    }

    /// Whether `member` at `epoch` may commit offsets of `partition`.
    ///
    /// # Errors
    /// `UnknownMemberId`, `StaleMemberEpoch`.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), (Reason, String)> {
        let member = self.members.get(member_id).ok_or_else(|| {
            (
                Reason::UnknownMemberId,
                format!("member {member_id:?} is not in group {:?}", self.id),
            )
        })?;
        if epoch != member.epoch {
            return Err((
                Reason::StaleMemberEpoch,
                format!(
                    "member epoch {epoch} is not {} (the member's current epoch)",
                    member.epoch
                ),
            ));
        }
        Ok(())
    }

    /// Recomputes the target when the group changed, then gives `member_id` what it may own now.
    fn reconcile(
        &mut self,
        member_id: &str,
        _now: Instant,
        partitions: &impl Fn(&str) -> Option<i32>,
    ) -> Answer {
        let universe: BTreeMap<String, i32> = self
            .members
            .values()
            .flat_map(|m| m.topics.iter())
            .filter_map(|t| partitions(t).map(|n| (t.clone(), n)))
            .collect();
        if universe != self.universe {
            self.universe = universe;
            self.epoch += 1;
        }
        if self.target_epoch != self.epoch {
            self.target = target_assignment(&self.members, &self.universe);
            self.target_epoch = self.epoch;
        }
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_elsewhere: BTreeSet<&TopicPartition> = target
            .iter()
            .filter(|p| {
                self.members
                    .values()
                    .any(|o| o.id != member_id && o.holds(p))
            })
            .collect();
        let member = self
            .members
            .get_mut(member_id)
            .expect("the member was just found or inserted");
        let assignment: BTreeSet<TopicPartition> = target
            .iter()
            .filter(|p| !held_elsewhere.contains(p))
            .cloned()
            .collect();
        member.assigned = assignment.clone();
        if member.epoch != self.target_epoch && member.owned.iter().all(|p| target.contains(p)) {
            member.previous_epoch = member.epoch;
            member.epoch = self.target_epoch;
        }
        Answer {
            member_id: member_id.to_string(),
            member_epoch: member.epoch,
            assignment,
        }
    }
}

/// Spreads each topic's partitions evenly over the members subscribed to it, keeping every
/// member's current partitions up to its fair share (so a rebalance moves as little as it can).
/// Deterministic: members in id order.
pub fn target_assignment(
    members: &BTreeMap<String, Member>,
    universe: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in universe {
        let subscribers: Vec<&Member> = members
            .values()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        let quota = |index: usize| count / n + i32::from((index as i32) < count % n);
        let mut free: BTreeSet<i32> = (0..count).collect();
        let mut given: Vec<Vec<i32>> = vec![Vec::new(); subscribers.len()];
        // Keep what members hold, up to their share.
        for (index, member) in subscribers.iter().enumerate() {
            for (t, p) in member.assigned.iter().chain(member.owned.iter()) {
                if t == topic && free.contains(p) && (given[index].len() as i32) < quota(index) {
                    free.remove(p);
                    given[index].push(*p);
                }
            }
        }
        // Hand out the rest in order.
        for (index, partitions) in given.iter_mut().enumerate() {
            while (partitions.len() as i32) < quota(index) {
                let Some(p) = free.pop_first() else { break };
                partitions.push(p);
            }
        }
        for (member, partitions) in subscribers.iter().zip(given) {
            target
                .entry(member.id.clone())
                .or_default()
                .extend(partitions.into_iter().map(|p| (topic.clone(), p)));
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);

    fn join(group: &mut Group, now: Instant) -> Answer {
        let request = Heartbeat {
            member_epoch: 0,
            topics: vec!["t".into()],
            session_timeout: SESSION,
            ..Heartbeat::default()
        };
        group
            .heartbeat(request, now, |t| (t == "t").then_some(6))
            .expect("join")
    }

    fn beat(
        group: &mut Group,
        answer: &Answer,
        owned: &BTreeSet<TopicPartition>,
        now: Instant,
    ) -> Answer {
        let request = Heartbeat {
            member_id: answer.member_id.clone(),
            member_epoch: answer.member_epoch,
            owned: owned.iter().cloned().collect(),
            session_timeout: SESSION,
            ..Heartbeat::default()
        };
        group
            .heartbeat(request, now, |t| (t == "t").then_some(6))
            .expect("heartbeat")
    }

    #[test]
    fn a_lone_member_gets_every_partition_and_becomes_stable() {
        let mut group = Group::new("g", 0);
        let now = Instant::now();
        let first = join(&mut group, now);
        assert_eq!(first.assignment.len(), 6);
        let second = beat(&mut group, &first, &first.assignment, now);
        assert_eq!(second.member_epoch, group.epoch);
        assert_eq!(group.state(), "Stable");
    }

    #[test]
    fn a_partition_is_revoked_before_it_is_reassigned() {
        let mut group = Group::new("g", 0);
        let now = Instant::now();
        let a = join(&mut group, now);
        let a = beat(&mut group, &a, &a.assignment.clone(), now);
        let a_owned = a.assignment.clone();
        // B joins: its share is still held by A, so it gets nothing yet.
        let b = join(&mut group, now);
        assert!(b.assignment.is_empty(), "{:?}", b.assignment);
        assert_eq!(group.state(), "Reconciling");
        // A hears it must give up three partitions.
        let a = beat(&mut group, &a, &a_owned, now);
        assert_eq!(a.assignment.len(), 3);
        // Until A reports it no longer owns them, B still waits.
        let b = beat(&mut group, &b, &BTreeSet::new(), now);
        assert!(b.assignment.is_empty());
        let a = beat(&mut group, &a, &a.assignment.clone(), now);
        let b = beat(&mut group, &b, &BTreeSet::new(), now);
        assert_eq!(b.assignment.len(), 3);
        assert!(a.assignment.is_disjoint(&b.assignment));
        let b = beat(&mut group, &b, &b.assignment.clone(), now);
        assert_eq!((a.member_epoch, b.member_epoch), (group.epoch, group.epoch));
        assert_eq!(group.state(), "Stable");
    }

    #[test]
    fn stale_epochs_and_unknown_members_are_fenced() {
        let mut group = Group::new("g", 0);
        let now = Instant::now();
        let a = join(&mut group, now);
        let a = beat(&mut group, &a, &a.assignment.clone(), now);
        assert!(group.check_commit(&a.member_id, a.member_epoch).is_ok());
        assert_eq!(
            group
                .check_commit(&a.member_id, a.member_epoch - 1)
                .map_err(|e| e.0),
            Err(Reason::StaleMemberEpoch)
        );
        assert_eq!(
            group.check_commit("nobody", 1).map_err(|e| e.0),
            Err(Reason::UnknownMemberId)
        );
        // Its session expires: it is removed and must join again.
        assert_eq!(
            group.expire(now + SESSION + Duration::from_millis(1)),
            vec![a.member_id.clone()]
        );
        let request = Heartbeat {
            member_id: a.member_id.clone(),
            member_epoch: a.member_epoch,
            ..Heartbeat::default()
        };
        let refused = group
            .heartbeat(request, now, |_| Some(6))
            .expect_err("fenced");
        assert_eq!(refused.0, Reason::UnknownMemberId);
        assert_eq!(group.state(), "Empty");
    }

    #[test]
    fn target_assignment_is_balanced_and_sticky() {
        let now = Instant::now();
        let member = |id: &str, owned: &[i32]| Member {
            id: id.into(),
            epoch: 1,
            previous_epoch: 0,
            topics: BTreeSet::from(["t".to_string()]),
            owned: owned.iter().map(|&p| ("t".to_string(), p)).collect(),
            assigned: BTreeSet::new(),
            session_timeout: SESSION,
            deadline: now,
        };
        let universe = BTreeMap::from([("t".to_string(), 7)]);
        let members = BTreeMap::from([
            ("a".to_string(), member("a", &[0, 1, 2, 3, 4])),
            ("b".to_string(), member("b", &[5, 6])),
            ("c".to_string(), member("c", &[])),
        ]);
        let target = target_assignment(&members, &universe);
        let sizes: Vec<usize> = target.values().map(BTreeSet::len).collect();
        assert_eq!(sizes, [3, 2, 2]);
        assert!(
            target["a"].iter().all(|(_, p)| [0, 1, 2, 3, 4].contains(p)),
            "a keeps what it had"
        );
        assert!(
            target["b"].iter().all(|(_, p)| [5, 6].contains(p)),
            "b keeps what it had"
        );
        let all: BTreeSet<_> = target.values().flatten().collect();
        assert_eq!(all.len(), 7);
    }
}
