//! Partition reassignment, as Kafka's KIP-455: a partition's replica set changes while it
//! serves. New replicas join as followers and catch up; once every one of them is in the ISR
//! the partition takes its target replica set, its leader moves if the old one is being
//! removed, and the removed replicas drop their data. The move in flight (`adding`,
//! `removing`) is part of the stored state, so a new controller carries it on; it can be
//! cancelled. Pure decisions over [`ClusterState`], like `decide.rs`.

use std::collections::BTreeSet;

use crate::decide::{PartitionRef, choose_leader};
use crate::error::ControllerError;
use crate::model::{BrokerId, ClusterState, PartitionState};

impl ClusterState {
    /// Starts moving `topic`-`partition` to the replicas `target` (the first is the preferred
    /// leader). Replacing a reassignment under way starts from the replicas it started from.
    /// A target that adds nothing completes at once (replicas removed, or only reordered);
    /// otherwise it completes in [`ClusterState::complete_reassignment`] once the added
    /// replicas are in sync.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownPartition`, `InvalidReplicas` (empty, repeated, unknown or
    /// dead brokers added, or no in-sync replica left).
    pub fn reassign(
        &mut self,
        topic: &str,
        partition: i32,
        target: &[BrokerId],
    ) -> Result<PartitionRef, ControllerError> {
        let invalid = |message: String| ControllerError::InvalidReplicas {
            topic: topic.to_string(),
            partition,
            message,
        };
        if target.is_empty() {
            return Err(invalid("a partition needs at least one replica".into()));
        }
        let unique: BTreeSet<BrokerId> = target.iter().copied().collect();
        if unique.len() != target.len() {
            return Err(invalid(format!("{target:?} names a broker twice")));
        }
        let electable = self.electable();
        let current = self.partition_mut(topic, partition)?.clone();
        // The replicas the partition had before any reassignment under way.
        let original: Vec<BrokerId> = current
            .replicas
            .iter()
            .copied()
            .filter(|r| !current.adding.contains(r))
            .collect();
        let adding: Vec<BrokerId> = target
            .iter()
            .copied()
            .filter(|r| !original.contains(r))
            .collect();
        if let Some(unknown) = adding.iter().find(|r| !electable.contains(r)) {
            return Err(invalid(format!(
                "broker {unknown} is not a live broker (registered, heartbeating, not shutting down)"
            )));
        }
        let state = self.partition_mut(topic, partition)?;
        if adding.is_empty() {
            // Nothing to copy: the partition takes the target now.
            let isr: Vec<BrokerId> = target
                .iter()
                .copied()
                .filter(|r| state.isr.contains(r))
                .collect();
            if isr.is_empty() {
                return Err(invalid(format!(
                    "none of {target:?} is in sync (ISR {:?}): the partition would lose its data",
                    state.isr
                )));
            }
            state.replicas = target.to_vec();
            state.isr = isr;
            state.adding.clear();
            state.removing.clear();
            lead_from_target(state, &electable);
        } else {
            let removing: Vec<BrokerId> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            let mut replicas = target.to_vec();
            replicas.extend(&removing);
            // An added replica of a replaced reassignment that is no longer wanted goes,
            // unless it is the only copy in sync.
            if !state.isr.iter().any(|r| replicas.contains(r)) {
                return Err(invalid(format!(
                    "the in-sync replicas {:?} would all go: let the reassignment under way finish first",
                    state.isr
                )));
            }
            state.isr.retain(|r| replicas.contains(r));
            state.replicas = replicas;
            state.adding = adding;
            state.removing = removing;
            lead_from_target(state, &electable);
        }
        state.partition_epoch += 1;
        debug_assert!(state.isr.iter().all(|r| state.replicas.contains(r)));
        Ok((topic.to_string(), partition))
    }

