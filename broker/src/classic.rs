//! One consumer group's membership under Kafka's classic protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), as pure decisions: Kafka's group state machine. Members join; the
//! group waits (up to the longest rebalance timeout) for every member to join again, then
//! starts a generation, picks a protocol all members support and a leader; the leader
//! computes the assignment on the client side and hands it over in its SyncGroup, which the
//! group passes to each member.
//!
//! Requests that must wait (a JoinGroup until the generation starts, a follower's SyncGroup
//! until the leader's) get no answer here: the answers come out later as [`Delivery`]s, which
//! the coordinator passes to the waiting requests.
//!
//! Kafka's rules kept: a new dynamic member is given its id and asked to join again with it
//! (MEMBER_ID_REQUIRED, KIP-394); a static member (`group.instance.id`, KIP-345) that joins
//! again while the group is stable takes its old place and assignment with no rebalance, and
//! the id it replaced is fenced; the first rebalance of an empty group waits
//! `initial_rebalance_delay` for more members; commits and heartbeats carry the generation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// Why a request was refused; each is one of Kafka's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the member is not in the group; join again without a member id")]
    UnknownMemberId,
    #[error("the request's generation is not the group's")]
    IllegalGeneration,
    #[error("the group is rebalancing; join again")]
    RebalanceInProgress,
    /// The member's id, to join again with.
    #[error("join again with the member id {0:?}")]
    MemberIdRequired(String),
    #[error("another member joined with the same group.instance.id")]
    FencedInstanceId,
    #[error("the member's protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
}

/// A member, as the group keeps it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// The protocols (assignors) the member supports, preferred first, with its metadata
    /// for each (for consumers: its subscription).
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader assigned it in this generation.
    pub assignment: Bytes,
    /// A JoinGroup of the member waits for the generation to start.
    pub awaiting_join: bool,
    /// A SyncGroup of the member waits for the leader's.
    pub awaiting_sync: bool,
    /// When its session ends unless it is heard from.
    pub deadline: Instant,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m)
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

/// A JoinGroup as the group sees it.
#[derive(Debug, Clone)]
pub struct Join {
    /// Empty for a member that joins for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// The client speaks JoinGroup v4 or later: a new member is given its id first.
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol: for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// The group's answer to a request: now, or later (as a [`Delivery`] for the member named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Now(Result<T, Error>),
    Wait(String),
}

impl<T> Reply<T> {
    pub fn waits(&self) -> bool {
        matches!(self, Reply::Wait(_))
    }

    /// The answer, if given now.
    pub fn now(self) -> Option<Result<T, Error>> {
        match self {
            Reply::Now(answer) => Some(answer),
            Reply::Wait(_) => None,
        }
    }
}

/// An answer to a request that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Join(String, Result<Joined, Error>),
    Sync(String, Result<Bytes, Error>),
}

/// A group's classic membership.
#[derive(Debug, Clone, Default)]
pub struct ClassicGroup {
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id → member id.
    pub instances: BTreeMap<String, String>,
    /// Ids given with MEMBER_ID_REQUIRED, until their member joins with them (or the
    /// deadline passes).
    pending: BTreeMap<String, Instant>,
    /// When the join phase ends whoever has joined by then.
    rebalance_deadline: Option<Instant>,
    /// The join phase of an empty group: it waits for more members until the deadline, and
    /// each one that joins pushes the deadline (up to `initial_limit`).
    initial_limit: Option<Instant>,
    next_member: u64,
    /// Answers for requests that wait, for the coordinator to take.
    out: Vec<Delivery>,
}

