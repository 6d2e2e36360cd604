//! Every decision of the controller, as a change of [`ClusterState`]. Each returns the
//! partitions whose state changed, for the controller to store and then push to brokers.
//! Nothing here reads a clock or does I/O: liveness deadlines are the runtime's, which calls
//! [`ClusterState::broker_lost`] when one passes.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ControllerError;
use crate::model::{Broker, BrokerId, ClusterState, PartitionState, Topic};
use crate::placement::place;
use crate::topic_config::{self, OFFSETS_TOPIC};

/// A partition, by topic name and index.
pub type PartitionRef = (String, i32);

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The broker was known with another incarnation (it restarted): what it held was
    /// treated as lost first.
    pub restarted: bool,
    pub changed: Vec<PartitionRef>,
}

impl ClusterState {
    /// A broker announces itself. A new incarnation of a known broker is a restart: whatever
    /// it led or was in sync for is handled as lost (its memory is gone, and with OS flushing
    /// some of its log may be too), then it rejoins as a follower. In every case offline
    /// partitions it can lead get it as leader.
    pub fn register(
        &mut self,
        id: BrokerId,
        address: String,
        rack: Option<String>,
        incarnation: u64,
    ) -> Registered {
        let mut changed = Vec::new();
        let restarted = self
            .brokers
            .get(&id)
            .is_some_and(|b| b.incarnation != incarnation);
        if restarted {
            changed.extend(self.broker_lost(id));
        }
        self.brokers.insert(
            id,
            Broker {
                id,
                address,
                rack,
                incarnation,
                alive: true,
                kafka_address: None,
                shutting_down: false,
            },
        );
        changed.extend(self.elect_offline());
        changed.sort();
        changed.dedup();
        Registered { restarted, changed }
    }

    /// Checks that a heartbeat comes from the registered incarnation of a broker that is
    /// alive. A dead broker must register again.
    ///
    /// # Errors
    /// `UnknownBroker`.
    pub fn heartbeat(&self, id: BrokerId, incarnation: u64) -> Result<(), ControllerError> {
        match self.brokers.get(&id) {
            Some(b) if b.alive && b.incarnation == incarnation => Ok(()),
            _ => Err(ControllerError::UnknownBroker(id)),
        }
    }