    /// Cancels the reassignment of `topic`-`partition`: the added replicas go, the partition
    /// keeps the replicas it had. Nothing to cancel is not an error.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownPartition`.
    pub fn cancel_reassignment(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<PartitionRef>, ControllerError> {
        let electable = self.electable();
        let state = self.partition_mut(topic, partition)?;
        if !state.is_reassigning() {
            return Ok(None);
        }
        if state.isr.iter().all(|r| state.adding.contains(r)) {
            return Err(ControllerError::InvalidReplicas {
                topic: topic.to_string(),
                partition,
                message: format!(
                    "only added replicas {:?} are in sync: cancelling would throw their data away",
                    state.isr
                ),
            });
        }
        let adding = std::mem::take(&mut state.adding);
        state.removing.clear();
        state.replicas.retain(|r| !adding.contains(r));
        state.isr.retain(|r| !adding.contains(r));
        if state.leader.is_some_and(|l| !state.isr.contains(&l)) {
            state.leader = choose_leader(state, &electable, false);
            state.leader_epoch += 1;
        }
        state.partition_epoch += 1;
        Ok(Some((topic.to_string(), partition)))
    }

    /// Completes every reassignment whose added replicas are all in sync: the partition takes
    /// its target replicas, leaves the removed ones out of its ISR, and moves its leadership
    /// to the target's first live in-sync replica if its leader is being removed (leader
    /// epoch + 1). Called after every ISR change.
    pub fn complete_reassignments(&mut self) -> Vec<PartitionRef> {
        let electable = self.electable();
        let mut changed = Vec::new();
        for topic in self.topics.values_mut() {
            for (index, state) in topic.partitions.iter_mut().enumerate() {
                if !state.is_reassigning() || !state.adding.iter().all(|r| state.isr.contains(r)) {
                    continue;
                }
                let target = state.target();
                let isr: Vec<BrokerId> = target
                    .iter()
                    .copied()
                    .filter(|r| state.isr.contains(r))
                    .collect();
                debug_assert!(!isr.is_empty(), "the added replicas are in sync");
                state.replicas = target;
                state.isr = isr;
                state.adding.clear();
                state.removing.clear();
                lead_from_target(state, &electable);
                state.partition_epoch += 1;
                changed.push((topic.name.clone(), index as i32));
            }
        }
        changed
    }

    /// Forgets broker `id` when it is dead and no partition names it (it was scaled away);
    /// returns whether it did.
    pub fn forget_broker(&mut self, id: BrokerId) -> bool {
        let named = self
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .any(|p| p.replicas.contains(&id) || p.isr.contains(&id) || p.leader == Some(id));
        if named || self.is_alive(id) {
            return false;
        }
        self.brokers.remove(&id).is_some()
    }

    /// Every reassignment under way, with its partition's state.
    pub fn reassignments(&self) -> Vec<(String, i32, PartitionState)> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_reassigning())
                    .map(|(i, p)| (t.name.clone(), i as i32, p.clone()))
            })
            .collect()
    }
}