impl ClassicGroup {
    /// The answers of waiting requests decided since the last call.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.out)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn new_member_id(&mut self, client_id: &str, instance_id: Option<&str>) -> String {
        self.next_member += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = instance_id.unwrap_or(client_id);
        format!("{prefix}-{nanos:x}-{}", self.next_member)
    }

    /// Whether a member with `protocol_type` and `protocols` fits the group.
    fn fits(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.metadata(name).is_some()))
    }

    /// Handles a JoinGroup at `now`: its answer, or the member id it waits under for the
    /// generation to start (its answer then comes as a [`Delivery::Join`]).
    ///
    /// # Errors
    /// As Kafka answers: `InconsistentGroupProtocol`, `MemberIdRequired`, `UnknownMemberId`,
    /// `FencedInstanceId`.
    pub fn join(&mut self, join: Join, now: Instant, initial_delay: Duration) -> Reply<Joined> {
        let answer = self.join_inner(join, now, initial_delay);
        self.check_join_complete(now);
        answer
    }

    fn join_inner(&mut self, join: Join, now: Instant, initial_delay: Duration) -> Reply<Joined> {
        if !self.fits(&join.protocol_type, &join.protocols) {
            return Reply::Now(Err(Error::InconsistentGroupProtocol));
        }
        if join.member_id.is_empty() {
            if let Some(instance) = join.instance_id.clone() {
                if let Some(old) = self.instances.get(&instance).cloned() {
                    return self.replace_static(old, join, now, initial_delay);
                }
                let id = self.new_member_id(&join.client_id, Some(&instance));
                self.instances.insert(instance, id.clone());
                self.add(id.clone(), join, now, initial_delay);
                return Reply::Wait(id);
            }
            let id = self.new_member_id(&join.client_id, None);
            if join.require_known_member_id {
                self.pending.insert(id.clone(), now + join.session_timeout);
                return Reply::Now(Err(Error::MemberIdRequired(id)));
            }
            self.add(id.clone(), join, now, initial_delay);
            return Reply::Wait(id);
        }
        if self.pending.remove(&join.member_id).is_some() {
            let id = join.member_id.clone();
            self.add(id.clone(), join, now, initial_delay);
            return Reply::Wait(id);
        }
        let Some(member) = self.members.get(&join.member_id) else {
            return Reply::Now(Err(Error::UnknownMemberId));
        };
        if let Some(instance) = &join.instance_id
            && self.instances.get(instance) != Some(&join.member_id)
        {
            return Reply::Now(Err(Error::FencedInstanceId));
        }
        let unchanged = member.same_protocols(&join.protocols);
        let is_leader = self.leader.as_deref() == Some(join.member_id.as_str());
        match self.state {
            State::Empty => Reply::Now(Err(Error::UnknownMemberId)),
            State::PreparingRebalance => {
                self.update(&join, now);
                Reply::Wait(join.member_id)
            }
            // The member did not get its JoinGroup answer: the same again.
            State::CompletingRebalance if unchanged => Reply::Now(Ok(self.joined(&join.member_id))),
            // A follower with nothing new: it goes on with the current generation.
            State::Stable if unchanged && !is_leader => {
                Reply::Now(Ok(self.joined(&join.member_id)))
            }
            State::CompletingRebalance | State::Stable => {
                self.update(&join, now);
                self.prepare_rebalance(now, initial_delay);
                Reply::Wait(join.member_id)
            }
        }
    }

    /// A static member joins again under a new member id: the old id is fenced. In a stable
    /// group whose protocol stays, it takes its old assignment and nobody rebalances.
    fn replace_static(
        &mut self,
        old: String,
        join: Join,
        now: Instant,
        initial_delay: Duration,
    ) -> Reply<Joined> {
        let instance = join.instance_id.clone().expect("a static member");
        let id = self.new_member_id(&join.client_id, Some(&instance));
        let mut member = self.members.remove(&old).expect("instances name members");
        if member.awaiting_join {
            self.out
                .push(Delivery::Join(old.clone(), Err(Error::FencedInstanceId)));
        }
        if member.awaiting_sync {
            self.out
                .push(Delivery::Sync(old.clone(), Err(Error::FencedInstanceId)));
        }
        member.id = id.clone();
        member.awaiting_join = false;
        member.awaiting_sync = false;
        let old_protocols = std::mem::replace(&mut member.protocols, join.protocols.clone());
        member.client_id = join.client_id.clone();
        member.client_host = join.client_host.clone();
        member.session_timeout = join.session_timeout;
        member.rebalance_timeout = join.rebalance_timeout;
        member.deadline = now + join.session_timeout;
        self.members.insert(id.clone(), member);
        self.instances.insert(instance, id.clone());
        let leader_before = self.leader.clone();
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(id.clone());
        }
        let protocol_stays = self.state == State::Stable
            && self.protocol.as_ref().is_some_and(|p| {
                join.protocols.iter().any(|(name, _)| name == p)
                    && old_protocols.iter().any(|(name, _)| name == p)
            });
        if protocol_stays {
            // The old leader id is answered, so that a replaced leader does not assign again
            // (a stable group would not pass its new assignment on).
            let mut joined = self.joined(&id);
            joined.leader = leader_before.unwrap_or_default();
            joined.members.clear();
            return Reply::Now(Ok(joined));
        }
        self.members
            .get_mut(&id)
            .expect("just inserted")
            .awaiting_join = true;
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now, initial_delay);
        }
        Reply::Wait(id)
    }

    fn add(&mut self, id: String, join: Join, now: Instant, initial_delay: Duration) {
        let member = Member {
            id: id.clone(),
            instance_id: join.instance_id,
            client_id: join.client_id,
            client_host: join.client_host,
            session_timeout: join.session_timeout,
            rebalance_timeout: join.rebalance_timeout,
            protocols: join.protocols,
            assignment: Bytes::new(),
            awaiting_join: true,
            awaiting_sync: false,
            deadline: now + join.session_timeout,
        };
        if self.members.is_empty() {
            self.protocol_type = Some(join.protocol_type);
        }
        self.members.insert(id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        match self.state {
            State::PreparingRebalance => {
                if let Some(limit) = self.initial_limit {
                    self.rebalance_deadline = Some((now + initial_delay).min(limit));
                }
            }
            _ => self.prepare_rebalance(now, initial_delay),
        }
    }

    fn update(&mut self, join: &Join, now: Instant) {
        let member = self.members.get_mut(&join.member_id).expect("a member");
        member.protocols.clone_from(&join.protocols);
        member.client_id.clone_from(&join.client_id);
        member.client_host.clone_from(&join.client_host);
        member.session_timeout = join.session_timeout;
        member.rebalance_timeout = join.rebalance_timeout;
        member.awaiting_join = true;
        member.deadline = now + join.session_timeout;
    }

    /// Starts a join phase: an assignment being handed out is dropped (its members' SyncGroup
    /// fails with REBALANCE_IN_PROGRESS), and the phase ends once every member has joined
    /// again, or at the longest rebalance timeout.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == State::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if member.awaiting_sync {
                    member.awaiting_sync = false;
                    self.out.push(Delivery::Sync(
                        member.id.clone(),
                        Err(Error::RebalanceInProgress),
                    ));
                }
            }
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state == State::Empty && !initial_delay.is_zero() {
            let limit = now + longest;
            self.initial_limit = Some(limit);
            self.rebalance_deadline = Some((now + initial_delay).min(limit));
        } else {
            self.initial_limit = None;
            self.rebalance_deadline = Some(now + longest);
        }
        self.state = State::PreparingRebalance;
    }

    /// Ends the join phase when every member has joined (outside the initial delay), or
    /// when its deadline has passed.
    fn check_join_complete(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let everyone = self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join);
        let due = self.rebalance_deadline.is_none_or(|d| d <= now);
        if (everyone && self.initial_limit.is_none()) || due {
            self.complete_join(now);
        }
    }

    /// Starts the next generation with the members that joined (dynamic members that did not
    /// are removed), and answers their JoinGroups.
    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        self.rebalance_deadline = None;
        self.initial_limit = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        self.state = State::CompletingRebalance;
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .find(|m| m.awaiting_join)
                .or_else(|| self.members.values().next())
                .map(|m| m.id.clone());
        }
        let joined: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join)
            .map(|m| m.id.clone())
            .collect();
        for id in joined {
            let answer = self.joined(&id);
            let member = self.members.get_mut(&id).expect("a member");
            member.awaiting_join = false;
            member.deadline = now + member.session_timeout;
            self.out.push(Delivery::Join(id, Ok(answer)));
        }
    }

    /// The protocol every member supports that most members prefer (ties: by name).
    fn select_protocol(&self) -> Option<String> {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            let choice = member.protocols.iter().find(|(name, _)| {
                self.members
                    .values()
                    .all(|other| other.metadata(name).is_some())
            });
            if let Some((name, _)) = choice {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(name, _)| name.to_string())
    }

    /// The JoinGroup answer of the current generation for `member_id`.
    fn joined(&self, member_id: &str) -> Joined {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    let metadata = protocol
                        .as_deref()
                        .and_then(|p| m.metadata(p))
                        .cloned()
                        .unwrap_or_default();
                    (m.id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol,
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), Error> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(id) if id == member_id => {}
                Some(_) => return Err(Error::FencedInstanceId),
                None => return Err(Error::UnknownMemberId),
            }
        }
        if self.state == State::Empty || !self.members.contains_key(member_id) {
            return Err(Error::UnknownMemberId);
        }
        Ok(())
    }

    /// Handles a SyncGroup: the member's assignment, or `None` while it waits for the
    /// leader's (then a [`Delivery::Sync`]). The leader's hands out the assignment.
    ///
    /// # Errors
    /// `UnknownMemberId`, `FencedInstanceId`, `IllegalGeneration`,
    /// `InconsistentGroupProtocol`, `RebalanceInProgress`.
    pub fn sync(
        &mut self,
        sync: &Sync,
        assignments: &[(String, Bytes)],
        now: Instant,
    ) -> Option<Result<Bytes, Error>> {
        if let Err(e) = self.check_member(&sync.member_id, sync.instance_id.as_deref()) {
            return Some(Err(e));
        }
        if sync.generation != self.generation {
            return Some(Err(Error::IllegalGeneration));
        }
        if sync
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || sync
                .protocol
                .as_ref()
                .is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            return Some(Err(Error::InconsistentGroupProtocol));
        }
        let member = self.members.get_mut(&sync.member_id).expect("checked");
        member.deadline = now + member.session_timeout;
        match self.state {
            State::Empty => Some(Err(Error::UnknownMemberId)),
            State::PreparingRebalance => Some(Err(Error::RebalanceInProgress)),
            State::Stable => Some(Ok(member.assignment.clone())),
            State::CompletingRebalance => {
                member.awaiting_sync = true;
                if self.leader.as_deref() == Some(sync.member_id.as_str()) {
                    for member in self.members.values_mut() {
                        member.assignment = assignments
                            .iter()
                            .find(|(id, _)| *id == member.id)
                            .map(|(_, a)| a.clone())
                            .unwrap_or_default();
                        if member.awaiting_sync {
                            member.awaiting_sync = false;
                            self.out.push(Delivery::Sync(
                                member.id.clone(),
                                Ok(member.assignment.clone()),
                            ));
                        }
                    }
                    self.state = State::Stable;
                }
                None
            }
        }
    }

    /// Whether a SyncGroup is the leader's that completes the current generation (the
    /// coordinator records the generation before handing the assignment out).
    pub fn completes_generation(&self, sync: &Sync) -> bool {
        self.state == State::CompletingRebalance
            && sync.generation == self.generation
            && self.leader.as_deref() == Some(sync.member_id.as_str())
    }

    /// Handles a Heartbeat.
    ///
    /// # Errors
    /// `UnknownMemberId`, `FencedInstanceId`, `IllegalGeneration`, and
    /// `RebalanceInProgress` to tell a member to join again.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), Error> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(Error::IllegalGeneration);
        }
        let member = self.members.get_mut(member_id).expect("checked");
        member.deadline = now + member.session_timeout;
        match self.state {
            State::PreparingRebalance => Err(Error::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Whether a member may commit offsets at `generation`: a member of this generation, and
    /// not while the assignment is handed out. (Commits are allowed while the group prepares
    /// a rebalance, so that members commit what they consumed before giving it up.)
    ///
    /// # Errors
    /// `UnknownMemberId`, `FencedInstanceId`, `IllegalGeneration`, `RebalanceInProgress`.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), Error> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(Error::IllegalGeneration);
        }
        if self.state == State::CompletingRebalance {
            return Err(Error::RebalanceInProgress);
        }
        Ok(())
    }

    /// Handles a LeaveGroup of one member: by member id, or by instance id alone (the member
    /// id empty).
    ///
    /// # Errors
    /// `UnknownMemberId`, `FencedInstanceId`.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), Error> {
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => self
                .instances
                .get(instance)
                .cloned()
                .ok_or(Error::UnknownMemberId)?,
            _ => {
                self.check_member(member_id, instance_id)?;
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&id) {
            return Err(Error::UnknownMemberId);
        }
        self.remove(&id);
        self.after_removal(now);
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        if member.awaiting_join {
            self.out
                .push(Delivery::Join(id.to_string(), Err(Error::UnknownMemberId)));
        }
        if member.awaiting_sync {
            self.out
                .push(Delivery::Sync(id.to_string(), Err(Error::UnknownMemberId)));
        }
        if let Some(instance) = &member.instance_id
            && self.instances.get(instance).map(String::as_str) == Some(id)
        {
            self.instances.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    fn after_removal(&mut self, now: Instant) {
        match self.state {
            State::Stable | State::CompletingRebalance => {
                self.prepare_rebalance(now, Duration::ZERO);
                self.check_join_complete(now);
            }
            State::PreparingRebalance => self.check_join_complete(now),
            State::Empty => {}
        }
    }

    /// Removes members whose session ended (but not while a request of theirs waits), and
    /// ids given out that were not used; ends a join phase whose time is up. Returns the
    /// members removed.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline <= now && !m.awaiting_join && !m.awaiting_sync)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        if !expired.is_empty() {
            self.after_removal(now);
        }
        self.check_join_complete(now);
        expired
    }
}