    /// A broker missed its deadline (or restarted). It leaves every ISR it can leave; each
    /// partition it led gets a new leader from the rest of its ISR (leader epoch + 1), or
    /// from any live replica where the topic allows unclean election, or goes offline.
    pub fn broker_lost(&mut self, id: BrokerId) -> Vec<PartitionRef> {
        if let Some(broker) = self.brokers.get_mut(&id) {
            broker.alive = false;
        }
        let alive: Vec<BrokerId> = self.electable();
        let mut changed = Vec::new();
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                if !partition.replicas.contains(&id) {
                    continue;
                }
                let was_leader = partition.leader == Some(id);
                let in_isr = partition.isr.contains(&id);
                if !was_leader && !in_isr {
                    continue;
                }
                if in_isr && partition.isr.len() > 1 {
                    partition.isr.retain(|&r| r != id);
                }
                if was_leader {
                    partition.leader = None;
                    if let Some(leader) = choose_leader(partition, &alive, unclean) {
                        make_leader(partition, leader);
                    }
                    partition.leader_epoch += 1;
                }
                partition.partition_epoch += 1;
                changed.push((topic.name.clone(), index as i32));
            }
        }
        changed
    }

    /// A broker stopping cleanly (SIGTERM) hands over before it goes, as Kafka's controlled
    /// shutdown: every partition it leads gets the next live in-sync replica as leader
    /// (leader epoch + 1), and it leaves every ISR it is not the last member of, so that
    /// `acks=all` writes stop waiting for it. Until it registers again it is elected nowhere
    /// and let into no ISR. Returns the changed partitions and how many it still leads
    /// (where it is the only in-sync replica: they stay with it until it goes).
    ///
    /// # Errors
    /// `UnknownBroker` for a dead broker or another incarnation.
    pub fn controlled_shutdown(
        &mut self,
        id: BrokerId,
        incarnation: u64,
    ) -> Result<(Vec<PartitionRef>, usize), ControllerError> {
        self.heartbeat(id, incarnation)?;
        if let Some(broker) = self.brokers.get_mut(&id) {
            broker.shutting_down = true;
        }
        let electable = self.electable();
        let mut changed = Vec::new();
        let mut still_led = 0;
        for topic in self.topics.values_mut() {
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                let before = partition.clone();
                if partition.leader == Some(id) {
                    let next = partition
                        .replicas
                        .iter()
                        .find(|r| partition.isr.contains(r) && electable.contains(r))
                        .copied();
                    match next {
                        Some(next) => {
                            partition.leader = Some(next);
                            partition.leader_epoch += 1;
                        }
                        None => still_led += 1,
                    }
                }
                if partition.leader != Some(id) && partition.isr.len() > 1 {
                    partition.isr.retain(|&r| r != id);
                }
                if *partition != before {
                    partition.partition_epoch += 1;
                    changed.push((topic.name.clone(), index as i32));
                }
                debug_assert!(!partition.isr.is_empty(), "an ISR is never empty");
            }
        }
        Ok((changed, still_led))
    }

    /// Moves leadership back to preferred replicas (the first of each replica list) that
    /// are alive and in sync, for every broker whose share of its preferred partitions led
    /// by others is above `threshold` (Kafka's `auto.leader.rebalance.enable` with
    /// `leader.imbalance.per.broker.percentage` / 100). After a failover, leadership stays
    /// where it fell until this puts it back, so load returns to the placement's balance.
    pub fn rebalance_leaders(&mut self, threshold: f64) -> Vec<PartitionRef> {
        let alive: BTreeSet<BrokerId> = self.electable().into_iter().collect();
        let mut preferred: BTreeMap<BrokerId, (usize, usize)> = BTreeMap::new();
        for partition in self.topics.values().flat_map(|t| &t.partitions) {
            if let Some(&first) = partition.replicas.first() {
                let entry = preferred.entry(first).or_default();
                entry.0 += 1;
                entry.1 += usize::from(partition.leader != Some(first));
            }
        }
        let imbalanced: BTreeSet<BrokerId> = preferred
            .into_iter()
            .filter(|(id, (total, elsewhere))| {
                alive.contains(id) && *elsewhere as f64 > threshold * *total as f64
            })
            .map(|(id, _)| id)
            .collect();
        let mut changed = Vec::new();
        for topic in self.topics.values_mut() {
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                let Some(&first) = partition.replicas.first() else {
                    continue;
                };
                let eligible = imbalanced.contains(&first)
                    && partition.isr.contains(&first)
                    && partition.leader != Some(first);
                if eligible {
                    partition.leader = Some(first);
                    partition.leader_epoch += 1;
                    partition.partition_epoch += 1;
                    changed.push((topic.name.clone(), index as i32));
                }
            }
        }
        changed
    }

    /// Gives offline partitions a leader where one is now possible.
    fn elect_offline(&mut self) -> Vec<PartitionRef> {
        let alive: Vec<BrokerId> = self.electable();
        let mut changed = Vec::new();
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                if partition.is_online() {
                    continue;
                }
                if let Some(leader) = choose_leader(partition, &alive, unclean) {
                    make_leader(partition, leader);
                    partition.leader_epoch += 1;
                    partition.partition_epoch += 1;
                    changed.push((topic.name.clone(), index as i32));
                }
            }
        }
        changed
    }

    /// A leader asks to change its partition's ISR (shrink a lagging follower, add one that
    /// caught up). Accepted only from the current leader, at the current leader and partition
    /// epochs (compare-and-set), for an ISR of live replicas that holds the leader.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownPartition`, `NotLeader`, `StaleEpoch`, `InvalidIsr`.
    pub fn alter_isr(
        &mut self,
        topic: &str,
        partition: i32,
        requester: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[BrokerId],
    ) -> Result<PartitionState, ControllerError> {
        let alive: Vec<BrokerId> = self.electable();
        let state = self.partition_mut(topic, partition)?;
        if state.leader != Some(requester) {
            return Err(ControllerError::NotLeader {
                topic: topic.to_string(),
                partition,
                broker: requester,
                leader: state.leader,
            });
        }
        if state.leader_epoch != leader_epoch || state.partition_epoch != partition_epoch {
            return Err(ControllerError::StaleEpoch {
                topic: topic.to_string(),
                partition,
                leader_epoch,
                partition_epoch,
                current_leader_epoch: state.leader_epoch,
                current_partition_epoch: state.partition_epoch,
            });
        }
        let invalid = |message: String| ControllerError::InvalidIsr {
            topic: topic.to_string(),
            partition,
            message,
        };
        if !isr.contains(&requester) {
            return Err(invalid(format!("it must hold the leader {requester}")));
        }
        if let Some(outsider) = isr.iter().find(|r| !state.replicas.contains(r)) {
            return Err(invalid(format!("broker {outsider} is not a replica")));
        }
        if let Some(dead) = isr
            .iter()
            .find(|r| !state.isr.contains(r) && !alive.contains(r))
        {
            return Err(invalid(format!(
                "broker {dead} is not alive, or is shutting down"
            )));
        }
        // In replica order, once each.
        let ordered: Vec<BrokerId> = state
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r))
            .collect();
        if ordered != state.isr {
            state.isr = ordered;
            state.partition_epoch += 1;
        }
        Ok(state.clone())
    }

    /// Creates a client's topic with placed replicas, each partition led by its preferred
    /// replica. The name and every config override are checked here, whichever door the
    /// request came through.
    ///
    /// # Errors
    /// `InvalidTopic` (Kafka's name rules, or a name reserved for internal topics),
    /// `Config`, `TopicExists`, `InvalidPartitions`, `InvalidReplicationFactor`.
    pub fn create_topic(
        &mut self,
        name: &str,
        id: String,
        partitions: usize,
        replication_factor: usize,
        config: BTreeMap<String, String>,
    ) -> Result<&Topic, ControllerError> {
        topic_config::validate_name(name).map_err(ControllerError::InvalidTopic)?;
        if topic_config::is_internal(name) {
            return Err(ControllerError::InvalidTopic(format!(
                "topic names starting with \"__\" are for Weir's own topics, not {name:?}"
            )));
        }
        topic_config::validate_overrides(&config)?;
        self.create_placed(name, id, partitions, replication_factor, config)
    }

    /// Creates an internal topic the brokers need (`__consumer_offsets`) with the shape the
    /// controller gives it, unless it exists; returns it either way.
    ///
    /// # Errors
    /// `InvalidTopic` for a name that is not an internal topic's; `InvalidReplicationFactor`
    /// while no broker is alive.
    pub fn ensure_internal_topic(
        &mut self,
        name: &str,
        id: String,
    ) -> Result<&Topic, ControllerError> {
        if name != OFFSETS_TOPIC {
            return Err(ControllerError::InvalidTopic(format!(
                "{name:?} is not an internal topic (the only one is {OFFSETS_TOPIC:?})"
            )));
        }
        if self.topics.contains_key(name) {
            return Ok(&self.topics[name]);
        }
        let replication = self
            .alive_brokers()
            .count()
            .min(topic_config::OFFSETS_MAX_REPLICATION);
        self.create_placed(
            name,
            id,
            topic_config::OFFSETS_PARTITIONS,
            replication,
            topic_config::offsets_topic_config(),
        )
    }

    fn create_placed(
        &mut self,
        name: &str,
        id: String,
        partitions: usize,
        replication_factor: usize,
        config: BTreeMap<String, String>,
    ) -> Result<&Topic, ControllerError> {
        if self.topics.contains_key(name) {
            return Err(ControllerError::TopicExists(name.to_string()));
        }
        let placed = place(self, partitions, replication_factor)?;
        let topic = Topic {
            id,
            name: name.to_string(),
            config,
            partitions: placed.into_iter().map(new_partition).collect(),
        };
        Ok(self.topics.entry(name.to_string()).or_insert(topic))
    }

    /// Grows a topic to `total` partitions, placed like new ones with the topic's
    /// replication factor.
    ///
    /// # Errors
    /// `UnknownTopic`; `InternalTopic`; `InvalidPartitions` unless `total` is more than it
    /// has; `InvalidReplicationFactor` when too few brokers are alive.
    pub fn add_partitions(
        &mut self,
        name: &str,
        total: usize,
    ) -> Result<Vec<PartitionRef>, ControllerError> {
        refuse_internal(name)?;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        let (current, rf) = (topic.partitions.len(), topic.replication_factor());
        if total <= current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic {name:?} has {current} partitions; it can only grow (asked for {total})"
            )));
        }
        let placed = place(self, total - current, rf)?;
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        topic
            .partitions
            .extend(placed.into_iter().map(new_partition));
        Ok((current..total)
            .map(|p| (name.to_string(), p as i32))
            .collect())
    }

    /// # Errors
    /// `UnknownTopic`; `InternalTopic`.
    pub fn delete_topic(&mut self, name: &str) -> Result<Topic, ControllerError> {
        refuse_internal(name)?;
        self.topics
            .remove(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
    }

    /// Replaces a topic's config overrides, each checked.
    ///
    /// # Errors
    /// `UnknownTopic`; `InternalTopic`; `Config`.
    pub fn set_topic_config(
        &mut self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(), ControllerError> {
        refuse_internal(name)?;
        topic_config::validate_overrides(&config)?;
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        topic.config = config;
        Ok(())
    }

    /// Hands out the next idempotent producer id.
    pub fn allocate_producer_id(&mut self) -> i64 {
        self.allocate_producer_ids(1)
    }

    /// Hands out `count` idempotent producer ids; returns the first.
    pub fn allocate_producer_ids(&mut self, count: i64) -> i64 {
        let first = self.next_producer_id;
        self.next_producer_id += count.max(1);
        first
    }

    pub(crate) fn partition_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionState, ControllerError> {
        let found = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| found.partitions.get_mut(p))
            .ok_or_else(|| ControllerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }
}

fn new_partition(replicas: Vec<BrokerId>) -> PartitionState {
    PartitionState {
        leader: replicas.first().copied(),
        leader_epoch: 0,
        isr: replicas.clone(),
        partition_epoch: 0,
        replicas,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

/// The next leader: the first live ISR member in replica order; failing that, with unclean
/// election, the first live replica.
pub(crate) fn choose_leader(
    partition: &PartitionState,
    alive: &[BrokerId],
    unclean: bool,
) -> Option<BrokerId> {
    let live = |r: &&BrokerId| alive.contains(r);
    partition
        .replicas
        .iter()
        .filter(|r| partition.isr.contains(r))
        .find(live)
        .or_else(|| {
            // A replica a reassignment is adding has not caught up: never elected unclean.
            unclean
                .then(|| {
                    partition
                        .replicas
                        .iter()
                        .filter(|r| !partition.adding.contains(r))
                        .find(live)
                })
                .flatten()
        })
        .copied()
}

fn make_leader(partition: &mut PartitionState, leader: BrokerId) {
    partition.leader = Some(leader);
    if !partition.isr.contains(&leader) {
        // Unclean: the new leader's log is the truth now.
        partition.isr = vec![leader];
    }
}

/// Internal topics are shaped by the controller alone: no client changes or deletes them.
fn refuse_internal(name: &str) -> Result<(), ControllerError> {
    if topic_config::is_internal(name) {
        return Err(ControllerError::InternalTopic(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Lost(BrokerId),
        Register(BrokerId, u64),
        /// The leader of a partition drops or re-adds a replica (by position).
        Shrink(i32, usize),
        Expand(i32, usize),
        /// A broker's controlled shutdown, from the incarnation it registered with.
        Shutdown(BrokerId),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (1..=4i32).prop_map(Event::Lost),
            (1..=4i32, 0..3u64).prop_map(|(b, i)| Event::Register(b, i)),
            (0..4i32, 0..3usize).prop_map(|(p, r)| Event::Shrink(p, r)),
            (0..4i32, 0..3usize).prop_map(|(p, r)| Event::Expand(p, r)),
            (1..=4i32).prop_map(Event::Shutdown),
        ]
    }

    proptest! {
        /// Whatever brokers die, restart and whatever ISR changes leaders ask for: a leader
        /// is alive, in the ISR, and (without unclean election) was in the ISR before it was
        /// elected; the ISR is a non-empty set of replicas; epochs never go back.
        #[test]
        fn elections_stay_inside_the_isr(events in proptest::collection::vec(event(), 1..60)) {
            let mut state = ClusterState::default();
            for id in 1..=4 {
                state.register(id, format!("b{id}"), None, 0);
            }
            state.create_topic("t", "id".into(), 4, 3, BTreeMap::new()).expect("create");
            for event in events {
                let before = state.clone();
                match event {
                    Event::Lost(b) => { state.broker_lost(b); }
                    Event::Register(b, i) => { state.register(b, format!("b{b}"), None, i); }
                    Event::Shutdown(b) => {
                        if let Some(incarnation) = state.brokers.get(&b).map(|x| x.incarnation) {
                            let _ = state.controlled_shutdown(b, incarnation);
                        }
                    }
                    Event::Shrink(p, r) | Event::Expand(p, r) => {
                        let part = state.partition("t", p).expect("partition").clone();
                        let Some(leader) = part.leader else { continue };
                        let replica = part.replicas[r];
                        let mut isr = part.isr.clone();
                        if matches!(event, Event::Shrink(..)) {
                            isr.retain(|&x| x != replica);
                        } else if !isr.contains(&replica) {
                            isr.push(replica);
                        }
                        let _ = state.alter_isr("t", p, leader, part.leader_epoch, part.partition_epoch, &isr);
                    }
                }
                for (index, part) in state.topics["t"].partitions.iter().enumerate() {
                    let old = &before.topics["t"].partitions[index];
                    prop_assert!(!part.isr.is_empty());
                    prop_assert!(part.isr.iter().all(|r| part.replicas.contains(r)));
                    prop_assert!(part.leader_epoch >= old.leader_epoch);
                    prop_assert!(part.partition_epoch >= old.partition_epoch);
                    if let Some(leader) = part.leader {
                        prop_assert!(state.is_alive(leader));
                        prop_assert!(part.isr.contains(&leader));
                        if part.leader != old.leader {
                            prop_assert!(!state.brokers[&leader].shutting_down, "a broker shutting down elected");
                            prop_assert!(old.isr.contains(&leader), "{:?} elected outside {:?}", leader, old.isr);
                            prop_assert!(part.leader_epoch > old.leader_epoch);
                        }
                    }
                    if part.isr.len() > 1 {
                        prop_assert!(part.isr.iter().all(|&r| state.is_alive(r)), "dead broker in a shared ISR: {:?}", part);
                    }
                    // A broker shutting down is in a shared ISR only as the leader it could not hand over.
                    for &r in &part.isr {
                        if state.brokers[&r].shutting_down && part.isr.len() > 1 {
                            prop_assert!(part.leader == Some(r), "{} shutting down yet in {:?}", r, part);
                        }
                    }
                }
            }
        }
    }

    fn three() -> ClusterState {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state.register(id, format!("127.0.0.1:{}", 9000 + id), None, 100);
        }
        state
            .create_topic("t", "id-t".into(), 3, 3, BTreeMap::new())
            .expect("create");
        state
    }

    fn p(state: &ClusterState, index: i32) -> PartitionState {
        state.partition("t", index).expect("partition").clone()
    }

    #[test]
    fn new_topic_is_led_by_preferred_replicas_with_full_isr() {
        let state = three();
        for i in 0..3 {
            let part = p(&state, i);
            assert_eq!(part.leader, Some(part.replicas[0]));
            assert_eq!(part.isr, part.replicas);
            assert_eq!((part.leader_epoch, part.partition_epoch), (0, 0));
        }
    }

    #[test]
    fn losing_a_leader_elects_from_the_isr_with_a_new_epoch() {
        let mut state = three();
        let before = p(&state, 0);
        let leader = before.leader.expect("leader");
        let changed = state.broker_lost(leader);
        assert_eq!(
            changed.len(),
            3,
            "the broker is a replica of every partition"
        );
        let after = p(&state, 0);
        assert_ne!(after.leader, Some(leader));
        assert!(before.isr.contains(&after.leader.expect("new leader")));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert!(!after.isr.contains(&leader));
        assert!(after.partition_epoch > before.partition_epoch);
        // A partition it followed keeps its leader and epoch, and drops it from the ISR.
        let followed = (0..3)
            .map(|i| (i, p(&state, i)))
            .find(|(_, s)| s.leader_epoch == 0)
            .expect("a partition it only followed");
        assert!(!followed.1.isr.contains(&leader));
    }

    #[test]
    fn nothing_outside_the_isr_is_elected() {
        let mut state = three();
        let part = p(&state, 0);
        let (a, b, c) = (part.replicas[0], part.replicas[1], part.replicas[2]);
        // c falls out of sync, then a and b die.
        state
            .alter_isr("t", 0, a, part.leader_epoch, part.partition_epoch, &[a, b])
            .expect("shrink");
        state.broker_lost(a);
        assert_eq!(p(&state, 0).leader, Some(b));
        state.broker_lost(b);
        let offline = p(&state, 0);
        assert_eq!(
            offline.leader, None,
            "c was not in sync: the partition waits"
        );
        assert_eq!(
            offline.isr,
            vec![b],
            "the last in-sync replica stays the ISR"
        );
        // c restarting does not make it leader; b returning does.
        state.register(c, "c".into(), None, 101);
        assert_eq!(p(&state, 0).leader, None);
        let registered = state.register(b, "b".into(), None, 102);
        assert!(registered.restarted);
        let back = p(&state, 0);
        assert_eq!(back.leader, Some(b));
        assert!(back.leader_epoch > offline.leader_epoch);
    }

    #[test]
    fn unclean_election_where_the_topic_allows_it() {
        let mut state = three();
        state
            .set_topic_config(
                "t",
                [(
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string(),
                )]
                .into(),
            )
            .expect("config");
        let part = p(&state, 0);
        let (a, b, c) = (part.replicas[0], part.replicas[1], part.replicas[2]);
        state
            .alter_isr("t", 0, a, part.leader_epoch, part.partition_epoch, &[a])
            .expect("shrink");
        state.broker_lost(a);
        let after = p(&state, 0);
        assert_eq!(after.leader, Some(b));
        assert_eq!(after.isr, vec![b]);
        let _ = c;
    }

    #[test]
    fn alter_isr_is_compare_and_set() {
        let mut state = three();
        let part = p(&state, 1);
        let leader = part.leader.expect("leader");
        let follower = part.replicas[1];
        let shrunk = state
            .alter_isr(
                "t",
                1,
                leader,
                part.leader_epoch,
                part.partition_epoch,
                &[leader, part.replicas[2]],
            )
            .expect("shrink");
        assert_eq!(shrunk.partition_epoch, part.partition_epoch + 1);
        // The same request again is stale.
        let stale = state.alter_isr(
            "t",
            1,
            leader,
            part.leader_epoch,
            part.partition_epoch,
            &part.replicas,
        );
        assert!(
            matches!(stale, Err(ControllerError::StaleEpoch { .. })),
            "{stale:?}"
        );
        // Only the leader may ask.
        let not_leader = state.alter_isr(
            "t",
            1,
            follower,
            shrunk.leader_epoch,
            shrunk.partition_epoch,
            &shrunk.replicas,
        );
        assert!(matches!(not_leader, Err(ControllerError::NotLeader { .. })));
        // The ISR must hold the leader and only replicas; a dead broker cannot join.
        for bad in [vec![follower], vec![leader, 42]] {
            let refused = state.alter_isr(
                "t",
                1,
                leader,
                shrunk.leader_epoch,
                shrunk.partition_epoch,
                &bad,
            );
            assert!(
                matches!(refused, Err(ControllerError::InvalidIsr { .. })),
                "{bad:?}"
            );
        }
        state.broker_lost(follower);
        let now = p(&state, 1);
        let refused = state.alter_isr(
            "t",
            1,
            leader,
            now.leader_epoch,
            now.partition_epoch,
            &now.replicas,
        );
        assert!(matches!(refused, Err(ControllerError::InvalidIsr { .. })));
        // Expanding with the live follower back in order.
        let grown = state
            .alter_isr(
                "t",
                1,
                leader,
                now.leader_epoch,
                now.partition_epoch,
                &[part.replicas[2], leader],
            )
            .expect("same set");
        assert_eq!(grown.isr, now.isr, "an unchanged ISR keeps its epoch");
    }

    #[test]
    fn restart_is_a_loss_then_a_rejoin() {
        let mut state = three();
        let part = p(&state, 2);
        let leader = part.leader.expect("leader");
        let registered = state.register(leader, "again".into(), None, 999);
        assert!(registered.restarted);
        let after = p(&state, 2);
        assert_ne!(
            after.leader,
            Some(leader),
            "a restarted leader comes back as follower"
        );
        assert_eq!(after.leader_epoch, part.leader_epoch + 1);
        assert!(state.is_alive(leader));
        assert!(state.heartbeat(leader, 999).is_ok());
        assert!(matches!(
            state.heartbeat(leader, 100),
            Err(ControllerError::UnknownBroker(_))
        ));
    }

    #[test]
    fn topics_grow_and_go() {
        let mut state = three();
        assert!(matches!(
            state.create_topic("t", "x".into(), 1, 1, BTreeMap::new()),
            Err(ControllerError::TopicExists(_))
        ));
        assert!(matches!(
            state.add_partitions("t", 3),
            Err(ControllerError::InvalidPartitions(_))
        ));
        let added = state.add_partitions("t", 5).expect("grow");
        assert_eq!(added, vec![("t".to_string(), 3), ("t".to_string(), 4)]);
        assert_eq!(state.topics["t"].partitions[4].replicas.len(), 3);
        state.delete_topic("t").expect("delete");
        assert!(matches!(
            state.delete_topic("t"),
            Err(ControllerError::UnknownTopic(_))
        ));
        assert_eq!(state.allocate_producer_id(), 0);
        assert_eq!(state.allocate_producer_id(), 1);
    }

    #[test]
    fn the_controller_refuses_hostile_names_bad_configs_and_client_changes_to_internal_topics() {
        let mut state = three();
        let before = state.clone();
        for hostile in ["/some/dir", "../x", "..", "a b", &"n".repeat(250)] {
            assert!(
                matches!(
                    state.create_topic(hostile, "id".into(), 1, 1, BTreeMap::new()),
                    Err(ControllerError::InvalidTopic(_))
                ),
                "{hostile:?} accepted"
            );
        }
        let bad = BTreeMap::from([("segment.bytes".to_string(), "14".to_string())]);
        assert!(matches!(
            state.create_topic("u", "id".into(), 1, 1, bad.clone()),
            Err(ControllerError::Config(_))
        ));
        assert!(matches!(
            state.set_topic_config("t", bad),
            Err(ControllerError::Config(_))
        ));
        assert!(matches!(
            state.create_topic(OFFSETS_TOPIC, "id".into(), 1, 1, BTreeMap::new()),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert_eq!(state, before, "nothing refused changed anything");

        let id = state
            .ensure_internal_topic(OFFSETS_TOPIC, "offsets-id".into())
            .expect("made")
            .id
            .clone();
        assert_eq!(
            state
                .ensure_internal_topic(OFFSETS_TOPIC, "another".into())
                .expect("kept")
                .id,
            id
        );
        assert_eq!(state.topics[OFFSETS_TOPIC].replication_factor(), 3);
        assert!(state.ensure_internal_topic("__other", "x".into()).is_err());
        for refused in [
            state.delete_topic(OFFSETS_TOPIC).map(|_| ()),
            state.set_topic_config(OFFSETS_TOPIC, BTreeMap::new()),
            state.add_partitions(OFFSETS_TOPIC, 60).map(|_| ()),
        ] {
            assert!(matches!(refused, Err(ControllerError::InternalTopic(_))));
        }
        assert!(state.topics.contains_key(OFFSETS_TOPIC));
    }

    #[test]
    fn leadership_returns_to_preferred_replicas_once_they_are_in_sync() {
        let mut state = three();
        let before: Vec<Option<BrokerId>> = (0..3).map(|i| p(&state, i).leader).collect();
        let lost = before[0].expect("a leader");
        state.broker_lost(lost);
        assert_ne!(p(&state, 0).leader, Some(lost));
        // Back, but not in sync yet: nothing moves.
        state.register(lost, format!("127.0.0.1:{}", 9000 + lost), None, 2);
        assert!(state.rebalance_leaders(0.1).is_empty());
        // In sync again: its partitions come back, at the next leader epoch.
        for i in 0..3 {
            let part = p(&state, i);
            let mut isr = part.isr.clone();
            isr.push(lost);
            let leader = part.leader.expect("led");
            state
                .alter_isr(
                    "t",
                    i,
                    leader,
                    part.leader_epoch,
                    part.partition_epoch,
                    &isr,
                )
                .expect("expand");
        }
        let epoch = p(&state, 0).leader_epoch;
        let moved = state.rebalance_leaders(0.1);
        assert_eq!(moved, [("t".to_string(), 0)]);
        assert_eq!(p(&state, 0).leader, Some(lost));
        assert_eq!(p(&state, 0).leader_epoch, epoch + 1);
        let after: Vec<Option<BrokerId>> = (0..3).map(|i| p(&state, i).leader).collect();
        assert_eq!(after, before);
        assert!(
            state.rebalance_leaders(0.1).is_empty(),
            "balanced: nothing more"
        );
    }

    #[test]
    fn a_controlled_shutdown_hands_over_before_the_broker_goes() {
        let mut state = three();
        let leaving = p(&state, 0).leader.expect("a leader");
        let led_before: Vec<i32> = (0..3)
            .filter(|&i| p(&state, i).leader == Some(leaving))
            .collect();
        assert!(
            state.controlled_shutdown(leaving, 7).is_err(),
            "another incarnation is refused"
        );
        let (changed, still_led) = state.controlled_shutdown(leaving, 100).expect("hand over");
        assert_eq!(still_led, 0);
        assert_eq!(changed.len(), 3, "it led or followed every partition");
        for i in 0..3 {
            let part = p(&state, i);
            assert_ne!(part.leader, Some(leaving));
            assert!(!part.isr.contains(&leaving), "{part:?}");
            assert_eq!(part.isr.len(), 2);
            let moved = led_before.contains(&i);
            assert_eq!(part.leader_epoch, i32::from(moved), "{part:?}");
        }
        // Still alive until it goes, but elected nowhere and let into no ISR.
        assert!(state.is_alive(leaving));
        let part = p(&state, 0);
        let mut isr = part.isr.clone();
        isr.push(leaving);
        assert!(matches!(
            state.alter_isr(
                "t",
                0,
                part.leader.expect("led"),
                part.leader_epoch,
                part.partition_epoch,
                &isr
            ),
            Err(ControllerError::InvalidIsr { .. })
        ));
        assert!(state.rebalance_leaders(0.0).is_empty());
        // Restarted, it is a follower that may rejoin.
        state.register(leaving, "127.0.0.1:1".into(), None, 101);
        assert!(!state.brokers[&leaving].shutting_down);
        let part = p(&state, 0);
        state
            .alter_isr(
                "t",
                0,
                part.leader.expect("led"),
                part.leader_epoch,
                part.partition_epoch,
                &isr,
            )
            .expect("back in sync");
    }

    #[test]
    fn the_only_in_sync_replica_keeps_leading_through_its_shutdown() {
        let mut state = three();
        let part = p(&state, 0);
        let leader = part.leader.expect("led");
        state
            .alter_isr("t", 0, leader, 0, 0, &[leader])
            .expect("shrink to the leader alone");
        let (_, still_led) = state.controlled_shutdown(leader, 100).expect("hand over");
        assert!(still_led >= 1);
        let part = p(&state, 0);
        assert_eq!(part.leader, Some(leader));
        assert_eq!(part.isr, [leader]);
    }
}