/// After the replica set changed: a leader outside it hands over to the first live in-sync
/// replica of the new set (leader epoch + 1); with none, the partition goes offline.
fn lead_from_target(state: &mut PartitionState, electable: &[BrokerId]) {
    if state.leader.is_some_and(|l| state.replicas.contains(&l)) {
        return;
    }
    state.leader = choose_leader(state, electable, false);
    state.leader_epoch += 1;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Brokers 1 to 4; topic `t` of one partition on 1, 2, 3.
    fn four() -> ClusterState {
        let mut state = ClusterState::default();
        for id in 1..=4 {
            state.register(id, format!("b{id}"), None, 1);
        }
        state
            .create_topic("t", "id".into(), 1, 3, BTreeMap::new())
            .expect("create");
        let p = state.partition_mut("t", 0).expect("p");
        p.replicas = vec![1, 2, 3];
        p.isr = vec![1, 2, 3];
        p.leader = Some(1);
        state
    }

    fn p(state: &ClusterState) -> PartitionState {
        state.partition("t", 0).expect("partition").clone()
    }

    /// The leader adds `broker` to the ISR, as when it caught up.
    fn caught_up(state: &mut ClusterState, broker: BrokerId) {
        let part = p(state);
        let mut isr = part.isr.clone();
        isr.push(broker);
        state
            .alter_isr(
                "t",
                0,
                part.leader.expect("led"),
                part.leader_epoch,
                part.partition_epoch,
                &isr,
            )
            .expect("expand");
    }

    #[test]
    fn a_move_adds_catches_up_then_drops_and_hands_leadership_over() {
        let mut state = four();
        state.reassign("t", 0, &[4, 2, 3]).expect("reassign");
        let moving = p(&state);
        assert_eq!(
            moving.replicas,
            [4, 2, 3, 1],
            "target first, then what goes"
        );
        assert_eq!(
            (moving.adding.as_slice(), moving.removing.as_slice()),
            (&[4][..], &[1][..])
        );
        assert_eq!(
            moving.leader,
            Some(1),
            "the old leader serves until the move completes"
        );
        assert!(
            state.complete_reassignments().is_empty(),
            "4 is not in sync yet"
        );
        caught_up(&mut state, 4);
        assert_eq!(state.complete_reassignments(), [("t".to_string(), 0)]);
        let done = p(&state);
        assert_eq!(done.replicas, [4, 2, 3]);
        assert_eq!(done.isr, [4, 2, 3]);
        assert_eq!(done.leader, Some(4), "the target's preferred replica leads");
        assert_eq!(done.leader_epoch, moving.leader_epoch + 1);
        assert!(!done.is_reassigning());
    }

    #[test]
    fn growing_and_shrinking_the_replication_factor() {
        let mut state = four();
        state.reassign("t", 0, &[1, 2, 3, 4]).expect("grow");
        assert_eq!(p(&state).adding, [4]);
        assert!(p(&state).removing.is_empty());
        caught_up(&mut state, 4);
        state.complete_reassignments();
        assert_eq!(p(&state).replicas, [1, 2, 3, 4]);
        // Shrinking copies nothing: done at once, the leader kept.
        let epoch = p(&state).leader_epoch;
        state.reassign("t", 0, &[1, 4]).expect("shrink");
        let done = p(&state);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![1, 4], vec![1, 4])
        );
        assert_eq!((done.leader, done.leader_epoch), (Some(1), epoch));
    }

    #[test]
    fn a_cancelled_move_keeps_the_replicas_it_had() {
        let mut state = four();
        state.reassign("t", 0, &[4, 2, 3]).expect("reassign");
        assert!(state.cancel_reassignment("t", 0).expect("cancel").is_some());
        let back = p(&state);
        assert_eq!(back.replicas, [2, 3, 1]);
        assert_eq!(back.isr, [1, 2, 3]);
        assert_eq!(back.leader, Some(1));
        assert!(!back.is_reassigning());
        assert!(
            state
                .cancel_reassignment("t", 0)
                .expect("nothing")
                .is_none()
        );
    }

    #[test]
    fn impossible_targets_are_refused() {
        let mut state = four();
        for (target, why) in [
            (vec![], "at least one"),
            (vec![1, 1], "twice"),
            (vec![1, 9], "not a live broker"),
        ] {
            match state.reassign("t", 0, &target) {
                Err(e) => assert!(e.to_string().contains(why), "{e}"),
                Ok(_) => panic!("{target:?} accepted"),
            }
        }
        state.broker_lost(4);
        assert!(
            state.reassign("t", 0, &[4, 2, 3]).is_err(),
            "a dead broker is not added"
        );
        assert_eq!(p(&state).replicas, [1, 2, 3], "nothing changed");
    }

    #[derive(Debug, Clone)]
    enum Event {
        Reassign(Vec<BrokerId>),
        Cancel,
        CatchUp(BrokerId),
        Lost(BrokerId),
        Register(BrokerId),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            proptest::sample::subsequence(vec![1, 2, 3, 4, 5], 1..=4)
                .prop_shuffle()
                .prop_map(Event::Reassign),
            Just(Event::Cancel),
            (1..=5i32).prop_map(Event::CatchUp),
            (1..=5i32).prop_map(Event::Lost),
            (1..=5i32).prop_map(Event::Register),
        ]
    }

    proptest! {
        /// Whatever moves start, get cancelled or replaced while brokers die and come back:
        /// the ISR is a non-empty subset of the replicas, a leader is in it, added replicas
        /// enter the ISR only by catching up, and a partition never ends on replicas none of
        /// which was in sync (no data thrown away).
        #[test]
        fn moves_never_lose_the_in_sync_copy(events in proptest::collection::vec(event(), 1..40)) {
            let mut state = ClusterState::default();
            for id in 1..=5 {
                state.register(id, format!("b{id}"), None, 1);
            }
            state.create_topic("t", "id".into(), 1, 3, BTreeMap::new()).expect("create");
            let mut incarnation = 1;
            for event in events {
                let before = p(&state);
                let caught_up_now = matches!(event, Event::CatchUp(_));
                match event {
                    Event::Reassign(target) => { let _ = state.reassign("t", 0, &target); }
                    Event::Cancel => { let _ = state.cancel_reassignment("t", 0); }
                    Event::CatchUp(b) => {
                        let part = p(&state);
                        if part.replicas.contains(&b) && state.electable().contains(&b)
                            && let Some(leader) = part.leader {
                            let mut isr = part.isr.clone();
                            if !isr.contains(&b) { isr.push(b); }
                            let _ = state.alter_isr("t", 0, leader, part.leader_epoch, part.partition_epoch, &isr);
                        }
                    }
                    Event::Lost(b) => { state.broker_lost(b); }
                    Event::Register(b) => { incarnation += 1; state.register(b, format!("b{b}"), None, incarnation); }
                }
                state.complete_reassignments();
                let part = p(&state);
                prop_assert!(!part.isr.is_empty());
                prop_assert!(part.isr.iter().all(|r| part.replicas.contains(r)), "{:?}", part);
                prop_assert!(part.adding.iter().all(|r| part.replicas.contains(r)));
                prop_assert!(part.removing.iter().all(|r| part.replicas.contains(r)));
                if let Some(leader) = part.leader {
                    prop_assert!(part.isr.contains(&leader), "{:?}", part);
                }
                // Whatever is in sync now was in sync before, or caught up in this step.
                for r in &part.isr {
                    prop_assert!(before.isr.contains(r) || caught_up_now, "{} in sync from nowhere: {:?} -> {:?}", r, before, part);
                }
                prop_assert!(part.leader_epoch >= before.leader_epoch);
                prop_assert!(part.partition_epoch >= before.partition_epoch);
            }
        }
    }
}