/// A SyncGroup as the group sees it (the assignments apart).
#[derive(Debug, Clone, Default)]
pub struct Sync {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn join(member_id: &str, instance: Option<&str>) -> Join {
        Join {
            member_id: member_id.into(),
            instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
            require_known_member_id: true,
        }
    }

    /// Joins a new dynamic member through MEMBER_ID_REQUIRED; its id.
    fn new_member(group: &mut ClassicGroup, now: Instant) -> String {
        let Reply::Now(Err(Error::MemberIdRequired(id))) =
            group.join(join("", None), now, Duration::ZERO)
        else {
            panic!("a new member is asked to join again with its id");
        };
        assert!(group.join(join(&id, None), now, Duration::ZERO).waits());
        id
    }

    fn joins(deliveries: &[Delivery]) -> BTreeMap<String, Joined> {
        deliveries
            .iter()
            .filter_map(|d| match d {
                Delivery::Join(id, Ok(j)) => Some((id.clone(), j.clone())),
                _ => None,
            })
            .collect()
    }

    fn sync(id: &str, generation: i32) -> Sync {
        Sync {
            member_id: id.into(),
            generation,
            ..Sync::default()
        }
    }

    /// A stable group of one member; its id.
    fn stable_one(group: &mut ClassicGroup, now: Instant) -> String {
        let a = new_member(group, now);
        let joined = joins(&group.take_deliveries());
        assert_eq!(joined[&a].leader, a);
        assert_eq!(joined[&a].members.len(), 1);
        let assignment = vec![(a.clone(), Bytes::from_static(b"all"))];
        assert!(group.sync(&sync(&a, 1), &assignment, now).is_none());
        assert_eq!(
            group.take_deliveries(),
            vec![Delivery::Sync(a.clone(), Ok(Bytes::from_static(b"all")))]
        );
        assert_eq!(group.state, State::Stable);
        a
    }

    #[test]
    fn a_lone_member_leads_its_generation() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        stable_one(&mut group, now);
        assert_eq!(group.generation, 1);
        assert_eq!(group.protocol.as_deref(), Some("range"));
    }

    #[test]
    fn a_second_member_makes_everyone_join_again_and_old_generations_are_fenced() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        let a = stable_one(&mut group, now);
        let b = new_member(&mut group, now);
        assert_eq!(group.state, State::PreparingRebalance);
        assert!(
            group.take_deliveries().is_empty(),
            "waits for a to join again"
        );
        assert_eq!(
            group.heartbeat(&a, None, 1, now),
            Err(Error::RebalanceInProgress)
        );
        // a commits what it consumed before it gives its partitions up.
        assert_eq!(group.check_commit(&a, None, 1), Ok(()));
        assert!(group.join(join(&a, None), now, Duration::ZERO).waits());
        let joined = joins(&group.take_deliveries());
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[&a].generation, 2);
        assert_eq!(joined[&a].leader, a, "the leader stays");
        assert_eq!(joined[&a].members.len(), 2);
        assert!(joined[&b].members.is_empty(), "only the leader assigns");
        // The follower waits for the leader's assignment.
        assert!(group.sync(&sync(&b, 2), &[], now).is_none());
        assert_eq!(
            group.check_commit(&b, None, 2),
            Err(Error::RebalanceInProgress)
        );
        let assignment = vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ];
        assert!(group.sync(&sync(&a, 2), &assignment, now).is_none());
        let mut delivered = group.take_deliveries();
        delivered.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(delivered.len(), 2);
        assert!(delivered.contains(&Delivery::Sync(b.clone(), Ok(Bytes::from_static(b"B")))));
        assert_eq!(
            group.heartbeat(&a, None, 1, now),
            Err(Error::IllegalGeneration)
        );
        assert_eq!(
            group.check_commit(&a, None, 1),
            Err(Error::IllegalGeneration)
        );
        assert_eq!(group.heartbeat(&b, None, 2, now), Ok(()));
        assert_eq!(
            group.heartbeat("x", None, 2, now),
            Err(Error::UnknownMemberId)
        );
    }

    #[test]
    fn a_member_that_does_not_join_again_is_removed_at_the_rebalance_timeout() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        let a = stable_one(&mut group, now);
        let b = new_member(&mut group, now);
        // a heartbeats (and is told to join again) but never joins.
        for seconds in (5..30).step_by(5) {
            let t = now + Duration::from_secs(seconds);
            assert_eq!(
                group.heartbeat(&a, None, 1, t),
                Err(Error::RebalanceInProgress)
            );
            group.tick(t);
            assert_eq!(group.state, State::PreparingRebalance);
        }
        group.tick(now + REBALANCE);
        let joined = joins(&group.take_deliveries());
        assert_eq!(joined.keys().collect::<Vec<_>>(), vec![&b]);
        assert!(!group.members.contains_key(&a));
        assert_eq!(joined[&b].leader, b, "the leader left: another leads");
    }

    #[test]
    fn leaving_and_expiring_rebalance_the_rest() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        let a = stable_one(&mut group, now);
        assert_eq!(group.leave(&a, None, now), Ok(()));
        assert_eq!(group.state, State::Empty, "the last member left");
        assert_eq!(group.generation, 2);
        let a = stable_one_more(&mut group, now);
        // Silence for a session: gone.
        assert_eq!(group.tick(now + SESSION), vec![a]);
        assert_eq!(group.state, State::Empty);
    }

    fn stable_one_more(group: &mut ClassicGroup, now: Instant) -> String {
        let a = new_member(group, now);
        let joined = joins(&group.take_deliveries());
        let generation = joined[&a].generation;
        assert!(group.sync(&sync(&a, generation), &[], now).is_none());
        group.take_deliveries();
        a
    }

    #[test]
    fn a_static_member_rejoins_a_stable_group_without_a_rebalance() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        let a = stable_one(&mut group, now);
        assert!(
            group
                .join(join("", Some("i1")), now, Duration::ZERO)
                .waits()
        );
        assert!(group.join(join(&a, None), now, Duration::ZERO).waits());
        let joined = joins(&group.take_deliveries());
        let s = joined
            .keys()
            .find(|k| **k != a)
            .cloned()
            .expect("static member");
        let assignment = vec![
            (a.clone(), Bytes::from_static(b"A")),
            (s.clone(), Bytes::from_static(b"S")),
        ];
        group.sync(&sync(&s, 2), &[], now);
        group.sync(&sync(&a, 2), &assignment, now);
        group.take_deliveries();
        assert_eq!(group.state, State::Stable);
        // The static member restarts: a new id, the same place, no new generation.
        let Reply::Now(Ok(joined)) = group.join(join("", Some("i1")), now, Duration::ZERO) else {
            panic!("answered at once");
        };
        assert_ne!(joined.member_id, s);
        assert_eq!(joined.generation, 2);
        assert_eq!(group.state, State::Stable);
        let mut again = sync(&joined.member_id, 2);
        again.instance_id = Some("i1".into());
        assert_eq!(
            group.sync(&again, &[], now),
            Some(Ok(Bytes::from_static(b"S")))
        );
        // The id it replaced is fenced.
        assert_eq!(
            group.heartbeat(&s, Some("i1"), 2, now),
            Err(Error::FencedInstanceId)
        );
        assert_eq!(
            group.heartbeat(&s, None, 2, now),
            Err(Error::UnknownMemberId)
        );
    }

    #[test]
    fn the_first_rebalance_waits_the_initial_delay_for_more_members() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        let delay = Duration::from_secs(3);
        let Reply::Now(Err(Error::MemberIdRequired(a))) = group.join(join("", None), now, delay)
        else {
            panic!()
        };
        assert!(group.join(join(&a, None), now, delay).waits());
        let later = now + Duration::from_secs(2);
        let Reply::Now(Err(Error::MemberIdRequired(b))) = group.join(join("", None), later, delay)
        else {
            panic!()
        };
        assert!(group.join(join(&b, None), later, delay).waits());
        group.tick(now + delay);
        assert!(
            group.take_deliveries().is_empty(),
            "b's join pushed the deadline"
        );
        group.tick(later + delay);
        assert_eq!(joins(&group.take_deliveries()).len(), 2);
        assert_eq!(group.generation, 1);
    }

    #[test]
    fn members_must_share_a_protocol() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        stable_one(&mut group, now);
        let mut other = join("", None);
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        assert_eq!(
            group.join(other, now, Duration::ZERO).now(),
            Some(Err(Error::InconsistentGroupProtocol))
        );
        let mut other = join("", None);
        other.protocol_type = "connect".into();
        assert_eq!(
            group.join(other, now, Duration::ZERO).now(),
            Some(Err(Error::InconsistentGroupProtocol))
        );
    }

    #[test]
    fn a_rebalance_during_the_sync_phase_fails_the_waiting_syncs() {
        let mut group = ClassicGroup::default();
        let now = Instant::now();
        let a = stable_one(&mut group, now);
        let b = new_member(&mut group, now);
        group.join(join(&a, None), now, Duration::ZERO);
        group.take_deliveries();
        assert!(group.sync(&sync(&b, 2), &[], now).is_none());
        // A third member arrives before the leader's assignment.
        new_member(&mut group, now);
        assert!(
            group
                .take_deliveries()
                .contains(&Delivery::Sync(b.clone(), Err(Error::RebalanceInProgress)))
        );
        assert_eq!(group.state, State::PreparingRebalance);
    }
}
